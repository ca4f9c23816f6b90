"""`FlowMapModel`: the learnable part of the per-scene optimisation (depth + correspondence
weights), as one Flax NNX module.

The optimiser works on its `nnx.State` (a plain pytree of arrays): `nnx.split` once outside the
compiled program and `nnx.merge` inside it, so the same program runs one scene or, under
`jax.vmap`, a stack of scenes whose states are stacked along a leading axis. The shared
per-scene focal of FlowMap's second stage is not part of the module (see `optimize.py`).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int

from flow3r_jax.flowmap.config import FlowMapConfig
from flow3r_jax.flowmap.correspondence import CorrespondenceMLP, sample_pair_features
from flow3r_jax.flowmap.depth_net import CELL, DepthCNN, ExplicitDepth, depth_from_raw

__all__ = ["FlowMapModel"]


class FlowMapModel(nnx.Module):
    """Depth (CNN or explicit) and correspondence weights of one scene of F frames (H, W)."""

    def __init__(self, cfg: FlowMapConfig, num_frames: int, image_shape: tuple[int, int], *, rngs: nnx.Rngs):
        self.mode = cfg.depth
        self.use_weights = cfg.use_correspondence_weights
        self.sensitivity = cfg.explicit_weight_sensitivity
        if cfg.depth == "cnn":
            self.depth_net = DepthCNN(cfg.cnn_widths, cfg.feature_dim, rngs=rngs)
            self.corr = CorrespondenceMLP(cfg.feature_dim, cfg.corr_hidden, cfg.weight_clip, rngs=rngs)
        else:
            self.explicit = ExplicitDepth(num_frames, image_shape, cfg.explicit_initial_depth)

    def depth(self, images: Float[Array, "F H W 3"], base_depth: Float[Array, "F H W"] | None = None):
        """(depth (F, H, W), features or None). In explicit mode a base depth is ignored here
        (it initialises the parameters instead, see `optimize.init_params`)."""
        if self.mode == "cnn":
            raw, features = self.depth_net(images)
            return depth_from_raw(raw, base_depth), features
        return self.explicit.depth.get_value(), None

    def weights(
        self, features: Float[Array, "F h w C"] | None, flow_bw: Float[Array, "F-1 H W 2"], idx: Int[Array, " P"] | slice
    ) -> Float[Array, "F-1 P"]:
        """Correspondence weights of consecutive pairs at the flattened pixels idx of frame
        i + 1 (pass `features[:2]` and `flow_bw[:1]` for pair (0, 1) alone); `slice(None)`
        selects every pixel."""
        P = flow_bw.shape[-3] * flow_bw.shape[-2] if isinstance(idx, slice) else idx.shape[0]
        shape = (flow_bw.shape[0], P)
        if not self.use_weights:
            return jnp.ones(shape, jnp.float32)
        if self.mode == "cnn":
            f_earlier, f_later = sample_pair_features(features, flow_bw, idx, CELL)
            return self.corr(f_earlier, f_later)
        w = self.explicit.weights.get_value()
        n = flow_bw.shape[0]
        w = w[:n].reshape(n, -1)[:, idx]
        return nnx.sigmoid(self.sensitivity * w)
