"""Correspondence weights: how much Procrustes and the focal soft-min trust each flow vector.

FlowMap's per-pixel MLP sees [features of frame i at the backward-flow target, features of
frame i + 1 at the pixel] and outputs sigmoid(.) clipped below at 1e-4 (official
`backbone_midas.py`: layers 2C -> 128 -> 64 -> 1, features bilinearly sampled with zero
padding at the flow target). The weights are used only by Procrustes and the soft-min, so here
the MLP runs only at the pixels those use (1000 per pair plus 8192 for the soft-min) instead of
on every pixel: the same function, a fraction of the work.

The explicit-depth ablation has per-pixel weight parameters instead: sigmoid(100 w).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int

from flow3r_jax.geometry import bilinear_sample, pixel_grid

__all__ = ["CorrespondenceMLP", "sample_pair_features", "flat_pixel_xy"]


class CorrespondenceMLP(nnx.Module):
    """[feature_earlier, feature_later] (..., 2C) -> weight in [clip, 1) (...)."""

    def __init__(self, feature_dim: int, hidden: tuple[int, ...] = (64, 32), clip: float = 1e-4, *, rngs: nnx.Rngs):
        dims = (2 * feature_dim, *hidden, 1)
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:])])
        self.clip = clip

    def __call__(self, f_earlier: Float[Array, "*b C"], f_later: Float[Array, "*b C"]) -> Float[Array, "*b"]:
        x = jnp.concatenate([f_earlier, f_later], axis=-1)
        for k, layer in enumerate(self.layers):
            x = layer(x)
            if k < len(self.layers) - 1:
                x = jax.nn.relu(x)
        return jnp.maximum(jax.nn.sigmoid(x[..., 0]), self.clip)


def flat_pixel_xy(height: int, width: int, idx: Int[Array, " P"] | slice) -> Float[Array, "P 2"]:
    """Pixel-centre coordinates of flattened (row-major) pixel indices."""
    return pixel_grid(height, width).reshape(-1, 2)[idx]


def sample_pair_features(
    features: Float[Array, "F h w C"],
    flow_bw: Float[Array, "F-1 H W 2"],
    idx: Int[Array, " P"] | slice,
    cell: int,
) -> tuple[Float[Array, "F-1 P C"], Float[Array, "F-1 P C"]]:
    """Features of frame i at pixel idx's backward-flow target (zero padding, as FlowMap) and
    of frame i + 1 at pixel idx, for every consecutive pair. `features` are on a grid of
    `cell`-pixel cells (pixel position xy -> feature position xy / cell)."""
    H, W = flow_bw.shape[-3:-1]
    xy = flat_pixel_xy(H, W, idx)  # (P, 2)
    target = xy + flow_bw.reshape(flow_bw.shape[0], H * W, 2)[:, idx]  # (F-1, P, 2)
    f_later = bilinear_sample(features[1:], jnp.broadcast_to(xy / cell, target.shape), padding="border")
    f_earlier = bilinear_sample(features[:-1], target / cell, padding="zeros")
    return f_earlier, f_later
