"""KITTI depth (the annotated-depth validation drives): video and monocular depth.

Ground truth: 16-bit PNG, depth = value / 256 metres, 0 = no measurement (the KITTI depth
devkit's `depth_read`); images are the left colour camera (image_02). No depth cap
(π³ `utils/depth.py`, EVAL_DEPTH_METADATA["kitti"]: max_depth None).

Protocol (π³ `configs/data/depth.yaml` `kitti` + MonST3R `datasets_preprocess/prepare_kitti.py`):
for each drive of the annotated validation split, the first 110 ground-truth depth maps of
`val/<drive>/proj_depth/groundtruth/image_02` (sorted by name) and the raw image of the same
frame; one sequence per drive, named `<drive>_02`; all of its frames are used. Layouts read, the
first one found:

1. π³'s gathered copy (what MonST3R's script writes)::

       <data_root>[/depth_selection/val_selection_cropped]/image_gathered/<drive>_02/<frame>.png
       <data_root>[/depth_selection/val_selection_cropped]/groundtruth_depth_gathered/<drive>_02/<frame>.png

   every frame of every folder (already the first 110); intrinsics are not in this layout
   (None, or from `<data_root>/<date>/calib_cam_to_cam.txt` P_rect_02 when present).
2. The downloads as unpacked (data_depth_annotated + raw drives)::

       <data_root>/val/<drive>/proj_depth/groundtruth/image_02/<frame>.png
       <data_root>/<date>/<drive>/image_02/data/<frame>.png
       <data_root>/<date>/calib_cam_to_cam.txt          (optional, P_rect_02 -> intrinsics)

   the first `max_frames` (110) sorted depth maps per drive, as the script selects them.
3. The official flat `val_selection_cropped` (1000 cropped frames, not π³'s frame set)::

       <data_root>/image/<drive>_image_<frame>_image_0X.png
       <data_root>/groundtruth_depth/<drive>_groundtruth_depth_<frame>_image_0X.png
       <data_root>/intrinsics/<drive>_image_<frame>_image_0X.txt      (3x3, row-major)

   grouped into one sequence per drive and camera, frames in order.

Options: sequences, max_frames (110, layout 2).
"""

from __future__ import annotations

import os
import re

import numpy as np

from flow3r_jax.eval.benchmarks.base import BenchmarkError, check_counts, list_files, pick_sequences
from flow3r_jax.eval.benchmarks.formats import png_depth_reader, read_matrix_rows, read_text_rows
from flow3r_jax.eval.sequence import EvalSequence

__all__ = ["load", "read_cam_to_cam_p_rect"]

DEPTH_SCALE = 256.0
_GATHERED = ("", "val_selection_cropped", os.path.join("depth_selection", "val_selection_cropped"))


def read_cam_to_cam_p_rect(path: str, camera: str = "02") -> np.ndarray:
    """3x3 intrinsics (P_rect_XX[:, :3]) of a raw-data calib_cam_to_cam.txt."""
    for row in read_text_rows(path):
        if row[0] == f"P_rect_{camera}:":
            try:
                return np.array([float(v) for v in row[1:13]]).reshape(3, 4)[:, :3]
            except ValueError:
                break
    raise BenchmarkError(f"{path}: no readable P_rect_{camera} line")


def _drive_intrinsics(data_root: str, drive: str) -> np.ndarray | None:
    calib = os.path.join(data_root, drive[:10], "calib_cam_to_cam.txt")
    return read_cam_to_cam_p_rect(calib) if os.path.isfile(calib) else None


def _sequence(name, images, depths, K, ids) -> EvalSequence:
    return EvalSequence(
        benchmark="kitti",
        name=name,
        frame_ids=ids,
        image_paths=images,
        intrinsics=None if K is None else np.stack(K) if isinstance(K, list) else np.repeat(K[None], len(images), 0),
        depth_paths=depths,
        dynamic=True,
        _read_depth=png_depth_reader(DEPTH_SCALE),
    )


