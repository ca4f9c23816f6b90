"""Depth metrics (video depth: Sintel, Bonn, KITTI; monocular: + NYU-v2): AbsRel, delta < 1.25^k.

Protocol of π³'s `utils/depth.py: depth_evaluation` (from CUT3R), driven by
`videodepth/eval.py` and `monodepth/eval.py`:
- The prediction is resized to the ground truth's size with `cv2.resize(..., INTER_CUBIC)`
  before anything else (`resize_depth`; the caller does this).
- Valid pixels: gt > 0, and gt < max_depth where the dataset caps it (`DEPTH_PROTOCOLS`). A
  video sequence is evaluated as one block: all valid pixels of all its frames are pooled for the
  alignment and the metrics. A monocular benchmark evaluates each frame on its own.
- Alignment fitted on the valid pixels (`depth_metrics(align=...)`): "scale_shift" (video,
  π³'s `align_with_lad2`), "l1_scale" (π³'s `align_with_scale`; what π³'s monocular config
  `invariant: median-scale` actually selects, see `depth_metrics`), "median", "lstsq", "none".
- Then pred is clipped to [post_clip_min, post_clip_max] (Sintel: max 70), and
  AbsRel = mean |p - g| / g, SqRel = mean (p - g)^2 / g, RMSE, then p is clamped to >= 1e-5 and
  log-RMSE and delta_k = mean(max(p/g, g/p) < 1.25^k) (fractions) are computed.
- Dataset numbers: `average_metrics(results, weight_key="valid_pixels")` over sequences (video)
  or over all frames (mono), i.e. pixel-weighted.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DEPTH_PROTOCOLS",
    "resize_depth",
    "depth_median_scale",
    "depth_l1_scale",
    "depth_scale_shift_lad",
    "align_depth",
    "depth_metrics",
]

# Per-benchmark keyword arguments of `depth_metrics`, from π³'s `EVAL_DEPTH_METADATA`
# (`utils/depth.py`). `lr` only matters for the scale & shift fit. KITTI and NYU-v2 are not capped
# (π³ passes max_depth=None, overriding `depth_evaluation`'s default of 80).
DEPTH_PROTOCOLS: dict[str, dict] = {
    "sintel": dict(max_depth=70.0, post_clip_max=70.0),
    "bonn": dict(max_depth=70.0),
    "kitti": dict(max_depth=None),
    "nyu-v2": dict(max_depth=None, lr=1e-3),
}

ALIGNMENTS = ("scale_shift", "l1_scale", "median", "lstsq", "none")


def resize_depth(pred, size: tuple[int, int]) -> np.ndarray:
    """Resizes a predicted depth map (H', W') or a stack (N, H', W') to `size` = (H, W) with
    OpenCV's bicubic interpolation, as π³'s depth scripts do before evaluating."""
    import cv2

    pred = np.asarray(pred)
    h, w = size
    if pred.ndim == 2:
        return cv2.resize(pred, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.stack([cv2.resize(p, (w, h), interpolation=cv2.INTER_CUBIC) for p in pred], axis=0)


def _lower_median(x: np.ndarray) -> float:
    """torch.median: the lower of the two middle values for an even count (not their mean)."""
    k = (x.size - 1) // 2
    return float(np.partition(x, k)[k])


def depth_median_scale(pred, gt) -> float:
    """median(gt) / median(pred) over the given (valid) values, with torch's lower median, as
    π³'s default branch and the initial scale of its scale & shift fit compute it. (Differs from
    `geometry.median_scale`, which averages the two middle values.)"""
    return _lower_median(np.asarray(gt, np.float64).reshape(-1)) / _lower_median(np.asarray(pred, np.float64).reshape(-1))


def depth_l1_scale(pred, gt, iterations: int = 10) -> float:
    """π³'s `align_with_scale`: s0 = mean(gt) / mean(pred), then `iterations` Weiszfeld /
    IRLS steps towards argmin_s sum |s p - g| (weights 1 / (|s p - g| + 1e-8)), clamped to
    s >= 1e-3. (Ten steps do not always reach the exact L1 minimiser, `geometry.robust_scale`;
    this reproduces π³'s number.)"""
    p = np.asarray(pred, np.float64).reshape(-1)
    g = np.asarray(gt, np.float64).reshape(-1)
    s = np.nanmean(g) / np.nanmean(p)
    for _ in range(iterations):
        w = 1.0 / (np.abs(s * p - g) + 1e-8)
        s = np.sum(w * p * g) / np.sum(w * p * p)
    return float(max(s, 1e-3))


@partial(jax.jit, static_argnames=("max_iters",))
def _adam_lad(p, g, s0, t0, lr, tol, max_iters: int):
    """torch.optim.Adam (betas 0.9 / 0.999, eps 1e-8) on loss = sum |s p + t - g|, stopping after
    the step at which |previous loss - loss| < tol; torch's abs has gradient sign(r) (0 at 0)."""
    b1, b2, eps = 0.9, 0.999, 1e-8
    dt = p.dtype

    def cond(state):
        it, _, _, _, _, done = state
        return (it < max_iters) & ~done

    def body(state):
        it, x, m, v, prev, _ = state  # x = (s, t)
        r = x[0] * p + x[1] - g
        loss = jnp.sum(jnp.abs(r))
        sg = jnp.sign(r)
        grad = jnp.stack([jnp.sum(sg * p), jnp.sum(sg)])
        m = m + (1 - b1) * (grad - m)  # torch: exp_avg.lerp_(grad, 1 - beta1)
        v = b2 * v + (1 - b2) * grad * grad
        step = (it + 1).astype(dt)
        bc1 = 1 - b1**step
        bc2 = 1 - b2**step
        denom = jnp.sqrt(v) / jnp.sqrt(bc2) + eps
        x = x - (lr / bc1) * m / denom
        done = (it > 0) & (jnp.abs(prev - loss) < tol)
        return it + 1, x, m, v, loss, done

    x0 = jnp.stack([s0, t0]).astype(dt)
    zeros = jnp.zeros(2, dt)
    state = (jnp.asarray(0, jnp.int32), x0, zeros, zeros, jnp.asarray(0.0, dt), jnp.asarray(False))
    it, x, *_ = jax.lax.while_loop(cond, body, state)
    return x[0], x[1], it


def depth_scale_shift_lad(
    pred, gt, s_init: float | None = None, t_init: float = 0.0, lr: float = 1e-4, max_iters: int = 1000, tol: float = 1e-6
) -> tuple[float, float]:
    """(s, t) from π³'s `absolute_value_scaling2`, the video-depth scale & shift alignment.

    Least absolute deviation sum_i |s p_i + t - g_i| over the given (valid) values, minimised
    the way π³ does it: s starts at `depth_median_scale(pred, gt)` (lower medians) and t at 0, then
    `torch.optim.Adam(lr=1e-4)` for at most 1000 steps on the summed (not averaged) loss,
    stopping after the first step whose loss differs from the previous one by less than 1e-6.
    Adam moves each parameter by about lr per step, so (s, t) can travel at most ~0.1 from
    the start: the result is π³'s number, not always the exact LAD minimiser.

    Computed in float64 and jitted (π³ runs it in the predictions' dtype, float32 on the GPU; the
    result agrees to round-off, except that a float32 loss may meet the stopping test earlier).
    """
    p = np.asarray(pred, np.float64).reshape(-1)
    g = np.asarray(gt, np.float64).reshape(-1)
    if p.size == 0 or p.shape != g.shape:
        raise ValueError(f"depth_scale_shift_lad: need equally many (> 0) values, got {p.shape} and {g.shape}")
    if s_init is None:
        s_init = depth_median_scale(p, g)
    with jax.enable_x64(True):
        s, t, _ = _adam_lad(jnp.asarray(p), jnp.asarray(g), jnp.float64(s_init), jnp.float64(t_init), jnp.float64(lr), jnp.float64(tol), max_iters=int(max_iters))
        return float(s), float(t)


def _valid_mask(gt: np.ndarray, max_depth: float | None) -> np.ndarray:
    valid = gt > 0
    if max_depth is not None:
        valid &= gt < max_depth
    return valid


def _fit_alignment(p: np.ndarray, g: np.ndarray, align: str, lr: float, max_iters: int) -> tuple[float, float]:
    """(s, t) such that s p + t is the aligned prediction, fitted on valid values p, g."""
    if align not in ALIGNMENTS:
        raise ValueError(f"unknown depth alignment {align!r}; expected one of {ALIGNMENTS}")
    if align == "scale_shift":
        return depth_scale_shift_lad(p, g, lr=lr, max_iters=max_iters)
    if align == "l1_scale":
        return depth_l1_scale(p, g), 0.0
    if align == "median":
        return depth_median_scale(p, g), 0.0
    if align == "lstsq":
        (s, t), *_ = np.linalg.lstsq(np.stack([p, np.ones_like(p)], axis=1), g, rcond=None)
        return float(s), float(t)
    return 1.0, 0.0


def align_depth(pred, gt, align: str = "median", max_depth: float | None = None, lr: float = 1e-4, max_iters: int = 1000) -> np.ndarray:
    """The whole prediction (same shape as `pred`) after the alignment `depth_metrics` would fit
    (on the valid pixels of `gt`, see there): s * pred + t, unclipped, as π³'s
    `depth_evaluation` returns it for its error maps. With no valid pixel, `pred` unchanged."""
    p_all = np.asarray(pred, np.float64)
    g_all = np.asarray(gt, np.float64)
    if p_all.shape != g_all.shape:
        raise ValueError(f"align_depth: pred {p_all.shape} and gt {g_all.shape} differ; resize the prediction first (resize_depth)")
    valid = _valid_mask(g_all, max_depth)
    if not valid.any():
        return p_all
    s, t = _fit_alignment(p_all[valid], g_all[valid], align, lr, max_iters)
    return s * p_all + t


def depth_metrics(
    pred,
    gt,
    align: str = "median",
    max_depth: float | None = None,
    post_clip_min: float | None = None,
    post_clip_max: float | None = None,
    eval_mask=None,
    lr: float = 1e-4,
    max_iters: int = 1000,
) -> dict[str, float]:
    """AbsRel, SqRel, RMSE, log-RMSE and delta < 1.25^k (k = 0..3) of a depth map or a sequence.

    `pred`, `gt`: (H, W) or (N, H, W) on the same grid (see `resize_depth`); a sequence is one
    block whose valid pixels are pooled, as π³'s video-depth evaluation does. Valid: gt > 0 and,
    when `max_depth` is given, gt < max_depth. `eval_mask` (same shape, optional) restricts the
    pixels that are scored but not those the alignment is fitted on (π³'s `custom_mask`).

    `align` (fitted on the valid pixels):
    - "scale_shift": `depth_scale_shift_lad` (π³'s video depth, `align: scale&shift`).
    - "l1_scale": `depth_l1_scale`. π³'s monocular script maps its config
      `invariant: median-scale` to this branch (`align_with_scale=True`), so π³'s published
      monocular numbers use it, despite the name; use "median" for the textbook protocol.
    - "median": `depth_median_scale` (π³'s default branch, reached with `invariant: scale`).
    - "lstsq": closed-form least-squares scale & shift. "none": metric depth as is.

    Returns the metrics plus "valid_pixels"; with no valid pixel every metric is 0 (π³'s
    convention, which also gives the sequence zero weight in `average_metrics`).
    """
    p_all = np.asarray(pred, np.float64)
    g_all = np.asarray(gt, np.float64)
    if p_all.shape != g_all.shape:
        raise ValueError(f"depth_metrics: pred {p_all.shape} and gt {g_all.shape} differ; resize the prediction first (resize_depth)")
    if align not in ALIGNMENTS:
        raise ValueError(f"depth_metrics: unknown align {align!r}; expected one of {ALIGNMENTS}")
    valid = _valid_mask(g_all, max_depth)
    n_valid = int(valid.sum())
    keys = ("abs_rel", "sq_rel", "rmse", "log_rmse", "delta<1", "delta<1.25", "delta<1.25^2", "delta<1.25^3")
    if n_valid == 0:
        return {**{k: 0.0 for k in keys}, "valid_pixels": 0}
    p, g = p_all[valid], g_all[valid]

    s, t = _fit_alignment(p, g, align, lr, max_iters)
    p = s * p + t
    if post_clip_min is not None or post_clip_max is not None:
        p = np.clip(p, post_clip_min, post_clip_max)

    if eval_mask is not None:
        keep = np.asarray(eval_mask, bool)[valid]
        p, g = p[keep], g[keep]
        n_valid = int(keep.sum())
        if n_valid == 0:
            return {**{k: 0.0 for k in keys}, "valid_pixels": 0}

    diff = p - g
    abs_rel = np.mean(np.abs(diff) / g)
    sq_rel = np.mean(diff**2 / g)
    rmse = np.sqrt(np.mean(diff**2))
    p = np.maximum(p, 1e-5)
    log_rmse = np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2))
    ratio = np.maximum(p / g, g / p)
    deltas = [np.mean(ratio < thr) for thr in (1.0, 1.25, 1.25**2, 1.25**3)]
    values = (abs_rel, sq_rel, rmse, log_rmse, *deltas)
    return {**{k: float(v) for k, v in zip(keys, values)}, "valid_pixels": n_valid}
