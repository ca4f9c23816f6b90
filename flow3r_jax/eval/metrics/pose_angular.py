"""Angular relative-pose metrics (RealEstate10K, CO3Dv2): RRA / RTA at thresholds and AUC.

Protocol of π³'s `relpose/eval_angle.py` with `relpose/metric.py` (itself from VGGT's
`evaluation/test_co3d.py`, which took the error definitions from PoseDiffusion):
- 10 frames per sequence (the saved seed-42 frame lists); every unordered pair i < j in
  `torch.combinations` order (= `np.triu_indices(N, 1)`).
- Poses as world-to-camera T = inv(c2w); relative pose of a pair T_j inv(T_i) (camera i's frame
  to camera j's), for prediction and ground truth; this is independent of either world frame.
- Rotation error: the angle between the two relative rotations, from their quaternions,
  arccos(1 - 2 clamp(1 - <q_gt, q_pred>^2, 1e-15)), degrees.
- Translation error: the angle between the two relative translations as undirected lines,
  arccos(sqrt(1 - clamp(1 - <t_gt, t_pred>^2, 1e-15))) with t / (|t| + 1e-15), in [0, 90]
  degrees, then min(e, |180 - e|) (a no-op after the squared cosine, kept for fidelity); a NaN
  or infinite error becomes 1e6 radians (PoseDiffusion's `default_err`).
- The errors of all pairs of all sequences of a dataset are pooled; RRA@tau = 100 mean(r < tau),
  RTA@tau = 100 mean(t < tau), AUC@tau = 100 * `pose_auc(r, t, tau)` for tau in (5, 15, 30).
"""

from __future__ import annotations

import jax
import numpy as np

from flow3r_jax.geometry import matrix_to_quaternion

__all__ = ["relative_pose_errors", "pose_auc", "angular_pose_metrics"]


def relative_pose_errors(poses, gt_poses) -> tuple[np.ndarray, np.ndarray]:
    """(rotation errors, translation-direction errors), degrees, over the pairs i < j.

    `poses`, `gt_poses`: (N, 4, 4) camera-to-world. Returns two arrays of N (N - 1) / 2 errors in
    the order (0, 1), (0, 2), ..., (1, 2), ... Follows π³'s `relpose/metric.py:
    se3_to_relative_pose_error` exactly (see the module docstring), computed in float64 (π³ runs
    it under a float64 autocast). Difference from VGGT's `test_co3d.py`: VGGT forms
    inv(T_i) T_j from world-to-camera poses, which depends on the world frame, and therefore
    re-expresses the ground truth in the first camera's frame first; π³'s T_j inv(T_i), used
    here, needs no such step.
    """
    P = np.asarray(poses, np.float64)
    G = np.asarray(gt_poses, np.float64)
    if P.ndim != 3 or P.shape[1:] != (4, 4) or P.shape != G.shape or P.shape[0] < 2:
        raise ValueError(f"relative_pose_errors: poses {P.shape} and gt_poses {G.shape} must both be (N>=2, 4, 4)")
    i, j = np.triu_indices(P.shape[0], 1)
    # w2c_j @ inv(w2c_i) = inv(c2w_j) @ c2w_i.
    rel_pred = np.linalg.inv(P[j]) @ P[i]
    rel_gt = np.linalg.inv(G[j]) @ G[i]

    with jax.enable_x64(True):
        q_pred = np.asarray(matrix_to_quaternion(rel_pred[:, :3, :3]))
        q_gt = np.asarray(matrix_to_quaternion(rel_gt[:, :3, :3]))
    eps = 1e-15
    loss_q = np.maximum(1.0 - np.sum(q_pred * q_gt, axis=-1) ** 2, eps)
    rot_err = np.arccos(1.0 - 2.0 * loss_q) * 180.0 / np.pi

    t_pred, t_gt = rel_pred[:, :3, 3], rel_gt[:, :3, 3]
    t_pred = t_pred / (np.linalg.norm(t_pred, axis=-1, keepdims=True) + eps)
    t_gt = t_gt / (np.linalg.norm(t_gt, axis=-1, keepdims=True) + eps)
    loss_t = np.maximum(1.0 - np.sum(t_pred * t_gt, axis=-1) ** 2, eps)
    with np.errstate(invalid="ignore"):
        err_t = np.arccos(np.sqrt(1.0 - loss_t))
    err_t = np.where(np.isfinite(err_t), err_t, 1e6)
    trans_err = err_t * 180.0 / np.pi
    trans_err = np.minimum(trans_err, np.abs(180.0 - trans_err))
    return rot_err, trans_err


def pose_auc(rot_err, trans_err, max_threshold: int = 30) -> float:
    """AUC@max_threshold as a fraction in [0, 1]: π³'s / VGGT's `calculate_auc_np`.

    e = max(rot_err, trans_err) per pair; h = np.histogram(e, bins=np.arange(max_threshold + 1))
    (unit bins [0, 1), ..., [max - 1, max], the last closed), normalised by the number of pairs;
    AUC = mean(cumsum(h)), i.e. the mean over k = 1..max of the fraction of pairs with e < k
    (e <= max for the last), a Riemann sum of the accuracy curve. Errors above max_threshold (and
    NaN) count as failures at every threshold.
    """
    r = np.asarray(rot_err, np.float64).reshape(-1)
    t = np.asarray(trans_err, np.float64).reshape(-1)
    if r.shape != t.shape or r.size == 0:
        raise ValueError(f"pose_auc: need equally many rotation and translation errors, got {r.shape} and {t.shape}")
    e = np.max(np.stack([r, t], axis=1), axis=1)
    hist, _ = np.histogram(e, bins=np.arange(max_threshold + 1))
    return float(np.mean(np.cumsum(hist.astype(np.float64) / float(e.size))))


def angular_pose_metrics(rot_err, trans_err, thresholds=(5, 15, 30)) -> dict[str, float]:
    """{"rra@k", "rta@k", "auc@k"} in percent for each k in `thresholds`, from the pooled
    pair errors of a dataset (π³'s `relpose/eval_angle.py`, step 9: Racc / Tacc / Auc x 100),
    plus "pairs", the number of pairs."""
    r = np.asarray(rot_err, np.float64).reshape(-1)
    t = np.asarray(trans_err, np.float64).reshape(-1)
    out: dict[str, float] = {}
    for k in thresholds:
        out[f"rra@{k}"] = float(np.mean(r < k) * 100.0)
        out[f"rta@{k}"] = float(np.mean(t < k) * 100.0)
        out[f"auc@{k}"] = pose_auc(r, t, max_threshold=int(k)) * 100.0
    out["pairs"] = int(r.size)
    return out
