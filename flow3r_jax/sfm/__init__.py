"""Sparse structure from motion for `reconstruct`: feature tracks, a global initial estimate and
bundle adjustment, in seconds on a CPU.

    run_sfm(frames)  ->  SfMResult(ok, reason, poses, focal, principal, points, observations, info)

0. Frames whose longer side exceeds 1600 px are solved on copies resized to it (one factor), so
   that the pixel thresholds below keep their meaning; the result is given in input pixels.
1. `matching`: SIFT keypoints, ratio-test matches of every frame pair (up to 40 frames; else pairs
   up to 20 frames apart and those 30, 45, 68, ... apart, where a slowly moving camera has its
   parallax), each pair verified by a fundamental matrix (MAGSAC++). The median Sampson distance
   of the verified matches is the clip's two-view noise (`info["epipolar_px"]`).
2. `initial`: the focal from the fundamental matrices (Mendonca-Cipolla); where that is
   ambiguous (fixating cameras), the candidate focal whose relative rotations agree best
   (`_focal_by_consistency`). Relative rotations from essential matrices, rotation averaging
   (spanning tree, then least squares while dropping pairs > 10, 5, 3 degrees off), camera
   centres from the epipolar constraints of the consistent pairs, tracks over those pairs
   (union-find), DLT triangulation.
3. `bundle`: Levenberg-Marquardt with the Schur complement over poses, points and the focal,
   Huber weights at 4 then 1 px; then the observations further than `OUTLIER_RATIO` (3) x the
   median residual from the model leave and it runs again (mismatches of 1-3 px, which Huber
   weights at 1 px still let pull the focal: on rendered clips it ran 0.4-0.6% long before).
4. Where step 2 fails or step 3 leaves the clip unexplained (the checks below), `incremental`:
   the frames registered one at a time by PnP against the points triangulated so far (COLMAP's
   strategy; what a fixating ring around an object needs, whose pairwise rotations are too often
   wrong for rotation averaging), then step 3 and the checks again. `info["route"]` says which
   route gave the result, `info["global_failure"]` why the first did not. Where fewer than half
   of the verified pairs agree with the averaged rotations, a clip of more than 40 frames goes to
   the incremental route directly (the fox ring: the global adjustment failed after 50 s); a
   shorter one runs both routes and keeps the lower median reprojection error
   (`info["low_agreement"]`, `info["compared"]`): on short low-parallax clips the disagreement
   is often the noise of the pairwise rotations, and the global route's answer the better one.
   A short clip whose global adjustment is still moving at its iteration limit (a wrong basin it
   crawls along) runs both routes too (`info["compare_reason"]`).
5. Where both refuse the clip, `rotation`: a camera that only rotates (a pan, a tripod) has no
   pair with parallax, but a homography explains every pair and the rotations alone determine
   the focal; rotations, focal and point directions are adjusted with every camera centre at the
   origin (`info["route"] == "rotation"`, `info["general_failure"]` why the others refused) and
   pass the same checks. Depth is not observable there: the points are directions, placed at a
   median depth of 1.

The focal's standard deviation (`info["focal_std_pct"]`) is the track-clustered sandwich of
`bundle.BundleResult.focal_std_robust`, which does not assume equal, independent noise per
observation; on 57 rendered clips its z-scores have a median |z| of 0.67-1.23 where the
classical one (`info["focal_std_iid_pct"]`) had 1.25-1.36 (0.67 is calibrated;
`benchmarks/sfm_seeds.py`).

One pinhole camera with square pixels and the principal point at the image centre, unless the
clip demands otherwise: after the adjustment the principal point is refined as well and kept
where the fit improves beyond chance (likelihood ratio > 55.3, chi-square with 2 degrees of
freedom at p = 1e-12, `info["principal_test"]`), the robust cost drops by at least 0.5% (the
constants' comments have the measurements) and it stays within 10% of the longer side from the
centre (`principal_lrt=inf` keeps the centre). Real cameras' principal points sit pixels off
centre (TUM fr3: 7.6 px; the fox's phone: 8.6 px), which a centred model pays for in rotation
error (TUM: 0.73 -> 0.40 deg relative rotation error with it refined); rendered clips keep the
centre. `radial=True` also fits COLMAP's k1 during the adjustment (reported, not exported).

`ok` is False, with the reason, where the clip does not support the solution: too few verified
pairs, frames outside the consistent view graph, an implausible focal, or a poor final fit
(median reprojection error > 1.5 px, or > 3x the two-view noise, or < 90% of the observations
within 2 px); `reconstruct` then keeps FlowMap's poses. The relative check catches an adjustment
settled in a wrong minimum that the absolute ones pass: on a 60-frame handheld clip the global
route ended at 0.71 px, 11x its 0.062 px two-view noise, with a 98% ATE (correct solutions
measured 1.2-1.7x on TUM and the rendered clips, 1.6x on the fox); the auto route then takes the
incremental one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import numpy as np

from flow3r_jax.sfm.bundle import BundleResult, bundle_adjust
from flow3r_jax.sfm.incremental import register_incrementally
from flow3r_jax.sfm.initial import (
    average_rotations,
    centres_from_epipolar,
    focal_from_fundamentals,
    intrinsics,
    point_depths,
    relative_rotations,
    triangulate,
)
from flow3r_jax.sfm.matching import DisjointSets, PairMatches, detect, frame_pairs, match_pairs, sampson_px, tracks_from_matches

__all__ = ["SfMResult", "run_sfm", "bundle_adjust", "BundleResult"]

log = logging.getLogger("flow3r_jax.sfm")

# The principal point's test: chi-square with 2 degrees of freedom exceeds 2 ln(1e12) = 55.3 with
# probability 1e-12. The fits are not exactly Gaussian and well specified, so the ratio of a
# centred camera runs above chi-square's range on long clips: measured on rendered clips (principal
# point at the centre) 0-16 for nine 10-frame clips, 6.2 at 60 frames and 34.3 at 200 frames of a
# handheld path (33810 observations; p = 1e-6, 27.6, kept a principal point 3 px off there);
# on real cameras TUM fr3 316 (its principal point is 7.6 px below the centre) and the fox 1242
# (8.6 px right).
PRINCIPAL_LRT = 2.0 * math.log(1e12)
# ... and the refined principal point must lower the robust cost by at least 0.5%: a material
# improvement, not only a detectable one. The rendered 200-frame orbit (principal point at the
# centre, 56270 observations) reached a likelihood ratio of 199 for a 0.18% drop, and keeping its
# principal point (4 px off) took its relative rotation error from 0.155 to 1.18 deg (on an orbit
# a vertical shift of the principal point trades against every camera's pitch). Measured drops:
# that orbit 0.18%; TUM 3.0%, the fox 1.2%; rendered clips cropped off centre (a test) 1.0-2.3%.
PRINCIPAL_MIN_DROP = 0.005
# The rotation-only route's focal is observable where the fit of the focal 25% away is at least
# this many times worse (flowmap.selfcal's rule for the same fit on flow).
ROTATION_MIN_CONTRAST = 1.5
ROUTES = ("auto", "global", "incremental", "rotation")
# After the adjustment, observations further than this many times the median residual from the
# model leave and the adjustment runs again (for Gaussian noise 3x the median of the residual norm
# is 3.5 sigma: 0.2% of good observations). On 10 rendered handheld clips the focal error went from
# 0.82% to 0.28% on average (the bias +0.56 -> +0.15%) and the rotation error from 0.036 to
# 0.016 deg; on 10 pure rotations 0.37 -> 0.18%, 0.016 -> 0.008 deg (5x: 0.32%, 0.24%).
OUTLIER_RATIO = 3.0
# Clips of up to this many frames match every frame pair (longer ones: `frame_pairs(wide=True)`)
# and, where most pairwise rotations disagree with the averaged ones, run both routes.
ALL_PAIRS_FRAMES = 40


@dataclasses.dataclass
class SfMResult:
    ok: bool
    reason: str  # why not ok ("" when ok)
    poses: np.ndarray | None  # (K, 4, 4) camera-to-world, frame 0 = identity, median point depth 1
    focal: float  # pixels of the input frames
    principal: tuple[float, float]  # pixels, +0.5 convention (the image centre unless the test of the module docstring moved it)
    points: np.ndarray | None  # (T, 3)
    frame: np.ndarray | None  # observations: frame (n,), track (n,), xy (n, 2) input pixels
    track: np.ndarray | None
    xy: np.ndarray | None
    info: dict

    @property
    def intrinsics(self) -> np.ndarray:
        """(3, 3) pinhole of the input frames: focal and principal point in pixels."""
        return intrinsics(self.focal, self.principal)


def _fail(reason: str, focal: float, principal, info: dict) -> SfMResult:
    info["reason"] = reason
    return SfMResult(False, reason, None, focal, principal, None, None, None, None, info)


def _to_input_pixels(result: SfMResult, input_size, solved_size) -> SfMResult:
    """A result solved on frames resized to solved_size (w, h) expressed in the input's pixels
    (continuous coordinates: x_input = x_solved * W0 / w)."""
    (H0, W0), (w, h) = input_size, solved_size
    sx, sy = W0 / w, H0 / h
    result.focal = result.focal * sx
    result.principal = (result.principal[0] * sx, result.principal[1] * sy)
    if result.xy is not None:
        result.xy = result.xy * np.array([sx, sy])
    result.info["solved_at"] = [h, w]
    if "focal" in result.info:
        result.info["focal"] = round(result.focal, 2)
    if "principal" in result.info:
        result.info["principal"] = [round(float(v), 2) for v in result.principal]
    return result


def _connected(count: int, pairs) -> bool:
    sets = DisjointSets(count)
    for i, j in pairs:
        sets.union(i, j)
    return len({sets.find(k) for k in range(count)}) == 1


def _focal_by_consistency(features_xy, matches, principal, size: float, count: int, factors=(0.5, 0.7, 1.0, 1.4, 2.0), per_frame: int = 3):
    """(focal, {candidate: score}): among focal candidates (factors x the longer side), the one
    whose relative rotations on a maximum spanning tree of the match graph plus each frame's
    `per_frame` best-matched pairs agree best after averaging (the inliers of the pairs within
    3 degrees), then the same around it at 2^(+-1/4)."""
    by_size = sorted(matches, key=lambda m: -len(m.idx))
    chosen: set[int] = set()
    sets = DisjointSets(count)  # the maximum spanning tree by matches (Kruskal): the graph connects
    for n, m in enumerate(by_size):
        if sets.union(m.i, m.j):
            chosen.add(n)
    for k in range(count):  # and every frame's `per_frame` best pairs
        chosen.update([n for n, m in enumerate(by_size) if k in (m.i, m.j)][:per_frame])
    best = [by_size[n] for n in sorted(chosen)]

    def score(f: float) -> int:
        rel = relative_rotations(features_xy, best, intrinsics(f, principal))
        if not rel:
            return 0
        Rw, kept = average_rotations(count, rel)
        if any(R is None for R in Rw):
            kept = np.zeros(len(rel), bool)
        return int(sum(len(v[1]) for v, k in zip(rel.values(), kept) if k))

    scores = {round(f * size, 1): score(f * size) for f in factors}
    f = max(scores, key=scores.get)
    for g in (f * 2 ** -0.25, f * 2**0.25):
        scores[round(g, 1)] = score(g)
    f = max(scores, key=scores.get)
    return float(f), {str(k): v for k, v in sorted(scores.items())}


def _focal_starts(f0: float, scores: dict, size: float) -> list[float]:
    """Starting focals where the fundamental matrices leave the focal ambiguous: f0 (the
    consistency candidate with the best score), the candidates with the next two scores and
    COLMAP's prior 1.2 x the longer side, none within 10% of another. The global route solves
    from f0 and, where that passes its checks, from the others: solutions whose focals differ by
    more than 10% mean the clip does not determine the focal (the project's demo orbit, a 160x224
    video: 175 and 314-346 px for a true 292, each with a good fit on its own consistent pairs),
    and the solver refuses it."""
    starts = [f0]
    ranked = sorted(((v, float(k)) for k, v in scores.items()), reverse=True)
    for f in [f for _, f in ranked[:3]] + [1.2 * size]:
        if all(abs(np.log(f / g)) > np.log(1.1) for g in starts):
            starts.append(f)
    return starts


def run_sfm(
    frames: np.ndarray,
    focal: float | None = None,
    max_gap: int | None = None,
    max_features: int = 4000,
    huber_px=(4.0, 1.0),
    iterations: int = 100,
    max_median_px: float = 1.5,
    max_epipolar_ratio: float = 3.0,
    principal_lrt: float = PRINCIPAL_LRT,
    min_within_2px: float = 0.9,
    min_matches: int = 30,
    radial: bool = False,
    rotation_thresholds=(10.0, 5.0, 3.0),
    contrast_threshold: float = 0.01,
    max_size: int = 1600,
    route: str = "auto",
) -> SfMResult:
    """Poses and one focal of uint8 frames (K, H, W, 3) (see the module docstring). focal: known
    focal in pixels (held fixed) or None (estimated, then refined). max_gap: frames matched at
    most this far apart (default: every pair up to 40 frames, else 20 apart plus the wide gaps of
    `frame_pairs`). contrast_threshold:
    SIFT's (OpenCV's default 0.04 found 26-82 tracks on rendered 240x320 clips and left the
    solution 2-5x less accurate than 0.01, which finds 540-1940; real 640x480 frames change little).
    max_size: frames with a longer side above it are solved on copies resized to it (one factor,
    area filter), so that every pixel threshold keeps its meaning; the result is in the input's
    pixels. route: "auto" (global, then incremental where it fails, then rotation-only where both
    fail), "global", "incremental" or "rotation" (one route only). max_median_px,
    max_epipolar_ratio, min_within_2px: the fit's checks (the module docstring)."""
    if route not in ROUTES:
        raise ValueError(f"run_sfm: route must be one of {', '.join(ROUTES)}, got {route!r}")
    K, H0, W0 = frames.shape[:3]
    factor = min(1.0, max_size / max(H0, W0))
    if factor < 1.0:
        import cv2

        size = (max(1, round(W0 * factor)), max(1, round(H0 * factor)))
        frames = np.stack([cv2.resize(np.asarray(fr), size, interpolation=cv2.INTER_AREA) for fr in frames])
        result = run_sfm(
            frames, None if focal is None else focal * size[0] / W0, max_gap=max_gap, max_features=max_features, huber_px=huber_px,
            iterations=iterations, max_median_px=max_median_px, max_epipolar_ratio=max_epipolar_ratio, principal_lrt=principal_lrt, min_within_2px=min_within_2px, min_matches=min_matches,
            radial=radial, rotation_thresholds=rotation_thresholds, contrast_threshold=contrast_threshold, max_size=max_size, route=route,
        )
        return _to_input_pixels(result, (H0, W0), size)
    K, H, W = frames.shape[:3]
    import cv2

    cv2.setRNGSeed(0)  # OpenCV's RANSAC draws from a process-wide generator: one clip, one answer
    principal = (W / 2.0, H / 2.0)
    info: dict = dict(frames=K)
    timing: dict = {}
    info["timing"] = timing
    t = time.time()
    feats = detect(frames, max_features, contrast_threshold)
    timing["features"] = round(time.time() - t, 2)
    pairs = frame_pairs(K, max_gap, wide=False) if max_gap is not None else frame_pairs(K, K - 1 if K <= ALL_PAIRS_FRAMES else 20, wide=True)
    t = time.time()
    log.info("sfm: %d keypoints in %d frames (%.1f s); matching %d frame pairs", sum(len(x) for x in feats.xy), K, timing["features"], len(pairs))
    matches = match_pairs(feats, pairs, min_matches=min_matches)
    timing["matching"] = round(time.time() - t, 2)
    info.update(keypoints=int(sum(len(x) for x in feats.xy)), pairs_tried=len(pairs), pairs_verified=len(matches))
    if matches:
        info["epipolar_px"] = round(float(np.median(np.concatenate([sampson_px(m.F, feats.xy[m.i][m.idx[:, 0]], feats.xy[m.j][m.idx[:, 1]]) for m in matches]))), 3)
    size = float(max(H, W))
    if len(matches) < K - 1:
        return _fail(f"only {len(matches)} frame pairs have {min_matches}+ verified matches (need at least {K - 1})", focal or size, principal, info)
    args = (feats, matches, K, (W, H), focal, principal, huber_px, iterations, radial, (max_median_px, max_epipolar_ratio), min_within_2px, principal_lrt, rotation_thresholds)
    if route == "rotation":
        return _rotation_route(*args, info)
    matched = dict(info, timing=dict(timing))  # what the rotation route starts from
    result = _general_routes(*args, info, route)
    if result.ok or route != "auto":
        return result
    # Neither route explains the clip: a camera that only rotates (no pair has parallax) is
    # solved by rotations and the focal alone.
    rotation = _rotation_route(*args, matched)
    if rotation.ok:
        rotation.info["general_failure"] = result.reason
        return rotation
    result.reason = result.info["reason"] = f"{result.reason}; rotation only: {rotation.reason}"
    result.info["rotation_failure"] = rotation.reason
    return result


