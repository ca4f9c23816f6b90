"""Camera loss (the official `CameraLosswMask`), on labeled samples only.

Over all ordered pairs i != j of a sample's frames, the relative poses inv(T_i) T_j of the
normalised GT and of the normalised prediction, whose translations are multiplied by S*, give
trans_weight (100) x Huber(delta 0.1) on the translation, averaged over the pairs of all selected
samples and the 3 coordinates, plus the mean rotation angle of R_pred^T R_gt.

The angle is `geometry.geodesic_angle` (atan2 form), not the official
acos(clamp((tr - 1) / 2, -1 + 1e-6, 1 - 1e-6)): the two agree except below ~0.1 degree, where
the official is floored at acos(1 - 1e-6) = 1.4e-3 rad with zero gradient, while ours goes to 0
with a useful gradient.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from flow3r_jax.geometry import geodesic_angle, relative_pose

__all__ = ["huber", "pairwise_relative_poses", "camera_loss"]


def huber(x: Float[Array, "*shape"], delta: float = 0.1) -> Float[Array, "*shape"]:
    """0.5 x^2 where |x| < delta, else delta (|x| - delta / 2) (PyTorch's `huber_loss`)."""
    a = jnp.abs(x)
    return jnp.where(a < delta, 0.5 * x * x, delta * (a - 0.5 * delta))


def pairwise_relative_poses(poses: Float[Array, "*batch N 4 4"]) -> Float[Array, "*batch N N 4 4"]:
    """rel[..., i, j] = inv(T_i) T_j."""
    return relative_pose(poses[..., :, None, :, :], poses[..., None, :, :, :])


def camera_loss(
    pred_poses: Float[Array, "*batch N 4 4"],
    gt_poses: Float[Array, "*batch N 4 4"],
    scale: Float[Array, "*batch"],
    select: Bool[Array, "*batch"],
    trans_weight: float = 100.0,
    delta: float = 0.1,
) -> tuple[Float[Array, ""], Float[Array, ""], Float[Array, ""]]:
    """(trans_weight * translation + rotation, translation Huber, rotation angle), each pooled
    over the off-diagonal pairs of the `select`ed samples; zeros when none (or N == 1)."""
    N = pred_poses.shape[-3]
    pred_poses = pred_poses.at[..., :3, 3].multiply(scale[..., None, None])
    rel_pred, rel_gt = pairwise_relative_poses(pred_poses), pairwise_relative_poses(gt_poses)
    pairs = select[..., None, None] & ~jnp.eye(N, dtype=bool)
    count = jnp.maximum(jnp.sum(pairs), 1).astype(pred_poses.dtype)
    trans = jnp.sum(jnp.where(pairs[..., None], huber(rel_pred[..., :3, 3] - rel_gt[..., :3, 3], delta), 0.0)) / (3 * count)
    rot = jnp.sum(jnp.where(pairs, geodesic_angle(rel_pred[..., :3, :3], rel_gt[..., :3, :3]), 0.0)) / count
    return trans_weight * trans + rot, trans, rot
