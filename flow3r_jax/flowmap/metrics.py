"""Scores of an estimated camera trajectory and focal length against ground truth.

Protocols (used by the FlowMap tests and `benchmarks/flowmap_accuracy.py`):
- ATE: camera centres aligned to the ground truth by Sim(3) Umeyama (`geometry.align_trajectories`),
  RMS of the remaining centre errors; `ate_rel` divides by the ground truth's extent, the RMS
  distance of its centres from their mean (a trajectory collapsed to a point scores 1.0).
- Rotation error: the estimated orientations are first rotated by the single rotation that best
  aligns them with the ground truth's (chordal least squares, the polar factor of
  sum_k R_gt,k R_est,k^T), then the mean geodesic angle in degrees. (Aligning orientations by
  the centres' Sim(3) would leave the roll about a straight path undetermined.)
- RPE-rot: mean geodesic angle of consecutive relative rotations, degrees (alignment-free).
- Focal error: |f - f_gt| / f_gt.
"""

from __future__ import annotations

import numpy as np
import jax.numpy as jnp

from flow3r_jax.geometry import align_trajectories, geodesic_angle
from flow3r_jax.geometry.linalg import polar_rotation

__all__ = ["trajectory_errors", "focal_error"]


def trajectory_errors(poses, gt_poses) -> dict[str, float]:
    """ate, ate_rel, rot_err_deg, rpe_rot_deg of camera-to-world poses (N, 4, 4) vs ground truth."""
    est = jnp.asarray(np.asarray(poses, np.float32))  # float32 like the optimiser (x64 is off by default)
    gt = jnp.asarray(gt_poses, est.dtype)
    _, aligned = align_trajectories(est, gt)
    err = np.linalg.norm(np.asarray(aligned[:, :3, 3] - gt[:, :3, 3]), axis=-1)
    ate = float(np.sqrt(np.mean(err**2)))
    centres = np.asarray(gt[:, :3, 3])
    extent = float(np.sqrt(np.mean(np.sum((centres - centres.mean(0)) ** 2, axis=-1))))
    Ra = polar_rotation(jnp.einsum("nij,nkj->ik", gt[:, :3, :3], est[:, :3, :3]))
    rot = np.degrees(np.asarray(geodesic_angle(Ra @ est[:, :3, :3], gt[:, :3, :3])))
    rel_e = jnp.swapaxes(est[:-1, :3, :3], -1, -2) @ est[1:, :3, :3]
    rel_g = jnp.swapaxes(gt[:-1, :3, :3], -1, -2) @ gt[1:, :3, :3]
    rpe = np.degrees(np.asarray(geodesic_angle(rel_e, rel_g)))
    return dict(
        ate=ate,
        ate_rel=ate / extent if extent > 0 else float("nan"),
        rot_err_deg=float(rot.mean()),
        rpe_rot_deg=float(rpe.mean()),
    )


def focal_error(focal, gt_focal) -> float:
    """Relative focal-length error |f - f_gt| / f_gt (any common unit)."""
    return float(abs(float(focal) - float(gt_focal)) / float(gt_focal))
