"""Scale normalisation of the ground truth and of the prediction (the official `prepare_gt` and
`normalize_pred`).

Both sides are divided by a mean point distance over the valid pixels of each sample, all N frames
together: sum of norms / (count + 1e-8).

- Ground truth: the distance is measured in frame 0's camera coordinates (the official moves the
  world into camera 0 first); poses become inv(T_0) T_n with translations divided by the factor.
  Local points are divided by the same factor. The official re-derives them as inv(normalised
  pose) applied to the normalised world points, which is the same thing (a rigid change of world
  frame leaves local points unchanged); we take this shortcut.
- Prediction: local points and pose translations are divided by the mean norm of the predicted
  local points.

A sample without any valid pixel (a flow-only sample) keeps factor 1: the official skips such
samples for the ground truth and divides the prediction by ~0 there (values it never uses).
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from flow3r_jax.geometry import invert_rigid, transform_points, unproject_depth

__all__ = ["gt_local_points", "mean_point_norm", "normalize_gt", "normalize_pred"]


def gt_local_points(
    depth: Float[Array, "*batch H W"], intrinsics: Float[Array, "*batch 3 3"], labeled: Bool[Array, "*batch"]
) -> Float[Array, "*batch H W 3"]:
    """Camera-frame GT points at pixel centres. Unlabeled frames (intrinsics all zero) use the
    identity instead, so their (unused) points stay finite."""
    K = jnp.where(labeled[..., None, None], intrinsics, jnp.eye(3, dtype=intrinsics.dtype))
    return unproject_depth(depth, K)


def _norm(x):
    """|x| with a zero gradient at 0 that, unlike `geometry.safe_norm`, keeps NaN (so a NaN
    prediction makes the term NaN and `guard` zeroes it instead of the NaN passing unseen)."""
    sq = jnp.sum(x * x, axis=-1)
    zero = sq == 0
    return jnp.where(zero, 0.0, jnp.sqrt(jnp.where(zero, 1.0, sq)))


def mean_point_norm(points: Float[Array, "*batch N H W 3"], valid: Bool[Array, "*batch N H W"]) -> Float[Array, "*batch"]:
    """sum of |x| over valid pixels / (count + 1e-8) per sample; 1 where no pixel is valid."""
    norms = jnp.where(valid, _norm(jnp.where(valid[..., None], points, 0.0)), 0.0)
    count = jnp.sum(valid, axis=(-3, -2, -1)).astype(points.dtype)
    factor = jnp.sum(norms, axis=(-3, -2, -1)) / (count + 1e-8)
    return jnp.where(count > 0, factor, jnp.ones_like(factor))


def _divide_translation(poses, factor):
    return poses.at[..., :3, 3].set(poses[..., :3, 3] / factor[..., None, None])


def normalize_gt(
    local_points: Float[Array, "*batch N H W 3"], poses: Float[Array, "*batch N 4 4"], valid: Bool[Array, "*batch N H W"]
) -> tuple[Float[Array, "*batch N H W 3"], Float[Array, "*batch N 4 4"], Float[Array, "*batch"]]:
    """(local points / f, frame-0-relative poses with translations / f, f), f the mean norm of
    the valid points expressed in camera 0's frame."""
    to_first = invert_rigid(poses[..., :1, :, :]) @ poses
    factor = mean_point_norm(transform_points(to_first, local_points), valid)
    return local_points / factor[..., None, None, None, None], _divide_translation(to_first, factor), factor


def normalize_pred(
    local_points: Float[Array, "*batch N H W 3"], poses: Float[Array, "*batch N 4 4"], valid: Bool[Array, "*batch N H W"]
) -> tuple[Float[Array, "*batch N H W 3"], Float[Array, "*batch N 4 4"], Float[Array, "*batch"]]:
    """(local points / f, poses with translations / f, f), f the mean norm of the predicted
    local points over the valid pixels."""
    factor = mean_point_norm(local_points, valid)
    return local_points / factor[..., None, None, None, None], _divide_translation(poses, factor), factor
