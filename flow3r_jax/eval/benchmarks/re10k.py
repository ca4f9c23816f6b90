"""RealEstate10K (test split): relative camera pose over 10 random frames per sequence.

Directory layout (`data_root` as π³'s `datasets/preprocess/prepare_re10k.sh` builds it)::

    <data_root>/metadata/test/<seq>.txt          the dataset's camera file (also accepted:
                                                 RealEstate10K/test/<seq>.txt, test/<seq>.txt)
    <data_root>/<seq>/images/0000.png ...        frames in camera-file order (π³ renames the
                                                 extracted frames to their position), or
    <data_root>/<seq>/images/<timestamp>.png     frames named by the camera file's timestamps
                                                 (also directly in <data_root>/<seq>/)

Camera file: line 1 the video URL; then per frame `timestamp fx fy cx cy k1 k2 r11 r12 r13 t1
r21 r22 r23 t2 r31 r32 r33 t3`: timestamp in microseconds, intrinsics normalised by the image
width (fx, cx) and height (fy, cy), a 3x4 world-to-camera matrix with OpenCV axes. Converted:
K = [[fx W, 0, cx W - 1/2], [0, fy H, cy H - 1/2], [0, 0, 1]] in pixels of the frames on disk
(W, H from the first frame; the -1/2 moves the normalised continuous image coordinates, whose
origin is the top-left image corner, to integer pixel centres), pose = inv([R | t; 0 0 0 1]).

Protocol (π³ `configs/data/relpose-angular.yaml` `Re10K`, `relpose/sampling.py`): the
sequences sorted by name (π³ evaluates the 1719 of `datasets/sequences/re10k_test_1719.txt`
whose videos could still be fetched: pass `sequences` or `sequence_file`), 10 frames per sequence
drawn with `np.random.choice(n, 10, replace=False)` from one RNG seeded 42 across all sequences
in that order (see `selection.py`); the frame lists are read from / written to `frame_lists`
(π³'s seq-id-map JSON format, so their `Re10K_relpose_seq-id-map_seed42.json` can be passed in).

Options: sequences, sequence_file, frame_lists (JSON path), num_frames (10), seed (42).
"""

from __future__ import annotations

import os

import numpy as np

from flow3r_jax.eval.benchmarks.base import BenchmarkError, image_size, pick_sequences, require_dir
from flow3r_jax.eval.benchmarks.formats import read_text_rows
from flow3r_jax.eval.benchmarks.selection import resolve_frame_lists
from flow3r_jax.eval.sequence import EvalSequence

__all__ = ["read_camera_file", "load"]

_METADATA = (os.path.join("metadata", "test"), os.path.join("RealEstate10K", "test"), "test")
_IMAGE_EXT = (".png", ".jpg", ".jpeg")


def read_camera_file(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(timestamps (N,) int microseconds, normalised fx fy cx cy (N, 4), world-to-camera (N, 4, 4))."""
    try:
        with open(path) as f:
            lines = [ln.split() for ln in f.read().splitlines()[1:] if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise BenchmarkError(f"{path}: unreadable camera file ({e})") from None
    if not lines:
        raise BenchmarkError(f"{path}: no camera lines after the URL line")
    bad = next((i for i, ln in enumerate(lines) if len(ln) != 19), None)
    if bad is not None:
        raise BenchmarkError(f"{path}: line {bad + 2} has {len(lines[bad])} fields, expected 19 (timestamp fx fy cx cy k1 k2 + 3x4 pose)")
    try:
        stamps = np.array([int(ln[0]) for ln in lines], np.int64)
        values = np.array([[float(v) for v in ln[1:]] for ln in lines], np.float64)
    except ValueError:
        raise BenchmarkError(f"{path}: non-numeric field") from None
    w2c = np.repeat(np.eye(4)[None], len(lines), 0)
    w2c[:, :3] = values[:, 6:].reshape(-1, 3, 4)
    return stamps, values[:, :4], w2c


def _metadata_dir(data_root: str) -> str:
    for sub in _METADATA:
        if os.path.isdir(os.path.join(data_root, sub)):
            return os.path.join(data_root, sub)
    raise BenchmarkError(f"{data_root}: no camera-file directory (looked for {', '.join(_METADATA)})")


def _frame_paths(seq_dir: str, stamps: np.ndarray) -> list[str]:
    """Image of each camera line: <seq>/images/NNNN.ext by position, else <timestamp>.ext."""
    folder = os.path.join(seq_dir, "images") if os.path.isdir(os.path.join(seq_dir, "images")) else seq_dir
    files = {os.path.splitext(n)[0]: n for n in os.listdir(folder) if n.lower().endswith(_IMAGE_EXT)}
    if not files:
        raise BenchmarkError(f"{folder}: no frames (*.png / *.jpg)")
    if all(str(int(t)) in files for t in stamps):
        return [os.path.join(folder, files[str(int(t))]) for t in stamps]
    by_pos = [f"{i:04d}" for i in range(len(stamps))]
    if len(files) == len(stamps) and all(k in files for k in by_pos):
        return [os.path.join(folder, files[k]) for k in by_pos]
    raise BenchmarkError(
        f"{folder}: {len(files)} frames on disk for {len(stamps)} camera lines "
        "(expected one frame per line, named NNNN by position or by the line's timestamp)"
    )


def load(data_root: str, task: str, sequences=None, sequence_file: str | None = None, frame_lists: str | None = None, num_frames: int = 10, seed: int = 42) -> list[EvalSequence]:
    require_dir(data_root, "benchmark directory")
    meta = _metadata_dir(data_root)
    cams = {os.path.splitext(n)[0] for n in os.listdir(meta) if n.endswith(".txt")}
    available = [d for d in os.listdir(data_root) if d in cams and os.path.isdir(os.path.join(data_root, d))]
    if sequences is None and sequence_file is not None:
        sequences = [ln[0] for ln in read_text_rows(sequence_file)]
    names = sorted(pick_sequences(available, sequences, data_root))
    cameras = {s: read_camera_file(os.path.join(meta, f"{s}.txt")) for s in names}
    lists = resolve_frame_lists({s: len(cameras[s][0]) for s in names}, frame_lists, num_frames, seed)
    out = []
    for seq in names:
        if seq not in lists:
            continue
        stamps, intr, w2c = cameras[seq]
        paths = _frame_paths(os.path.join(data_root, seq), stamps)
        ids = lists[seq]
        H, W = image_size(paths[ids[0]])
        K = np.zeros((len(ids), 3, 3))
        K[:, 0, 0] = intr[ids, 0] * W
        K[:, 1, 1] = intr[ids, 1] * H
        K[:, 0, 2] = intr[ids, 2] * W - 0.5
        K[:, 1, 2] = intr[ids, 3] * H - 0.5
        K[:, 2, 2] = 1.0
        out.append(
            EvalSequence(
                benchmark="re10k",
                name=seq,
                frame_ids=[str(int(stamps[i])) for i in ids],
                image_paths=[paths[i] for i in ids],
                poses=np.linalg.inv(w2c[ids]),
                intrinsics=K,
                timestamps=stamps[ids] / 1e6,
            )
        )
    return out
