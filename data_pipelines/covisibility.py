"""Covisibility masks from forward-backward flow consistency, and agreement statistics.

A pixel x of frame i counts as covisible in frame j when the flow i -> j takes it inside frame j
and the flow j -> i brings it back (Sundaram et al. 2010):

    |f(x) + b(x + f(x))|^2 < ALPHA (|f(x)|^2 + |b(x + f(x))|^2) + BETA,
    ALPHA = 0.01, BETA = 0.5 px^2,

b sampled bilinearly (border padding) at the landing point, which must lie in [0, W] x [0, H].
This is the rule of `flow3r_jax.geometry.forward_backward_mask` (the one definition), computed
here with OpenCV on the host: `cv2.remap` does the bilinear lookup (its 1/32-pixel weight
quantisation flips well under 0.1% of pixels, all at the threshold; the tests compare the two),
about 10x faster on CPU than the jitted JAX kernel, which matters because the teacher is the
only step allowed to cost much. The pair set holds both directions, so every (i, j) has its (j, i).
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

__all__ = ["ALPHA", "BETA", "reverse_index", "covisibility_masks", "fb_mask", "agreement"]

ALPHA = 0.01
BETA = 0.5


_GRIDS: dict = {}


def _grid(H: int, W: int) -> np.ndarray:
    """(H, W, 2) float32 integer pixel indices (x, y): OpenCV's pixel-centre coordinates."""
    if (H, W) not in _GRIDS:
        if len(_GRIDS) > 16:
            _GRIDS.clear()
        xs, ys = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32), indexing="xy")
        _GRIDS[(H, W)] = np.ascontiguousarray(np.stack([xs, ys], -1))
    return _GRIDS[(H, W)]


_TILE_PIXELS = 1 << 16  # rows per tile: ~64K pixels (0.5 MB per 2-channel float32 scratch buffer)
_local = threading.local()


class _Scratch:
    """Per-thread work buffers of one tile: nothing is allocated per pair (fresh multi-MB arrays
    page-fault and zero-fill on every call, which cost as much as the arithmetic at 378x672)."""

    def __init__(self, rows: int, W: int):
        self.rows, self.W = rows, W
        self.land, self.back, self.diff, self.sq, self.fb = (np.empty((rows, W, 2), np.float32) for _ in range(5))
        self.total = np.empty((rows, W), np.float32)
        self.consistent = np.empty((rows, W), np.bool_)
        self.inside = np.empty((rows, W), np.uint8)


