"""KITTI odometry: camera trajectory of the left colour camera (cam2).

Directory layout (data_odometry_color + data_odometry_calib + data_odometry_poses unpacked into
one `dataset` folder)::

    <data_root>/sequences/<XX>/image_2/000000.png ...
    <data_root>/sequences/<XX>/calib.txt     lines 'P0: 12 numbers' ... 'P3:', 'Tr:'
    <data_root>/sequences/<XX>/times.txt     (optional) seconds per frame
    <data_root>/poses/<XX>.txt               one row of 12 numbers per frame

Conventions converted: poses/XX.txt row i is the 3x4 camera-to-world pose of the left greyscale
camera cam0 (rectified; world = cam0 at frame 0), OpenCV axes. calib.txt P_k = K_k [I | t_k] are
the rectified projection matrices of camera k applied to cam0 coordinates, so camera k sees
x_k = x_0 + t_k with t_k = K_k^-1 P_k[:, 3]. The loader returns the cam2 poses
c2w_2 = c2w_0 [[I, -t_2], [0, 1]] (same world, cam2's centre and axes) and K_2 = P2[:, :3], so
projecting through the returned pose and intrinsics equals P2 applied to cam0 coordinates.

Protocol: not part of π³'s evaluation; SPEC §5 lists the format. Sequences 00-10 (those with
ground truth), every frame (stride 1) unless `stride` / `max_frames` say otherwise; static
scenes with moving traffic.

Options: sequences, stride (1), max_frames (None), camera ("2" or "3").
"""

from __future__ import annotations

import os

import numpy as np

from flow3r_jax.eval.benchmarks.base import BenchmarkError, check_counts, list_files, pick_sequences, require_dir, require_file
from flow3r_jax.eval.benchmarks.formats import read_text_rows
from flow3r_jax.eval.sequence import EvalSequence

__all__ = ["SEQUENCES", "read_calib", "read_poses", "load"]

SEQUENCES = tuple(f"{i:02d}" for i in range(11))


def read_calib(path: str) -> dict[str, np.ndarray]:
    """{'P0': 3x4, ..., 'Tr': 3x4} of a calib.txt."""
    out = {}
    for row in read_text_rows(require_file(path, "calib.txt")):
        key = row[0].rstrip(":")
        try:
            out[key] = np.array([float(v) for v in row[1:]]).reshape(3, 4)
        except ValueError:
            raise BenchmarkError(f"{path}: line {row[0]} is not 12 numbers") from None
    return out


def read_poses(path: str) -> np.ndarray:
    """(N, 4, 4) from a poses/XX.txt."""
    rows = read_text_rows(require_file(path, "pose file"))
    if not rows or any(len(r) != 12 for r in rows):
        raise BenchmarkError(f"{path}: expected 12 numbers (a 3x4 matrix) per line")
    try:
        m = np.array(rows, np.float64).reshape(-1, 3, 4)
    except ValueError:
        raise BenchmarkError(f"{path}: non-numeric value") from None
    T = np.repeat(np.eye(4)[None], len(m), 0)
    T[:, :3] = m
    return T


def load(data_root: str, task: str, sequences=None, stride: int = 1, max_frames: int | None = None, camera: str = "2") -> list[EvalSequence]:
    seq_root = require_dir(os.path.join(data_root, "sequences"), "sequences directory")
    pose_root = require_dir(os.path.join(data_root, "poses"), "poses directory")
    available = [s for s in os.listdir(seq_root) if os.path.isfile(os.path.join(pose_root, f"{s}.txt"))]
    names = pick_sequences(available, sequences, seq_root, default=[s for s in SEQUENCES if s in available] if sequences is None else None)
    out = []
    for seq in names:
        d = os.path.join(seq_root, seq)
        images = list_files(os.path.join(d, f"image_{camera}"), ".png", what="images")
        poses0 = read_poses(os.path.join(pose_root, f"{seq}.txt"))
        check_counts(d, images=len(images), poses=len(poses0))
        calib = read_calib(os.path.join(d, "calib.txt"))
        P = calib.get(f"P{camera}")
        if P is None:
            raise BenchmarkError(f"{os.path.join(d, 'calib.txt')}: no P{camera} line")
        K = P[:, :3]
        t = np.linalg.solve(K, P[:, 3])
        offset = np.eye(4)
        offset[:3, 3] = -t
        poses = poses0 @ offset
        times = None
        if os.path.isfile(os.path.join(d, "times.txt")):
            rows = read_text_rows(os.path.join(d, "times.txt"))
            times = np.array([float(r[0]) for r in rows])
            check_counts(d, images=len(images), times=len(times))
        s = EvalSequence(
            benchmark="kitti_odometry",
            name=seq,
            frame_ids=[os.path.splitext(os.path.basename(p))[0] for p in images],
            image_paths=images,
            poses=poses,
            intrinsics=np.repeat(K[None], len(images), 0),
            timestamps=times,
            dynamic=True,
        )
        sel = list(range(0, len(images), stride))[:max_frames]
        out.append(s.select(sel) if len(sel) != len(images) else s)
    return out
