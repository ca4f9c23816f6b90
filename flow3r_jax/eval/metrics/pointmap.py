"""Pointmap metrics (7-Scenes, NRGBD, DTU, ETH3D): Accuracy, Completeness, Normal Consistency.

Protocol of π³'s `mv_recon/eval.py` with `mv_recon/utils.py` (from CUT3R):
1. The predicted global pointmap (already resized to the ground truth's grid: π³ uses torch
   bilinear interpolation with antialias) is aligned to the ground-truth points on the valid
   pixels by Sim(3) Umeyama (`umeyama_sim3`).
2. Only valid pixels are kept; the prediction is refined by point-to-point ICP onto the ground
   truth, Open3D's `registration_icp(pred, gt, threshold, identity,
   TransformationEstimationPointToPoint())` with its default convergence criteria
   (`icp_point_to_point`); threshold 0.1 (metres), 100 for DTU (millimetres).
3. Normals of both clouds by Open3D's default `estimate_normals()` (`estimate_normals`).
4. Accuracy: distances from each predicted point to its nearest ground-truth point (mean and
   median); Completeness: from each ground-truth point to its nearest predicted point; Normal
   Consistency: |<n_gt, n_pred>| over those same nearest-neighbour pairs (NC1 from the accuracy
   pairs, NC2 from the completeness pairs, NC = (NC1 + NC2) / 2), mean and median.
5. Dataset numbers: plain means over sequences (`average_metrics`).

Open3D is not used: nearest neighbours come from `scipy.spatial.cKDTree` and the rigid and
similarity fits from `flow3r_jax.geometry.weighted_procrustes`.
"""

from __future__ import annotations

import jax
import numpy as np
from scipy.spatial import cKDTree

from flow3r_jax.geometry import weighted_procrustes

__all__ = ["umeyama_sim3", "icp_point_to_point", "estimate_normals", "accuracy_completeness", "fscore", "pointmap_metrics"]


def _apply(T: np.ndarray, x: np.ndarray) -> np.ndarray:
    return x @ T[:3, :3].T + T[:3, 3]


_procrustes = jax.jit(weighted_procrustes, static_argnames=("with_scale",))


def _fit(src: np.ndarray, dst: np.ndarray, with_scale: bool, weights: np.ndarray | None = None) -> np.ndarray:
    """weighted_procrustes in float64, jitted: one compilation per point count (ICP passes the
    whole cloud with 0/1 weights, so its iterations share one)."""
    with jax.enable_x64(True):
        w = None if weights is None else np.asarray(weights, np.float64)
        return np.asarray(_procrustes(np.asarray(src, np.float64), np.asarray(dst, np.float64), w, with_scale=with_scale))


def umeyama_sim3(src, dst) -> np.ndarray:
    """The similarity T (4x4, [[c R, t], [0, 1]]) minimising sum |c R src_i + t - dst_i|^2:
    Umeyama 1991 as π³'s `mv_recon/utils.py: umeyama` computes it (variance of src as the mean
    squared distance from its centroid, reflection-corrected SVD of the cross-covariance)."""
    return _fit(src, dst, with_scale=True)


