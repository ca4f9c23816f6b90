"""Weighted Procrustes / Kabsch (rigid) and Umeyama (similarity) alignment of point sets.

Batched over leading dimensions, reflection-safe (the result is always a proper rotation) and
differentiable without NaN when singular values coincide (see `linalg.polar_rotation`).
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from flow3r_jax.geometry.linalg import polar_rotation
from flow3r_jax.geometry.transforms import make_transform, matvec3

__all__ = ["weighted_procrustes", "weighted_moments", "rigid_from_moments"]


def weighted_moments(
    src: Float[Array, "*batch N 3"], dst: Float[Array, "*batch N 3"], weights: Float[Array, "*batch N"] | None = None, eps: float = 1e-12
) -> tuple[Array, Array, Array]:
    """(mu_src, mu_dst, cov): weighted means and the dst-by-src cross-covariance
    sum_n w_n (dst_n - mu_dst)(src_n - mu_src)^T, weights normalised to sum to one. Everything
    the rigid fit needs; a linear map D applied to both point sets maps them to D mu and
    D cov D^T, so fits of rescaled copies of one point set need these moments only once."""
    if weights is None:
        weights = jnp.ones(src.shape[:-1], src.dtype)
    w = weights / jnp.maximum(jnp.sum(weights, axis=-1, keepdims=True), eps)
    # Broadcast products and sums rather than einsums: a dot_general contracting or producing a
    # size-3 axis (as these and their gradients do) is several times slower on CPU than the
    # fused elementwise loop and reduction XLA makes of this form.
    wn = w[..., None]
    mu_src = jnp.sum(wn * src, axis=-2)
    mu_dst = jnp.sum(wn * dst, axis=-2)
    xs = src - mu_src[..., None, :]
    xd = dst - mu_dst[..., None, :]
    cov = jnp.sum((wn * xd)[..., :, :, None] * xs[..., :, None, :], axis=-3)
    return mu_src, mu_dst, cov


def rigid_from_moments(mu_src: Float[Array, "*batch 3"], mu_dst: Float[Array, "*batch 3"], cov: Float[Array, "*batch 3 3"]) -> Float[Array, "*batch 4 4"]:
    """The rigid transform minimising the weighted squared error, from `weighted_moments`."""
    R = polar_rotation(cov)
    return make_transform(R, mu_dst - matvec3(R, mu_src))


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
    mu_src, mu_dst, cov = weighted_moments(src, dst, weights, eps)
    if not with_scale:
        return rigid_from_moments(mu_src, mu_dst, cov)
    R = polar_rotation(cov)
    if weights is None:
        weights = jnp.ones(src.shape[:-1], src.dtype)
    w = weights / jnp.maximum(jnp.sum(weights, axis=-1, keepdims=True), eps)
    xs = src - mu_src[..., None, :]
    var_src = jnp.sum(w[..., None] * xs * xs, axis=(-2, -1))
    s = jnp.sum(R * cov, axis=(-2, -1)) / jnp.maximum(var_src, eps)  # tr(R^T cov) / var
    t = mu_dst - s[..., None] * matvec3(R, mu_src)
    return make_transform(R, t, s)
