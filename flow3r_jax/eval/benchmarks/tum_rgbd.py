"""TUM RGB-D and Bonn RGB-D Dynamic: the TUM on-disk format, two protocols.

Directory layout (one folder per sequence, as the datasets unpack)::

    <data_root>/<seq>/rgb/<timestamp>.png        colour, 640x480 8-bit
    <data_root>/<seq>/depth/<timestamp>.png      16-bit, 5000 per metre, 0 = no data
    <data_root>/<seq>/rgb.txt, depth.txt         'timestamp filename' lists (TUM; optional for Bonn)
    <data_root>/<seq>/groundtruth.txt            'timestamp tx ty tz qx qy qz qw'

TUM (`data_root` = the folder holding rgbd_dataset_freiburg3_*):
- groundtruth.txt is the camera-to-world pose of the colour camera's optical centre (OpenCV
  axes, quaternion scalar-last), used as is.
- Intrinsics: the published Kinect calibrations ("Intrinsic Camera Calibration of the Kinect",
  TUM RGB-D file-formats page), chosen by the `freiburgN` in the sequence name: fr1 517.3 516.5
  318.6 255.3, fr2 520.9 521.0 325.1 249.7 (both with radial distortion, not undone here), fr3
  535.4 539.2 320.1 247.6 (fr3 images are distortion-free). Depth 5000 per metre.
- Protocol (π³ `configs/data/relpose-distance.yaml` `tum`, frames prepared by MonST3R's
  `datasets_preprocess/prepare_tum.py`): rgb.txt and groundtruth.txt associated with the TUM
  tools' greedy rule (offset 0, max difference 0.02 s; rgb frames without ground truth inside
  the tolerance drop out), then every 3rd associated frame, the first 90 (`[::3][:90]`). The
  sequences are the 8 TUM-dynamics fr3 ones MonST3R's `download_tum_dynamics.sh` fetches
  (SEQUENCES_TUM); π³ evaluates whatever folders are in its data root, here the list is
  explicit. Depth, when depth.txt exists, is the nearest depth frame within the tolerance.

Bonn (`data_root` = the `rgbd_bonn_dataset` folder):
- groundtruth.txt holds motion-capture poses of the marker body in the mocap frame, not camera
  poses. The dataset page gives the correction camera-to-world = T_ros T_gt T_ros T_m (T_ros
  swaps axes and is its own inverse; T_m is the marker-to-sensor calibration, whose published
  3x3 block is not exactly orthonormal (uniform scale ~1.06), so its nearest rotation is used).
  `pose_frame="marker"` returns the raw file poses instead.
- Intrinsics (dataset page): fx 542.822841, fy 542.576870, cx 315.593520, cy 237.756098;
  distortion d0..d4 = 0.039903 -0.099343 -0.000730 -0.000144 0 is not undone (π³ does not either).
- Protocol (π³ `configs/data/depth.yaml` `bonn` + MonST3R `datasets_preprocess/prepare_bonn.py`):
  the 5 sequences SEQUENCES_BONN; sorted rgb/*.png `[30:140]` (positions 30..139, 110 frames) and
  sorted depth/*.png `[30:140]`, paired by position (the loader checks the pair's file-name
  timestamps agree within the tolerance); depth capped at 70 m for the metrics. Poses (not used
  by π³'s protocol) by nearest ground-truth timestamp within the tolerance.

Options (both): sequences, tolerance (seconds, default 0.02). TUM: stride (3), num_frames (90),
intrinsics (fx, fy, cx, cy) override. Bonn: start (30), stop (140), pose_frame.
"""

from __future__ import annotations

import os

import numpy as np

from flow3r_jax.eval.benchmarks.base import BenchmarkError, check_counts, list_files, pick_sequences, require_dir, require_file
from flow3r_jax.eval.benchmarks.formats import (
    associate_greedy,
    associate_nearest,
    png_depth_reader,
    read_tum_list,
    read_tum_trajectory,
)
from flow3r_jax.eval.sequence import EvalSequence

