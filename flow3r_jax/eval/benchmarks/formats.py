"""File formats several benchmarks share, read into the `EvalSequence` conventions.

- 16-bit PNG depth with a fixed scale (TUM / Bonn 5000 per metre, KITTI 256, ScanNet / 7-Scenes /
  NRGBD 1000) and 0 (or a sentinel such as 65535) for invalid pixels.
- TUM-format text lists: `timestamp data...` lines, `#` comments (rgb.txt, depth.txt,
  groundtruth.txt with `timestamp tx ty tz qx qy qz qw`, a camera-to-world pose of the optical
  centre, OpenCV camera axes, quaternion scalar-last).
- Timestamp association: the TUM benchmark tools' greedy one-to-one `associate` (closest pairs
  first, within `max_difference`) and a nearest-neighbour lookup with a tolerance.

Readers used lazily by `EvalSequence.load_depths()` raise `BenchmarkError` naming the file.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from flow3r_jax.eval.benchmarks.base import BenchmarkError

__all__ = [
    "png_depth_reader",
    "read_png_depth",
    "read_text_rows",
    "read_tum_list",
    "read_tum_trajectory",
    "quat_xyzw_to_matrix",
    "pose_from_tum",
    "associate_greedy",
    "associate_nearest",
    "read_matrix_rows",
]


def read_png_depth(path: str, scale: float, invalid: tuple[int, ...] = (0,), min_depth: float | None = None, max_depth: float | None = None) -> np.ndarray:
    """(H, W) float32 metres from a 16-bit PNG storing `scale` units per metre; pixels equal to
    one of `invalid`, or outside [min_depth, max_depth] when given, become 0."""
    raw = cv2.imread(path, cv2.IMREAD_UNCHANGED) if os.path.isfile(path) else None
    if raw is None:
        raise BenchmarkError(f"{path}: missing or unreadable depth PNG")
    if raw.ndim != 2 or raw.dtype != np.uint16:
        raise BenchmarkError(f"{path}: expected a single-channel 16-bit depth PNG, got {raw.dtype} of shape {raw.shape}")
    bad = np.isin(raw, np.asarray(invalid, np.uint16))
    depth = raw.astype(np.float32) / np.float32(scale)
    if min_depth is not None:
        bad |= depth < min_depth
    if max_depth is not None:
        bad |= depth > max_depth
    depth[bad] = 0.0
    return depth


def png_depth_reader(scale: float, invalid: tuple[int, ...] = (0,), min_depth: float | None = None, max_depth: float | None = None):
    """A one-argument reader for `EvalSequence._read_depth` (a picklable partial)."""
    import functools

    return functools.partial(read_png_depth, scale=scale, invalid=invalid, min_depth=min_depth, max_depth=max_depth)


def read_text_rows(path: str, comment: str = "#") -> list[list[str]]:
    """Whitespace / comma separated fields of the non-empty, non-comment lines."""
    if not os.path.isfile(path):
        raise BenchmarkError(f"{path}: missing file")
    try:
        with open(path) as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise BenchmarkError(f"{path}: unreadable ({e})") from None
    rows = []
    for line in text.replace(",", " ").replace("\t", " ").splitlines():
        line = line.strip()
        if line and not line.startswith(comment):
            rows.append(line.split())
    return rows


def read_tum_list(path: str) -> tuple[np.ndarray, list[str]]:
    """rgb.txt / depth.txt: (timestamps (N,), file names relative to the sequence folder)."""
    rows = read_text_rows(path)
    try:
        times = np.array([float(r[0]) for r in rows], np.float64)
        names = [r[1] for r in rows]
    except (ValueError, IndexError):
        raise BenchmarkError(f"{path}: expected 'timestamp filename' lines") from None
    return times, names


def quat_xyzw_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (x, y, z, w), normalised here, -> (..., 3, 3) rotation matrices."""
    q = np.asarray(q, np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def pose_from_tum(values: np.ndarray) -> np.ndarray:
    """(..., 7) `tx ty tz qx qy qz qw` -> (..., 4, 4) homogeneous matrices."""
    values = np.asarray(values, np.float64)
    T = np.zeros(values.shape[:-1] + (4, 4))
    T[..., :3, :3] = quat_xyzw_to_matrix(values[..., 3:7])
    T[..., :3, 3] = values[..., :3]
    T[..., 3, 3] = 1.0
    return T


def read_tum_trajectory(path: str) -> tuple[np.ndarray, np.ndarray]:
    """groundtruth.txt: (timestamps (N,), poses (N, 4, 4)) as written (camera-to-world for TUM)."""
    rows = read_text_rows(path)
    if not rows:
        raise BenchmarkError(f"{path}: no poses")
    if any(len(r) != 8 for r in rows):
        bad = next(i for i, r in enumerate(rows) if len(r) != 8)
        raise BenchmarkError(f"{path}: expected 8 fields 'timestamp tx ty tz qx qy qz qw' per line, data line {bad + 1} has {len(rows[bad])}")
    try:
        values = np.array(rows, np.float64)
    except ValueError:
        raise BenchmarkError(f"{path}: non-numeric field in a pose line") from None
    return values[:, 0], pose_from_tum(values[:, 1:])


def associate_greedy(first: np.ndarray, second: np.ndarray, max_difference: float, offset: float = 0.0) -> list[tuple[int, int]]:
    """The TUM tools' `associate`: every candidate pair with |a - (b + offset)| < max_difference,
    taken closest first, each timestamp used at most once; returns (i, j) index pairs sorted by
    the first list's timestamp. (The tools key dictionaries by timestamp, so duplicate timestamps
    collapse there; here they stay distinct entries.)"""
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64) + offset
    order = np.argsort(second, kind="stable")
    s_sorted = second[order]
    lo = np.searchsorted(s_sorted, first - max_difference, side="left")
    hi = np.searchsorted(s_sorted, first + max_difference, side="right")
    cand = []
    for i in range(len(first)):
        for k in range(lo[i], hi[i]):
            d = abs(first[i] - s_sorted[k])
            if d < max_difference:
                cand.append((d, first[i], s_sorted[k], i, int(order[k])))
    cand.sort()
    used_i, used_j, pairs = set(), set(), []
    for _, _, _, i, j in cand:
        if i not in used_i and j not in used_j:
            used_i.add(i)
            used_j.add(j)
            pairs.append((i, j))
    pairs.sort(key=lambda p: (first[p[0]], p[0]))
    return pairs


