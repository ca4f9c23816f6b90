"""Generic benchmark: a folder of frames with ground-truth cameras in a common format.

Directory layout: `data_root` is one sequence, or a folder of sequences (each sub-folder that
holds ground truth is one)::

    <seq>/images/<frame>.png|jpg ...     (or the frames directly in <seq>/)
    <seq>/cameras.json                   flow3r_jax `write_cameras_json` format, or
    <seq>/sparse/0/ | <seq>/sparse/      a COLMAP model (cameras/images .bin or .txt), or
    <seq>/groundtruth.txt                a TUM-format trajectory 'timestamp tx ty tz qx qy qz qw'
    <seq>/depth/<frame>.png|npy          optional (with `depth_scale` for PNGs)

(`gt=` names the ground-truth file / model directory explicitly, `images=` the frame folder.)

Conventions converted:
- cameras.json: camera-to-world 4x4, OpenCV axes; intrinsics in pixels with the centre of the
  top-left pixel at (0.5, 0.5) (flow3r_jax / COLMAP convention), so cx, cy - 1/2 here.
- COLMAP: world-to-camera quaternion + translation (OpenCV axes) -> inverted; camera params
  (fx, fy, cx, cy) or (f, cx, cy) of the model (distortion ignored), cx, cy - 1/2 as above.
- TUM trajectory: camera-to-world, OpenCV axes, quaternion scalar-last; frames matched by
  nearest timestamp (from the image file names, or rgb.txt) within `tolerance` seconds, a frame
  with none in range is an error; intrinsics only via `intrinsics=(fx, fy, cx, cy)`.
- Depth PNG: value / depth_scale metres, 0 invalid; .npy: metres.

Every ground-truth frame must have its image and every image its ground truth (counts and names
checked). Selection: all frames in file-name order, `[::stride][:max_frames]`; for
`pose_angular`, `num_frames` (10) random frames per sequence, seed 42, as RealEstate10K (see
`selection.py`); `frame_lists` (JSON) is read when present and written otherwise.

Options: sequences, gt, images, depth, depth_scale, intrinsics, tolerance (0.02), stride (1),
max_frames, frame_lists, num_frames, seed (42).
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np

from flow3r_jax.eval.benchmarks.base import BenchmarkError, pick_sequences, require_dir
from flow3r_jax.eval.benchmarks.formats import associate_nearest, png_depth_reader, read_tum_list, read_tum_trajectory
from flow3r_jax.eval.benchmarks.selection import resolve_frame_lists
from flow3r_jax.eval.sequence import EvalSequence

__all__ = ["find_ground_truth", "read_cameras_json", "read_colmap_cameras", "load"]

_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_SINGLE_FOCAL = {0, 2, 3, 8, 9}  # COLMAP models whose params start f, cx, cy
_DEPTH_TASKS = ("video_depth", "mono_depth", "pointmap")


def find_ground_truth(seq_dir: str) -> tuple[str, str] | None:
    """(kind, path) of the ground truth in a sequence folder: cameras_json / colmap / tum."""
    if os.path.isfile(os.path.join(seq_dir, "cameras.json")):
        return "cameras_json", os.path.join(seq_dir, "cameras.json")
    for sub in (os.path.join("sparse", "0"), "sparse", ""):
        d = os.path.join(seq_dir, sub)
        if any(os.path.isfile(os.path.join(d, f)) for f in ("cameras.bin", "cameras.txt")):
            return "colmap", d
    for name in ("groundtruth.txt", "trajectory.txt"):
        if os.path.isfile(os.path.join(seq_dir, name)):
            return "tum", os.path.join(seq_dir, name)
    return None


def _kind_of(path: str) -> str:
    if os.path.isdir(path):
        return "colmap"
    return "cameras_json" if path.endswith(".json") else "tum"


def read_cameras_json(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{image name: (camera-to-world 4x4, K 3x3 with integer pixel centres)}."""
    try:
        with open(path) as f:
            doc = json.load(f)
        out = {}
        for fr in doc["frames"]:
            K = np.array([[fr["fx"], 0.0, fr["cx"] - 0.5], [0.0, fr["fy"], fr["cy"] - 0.5], [0.0, 0.0, 1.0]], np.float64)
            T = np.array(fr["camera_to_world"], np.float64)
            if T.shape != (4, 4):
                raise ValueError(f"camera_to_world of {fr['image_name']} is not 4x4")
            out[str(fr["image_name"])] = (T, K)
    except (OSError, json.JSONDecodeError) as e:
        raise BenchmarkError(f"{path}: unreadable cameras.json ({e})") from None
    except (KeyError, TypeError, ValueError) as e:
        raise BenchmarkError(f"{path}: not in the cameras.json format (frames with image_name, camera_to_world, fx, fy, cx, cy): {e}") from None
    if not out:
        raise BenchmarkError(f"{path}: no frames")
    return out


