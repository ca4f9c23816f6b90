"""Flow3r: the pi^3 multi-view trunk plus a flow head, as one Flax NNX module.

`Flow3r(cfg, rngs=...)(images, pairs=None)` with images (B, N, H, W, 3), floating point in [0, 1]
(H, W multiples of 14) returns per frame `local_points` (B, N, H, W, 3) in the frame's camera, `camera_poses`
(B, N, 4, 4) camera-to-world, `points` (the poses applied to the local points) and `conf`
(B, N, H, W, 1) logits; with `pairs` (B, S, 2) int32 also `flow` (B, S, H, W, 2): frame i's
pixels' absolute positions in frame j in the official NDC convention. There is no reference
frame: outputs are equivariant to permutations of the frames.

Inputs are checked at this boundary (`flow3r_jax.models.inputs`): wrong shapes or dtypes (uint8
images, float or bool pairs) always raise `ModelInputError`; values (NaN / inf, images outside
[0, 1], pair indices outside [0, N)) are checked when the call is eager, not on jit tracers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from flow3r_jax.geometry import transform_points
from flow3r_jax.models.alt_flow_heads import ProjectiveFlowHead, TrackingFlowHead
from flow3r_jax.models.config import ModelConfig
from flow3r_jax.models.decoder import Decoder
from flow3r_jax.models.encoder import Encoder
from flow3r_jax.models.flow_head import FactoredFlowHead
from flow3r_jax.models.heads import CameraHead, HeadDecoder, PixelShuffleHead
from flow3r_jax.models.inputs import check_image_shape, check_images, check_pairs

__all__ = ["Flow3r", "IMAGENET_MEAN", "IMAGENET_STD", "check_image_shape"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Flow3r(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        with nnx.use_eager_sharding(False):  # logical axes are metadata; sharding happens in train/
            self.encoder = Encoder(cfg, rngs=rngs)
            self.decoder = Decoder(cfg, rngs=rngs)
            self.point_decoder = HeadDecoder(cfg, cfg.point_out_dim, rngs=rngs)
            self.conf_decoder = HeadDecoder(cfg, cfg.point_out_dim, rngs=rngs)
            self.camera_decoder = HeadDecoder(cfg, cfg.camera_out_dim, rngs=rngs)
            self.point_head = PixelShuffleHead(cfg, cfg.point_out_dim, 3, rngs=rngs)
            self.conf_head = PixelShuffleHead(cfg, cfg.point_out_dim, 1, rngs=rngs)
            self.camera_head = CameraHead(cfg.camera_out_dim, rngs=rngs)
            if cfg.flow_head == "factored":
                self.flow_head = FactoredFlowHead(cfg, rngs=rngs)
            elif cfg.flow_head == "tracking":
                self.flow_head = TrackingFlowHead(cfg, rngs=rngs)
            else:
                self.flow_head = ProjectiveFlowHead(cfg)

    def __call__(self, images: jax.Array, pairs: jax.Array | None = None) -> dict[str, jax.Array]:
        cfg = self.cfg
        check_images(images, cfg.patch_size)  # values only when concrete (see models/inputs.py)
        if not hasattr(images, "dtype"):
            images = jnp.asarray(images)
        B, N, H, W, _ = images.shape
        if pairs is not None:
            pairs = check_pairs(pairs, B, N)  # before the forward: a bad call fails at once
        h, w = H // cfg.patch_size, W // cfg.patch_size
        R = cfg.dec_registers

        mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
        std = jnp.asarray(IMAGENET_STD, jnp.float32)
        x = (images.astype(jnp.float32) - mean) / std
        tokens = self.encoder(x.reshape(B * N, H, W, 3))
        hidden, pos = self.decoder(tokens, N, h, w)

        point_hidden, point_levels = self.point_decoder(hidden, pos, intermediates=True)
        conf_hidden = self.conf_decoder(hidden, pos)
        camera_hidden, camera_levels = self.camera_decoder(hidden, pos, intermediates=True)

        raw = self.point_head(point_hidden[:, R:], h, w).reshape(B, N, H, W, 3)
        z = jnp.exp(raw[..., 2:])
        local_points = jnp.concatenate([raw[..., :2] * z, z], axis=-1)
        conf = self.conf_head(conf_hidden[:, R:], h, w).reshape(B, N, H, W, 1)
        camera_poses = self.camera_head(camera_hidden[:, R:]).reshape(B, N, 4, 4)
        points = transform_points(camera_poses, local_points)

        out = dict(points=points, local_points=local_points, conf=conf, camera_poses=camera_poses)
        if pairs is not None:
            if cfg.flow_head == "projective":
                out["flow"] = self.flow_head(local_points, camera_poses, pairs)
            else:
                out["flow"] = self.flow_head(point_levels, camera_levels, pairs, R, (H, W))
        return out
