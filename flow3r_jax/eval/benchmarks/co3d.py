"""CO3Dv2: relative camera pose over 10 random frames per sequence.

Directory layout (`data_root` = CO3D_DIR, the folder of category folders)::

    <data_root>/<category>/<sequence>/images/frame000001.jpg ...
    <data_root>/<category>/<sequence>/masks/frame000001.png ...
    <data_root>/<category>/frame_annotations.jgz          gzip JSON list of frame annotations
    <data_root>/<category>/sequence_annotations.jgz       (viewpoint_quality_score per sequence)
    <data_root>/<category>/set_lists/set_lists_fewview_dev.json

and optionally the preprocessed annotations π³ / VGGT / PoseDiffusion read (relpose++'s
`preprocess/preprocess_co3d.py` output): `<annotations_dir>/<category>_test.jgz`, a gzip JSON
`{sequence: [{filepath, R, T, focal_length, principal_point, bbox}, ...]}`. When found (option
`annotations_dir`, else `<data_root>/co3d_v2_annotations` or a sibling `co3d_v2_annotations`)
it is read; otherwise the same selection is rebuilt from the raw files: frames of the "test"
list of set_lists_fewview_dev.json in its order, sequences with viewpoint_quality_score > 0.5,
frames whose mask has no pixel > 0.4 dropped (`check_masks=True` reads every mask of the test
frames, slow but needed to reproduce the frame counts and so the random draws).

Conventions converted (PyTorch3D cameras): a world point X (row vector) maps to camera space as
X R + T with camera axes +X left, +Y up, +Z forward; so the OpenCV world-to-camera is
R_cv = (R diag(-1, -1, 1))^T, t_cv = diag(-1, -1, 1) T (π³ `datasets/co3d_v2.py`
`convert_pt3d_RT_to_opencv`), and the pose is its inverse. focal_length / principal_point are
in NDC; with CO3Dv2's "ndc_isotropic" format s = min(H, W) / 2 and f_px = f s,
c_px = -p s + (W / 2, H / 2) - 1/2 (the -1/2: PyTorch3D's screen space has the image corner at
0, pixel centres at +1/2); "ndc_norm_image_bounds" (CO3Dv1) uses s = (W / 2, H / 2) per axis.

Protocol (π³ `configs/data/relpose-angular.yaml` `CO3Dv2`, `datasets/co3d_v2.py`,
`relpose/sampling.py`; VGGT's `test_co3d.py`): categories "all" = the 41 training then the 10
test categories in the order below; per category the sequences of `<category>_test.jgz` in file
order, dropping those with fewer than 50 frames and those with a frame whose T sums above 1e5;
10 frames each by `np.random.choice` from one RNG seeded 42 across all sequences in that order,
read from / written to `frame_lists` (π³'s seq-id-map JSON format).

Options: categories, sequences, annotations_dir, check_masks (True), frame_lists,
num_frames (10), seed (42), min_num_images (50).
"""

from __future__ import annotations

import gzip
import json
import os

import cv2
import numpy as np

from flow3r_jax.eval.benchmarks.base import BenchmarkError, image_size, require_dir, require_file
from flow3r_jax.eval.benchmarks.selection import resolve_frame_lists
from flow3r_jax.eval.sequence import EvalSequence

__all__ = ["TRAINING_CATEGORIES", "TEST_CATEGORIES", "pytorch3d_to_opencv", "ndc_to_pixel_intrinsics", "load"]

TRAINING_CATEGORIES = (
    "apple", "backpack", "banana", "baseballbat", "baseballglove", "bench", "bicycle", "bottle", "bowl", "broccoli",
    "cake", "car", "carrot", "cellphone", "chair", "cup", "donut", "hairdryer", "handbag", "hydrant", "keyboard",
    "laptop", "microwave", "motorcycle", "mouse", "orange", "parkingmeter", "pizza", "plant", "stopsign", "teddybear",
    "toaster", "toilet", "toybus", "toyplane", "toytrain", "toytruck", "tv", "umbrella", "vase", "wineglass",
)  # fmt: skip
TEST_CATEGORIES = ("ball", "book", "couch", "frisbee", "hotdog", "kite", "remote", "sandwich", "skateboard", "suitcase")
_FLIP = np.diag([-1.0, -1.0, 1.0])


def pytorch3d_to_opencv(R, T) -> np.ndarray:
    """PyTorch3D (R, T) of one camera -> OpenCV camera-to-world 4x4."""
    w2c = np.eye(4)
    w2c[:3, :3] = (np.asarray(R, np.float64) @ _FLIP).T
    w2c[:3, 3] = _FLIP @ np.asarray(T, np.float64)
    return np.linalg.inv(w2c)


def ndc_to_pixel_intrinsics(focal, principal_point, hw: tuple[int, int], fmt: str = "ndc_isotropic") -> np.ndarray:
    """3x3 pixel intrinsics (integer pixel centres) of PyTorch3D NDC focal / principal point."""
    H, W = hw
    if fmt == "ndc_isotropic":
        s = np.array([min(H, W) / 2.0] * 2)
    elif fmt == "ndc_norm_image_bounds":
        s = np.array([W / 2.0, H / 2.0])
    else:
        raise BenchmarkError(f"unknown CO3D intrinsics_format {fmt!r}")
    f = np.asarray(focal, np.float64) * s
    c = -np.asarray(principal_point, np.float64) * s + np.array([W / 2.0, H / 2.0]) - 0.5
    return np.array([[f[0], 0.0, c[0]], [0.0, f[1], c[1]], [0.0, 0.0, 1.0]])


