"""Benchmark loaders: one module per on-disk format, all returning `EvalSequence`s with the
protocol's frames already selected (SPEC §5, following π³'s released evaluation code, branch
`evaluation` of yyfz/Pi3). The user supplies the data; nothing is downloaded.

    from flow3r_jax.eval.benchmarks import BENCHMARKS, load_benchmark
    seqs = load_benchmark("sintel", "/data/sintel/training", "video_depth")

`BENCHMARKS[name]` is a `BenchmarkSpec` (name, tasks, dynamic, load). `load_benchmark` checks
the name, the task and the directory, then runs the loader, which checks the files (sequence
directories, frame counts, timestamps, readability of the small annotation files) before any
image is decoded; every problem is a `BenchmarkError` (a ValueError) naming the path.

| name | module | tasks | frames |
|---|---|---|---|
| sintel | sintel | video / mono depth, trajectory | 14 final-pass sequences, all frames |
| bonn | tum_rgbd | video / mono depth | 5 sequences, sorted frames [30:140] |
| kitti | kitti_depth | video / mono depth | first 110 annotated frames per val drive |
| nyu-v2 | nyu | mono depth | every image of nyu_images/ with its nyu_depths/*.npy |
| tum | tum_rgbd | trajectory | 8 fr3 dynamic, associated frames [::3][:90] |
| scannet | scannet | trajectory | scene0707_00..0806_00, frames [:270:3] |
| kitti_odometry | kitti_odometry | trajectory | sequences 00-10, all frames |
| re10k | re10k | angular pose | 10 random frames / sequence, seed 42 |
| co3d | co3d | angular pose | 10 random frames / sequence, seed 42 |
| 7scenes-sparse / -dense | seven_scenes | pointmap | test split, keyframe every 200 / 40 |
| nrgbd-sparse / -dense | nrgbd | pointmap | every scene, keyframe every 500 / 100 |
| generic | generic | all but flow | a frame folder + cameras.json / COLMAP / TUM trajectory |
| synthetic | flow3r_jax.eval.synthetic | all, flow included | rendered rooms the project writes itself |
"""

from __future__ import annotations

import functools
import inspect
import os

from flow3r_jax.eval.benchmarks import (
    co3d,
    generic,
    kitti_depth,
    kitti_odometry,
    nrgbd,
    nyu,
    re10k,
    scannet,
    seven_scenes,
    sintel,
    tum_rgbd,
)
from flow3r_jax.eval.benchmarks.base import BenchmarkError, BenchmarkSpec
from flow3r_jax.eval.benchmarks.selection import load_frame_lists, save_frame_lists
from flow3r_jax.eval.sequence import TASKS, EvalSequence


def _load_synthetic(data_root: str, task: str, max_sequences: int | None = None) -> list[EvalSequence]:
    from flow3r_jax.eval.synthetic import load_synthetic

    return load_synthetic(data_root, task, max_sequences)


__all__ = ["BENCHMARKS", "BenchmarkSpec", "BenchmarkError", "load_benchmark", "load_frame_lists", "save_frame_lists"]

_DEPTH = ("video_depth", "mono_depth")

BENCHMARKS: dict[str, BenchmarkSpec] = {
    s.name: s
    for s in (
        BenchmarkSpec("sintel", _DEPTH + ("pose_trajectory",), True, sintel.load, "MPI-Sintel training, final pass"),
        BenchmarkSpec("bonn", _DEPTH, True, tum_rgbd.load_bonn, "Bonn RGB-D Dynamic"),
        BenchmarkSpec("kitti", _DEPTH, True, kitti_depth.load, "KITTI depth, annotated validation drives"),
        BenchmarkSpec("nyu-v2", ("mono_depth",), False, nyu.load, "NYU-Depth v2 (pi^3's nyu_images / nyu_depths)"),
        BenchmarkSpec("tum", ("pose_trajectory",), True, tum_rgbd.load_tum, "TUM RGB-D (fr3 dynamic)"),
        BenchmarkSpec("scannet", ("pose_trajectory",), False, scannet.load, "ScanNet v2"),
        BenchmarkSpec("kitti_odometry", ("pose_trajectory",), True, kitti_odometry.load, "KITTI odometry, cam2"),
        BenchmarkSpec("re10k", ("pose_angular",), False, re10k.load, "RealEstate10K test"),
        BenchmarkSpec("co3d", ("pose_angular",), False, co3d.load, "CO3Dv2 test"),
        BenchmarkSpec("7scenes-sparse", ("pointmap",), False, functools.partial(seven_scenes.load, kf_every=200), "7-Scenes, keyframe every 200"),
        BenchmarkSpec("7scenes-dense", ("pointmap",), False, functools.partial(seven_scenes.load, kf_every=40), "7-Scenes, keyframe every 40"),
        BenchmarkSpec("nrgbd-sparse", ("pointmap",), False, functools.partial(nrgbd.load, kf_every=500), "Neural RGB-D, keyframe every 500"),
        BenchmarkSpec("nrgbd-dense", ("pointmap",), False, functools.partial(nrgbd.load, kf_every=100), "Neural RGB-D, keyframe every 100"),
        BenchmarkSpec("synthetic", TASKS, False, _load_synthetic, "flow3r_jax.eval.synthetic: rendered rooms with exact depth, poses and flow"),
        BenchmarkSpec(
            "generic", _DEPTH + ("pose_trajectory", "pose_angular", "pointmap"), False, generic.load, "frames + cameras.json / COLMAP / TUM"
        ),
    )
}


def load_benchmark(name: str, data_root: str, task: str, **opts) -> list[EvalSequence]:
    """The sequences of benchmark `name` under `data_root` for `task`, frames selected by the
    protocol; `opts` go to the loader (see each module's docstring)."""
    spec = BENCHMARKS.get(name)
    if spec is None:
        raise BenchmarkError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    if task not in spec.tasks:
        raise BenchmarkError(f"benchmark {name} has no ground truth for task {task!r}; its tasks: {', '.join(spec.tasks)}")
    if not os.path.isdir(data_root):
        raise BenchmarkError(f"{data_root}: missing data directory for benchmark {name}")
    try:
        inspect.signature(spec.load).bind(data_root, task, **opts)
    except TypeError as e:
        raise BenchmarkError(f"benchmark {name}: bad options {sorted(opts)}: {e}") from None
    seqs = spec.load(data_root, task, **opts)
    if not seqs:
        raise BenchmarkError(f"{data_root}: benchmark {name} selected no sequences for task {task}")
    return seqs
