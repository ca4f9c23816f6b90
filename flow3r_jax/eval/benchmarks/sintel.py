"""MPI-Sintel (training set, final pass): video / monocular depth and camera trajectory.

Directory layout (`data_root` = the `training` folder of MPI-Sintel-training_images.zip merged
with MPI-Sintel-depth-training-20150305.zip, as MonST3R's `download_sintel.sh` leaves it)::

    training/final/<seq>/frame_0001.png ...
    training/depth/<seq>/frame_0001.dpt ...
    training/camdata_left/<seq>/frame_0001.cam ...

Formats and conventions converted:
- `.dpt`: float32 tag 202021.25, int32 width, int32 height, then width*height float32 depths
  (little-endian), z-depth in Sintel's units (treated as metres). Depth is kept as stored; the
  protocol's cap is `max_depth = 70` (π³ `utils/depth.py`, EVAL_DEPTH_METADATA["sintel"]).
- `.cam`: the same float32 tag, then a 3x3 intrinsic matrix M and a 3x4 extrinsic N (float64,
  row-major) with x = M N X: N is world-to-camera with OpenCV axes (x right, y down, z forward),
  M in pixels with integer pixel centres. The loader returns inv([N; 0 0 0 1]) (camera-to-world)
  and M unchanged.

Protocol (π³ branch `evaluation`): the 14 sequences of `configs/data/depth.yaml` and
`configs/data/relpose-distance.yaml` (SEQUENCES below), all frames of each, sorted by name, for
video depth, monocular depth (each frame alone) and the trajectory (stride 1,
`configs/evaluation/relpose-distance.yaml` pose_eval_stride). Sintel is dynamic.

Options: sequences (names), stride (default 1).
"""

from __future__ import annotations

import os

import numpy as np

from flow3r_jax.eval.benchmarks.base import BenchmarkError, check_counts, list_files, pick_sequences, require_dir
from flow3r_jax.eval.sequence import EvalSequence

__all__ = ["SEQUENCES", "TAG_FLOAT", "read_dpt", "read_cam", "load"]

SEQUENCES = (
    "alley_2",
    "ambush_4",
    "ambush_5",
    "ambush_6",
    "cave_2",
    "cave_4",
    "market_2",
    "market_5",
    "market_6",
    "shaman_3",
    "sleeping_1",
    "sleeping_2",
    "temple_2",
    "temple_3",
)
TAG_FLOAT = 202021.25
MAX_DEPTH = 70.0


def _check_tag(f, path: str) -> None:
    tag = np.fromfile(f, "<f4", 1)
    if tag.size != 1 or tag[0] != TAG_FLOAT:
        raise BenchmarkError(f"{path}: not a Sintel file (tag {tag[0] if tag.size else 'missing'}, expected {TAG_FLOAT} 'PIEH')")


def read_dpt(path: str) -> np.ndarray:
    """(H, W) float32 depth of a Sintel `.dpt` file."""
    try:
        with open(path, "rb") as f:
            _check_tag(f, path)
            w, h = (int(v) for v in np.fromfile(f, "<i4", 2))
            if not (0 < w < 100000 and 0 < h < 100000):
                raise BenchmarkError(f"{path}: implausible size {w}x{h}")
            data = np.fromfile(f, "<f4", w * h)
    except OSError as e:
        raise BenchmarkError(f"{path}: unreadable ({e})") from None
    except ValueError:  # fewer than 2 ints
        raise BenchmarkError(f"{path}: truncated header") from None
    if data.size != w * h:
        raise BenchmarkError(f"{path}: truncated ({data.size} of {w * h} depth values)")
    return data.reshape(h, w).astype(np.float32)


def read_cam(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(M 3x3 intrinsics, N 3x4 world-to-camera) of a Sintel `.cam` file."""
    try:
        with open(path, "rb") as f:
            _check_tag(f, path)
            values = np.fromfile(f, "<f8", 21)
    except OSError as e:
        raise BenchmarkError(f"{path}: unreadable ({e})") from None
    if values.size != 21:
        raise BenchmarkError(f"{path}: truncated ({values.size} of 21 camera values)")
    return values[:9].reshape(3, 3), values[9:].reshape(3, 4)


def load(data_root: str, task: str, sequences=None, stride: int = 1) -> list[EvalSequence]:
    final = require_dir(os.path.join(data_root, "final"), "final-pass directory")
    available = [d for d in os.listdir(final) if os.path.isdir(os.path.join(final, d))]
    names = pick_sequences(available, sequences, final, default=SEQUENCES)
    out = []
    for seq in names:
        images = list_files(os.path.join(final, seq), ".png", what="images")
        depths = list_files(os.path.join(data_root, "depth", seq), ".dpt", what="depth maps")
        cams = list_files(os.path.join(data_root, "camdata_left", seq), ".cam", what="camera files")
        check_counts(os.path.join(data_root, "*", seq), images=len(images), depths=len(depths), cameras=len(cams))
        stems = [os.path.splitext(os.path.basename(p))[0] for p in images]
        for other in (depths, cams):
            for s, p in zip(stems, other):
                if os.path.splitext(os.path.basename(p))[0] != s:
                    raise BenchmarkError(f"{p}: does not match image {s}.png (files must pair by name)")
        Ks, poses = [], []
        for p in cams:
            M, N = read_cam(p)
            w2c = np.eye(4)
            w2c[:3] = N
            Ks.append(M)
            poses.append(np.linalg.inv(w2c))
        sel = list(range(0, len(images), stride))
        s = EvalSequence(
            benchmark="sintel",
            name=seq,
            frame_ids=stems,
            image_paths=images,
            poses=np.stack(poses),
            intrinsics=np.stack(Ks),
            depth_paths=depths,
            dynamic=True,
            max_depth=MAX_DEPTH,
            _read_depth=read_dpt,
        )
        out.append(s.select(sel) if stride != 1 else s)
    return out
