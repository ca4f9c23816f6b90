"""Dense depth from known cameras: each pixel's depth triangulated from the optical flow of nearby
frame pairs, in closed form (what `reconstruct` does with the sparse solver's poses and focal,
instead of FlowMap's optimisation: the same clip's depth in a second rather than minutes).

For pixel p of frame i (homogeneous, pixel centres at +0.5) and a pair (i, j) with flow F_ij(p),
the point at depth d along p's ray is, in camera j,

    X_j(d) = d a + b,    a = R_j R_i^T K^-1 p,    b = R_j (C_i - C_j)

and must project to q = p + F_ij(p). With n = K^-1 q (normalised), the two equations
n_x (d a_z + b_z) = d a_x + b_x and n_y (...) = d a_y + b_y are linear in d: A d = B per pair.
The start is the pair's own solution that most pairs agree with (within `max_px`, in front of
both cameras; then the smallest summed error), so that one wrong pair does not bias it; then the
weighted least-squares solution over the pair set, re-solved `iterations` times with each pair
weighted by (f / z_j)^2 (residuals in pixels of frame j) where it reprojects within `max_px` and
lies in front of both cameras, and 0 where it does not (occlusions, flow failures). A pixel with
no consistent pair, or a non-positive depth, gets depth 0 (unknown).
The uncertainty grows where the pairs' parallax is small (A ~ 0: far points, the epipole of a
forward motion); the weights already give such pairs little say.
"""

from __future__ import annotations

import numpy as np

__all__ = ["flow_pairs", "triangulate_flow"]


def flow_pairs(count: int, gap: int = 3) -> np.ndarray:
    """(P, 2) int32 ordered pairs (i, j), i != j, at most `gap` frames apart, both directions."""
    return np.array([(i, j) for i in range(count) for j in range(count) if i != j and abs(i - j) <= gap], np.int32).reshape(-1, 2)


def triangulate_flow(poses: np.ndarray, intrinsics: np.ndarray, flows: np.ndarray, pairs: np.ndarray, max_px: float = 1.0, iterations: int = 3) -> tuple[np.ndarray, dict]:
    """(depth (K, h, w) float32, 0 where unknown; info) from camera-to-world poses (K, 4, 4), one
    pinhole `intrinsics` (3, 3) in pixels of the flow grid, flows (P, h, w, 2) of `pairs` (P, 2)
    (frame i -> frame j, pixels). See the module docstring."""
    poses = np.asarray(poses, np.float64)
    Km = np.asarray(intrinsics, np.float64)
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    K = len(poses)
    P, h, w = flows.shape[:3]
    if len(pairs) != P:
        raise ValueError(f"triangulate_flow: {P} flows but {len(pairs)} pairs")
    if P and (pairs.min() < 0 or pairs.max() >= K):
        raise ValueError(f"triangulate_flow: pair indices outside 0..{K - 1}")
    f = float(np.sqrt(Km[0, 0] * Km[1, 1]))
    fx, fy, cx, cy = Km[0, 0], Km[1, 1], Km[0, 2], Km[1, 2]
    Rw = np.transpose(poses[:, :3, :3], (0, 2, 1))  # world-to-camera
    C = poses[:, :3, 3]
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    ray = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1)
    depth = np.zeros((K, h, w), np.float32)
    pairs_per_pixel = np.zeros((K, h, w), np.int16)
    for i in range(K):
        terms = []
        for p in np.flatnonzero(pairs[:, 0] == i):
            j = int(pairs[p, 1])
            a = ray @ (Rw[j] @ Rw[i].T).T
            b = Rw[j] @ (C[i] - C[j])
            qx = (u + flows[p, ..., 0] - cx) / fx
            qy = (v + flows[p, ..., 1] - cy) / fy
            terms.append((qx * a[..., 2] - a[..., 0], b[0] - qx * b[2], qy * a[..., 2] - a[..., 1], b[1] - qy * b[2], a, b, u + flows[p, ..., 0], v + flows[p, ..., 1]))
        if not terms:
            continue
        def check(d):  # per pair: the weight of a consistent pair at depth d, 0 otherwise
            out = []
            for Ax, Bx, Ay, By, a, b, xj, yj in terms:
                Xc = d[..., None] * a + b
                z = Xc[..., 2]
                zs = np.where(np.abs(z) > 1e-12, z, 1e-12)
                err = np.hypot(fx * Xc[..., 0] / zs + cx - xj, fy * Xc[..., 1] / zs + cy - yj)
                ok = (z > 0) & (d > 0) & (err < max_px)
                out.append((np.where(ok, (f / zs) ** 2, 0.0), np.where(ok, err, max_px)))
            return out

        # Start: each pair's own depth is a hypothesis; per pixel the one most pairs agree with
        # (then the smallest summed error), so that one wrong pair does not bias the start.
        best_d = np.zeros((h, w))
        best_score = np.full((h, w), -np.inf)
        for Ax, Bx, Ay, By, *_ in terms:
            den = Ax * Ax + Ay * Ay
            d = np.where(den > 0, (Ax * Bx + Ay * By) / np.where(den > 0, den, 1.0), 0.0)
            checked = check(d)
            score = sum((wt > 0).astype(np.float64) for wt, _ in checked) - sum(e for _, e in checked) / (max_px * (len(terms) + 1))
            better = score > best_score
            best_d, best_score = np.where(better, d, best_d), np.where(better, score, best_score)
        weights = [wt for wt, _ in check(best_d)]
        d = best_d
        for _ in range(iterations):
            num = sum(wt * (Ax * Bx + Ay * By) for wt, (Ax, Bx, Ay, By, *_) in zip(weights, terms))
            den = sum(wt * (Ax * Ax + Ay * Ay) for wt, (Ax, Bx, Ay, By, *_) in zip(weights, terms))
            d = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
            weights = [wt for wt, _ in check(d)]
        used = sum((wt > 0).astype(np.int16) for wt in weights)
        depth[i] = np.where((used > 0) & (d > 0), d, 0.0)
        pairs_per_pixel[i] = used
    known = depth > 0
    info = dict(
        pairs=int(P),
        known_fraction=round(float(known.mean()), 4),
        mean_pairs_per_pixel=round(float(pairs_per_pixel[known].mean()), 2) if known.any() else 0.0,
        max_px=max_px,
    )
    return depth, info
