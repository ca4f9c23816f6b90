"""Weighted Procrustes / Kabsch (rigid) and Umeyama (similarity) alignment of point sets.

Batched over leading dimensions, reflection-safe (the result is always a proper rotation) and
differentiable without NaN when singular values coincide (see `linalg.polar_rotation`).
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from flow3r_jax.geometry.linalg import polar_rotation
from flow3r_jax.geometry.transforms import make_transform

__all__ = ["weighted_procrustes"]


def weighted_procrustes(
    src: Float[Array, "*batch N 3"],
    dst: Float[Array, "*batch N 3"],
    weights: Float[Array, "*batch N"] | None = None,
    with_scale: bool = False,
    eps: float = 1e-12,
) -> Float[Array, "*batch 4 4"]:
    """The transform T minimising sum_i w_i |T(src_i) - dst_i|^2.

    Rigid (Kabsch) by default; a similarity [[s R, t], [0, 1]] (Umeyama 1991) with
    `with_scale=True`. Weights must be >= 0; they are normalised to sum to one, so only their
    ratios matter and points of zero weight have no influence at all.
    """
    if weights is None:
        weights = jnp.ones(src.shape[:-1], src.dtype)
    w = weights / jnp.maximum(jnp.sum(weights, axis=-1, keepdims=True), eps)
    # Moments as broadcast products and sums rather than einsums: a dot_general contracting or
    # producing a size-3 axis (as these and their gradients do) is several times slower on CPU
    # than the fused elementwise loop and reduction XLA makes of this form.
    wn = w[..., None]
    mu_src = jnp.sum(wn * src, axis=-2)
    mu_dst = jnp.sum(wn * dst, axis=-2)
    xs = src - mu_src[..., None, :]
    xd = dst - mu_dst[..., None, :]
    cov = jnp.sum((wn * xd)[..., :, :, None] * xs[..., :, None, :], axis=-3)  # dst-by-src cross-covariance
    R = polar_rotation(cov)
    if with_scale:
        var_src = jnp.sum(wn * xs * xs, axis=(-2, -1))
        s = jnp.sum(R * cov, axis=(-2, -1)) / jnp.maximum(var_src, eps)  # tr(R^T cov) / var
    else:
        s = jnp.ones(R.shape[:-2], R.dtype)
    t = mu_dst - s[..., None] * jnp.einsum("...ij,...j->...i", R, mu_src)
    return make_transform(R, t, s)
