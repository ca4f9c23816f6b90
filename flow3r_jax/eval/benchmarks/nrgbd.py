"""Neural RGB-D synthetic scenes (NRGBD): pointmap reconstruction from keyframes.

Directory layout (neural_rgbd_data.zip unpacked, as Spann3R's `docs/data_preprocess.md` says)::

    <data_root>/<scene>/images/img0.png img1.png ...    colour, 640x480
    <data_root>/<scene>/depth/depth0.png ...            16-bit millimetres
    <data_root>/<scene>/poses.txt                       4 lines (a 4x4 matrix) per frame

Conventions converted: poses.txt holds camera-to-world matrices with OpenGL camera axes (x right,
y up, z backward); the loader negates their y and z columns for OpenCV axes (π³
`datasets/nrgbd.py`: `poses[:, :, 1:3] *= -1`). Depth: value / 1000 metres, 0 invalid, and (as
π³ does) depths above 10 m or below 1 mm set invalid. Intrinsics: fx = fy = 554.2562584220408
(a 60 degree horizontal field of view at 640 px), cx = 320, cy = 240, as π³ hard-codes them.

Protocol (π³ `configs/data/mv_recon.yaml` NRGBD-sparse / NRGBD-dense, `mv_recon/sampling.py`
strategy "stride"): every scene folder, sorted by name; frames sorted by their number; keyframes
at positions 0, k, 2k, ...: k = 500 (sparse, CUT3R's setting) or 100 (dense).

Options: sequences, kf_every (500 / 100 by registry name).
"""

from __future__ import annotations

import os

import numpy as np

from flow3r_jax.eval.benchmarks.base import BenchmarkError, check_counts, list_files, pick_sequences, require_dir, require_file
from flow3r_jax.eval.benchmarks.formats import png_depth_reader, read_text_rows
from flow3r_jax.eval.benchmarks.selection import keyframes
from flow3r_jax.eval.sequence import EvalSequence

__all__ = ["INTRINSICS", "read_poses", "load"]

INTRINSICS = (554.2562584220408, 554.2562584220408, 320.0, 240.0)
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def read_poses(path: str) -> np.ndarray:
    """(N, 4, 4) as stored (OpenGL camera-to-world)."""
    rows = read_text_rows(require_file(path, "poses.txt"))
    if len(rows) % 4 or any(len(r) != 4 for r in rows):
        raise BenchmarkError(f"{path}: expected 4 lines of 4 numbers per frame, got {len(rows)} lines")
    try:
        return np.array(rows, np.float64).reshape(-1, 4, 4)
    except ValueError:
        raise BenchmarkError(f"{path}: non-numeric value") from None


def load(data_root: str, task: str, sequences=None, kf_every: int = 500) -> list[EvalSequence]:
    require_dir(data_root, "benchmark directory")
    available = [d for d in os.listdir(data_root) if os.path.isdir(os.path.join(data_root, d, "images"))]
    names = pick_sequences(available, sequences, data_root)
    fx, fy, cx, cy = INTRINSICS
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    out = []
    for seq in names:
        d = os.path.join(data_root, seq)
        images = list_files(os.path.join(d, "images"), ".png", key=lambda n: int(n[len("img") : -len(".png")]), what="images")
        depths = list_files(os.path.join(d, "depth"), ".png", key=lambda n: int(n[len("depth") : -len(".png")]), what="depth maps")
        poses = read_poses(os.path.join(d, "poses.txt"))
        check_counts(d, images=len(images), depths=len(depths), poses=len(poses))
        stems = [os.path.basename(p)[len("img") : -len(".png")] for p in images]
        for s, p in zip(stems, depths):
            if os.path.basename(p) != f"depth{s}.png":
                raise BenchmarkError(f"{p}: does not match img{s}.png (frames must pair by number)")
        sel = keyframes(len(images), kf_every)
        out.append(
            EvalSequence(
                benchmark="nrgbd",
                name=seq,
                frame_ids=[stems[i] for i in sel],
                image_paths=[images[i] for i in sel],
                poses=poses[sel] @ _GL_TO_CV,
                intrinsics=np.repeat(K[None], len(sel), 0),
                depth_paths=[depths[i] for i in sel],
                max_depth=10.0,
                _read_depth=png_depth_reader(1000.0, min_depth=1e-3, max_depth=10.0),
            )
        )
    return out
