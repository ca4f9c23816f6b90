"""The sparse solver's initial estimate, every step closed-form or a small least-squares problem:

1. **Focal** (`focal_from_fundamentals`): for the true focal f, E = K^T F K of every verified pair
   is an essential matrix, whose two non-zero singular values are equal (Mendonca & Cipolla
   1999); f minimises the median of (s1 - s2) / (s1 + s2) over the pairs on a log grid. Accepted
   only where the minimum lies inside the grid and is clearly lower than the grid's median cost
   (fixating cameras, e.g. an object ring, make it ambiguous).
2. **Relative poses** (`relative_rotations`): per pair, an essential matrix (RANSAC) and its
   decomposition with the cheirality check (OpenCV's recoverPose).
3. **Rotation averaging** (`average_rotations`): a spanning tree over the pairs with the most
   inliers (Prim), then weighted least squares over all pairs of the rotation-vector residuals,
   re-solved after dropping pairs more than 10, 5, then 3 degrees off; the same from the tree of
   the nearest frames in time; the start that keeps the most pairs wins.
4. **Camera centres** (`centres_from_epipolar`): with the rotations known, each verified match of
   pair (i, j) with world bearings b_i, b_j gives one linear equation (b_i x b_j) . (C_j - C_i) = 0
   (unit normals); C_0 = 0 and the solution is the smallest right singular vector, reweighted
   twice (L1-like) against outliers; sign by cheirality.
5. **Points** (`triangulate`): linear (DLT) triangulation of each track from every view.
"""

from __future__ import annotations

import heapq

import cv2
import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from flow3r_jax.sfm.bundle import _skew

__all__ = ["intrinsics", "focal_from_fundamentals", "relative_rotations", "average_rotations", "centres_from_epipolar", "triangulate", "point_depths"]


def intrinsics(focal: float, principal) -> np.ndarray:
    cx, cy = principal
    return np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])


def focal_from_fundamentals(fundamentals, principal, size: float, lo: float = 0.3, hi: float = 3.0, samples: int = 241):
    """(focal, ok, costs): the focal (pixels) making the pairs' E = K^T F K most essential (see the
    module docstring), searched over [lo, hi] * size; ok when the minimum is inside the grid and
    at most half the grid's median cost."""
    Fs = np.stack([np.asarray(F, np.float64) for F in fundamentals])
    grid = np.exp(np.linspace(np.log(lo * size), np.log(hi * size), samples))
    costs = np.empty(samples)
    for n, f in enumerate(grid):
        Km = intrinsics(f, principal)
        s = np.linalg.svd(Km.T[None] @ Fs @ Km[None], compute_uv=False)
        costs[n] = np.median((s[:, 0] - s[:, 1]) / np.maximum(s[:, 0] + s[:, 1], 1e-300))
    best = int(np.argmin(costs))
    lo_n, hi_n = best - 1, best + 1  # refine between the neighbours (golden section)
    f = grid[best]
    if 0 < best < samples - 1:
        def cost(x):
            Km = intrinsics(x, principal)
            s = np.linalg.svd(Km.T[None] @ Fs @ Km[None], compute_uv=False)
            return float(np.median((s[:, 0] - s[:, 1]) / np.maximum(s[:, 0] + s[:, 1], 1e-300)))

        a, b = grid[lo_n], grid[hi_n]
        g = (np.sqrt(5) - 1) / 2
        c, d = b - g * (b - a), a + g * (b - a)
        for _ in range(40):
            if cost(c) < cost(d):
                b = d
            else:
                a = c
            c, d = b - g * (b - a), a + g * (b - a)
        f = (a + b) / 2
    interior = samples // 40 <= best < samples - samples // 40
    ok = bool(interior and costs[best] <= 0.5 * np.median(costs))
    return float(f), ok, costs


def relative_rotations(features_xy, matches, Km: np.ndarray, threshold_px: float = 1.0, min_inliers: int = 20):
    """{(i, j): (R_ij (3, 3), inlier match indices (m, 2))} with x_j ~ R_ij x_i + t: world-to-
    camera rotations satisfy R_j = R_ij R_i."""
    out = {}
    for m in matches:
        p1, p2 = features_xy[m.i][m.idx[:, 0]], features_xy[m.j][m.idx[:, 1]]
        try:
            E, inl = cv2.findEssentialMat(p1, p2, Km, cv2.RANSAC, 0.999, threshold_px)
            if E is None or E.shape != (3, 3):
                continue
            _, R, _, inl2 = cv2.recoverPose(E, p1, p2, Km, mask=inl.copy())
        except cv2.error:  # a degenerate pair: left out
            continue
        ok = inl2.ravel() > 0
        if ok.sum() >= min_inliers:
            out[(m.i, m.j)] = (R, m.idx[ok])
    return out


