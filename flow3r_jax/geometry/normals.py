"""Surface normals of a pointmap and depth edges (the geometry of MoGe's normal loss).

Each 2x2 pixel quad with corners lu (left-up), ru, ld, rd yields four triangle normals, one per
corner, from the two edges leaving the corner opposite to the excluded one:

    n_lu-excluded = (ru - rd) x (ld - rd)      n_rd-excluded = (ld - lu) x (ru - lu)
    n_ld-excluded = (lu - ru) x (rd - ru)      n_ru-excluded = (rd - ld) x (lu - ld)

For an OpenCV-axis pointmap of a surface facing the camera all four point towards the camera
(negative z). They are not normalised: angle comparisons do not need it, and the unnormalised
vectors keep the gradient finite on degenerate triangles.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

__all__ = ["quad_normals", "quad_normal_mask", "depth_edge"]


def _corners(x):
    return x[..., :-1, :-1, :], x[..., :-1, 1:, :], x[..., 1:, :-1, :], x[..., 1:, 1:, :]


def quad_normals(points: Float[Array, "*batch H W 3"]) -> Float[Array, "*batch H-1 W-1 4 3"]:
    """The four triangle normals of each pixel quad, in the order listed in the module docstring
    (excluding lu, ld, rd, ru: the official loss's upxleft, leftxdown, downxright, rightxup)."""
    lu, ru, ld, rd = _corners(points)
    return jnp.stack(
        [
            jnp.cross(ru - rd, ld - rd),
            jnp.cross(lu - ru, rd - ru),
            jnp.cross(ld - lu, ru - lu),
            jnp.cross(rd - ld, lu - ld),
        ],
        axis=-2,
    )


def quad_normal_mask(mask: Bool[Array, "*batch H W"]) -> Bool[Array, "*batch H-1 W-1 4"]:
    """Validity of each triangle of `quad_normals`: all three of its corners valid."""
    lu, ru, ld, rd = _corners(mask[..., None])
    return jnp.concatenate([ru & ld & rd, lu & rd & ru, ld & ru & lu, rd & lu & ld], axis=-1)


def depth_edge(
    depth: Float[Array, "*batch H W"],
    rtol: float | None = None,
    atol: float | None = None,
    kernel_size: int = 3,
    mask: Bool[Array, "*batch H W"] | None = None,
) -> Bool[Array, "*batch H W"]:
    """Pixels whose k x k neighbourhood spans a depth range above atol, or above rtol * depth.
    Invalid pixels (mask False) are ignored in the neighbourhood max and min."""
    hi_in = depth if mask is None else jnp.where(mask, depth, -jnp.inf)
    lo_in = depth if mask is None else jnp.where(mask, depth, jnp.inf)
    window = (1,) * (depth.ndim - 2) + (kernel_size, kernel_size)
    strides = (1,) * depth.ndim
    pad = [(0, 0)] * (depth.ndim - 2) + [(kernel_size // 2, kernel_size // 2)] * 2
    hi = jax.lax.reduce_window(hi_in, -jnp.inf, jax.lax.max, window, strides, pad)
    lo = jax.lax.reduce_window(lo_in, jnp.inf, jax.lax.min, window, strides, pad)
    diff = hi - lo
    edge = jnp.zeros(depth.shape, bool)
    if atol is not None:
        edge = edge | (diff > atol)
    if rtol is not None:
        rel = jnp.nan_to_num(diff / depth, nan=0.0, posinf=jnp.inf)
        edge = edge | (rel > rtol)
    return edge
