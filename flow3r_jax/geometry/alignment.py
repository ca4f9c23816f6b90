"""Scale / shift / similarity alignment used by losses and evaluation.

- `weighted_median`, `masked_median`: order statistics that work under `jit` (fixed shapes).
- `robust_scale`: argmin_a sum_i w_i |a x_i - y_i| (the weighted-L1 "ROE" fit of MoGe that the
  official point loss uses), the weighted median of y/x with weights w |x|.
- `median_scale`: median(y) / median(x), the usual monocular-depth protocol.
- `scale_shift_lstsq`: argmin_{s,b} sum_i w_i (s x_i + b - y_i)^2 in closed form.
- `align_trajectories`: Sim(3) Umeyama on camera centres, then applied to whole poses.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from flow3r_jax.geometry.procrustes import weighted_procrustes
from flow3r_jax.geometry.transforms import make_transform, similarity_scale

__all__ = [
    "weighted_median",
    "masked_median",
    "robust_scale",
    "median_scale",
    "scale_shift_lstsq",
    "align_trajectories",
    "apply_similarity_to_poses",
]


def weighted_median(x: Float[Array, "*batch N"], w: Float[Array, "*batch N"]) -> Float[Array, "*batch"]:
    """The smallest x_k whose cumulative weight (x sorted ascending) reaches half the total.

    This is a minimiser of sum_i w_i |a - x_i| (the lower one when the minimiser is an interval).
    With all weights zero it returns min(x).
    """
    x, w = jnp.broadcast_arrays(x, w)
    order = jnp.argsort(x, axis=-1)
    xs = jnp.take_along_axis(x, order, axis=-1)
    cum = jnp.cumsum(jnp.take_along_axis(w, order, axis=-1), axis=-1)
    idx = jnp.argmax(2.0 * cum - cum[..., -1:] >= 0, axis=-1)
    return jnp.take_along_axis(xs, idx[..., None], axis=-1)[..., 0]


def masked_median(x: Float[Array, "*batch N"], mask: Bool[Array, "*batch N"]) -> Float[Array, "*batch"]:
    """numpy-style median (mean of the two middle values for an even count) over x[mask].
    NaN where the mask is empty."""
    x, mask = jnp.broadcast_arrays(x, mask)
    xs = jnp.sort(jnp.where(mask, x, jnp.inf), axis=-1)
    n = jnp.sum(mask, axis=-1)
    lo = jnp.clip((n - 1) // 2, 0, x.shape[-1] - 1)
    hi = jnp.clip(n // 2, 0, x.shape[-1] - 1)
    med = 0.5 * (jnp.take_along_axis(xs, lo[..., None], -1) + jnp.take_along_axis(xs, hi[..., None], -1))[..., 0]
    return jnp.where(n > 0, med, jnp.nan)


def robust_scale(
    x: Float[Array, "*batch N"], y: Float[Array, "*batch N"], w: Float[Array, "*batch N"] | None = None, eps: float = 1e-7
) -> Float[Array, "*batch"]:
    """argmin_a sum_i w_i |a x_i - y_i| for w >= 0: the weighted median of y_i / x_i with
    weights w_i |x_i|. Flatten point coordinates into N first to fit a scale on points."""
    if w is None:
        w = jnp.ones_like(x)
    x, y, w = jnp.broadcast_arrays(x, y, w)
    sign = jnp.where(x < 0, -1.0, 1.0).astype(x.dtype)
    ax, sy = x * sign, y * sign
    ratio = sy / jnp.maximum(ax, eps)
    return weighted_median(ratio, w * ax)


def median_scale(x: Float[Array, "*batch N"], y: Float[Array, "*batch N"], mask: Bool[Array, "*batch N"] | None = None) -> Array:
    """median(y[mask]) / median(x[mask]): the scale taking x to y in the median-scaling protocol."""
    if mask is None:
        mask = jnp.ones(jnp.broadcast_shapes(x.shape, y.shape), bool)
    return masked_median(y, mask) / masked_median(x, mask)


def scale_shift_lstsq(
    x: Float[Array, "*batch N"], y: Float[Array, "*batch N"], w: Float[Array, "*batch N"] | None = None, eps: float = 1e-12
) -> tuple[Float[Array, "*batch"], Float[Array, "*batch"]]:
    """(s, b) minimising sum_i w_i (s x_i + b - y_i)^2 (closed form; s = 0 if x is constant)."""
    if w is None:
        w = jnp.ones_like(x)
    x, y, w = jnp.broadcast_arrays(x, y, w)
    wn = w / jnp.maximum(jnp.sum(w, axis=-1, keepdims=True), eps)
    mx = jnp.sum(wn * x, axis=-1)
    my = jnp.sum(wn * y, axis=-1)
    dx = x - mx[..., None]
    var = jnp.sum(wn * dx * dx, axis=-1)
    cov = jnp.sum(wn * dx * (y - my[..., None]), axis=-1)
    s = cov / jnp.maximum(var, eps)
    return s, my - s * mx


def apply_similarity_to_poses(S: Float[Array, "*batch 4 4"], poses: Float[Array, "*batch N 4 4"]) -> Array:
    """Moves camera-to-world poses by the world similarity S = [[s Ra, t], [0, 1]]: centres go to
    S(c), rotations to Ra R. The results are rigid poses (the scale acts on positions only)."""
    s = similarity_scale(S)
    Ra = S[..., :3, :3] / s[..., None, None]
    R = Ra[..., None, :, :] @ poses[..., :3, :3]
    c = jnp.einsum("...ij,...nj->...ni", S[..., :3, :3], poses[..., :3, 3]) + S[..., None, :3, 3]
    return make_transform(R, c)


def align_trajectories(
    poses: Float[Array, "*batch N 4 4"],
    reference: Float[Array, "*batch N 4 4"],
    weights: Float[Array, "*batch N"] | None = None,
    with_scale: bool = True,
) -> tuple[Float[Array, "*batch 4 4"], Float[Array, "*batch N 4 4"]]:
    """Sim(3) (or SE(3)) Umeyama alignment of `poses`' camera centres onto `reference`'s.

    Returns (S, aligned poses). Rotation about the line is undetermined when all centres are
    collinear; Umeyama then returns one of the equally good solutions.
    """
    S = weighted_procrustes(poses[..., :3, 3], reference[..., :3, 3], weights, with_scale=with_scale)
    return S, apply_similarity_to_poses(S, poses)