def _spanning_tree(count: int, rel: dict, key=None) -> list[np.ndarray | None]:
    """World-to-camera rotations chained from frame 0 over a spanning tree grown by Prim's rule:
    the next edge is the one with the smallest `key(i, j, inliers)` (default: most inliers)."""
    key = key or (lambda i, j, n: -n)
    adj: dict[int, list] = {}
    for (i, j), (R, idx) in rel.items():
        adj.setdefault(i, []).append((j, R, key(i, j, len(idx))))
        adj.setdefault(j, []).append((i, R.T, key(i, j, len(idx))))
    Rw: list[np.ndarray | None] = [None] * count
    Rw[0] = np.eye(3)
    heap = [(k, 0, j, n, R) for n, (j, R, k) in enumerate(adj.get(0, []))]
    heapq.heapify(heap)
    while heap:
        _, a, b, _, R = heapq.heappop(heap)
        if Rw[b] is not None:
            continue
        Rw[b] = R @ Rw[a]
        for n, (c, R2, k2) in enumerate(adj.get(b, [])):
            if Rw[c] is None:
                heapq.heappush(heap, (k2, b, c, n, R2))
    return Rw


def rotation_residuals_deg(Rw: np.ndarray, pairs: np.ndarray, Rij: np.ndarray) -> np.ndarray:
    d = Rij @ Rw[pairs[:, 0]] @ np.transpose(Rw[pairs[:, 1]], (0, 2, 1))
    return np.degrees(np.linalg.norm(Rotation.from_matrix(d).as_rotvec(), axis=1))


def average_rotations(count: int, rel: dict, thresholds=(10.0, 5.0, 3.0)):
    """(Rw (K, 3, 3) world-to-camera with Rw[0] = I, or None where a frame is not connected;
    kept: bool per pair of `rel` (within the last threshold)). Two starts, each refined while
    trimming: the spanning tree of the most inliers, and the one of the nearest frames in time
    (a video's neighbours); the result keeping the most pairs (then inliers) wins, so one wrong
    pair that the first tree takes on trust does not decide the outcome."""
    keys = list(rel)
    best = None
    for key in (None, lambda i, j, n: (abs(j - i), -n)):
        Rw = _spanning_tree(count, rel, key)
        if any(R is None for R in Rw):
            return Rw, np.zeros(len(keys), bool)
        Rw, kept = _refine_rotations(np.stack(Rw), rel, keys, thresholds)
        score = (int(kept.sum()), sum(len(rel[k][1]) for k, ok in zip(keys, kept) if ok))
        if best is None or score > best[0]:
            best = (score, Rw, kept)
    return best[1], best[2]


def _left_jacobians(phi: np.ndarray, inverse: bool = False) -> np.ndarray:
    """(n, 3, 3) left Jacobians of SO(3) at rotation vectors phi (n, 3): exp(phi + d) =
    exp(J_l(phi) d) exp(phi) to first order; with `inverse`, J_l^-1 (Log(exp(b) exp(phi)) =
    phi + J_l^-1(phi) b). Closed forms (Barfoot, State Estimation for Robotics, 7.1.5), Taylor
    series below 1e-4 rad."""
    t = np.linalg.norm(phi, axis=-1)
    small = t < 1e-4
    ts = np.where(small, 1.0, t)
    W = _skew(phi)
    W2 = W @ W
    if inverse:
        a = np.full_like(t, -0.5)
        b = np.where(small, 1.0 / 12.0 + t**2 / 720.0, 1.0 / ts**2 - (1.0 + np.cos(ts)) / (2.0 * ts * np.sin(ts)))
    else:
        a = np.where(small, 0.5 - t**2 / 24.0, (1.0 - np.cos(ts)) / ts**2)
        b = np.where(small, 1.0 / 6.0 - t**2 / 120.0, (ts - np.sin(ts)) / ts**3)
    return np.eye(3) + a[:, None, None] * W + b[:, None, None] * W2


def _pair_residuals(x: np.ndarray, p: np.ndarray, Rk: np.ndarray, wk: np.ndarray, jacobian: bool = False):
    """Weighted residuals Log(R_ij R_i R_j^T) w_ij (flattened) of the rotation vectors x (3(K-1),)
    of frames 1.. (frame 0 = I), and with `jacobian` their (3 pairs, 3(K-1)) derivative: with
    D = R_ij R_i R_j^T and r = Log D, dr/dx_i = J_l^-1(r) R_ij J_l(x_i), dr/dx_j =
    -J_l^-1(r) D J_l(x_j) (perturbing R_i on the left by J_l(x_i) dx_i)."""
    xs = x.reshape(-1, 3)
    R = np.concatenate([np.eye(3)[None], Rotation.from_rotvec(xs).as_matrix()])
    D = Rk @ R[p[:, 0]] @ np.transpose(R[p[:, 1]], (0, 2, 1))
    r = Rotation.from_matrix(D).as_rotvec()
    if not jacobian:
        return (r * wk[:, None]).ravel()
    Jl = np.concatenate([np.zeros((1, 3, 3)), _left_jacobians(xs)])  # frame 0 has no parameters
    Jinv = wk[:, None, None] * _left_jacobians(r, inverse=True)
    blocks = ((p[:, 0], Jinv @ Rk @ Jl[p[:, 0]]), (p[:, 1], -(Jinv @ D @ Jl[p[:, 1]])))
    J = np.zeros((len(p), 3, len(R), 3))
    rows = np.arange(len(p))
    for frame, block in blocks:
        J[rows, :, frame, :] += block
    return J[:, :, 1:, :].reshape(3 * len(p), 3 * (len(R) - 1))


