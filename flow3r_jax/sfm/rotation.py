"""The rotation-only route of the sparse solver: a camera that turns about its centre (a pan, a
tripod, a phone swept around a room from one spot).

Every pair of such frames is related by the homography x_j ~ K R_ij K^-1 x_i, whatever the
depth: no fundamental matrix, essential matrix or triangulation is defined, and the global and
incremental routes refuse the clip (no pair with parallax). The focal is what the rotations pin
down instead (Hartley 1994, "Self-calibration from multiple views with a rotating camera"): only
the true K makes every pair's correspondences the image of one rotation.

1. Pairs: the verified matches of a pair count where a homography (RANSAC, 1 px) explains at
   least `min_share` of them (COLMAP's test for a rotation or a plane); only its inliers are kept.
2. Focal (unless given): for a candidate f, each pair's bearings are aligned by Kabsch's rotation
   (`flowmap.selfcal.rotation_fit`) and the pair scores the median pixel residual; the clip's
   score is the mean over pairs, minimised over f on a log grid and refined by golden-section
   search (`selfcal.minimise_log`). The focal is observable when the score 25% away is at least
   `min_contrast` times the best (with little rotation every focal fits).
3. Relative rotations from the same Kabsch fit, rotation averaging (`initial.average_rotations`),
   tracks over the pairs kept, each track a direction (the mean of its rotated bearings).
4. `bundle.bundle_adjust(fix_centres=True)`: rotations, the focal and the directions (and the
   principal point's test of `run_sfm`), every camera centre at the origin; then `run_sfm`'s
   checks of the fit. Depth is not observable: the points are directions (unit vectors here;
   `run_sfm` scales them to a median depth of 1).
"""

from __future__ import annotations

import cv2
import numpy as np

from flow3r_jax.flowmap.selfcal import minimise_log, rotation_fit
from flow3r_jax.sfm.initial import average_rotations, intrinsics
from flow3r_jax.sfm.matching import PairMatches, tracks_from_matches

__all__ = ["homography_pairs", "rotation_focal_px", "rotation_start"]


def homography_pairs(features_xy, matches, threshold_px: float = 1.0, min_share: float = 0.8, min_inliers: int = 30) -> list[PairMatches]:
    """The pairs of `matches` whose verified matches a homography explains (RANSAC within
    `threshold_px`) for at least `min_share` of them and `min_inliers` in all, with only those
    inliers (each keeps its pair's fundamental matrix; the homography is not needed later)."""
    out = []
    for m in matches:
        p1, p2 = features_xy[m.i][m.idx[:, 0]], features_xy[m.j][m.idx[:, 1]]
        if len(p1) < max(min_inliers, 4):
            continue
        H, inl = cv2.findHomography(p1, p2, cv2.RANSAC, threshold_px, maxIters=2000, confidence=0.999)
        if H is None or inl is None:
            continue
        ok = inl.ravel() > 0
        if ok.sum() >= max(min_inliers, min_share * len(ok)):
            out.append(PairMatches(m.i, m.j, m.idx[ok], m.F))
    return out


def rotation_focal_px(features_xy, pairs, principal, size: float, lo: float = 0.25, hi: float = 4.0, grid: int = 97, max_points: int = 400,
                      max_pairs: int = 200) -> tuple[float, float, float]:
    """(focal px, score px, contrast) of step 2 of the module docstring; focal bounds as multiples
    of `size` (the longer side). A pair contributes at most `max_points` matches (evenly spaced);
    of more than `max_pairs` pairs, those farthest apart in the clip are used (the wider a
    rotation, the more of the perspective terms that pin the focal down it shows)."""
    centre = np.asarray(principal, np.float64)
    if len(pairs) > max_pairs:
        pairs = sorted(pairs, key=lambda m: (m.j - m.i, len(m.idx)), reverse=True)[:max_pairs]
    data = []
    for m in pairs:
        step = max(1, len(m.idx) // max_points)
        idx = m.idx[::step]
        data.append((features_xy[m.i][idx[:, 0]], features_xy[m.j][idx[:, 1]]))

    def score(f_px: np.ndarray) -> np.ndarray:
        return np.mean([np.median(rotation_fit(a, b, f_px, centre)[1], axis=-1) for a, b in data], axis=0)

    f, s = minimise_log(score, np.geomspace(lo, hi, grid) * size)
    side = score(np.array([f * 1.25, f / 1.25]))
    return f, s, float(np.min(side) / max(s, 1e-9))


def rotation_start(feats, matches, count: int, focal: float | None, principal, size: float, rotation_thresholds, max_residual_px: float, min_contrast: float, info: dict):
    """The rotation-only initial estimate (steps 1-3 of the module docstring): (Rw (K, 3, 3),
    C (K, 3) zeros, focal, X (T, 3) unit directions, frame, track, xy) or the reason it failed (a
    str). focal: given (held) or None (estimated). max_residual_px: the largest mean median
    Kabsch residual at the focal that still counts as a rotation."""
    features_xy = feats.xy
    pairs = homography_pairs(features_xy, matches)
    info["rotation_pairs"] = len(pairs)
    if len(pairs) < count - 1:
        return f"only {len(pairs)} of {len(matches)} verified pairs are explained by a homography (>= 80% of their matches within 1 px; need {count - 1})"
    if focal is None:
        focal, score, contrast = rotation_focal_px(features_xy, pairs, principal, size)
        info["rotation_focal"] = dict(focal=round(focal, 2), residual_px=round(score, 3), contrast=round(contrast, 2))
        if score > max_residual_px:
            return f"a rotation does not explain the matches (mean median residual {score:.2f} px at the best focal {focal:.0f} px, > {max_residual_px:.2f})"
        if contrast < min_contrast:
            return f"the rotations do not determine the focal (the fit 25% away is {contrast:.2f}x the best, < {min_contrast:g}x)"
    Km_inv = np.linalg.inv(intrinsics(focal, principal))
    centre = np.asarray(principal, np.float64)
    rel = {}
    for m in pairs:
        a, b = features_xy[m.i][m.idx[:, 0]], features_xy[m.j][m.idx[:, 1]]
        R, res = rotation_fit(a, b, np.array([focal]), centre)
        ok = res[0] < 4.0
        if ok.sum() >= 20:
            rel[(m.i, m.j)] = (R[0], m.idx[ok])
    Rw, kept = average_rotations(count, rel, thresholds=rotation_thresholds)
    missing = [k for k, R in enumerate(Rw) if R is None]
    if missing:
        return f"frames {missing} share no rotation-only pair with the rest of the clip"
    used = [PairMatches(i, j, idx, np.eye(3)) for ((i, j), (_, idx)), keep in zip(rel.items(), kept) if keep]
    frame, track, xy = tracks_from_matches(feats, used)
    if len(np.unique(frame)) < count:
        return f"frames {sorted(set(range(count)) - set(np.unique(frame).tolist()))} keep no track"
    Rw = np.stack(Rw)
    bearings = np.concatenate([xy, np.ones((len(xy), 1))], 1) @ Km_inv.T
    bearings /= np.linalg.norm(bearings, axis=1, keepdims=True)
    world = np.einsum("nji,nj->ni", Rw[frame], bearings)  # R_k^T b: the direction in the world
    X = np.stack([np.bincount(track, weights=world[:, c]) for c in range(3)], 1)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    info.update(pairs_used=len(used), tracks=int(len(X)), observations=int(len(frame)))
    return Rw, np.zeros((count, 3)), float(focal), X, frame, track, xy
