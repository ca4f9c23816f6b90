"""Evaluation metrics of the field's benchmark protocols (SPEC §5), one module per family.

Each protocol follows π³'s released evaluation code (`yyfz/Pi3`, branch `evaluation`) so that a
checkpoint scored here gets the numbers the papers report; every function's docstring names the
protocol, the file of π³'s code it follows and where it deliberately differs.

- `trajectory`: ATE, RPE-trans, RPE-rot (Sim(3) Umeyama, as evo computes them).
- `pose_angular`: relative rotation / translation-direction errors over frame pairs, RRA / RTA
  at thresholds, AUC (RealEstate10K, CO3Dv2).
- `depth`: AbsRel and delta < 1.25^k with median, L1-scale, scale & shift (LAD) or no alignment.
- `pointmap`: Umeyama + ICP, then Accuracy / Completeness / Normal Consistency, Chamfer, F-score.
- `flow`: end-point error and the fraction of pixels within 1 / 3 / 5 px.
- `aggregate`: dataset-level averages (per-sequence means, pixel-weighted means).

Units: angles in degrees; RRA / RTA / AUC and the flow "within N px" fractions in percent (as
π³ and Flow3r print them); the depth delta accuracies as fractions in [0, 1] (as π³'s CSVs).
Poses are camera-to-world 4x4 with OpenCV axes (the project convention). Everything runs on the
host in float64 (NumPy / SciPy, and `flow3r_jax.geometry` under `jax.enable_x64`), except the
scale & shift optimisation and the flow error sums, which are jitted.
"""

from flow3r_jax.eval.metrics.aggregate import average_metrics
from flow3r_jax.eval.metrics.depth import (
    DEPTH_PROTOCOLS,
    align_depth,
    depth_l1_scale,
    depth_median_scale,
    depth_metrics,
    depth_scale_shift_lad,
    resize_depth,
)
from flow3r_jax.eval.metrics.flow import flow_error_sums, flow_metrics
from flow3r_jax.eval.metrics.pointmap import (
    accuracy_completeness,
    estimate_normals,
    fscore,
    icp_point_to_point,
    pointmap_metrics,
    umeyama_sim3,
)
from flow3r_jax.eval.metrics.pose_angular import angular_pose_metrics, pose_auc, relative_pose_errors
from flow3r_jax.eval.metrics.trajectory import trajectory_metrics

__all__ = [
    "average_metrics",
    "DEPTH_PROTOCOLS",
    "align_depth",
    "depth_l1_scale",
    "depth_median_scale",
    "depth_metrics",
    "depth_scale_shift_lad",
    "resize_depth",
    "flow_error_sums",
    "flow_metrics",
    "accuracy_completeness",
    "estimate_normals",
    "fscore",
    "icp_point_to_point",
    "pointmap_metrics",
    "umeyama_sim3",
    "angular_pose_metrics",
    "pose_auc",
    "relative_pose_errors",
    "trajectory_metrics",
]
