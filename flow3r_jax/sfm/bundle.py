"""Bundle adjustment: Levenberg-Marquardt on reprojection errors with the Schur complement.

One shared pinhole camera with square pixels (focal f, principal point fixed unless refined), world-to-camera
rotations R_k and camera centres C_k, points X_p; an observation n of point p in frame k at pixel
x_n (any pixel convention, as long as the principal point uses the same one) has the residual

    r_n = f * (1 + k1 |m|^2) m + (cx, cy) - x_n,      m = (Xc_x, Xc_y) / Xc_z,   Xc = R_k (X_p - C_k)

(k1 = 0 unless `radial`: COLMAP's SIMPLE_RADIAL).

Frame 0's pose is held fixed (the rotation and translation gauge); the scale gauge is left to the
damping (the caller fixes it afterwards: `run_sfm` scales to a median point depth of 1).
Robust: Huber weights on |r_n| (iteratively reweighted), threshold `huber_px`.
Updates: rotation R <- exp([d]_x) R, centre C <- C + dC, point X <- X + dX, focal log f <- log f + d,
principal point c <- c + dc.
Cameras (6 per frame but frame 0, 3 with `fix_centres`: a camera that only rotates; plus the
focal) form a dense block; points are eliminated
(3x3 blocks) through the Schur complement, so a step costs O(obs + frames^3).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.sparse import csr_matrix
from scipy.spatial.transform import Rotation

__all__ = ["BundleResult", "bundle_adjust"]


@dataclasses.dataclass
class BundleResult:
    rotations: np.ndarray  # (K, 3, 3) world-to-camera
    centres: np.ndarray  # (K, 3) camera centres in the world
    focal: float
    points: np.ndarray  # (P, 3)
    residuals: np.ndarray  # (n,) final reprojection error per observation, pixels
    iterations: int
    initial_rms: float  # robust (Huber) cost as an RMS-equivalent, pixels
    final_rms: float
    k1: float = 0.0  # radial distortion (0 unless refined)
    focal_std: float = 0.0  # marginal standard deviation of log f at the solution (relative focal; 0 unless refined)
    principal: tuple = (0.0, 0.0)  # (cx, cy) pixels: as given unless refined
    principal_std: tuple = (0.0, 0.0)  # marginal standard deviations of cx, cy, pixels (0 unless refined)
    sigma2: float = 0.0  # residual variance per coordinate (weighted squared residuals / degrees of freedom), pixels^2
    # The same marginal standard deviations without assuming independent, equal noise on every
    # observation: the sandwich H^-1 M H^-1 with M summed over tracks (a track's observations may
    # share their errors; noise may differ between tracks), scaled by (2n - 3P) / (2n - 3P - camera
    # unknowns): the residuals have lost the cameras' share of the fit (the points' share is
    # already profiled out of each track's gradient).
    focal_std_robust: float = 0.0
    principal_std_robust: tuple = (0.0, 0.0)


def _skew(v: np.ndarray) -> np.ndarray:
    z = np.zeros(v.shape[:-1])
    return np.stack(
        [np.stack([z, -v[..., 2], v[..., 1]], -1), np.stack([v[..., 2], z, -v[..., 0]], -1), np.stack([-v[..., 1], v[..., 0], z], -1)], -2
    )


def _huber_weights(norms: np.ndarray, delta: float) -> np.ndarray:
    return np.where(norms <= delta, 1.0, delta / np.maximum(norms, 1e-12))


def _huber_cost(norms: np.ndarray, delta: float) -> float:
    return float(np.sum(np.where(norms <= delta, 0.5 * norms**2, delta * (norms - 0.5 * delta))))


def _sum_by(index: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    """Sums of values (n, ...) grouped by index (n,) into (count, ...)."""
    flat = values.reshape(len(values), -1)
    out = np.stack([np.bincount(index, weights=flat[:, c], minlength=count) for c in range(flat.shape[1])], -1)
    return out.reshape((count,) + values.shape[1:])


def _camera_columns(col0: np.ndarray, movable: np.ndarray, shared: int, nc: int, per_frame: int = 6) -> np.ndarray:
    """(n, per_frame + shared) columns of each observation's camera parameters in the camera
    block, -1 for frame 0's (held fixed); the `shared` intrinsics' columns last."""
    cols = np.where(movable[:, None], col0[:, None] + np.arange(per_frame)[None], -1)
    return np.concatenate([cols, np.broadcast_to(nc - shared + np.arange(shared)[None], (len(cols), shared))], 1)


def _square_index(cols: np.ndarray, size: int):
    """For per-observation blocks (n, m, m) at rows/cols `cols` (n, m) of a dense (size, size)
    matrix: (mask (n, m, m) of the entries kept (column -1 dropped), their flat indices)."""
    ok = (cols[:, :, None] >= 0) & (cols[:, None, :] >= 0)
    return ok, (cols[:, :, None] * size + cols[:, None, :])[ok]


def _gram(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, i, j) = sum over k of a[n, k, i] b[n, k, j] for a short k (the 2 residual
    coordinates): broadcast products, several times faster than the einsum."""
    out = a[:, 0, :, None] * b[:, 0, None, :]
    for k in range(1, a.shape[1]):
        out += a[:, k, :, None] * b[:, k, None, :]
    return out