def icp_point_to_point(
    source,
    target,
    threshold: float,
    init=None,
    max_iterations: int = 30,
    relative_fitness: float = 1e-6,
    relative_rmse: float = 1e-6,
    workers: int = -1,
) -> tuple[np.ndarray, float, float]:
    """Rigid point-to-point ICP of `source` (M, 3) onto `target` (K, 3): (T 4x4, fitness, inlier RMSE).

    Open3D's `registration_icp` (legacy pipeline) step by step: apply `init`; correspondences =
    each source point's nearest target point if closer than `threshold`; fitness = matched /
    M, inlier RMSE = sqrt(mean squared matched distance). Then up to `max_iterations` times:
    fit the rigid transform of the matched pairs (Kabsch / Eigen's umeyama without scale),
    apply it, compose it onto T, recompute correspondences, and stop once both fitness and RMSE
    change by less than the relative criteria (absolute differences, Open3D's defaults 1e-6,
    1e-6, 30). No correspondence: the update is the identity.
    """
    src0 = np.asarray(source, np.float64)
    tgt = np.asarray(target, np.float64)
    T = np.eye(4) if init is None else np.asarray(init, np.float64)
    tree = cKDTree(tgt)
    src = _apply(T, src0)

    def correspond(points):
        d, idx = tree.query(points, k=1, distance_upper_bound=threshold, workers=workers)
        ok = np.isfinite(d)
        n = int(ok.sum())
        fitness = n / len(points) if len(points) else 0.0
        rmse = float(np.sqrt(np.mean(d[ok] ** 2))) if n else 0.0
        return ok, idx, fitness, rmse

    ok, idx, fitness, rmse = correspond(src)
    for _ in range(max_iterations):
        if ok.any():
            # Unmatched points get weight 0 (no influence); their index (= len(target)) is clipped.
            update = _fit(src, tgt[np.minimum(idx, len(tgt) - 1)], with_scale=False, weights=ok)
        else:
            update = np.eye(4)
        T = update @ T
        src = _apply(update, src)
        prev_fitness, prev_rmse = fitness, rmse
        ok, idx, fitness, rmse = correspond(src)
        if abs(prev_fitness - fitness) < relative_fitness and abs(prev_rmse - rmse) < relative_rmse:
            break
    return T, fitness, rmse


def estimate_normals(points, knn: int = 30, chunk: int = 65536, workers: int = -1) -> np.ndarray:
    """Unit normals (M, 3) by PCA of each point's `knn` nearest neighbours (the point itself
    included): the eigenvector of the smallest eigenvalue of the neighbourhood's covariance.

    Open3D's `PointCloud.estimate_normals()` defaults: `KDTreeSearchParamKNN(knn=30)`, no
    orientation when the cloud has no normals yet (the sign is arbitrary; the metrics use |dot|),
    (0, 0, 1) when fewer than 3 points exist. Open3D solves the 3x3 eigenproblem in closed form
    (`fast_normal_computation=True`); `np.linalg.eigh` gives the same vector up to round-off
    except where the two smallest eigenvalues coincide (no unique normal).
    """
    pts = np.asarray(points, np.float64)
    n = len(pts)
    if n < 3:
        return np.tile(np.array([0.0, 0.0, 1.0]), (n, 1))
    k = min(knn, n)
    tree = cKDTree(pts)
    normals = np.empty_like(pts)
    for start in range(0, n, chunk):
        q = pts[start : start + chunk]
        _, idx = tree.query(q, k=k, workers=workers)
        nb = pts[idx]  # (c, k, 3)
        nb = nb - nb.mean(axis=1, keepdims=True)
        cov = np.einsum("cki,ckj->cij", nb, nb) / k
        _, vecs = np.linalg.eigh(cov)
        normals[start : start + chunk] = vecs[:, :, 0]
    return normals


def accuracy_completeness(pred, gt, pred_normals=None, gt_normals=None, workers: int = -1) -> dict[str, float]:
    """Accuracy (pred -> gt) and Completeness (gt -> pred) nearest-neighbour distances, mean and
    median, and with normals the Normal Consistency of those pairs (`mv_recon/utils.py:
    accuracy`, `completion`). Keys: acc, acc_med, comp, comp_med, chamfer = (acc + comp) / 2,
    and nc1, nc1_med, nc2, nc2_med, nc, nc_med when both normal sets are given."""
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    d_acc, i_acc = cKDTree(gt).query(pred, workers=workers)
    d_comp, i_comp = cKDTree(pred).query(gt, workers=workers)
    out = dict(
        acc=float(np.mean(d_acc)),
        acc_med=float(np.median(d_acc)),
        comp=float(np.mean(d_comp)),
        comp_med=float(np.median(d_comp)),
    )
    out["chamfer"] = 0.5 * (out["acc"] + out["comp"])
    if pred_normals is not None and gt_normals is not None:
        pn, gn = np.asarray(pred_normals, np.float64), np.asarray(gt_normals, np.float64)
        dot1 = np.abs(np.sum(gn[i_acc] * pn, axis=-1))
        dot2 = np.abs(np.sum(gn * pn[i_comp], axis=-1))
        out.update(
            nc1=float(np.mean(dot1)),
            nc1_med=float(np.median(dot1)),
            nc2=float(np.mean(dot2)),
            nc2_med=float(np.median(dot2)),
        )
        out["nc"] = 0.5 * (out["nc1"] + out["nc2"])
        out["nc_med"] = 0.5 * (out["nc1_med"] + out["nc2_med"])
    return out


