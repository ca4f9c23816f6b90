"""The factored flow head: flow i -> j from frame i's geometry latents and frame j's camera latents.

For each of 4 levels (the last 4 blocks of the point and camera head decoders, registers
dropped), every token of frame i is described by [camera feature of i at the token, camera
feature of j averaged over j's tokens, point feature of i at the token]; one MLP shared by the
levels (3D -> 2D -> 2D -> D, ReLU) and a LayerNorm (eps 1e-5) turn it into a patch-grid feature
map, which a DPT decoder upsamples to a 2-channel map at full resolution. The output is the raw
official target: frame i's pixels' absolute positions in frame j, in official NDC
(`flow_to_pixels` converts to pixel displacement).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from flow3r_jax.models.config import ModelConfig
from flow3r_jax.models.dpt import Conv, ConvTransposeStride, FusionBlock, bilinear_resize_align_corners, uv_embedding
from flow3r_jax.models.layers import dense, layer_norm

__all__ = ["FactoredFlowHead", "DPTDecoder", "gather_pairs"]


def gather_pairs(x: jax.Array, idx: jax.Array) -> jax.Array:
    """x (B, N, ...) and frame indices (B, S) -> (B, S, ...)."""
    return jax.vmap(lambda a, i: a[i])(x, idx)


class DPTDecoder(nnx.Module):
    """4 patch-grid feature maps (T, h, w, D) -> (T, H, W, out) at full image resolution."""

    def __init__(self, cfg: ModelConfig, dim_in: int, out_dim: int = 2, *, rngs: nnx.Rngs):
        oc, F = cfg.dpt_out_channels, cfg.dpt_features
        self.projects = nnx.List([Conv(dim_in, c, 1, rngs=rngs) for c in oc])
        self.resize_layers = nnx.List(
            [
                ConvTransposeStride(oc[0], oc[0], 4, rngs=rngs),
                ConvTransposeStride(oc[1], oc[1], 2, rngs=rngs),
                None,
                Conv(oc[3], oc[3], 3, stride=2, padding=1, rngs=rngs),
            ]
        )
        self.layer_rn = nnx.List([Conv(c, F, 3, padding=1, use_bias=False, rngs=rngs) for c in oc])
        self.refinenet = nnx.List([FusionBlock(F, rngs=rngs) for _ in range(3)] + [FusionBlock(F, has_residual=False, rngs=rngs)])
        self.output_conv1 = Conv(F, F // 2, 3, padding=1, rngs=rngs)
        self.output_conv2a = Conv(F // 2, cfg.dpt_head_hidden, 3, padding=1, rngs=rngs)
        self.output_conv2b = Conv(cfg.dpt_head_hidden, out_dim, 1, rngs=rngs)

    def __call__(self, feats: list[jax.Array], image_hw: tuple[int, int]) -> jax.Array:
        H, W = image_hw
        aspect = W / H
        levels = []
        for i, x in enumerate(feats):
            x = self.projects[i](x)
            x = x + 0.1 * jnp.asarray(uv_embedding(x.shape[1], x.shape[2], x.shape[3], aspect))
            if self.resize_layers[i] is not None:
                x = self.resize_layers[i](x)
            levels.append(self.layer_rn[i](x))
        l1, l2, l3, l4 = levels
        out = self.refinenet[3](l4, size=l3.shape[1:3])
        out = self.refinenet[2](out, l3, size=l2.shape[1:3])
        out = self.refinenet[1](out, l2, size=l1.shape[1:3])
        out = self.refinenet[0](out, l1)
        out = self.output_conv1(out)
        out = bilinear_resize_align_corners(out, (H, W))
        out = out + 0.1 * jnp.asarray(uv_embedding(H, W, out.shape[-1], aspect))
        return self.output_conv2b(jax.nn.relu(self.output_conv2a(out)))


class FactoredFlowHead(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        D = cfg.head_dim
        self.patch = cfg.patch_size
        self.mlp = nnx.List(
            [dense(3 * D, 2 * D, ("embed", "mlp"), rngs=rngs), dense(2 * D, 2 * D, ("mlp", "embed"), rngs=rngs), dense(2 * D, D, ("embed", "mlp"), rngs=rngs)]
        )
        self.norm = layer_norm(D, 1e-5, rngs=rngs)
        self.dpt = DPTDecoder(cfg, D, 2, rngs=rngs)

    def fuse(self, point: jax.Array, camera: jax.Array, pairs: jax.Array) -> jax.Array:
        """point, camera (B, N, h*w, D) of one level; pairs (B, S, 2) -> MLP output (B, S, h*w, D)."""
        cam_i = gather_pairs(camera, pairs[..., 0])
        pt_i = gather_pairs(point, pairs[..., 0])
        cam_j = jnp.mean(gather_pairs(camera, pairs[..., 1]), axis=2, keepdims=True)
        x = jnp.concatenate([cam_i, jnp.broadcast_to(cam_j, cam_i.shape), pt_i], axis=-1)
        x = jax.nn.relu(self.mlp[0](x))
        x = jax.nn.relu(self.mlp[1](x))
        return self.mlp[2](x)

    def level_features(self, point: jax.Array, camera: jax.Array, pairs: jax.Array, h: int, w: int) -> jax.Array:
        """The fused, normalised features of one level as patch grids (B*S, h, w, D)."""
        x = self.norm(self.fuse(point, camera, pairs))
        B, S = pairs.shape[:2]
        return x.reshape(B * S, h, w, -1)

    def __call__(self, point_levels, camera_levels, pairs, num_registers: int, image_hw: tuple[int, int]) -> jax.Array:
        """Levels: 4 arrays (B*N, R + h*w, D) each. Returns (B, S, H, W, 2) in official NDC."""
        H, W = image_hw
        h, w = H // self.patch, W // self.patch
        B, S = pairs.shape[:2]
        feats = []
        for p, c in zip(point_levels, camera_levels):
            p = p[:, num_registers:].astype(jnp.float32)
            c = c[:, num_registers:].astype(jnp.float32)
            p = p.reshape(B, -1, h * w, p.shape[-1])
            c = c.reshape(B, -1, h * w, c.shape[-1])
            feats.append(self.level_features(p, c, pairs, h, w))
        flow = self.dpt(feats, image_hw)
        return flow.reshape(B, S, H, W, 2)
