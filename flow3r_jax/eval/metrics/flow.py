"""Optical-flow metrics: end-point error (EPE) and the fraction of pixels within 1 / 3 / 5 px.

Protocol of the official Flow3r test mode (`Kidrauh/flow3r`, `flow3r/utils/flow_utils.py`,
the AEPE / "<5px" block): per frame pair, EPE = |f_pred - f_gt| (pixels) averaged over the
pair's valid (co-visible) pixels and the percentage of those pixels with EPE < N px; the
dataset number is the mean over pairs. π³'s evaluation has no flow task.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

__all__ = ["flow_error_sums", "flow_metrics"]


def flow_error_sums(
    pred: Float[Array, "*pairs H W 2"],
    gt: Float[Array, "*pairs H W 2"],
    valid: Bool[Array, "*pairs H W"] | None = None,
    thresholds: tuple[float, ...] = (1.0, 3.0, 5.0),
) -> tuple[Array, Array, Array]:
    """Per-pair sums, jit-able (fixed shapes): (valid pixel count (*pairs,), EPE sum (*pairs,),
    count below each threshold (*pairs, len(thresholds))). Flows are displacements in pixels."""
    epe = jnp.sqrt(jnp.sum((pred - gt) ** 2, axis=-1))
    if valid is None:
        valid = jnp.ones(epe.shape, bool)
    w = valid.astype(epe.dtype)
    count = jnp.sum(w, axis=(-2, -1))
    epe_sum = jnp.sum(jnp.where(valid, epe, 0.0), axis=(-2, -1))
    below = jnp.stack([jnp.sum(w * (epe < t), axis=(-2, -1)) for t in thresholds], axis=-1)
    return count, epe_sum, below


def flow_metrics(pred, gt, valid=None, thresholds: tuple[float, ...] = (1.0, 3.0, 5.0)) -> dict[str, float]:
    """{"epe", "<1px", "<3px", "<5px" (percent), "pairs", "count"} over flows (*pairs, H, W, 2).

    Per-pair means over the valid pixels, then the mean over pairs (Flow3r's test mode). A pair
    with no valid pixel is left out of the mean (Flow3r appends an infinite EPE for it, which
    makes the whole average infinite); "pairs" counts the pairs that were scored and "count"
    their valid pixels. Over several sequences, Flow3r's number (the mean over all pairs) is the
    mean of these results weighted by "pairs". A single
    (H, W, 2) flow is one pair.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape or pred.shape[-1] != 2:
        raise ValueError(f"flow_metrics: pred {pred.shape} and gt {gt.shape} must be the same (..., H, W, 2)")
    if valid is not None:
        valid = np.asarray(valid, bool)
        if valid.shape != pred.shape[:-1]:
            raise ValueError(f"flow_metrics: valid {valid.shape} does not match the flow {pred.shape[:-1]}")
    with jax.enable_x64(True):
        count, epe_sum, below = (
            np.asarray(x) for x in flow_error_sums(jnp.asarray(pred, jnp.float64), jnp.asarray(gt, jnp.float64), valid, tuple(thresholds))
        )
    count, epe_sum = count.reshape(-1), epe_sum.reshape(-1)
    below = below.reshape(-1, len(thresholds))
    ok = count > 0
    if not ok.any():
        raise ValueError("flow_metrics: no valid pixel in any pair")
    out = {"epe": float(np.mean(epe_sum[ok] / count[ok]))}
    for k, t in enumerate(thresholds):
        out[f"<{t:g}px"] = float(np.mean(below[ok, k] / count[ok]) * 100.0)
    out["pairs"] = int(ok.sum())
    out["count"] = int(count.sum())
    return out
