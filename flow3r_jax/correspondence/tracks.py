"""Point tracks across a clip by chaining consecutive dense flows with forward-backward checks.

Input: frames (K, H, W, 3) and the consecutive flows fw[k] = flow k -> k+1 (on k's grid) and
bw[k] = flow k+1 -> k (on k+1's grid), k = 0 .. K-2; computed with a teacher if not given.

1. **Seeds**: frame 0 gets one track per cell of a `grid_stride` grid, at the cell's central pixel
   centre ((stride n + stride // 2) + 0.5 in flow3r_jax's +0.5 pixel convention).
2. **Chaining forward**: a live track at p in frame k moves to q = p + fw[k](p) (bilinear). It
   survives to frame k+1 when q lies inside frame k+1 and it passes the forward-backward test
   (`flow3r_jax.correspondence`, as the datasets' covisibility masks) at p: |f + b(q)|^2 < alpha (|f|^2 + |b(q)|^2) + beta with
   f = fw[k](p), b = bw[k] (alpha 0.01, beta 0.5 px^2). A track that fails stops for good.
3. **Re-seeding** (`reseed=True`): in every later frame, each grid cell holding no live track gets
   a new track at its centre; new tracks are also chained *backwards* (bw, checked with fw) to the
   earlier frames they stay consistent in, so a region that comes into view is tracked from the
   first frame it is seen in, as far as the checks allow.

Output `Tracks(xy float32 (K, M, 2), visible bool (K, M))`: xy in pixels (+0.5 convention) where
visible, 0 elsewhere; a track is visible in a frame when it was seeded there or survived every
check on the way to it. Tracks are ordered by seed frame, then row-major grid cell. The FlowMap
per-scene optimiser consumes this format.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from flow3r_jax.correspondence import FB_ALPHA as ALPHA, FB_BETA as BETA

__all__ = ["Tracks", "compute_tracks", "consecutive_flows", "grid_points"]


@dataclasses.dataclass
class Tracks:
    xy: np.ndarray  # float32 (K, M, 2) pixels, +0.5 convention; 0 where not visible
    visible: np.ndarray  # bool (K, M)

    @property
    def num_tracks(self) -> int:
        return self.xy.shape[1]

    def lengths(self) -> np.ndarray:
        """Frames each track is visible in, (M,)."""
        return self.visible.sum(axis=0)


def grid_points(height: int, width: int, stride: int) -> np.ndarray:
    """Seed positions (N, 2) float32: the central pixel centre of each stride x stride cell."""
    xs = np.arange(stride // 2, width, stride) + 0.5
    ys = np.arange(stride // 2, height, stride) + 0.5
    gx, gy = np.meshgrid(xs, ys, indexing="xy")
    return np.stack([gx.ravel(), gy.ravel()], -1).astype(np.float32)


def _sample(field: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear lookup of field (H, W, 2) at points xy (N, 2) (+0.5 convention, border padding)."""
    n = len(xy)
    if n == 0:
        return np.zeros((0, 2), np.float32)
    rows = -(-n // 1024)  # OpenCV maps are images: lay the points out in rows of 1024
    m = np.zeros((rows * 1024, 2), np.float32)
    m[:n] = xy - 0.5
    m = m.reshape(rows, 1024, 2)
    out = cv2.remap(field, m[..., 0], m[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(-1, 2)[:n]


def _step(xy: np.ndarray, flow: np.ndarray, back: np.ndarray, alpha: float, beta: float):
    """Moves points xy through `flow` and checks them against `back`: (new xy, ok)."""
    H, W = flow.shape[:2]
    f = _sample(flow, xy)
    q = xy + f
    b = _sample(back, q)
    err = np.sum((f + b) ** 2, axis=-1)
    bound = alpha * (np.sum(f**2, axis=-1) + np.sum(b**2, axis=-1)) + beta
    inside = (q[:, 0] >= 0) & (q[:, 0] <= W) & (q[:, 1] >= 0) & (q[:, 1] <= H)
    return q, (err < bound) & inside & np.all(np.isfinite(q), axis=-1)


def consecutive_flows(frames: np.ndarray, teacher=None):
    """fw (K-1, H, W, 2) and bw (K-1, H, W, 2) of consecutive frames with `teacher` (default DIS)."""
    from flow3r_jax.correspondence.teacher import DISTeacher, compute_pair_flows

    teacher = teacher or DISTeacher()
    K = len(frames)
    pairs = np.array([(k, k + 1) for k in range(K - 1)] + [(k + 1, k) for k in range(K - 1)], np.int32)
    flows = compute_pair_flows(teacher, frames, pairs).flow
    return flows[: K - 1], flows[K - 1 :]


def _uncovered(live_xy: np.ndarray, seeds: np.ndarray, stride: int, H: int, W: int) -> np.ndarray:
    """Boolean over seeds: the seed's grid cell holds none of the live points."""
    rows, cols = -(-H // stride), -(-W // stride)
    occ = np.zeros((rows, cols), bool)
    if len(live_xy):
        c = np.clip((live_xy[:, 0] // stride).astype(int), 0, cols - 1)
        r = np.clip((live_xy[:, 1] // stride).astype(int), 0, rows - 1)
        occ[r, c] = True
    sc = (seeds[:, 0] // stride).astype(int)
    sr = (seeds[:, 1] // stride).astype(int)
    return ~occ[sr, sc]


def _flow_list(flows, K: int, H: int, W: int) -> list[np.ndarray] | None:
    """Per-frame float32 (H, W, 2) views of (K-1, H, W, 2) flows given as one array or a sequence
    of arrays (the pipeline passes views of its pair flows: no copy), None if the shape is wrong."""
    items = list(flows) if isinstance(flows, (list, tuple)) else None
    if items is None:
        flows = np.asarray(flows, np.float32)
        if flows.shape != (K - 1, H, W, 2):
            return None
        return list(flows)
    items = [np.asarray(f, np.float32) for f in items]
    if len(items) != K - 1 or any(f.shape != (H, W, 2) for f in items):
        return None
    return items


def compute_tracks(
    frames: np.ndarray,
    flows_fw: np.ndarray | None = None,
    flows_bw: np.ndarray | None = None,
    teacher=None,
    grid_stride: int = 8,
    reseed: bool = True,
    alpha: float = ALPHA,
    beta: float = BETA,
) -> Tracks:
    """Tracks of a clip (see the module docstring). frames uint8 (K, H, W, 3); flows_fw / flows_bw
    (K-1, H, W, 2) consecutive flows, as arrays or sequences of K-1 (H, W, 2) arrays (both or
    neither; computed with `teacher` when absent)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or len(frames) < 2:
        raise ValueError(f"compute_tracks: frames must be (K >= 2, H, W, 3), got {frames.shape}")
    if grid_stride < 1:
        raise ValueError(f"compute_tracks: grid_stride must be >= 1, got {grid_stride}")
    K, H, W = frames.shape[:3]
    if (flows_fw is None) != (flows_bw is None):
        raise ValueError("compute_tracks: pass both flows_fw and flows_bw, or neither")
    if flows_fw is None:
        flows_fw, flows_bw = consecutive_flows(frames, teacher)
    fw, bw = _flow_list(flows_fw, K, H, W), _flow_list(flows_bw, K, H, W)
    if fw is None or bw is None:
        def describe(f):
            if isinstance(f, (list, tuple)):
                return f"{len(f)} arrays of shapes {sorted({np.shape(x) for x in f})}"
            return str(np.shape(f))

        raise ValueError(f"compute_tracks: flows must be {(K - 1, H, W, 2)}, got {describe(flows_fw)} and {describe(flows_bw)}")

    seeds = grid_points(H, W, grid_stride)
    # Forward pass (one lookup per frame for all live tracks), re-seeding empty cells.
    pos = [seeds]  # per track batch: positions at its seed frame
    born = [0]  # seed frame of each batch
    xy_cols, vis_cols = [], []  # per batch: (K, n, 2), (K, n)

    def add_batch(frame: int, pts: np.ndarray):
        xy = np.zeros((K, len(pts), 2), np.float32)
        vis = np.zeros((K, len(pts)), bool)
        xy[frame], vis[frame] = pts, True
        xy_cols.append(xy)
        vis_cols.append(vis)

    add_batch(0, seeds)
    live_b = np.zeros(len(seeds), np.int64)  # batch of each live track
    live_i = np.arange(len(seeds))  # index within its batch
    live_xy = seeds
    for k in range(K - 1):  # k -> k+1 through fw[k], checked with bw[k]
        q, ok = _step(live_xy, fw[k], bw[k], alpha, beta)
        live_b, live_i, live_xy = live_b[ok], live_i[ok], q[ok]
        for b in np.unique(live_b):
            sel = live_b == b
            xy_cols[b][k + 1, live_i[sel]] = live_xy[sel]
            vis_cols[b][k + 1, live_i[sel]] = True
        if reseed:
            fresh = seeds[_uncovered(live_xy, seeds, grid_stride, H, W)]
            if len(fresh):
                add_batch(k + 1, fresh)
                born.append(k + 1)
                pos.append(fresh)
                live_b = np.concatenate([live_b, np.full(len(fresh), len(xy_cols) - 1)])
                live_i = np.concatenate([live_i, np.arange(len(fresh))])
                live_xy = np.concatenate([live_xy, fresh])
    # Backward pass: tracks seeded after frame 0 extend to earlier frames (k+1 -> k through
    # bw[k], checked with fw[k]) while they stay consistent; one lookup per frame for all.
    back_b = np.zeros(0, np.int64)
    back_i = np.zeros(0, np.int64)
    back_xy = np.zeros((0, 2), np.float32)
    for k in range(K - 2, -1, -1):
        for b in [b for b, f in enumerate(born) if f == k + 1]:  # batches seeded at frame k+1 join
            back_b = np.concatenate([back_b, np.full(len(pos[b]), b)])
            back_i = np.concatenate([back_i, np.arange(len(pos[b]))])
            back_xy = np.concatenate([back_xy, pos[b]])
        if not len(back_xy):
            continue
        q, ok = _step(back_xy, bw[k], fw[k], alpha, beta)
        back_b, back_i, back_xy = back_b[ok], back_i[ok], q[ok]
        for b in np.unique(back_b):
            sel = back_b == b
            xy_cols[b][k, back_i[sel]] = back_xy[sel]
            vis_cols[b][k, back_i[sel]] = True
    xy = np.concatenate(xy_cols, axis=1)
    visible = np.concatenate(vis_cols, axis=1)
    return Tracks(np.where(visible[..., None], xy, 0.0).astype(np.float32), visible)
