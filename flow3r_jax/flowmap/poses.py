"""Camera poses from depth and flow: weighted Procrustes per consecutive pair, then chaining.

For each pair (i, i + 1) (official `projection.align_surfaces`): take frame i + 1's camera-space
points at a fixed set of pixels, follow the backward flow (i + 1 -> i) from those pixels and
sample frame i's points there bilinearly (border padding, as `grid_sample(padding_mode=
"border")`), and fit the rigid transform taking the first set onto the second with the
correspondence weights. That transform maps camera i + 1 into camera i, i.e. inv(P_i) P_{i+1}
for camera-to-world poses, so poses follow by chaining with P_0 = identity (an associative scan,
`geometry.chain_relative_poses`).

Pixels: FlowMap's 1000 evenly spaced flattened indices (`torch.linspace(0, HW - 1, 1000)` cast
to int64, i.e. truncated), the same every step; all pixels in the explicit-depth ablation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from flow3r_jax.flowmap.correspondence import flat_pixel_xy
from flow3r_jax.geometry import bilinear_sample, chain_relative_poses, weighted_procrustes

__all__ = ["procrustes_indices", "pair_correspondences", "relative_poses", "poses_from_relative", "edge_validity"]


def procrustes_indices(height: int, width: int, num_points: int | None) -> np.ndarray:
    """FlowMap's fixed Procrustes pixels: `num_points` evenly spaced flattened indices
    (truncated, as torch's integer linspace), or every pixel for None."""
    n = height * width
    if num_points is None or num_points >= n:
        return np.arange(n, dtype=np.int32)
    return np.linspace(0.0, n - 1, num_points).astype(np.int64).astype(np.int32)


def pair_correspondences(
    points: Float[Array, "F H W 3"], flow_bw: Float[Array, "F-1 H W 2"], idx: Int[Array, " P"] | slice
) -> tuple[Float[Array, "F-1 P 3"], Float[Array, "F-1 P 3"]]:
    """(later, earlier): frame i + 1's points at pixels idx, and frame i's surface sampled at
    those pixels' backward-flow targets, for every consecutive pair."""
    F, H, W, _ = points.shape
    later = points[1:].reshape(F - 1, H * W, 3)[:, idx]
    target = flat_pixel_xy(H, W, idx) + flow_bw.reshape(F - 1, H * W, 2)[:, idx]
    earlier = bilinear_sample(points[:-1], target, padding="border")
    return later, earlier


def relative_poses(
    points: Float[Array, "F H W 3"],
    flow_bw: Float[Array, "F-1 H W 2"],
    weights: Float[Array, "F-1 P"],
    idx: Int[Array, " P"] | slice,
) -> Float[Array, "F-1 4 4"]:
    """rel[i] = inv(P_i) P_{i+1}: the weighted Procrustes fit mapping camera i + 1 into camera i."""
    later, earlier = pair_correspondences(points, flow_bw, idx)
    return weighted_procrustes(later, earlier, weights)


def poses_from_relative(rel: Float[Array, "F-1 4 4"]) -> Float[Array, "F 4 4"]:
    """Camera-to-world poses with P_0 = identity and P_{i+1} = P_i rel[i] (associative scan)."""
    return chain_relative_poses(rel)


def edge_validity(
    depth: Float[Array, "F H W"], flow_bw: Float[Array, "F-1 H W 2"], idx: Int[Array, " P"] | slice, max_spread: float
) -> Float[Array, "F-1 P"]:
    """1 where the four pixels frame i's point is bilinearly sampled from (at the backward-flow
    target of frame i + 1's pixel) agree in depth within a factor 1 + max_spread, else 0. A
    sample straddling a depth edge mixes two surfaces into a point on neither. Computed from
    the depth without gradient (a weight, not a loss term). Tighter than sampling
    `geometry.depth_edge` (a 3x3 neighbourhood test) at the target: only the four pixels the
    sample reads count, so a correspondence next to an edge but not across it is kept; the
    corner indices follow `geometry.bilinear_sample`'s border clamping."""
    depth = jax.lax.stop_gradient(depth)
    F, H, W = depth.shape
    target = flat_pixel_xy(H, W, idx) + flow_bw.reshape(F - 1, H * W, 2)[:, idx]
    px = jnp.clip(target[..., 0] - 0.5, 0.0, W - 1.0)
    py = jnp.clip(target[..., 1] - 0.5, 0.0, H - 1.0)
    x0 = jnp.floor(px).astype(jnp.int32)
    y0 = jnp.floor(py).astype(jnp.int32)
    x1, y1 = jnp.minimum(x0 + 1, W - 1), jnp.minimum(y0 + 1, H - 1)
    flat = depth[:-1].reshape(F - 1, H * W)
    corners = jnp.stack([jnp.take_along_axis(flat, y * W + x, axis=1) for y, x in ((y0, x0), (y0, x1), (y1, x0), (y1, x1))])
    spread = jnp.max(corners, axis=0) / jnp.min(corners, axis=0) - 1.0
    return (spread <= max_spread).astype(depth.dtype)
