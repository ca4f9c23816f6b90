"""DINOv2 ViT encoder with register tokens, applied to each frame independently.

Token order is [cls, registers, patches (row-major)]. The learned position table (a square grid
for 518 px images, plus the cls entry) is added to cls and patches *before* the registers are
inserted; for other image sizes its patch part is resized to (H/14, W/14) with torch's
antialiased bicubic filter in fp32 (`geometry.resize_bicubic_antialias`). The output is the final
LayerNorm of the patch tokens; cls and registers are dropped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from flow3r_jax.geometry import resize_bicubic_antialias
from flow3r_jax.models.config import ModelConfig
from flow3r_jax.models.layers import Block, dense, layer_norm, run_stack, stacked

__all__ = ["Encoder", "patchify"]


def patchify(images: jax.Array, patch: int) -> jax.Array:
    """(B, H, W, C) -> (B, H/p, W/p, p*p*C), each patch flattened in (dy, dx, c) order."""
    B, H, W, C = images.shape
    x = images.reshape(B, H // patch, patch, W // patch, patch, C)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(B, H // patch, W // patch, patch * patch * C)


class Encoder(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        dtype = jnp.dtype(cfg.trunk_dtype)
        D, p = cfg.enc_dim, cfg.patch_size
        # The 14x14 stride-14 patch convolution as a matmul on flattened patches.
        self.patch_embed = dense(p * p * 3, D, ("conv_in", "embed"), rngs=rngs, dtype=dtype)
        init = nnx.initializers.truncated_normal(stddev=0.02)
        self.cls_token = nnx.Param(init(rngs.params(), (1, 1, D)), out_sharding=(None, None, "embed"))
        self.pos_embed = nnx.Param(init(rngs.params(), (1, 1 + cfg.enc_pos_grid**2, D)), out_sharding=(None, None, "embed"))
        self.register_tokens = nnx.Param(init(rngs.params(), (1, cfg.enc_registers, D)), out_sharding=(None, None, "embed"))
        self.blocks = stacked(
            cfg.enc_depth,
            lambda r: Block(D, cfg.enc_heads, mlp_ratio=cfg.mlp_ratio, layerscale=cfg.enc_layerscale_init, rngs=r, dtype=dtype, attention_chunk=cfg.attention_chunk),
            rngs,
        )
        self.norm = layer_norm(D, 1e-6, rngs=rngs, dtype=dtype)

    def position_table(self, h: int, w: int) -> jax.Array:
        """(1 + h*w, D) position embeddings for an h x w patch grid (fp32)."""
        M = self.cfg.enc_pos_grid
        table = self.pos_embed[...][0].astype(jnp.float32)
        if (h, w) == (M, M):
            return table
        grid = table[1:].reshape(M, M, -1)
        grid = resize_bicubic_antialias(grid, (h, w))
        return jnp.concatenate([table[:1], grid.reshape(h * w, -1)], axis=0)

    def embed_patches(self, images: jax.Array) -> jax.Array:
        """Normalised images (B, H, W, 3) -> patch embeddings (B, h*w, D)."""
        p = self.cfg.patch_size
        B, H, W, _ = images.shape
        x = self.patch_embed(patchify(images.astype(jnp.dtype(self.cfg.trunk_dtype)), p))
        return x.reshape(B, (H // p) * (W // p), -1)

    def prepare_tokens(self, patches: jax.Array, h: int, w: int) -> jax.Array:
        """Patch embeddings -> [cls, registers, patches] with positions added (B, 1 + R + h*w, D)."""
        cfg = self.cfg
        dtype = patches.dtype
        B, _, D = patches.shape
        x = jnp.concatenate([jnp.broadcast_to(self.cls_token[...].astype(dtype), (B, 1, D)), patches], axis=1)
        x = (x + self.position_table(h, w)[None]).astype(dtype)
        regs = jnp.broadcast_to(self.register_tokens[...].astype(dtype), (B, cfg.enc_registers, D))
        return jnp.concatenate([x[:, :1], regs, x[:, 1:]], axis=1)

    def __call__(self, images: jax.Array) -> jax.Array:
        """Normalised images (B, H, W, 3) -> final-LayerNorm patch tokens (B, h*w, D)."""
        cfg = self.cfg
        h, w = images.shape[1] // cfg.patch_size, images.shape[2] // cfg.patch_size
        x = self.prepare_tokens(self.embed_patches(images), h, w)
        x, _ = run_stack(self.blocks, x, lambda blk, t: blk(t), remat=cfg.remat)
        return self.norm(x)[:, 1 + cfg.enc_registers :]
