"""Normal loss (MoGe's, the official `noraml_loss`), on high-quality labeled samples only.

Each pixel quad gives four triangle normals (`geometry.quad_normals`) for the S*-aligned
prediction and the GT local points. A triangle counts when its three corners are valid and not on
a GT depth edge (`geometry.depth_edge`, rtol 0.03, 3x3). Its error is the angle
atan2(|n1 x n2| + 1e-12, n1 . n2) clamped to [1, 90] degrees, through smooth-L1 with beta 3 deg
(0.5 e^2 / beta below beta, e - beta / 2 above). The four errors are summed per quad, averaged
over every (sample, frame, H-1, W-1) element of the selected samples, and divided by
4 max(H, W). The norm of the cross product is `safe_norm` so parallel normals keep a finite
gradient.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from flow3r_jax.geometry import depth_edge, quad_normal_mask, quad_normals, safe_norm

__all__ = ["normal_angle", "smooth_l1", "normal_loss"]

MIN_ANGLE, MAX_ANGLE, BETA = math.radians(1.0), math.radians(90.0), math.radians(3.0)


def normal_angle(n1: Float[Array, "*batch 3"], n2: Float[Array, "*batch 3"]) -> Float[Array, "*batch"]:
    """Angle between (unnormalised) vectors: atan2(|n1 x n2| + 1e-12, n1 . n2)."""
    return jnp.arctan2(safe_norm(jnp.cross(n1, n2), axis=-1) + 1e-12, jnp.sum(n1 * n2, axis=-1))


def smooth_l1(err: Float[Array, "*shape"], beta: float = BETA) -> Float[Array, "*shape"]:
    """0.5 err^2 / beta where err < beta, else err - beta / 2."""
    return jnp.where(err < beta, 0.5 * err * err / beta, err - 0.5 * beta)


def normal_loss(
    pred_aligned: Float[Array, "*batch N H W 3"],
    gt: Float[Array, "*batch N H W 3"],
    valid: Bool[Array, "*batch N H W"],
    select: Bool[Array, "*batch"],
    edge_rtol: float = 0.03,
) -> Float[Array, ""]:
    """MoGe normal loss over the samples where `select` (labeled and high quality); 0 if none."""
    H, W = valid.shape[-2:]
    mask = valid & ~depth_edge(gt[..., 2], rtol=edge_rtol) & select[..., None, None, None]
    angle = jnp.clip(normal_angle(quad_normals(pred_aligned), quad_normals(gt)), MIN_ANGLE, MAX_ANGLE)
    total = jnp.sum(jnp.where(quad_normal_mask(mask), smooth_l1(angle), 0.0))
    elements = jnp.sum(select) * (valid.shape[-3] * (H - 1) * (W - 1))
    return total / jnp.maximum(elements, 1).astype(total.dtype) / (4 * max(H, W))
