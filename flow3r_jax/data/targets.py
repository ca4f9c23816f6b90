"""Device-side batch preparation: model inputs and flow targets (jittable, runs after transfer).

`prepare_batch(batch)` takes the host batch of `sample.make_sample` fields (global jax.Arrays) and

- turns uint8 images into float32 in [0, 1];
- derives the flow of labeled pairs whose flow was not stored, from depth, intrinsics and
  poses with the 5% relative depth check (`geometry.gt_flow_with_depth_check`);
- converts the pixel flow to the official target, the absolute position in frame j in the
  official NDC convention (`geometry.flow_to_ndc_coords`). This is the only place where that
  conversion happens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flow3r_jax.geometry import flow_to_ndc_coords, gt_flow_with_depth_check

__all__ = ["derive_flows", "prepare_batch"]


def _gather(x, idx):
    return jax.vmap(lambda a, i: a[i])(x, idx)


def derive_flows(batch: dict) -> tuple[jax.Array, jax.Array]:
    """(flow px (B, S, H, W, 2), covisible (B, S, H, W)): stored values, or derived from depth
    and poses where a labeled pair has no stored flow."""
    i, j = batch["pairs"][..., 0], batch["pairs"][..., 1]
    depth = jnp.where(batch["valid"], batch["depth"], 0.0)
    flow_d, covis_d = jax.vmap(jax.vmap(gt_flow_with_depth_check))(
        _gather(depth, i), _gather(batch["intrinsics"], i), _gather(batch["poses"], i),
        _gather(depth, j), _gather(batch["intrinsics"], j), _gather(batch["poses"], j),
    )
    need = batch["pair_valid"] & ~batch["flow_stored"] & batch["labeled"][:, None]
    flow = jnp.where(need[..., None, None, None], flow_d, batch["flow"])
    covis = jnp.where(need[..., None, None], covis_d, batch["covisible"]) & batch["pair_valid"][..., None, None]
    return flow, covis


def prepare_batch(batch: dict) -> dict:
    """Host batch -> model inputs and targets (see the module docstring)."""
    flow, covis = derive_flows(batch)
    out = dict(batch)
    out["images"] = batch["images"].astype(jnp.float32) / 255.0
    out["flow"] = flow
    out["covisible"] = covis
    out["flow_target"] = flow_to_ndc_coords(flow)
    return out
