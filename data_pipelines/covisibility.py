"""Covisibility masks from forward-backward flow consistency, and agreement statistics.

A pixel x of frame i counts as covisible in frame j when the flow i -> j takes it inside frame j
and the flow j -> i brings it back (Sundaram et al. 2010):

    |f(x) + b(x + f(x))|^2 < ALPHA (|f(x)|^2 + |b(x + f(x))|^2) + BETA,
    ALPHA = 0.01, BETA = 0.5 px^2,

b sampled bilinearly (border padding) at the landing point, which must lie in [0, W] x [0, H].
This is the rule of `flow3r_jax.geometry.forward_backward_mask` (the one definition), computed
here on the host by one compiled loop (numba) that samples, tests and writes each pixel in one
pass, in float32 like the JAX kernel: the two agree except for pixels whose two sides differ in
the last bits (a pixel or two per million; the tests compare them). On CPU it is ~10x faster than
the jitted JAX kernel and about as fast as the same rule composed of OpenCV calls (a `cv2.remap`,
whose bilinear weights are quantised to 1/32 px and flipped ~0.1% of the pixels, and eight
element-wise passes over row tiles), ~2 ms per pair at 378x672. No fast-math: the same flows give
the same bits on every CPU, so reruns reproduce records. The pair set holds both directions, so
every (i, j) has its (j, i).
"""

from __future__ import annotations

import numba
import numpy as np

from flow3r_jax.correspondence import FB_ALPHA, FB_BETA

__all__ = ["ALPHA", "BETA", "reverse_index", "covisibility_masks", "fb_mask", "agreement"]

ALPHA = FB_ALPHA  # the forward-backward test's constants, shared with the point tracks
BETA = FB_BETA


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _fb_kernel(fw, bw, alpha, beta, out):  # pragma: no cover - compiled; tested through fb_mask
    H, W = fw.shape[0], fw.shape[1]
    zero, half = np.float32(0.0), np.float32(0.5)
    xmax, ymax = np.float32(W - 1), np.float32(H - 1)
    for y in range(H):
        yf = np.float32(y)
        for x in range(W):
            fx, fy = fw[y, x, 0], fw[y, x, 1]
            # The landing point with pixel centres at integers (flow3r_jax's coordinates - 0.5).
            lx, ly = np.float32(x) + fx, yf + fy
            if zero <= lx < xmax and zero <= ly < ymax:  # the common case: all four neighbours inside
                x0, y0 = np.int64(lx), np.int64(ly)
                x1, y1 = x0 + 1, y0 + 1
                ax, ay = lx - np.float32(x0), ly - np.float32(y0)
            elif -half <= lx <= xmax + half and -half <= ly <= ymax + half:  # inside, border padding
                cx, cy = min(max(lx, zero), xmax), min(max(ly, zero), ymax)
                x0, y0 = np.int64(cx), np.int64(cy)
                x1, y1 = min(x0 + 1, W - 1), min(y0 + 1, H - 1)
                ax, ay = cx - np.float32(x0), cy - np.float32(y0)
            else:  # lands outside frame j (or the flow is not finite)
                out[y, x] = False
                continue
            top_x = bw[y0, x0, 0] + ax * (bw[y0, x1, 0] - bw[y0, x0, 0])
            top_y = bw[y0, x0, 1] + ax * (bw[y0, x1, 1] - bw[y0, x0, 1])
            bot_x = bw[y1, x0, 0] + ax * (bw[y1, x1, 0] - bw[y1, x0, 0])
            bot_y = bw[y1, x0, 1] + ax * (bw[y1, x1, 1] - bw[y1, x0, 1])
            bx, by = top_x + ay * (bot_x - top_x), top_y + ay * (bot_y - top_y)
            dx, dy = fx + bx, fy + by
            out[y, x] = dx * dx + dy * dy < alpha * (fx * fx + fy * fy + (bx * bx + by * by)) + beta
    return out


def fb_mask(flow_fw: np.ndarray, flow_bw: np.ndarray, alpha: float = ALPHA, beta: float = BETA, out: np.ndarray | None = None) -> np.ndarray:
    """Forward-backward mask (H, W) bool of flows (H, W, 2) i -> j (on i's grid) and j -> i;
    written into `out` (an (H, W) bool array) when given."""
    fw = np.ascontiguousarray(flow_fw, np.float32)
    bw = np.ascontiguousarray(flow_bw, np.float32)
    if fw.ndim != 3 or fw.shape[-1] != 2 or bw.shape != fw.shape:
        raise ValueError(f"fb_mask: need two flows of one shape (H, W, 2), got {fw.shape} and {bw.shape}")
    out = np.empty(fw.shape[:2], np.bool_) if out is None else out
    if out.dtype != np.bool_ or out.shape != fw.shape[:2]:
        raise ValueError(f"fb_mask: out must be bool {fw.shape[:2]}, got {out.dtype} {out.shape}")
    return _fb_kernel(fw, bw, np.float32(alpha), np.float32(beta), out)


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