def _paired(image_dir: str, depth_files: list[str]) -> list[str]:
    """The image of the same frame (file name) as each depth map."""
    images = [os.path.join(image_dir, os.path.basename(p)) for p in depth_files]
    missing = [i for i, p in enumerate(images) if not os.path.isfile(p)]
    if missing:
        raise BenchmarkError(
            f"{images[missing[0]]}: missing image for depth map {depth_files[missing[0]]} "
            f"({len(missing)} of {len(depth_files)} depth maps have no image)"
        )
    return images


def load(data_root: str, task: str, sequences=None, max_frames: int = 110) -> list[EvalSequence]:
    for sub in _GATHERED:
        img_root = os.path.join(data_root, sub, "image_gathered")
        if os.path.isdir(img_root):
            dep_root = os.path.join(data_root, sub, "groundtruth_depth_gathered")
            names = pick_sequences([d for d in os.listdir(img_root) if os.path.isdir(os.path.join(img_root, d))], sequences, img_root)
            out = []
            for seq in names:
                depths = list_files(os.path.join(dep_root, seq), ".png", what="depth maps")
                images = list_files(os.path.join(img_root, seq), ".png", what="images")
                check_counts(os.path.join(img_root, seq), images=len(images), depths=len(depths))
                images = _paired(os.path.join(img_root, seq), depths)
                ids = [os.path.splitext(os.path.basename(p))[0] for p in depths]
                out.append(_sequence(seq, images, depths, _drive_intrinsics(data_root, seq[:-3]), ids))
            return out
    val = os.path.join(data_root, "val")
    if os.path.isdir(val):
        drives = [d for d in os.listdir(val) if os.path.isdir(os.path.join(val, d, "proj_depth", "groundtruth", "image_02"))]
        names = pick_sequences([f"{d}_02" for d in drives], sequences, val)
        out = []
        for seq in names:
            drive = seq[:-3]
            depths = list_files(os.path.join(val, drive, "proj_depth", "groundtruth", "image_02"), ".png", what="depth maps")[:max_frames]
            image_dir = os.path.join(data_root, drive[:10], drive, "image_02", "data")
            images = _paired(image_dir, depths)
            ids = [os.path.splitext(os.path.basename(p))[0] for p in depths]
            out.append(_sequence(seq, images, depths, _drive_intrinsics(data_root, drive), ids))
        return out
    image_dir = os.path.join(data_root, "image")
    if os.path.isdir(image_dir):
        pattern = re.compile(r"^(.*)_image_(\d+)_image_(\d\d)\.png$")
        groups: dict[str, list[tuple[str, str, str]]] = {}
        for n in sorted(os.listdir(image_dir)):
            m = pattern.match(n)
            if m:
                groups.setdefault(f"{m.group(1)}_{m.group(3)}", []).append((n, m.group(2), m.group(3)))
        if not groups:
            raise BenchmarkError(f"{image_dir}: no images named <drive>_image_<frame>_image_0X.png")
        names = pick_sequences(groups, sequences, image_dir)
        out = []
        for seq in names:
            images, depths, Ks, ids = [], [], [], []
            drive = seq[:-3]
            for n, frame, cam in groups[seq]:
                dep = os.path.join(data_root, "groundtruth_depth", f"{drive}_groundtruth_depth_{frame}_image_{cam}.png")
                if not os.path.isfile(dep):
                    raise BenchmarkError(f"{dep}: missing ground-truth depth for image {os.path.join(image_dir, n)}")
                intr = os.path.join(data_root, "intrinsics", n[:-4] + ".txt")
                Ks.append(read_matrix_rows(intr, (3, 3)) if os.path.isfile(intr) else None)
                images.append(os.path.join(image_dir, n))
                depths.append(dep)
                ids.append(frame)
            K = Ks if all(k is not None for k in Ks) else None
            out.append(_sequence(seq, images, depths, K, ids))
        return out
    raise BenchmarkError(
        f"{data_root}: no KITTI depth layout found (looked for image_gathered/, val_selection_cropped/image_gathered/, "
        "depth_selection/val_selection_cropped/image_gathered/, val/<drive>/proj_depth/, image/)"
    )
