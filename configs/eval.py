"""Evaluating a checkpoint on π³'s benchmarks
(`python -m launch.eval --config configs/eval.py:OPTIONS --checkpoint PATH --data_root DIR --out DIR`).

OPTIONS is a comma-separated list of NAME=VALUE (all optional):

    suite=video_depth|mono_depth|pose|pointmap|all|synthetic   which benchmarks and tasks
                            (default all; π³'s tables, names as in flow3r_jax.eval.benchmarks):
        video_depth  sintel, bonn, kitti                  video depth (π³ Table 3)
        mono_depth   sintel, bonn, kitti, nyu-v2          monocular depth (π³ Table 4)
        pose         sintel, tum, scannet                 trajectory ATE / RPE (π³ Table 2)
                     re10k, co3d                          angular RRA / RTA / AUC (π³ Table 1)
        pointmap     7scenes-sparse/-dense, nrgbd-sparse/-dense   Acc / Comp / NC (π³ Table 5)
        all          every benchmark above, their tasks above
        synthetic    the project's rendered rooms, every task (smoke runs, no data to fetch)
    size=tiny|small|base|large   model size of a state-dict checkpoint (default large)

Fields are named as launch.eval's flags and are their defaults; a flag given on the command
line wins. "" and None leave a flag's own default. `data_root` is a directory with one folder
per benchmark (or the one benchmark's directory).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs.flow3r import parse_options

ENTRY = "launch.eval"  # what `launch.sweep` runs for a job of this config
WORKDIR_FLAG = "out"  # the entry's flag that receives the job's directory

# suite -> (benchmarks, tasks)
SUITES = {
    "video_depth": (("sintel", "bonn", "kitti"), ("video_depth",)),
    "mono_depth": (("sintel", "bonn", "kitti", "nyu-v2"), ("mono_depth",)),
    "pose": (("sintel", "tum", "scannet", "re10k", "co3d"), ("pose_trajectory", "pose_angular")),
    "pointmap": (("7scenes-sparse", "7scenes-dense", "nrgbd-sparse", "nrgbd-dense"), ("pointmap",)),
    "synthetic": (("synthetic",), ()),
}
SUITES["all"] = (
    tuple(dict.fromkeys(b for s in ("video_depth", "mono_depth", "pose", "pointmap") for b in SUITES[s][0])),
    tuple(t for s in ("video_depth", "mono_depth", "pose", "pointmap") for t in SUITES[s][1]),
)

_OPTIONS = {"suite": "all", "size": "large"}
_CHOICES = {"suite": tuple(SUITES), "size": ("tiny", "small", "base", "large")}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_options(arg, _OPTIONS, _CHOICES)
    benchmarks, tasks = SUITES[opts["suite"]]
    c = ml_collections.ConfigDict()
    c.options = arg or ""
    # What is evaluated (one of checkpoint / predictions; usually given on the command line).
    c.checkpoint = ""  # flow3r.bin / .safetensors / save_pretrained dir / training workdir or step dir
    c.predictions = ""  # score outputs on disk instead (needs tag)
    c.tag = ""  # the results' name (default: from the checkpoint path)
    c.size = opts["size"]
    c.follow = False  # checkpoint is a training workdir: evaluate each new checkpoint once
    c.poll_seconds = 60.0
    c.idle_timeout = config_dict.placeholder(float)  # None: wait for the run's last step
    # Where the data and results are.
    c.benchmarks = ",".join(benchmarks)
    c.tasks = ",".join(tasks)  # "": every task of each benchmark
    c.data_root = ""
    c.out = ""  # launch.sweep passes the job's workdir as --out
    # The protocol (π³'s defaults) and the run.
    c.depth_align = "scale_shift"  # video depth: π³ aligns scale & shift per sequence
    c.plots = 2
    c.max_sequences = config_dict.placeholder(int)  # None: every sequence
    c.load_width = config_dict.placeholder(int)  # None: π³'s 512 / 518 (other widths are not the protocol)
    c.cpu_devices = config_dict.placeholder(int)
    return c


def sweep():
    """Video depth under each depth alignment (π³ reports scale & shift; the others show how
    much of a result is the alignment): 3 jobs."""
    for align in ("scale_shift", "l1_scale", "median"):
        yield {"suite": "video_depth", "depth_align": align}
