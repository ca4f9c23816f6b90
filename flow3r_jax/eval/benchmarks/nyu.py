"""NYU-Depth v2 (monocular depth), the layout of π³'s evaluation data (`configs/data/depth.yaml`,
`nyu-v2`: a set of images without sequences)::

    <data_root>/nyu_images/<name>.png      RGB frames
    <data_root>/nyu_depths/<name>.npy      float depth in metres, 0 = invalid

(`<data_root>` may also be the `val/` folder's parent: `<data_root>/val/nyu_images`.) Every image
is its own one-frame sequence, paired with the depth map of the same name; π³ caps nothing
(`max_depth=None`) and fits its alignment with lr 1e-3 (`metrics.DEPTH_PROTOCOLS["nyu-v2"]`).
Intrinsics: the published Kinect colour calibration (fx 518.8579, fy 519.4696, cx 325.5824,
cy 253.7362 at 640x480), used only where the frames are 640x480 (else none).

Options: max_frames (all).
"""

from __future__ import annotations

import os

import numpy as np

from flow3r_jax.eval.benchmarks.base import BenchmarkError, check_counts, image_size, list_files
from flow3r_jax.eval.sequence import EvalSequence

__all__ = ["load"]

_K = np.array([[518.8579, 0.0, 325.5824], [0.0, 519.4696, 253.7362], [0.0, 0.0, 1.0]])


def _read_depth(path: str) -> np.ndarray:
    try:
        d = np.load(path)
    except (OSError, ValueError) as e:
        raise BenchmarkError(f"{path}: unreadable depth map ({e})") from None
    d = np.asarray(d, np.float32).squeeze()
    if d.ndim != 2:
        raise BenchmarkError(f"{path}: expected a 2-D depth map, got shape {d.shape}")
    return np.where(np.isfinite(d) & (d > 0), d, 0.0).astype(np.float32)


def load(data_root: str, task: str, max_frames: int | None = None) -> list[EvalSequence]:
    root = os.path.join(data_root, "val") if os.path.isdir(os.path.join(data_root, "val", "nyu_images")) else data_root
    images = list_files(os.path.join(root, "nyu_images"), (".png", ".jpg"), what="images")
    depths = list_files(os.path.join(root, "nyu_depths"), ".npy", what="depth maps")
    check_counts(root, images=len(images), depths=len(depths))
    by_stem = {os.path.splitext(os.path.basename(p))[0]: p for p in depths}
    missing = [p for p in images if os.path.splitext(os.path.basename(p))[0] not in by_stem]
    if missing:
        raise BenchmarkError(f"{root}/nyu_depths: no depth map for {len(missing)} image(s), e.g. {os.path.basename(missing[0])}")
    images = images[:max_frames]
    K = _K if image_size(images[0]) == (480, 640) else None
    out = []
    for p in images:
        stem = os.path.splitext(os.path.basename(p))[0]
        out.append(
            EvalSequence(
                benchmark="nyu-v2",
                name=stem,
                frame_ids=[stem],
                image_paths=[p],
                intrinsics=None if K is None else K[None].copy(),
                depth_paths=[by_stem[stem]],
                _read_depth=_read_depth,
            )
        )
    return out
