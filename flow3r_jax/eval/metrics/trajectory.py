"""Trajectory metrics (Sintel, TUM RGB-D, ScanNet v2): ATE, RPE-trans, RPE-rot.

Protocol of π³'s `relpose/eval_dist.py` -> `relpose/evo_utils.py: eval_metrics`, which calls evo:
- ATE = `evo.main_ape.ape(ref, est, pose_relation=translation_part, align=True,
  correct_scale=True).stats["rmse"]`: the estimated camera centres are aligned to the ground
  truth by Sim(3) Umeyama (scale corrected), then the RMSE of the centre distances.
- RPE = `evo.main_rpe.rpe(..., align=True, correct_scale=True, delta=1, delta_unit=frames,
  all_pairs=True)`, `.stats["rmse"]` (RMSE, not mean), for `translation_part` and
  `rotation_angle_deg`. For each pair (i, i + delta) evo forms the relative poses
  Q = inv(G_i) G_j (ground truth) and P = inv(A_i) A_j (aligned estimate) and the error
  E = inv(Q) P; RPE-trans is |translation of E| (world units of the ground truth), RPE-rot the
  rotation angle of E in degrees. With delta = 1 frame, `all_pairs` gives every consecutive pair.
- Dataset numbers are plain means over sequences (`average_metrics`).
"""

from __future__ import annotations

import jax
import numpy as np
from scipy.spatial.transform import Rotation

from flow3r_jax.geometry import align_trajectories, geodesic_angle

__all__ = ["trajectory_metrics"]


def _as_tum_rotation(poses: np.ndarray) -> np.ndarray:
    """The poses as π³ hands them to evo: rotations go through a scipy quaternion (TUM format)
    and back, which projects a slightly non-orthonormal predicted rotation onto SO(3)."""
    out = poses.copy()
    out[:, :3, :3] = Rotation.from_matrix(poses[:, :3, :3]).as_matrix()
    out[:, 3] = (0.0, 0.0, 0.0, 1.0)
    return out


def trajectory_metrics(poses, gt_poses, delta: int = 1) -> dict[str, float]:
    """ATE, RPE-trans and RPE-rot of camera-to-world poses (N, 4, 4) against ground truth (N, 4, 4).

    Follows π³'s `relpose/evo_utils.py: eval_metrics` (evo `ape` / `rpe` with `align=True,
    correct_scale=True`, `delta=1` frame, `all_pairs=True`, RMSE statistics); see the module
    docstring. Frames are matched by index (π³ copies the ground-truth timestamps onto the
    prediction, so evo's timestamp association pairs them one to one).

    Returns {"ate", "rpe_trans", "rpe_rot" (degrees), "scale" (the Sim(3) scale applied to the
    estimate)}.

    Differences from π³'s code, none of which changes a number beyond round-off: the alignment
    is computed once (evo's `ape` aligns the estimate in place and each `rpe` call re-aligns the
    already aligned trajectory, an identity up to round-off); the rotation angle is the atan2
    geodesic angle (`geometry.geodesic_angle`) rather than scipy's rotation-vector norm. Where
    evo raises on a degenerate trajectory (centres of rank < 2), Umeyama here returns one of the
    equally good alignments.
    """
    P = np.asarray(poses, np.float64)
    G = np.asarray(gt_poses, np.float64)
    if P.ndim != 3 or P.shape[1:] != (4, 4) or P.shape != G.shape:
        raise ValueError(f"trajectory_metrics: poses {P.shape} and gt_poses {G.shape} must both be (N, 4, 4)")
    n = P.shape[0]
    if n < 3 or delta < 1 or delta >= n:
        raise ValueError(f"trajectory_metrics: need at least 3 poses and 1 <= delta < N (N={n}, delta={delta})")
    P, G = _as_tum_rotation(P), _as_tum_rotation(G)
    with jax.enable_x64(True):
        S, aligned = align_trajectories(P, G, with_scale=True)
        S, A = np.asarray(S), np.asarray(aligned)

    ate = float(np.sqrt(np.mean(np.sum((A[:, :3, 3] - G[:, :3, 3]) ** 2, axis=-1))))

    i, j = np.arange(n - delta), np.arange(delta, n)
    Q = np.linalg.inv(G[i]) @ G[j]
    Prel = np.linalg.inv(A[i]) @ A[j]
    E = np.linalg.inv(Q) @ Prel
    trans = np.linalg.norm(E[:, :3, 3], axis=-1)
    with jax.enable_x64(True):
        rot = np.degrees(np.asarray(geodesic_angle(E[:, :3, :3])))
    return dict(
        ate=ate,
        rpe_trans=float(np.sqrt(np.mean(trans**2))),
        rpe_rot=float(np.sqrt(np.mean(rot**2))),
        scale=float(np.cbrt(np.linalg.det(S[:3, :3]))),
    )
