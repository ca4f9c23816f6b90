"""Alternative flow heads for the paper's ablation; same output as the factored head (B, S, H, W, 2)
absolute positions in frame j in official NDC.

- `TrackingFlowHead` (VGGT-style matching): per-frame matching features from the point decoder's
  4 levels; for a pair (i, j) each patch of i attends over all patches of j (scaled dot product),
  the soft-argmax gives a coarse position in j, and a per-patch linear layer on [feature of i,
  matched feature of j] adds a sub-patch residual at full resolution (pixel shuffle).
- `ProjectiveFlowHead` (no parameters): flow from geometry alone. Frame i's predicted local
  points are moved into camera j by the predicted poses and projected with a pinhole whose
  principal point is the image centre and whose focal length is the least-squares fit to frame
  j's own local points (`geometry.focal_from_pointmap`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from flow3r_jax.geometry import (
    focal_from_pointmap,
    intrinsics_from_focal,
    pixel_grid,
    pixel_to_ndc,
    project_points,
    relative_pose,
    transform_points,
)
from flow3r_jax.models.config import ModelConfig
from flow3r_jax.models.flow_head import gather_pairs
from flow3r_jax.models.heads import pixel_shuffle
from flow3r_jax.models.layers import dense, layer_norm

__all__ = ["TrackingFlowHead", "ProjectiveFlowHead"]


class ProjectiveFlowHead(nnx.Module):
    def __init__(self, cfg: ModelConfig):
        self.patch = cfg.patch_size

    def __call__(self, local_points: jax.Array, poses: jax.Array, pairs: jax.Array) -> jax.Array:
        """local_points (B, N, H, W, 3), poses (B, N, 4, 4), pairs (B, S, 2) -> (B, S, H, W, 2)."""
        H, W = local_points.shape[2:4]
        focal = focal_from_pointmap(local_points)  # (B, N)
        pts_i = gather_pairs(local_points, pairs[..., 0])
        rel = relative_pose(gather_pairs(poses, pairs[..., 1]), gather_pairs(poses, pairs[..., 0]))  # cam i -> cam j
        K_j = intrinsics_from_focal(gather_pairs(focal, pairs[..., 1]), cx=W / 2.0, cy=H / 2.0)
        xy, _ = project_points(transform_points(rel, pts_i), K_j)
        return pixel_to_ndc(xy, H, W)


class TrackingFlowHead(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, feature_dim: int | None = None):
        D = cfg.head_dim
        C = feature_dim or max(64, D // 4)
        self.patch = cfg.patch_size
        self.feat_proj = dense(4 * D, C, ("embed", "mlp"), rngs=rngs)
        self.feat_norm = layer_norm(C, 1e-5, rngs=rngs, axis_name="mlp")
        self.residual = dense(2 * C, 2 * cfg.patch_size**2, ("mlp", None), rngs=rngs, init=nnx.initializers.zeros_init())

    def __call__(self, point_levels, camera_levels, pairs, num_registers: int, image_hw: tuple[int, int]) -> jax.Array:
        del camera_levels  # matching uses appearance/geometry features only
        H, W = image_hw
        p = self.patch
        h, w = H // p, W // p
        B, S = pairs.shape[:2]
        f = jnp.concatenate([lvl[:, num_registers:].astype(jnp.float32) for lvl in point_levels], axis=-1)
        f = self.feat_norm(self.feat_proj(f)).reshape(B, -1, h * w, self.feat_norm.scale[...].shape[0])
        fi = gather_pairs(f, pairs[..., 0])  # (B, S, hw, C)
        fj = gather_pairs(f, pairs[..., 1])
        attn = jax.nn.softmax(jnp.einsum("bsqc,bskc->bsqk", fi, fj) / jnp.sqrt(fi.shape[-1]), axis=-1)
        centres = pixel_grid(h, w) * p  # patch centres in pixels of the full image
        coarse = jnp.einsum("bsqk,kc->bsqc", attn, centres.reshape(h * w, 2)).reshape(B * S, h, w, 2)
        matched = jnp.einsum("bsqk,bskc->bsqc", attn, fj)
        res = self.residual(jnp.concatenate([fi, matched], axis=-1)).reshape(B * S, h, w, -1)
        res = pixel_shuffle(res, p, 2)  # (B*S, H, W, 2), pixels
        # Each pixel of a patch starts at the patch's coarse match, offset as in frame i.
        offset = pixel_grid(H, W) - jnp.repeat(jnp.repeat(centres, p, axis=0), p, axis=1)
        xy = jnp.repeat(jnp.repeat(coarse, p, axis=1), p, axis=2) + offset + res
        return pixel_to_ndc(xy, H, W).reshape(B, S, H, W, 2)
