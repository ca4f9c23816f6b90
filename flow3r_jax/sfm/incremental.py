"""Incremental registration, the sparse solver's second route (COLMAP's strategy, in brief):
where the global estimate fails (typically a fixating ring around an object, whose pairwise
essential-matrix rotations are too often wrong for rotation averaging), the cameras are added one
at a time against the points triangulated so far.

1. **Initial pair**: among the verified pairs with the most matches (and those with the most
   matches times their distance in frames, for long videos), the first whose two-view
   reconstruction (essential matrix, cheirality) has a median triangulation angle of at least
   16, else 8, 4, 2 degrees and `min_inliers` inliers; pairs whose essential-matrix inliers a
   homography explains for 80% or more (within 1 px) are passed over, as in COLMAP (a camera that
   only rotates, or a plane: the translation is not observable).
2. **Registration**: the next frame is the unregistered one seeing the most triangulated points;
   its pose by PnP (RANSAC on EPnP, `pnp_px` threshold, then Levenberg-Marquardt on the inliers).
   A frame with fewer than `min_inliers` inliers (or < 25% of its 2D-3D matches) waits for more
   points and is retried after the next registration; the run stops when no frame registers.
3. **Triangulation**: every track seen by >= 2 registered frames without a point yet (DLT over its
   registered observations), kept where it lies in front of them, reprojects within `max_px` and
   spans a triangulation angle of >= `min_angle_deg`; observations of existing points by the new
   frame join where they reproject within `max_px`.
4. **Bundle adjustment** over the registered frames whenever their count has grown by a quarter
   (and at 3, 4, 5): Huber at `max_px`, the focal refined from 3 frames on; then observations
   beyond `max_px` are dropped, and points left with < 2 observations.

Returns world-to-camera rotations and centres of every frame, frame 0 at the origin with the
identity rotation (the caller runs the final adjustment and the quality checks).
"""

from __future__ import annotations

import dataclasses
import logging

import cv2
import numpy as np

from flow3r_jax.sfm.bundle import bundle_adjust
from flow3r_jax.sfm.initial import intrinsics, point_depths, triangulate

__all__ = ["IncrementalResult", "register_incrementally"]

log = logging.getLogger("flow3r_jax.sfm")


@dataclasses.dataclass
class IncrementalResult:
    ok: bool
    reason: str
    rotations: np.ndarray | None  # (K, 3, 3) world-to-camera
    centres: np.ndarray | None  # (K, 3)
    focal: float
    points: np.ndarray | None  # (T, 3), tracks renumbered 0..T-1
    frame: np.ndarray | None  # used observations
    track: np.ndarray | None
    xy: np.ndarray | None
    info: dict


def _reprojection(Rw, C, Km, X, frame, track, xy):
    """(errors (n,) pixels, depths (n,)) of the observations."""
    Xc = np.einsum("nij,nj->ni", Rw[frame], X[track] - C[frame])
    z = Xc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = Xc[:, :2] / z[:, None] * Km[0, 0] + Km[:2, 2][None]
    err = np.linalg.norm(uv - xy, axis=1)
    return np.where(np.isfinite(err), err, np.inf), z


def _max_angles_deg(C, X, frame, track, count: int) -> np.ndarray:
    """Per track (count,), twice the largest angle between an observing ray and the track's mean
    ray: its triangulation angle (exact for two observations)."""
    rays = X[track] - C[frame]
    rays /= np.linalg.norm(rays, axis=1, keepdims=True) + 1e-300
    mean = np.zeros((count, 3))
    np.add.at(mean, track, rays)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True) + 1e-300
    cos = np.clip(np.sum(rays * mean[track], 1), -1.0, 1.0)
    out = np.zeros(count)
    np.maximum.at(out, track, 2.0 * np.degrees(np.arccos(cos)))
    return out