def _scratch(H: int, W: int) -> _Scratch:
    rows = max(1, min(H, _TILE_PIXELS // W))
    cached = getattr(_local, "scratch", None)
    if cached is None or cached.rows != rows or cached.W != W:
        cached = _local.scratch = _Scratch(rows, W)
    return cached


def fb_mask(flow_fw: np.ndarray, flow_bw: np.ndarray, alpha: float = ALPHA, beta: float = BETA, out: np.ndarray | None = None) -> np.ndarray:
    """Forward-backward mask (H, W) bool of flows (H, W, 2) i -> j (on i's grid) and j -> i;
    written into `out` (an (H, W) bool array) when given."""
    fw = np.ascontiguousarray(flow_fw, np.float32)
    bw = np.ascontiguousarray(flow_bw, np.float32)
    H, W = fw.shape[:2]
    out = np.empty((H, W), np.bool_) if out is None else out
    grid, s = _grid(H, W), _scratch(H, W)
    # Row tiles, so the temporaries stay small and are reused. Landing points in OpenCV's
    # integer-centred coordinates (flow3r_jax's x - 0.5); OpenCV's element-wise ops are ~2x
    # faster than NumPy's here.
    for r0 in range(0, H, s.rows):
        r1 = min(H, r0 + s.rows)
        n = r1 - r0
        f, land, back, diff, sq, fb = fw[r0:r1], s.land[:n], s.back[:n], s.diff[:n], s.sq[:n], s.fb[:n]
        cv2.add(f, grid[r0:r1], dst=land)
        cv2.remap(bw, land, None, cv2.INTER_LINEAR, dst=back, borderMode=cv2.BORDER_REPLICATE)
        cv2.add(f, back, dst=diff)
        # |f + b|^2 - alpha (|f|^2 + |b|^2) = (1 - alpha) |f + b|^2 + 2 alpha f.b (expand |f|^2 +
        # |b|^2 = |f + b|^2 - 2 f.b): per channel, summed over x and y it must stay below beta.
        # Two products instead of three; the rounding differs from the direct form only in the
        # last bits.
        cv2.multiply(diff, diff, dst=sq)
        cv2.multiply(f, back, dst=fb)
        cv2.addWeighted(sq, 1.0 - alpha, fb, 2.0 * alpha, 0.0, dst=sq)
        np.add(sq[..., 0], sq[..., 1], out=s.total[:n])
        np.less(s.total[:n], np.float32(beta), out=s.consistent[:n])
        cv2.inRange(land, (-0.5, -0.5), (W - 0.5, H - 0.5), dst=s.inside[:n])  # lands in [0, W] x [0, H]
        np.logical_and(s.consistent[:n], s.inside[:n], out=out[r0:r1])
    return out


def reverse_index(pairs: np.ndarray) -> np.ndarray:
    """For each pair (i, j) the row of (j, i) in `pairs` (P, 2); raises ValueError if one is missing."""
    pairs = np.asarray(pairs)
    row = {(int(i), int(j)): n for n, (i, j) in enumerate(pairs)}
    missing = [(int(j), int(i)) for i, j in pairs if (int(j), int(i)) not in row]
    if missing:
        raise ValueError(f"covisibility: the pair set lacks the reverse pairs {missing[:5]}")
    return np.array([row[(int(j), int(i))] for i, j in pairs], np.int64)


def covisibility_masks(flows: np.ndarray, pairs: np.ndarray, alpha: float = ALPHA, beta: float = BETA, out: np.ndarray | None = None) -> np.ndarray:
    """Covisibility (P, H, W) bool of flows (P, H, W, 2) for `pairs` (P, 2) closed under reversal,
    written into `out` (a (P, H, W) bool array) when given."""
    flows = np.asarray(flows, np.float32)
    rev = reverse_index(pairs)
    if out is None:
        out = np.empty(flows.shape[:3], bool)
    elif out.dtype != np.bool_ or out.shape != flows.shape[:3]:
        raise ValueError(f"covisibility_masks: out must be bool {flows.shape[:3]}, got {out.dtype} {out.shape}")
    for p in range(len(pairs)):
        fb_mask(flows[p], flows[rev[p]], alpha, beta, out=out[p])
    return out


def agreement(pred: np.ndarray, exact: np.ndarray, where: np.ndarray | None = None) -> dict[str, float]:
    """How a predicted mask matches an exact one over `where` (default all pixels): accuracy
    (fraction of equal pixels), precision, recall, IoU, specificity (fraction of the exactly
    non-covisible pixels that the prediction rejects; accuracy alone flatters a mask when most
    pixels are covisible) and both positive rates."""
    pred, exact = np.asarray(pred, bool), np.asarray(exact, bool)
    if where is not None:
        where = np.broadcast_to(np.asarray(where, bool), pred.shape)
        pred, exact = pred[where], exact[where]
    tp = float(np.sum(pred & exact))
    fp = float(np.sum(pred & ~exact))
    fn = float(np.sum(~pred & exact))
    tn = float(np.sum(~pred & ~exact))
    n = float(pred.size)
    return {
        "accuracy": float(np.mean(pred == exact)) if n else float("nan"),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "iou": tp / (tp + fp + fn) if tp + fp + fn else float("nan"),
        "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        "pred_rate": float(np.mean(pred)) if n else float("nan"),
        "exact_rate": float(np.mean(exact)) if n else float("nan"),
    }
