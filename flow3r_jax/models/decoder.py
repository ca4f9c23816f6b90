"""The alternating frame / global attention decoder with shared register tokens.

Each frame's patch tokens get the same R learned registers prepended. Blocks alternate: even
blocks attend within a frame ((B*N) sequences of R + h*w tokens), odd blocks attend over all
frames of a sample (B sequences of N*(R + h*w) tokens, frame-major). 2D RoPE positions are
(row + 1, col + 1) for patches and (0, 0) for registers, identical in every frame, so the
decoder is equivariant to permutations of the frames. The output concatenates the last two
blocks' outputs (2 * width channels).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flow3r_jax.models.config import ModelConfig
from flow3r_jax.models.layers import Block, run_stack, stacked

__all__ = ["Decoder", "token_positions"]


def token_positions(h: int, w: int, num_registers: int) -> np.ndarray:
    """(R + h*w, 2) int32 RoPE positions (row, col): registers at (0, 0), patch (r, c) at (r+1, c+1)."""
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    patches = np.stack([rows.ravel() + 1, cols.ravel() + 1], axis=-1)
    return np.concatenate([np.zeros((num_registers, 2), np.int64), patches]).astype(np.int32)


class DecoderPair(nnx.Module):
    """One frame-attention block followed by one global-attention block."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(cfg.trunk_dtype)
        kw = dict(mlp_ratio=cfg.mlp_ratio, layerscale=cfg.dec_layerscale_init, qk_norm=True, rope_base=cfg.rope_base, rngs=rngs, dtype=dtype, attention_chunk=cfg.attention_chunk)
        self.frame = Block(cfg.dec_dim, cfg.dec_heads, **kw)
        self.global_ = Block(cfg.dec_dim, cfg.dec_heads, **kw)

    def frame_step(self, x, pos):
        return self.frame(x, pos)

    def global_step(self, x, pos, num_frames):
        BN, T, D = x.shape
        y = self.global_(x.reshape(BN // num_frames, num_frames * T, D), jnp.tile(pos, (1, num_frames, 1)))
        return y.reshape(BN, T, D)


class Decoder(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.register_token = nnx.Param(
            nnx.initializers.normal(stddev=1e-6)(rngs.params(), (1, 1, cfg.dec_registers, cfg.dec_dim)),
            out_sharding=(None, None, None, "embed"),
        )
        self.pairs = stacked(cfg.dec_depth // 2, lambda r: DecoderPair(cfg, rngs=r), rngs)

    def __call__(self, tokens: jax.Array, num_frames: int, h: int, w: int) -> tuple[jax.Array, jax.Array]:
        """tokens (B*N, h*w, D) -> (hidden (B*N, R + h*w, 2D), positions (1, R + h*w, 2))."""
        cfg = self.cfg
        BN, _, D = tokens.shape
        regs = jnp.broadcast_to(self.register_token[...][0].astype(tokens.dtype), (BN, cfg.dec_registers, D))
        x = jnp.concatenate([regs, tokens], axis=1)
        pos = jnp.asarray(token_positions(h, w, cfg.dec_registers))[None]

        def apply(pair, x):
            return pair.global_step(pair.frame_step(x, pos), pos, num_frames)

        def apply_last(pair, x):
            a = pair.frame_step(x, pos)
            b = pair.global_step(a, pos, num_frames)
            return b, (a, b)

        _, [(a, b)] = run_stack(self.pairs, x, apply, remat=cfg.remat, keep_last=1, apply_last=apply_last)
        return jnp.concatenate([a, b], axis=-1), pos