def fscore(pred, gt, tau: float, workers: int = -1) -> tuple[float, float, float]:
    """(precision, recall, F) at distance `tau`: precision = fraction of predicted points within
    tau of the ground truth, recall = fraction of ground-truth points within tau of the
    prediction (strict <), F = 2 P R / (P + R) (0 when both are 0). Not part of π³'s protocol
    (its unused `completion_ratio` is the recall at 0.05); the DTU / Tanks-and-Temples form."""
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    d_p, _ = cKDTree(gt).query(pred, workers=workers)
    d_r, _ = cKDTree(pred).query(gt, workers=workers)
    p, r = float(np.mean(d_p < tau)), float(np.mean(d_r < tau))
    return p, r, (2 * p * r / (p + r) if p + r > 0 else 0.0)


def pointmap_metrics(
    pred_points,
    gt_points,
    mask=None,
    icp_threshold: float = 0.1,
    normals_knn: int = 30,
    fscore_taus=(0.05,),
    workers: int = -1,
) -> dict[str, float]:
    """π³'s multi-view reconstruction metrics of one sequence (module docstring, steps 1-4).

    `pred_points`, `gt_points`: (..., 3) on the same pixel grid (e.g. (N, H, W, 3) world
    points of the keyframes); `mask` (...,) bool, the valid ground-truth pixels (default: where
    both are finite). Returns acc, acc_med, comp, comp_med, nc, nc_med, nc1, nc1_med, nc2,
    nc2_med, chamfer, and beyond π³: "fscore@tau" / "precision@tau" / "recall@tau" for each
    tau, "mse" (mean squared distance between the aligned prediction and the ground truth at
    the same pixel) and "icp_fitness".
    """
    pred = np.asarray(pred_points, np.float64)
    gt = np.asarray(gt_points, np.float64)
    if pred.shape != gt.shape or pred.shape[-1] != 3:
        raise ValueError(f"pointmap_metrics: pred {pred.shape} and gt {gt.shape} must be the same (..., 3) grid")
    if mask is None:
        mask = np.all(np.isfinite(pred), axis=-1) & np.all(np.isfinite(gt), axis=-1)
    mask = np.asarray(mask, bool)
    if mask.shape != pred.shape[:-1]:
        raise ValueError(f"pointmap_metrics: mask {mask.shape} does not match the points {pred.shape[:-1]}")
    if mask.sum() < 3:
        raise ValueError(f"pointmap_metrics: {int(mask.sum())} valid points; at least 3 are needed")
    p, g = pred[mask], gt[mask]
    p = _apply(umeyama_sim3(p, g), p)
    T, fitness, _ = icp_point_to_point(p, g, icp_threshold, workers=workers)
    p = _apply(T, p)
    out = accuracy_completeness(
        p, g, estimate_normals(p, normals_knn, workers=workers), estimate_normals(g, normals_knn, workers=workers), workers=workers
    )
    for tau in fscore_taus:
        prec, rec, f = fscore(p, g, tau, workers=workers)
        out[f"precision@{tau:g}"], out[f"recall@{tau:g}"], out[f"fscore@{tau:g}"] = prec, rec, f
    out["mse"] = float(np.mean(np.sum((p - g) ** 2, axis=-1)))
    out["icp_fitness"] = float(fitness)
    return out