def _rotation_route(feats, matches, K: int, size_wh, focal, principal, huber_px, iterations: int, radial: bool, max_median, min_within_2px: float, principal_lrt: float,
                    rotation_thresholds, info: dict) -> SfMResult:
    """The rotation-only route (`flow3r_jax.sfm.rotation`): its start, then the adjustment with
    every camera centre held at the origin and the checks of the other routes."""
    from flow3r_jax.sfm.rotation import rotation_start

    info = dict(info, timing=dict(info["timing"]), route="rotation")
    t = time.time()
    size = float(max(size_wh))
    max_residual = max_median[0]
    start = rotation_start(feats, matches, K, focal, principal, size, rotation_thresholds, max_residual, ROTATION_MIN_CONTRAST, info)
    info["timing"]["rotation_start"] = round(time.time() - t, 2)
    if isinstance(start, str):
        return _fail(start, focal or size, principal, info)
    info["focal_source"] = "given" if focal is not None else "rotations (self-calibration of a rotating camera)"
    return _adjust_and_check(*start, principal, size_wh, focal is None, huber_px, iterations, radial, max_median, min_within_2px, info, principal_lrt, fix_centres=True)


def _general_routes(feats, matches, K: int, size_wh, focal, principal, huber_px, iterations: int, radial: bool, max_median, min_within_2px: float, principal_lrt: float,
                    rotation_thresholds, info: dict, route: str) -> SfMResult:
    """The global route, the incremental one, or both (the module docstring)."""
    W, H = size_wh
    max_median_px, max_epipolar_ratio = max_median
    timing = info["timing"]
    size = float(max(H, W))
    t = time.time()
    if focal is not None:
        f0, info["focal_source"] = float(focal), "given"
    else:
        f0, ok_f, _ = focal_from_fundamentals([m.F for m in matches], principal, size)
        info["focal_fundamental"] = round(f0, 2)
        if not ok_f:
            f0, scores = _focal_by_consistency(feats.xy, matches, principal, size, K)
            info["focal_candidates"] = scores
            info["focal_source"] = "the candidate whose rotations agree best (the fundamental-matrix estimate is ambiguous)"
        else:
            info["focal_source"] = "fundamental matrices"
    timing["focal"] = round(time.time() - t, 2)
    starts = [f0]
    if info.get("focal_candidates"):  # an ambiguous focal: more starts (see _focal_starts)
        starts = _focal_starts(f0, info["focal_candidates"], size)
    first = ""
    compare = None  # the global route's result where the incremental one is tried as well
    if route != "incremental":
        info["route"] = "global"
        outcomes: list = []  # per start: its SfMResult (checks passed) or the reason it failed
        for f_start in starts:
            run_info = dict(info, timing=dict(timing))
            start = _global_start(feats, matches, K, f_start, principal, rotation_thresholds, run_info)
            disagree = route == "auto" and not isinstance(start, str) and run_info["pairs_used"] < 0.5 * len(matches)
            if disagree and K > ALL_PAIRS_FRAMES:
                # Most pairwise rotations disagree (fox, a fixating ring: 238 of 632): the
                # adjustment would not rescue the start (it was measured to fail after 50 s there).
                start = f"only {run_info['pairs_used']} of {len(matches)} verified pairs agree with the averaged rotations (< 50%)"
            elif disagree:
                # A short clip: the disagreement can be the noise of low-parallax pairs (a rendered
                # handheld clip: 17 of 45 pairs agreed, the global route's answer was right) as well as
                # a fixating camera's; the adjustment is cheap here, so both routes run and the
                # better fit wins (below).
                info["low_agreement"] = f"{run_info['pairs_used']} of {len(matches)} verified pairs agree with the averaged rotations"
            if isinstance(start, str):
                outcomes.append(start)
                if len(outcomes) == 1:
                    break
                continue
            result = _adjust_and_check(*start, principal, (W, H), focal is None, huber_px, iterations, radial, (max_median_px, max_epipolar_ratio), min_within_2px, run_info, principal_lrt)
            outcomes.append(result if result.ok else result.reason)
            if not result.ok and len(outcomes) == 1:
                break  # the other starts only check a solution's focal; there is none to check
        solved = [o for o in outcomes if isinstance(o, SfMResult)]
        reasons = [o for o in outcomes if isinstance(o, str)]
        if len(starts) > 1:  # start -> the focal it converged to (None: failed)
            info["focal_starts"] = {str(round(a, 1)): (round(o.focal, 1) if isinstance(o, SfMResult) else None) for a, o in zip(starts, outcomes)}
        if solved:
            focals = [r.focal for r in solved]
            if max(focals) > 1.1 * min(focals):
                reason = (f"the focal length is not determined by this clip: bundle adjustments from focal starts {', '.join(f'{a:.0f}' for a in starts)} px "
                          f"converge to {', '.join(f'{x:.0f}' for x in sorted(focals))} px with equally good fits (a fixating or low-parallax camera); give --focal")
                return _fail(reason, f0, principal, info)
            best = min(solved, key=lambda r: r.info["reprojection_px"]["median"])
            best.info.update({k: v for k, v in info.items() if k not in best.info})
            unconverged = route == "auto" and K <= ALL_PAIRS_FRAMES and not best.info["adjustment_converged"]
            if "low_agreement" not in info and not unconverged:
                return best
            # A short clip whose rotations mostly disagree, or whose adjustment was still moving
            # when it stopped (a wrong basin it crawls along: a rendered orbit ended there 21% off
            # in focal with 1.4 deg of rotation error, where the incremental route found 0.1%
            # and 0.03 deg with a lower median error): the incremental route runs as well.
            compare = best
            reasons = [info["low_agreement"] + " (< 50%)" if "low_agreement" in info else f"the global route's adjustment did not converge in {iterations} iterations"]
            info["compare_reason"] = best.info["compare_reason"] = reasons[0]
        if route == "global":
            return _fail(reasons[0], f0, principal, info)
        # The global estimate failed (or its adjustment does not explain the clip): incremental
        # registration on the tracks of every verified pair.
        first = reasons[0]
        if compare is None:
            info["global_failure"] = first
            log.info("sfm: the global estimate failed (%s); registering the frames incrementally", first)
        else:
            log.info("sfm: %s; registering the frames incrementally as well", first)
        first += "; "
    t = time.time()
    frame, track, xy = tracks_from_matches(feats, matches, split_conflicts=True)
    inc = register_incrementally(feats.xy, matches, K, f0, principal, frame, track, xy, refine_focal=focal is None)
    timing["incremental"] = round(time.time() - t, 2)
    if compare is not None:
        info = dict(info)  # the global result keeps its own info
        info["route"] = "incremental"
    info.update(inc.info)
    if not inc.ok:
        if compare is not None:
            compare.info["compared"] = dict(incremental=f"failed: {inc.reason}", chosen="global")
            return compare
        return _fail(f"{first}incremental registration: {inc.reason}", f0, principal, info)
    info.update(tracks=int(len(inc.points)), observations=int(len(inc.frame)))
    result = _adjust_and_check(inc.rotations, inc.centres, inc.focal, inc.points, inc.frame, inc.track, inc.xy, principal, (W, H), focal is None, huber_px, iterations, radial, (max_median_px, max_epipolar_ratio), min_within_2px, info, principal_lrt)
    if not result.ok:
        result.reason = info["reason"] = f"{first}after incremental registration: {result.reason}"
    if compare is not None:
        # Both routes ran (a short clip whose pairwise rotations mostly disagree, or whose global
        # adjustment stopped at its limit): the lower median reprojection error wins (the same
        # matches; the clips of the module docstring).
        medians = dict(global_=compare.info["reprojection_px"]["median"], incremental=result.info["reprojection_px"]["median"] if result.ok else None)
        winner = result if result.ok and medians["incremental"] < medians["global_"] else compare
        winner.info["compared"] = dict(global_median_px=medians["global_"], incremental_median_px=medians["incremental"] if result.ok else f"failed: {result.reason}",
                                       chosen=winner.info["route"])
        return winner
    return result