def _initial_pair(features_xy, matches, Km, min_inliers: int, candidates: int = 30, max_homography_ratio: float = 0.8):
    """(i, j, R, t, median angle) of the first pair passing the angle thresholds (see the module
    docstring), or None."""
    tried = []
    # the pairs with the most matches (neighbours, on a video) and those with the most matches
    # times their distance in frames (wider baselines on a long clip)
    by_count = sorted(matches, key=lambda m: -len(m.idx))[:candidates]
    by_reach = sorted(matches, key=lambda m: -len(m.idx) * abs(m.j - m.i))[:candidates]
    for m in by_count + [m for m in by_reach if all(m is not c for c in by_count)]:
        p1, p2 = features_xy[m.i][m.idx[:, 0]], features_xy[m.j][m.idx[:, 1]]
        try:
            E, inl = cv2.findEssentialMat(p1, p2, Km, cv2.RANSAC, 0.999, 1.0)
            if E is None or E.shape != (3, 3):
                continue
            _, R, t, inl2 = cv2.recoverPose(E, p1, p2, Km, mask=inl.copy())
        except cv2.error:
            continue
        ok = inl2.ravel() > 0
        if ok.sum() < min_inliers:
            continue
        H, h_inl = cv2.findHomography(p1[ok], p2[ok], cv2.RANSAC, 1.0)
        if H is not None and h_inl is not None and h_inl.sum() >= max_homography_ratio * ok.sum():
            continue  # a rotation (or a plane): the translation is not observable from this pair
        Rw = np.stack([np.eye(3), R])
        C = np.stack([np.zeros(3), -R.T @ t.ravel()])
        n = int(ok.sum())
        frame = np.repeat(np.array([[0, 1]]), n, 0).ravel()
        track = np.repeat(np.arange(n), 2)
        xy = np.stack([p1[ok], p2[ok]], 1).reshape(-1, 2)
        X = triangulate(Rw, C, Km, frame, track, xy)
        angle = float(np.median(_max_angles_deg(C, X, frame, track, n)))
        tried.append((angle, m.i, m.j, R, t.ravel()))
    for threshold in (16.0, 8.0, 4.0, 2.0):
        for angle, i, j, R, t in tried:
            if angle >= threshold:
                return i, j, R, t, angle
    return None