def read_colmap_cameras(directory: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{image name: (camera-to-world 4x4, K 3x3 with integer pixel centres)} of a COLMAP model."""
    from flow3r_jax.export.formats import read_colmap_model

    try:
        model = read_colmap_model(directory)
    except FileNotFoundError as e:
        raise BenchmarkError(f"{directory}: {e}") from None
    except Exception as e:  # KeyError (unsupported model name), struct.error (truncated binary), ...
        raise BenchmarkError(f"{directory}: unreadable COLMAP model ({type(e).__name__}: {e})") from None
    out = {}
    for name, cam_id, c2w, *_ in model["images"].values():
        if cam_id not in model["cameras"]:
            raise BenchmarkError(f"{directory}: image {name} refers to missing camera {cam_id}")
        mid, _, _, p = model["cameras"][cam_id]
        fx, fy, cx, cy = (p[0], p[0], p[1], p[2]) if mid in _SINGLE_FOCAL else (p[0], p[1], p[2], p[3])
        out[os.path.basename(name)] = (np.asarray(c2w, np.float64), np.array([[fx, 0.0, cx - 0.5], [0.0, fy, cy - 0.5], [0.0, 0.0, 1.0]]))
    if not out:
        raise BenchmarkError(f"{directory}: COLMAP model has no images")
    return out


def _read_depth_any(path: str, scale: float | None) -> np.ndarray:
    if path.endswith(".npy"):
        try:
            return np.load(path).astype(np.float32)
        except (OSError, ValueError) as e:
            raise BenchmarkError(f"{path}: unreadable depth array ({e})") from None
    if scale is None:
        raise BenchmarkError(f"{path}: a PNG depth map needs depth_scale (units per metre)")
    return png_depth_reader(scale)(path)


def _fixed_intrinsics(intrinsics, n: int) -> np.ndarray:
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    return np.repeat(np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])[None], n, 0)


def _frame_stamp(path: str) -> float | None:
    try:
        return float(os.path.splitext(os.path.basename(path))[0])
    except ValueError:
        return None


def _sequence(seq_dir, name, task, gt, images, depth, depth_scale, intrinsics, tolerance) -> EvalSequence:
    img_dir = os.path.join(seq_dir, images) if images else (os.path.join(seq_dir, "images") if os.path.isdir(os.path.join(seq_dir, "images")) else seq_dir)
    require_dir(img_dir, "image directory")
    paths = sorted(os.path.join(img_dir, n) for n in os.listdir(img_dir) if n.lower().endswith(_IMAGE_EXT))
    if not paths:
        raise BenchmarkError(f"{img_dir}: no images")
    if gt:
        gt_file = gt if os.path.isabs(gt) else os.path.join(seq_dir, gt)
        found = (_kind_of(gt_file), gt_file)
    else:
        found = find_ground_truth(seq_dir)
    if found is None:
        raise BenchmarkError(f"{seq_dir}: no ground truth (cameras.json, sparse/0 COLMAP model or groundtruth.txt)")
    kind, gt_path = found
    if not os.path.exists(gt_path):
        raise BenchmarkError(f"{gt_path}: missing ground truth")
    timestamps = None
    if kind == "tum":
        stamps = [_frame_stamp(p) for p in paths]
        if any(s is None for s in stamps):
            listing = os.path.join(seq_dir, "rgb.txt")
            if not os.path.isfile(listing):
                raise BenchmarkError(f"{img_dir}: image names are not timestamps and there is no {listing} to match {gt_path}")
            t, names = read_tum_list(listing)
            by_name = {os.path.basename(n): ti for ti, n in zip(t, names)}
            missing = [p for p in paths if os.path.basename(p) not in by_name]
            if missing:
                raise BenchmarkError(f"{missing[0]}: not listed in {listing}")
            stamps = [by_name[os.path.basename(p)] for p in paths]
        timestamps = np.array(stamps, np.float64)
        gt_t, gt_poses = read_tum_trajectory(gt_path)
        poses = gt_poses[associate_nearest(timestamps, gt_t, tolerance, gt_path)]
        K = None if intrinsics is None else _fixed_intrinsics(intrinsics, len(paths))
    else:
        cams = read_cameras_json(gt_path) if kind == "cameras_json" else read_colmap_cameras(gt_path)
        names = [os.path.basename(p) for p in paths]
        no_gt = [n for n in names if n not in cams]
        no_img = sorted(set(cams) - set(names))
        if no_gt or no_img:
            raise BenchmarkError(
                f"{gt_path}: frame counts disagree (images={len(names)} in {img_dir}, ground-truth cameras={len(cams)}); "
                + (f"images without a camera e.g. {no_gt[:3]} " if no_gt else "")
                + (f"cameras without an image e.g. {no_img[:3]}" if no_img else "")
            )
        poses = np.stack([cams[n][0] for n in names])
        K = np.stack([cams[n][1] for n in names])
        if intrinsics is not None:
            K = _fixed_intrinsics(intrinsics, len(paths))
    depth_paths = None
    depth_dir = os.path.join(seq_dir, depth) if depth else os.path.join(seq_dir, "depth")
    if os.path.isdir(depth_dir):
        stems = {os.path.splitext(n)[0]: n for n in os.listdir(depth_dir) if n.endswith((".png", ".npy"))}
        depth_paths = []
        for p in paths:
            s = os.path.splitext(os.path.basename(p))[0]
            if s not in stems:
                raise BenchmarkError(f"{depth_dir}: no depth map for frame {s} (frames and depth maps pair by name)")
            depth_paths.append(os.path.join(depth_dir, stems[s]))
    elif depth:
        raise BenchmarkError(f"{depth_dir}: missing depth directory")
    if task in _DEPTH_TASKS and depth_paths is None:
        raise BenchmarkError(f"{seq_dir}: task {task} needs ground-truth depth ({depth_dir} with <frame>.png or .npy)")
    return EvalSequence(
        benchmark="generic",
        name=name,
        frame_ids=[os.path.splitext(os.path.basename(p))[0] for p in paths],
        image_paths=paths,
        poses=poses,
        intrinsics=K,
        depth_paths=depth_paths,
        timestamps=timestamps,
        _read_depth=functools.partial(_read_depth_any, scale=depth_scale),
    )


def load(
    data_root: str,
    task: str,
    sequences=None,
    gt: str | None = None,
    images: str | None = None,
    depth: str | None = None,
    depth_scale: float | None = None,
    intrinsics=None,
    tolerance: float = 0.02,
    stride: int = 1,
    max_frames: int | None = None,
    frame_lists: str | None = None,
    num_frames: int | None = None,
    seed: int = 42,
) -> list[EvalSequence]:
    require_dir(data_root, "benchmark directory")
    if gt is not None or find_ground_truth(data_root) is not None:
        dirs = {os.path.basename(os.path.abspath(data_root)): data_root}
    else:
        dirs = {d: os.path.join(data_root, d) for d in sorted(os.listdir(data_root)) if os.path.isdir(os.path.join(data_root, d)) and find_ground_truth(os.path.join(data_root, d))}
        if not dirs and sequences is None:
            raise BenchmarkError(f"{data_root}: no ground truth (cameras.json, sparse/0 COLMAP model or groundtruth.txt) in it or its sub-folders")
    names = pick_sequences(dirs, sequences, data_root)
    seqs = {n: _sequence(dirs[n], n, task, gt, images, depth, depth_scale, intrinsics, tolerance) for n in names}
    if task == "pose_angular" or num_frames is not None or (frame_lists is not None and os.path.exists(frame_lists)):
        lists = resolve_frame_lists({n: len(s) for n, s in seqs.items()}, frame_lists, num_frames or 10, seed)
        return [seqs[n].select(lists[n]) for n in names if n in lists]
    out = []
    for n in names:
        sel = list(range(0, len(seqs[n]), stride))[:max_frames]
        out.append(seqs[n].select(sel) if len(sel) != len(seqs[n]) else seqs[n])
    return out