def _global_start(feats, matches, K: int, f0: float, principal, rotation_thresholds, info: dict):
    """The global initial estimate (rotation averaging, centres, triangulation; see the module
    docstring): (Rw, C, f0, X, frame, track, xy) or the reason it failed (a str)."""
    t = time.time()
    Km = intrinsics(f0, principal)
    rel = relative_rotations(feats.xy, matches, Km)
    Rw, kept = average_rotations(K, rel, thresholds=rotation_thresholds)
    missing = [k for k, R in enumerate(Rw) if R is None]
    if missing:
        return f"frames {missing} share no verified pair with the rest of the clip"
    rel = {k: v for k, v, keep in zip(list(rel), list(rel.values()), kept) if keep}
    if not _connected(K, rel):
        return "the pairs consistent with the averaged rotations do not connect every frame"
    info["pairs_used"] = len(rel)
    C = centres_from_epipolar(Rw, Km, feats.xy, rel)
    frame, track, xy = tracks_from_matches(feats, [PairMatches(i, j, idx, np.eye(3)) for (i, j), (_, idx) in rel.items()])
    X = triangulate(Rw, C, Km, frame, track, xy)
    depth = point_depths(Rw, C, X, frame, track)
    if np.nanmean(depth > 0) < 0.5:  # the centres' sign: points in front
        C = -C
        X = triangulate(Rw, C, Km, frame, track, xy)
        depth = point_depths(Rw, C, X, frame, track)
    # Points in front of every camera that sees them, at >= 1e-3 of the median depth (twice: the
    # scale is set to a median depth of 1 in between, and dropping tracks moves the median).
    for _ in range(2):
        positive = depth[np.isfinite(depth) & (depth > 0)]
        if not len(positive):
            return "no triangulated point lies in front of its cameras"
        C, X, depth = C / np.median(positive), X / np.median(positive), depth / np.median(positive)
        bad = np.unique(track[~(np.isfinite(depth) & (depth > 1e-3))])
        keep = ~np.isin(track, bad)
        frame, xy, depth = frame[keep], xy[keep], depth[keep]
        used, track = np.unique(track[keep], return_inverse=True)
        X = X[used]
    seen = np.unique(frame)
    if len(seen) < K:
        return f"frames {sorted(set(range(K)) - set(seen.tolist()))} keep no triangulated point"
    info["timing"]["initial"] = round(time.time() - t, 2)
    info.update(tracks=int(len(X)), observations=int(len(frame)))
    return np.stack(Rw), C, f0, X, frame, track, xy


