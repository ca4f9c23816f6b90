"""FlowMap's per-scene optimisation through `reconstruct`
(`python -m flow3r_jax.reconstruct --config configs/flowmap.py:OPTIONS --input VIDEO --out DIR`).

OPTIONS is a comma-separated list of NAME=VALUE (all optional):

    depth=cnn|explicit      the depth model: FlowMap's CNN (default) or per-pixel depth values
                            (FlowMap's explicit-depth ablation: Procrustes on every pixel)
    init=pretrained|random  the CNN's initialisation: the shipped pretrained one (default) or
                            FlowMap's from-scratch setting (explicit depth ignores it)
    steps=N                 optimisation steps (default 2000, FlowMap's)

The top-level fields are `reconstruct`'s command-line options (same names, `-` as `_`; 0 / ""
mean the option's own default); a flag given on the command line wins over the config.
Fields whose FlowMapConfig value may be None are placeholders (None until set) except
`focal_regression_after`, where 0 stands for None (a command line cannot say None).
`flowmap` mirrors `flow3r_jax.flowmap.FlowMapConfig` (FlowMap's numbers), less the fields the
options above decide (`steps`, `depth`, `procrustes_points`) and `progress_every`. With a
pretrained initialisation the architecture fields (`cnn_widths`, `feature_dim`, `corr_hidden`)
come from the initialisation file. Every field is overridable, e.g. `--config.flowmap.lr=1e-4`.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs.flow3r import parse_options

ENTRY = "flow3r_jax.reconstruct"  # what `launch.sweep` runs for a job of this config
WORKDIR_FLAG = "out"  # the entry's flag that receives the job's directory

_OPTIONS = {"depth": "cnn", "init": "pretrained", "steps": "2000"}
_CHOICES = {"depth": ("cnn", "explicit"), "init": ("pretrained", "random")}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_options(arg, _OPTIONS, _CHOICES)
    if not opts["steps"].isdigit() or int(opts["steps"]) < 1:
        raise ValueError(f"config option steps={opts['steps']!r}: expected a positive integer")
    c = ml_collections.ConfigDict()
    c.options = arg or ""

    # reconstruct's command line (python -m flow3r_jax.reconstruct --help).
    c.input = ""  # video file or image folder
    c.out = ""  # output directory (launch.sweep passes the job's workdir as --out)
    c.checkpoint = ""  # a Flow3r checkpoint: run the feed-forward model ("" = per-scene optimisation)
    c.model_size = "large"  # model size of a state-dict checkpoint
    c.refine = False  # with a checkpoint: refine its depth with the per-scene optimisation
    c.frames = 0  # N evenly spaced frames (0: all, at most 60)
    c.frames_from = ""  # a frame list file (launch.eval writes them)
    c.steps = int(opts["steps"])
    c.init = opts["init"]  # "pretrained", "random" or an initialisation .npz
    c.depth = opts["depth"]  # "explicit" is reconstruct's --explicit-depth
    c.pixels = 43_200  # optimisation image area (FlowMap: 180 x 240)
    c.ff_pixels = 255_000  # feed-forward input area (the official rule)
    c.progress = True

    # flow3r_jax.flowmap.FlowMapConfig (FlowMap's defaults; see its docstring for each).
    f = c.flowmap = ml_collections.ConfigDict()
    f.lr = 3e-5
    f.focal_lr = config_dict.placeholder(float)  # None: lr
    f.cnn_widths = (24, 48, 96)
    f.feature_dim = 32
    f.explicit_initial_depth = 0.1
    f.use_correspondence_weights = True
    f.corr_hidden = (64, 32)
    f.weight_clip = 1e-4
    f.explicit_weight_sensitivity = 100.0
    f.procrustes_mask = True
    f.procrustes_edge = config_dict.placeholder(float)  # None: off
    f.focal_min = 0.5
    f.focal_max = 2.0
    f.focal_candidates = 60
    f.softmin_points = 8192
    f.softmin_temperature = 10.0
    f.focal_regression_after = 1000  # 0: soft-min throughout (FlowMapConfig's None)
    f.focal_regression_window = 100
    f.fixed_focal = config_dict.placeholder(float)  # None: soft-min, then a free focal
    f.flow_weight = 1000.0
    f.huber_delta = 0.01
    f.track_weight = 100.0
    f.track_after = 50
    f.converge_window = 0  # W > 0: end once the loss has levelled off (reconstruct --converge W)
    f.converge_rtol = 0.005
    return c


def sweep():
    """The depth model against the optimisation length: 2 x 3 jobs."""
    for depth in ("cnn", "explicit"):
        for steps in (500, 1000, 2000):
            yield {"depth": depth, "steps": steps}