def associate_nearest(query: np.ndarray, reference: np.ndarray, tolerance: float, where: str) -> np.ndarray:
    """Index into `reference` of the nearest timestamp for every `query` timestamp; a query with
    nothing within `tolerance` seconds is a `BenchmarkError` naming `where` and the timestamp."""
    query, reference = np.asarray(query, np.float64), np.asarray(reference, np.float64)
    if reference.size == 0:
        raise BenchmarkError(f"{where}: no ground-truth timestamps")
    order = np.argsort(reference, kind="stable")
    ref = reference[order]
    pos = np.clip(np.searchsorted(ref, query), 1, len(ref) - 1) if len(ref) > 1 else np.zeros(len(query), int)
    left, right = ref[np.maximum(pos - 1, 0)], ref[pos]
    take_left = np.abs(query - left) <= np.abs(query - right)
    nearest = np.where(take_left, np.maximum(pos - 1, 0), pos)
    gap = np.abs(ref[nearest] - query)
    bad = np.nonzero(gap > tolerance)[0]
    if bad.size:
        i = int(bad[0])
        raise BenchmarkError(
            f"{where}: {bad.size} frame timestamp(s) have no ground truth within {tolerance} s "
            f"(first: {query[i]:.6f}, nearest ground truth {ref[nearest[i]]:.6f}, {gap[i]:.4f} s away)"
        )
    return order[nearest]


def read_matrix_rows(path: str, shape: tuple[int, int]) -> np.ndarray:
    """A text file holding one matrix of `shape` (any line breaks), e.g. a 4x4 pose."""
    rows = read_text_rows(path)
    try:
        values = np.array([float(v) for r in rows for v in r], np.float64)
    except ValueError:
        raise BenchmarkError(f"{path}: non-numeric value in a {shape[0]}x{shape[1]} matrix") from None
    if values.size != shape[0] * shape[1]:
        raise BenchmarkError(f"{path}: expected {shape[0] * shape[1]} numbers ({shape[0]}x{shape[1]}), found {values.size}")
    return values.reshape(shape)
