"""Exact flow, covisibility and dynamic masks for a frame pair (i, j), in JAX.

Each pixel of frame i saw a surface point p, stored in the hit primitive's local frame (so it
follows the primitive when it moves). Its position at time j is o2w_j p; projecting it with
camera j gives the flow, object motion included. Sky pixels (no surface) get the flow of a point
at infinity along their ray (rotation only); they are never covisible.

Covisibility is an exact visibility test, not a depth-map lookup: the point must land inside
frame j (x in [0, W], y in [0, H]), in front of camera j, and the ray cast from camera j towards
it must not hit anything closer (relative tolerance `rtol` on the distance), i.e. the pixel of j
the point lands on really shows that point. This handles occlusion by other objects, self
occlusion (the far side of a sphere or box) and grazing surfaces without depth-map resolution
artefacts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from data_pipelines.synthetic.render import camera_rays, intersect
from flow3r_jax.geometry import coords_to_flow, invert_rigid, pixel_grid, project_points, transform_points

__all__ = ["pair_flow", "RTOL"]

RTOL = 1e-3


@jax.jit
def pair_flow(prim_i, p_local_i, cam_i, cam_j, K, o2w_j, w2o_j, types, sizes, moved, rtol=RTOL):
    """Flow i -> j on i's grid.

    prim_i (H, W) int32 primitive seen by each pixel of frame i (-1: none); p_local_i (H, W, 3)
    the hit points in their primitive's frame at time i; cam_i, cam_j (4, 4) camera-to-world;
    K (3, 3) intrinsics (shared); o2w_j, w2o_j (N, 4, 4) the primitives' object-to-world and
    world-to-object transforms at time j; moved (N,) bool: primitive's pose differs between
    times i and j.

    Returns flow (H, W, 2) float32, covisible (H, W) bool, dynamic (H, W) bool (the pixel shows a
    primitive that moves between i and j).
    """
    H, W = prim_i.shape
    hit = prim_i >= 0
    pc = jnp.maximum(prim_i, 0)
    # World position at time j: o2w_j[prim] @ p, with each matrix entry gathered as its own (H, W)
    # array (a per-pixel (H, W, 4, 4) gather and product is ~4x slower on CPU: trailing axes of
    # 3-4 vectorise badly).
    p = [p_local_i[..., k] for k in range(3)]
    X = jnp.stack([sum(o2w_j[:, r, c][pc] * p[c] for c in range(3)) + o2w_j[:, r, 3][pc] for r in range(3)], axis=-1)
    # Sky pixels are points at infinity: the homogeneous point (ray direction, 0), so camera j's
    # translation does not apply to them.
    _, dirs_i = camera_rays(cam_i, K, pixel_grid(H, W, jnp.float32))
    world_to_cam_j = invert_rigid(cam_j)
    X_cam = transform_points(world_to_cam_j, jnp.where(hit[..., None], X, dirs_i))
    X_cam = X_cam - jnp.where(hit[..., None], 0.0, world_to_cam_j[:3, 3])
    xy, front = project_points(X_cam, K)
    flow = coords_to_flow(xy)
    inside = (xy[..., 0] >= 0) & (xy[..., 0] <= W) & (xy[..., 1] >= 0) & (xy[..., 1] <= H)
    # Visibility: cast from camera j towards X, scaled so that X sits at t = its z-depth.
    z = X_cam[..., 2]
    origin_j = cam_j[:3, 3]
    shadow_dirs = (X - origin_j) / jnp.where(front, z, 1.0)[..., None]
    t_hit, _, _ = intersect(origin_j, shadow_dirs, w2o_j, types, sizes)
    visible = t_hit >= z * (1.0 - rtol)
    covisible = hit & front & inside & visible
    dynamic = hit & moved[pc]
    return flow.astype(jnp.float32), covisible, dynamic
