"""Confidence loss (the official `train_conf` branch of `PointLosswMask`).

BCE with logits of the confidence over the valid pixels (pooled mean over the batch), target 1
where the pixel's point error, the mean over xyz of w |S* x_pred - x_gt| (no gradient), is below
the threshold (0.02). Optional sky term: BCE towards 0 on `sky` pixels that are neither valid nor
in a flow-only sample, added to the first. The official sky mask comes from a SegFormer network
that we do not ship; callers may pass any mask.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from flow3r_jax.losses.point import masked_mean, point_residual

__all__ = ["bce_with_logits", "conf_loss"]


def bce_with_logits(logits: Float[Array, "*shape"], target: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """-t log sigmoid(x) - (1 - t) log(1 - sigmoid(x)), computed stably."""
    return jax.nn.softplus(logits) - logits * target


def conf_loss(
    logits: Float[Array, "*batch N H W"],
    pred_aligned: Float[Array, "*batch N H W 3"],
    gt: Float[Array, "*batch N H W 3"],
    weights: Float[Array, "*batch N H W"],
    valid: Bool[Array, "*batch N H W"],
    threshold: float = 0.02,
    sky: Bool[Array, "*batch N H W"] | None = None,
) -> Float[Array, ""]:
    """BCE(conf, error < threshold) over valid pixels [+ BCE(conf, 0) over sky pixels that are
    not valid]. `valid` and `sky` must already be False on flow-only samples."""
    error = jax.lax.stop_gradient(jnp.mean(point_residual(pred_aligned, gt, weights), axis=-1))
    target = (error < threshold).astype(logits.dtype)
    loss = masked_mean(bce_with_logits(logits, target), valid)
    if sky is not None:
        loss = loss + masked_mean(bce_with_logits(logits, jnp.zeros_like(logits)), sky & ~valid)
    return loss
