"""FlowMap's losses: pose-induced flow against the given flow, point tracks, and the photometric
consistency mask that weights the flow loss.

All distances use FlowMap's aspect-corrected normalised coordinates (official
`loss/mapping/mapping.py`): image coordinates (x / W, y / H) scaled by (W, H) / sqrt(H W),
i.e. pixel displacements divided by sqrt(H W). The mapping is Huber(|d|, delta) / delta
(`mapping_huber.py`, delta 0.01), so its gradient in the linear region is that of |d|.

- Flow loss (`loss_flow.py`): for every consecutive pair, the flow induced by the depth, the
  poses and the intrinsics (forward i -> i + 1 on frame i's grid, backward i + 1 -> i on frame
  i + 1's grid, every pixel) against the given flow; sum(mapping * mask) / sum(mask) over both
  directions together.
- Track loss (`loss_tracking.py`, `projection.compute_track_flow`): each track point is lifted
  to 3D in every frame where it is (bilinear, border padding), moved into every frame (all
  ordered pairs, including a frame with itself) and projected; pairs count where the track is
  visible in both frames and both positions lie inside the image; mean of the mapping.
- Photometric mask (`flow_predictor.compute_consistency_mask`): (1 - max_c |I_i(x) -
  I_j(x + f(x))|) ** 8 with I_j sampled bilinearly with zero padding; values in [0, 1].
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from flow3r_jax.geometry import (
    bilinear_sample,
    flow_from_camera_points,
    flow_to_coords,
    invert_rigid,
    project_points,
    relative_pose,
    transform_points,
)
from flow3r_jax.geometry.linalg import safe_norm

__all__ = ["huber_mapping", "pose_induced_flows", "flow_loss", "track_loss", "photometric_mask"]


def huber_mapping(delta_px: Float[Array, "*b 2"], height: int, width: int, delta: float = 0.01) -> Float[Array, "*b"]:
    """Huber(|d|, delta) / delta of a pixel displacement d in aspect-corrected normalised units."""
    n = safe_norm(delta_px / math.sqrt(height * width), axis=-1)
    return jnp.where(n < delta, 0.5 * n * n, delta * (n - 0.5 * delta)) / delta


def pose_induced_flows(
    points: Float[Array, "F H W 3"], rel: Float[Array, "F-1 4 4"], K: Float[Array, "3 3"]
) -> tuple[Float[Array, "F-1 H W 2"], Float[Array, "F-1 H W 2"]]:
    """(forward, backward) flow of every pixel induced by camera-frame points and the relative
    poses rel[i] = inv(P_i) P_{i+1} (camera i + 1 -> camera i), shared intrinsics K."""
    fw, _ = flow_from_camera_points(transform_points(invert_rigid(rel), points[:-1]), K)
    bw, _ = flow_from_camera_points(transform_points(rel, points[1:]), K)
    return fw, bw


def flow_loss(
    pred_fw: Float[Array, "F-1 H W 2"],
    pred_bw: Float[Array, "F-1 H W 2"],
    flow_fw: Float[Array, "F-1 H W 2"],
    flow_bw: Float[Array, "F-1 H W 2"],
    mask_fw: Float[Array, "F-1 H W"],
    mask_bw: Float[Array, "F-1 H W"],
    delta: float = 0.01,
) -> Float[Array, ""]:
    """Masked mean of the Huber mapping over both directions (unweighted; FlowMap x 1000)."""
    H, W = pred_fw.shape[-3:-1]
    total = jnp.sum(huber_mapping(pred_fw - flow_fw, H, W, delta) * mask_fw) + jnp.sum(huber_mapping(pred_bw - flow_bw, H, W, delta) * mask_bw)
    count = jnp.sum(mask_fw) + jnp.sum(mask_bw)
    return total / jnp.where(count > 0, count, 1.0)


def _inside(xy, H, W):
    return (xy[..., 0] >= 0) & (xy[..., 0] < W) & (xy[..., 1] >= 0) & (xy[..., 1] < H)


def track_loss(
    points: Float[Array, "F H W 3"],
    poses: Float[Array, "F 4 4"],
    K: Float[Array, "3 3"],
    track_xy: Float[Array, "F M 2"],
    track_visible: Bool[Array, "F M"],
    delta: float = 0.01,
) -> Float[Array, ""]:
    """Mean Huber mapping of track reprojections over all ordered frame pairs (unweighted;
    FlowMap x 100). Tracks are pixel positions per frame with a visibility flag; several track
    segments are expressed by marking each track invisible outside its segment."""
    F, H, W, _ = points.shape
    xyz = bilinear_sample(points, track_xy, padding="border")  # (F, M, 3)
    rel = relative_pose(poses[None, :], poses[:, None])  # [s, t] = inv(P_t) P_s: camera s -> t
    moved = transform_points(rel, jnp.broadcast_to(xyz[:, None], (F, F) + xyz.shape[1:]))  # (s, t, M, 3)
    target, _ = project_points(moved, jnp.broadcast_to(K, (F, F, 3, 3)))
    visible = track_visible[:, None] & track_visible[None, :]
    visible = visible & _inside(track_xy, H, W)[:, None] & _inside(target, H, W)
    err = huber_mapping(target - track_xy[None], H, W, delta)
    count = jnp.sum(visible)
    return jnp.sum(jnp.where(visible, err, 0.0)) / jnp.maximum(count, 1)


def photometric_mask(images: Float[Array, "F H W 3"], flow: Float[Array, "F-1 H W 2"], backward: bool = False) -> Float[Array, "F-1 H W"]:
    """FlowMap's colour-consistency weights of consecutive flows: forward (i -> i + 1, on
    frame i) by default, backward (i + 1 -> i, on frame i + 1) with `backward=True`."""
    src, dst = (images[1:], images[:-1]) if backward else (images[:-1], images[1:])
    warped = bilinear_sample(dst, flow_to_coords(flow), padding="zeros")
    deltas = jnp.max(jnp.abs(src - warped), axis=-1)
    return (1.0 - deltas) ** 8