def _refine_rotations(Rw: np.ndarray, rel: dict, keys: list, thresholds):
    pairs = np.array(keys, np.int64).reshape(-1, 2)
    Rij = np.stack([rel[k][0] for k in keys])
    weights = np.sqrt(np.array([len(rel[k][1]) for k in keys], np.float64))
    for thr in thresholds:
        keep = rotation_residuals_deg(Rw, pairs, Rij) < thr
        args = (pairs[keep], Rij[keep], weights[keep])
        # The analytic Jacobian: finite differences took 3(K-1) residual evaluations per step
        # (41 s of a 200-frame clip's 100 s).
        x = least_squares(_pair_residuals, Rotation.from_matrix(Rw[1:]).as_rotvec().ravel(), jac=lambda x, *a: _pair_residuals(x, *a, jacobian=True), args=args).x
        Rw = np.concatenate([np.eye(3)[None], Rotation.from_rotvec(x.reshape(-1, 3)).as_matrix()])
    return Rw, rotation_residuals_deg(Rw, pairs, Rij) < thresholds[-1]


def centres_from_epipolar(Rw: np.ndarray, Km: np.ndarray, features_xy, rel: dict, reweight: int = 2) -> np.ndarray:
    """Camera centres (K, 3), C_0 = 0 and unit norm overall (sign not yet fixed), from the
    epipolar equations of the pairs in `rel` (see the module docstring). The equations form a
    sparse matrix (6 entries per row); the solution is the eigenvector of the smallest eigenvalue
    of its (3K - 3)-square normal matrix (a long clip has ~10^6 rows: a dense SVD would take GBs)."""
    from scipy.sparse import csr_matrix

    K = len(Rw)
    Kinv = np.linalg.inv(Km)
    rows, cols, vals = [], [], []
    count = 0
    for (i, j), (_, idx) in rel.items():
        bi = (np.c_[features_xy[i][idx[:, 0]], np.ones(len(idx))] @ Kinv.T) @ Rw[i]
        bj = (np.c_[features_xy[j][idx[:, 1]], np.ones(len(idx))] @ Kinv.T) @ Rw[j]
        n = np.cross(bi, bj)
        n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
        r = count + np.arange(len(idx))
        for frame, sign in ((j, 1.0), (i, -1.0)):
            if frame == 0:  # C_0 = 0: its columns are left out
                continue
            rows.append(np.repeat(r, 3))
            cols.append(np.tile(3 * (frame - 1) + np.arange(3), len(idx)))
            vals.append(sign * n.ravel())
        count += len(idx)
    A = csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(count, 3 * (K - 1)))
    w = np.ones(count)
    for _ in range(reweight + 1):
        Aw = A.multiply(w[:, None]).tocsr()
        v = np.linalg.eigh((Aw.T @ Aw).toarray())[1][:, 0]
        res = np.abs(A @ v)
        w = 1.0 / np.maximum(res, np.median(res) + 1e-12)
    return np.concatenate([np.zeros((1, 3)), v.reshape(-1, 3)])


def triangulate(Rw: np.ndarray, C: np.ndarray, Km: np.ndarray, frame: np.ndarray, track: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Points (T, 3) by DLT from all observations of each track (rows normalised)."""
    T = int(track.max()) + 1 if len(track) else 0
    K = len(Rw)
    Pm = Km[None] @ np.concatenate([Rw, -np.einsum("kij,kj->ki", Rw, C)[..., None]], 2)
    A = np.zeros((T, 2 * K, 4))
    Pf = Pm[frame]
    A[track, 2 * frame] = xy[:, :1] * Pf[:, 2] - Pf[:, 0]
    A[track, 2 * frame + 1] = xy[:, 1:] * Pf[:, 2] - Pf[:, 1]
    A /= np.linalg.norm(A, axis=-1, keepdims=True) + 1e-12
    X = np.linalg.svd(A, full_matrices=False)[2][:, -1]  # (T, 4, 4): not the (T, 2K, 2K) U of a full SVD
    with np.errstate(divide="ignore", invalid="ignore"):
        return X[:, :3] / X[:, 3:]


def point_depths(Rw, C, X, frame, track) -> np.ndarray:
    """Depth of each observation's point in its frame, (n,)."""
    return np.einsum("nij,nj->ni", Rw[frame], X[track] - C[frame])[:, 2]
