"""ScanNet v2: camera trajectory (and depth) of a scene scan.

Directory layout (each scene's .sens exported with ScanNet's SensorData reader, as MonST3R's
`data/download_scannetv2.sh` + `datasets_preprocess/scannet_sens_reader.py` do)::

    <data_root>/scene0707_00/color/0.jpg 1.jpg ...        colour, 1296x968
    <data_root>/scene0707_00/depth/0.png ...              16-bit, 1000 per metre, 640x480
    <data_root>/scene0707_00/pose/0.txt ...               4x4 camera-to-world
    <data_root>/scene0707_00/intrinsic/intrinsic_color.txt, intrinsic_depth.txt   4x4

Conventions converted: pose/*.txt are camera-to-world with OpenCV axes, used as is (some frames
of some scans hold -inf: a sequence whose selected poses are not finite is skipped with a
warning, as π³ skips a scene whose trajectory evo cannot load). Intrinsics are intrinsic_color's
3x3 block (pixels of the colour images). The depth sensor has its own, lower resolution and its
own intrinsics but the same centre and axes (depth is registered to colour), so the depth reader
resamples each depth map onto the colour grid (nearest depth pixel of K_depth K_color^-1 x);
z-depth is unchanged by that, 0 stays invalid.

Protocol (π³ `configs/data/relpose-distance.yaml` `scannetv2`, frames prepared by MonST3R's
`datasets_preprocess/prepare_scannet.py`): frames sorted by their integer name, positions
`[:90*3:3]` (every 3rd frame, the first 90); the scenes are scene0707_00 .. scene0806_00
(the 100 MonST3R's download script fetches; π³ evaluates whatever is in its data root).

Options: sequences, stride (3), num_frames (90).
"""

from __future__ import annotations

import functools
import os
import warnings

import numpy as np

from flow3r_jax.eval.benchmarks.base import BenchmarkError, check_counts, finite_poses, image_size, list_files, pick_sequences, require_dir
from flow3r_jax.eval.benchmarks.formats import read_matrix_rows, read_png_depth
from flow3r_jax.eval.sequence import EvalSequence

__all__ = ["SEQUENCES", "read_depth_on_color_grid", "load"]

SEQUENCES = tuple(f"scene{i:04d}_00" for i in range(707, 807))
DEPTH_SCALE = 1000.0


def read_depth_on_color_grid(path: str, K_color: np.ndarray, K_depth: np.ndarray, color_hw: tuple[int, int]) -> np.ndarray:
    """A ScanNet depth PNG resampled (nearest) onto the colour image's pixel grid."""
    depth = read_png_depth(path, DEPTH_SCALE)
    H, W = color_hw
    if depth.shape == (H, W) and np.allclose(K_color, K_depth):
        return depth
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    pix = np.stack([xs, ys, np.ones_like(xs)], -1) @ (K_depth @ np.linalg.inv(K_color)).T
    u = np.rint(pix[..., 0] / pix[..., 2])
    v = np.rint(pix[..., 1] / pix[..., 2])
    inside = (u >= 0) & (u < depth.shape[1]) & (v >= 0) & (v < depth.shape[0])
    out = np.zeros((H, W), np.float32)
    out[inside] = depth[v[inside].astype(int), u[inside].astype(int)]
    return out


def load(data_root: str, task: str, sequences=None, stride: int = 3, num_frames: int = 90) -> list[EvalSequence]:
    require_dir(data_root, "benchmark directory")
    available = [d for d in os.listdir(data_root) if os.path.isdir(os.path.join(data_root, d, "color"))]
    names = pick_sequences(available, sequences, data_root, default=SEQUENCES)
    out = []
    by_int = lambda n: int(n.split(".")[0])  # noqa: E731
    for seq in names:
        d = os.path.join(data_root, seq)
        images = list_files(os.path.join(d, "color"), ".jpg", key=by_int, what="colour images")
        depths = list_files(os.path.join(d, "depth"), ".png", key=by_int, what="depth maps")
        poses = list_files(os.path.join(d, "pose"), ".txt", key=by_int, what="pose files")
        check_counts(d, images=len(images), depths=len(depths), poses=len(poses))
        sel = list(range(len(images)))[: num_frames * stride : stride]
        images, depths, poses = [images[i] for i in sel], [depths[i] for i in sel], [poses[i] for i in sel]
        for a, b, c in zip(images, poses, depths):
            for other in (b, c):
                if by_int(os.path.basename(a)) != by_int(os.path.basename(other)):
                    raise BenchmarkError(f"{other}: does not match image {a} (frames must pair by number)")
        T = np.stack([read_matrix_rows(p, (4, 4)) for p in poses])
        if not finite_poses(T):
            warnings.warn(f"scannet: {d}: non-finite ground-truth pose among the selected frames; sequence skipped (as π³ does)")
            continue
        K_color = read_matrix_rows(os.path.join(d, "intrinsic", "intrinsic_color.txt"), (4, 4))[:3, :3]
        K_depth = read_matrix_rows(os.path.join(d, "intrinsic", "intrinsic_depth.txt"), (4, 4))[:3, :3]
        hw = image_size(images[0])
        out.append(
            EvalSequence(
                benchmark="scannet",
                name=seq,
                frame_ids=[os.path.splitext(os.path.basename(p))[0] for p in images],
                image_paths=images,
                poses=T,
                intrinsics=np.repeat(K_color[None], len(images), 0),
                depth_paths=depths,
                _read_depth=functools.partial(read_depth_on_color_grid, K_color=K_color, K_depth=K_depth, color_hw=hw),
            )
        )
    if not out:
        raise BenchmarkError(f"{data_root}: every selected ScanNet sequence has non-finite ground-truth poses")
    return out
