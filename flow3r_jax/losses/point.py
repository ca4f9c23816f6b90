"""Scale-invariant local point loss (the official `PointLosswMask` point term).

With S* from `scale.optimal_scale`, every valid pixel of the batch contributes
w * |S* x_pred - x_gt| per coordinate, w = 1 / (max(z_gt, 0.1 * mean_view(z_gt)) + 1e-6), where
mean_view is the official MoGe `weighted_mean` over each view's valid pixels:
mean(z m) / (mean(m) + 1e-7). The loss is the mean over all valid pixels of the batch (pooled
across samples, as the official boolean indexing does) and the three coordinates.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

__all__ = ["point_weights", "point_residual", "masked_mean", "point_loss"]


def masked_mean(x: Float[Array, "*shape"], mask: Bool[Array, "*shape"]) -> Float[Array, ""]:
    """Mean of x over mask (pooled over every axis); 0 when the mask is empty. Masked-out entries
    never reach the value or the gradient, even when they are not finite."""
    x, mask = jnp.broadcast_arrays(x, mask)
    total = jnp.sum(jnp.where(mask, x, 0.0))
    return total / jnp.maximum(jnp.sum(mask), 1).astype(total.dtype)


def point_weights(
    z_gt: Float[Array, "*batch N H W"], valid: Bool[Array, "*batch N H W"], floor: float = 0.1
) -> Float[Array, "*batch N H W"]:
    """1 / (max(z, floor * per-view weighted mean of z) + 1e-6)."""
    m = valid.astype(z_gt.dtype)
    mean_z = jnp.mean(z_gt * m, axis=(-2, -1), keepdims=True) / (jnp.mean(m, axis=(-2, -1), keepdims=True) + 1e-7)
    return 1.0 / (jnp.maximum(z_gt, floor * mean_z) + 1e-6)


def point_residual(
    pred_aligned: Float[Array, "*batch N H W 3"], gt: Float[Array, "*batch N H W 3"], weights: Float[Array, "*batch N H W"]
) -> Float[Array, "*batch N H W 3"]:
    """w * |S* x_pred - x_gt| per coordinate (pass the S*-aligned prediction)."""
    return jnp.abs(pred_aligned - gt) * weights[..., None]


def point_loss(
    pred_aligned: Float[Array, "*batch N H W 3"],
    gt: Float[Array, "*batch N H W 3"],
    weights: Float[Array, "*batch N H W"],
    valid: Bool[Array, "*batch N H W"],
) -> Float[Array, ""]:
    """Mean of w |S* x_pred - x_gt| over the valid pixels of the whole batch and xyz."""
    pred_aligned = jnp.where(valid[..., None], pred_aligned, gt)  # keeps invalid pixels out of the gradient
    return masked_mean(point_residual(pred_aligned, gt, weights), valid[..., None])