def _apply_t(a: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(n, i) = sum over k of a[n, k, i] v[n, k] (a's transpose applied per observation)."""
    out = a[:, 0] * v[:, 0, None]
    for k in range(1, a.shape[1]):
        out += a[:, k] * v[:, k, None]
    return out


def _block_diag(blocks: np.ndarray) -> csr_matrix:
    """Sparse block-diagonal matrix of (P, 3, 3) blocks."""
    P = len(blocks)
    r = np.repeat(3 * np.arange(P)[:, None] + np.arange(3)[None], 3, 1).reshape(P, 3, 3)
    c = np.transpose(r, (0, 2, 1))
    return csr_matrix((blocks.ravel(), (r.ravel(), c.ravel())), shape=(3 * P, 3 * P))


# The camera-point block Hcp is held dense where it has at most this many entries (64 MB): the
# Schur complement is then two dense products. scipy's sparse product, which also computes the
# result's pattern on every call, took 50 ms per damping trial on a 48-frame clip of 450 points
# (283 x 1350) where the dense products take 1-2 ms; sparse beyond (many points and frames).
DENSE_HCP_ENTRIES = 8_000_000


def _camera_point_block(values: np.ndarray, rows: np.ndarray, cols: np.ndarray, nc: int, P: int):
    """Hcp (nc, 3P) from its entries: dense up to DENSE_HCP_ENTRIES, else sparse (CSR)."""
    if nc * 3 * P <= DENSE_HCP_ENTRIES:
        return np.bincount(rows * (3 * P) + cols, weights=values, minlength=nc * 3 * P).reshape(nc, 3 * P)
    return csr_matrix((values, (rows, cols)), shape=(nc, 3 * P))


def _schur_parts(Hcp, Hpp_inv: np.ndarray):
    """(Hcp Hpp^-1 Hcp^T as a dense (nc, nc) array, Hcp Hpp^-1) for the block-diagonal Hpp^-1
    (P, 3, 3) (symmetric blocks) and Hcp dense or sparse (`_camera_point_block`)."""
    if isinstance(Hcp, np.ndarray):
        nc, P = Hcp.shape[0], len(Hpp_inv)
        # per point p: (nc, 3) @ (3, 3), one batched product (20x faster than the einsum)
        T = np.matmul(Hcp.reshape(nc, P, 3).transpose(1, 0, 2), Hpp_inv).transpose(1, 0, 2).reshape(nc, 3 * P)
        return T @ Hcp.T, T
    T = (Hcp @ _block_diag(Hpp_inv)).tocsr()
    return (T @ Hcp.T).toarray(), T


def bundle_adjust(
    rotations: np.ndarray,
    centres: np.ndarray,
    focal: float,
    points: np.ndarray,
    principal,
    frame: np.ndarray,
    point: np.ndarray,
    xy: np.ndarray,
    huber_px: float = 2.0,
    iterations: int = 50,
    refine_focal: bool = True,
    tol: float = 1e-6,
    min_depth: float = 1e-6,
    radial: bool = False,
    k1: float = 0.0,
    refine_principal: bool = False,
    fix_centres: bool = False,
) -> BundleResult:
    """Refines poses, focal and points (see the module docstring). rotations (K, 3, 3)
    world-to-camera, centres (K, 3), points (P, 3), observations frame (n,), point (n,) ints and
    xy (n, 2) pixels. Stops after `iterations` or when a step lowers the cost by less than `tol`
    (relative). Points behind a camera are never accepted: a step that puts an observed point at
    depth <= min_depth is rejected like one that raises the cost. radial: also refine one radial
    distortion coefficient k1 (COLMAP's SIMPLE_RADIAL: normalised coordinates scaled by
    1 + k1 (x^2 + y^2)), starting at `k1`. refine_principal: also refine the principal point
    (cx, cy), starting at `principal`. fix_centres: a camera that only rotates: every centre is
    at the origin and stays there, only the rotations move; a point is then a direction, its
    distance free, so each point's radial direction is pinned by a stiffness that leaves the cost
    and the cameras' covariance unchanged, and it counts 2 degrees of freedom, not 3."""
    R = np.asarray(rotations, np.float64).copy()
    C = np.asarray(centres, np.float64).copy()
    X = np.asarray(points, np.float64).copy()
    frame, point = np.asarray(frame, np.int64), np.asarray(point, np.int64)
    xy = np.asarray(xy, np.float64)
    K, P, n = len(R), len(X), len(frame)
    if n == 0 or K < 2:
        raise ValueError(f"bundle_adjust: needs >= 2 frames and observations, got {K} frames and {n} observations")
    if fix_centres and np.any(C != 0):
        raise ValueError("bundle_adjust: fix_centres is the rotation-only model, every camera centre at the origin")
    logf = float(np.log(focal))
    k1 = float(k1)
    c = np.asarray(principal, np.float64).copy()
    shared = int(refine_focal) + int(radial) + 2 * int(refine_principal)
    per_frame = 3 if fix_centres else 6
    point_dof = 2 if fix_centres else 3
    nc = per_frame * (K - 1) + shared  # camera block: (dtheta, dC) per frame 1.. (dtheta alone with fix_centres), then log f, k1, cx, cy
    i_f = per_frame * (K - 1)  # columns of the shared intrinsics that are refined
    i_k = i_f + int(refine_focal)
    i_c = i_k + int(radial)

    def evaluate(R, C, logf, k1, c, X):
        Xc = np.einsum("nij,nj->ni", R[frame], X[point] - C[frame])
        if np.any(Xc[:, 2] <= min_depth):
            return None, None
        m = Xc[:, :2] / Xc[:, 2:3]
        r = np.exp(logf) * (1.0 + k1 * np.sum(m**2, -1, keepdims=True)) * m + c[None] - xy
        return r, Xc

    r, Xc = evaluate(R, C, logf, k1, c, X)
    if r is None:
        raise ValueError("bundle_adjust: an observed point lies behind its camera at the start")
    norms = np.linalg.norm(r, axis=1)
    cost = _huber_cost(norms, huber_px)
    initial = cost
    lam = 1e-3
    it = 0
    movable = frame > 0
    col0 = per_frame * (frame - 1)  # first camera column of each observation (frame 0 has none)
    # Where each observation's blocks go (fixed for the whole adjustment): its camera columns
    # (-1 where absent: frame 0, fixed), the camera-camera block's entries, the gradient's, and
    # the camera-point block's (rows: camera columns, columns: 3 point(n) .. +3).
    cols = _camera_columns(col0, movable, shared, nc, per_frame)  # (n, per_frame + shared)
    cc_ok, cc_index = _square_index(cols, nc)
    gc_index = np.where(cols >= 0, cols, nc).ravel()
    cp_ok = np.repeat(cols[:, :, None] >= 0, 3, 2)
    cp_rows = np.repeat(cols[:, :, None], 3, 2)[cp_ok]
    cp_cols = np.broadcast_to(3 * point[:, None, None] + np.arange(3)[None, None], cp_ok.shape)[cp_ok]

    def linearise(R, logf, k1, Xc, r, norms, parts: bool = False, drop=None):
        """The damped system's parts at a state: Hcc, Hcp (dense or sparse: `_camera_point_block`),
        Hpp (P, 3, 3), gc, gp (and, with parts, the per-observation camera gradients,
        camera-point blocks and columns). drop: observations left out (weight 0)."""
        f = np.exp(logf)
        z = Xc[:, 2]
        m = Xc[:, :2] / z[:, None]  # normalised coordinates
        rho2 = np.sum(m**2, -1)
        g = 1.0 + k1 * rho2
        dm = np.zeros((n, 2, 3))  # d m / d Xc
        dm[:, 0, 0] = dm[:, 1, 1] = 1.0 / z
        dm[:, :, 2] = -m / z[:, None]
        du = f * (g[:, None, None] * np.eye(2)[None] + 2.0 * k1 * m[:, :, None] * m[:, None, :])  # d r / d m
        dproj = du @ dm  # d r / d Xc
        Rn = R[frame]
        extra = []
        if refine_focal:
            extra.append(f * g[:, None] * m)  # d r / d log f
        if radial:
            extra.append(f * rho2[:, None] * m)  # d r / d k1
        if refine_principal:
            extra += [np.broadcast_to(np.array([1.0, 0.0]), (n, 2)), np.broadcast_to(np.array([0.0, 1.0]), (n, 2))]  # d r / d (cx, cy)
        Jcam = np.concatenate([dproj @ (-_skew(Xc))] + ([] if fix_centres else [-dproj @ Rn]) + [e[..., None] for e in extra], -1)  # (n, 2, per_frame + shared)
        J_p = dproj @ Rn
        w = _huber_weights(norms, huber_px)
        if drop is not None:
            w = np.where(drop, 0.0, w)
        wr = w[:, None] * r
        wJ_p = w[:, None, None] * J_p
        Hpp = _sum_by(point, _gram(wJ_p, J_p), P)
        if fix_centres:  # the radial direction, which no residual sees, pinned at the block's scale
            u = X / np.linalg.norm(X, axis=1, keepdims=True)
            Hpp = Hpp + (np.trace(Hpp, axis1=1, axis2=2) / 2.0)[:, None, None] * np.einsum("pi,pj->pij", u, u)
        gp = _sum_by(point, _apply_t(J_p, wr), P)
        # camera-camera: per observation a (6 (+1)) x (6 (+1)) block at its frame's columns
        wJcam = w[:, None, None] * Jcam
        Hcc = np.bincount(cc_index, weights=_gram(wJcam, Jcam)[cc_ok], minlength=nc * nc).reshape(nc, nc)
        gcam = _apply_t(Jcam, wr)
        gc = np.bincount(gc_index, weights=gcam.ravel(), minlength=nc + 1)[:nc]
        JcJp = _gram(wJcam, J_p)  # (n, 6 (+1), 3)
        Hcp = _camera_point_block(JcJp[cp_ok], cp_rows, cp_cols, nc, P)
        if parts:
            return Hcc, Hcp, Hpp, gc, gp, (gcam, JcJp, cols)
        return Hcc, Hcp, Hpp, gc, gp

    for it in range(1, iterations + 1):
        Hcc, Hcp, Hpp, gc, gp = linearise(R, logf, k1, Xc, r, norms)
        improved = False
        for _ in range(10):
            Hpp_d = Hpp + lam * (Hpp * np.eye(3)[None]) + 1e-12 * np.eye(3)[None]
            Hpp_inv = np.linalg.inv(Hpp_d)  # (P, 3, 3)
            Hcc_d = Hcc + lam * np.diag(np.diag(Hcc)) + 1e-12 * np.eye(nc)
            HcpHpp, T = _schur_parts(Hcp, Hpp_inv)  # T = Hcp Hpp^-1
            S = Hcc_d - HcpHpp
            rhs = -gc + T @ gp.ravel()
            try:
                dc = np.linalg.solve(S, rhs)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            dp = np.einsum("pij,pj->pi", Hpp_inv, -gp - (Hcp.T @ dc).reshape(P, 3))
            dcam = dc[: per_frame * (K - 1)].reshape(K - 1, per_frame)
            R_new = R.copy()
            R_new[1:] = Rotation.from_rotvec(dcam[:, :3]).as_matrix() @ R[1:]
            C_new = C.copy()
            if not fix_centres:
                C_new[1:] = C[1:] + dcam[:, 3:]
            logf_new = logf + (dc[i_f] if refine_focal else 0.0)
            k1_new = k1 + (dc[i_k] if radial else 0.0)
            c_new = c + dc[i_c : i_c + 2] if refine_principal else c
            X_new = X + dp
            r_new, Xc_new = evaluate(R_new, C_new, logf_new, k1_new, c_new, X_new)
            if r_new is not None:
                norms_new = np.linalg.norm(r_new, axis=1)
                cost_new = _huber_cost(norms_new, huber_px)
                if cost_new < cost:
                    rel = (cost - cost_new) / max(cost, 1e-300)
                    R, C, logf, k1, c, X, r, Xc, norms, cost = R_new, C_new, logf_new, k1_new, c_new, X_new, r_new, Xc_new, norms_new, cost_new
                    lam = max(lam / 10, 1e-9)
                    improved = True
                    break
            lam *= 10
        if not improved or rel < tol:
            break
    focal_std, principal_std, focal_std_robust, principal_std_robust = 0.0, (0.0, 0.0), 0.0, (0.0, 0.0)
    dof = max(2 * n - nc - point_dof * P, 1)
    sigma2 = float(np.sum(_huber_weights(norms, huber_px) * norms**2)) / dof
    if refine_focal or refine_principal:  # marginal standard deviations at the solution
        # Points the adjustment pushed against a camera (depth < 1e-3 of the median) carry no
        # information on the cameras, and their huge 3x3 blocks (Jacobians ~ f / depth) leave the
        # Schur complement to rounding: one such point among 185 took a focal's standard deviation
        # to 0.004% where the focal was 34% off. They are left out of the covariance.
        z = Xc[:, 2]
        near = np.isin(point, np.unique(point[z < 1e-3 * np.median(z)]))
        Hcc, Hcp, Hpp, _, gp, (gcam, JcJp, cols) = linearise(R, logf, k1, Xc, r, norms, parts=True, drop=near)
        Hpp_inv = np.linalg.inv(Hpp + 1e-12 * np.eye(3)[None])
        S = Hcc - _schur_parts(Hcp, Hpp_inv)[0]
        # pinv: the scale gauge is free (a null direction of S without an intrinsics component)
        Sp = np.linalg.pinv(S, rcond=1e-10, hermitian=True)
        cov = Sp * sigma2
        # The sandwich's diagonal without forming it: a = the wanted columns of S^+; a track's
        # profiled gradient g_t = sum_n Jcam_n^T w r_n - Hcp_t Hpp_t^-1 gp_t; var = sum_t (a . g_t)^2.
        idx = ([i_f] if refine_focal else []) + ([i_c, i_c + 1] if refine_principal else [])
        A = np.vstack([Sp[:, idx], np.zeros((1, len(idx)))])
        a_n = A[np.where(cols >= 0, cols, nc)]  # (n, m, q)
        s_n = np.einsum("nmq,nm->nq", a_n, gcam)
        v_n = np.einsum("nmq,nmk->nqk", a_n, JcJp)
        s_t = _sum_by(point, s_n, P) - np.einsum("pqk,pk->pq", _sum_by(point, v_n, P), np.einsum("pij,pj->pi", Hpp_inv, gp))
        reduced = 2 * n - point_dof * P  # what the points leave: the cameras' share of the fit scales the meat
        robust = np.sqrt(np.maximum(np.diag(s_t.T @ s_t) * reduced / max(reduced - nc, 1), 0.0))
        if refine_focal:
            focal_std = float(np.sqrt(max(cov[i_f, i_f], 0.0)))
            focal_std_robust = float(robust[0])
        if refine_principal:
            principal_std = (float(np.sqrt(max(cov[i_c, i_c], 0.0))), float(np.sqrt(max(cov[i_c + 1, i_c + 1], 0.0))))
            principal_std_robust = (float(robust[-2]), float(robust[-1]))
    return BundleResult(R, C, float(np.exp(logf)) if refine_focal else float(focal), X, norms, it, float(np.sqrt(2 * initial / n)), float(np.sqrt(2 * cost / n)), k1, focal_std,
                        (float(c[0]), float(c[1])), principal_std, sigma2, focal_std_robust, principal_std_robust)
