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


def fb_mask(flow_fw: np.ndarray, flow_bw: np.ndarray, alpha: float = ALPHA, beta: float = BETA) -> np.ndarray:
    """Forward-backward mask (H, W) bool of flows (H, W, 2) i -> j (on i's grid) and j -> i."""
    fw = np.ascontiguousarray(flow_fw, np.float32)
    bw = np.ascontiguousarray(flow_bw, np.float32)
    H, W = fw.shape[:2]
    # Landing points in OpenCV's integer-centred coordinates (flow3r_jax's x - 0.5); OpenCV's
    # element-wise ops are used throughout because they are ~2x faster than NumPy's here.
    land = cv2.add(fw, _grid(H, W))
    back = cv2.remap(bw, land, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    diff = cv2.add(fw, back)
    # |f + b|^2 - alpha (|f|^2 + |b|^2) = (1 - alpha) |f + b|^2 + 2 alpha f.b (expand |f|^2 + |b|^2
    # = |f + b|^2 - 2 f.b): per channel, summed over x and y it must stay below beta. Two products
    # instead of three; the rounding differs from the direct form only in the last bits.
    excess = cv2.addWeighted(cv2.multiply(diff, diff), 1.0 - alpha, cv2.multiply(fw, back), 2.0 * alpha, 0.0)
    consistent = (excess[..., 0] + excess[..., 1]) < np.float32(beta)
    inside = cv2.inRange(land, (-0.5, -0.5), (W - 0.5, H - 0.5)) > 0  # lands in [0, W] x [0, H]
    return consistent & inside


def reverse_index(pairs: np.ndarray) -> np.ndarray:
    """For each pair (i, j) the row of (j, i) in `pairs` (P, 2); raises ValueError if one is missing."""
    pairs = np.asarray(pairs)
    row = {(int(i), int(j)): n for n, (i, j) in enumerate(pairs)}
    missing = [(int(j), int(i)) for i, j in pairs if (int(j), int(i)) not in row]
    if missing:
        raise ValueError(f"covisibility: the pair set lacks the reverse pairs {missing[:5]}")
    return np.array([row[(int(j), int(i))] for i, j in pairs], np.int64)


def covisibility_masks(flows: np.ndarray, pairs: np.ndarray, alpha: float = ALPHA, beta: float = BETA) -> np.ndarray:
    """Covisibility (P, H, W) bool of flows (P, H, W, 2) for `pairs` (P, 2) closed under reversal."""
    flows = np.asarray(flows, np.float32)
    rev = reverse_index(pairs)
    out = np.empty(flows.shape[:3], bool)
    for p in range(len(pairs)):
        out[p] = fb_mask(flows[p], flows[rev[p]], alpha, beta)
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