def _adjust_and_check(Rw, C, f, X, frame, track, xy, principal, size_wh, refine_focal: bool, huber_px, iterations: int, radial: bool, max_median, min_within_2px: float, info: dict,
                      principal_lrt: float = PRINCIPAL_LRT, fix_centres: bool = False) -> SfMResult:
    """Bundle adjustment (Huber at each of `huber_px` in turn), the principal point's test (the
    module docstring), the scale set to a median point depth of 1, and the quality checks of the
    module docstring. max_median: (px, ratio to the matches' two-view epipolar error
    info["epipolar_px"]). fix_centres: the rotation-only route's adjustment (centres held)."""
    W, H = size_wh
    max_median_px, max_epipolar_ratio = max_median
    size = float(max(W, H))
    K = len(Rw)
    t = time.time()
    k1 = 0.0
    ba = None
    converged = True  # every adjustment stopped before its iteration limit
    for delta in huber_px:
        ba = bundle_adjust(Rw, C, f, X, principal, frame, track, xy, huber_px=delta, iterations=iterations, refine_focal=refine_focal, radial=radial, k1=k1, fix_centres=fix_centres)
        Rw, C, f, X, k1 = ba.rotations, ba.centres, ba.focal, ba.points, ba.k1
        converged &= ba.iterations < iterations
    # Outliers: the observations left further than OUTLIER_RATIO x the median residual from the
    # adjusted model leave (a track left with one observation leaves whole), and the adjustment
    # runs again without them (the checks below still count them, at their residuals before).
    dropped = np.zeros(0)
    far = ba.residuals > OUTLIER_RATIO * max(float(np.median(ba.residuals)), 1e-6)
    keep = ~far & (np.bincount(track[~far], minlength=len(X))[track] >= 2)
    if not keep.all() and len(np.unique(frame[keep])) == K:
        dropped = ba.residuals[~keep]
        used, track = np.unique(track[keep], return_inverse=True)
        frame, xy, X = frame[keep], xy[keep], X[used]
        ba = bundle_adjust(Rw, C, f, X, principal, frame, track, xy, huber_px=huber_px[-1], iterations=iterations, refine_focal=refine_focal, radial=radial, k1=k1, fix_centres=fix_centres)
        Rw, C, f, X, k1 = ba.rotations, ba.centres, ba.focal, ba.points, ba.k1
        converged &= ba.iterations < iterations
    info["outliers"] = dict(dropped=int(len(dropped)), ratio=OUTLIER_RATIO)
    if len(dropped):
        info.update(tracks=int(len(X)), observations=int(len(frame)))
    if math.isfinite(principal_lrt):
        # The principal point refined too, kept where the fit improves beyond chance: the
        # likelihood ratio (the drop of the weighted squared residuals over the fit's residual
        # variance) against chi-square with 2 degrees of freedom, and within 10% of the longer
        # side from the centre.
        pp = bundle_adjust(Rw, C, f, X, principal, frame, track, xy, huber_px=huber_px[-1], iterations=iterations, refine_focal=refine_focal, radial=radial, k1=k1, refine_principal=True, fix_centres=fix_centres)
        lrt = (ba.final_rms**2 - pp.final_rms**2) * len(frame) / max(ba.sigma2, 1e-12)
        drop = 1.0 - pp.final_rms**2 / max(ba.final_rms**2, 1e-300)
        shift = np.subtract(pp.principal, principal)
        keep = lrt > principal_lrt and drop >= PRINCIPAL_MIN_DROP and np.all(np.abs(shift) < 0.1 * size)
        info["principal_test"] = dict(lrt=round(float(lrt), 1), cost_drop_pct=round(100 * float(drop), 3), refined=[round(v, 2) for v in pp.principal],
                                      std_px=[round(v, 2) for v in pp.principal_std_robust], kept=bool(keep))
        if keep:
            ba, principal = pp, pp.principal
            Rw, C, f, X, k1 = ba.rotations, ba.centres, ba.focal, ba.points, ba.k1
            converged &= ba.iterations < iterations
    info["timing"]["bundle"] = round(info["timing"].get("bundle", 0.0) + time.time() - t, 2)
    scale = 1.0 / np.median(point_depths(Rw, C, X, frame, track))
    C, X = C * scale, X * scale
    res = np.concatenate([ba.residuals, dropped])  # the outliers at their residuals before they left
    info.update(
        focal=round(f, 2),
        principal=[round(float(v), 2) for v in principal],
        reprojection_px=dict(median=round(float(np.median(res)), 3), p90=round(float(np.percentile(res, 90)), 3), within_2px=round(float(np.mean(res < 2.0)), 3)),
        bundle_iterations=ba.iterations,
        adjustment_converged=bool(converged),
        k1=round(k1, 5),
        focal_std_pct=round(100 * ba.focal_std_robust, 3),  # track-clustered (BundleResult); calibration: benchmarks/sfm_seeds.py
        focal_std_iid_pct=round(100 * ba.focal_std, 3),  # assuming independent, equal noise per observation
    )
    poses = np.tile(np.eye(4), (K, 1, 1))
    poses[:, :3, :3] = np.transpose(Rw, (0, 2, 1))
    poses[:, :3, 3] = C
    result = SfMResult(True, "", poses, float(f), principal, X, frame, track, xy, info)
    if not (math.isfinite(f) and 0.1 * size < f < 10 * size):
        result.ok, result.reason = False, f"the focal came out at {f:.1f} px, implausible for {W}x{H} frames"
    elif np.median(res) > max_median_px:
        result.ok, result.reason = False, f"median reprojection error {np.median(res):.2f} px after bundle adjustment (> {max_median_px})"
    elif np.median(res) > max_epipolar_ratio * info.get("epipolar_px", np.inf):
        result.ok, result.reason = False, (
            f"median reprojection error {np.median(res):.2f} px after bundle adjustment, {np.median(res) / info['epipolar_px']:.1f}x the matches' median two-view "
            f"epipolar error {info['epipolar_px']:.3f} px (> {max_epipolar_ratio:g}x: the adjustment settled in a wrong solution)")
    elif np.mean(res < 2.0) < min_within_2px:
        result.ok, result.reason = False, f"only {100 * np.mean(res < 2.0):.0f}% of the observations within 2 px after bundle adjustment (< {100 * min_within_2px:.0f}%)"
    info["reason"] = result.reason
    return result
