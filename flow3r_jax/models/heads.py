"""Head decoders, the pixel-shuffle point / confidence heads and the camera head."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from flow3r_jax.geometry import rotation_9d_to_matrix
from flow3r_jax.models.config import ModelConfig
from flow3r_jax.models.layers import Block, dense, run_stack, stacked

__all__ = ["HeadDecoder", "PixelShuffleHead", "CameraHead", "pixel_shuffle"]


class HeadDecoder(nnx.Module):
    """Linear (2 * dec width -> width), `head_depth` RoPE blocks (no LayerScale, no qk-norm),
    Linear out. Also returns the outputs of its last 4 blocks (before the output Linear)."""

    def __init__(self, cfg: ModelConfig, out_dim: int, *, rngs: nnx.Rngs):
        self.cfg = cfg
        dtype = jnp.dtype(cfg.trunk_dtype)
        self.projects = dense(2 * cfg.dec_dim, cfg.head_dim, ("embed", "mlp"), rngs=rngs, dtype=dtype)
        self.blocks = stacked(
            cfg.head_depth,
            lambda r: Block(cfg.head_dim, cfg.head_heads, mlp_ratio=cfg.mlp_ratio, rope_base=cfg.rope_base, rngs=r, dtype=dtype, attention_chunk=cfg.attention_chunk),
            rngs,
        )
        self.linear_out = dense(cfg.head_dim, out_dim, ("embed", "mlp"), rngs=rngs, dtype=dtype)

    def __call__(self, hidden: jax.Array, pos: jax.Array, intermediates: bool = False):
        x = self.projects(hidden)
        x, inter = run_stack(self.blocks, x, lambda blk, t: blk(t, pos), remat=self.cfg.remat, keep_last=4 if intermediates else 0)
        out = self.linear_out(x)
        return (out, inter) if intermediates else out


def pixel_shuffle(x: jax.Array, patch: int, channels: int) -> jax.Array:
    """(B, h, w, C*p*p) -> (B, h*p, w*p, C): feature k goes to channel k // p^2 at pixel offset
    (dy, dx) = ((k % p^2) // p, k % p) inside the token's patch (torch's pixel_shuffle)."""
    B, h, w, _ = x.shape
    x = x.reshape(B, h, w, channels, patch, patch)
    return x.transpose(0, 1, 4, 2, 5, 3).reshape(B, h * patch, w * patch, channels)


class PixelShuffleHead(nnx.Module):
    """Linear(width -> C * p^2) per patch token, then pixel shuffle to full resolution (fp32)."""

    def __init__(self, cfg: ModelConfig, in_dim: int, channels: int, *, rngs: nnx.Rngs):
        self.patch, self.channels = cfg.patch_size, channels
        self.proj = dense(in_dim, channels * cfg.patch_size**2, ("embed", None), rngs=rngs)

    def __call__(self, tokens: jax.Array, h: int, w: int) -> jax.Array:
        x = self.proj(tokens.astype(jnp.float32)).reshape(tokens.shape[0], h, w, -1)
        return pixel_shuffle(x, self.patch, self.channels)


class _ResUnit(nnx.Module):
    """r + relu(L3(relu(L2(relu(L1(r))))))."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        self.res_conv1 = dense(dim, dim, ("embed", "mlp"), rngs=rngs)
        self.res_conv2 = dense(dim, dim, ("embed", "mlp"), rngs=rngs)
        self.res_conv3 = dense(dim, dim, ("embed", "mlp"), rngs=rngs)

    def __call__(self, r):
        x = jax.nn.relu(self.res_conv1(r))
        x = jax.nn.relu(self.res_conv2(x))
        return r + jax.nn.relu(self.res_conv3(x))


class CameraHead(nnx.Module):
    """Camera decoder tokens (no registers) -> camera-to-world pose (fp32).

    Two residual units, mean over patch tokens, Linear-ReLU-Linear-ReLU, then translation (3) and
    a 9D rotation projected to SO(3) by the official row-normalise + SVD rule."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        self.res_conv = nnx.List([_ResUnit(dim, rngs=rngs) for _ in range(2)])
        self.more_mlps = nnx.List([dense(dim, dim, ("embed", "mlp"), rngs=rngs) for _ in range(2)])
        self.fc_t = dense(dim, 3, ("embed", None), rngs=rngs)
        self.fc_rot = dense(dim, 9, ("embed", None), rngs=rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = tokens.astype(jnp.float32)
        for unit in self.res_conv:
            x = unit(x)
        x = jnp.mean(x, axis=1)
        for lin in self.more_mlps:
            x = jax.nn.relu(lin(x))
        t = self.fc_t(x)
        R = rotation_9d_to_matrix(self.fc_rot(x))
        top = jnp.concatenate([R, t[..., :, None]], axis=-1)
        bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 0.0, 1.0], jnp.float32), top.shape[:-2] + (1, 4))
        return jnp.concatenate([top, bottom], axis=-2)