def register_incrementally(
    features_xy,
    matches,
    count: int,
    focal: float,
    principal,
    frame: np.ndarray,
    track: np.ndarray,
    xy: np.ndarray,
    refine_focal: bool = True,
    min_inliers: int = 30,
    pnp_px: float = 4.0,
    max_px: float = 4.0,
    min_angle_deg: float = 1.5,
) -> IncrementalResult:
    """Poses of `count` frames by incremental registration (see the module docstring).
    features_xy, matches: the verified keypoints and pairs; frame, track, xy: every observation
    of the tracks over those pairs (`tracks_from_matches`). focal: the starting focal (pixels),
    refined in the adjustments unless `refine_focal` is False."""
    info: dict = dict(route="incremental")
    Km = intrinsics(focal, principal)
    init = _initial_pair(features_xy, matches, Km, min_inliers)
    if init is None:
        return IncrementalResult(False, "no frame pair has enough inliers and parallax to start from", None, None, focal, None, None, None, None, info)
    a, b, R, t, angle = init
    info.update(initial_pair=[int(a), int(b)], initial_angle_deg=round(angle, 2))
    T = int(track.max()) + 1
    Rw = np.tile(np.eye(3), (count, 1, 1))
    C = np.zeros((count, 3))
    Rw[b], C[b] = R, -R.T @ t
    registered = np.zeros(count, bool)
    registered[[a, b]] = True
    order = [a, b]  # registration order: order[0] stays fixed in every adjustment
    X = np.zeros((T, 3))
    has_point = np.zeros(T, bool)
    used = np.zeros(len(frame), bool)
    f = float(focal)

    def triangulate_new() -> int:
        nonlocal X
        Km = intrinsics(f, principal)
        reg_obs = registered[frame]
        counts = np.bincount(track[reg_obs], minlength=T)
        cand = (counts >= 2) & ~has_point
        if not cand.any():
            return 0
        obs = reg_obs & cand[track]
        ids, local = np.unique(track[obs], return_inverse=True)
        Xn = triangulate(Rw, C, Km, frame[obs], local, xy[obs])
        err, z = _reprojection(Rw, C, Km, Xn, frame[obs], local, xy[obs])
        good = np.isfinite(Xn).all(1)[local] & (z > 0) & (err < max_px)
        n_good = np.bincount(local[good], minlength=len(ids))
        angles = _max_angles_deg(C, np.nan_to_num(Xn), frame[obs][good], local[good], len(ids))
        keep = (n_good >= 2) & (angles >= min_angle_deg)
        X[ids[keep]] = Xn[keep]
        has_point[ids[keep]] = True
        sel = np.flatnonzero(obs)[good & keep[local]]
        used[sel] = True
        return int(keep.sum())

    def adjust(iterations: int) -> None:
        nonlocal f, X
        sel = np.flatnonzero(used)
        pos = np.full(count, -1)
        pos[order] = np.arange(len(order))
        ids, local = np.unique(track[sel], return_inverse=True)
        ba = bundle_adjust(
            Rw[order], C[order], f, X[ids], principal, pos[frame[sel]], local, xy[sel],
            huber_px=max_px, iterations=iterations, refine_focal=refine_focal and len(order) >= 3,
        )
        Rw[order], C[order], X[ids] = ba.rotations, ba.centres, ba.points
        f = ba.focal
        used[sel[ba.residuals > max_px]] = False
        n_used = np.bincount(track[used], minlength=T)
        lost = has_point & (n_used < 2)
        has_point[lost] = False
        used[lost[track]] = False

    triangulate_new()
    adjust(30)
    last_adjusted = 2
    waiting: set[int] = set()
    while len(order) < count:
        Km = intrinsics(f, principal)
        candidates = [k for k in range(count) if not registered[k] and k not in waiting]
        if not candidates:
            break
        visible = np.bincount(frame[has_point[track] & ~registered[frame]], minlength=count)  # 2D-3D matches
        k = max(candidates, key=lambda k: visible[k])
        if visible[k] < min_inliers:
            break
        obs = np.flatnonzero((frame == k) & has_point[track])
        try:
            ok, rvec, tvec, inl = cv2.solvePnPRansac(
                X[track[obs]], xy[obs], Km, None, iterationsCount=1000, reprojectionError=pnp_px, confidence=0.9999, flags=cv2.SOLVEPNP_EPNP
            )
        except cv2.error:
            ok, inl = False, None
        n_inl = 0 if inl is None else len(inl)
        if not ok or n_inl < max(min_inliers, 0.25 * len(obs)):
            waiting.add(k)
            continue
        inl = inl.ravel()
        rvec, tvec = cv2.solvePnPRefineLM(X[track[obs[inl]]], xy[obs[inl]], Km, None, rvec, tvec)
        Rk = cv2.Rodrigues(rvec)[0]
        Rw[k], C[k] = Rk, -Rk.T @ tvec.ravel()
        registered[k] = True
        order.append(k)
        waiting.clear()
        err, z = _reprojection(Rw, C, Km, X, frame[obs], track[obs], xy[obs])
        used[obs[(err < max_px) & (z > 0)]] = True
        triangulate_new()
        if len(order) <= 5 or len(order) >= 1.25 * last_adjusted or len(order) == count:
            adjust(20)
            last_adjusted = len(order)
    missing = [int(k) for k in range(count) if not registered[k]]
    info.update(registered=int(registered.sum()), registration_order=[int(k) for k in order])
    if missing:
        return IncrementalResult(False, f"frames {missing} could not be registered (PnP against the triangulated points)", None, None, f, None, None, None, None, info)
    # Retriangulation with the final poses: observations of existing points that now reproject
    # within max_px rejoin, tracks not triangulated so far get their points, then the last pass.
    Km = intrinsics(f, principal)
    idle = np.flatnonzero(~used & has_point[track])
    err, z = _reprojection(Rw, C, Km, X, frame[idle], track[idle], xy[idle])
    used[idle[(err < max_px) & (z > 0)]] = True
    info["retriangulated"] = triangulate_new()
    info["rejoined"] = int(np.sum((err < max_px) & (z > 0)))
    adjust(50)
    # Frame 0 as the gauge (identity pose), like the global route: X' = R_0 (X - C_0).
    R0, C0 = Rw[0].copy(), C[0].copy()
    Rw, C, X = Rw @ R0.T, (C - C0) @ R0.T, (X - C0) @ R0.T
    sel = np.flatnonzero(used)
    ids, local = np.unique(track[sel], return_inverse=True)
    depth = point_depths(Rw, C, X[ids], frame[sel], local)
    if np.any(depth <= 0):
        keep = np.ones(len(ids), bool)
        keep[np.unique(local[depth <= 0])] = False
        sel = sel[keep[local]]
        ids, local = np.unique(track[sel], return_inverse=True)
    return IncrementalResult(True, "", Rw, C, f, X[ids], frame[sel], local, xy[sel], info)