__all__ = [
    "SEQUENCES_TUM",
    "SEQUENCES_BONN",
    "TUM_INTRINSICS",
    "BONN_INTRINSICS",
    "BONN_T_ROS",
    "BONN_T_M",
    "bonn_camera_poses",
    "load_tum",
    "load_bonn",
]

SEQUENCES_TUM = tuple(
    f"rgbd_dataset_freiburg3_{s}"
    for s in ("sitting_halfsphere", "sitting_rpy", "sitting_static", "sitting_xyz", "walking_halfsphere", "walking_rpy", "walking_static", "walking_xyz")
)
SEQUENCES_BONN = ("rgbd_bonn_balloon2", "rgbd_bonn_crowd2", "rgbd_bonn_crowd3", "rgbd_bonn_person_tracking2", "rgbd_bonn_synchronous")
TUM_INTRINSICS = {
    "freiburg1": (517.3, 516.5, 318.6, 255.3),
    "freiburg2": (520.9, 521.0, 325.1, 249.7),
    "freiburg3": (535.4, 539.2, 320.1, 247.6),
}
BONN_INTRINSICS = (542.822841, 542.576870, 315.593520, 237.756098)
DEPTH_SCALE = 5000.0
BONN_MAX_DEPTH = 70.0
BONN_T_ROS = np.array([[-1.0, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
BONN_T_M = np.array(
    [
        [1.0157, 0.1828, -0.2389, 0.0113],
        [0.0009, -0.8431, -0.6413, -0.0098],
        [-0.3009, 0.6147, -0.8085, 0.0111],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _K(fx, fy, cx, cy) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _nearest_rotation(M: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(M)
    return U @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))]) @ Vt


def bonn_camera_poses(marker_poses: np.ndarray) -> np.ndarray:
    """(N, 4, 4) Bonn groundtruth.txt poses -> camera-to-world, OpenCV axes."""
    T_m = BONN_T_M.copy()
    T_m[:3, :3] = _nearest_rotation(T_m[:3, :3])
    return BONN_T_ROS @ np.asarray(marker_poses, np.float64) @ BONN_T_ROS @ T_m


def _sequence_dirs(data_root: str) -> list[str]:
    require_dir(data_root, "benchmark directory")
    return [d for d in os.listdir(data_root) if os.path.isdir(os.path.join(data_root, d))]


def _stamp(path: str) -> float | None:
    try:
        return float(os.path.splitext(os.path.basename(path))[0])
    except ValueError:
        return None


def load_tum(data_root: str, task: str, sequences=None, tolerance: float = 0.02, stride: int = 3, num_frames: int = 90, intrinsics=None) -> list[EvalSequence]:
    names = pick_sequences(_sequence_dirs(data_root), sequences, data_root, default=SEQUENCES_TUM)
    out = []
    for seq in names:
        d = os.path.join(data_root, seq)
        rgb_t, rgb_names = read_tum_list(require_file(os.path.join(d, "rgb.txt"), "rgb.txt"))
        gt_file = require_file(os.path.join(d, "groundtruth.txt"), "ground-truth trajectory")
        gt_t, gt_poses = read_tum_trajectory(gt_file)
        pairs = associate_greedy(rgb_t, gt_t, tolerance)
        if not pairs:
            raise BenchmarkError(
                f"{gt_file}: no rgb.txt timestamp has ground truth within {tolerance} s "
                f"(rgb {rgb_t.min():.3f}..{rgb_t.max():.3f}, ground truth {gt_t.min():.3f}..{gt_t.max():.3f})"
            )
        pairs = pairs[::stride][:num_frames]
        ii = [i for i, _ in pairs]
        jj = [j for _, j in pairs]
        images = [os.path.join(d, rgb_names[i]) for i in ii]
        missing = [p for p in images if not os.path.isfile(p)]
        if missing:
            raise BenchmarkError(f"{missing[0]}: missing image listed in {os.path.join(d, 'rgb.txt')} ({len(missing)} missing)")
        depth_paths = None
        if os.path.isfile(os.path.join(d, "depth.txt")):
            dt, dnames = read_tum_list(os.path.join(d, "depth.txt"))
            k = associate_nearest(rgb_t[ii], dt, tolerance, os.path.join(d, "depth.txt"))
            depth_paths = [os.path.join(d, dnames[j]) for j in k]
        if intrinsics is not None:
            K = _K(*intrinsics)
        else:
            cam = next((c for c in TUM_INTRINSICS if c in seq), None)
            K = _K(*TUM_INTRINSICS[cam]) if cam else None
        out.append(
            EvalSequence(
                benchmark="tum",
                name=seq,
                frame_ids=[os.path.splitext(os.path.basename(rgb_names[i]))[0] for i in ii],
                image_paths=images,
                poses=gt_poses[jj],
                intrinsics=None if K is None else np.repeat(K[None], len(ii), 0),
                depth_paths=depth_paths,
                timestamps=rgb_t[ii],
                dynamic=True,
                _read_depth=png_depth_reader(DEPTH_SCALE),
            )
        )
    return out


def _timestamps(paths: list[str], listing: str) -> np.ndarray | None:
    """Timestamps of files from their names (TUM naming), else from the rgb.txt / depth.txt list."""
    stamps = [_stamp(p) for p in paths]
    if all(s is not None for s in stamps):
        return np.array(stamps)
    if os.path.isfile(listing):
        t, names = read_tum_list(listing)
        by_name = {os.path.basename(n): ti for ti, n in zip(t, names)}
        if all(os.path.basename(p) in by_name for p in paths):
            return np.array([by_name[os.path.basename(p)] for p in paths])
    return None


def load_bonn(
    data_root: str, task: str, sequences=None, tolerance: float = 0.02, start: int = 30, stop: int = 140, pose_frame: str = "camera"
) -> list[EvalSequence]:
    if pose_frame not in ("camera", "marker"):
        raise ValueError(f"pose_frame must be 'camera' or 'marker', got {pose_frame!r}")
    names = pick_sequences(_sequence_dirs(data_root), sequences, data_root, default=SEQUENCES_BONN)
    out = []
    for seq in names:
        d = os.path.join(data_root, seq)
        rgb = list_files(os.path.join(d, "rgb"), ".png", what="images")
        dep = list_files(os.path.join(d, "depth"), ".png", what="depth maps")
        check_counts(d, images=len(rgb), depths=len(dep))
        if len(rgb) < stop:
            raise BenchmarkError(f"{os.path.join(d, 'rgb')}: {len(rgb)} frames, the protocol selects positions {start}..{stop - 1}")
        rgb, dep = rgb[start:stop], dep[start:stop]
        t_rgb = _timestamps(rgb, os.path.join(d, "rgb.txt"))
        t_dep = _timestamps(dep, os.path.join(d, "depth.txt"))
        if t_rgb is not None and t_dep is not None:
            gap = np.abs(t_rgb - t_dep)
            if np.any(gap > tolerance):
                i = int(np.argmax(gap > tolerance))
                raise BenchmarkError(f"{dep[i]}: paired by position with {rgb[i]} but {gap[i]:.4f} s apart (tolerance {tolerance} s)")
        poses = None
        gt_file = os.path.join(d, "groundtruth.txt")
        if os.path.isfile(gt_file):
            if t_rgb is None:
                raise BenchmarkError(f"{os.path.join(d, 'rgb')}: image names are not timestamps and there is no rgb.txt to associate {gt_file}")
            gt_t, gt_poses = read_tum_trajectory(gt_file)
            poses = gt_poses[associate_nearest(t_rgb, gt_t, tolerance, gt_file)]
            if pose_frame == "camera":
                poses = bonn_camera_poses(poses)
        n = len(rgb)
        out.append(
            EvalSequence(
                benchmark="bonn",
                name=seq,
                frame_ids=[os.path.splitext(os.path.basename(p))[0] for p in rgb],
                image_paths=rgb,
                poses=poses,
                intrinsics=np.repeat(_K(*BONN_INTRINSICS)[None], n, 0),
                depth_paths=dep,
                timestamps=t_rgb,
                dynamic=True,
                max_depth=BONN_MAX_DEPTH,
                _read_depth=png_depth_reader(DEPTH_SCALE),
            )
        )
    return out
