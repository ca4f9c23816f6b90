"""Flow3r training losses: pure functions of model outputs and prepared batches.

`flow3r_loss(out, batch, LossConfig())` is what the train step calls; each term is also a public
function (see `total` for the list of what follows the official loss and what differs):

- `normalize`: `gt_local_points`, `mean_point_norm`, `normalize_gt`, `normalize_pred`
- `scale`: `roe_indices`, `roe_resample`, `optimal_scale` (S*)
- `point`: `point_weights`, `point_residual`, `point_loss`, `masked_mean`
- `conf`: `bce_with_logits`, `conf_loss`
- `normal`: `normal_angle`, `smooth_l1`, `normal_loss`
- `camera`: `huber`, `pairwise_relative_poses`, `camera_loss`
- `flow`: `charbonnier`, `charbonnier_squared`, `flow_loss`
- `guard`: `finite_or_zero`
- `consistency` (DF-Net's depth/pose-flow consistency, an option): `cross_consistency`,
  `consistency_inputs`, `consistency_masks`, `dynamic_regions`, `precision_recall`, ...
"""

from flow3r_jax.losses.camera import camera_loss, huber, pairwise_relative_poses
from flow3r_jax.losses.conf import bce_with_logits, conf_loss
from flow3r_jax.losses.consistency import (
    branch_mask,
    consistency_inputs,
    consistency_masks,
    cross_consistency,
    disagreement_mask,
    dynamic_regions,
    fb_occluded,
    frame_dynamic,
    in_range,
    pair_rigid_flows,
    pinhole_from_points,
    precision_recall,
    reverse_slots,
    sample_backward,
)
from flow3r_jax.losses.flow import charbonnier, charbonnier_squared, flow_loss
from flow3r_jax.losses.guard import finite_or_zero
from flow3r_jax.losses.normal import normal_angle, normal_loss, smooth_l1
from flow3r_jax.losses.normalize import gt_local_points, mean_point_norm, normalize_gt, normalize_pred
from flow3r_jax.losses.point import masked_mean, point_loss, point_residual, point_weights
from flow3r_jax.losses.scale import optimal_scale, roe_indices, roe_resample
from flow3r_jax.losses.total import LossConfig, flow3r_loss, geometry_terms

__all__ = [
    "LossConfig",
    "flow3r_loss",
    "geometry_terms",
    "gt_local_points",
    "mean_point_norm",
    "normalize_gt",
    "normalize_pred",
    "roe_indices",
    "roe_resample",
    "optimal_scale",
    "point_weights",
    "point_residual",
    "point_loss",
    "masked_mean",
    "bce_with_logits",
    "conf_loss",
    "normal_angle",
    "smooth_l1",
    "normal_loss",
    "huber",
    "pairwise_relative_poses",
    "camera_loss",
    "charbonnier",
    "charbonnier_squared",
    "flow_loss",
    "finite_or_zero",
    "in_range",
    "sample_backward",
    "fb_occluded",
    "branch_mask",
    "pinhole_from_points",
    "pair_rigid_flows",
    "reverse_slots",
    "consistency_masks",
    "consistency_inputs",
    "cross_consistency",
    "disagreement_mask",
    "frame_dynamic",
    "dynamic_regions",
    "precision_recall",
]