def _read_jgz(path: str):
    try:
        with gzip.open(require_file(path, "annotation file"), "rt") as f:
            return json.load(f)
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BenchmarkError(f"{path}: unreadable gzip JSON ({e})") from None


def _annotations_dir(data_root: str, given: str | None) -> str | None:
    if given is not None:
        return require_dir(given, "CO3D annotations directory")
    for cand in (os.path.join(data_root, "co3d_v2_annotations"), os.path.join(os.path.dirname(os.path.abspath(data_root)), "co3d_v2_annotations")):
        if os.path.isdir(cand):
            return cand
    return None


def _mask_nonempty(path: str) -> bool:
    m = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if m is None:
        raise BenchmarkError(f"{path}: missing or unreadable mask (needed to drop frames whose mask is empty)")
    if m.ndim == 3:
        m = m[..., 0]
    scale = 65535.0 if m.dtype == np.uint16 else 255.0 if m.dtype == np.uint8 else 1.0
    return bool(np.any(m.astype(np.float64) / scale > 0.4))


def _raw_category(data_root: str, category: str, check_masks: bool, min_quality: float = 0.5) -> dict[str, list[dict]]:
    """The `<category>_test.jgz` content rebuilt from the raw annotation files."""
    cdir = require_dir(os.path.join(data_root, category), "category directory")
    frames = _read_jgz(os.path.join(cdir, "frame_annotations.jgz"))
    seqs = _read_jgz(os.path.join(cdir, "sequence_annotations.jgz"))
    set_file = require_file(os.path.join(cdir, "set_lists", "set_lists_fewview_dev.json"), "set list")
    try:
        with open(set_file) as f:
            test = json.load(f)["test"]
    except (OSError, KeyError, json.JSONDecodeError) as e:
        raise BenchmarkError(f"{set_file}: unreadable set list or no 'test' entry ({e})") from None
    by_frame = {(fa["sequence_name"], fa["frame_number"]): fa for fa in frames}
    good = {s["sequence_name"] for s in seqs if (s.get("viewpoint_quality_score") or 0.0) > min_quality}
    out: dict[str, list[dict]] = {}
    for seq, number, filepath in test:
        if seq not in good:
            continue
        entries = out.setdefault(seq, [])
        if check_masks:
            mask = os.path.join(data_root, filepath.replace("images", "masks").replace(".jpg", ".png"))
            if not _mask_nonempty(mask):
                continue
        fa = by_frame.get((seq, number))
        if fa is None:
            raise BenchmarkError(f"{os.path.join(cdir, 'frame_annotations.jgz')}: no annotation for {seq} frame {number} listed in {set_file}")
        vp = fa["viewpoint"]
        entries.append(
            {
                "filepath": filepath,
                "R": vp["R"],
                "T": vp["T"],
                "focal_length": vp["focal_length"],
                "principal_point": vp["principal_point"],
                "intrinsics_format": vp.get("intrinsics_format", "ndc_isotropic"),
                "size": fa.get("image", {}).get("size"),
            }
        )
    return out


def load(
    data_root: str,
    task: str,
    categories=None,
    sequences=None,
    annotations_dir: str | None = None,
    check_masks: bool = True,
    frame_lists: str | None = None,
    num_frames: int = 10,
    seed: int = 42,
    min_num_images: int = 50,
) -> list[EvalSequence]:
    require_dir(data_root, "CO3D directory")
    cats = list(categories) if categories is not None else list(TRAINING_CATEGORIES + TEST_CATEGORIES)
    ann = _annotations_dir(data_root, annotations_dir)
    metadata: dict[str, list[dict]] = {}
    for c in cats:
        data = _read_jgz(os.path.join(ann, f"{c}_test.jgz")) if ann else _raw_category(data_root, c, check_masks)
        for seq, frames in data.items():
            if len(frames) < min_num_images:
                continue
            if any(sum(fr["T"][:3]) > 1e5 for fr in frames):
                continue
            metadata[seq] = frames
    if sequences is not None:
        missing = [s for s in sequences if s not in metadata]
        if missing:
            raise BenchmarkError(f"{data_root}: missing sequence(s) {missing} (not in the test annotations of {cats})")
        metadata = {s: metadata[s] for s in metadata if s in set(sequences)}
    if not metadata:
        raise BenchmarkError(f"{data_root}: no CO3D test sequence with >= {min_num_images} frames in categories {cats}")
    lists = resolve_frame_lists({s: len(f) for s, f in metadata.items()}, frame_lists, num_frames, seed)
    out = []
    for seq, frames in metadata.items():
        if seq not in lists:
            continue
        picked = [frames[i] for i in lists[seq]]
        paths = [os.path.join(data_root, fr["filepath"]) for fr in picked]
        poses, Ks = [], []
        for fr, p in zip(picked, paths):
            hw = image_size(p)
            if fr.get("size") is not None and tuple(fr["size"]) != hw:
                raise BenchmarkError(f"{p}: image is {hw[0]}x{hw[1]} but its annotation says {fr['size'][0]}x{fr['size'][1]}")
            poses.append(pytorch3d_to_opencv(fr["R"], fr["T"]))
            Ks.append(ndc_to_pixel_intrinsics(fr["focal_length"], fr["principal_point"], hw, fr.get("intrinsics_format", "ndc_isotropic")))
        out.append(
            EvalSequence(
                benchmark="co3d",
                name=seq,
                frame_ids=[os.path.splitext(os.path.basename(fr["filepath"]))[0] for fr in picked],
                image_paths=paths,
                poses=np.stack(poses),
                intrinsics=np.stack(Ks),
            )
        )
    return out
