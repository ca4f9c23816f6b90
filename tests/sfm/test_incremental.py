"""Incremental registration (`flow3r_jax.sfm.incremental`) on exact synthetic observations, and
the solver's fallback to it (`run_sfm(route=...)`) on a rendered clip."""

from __future__ import annotations

import numpy as np
import pytest

from flow3r_jax.sfm.incremental import register_incrementally
from flow3r_jax.sfm.matching import PairMatches, tracks_from_matches
from tests.sfm.scenes import F_TRUE, PRINCIPAL, make_scene, project, rotation_angle_deg


def _umeyama(src: np.ndarray, dst: np.ndarray):
    """(s, R, t) minimising |s R src + t - dst| (Umeyama 1991), written out here."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    s = np.trace(np.diag(S) @ D) / np.mean(np.sum(a**2, 1))
    return s, R, md - s * R @ ms


def _matches_of(xy: np.ndarray, visible: np.ndarray):
    """Keypoints of every frame = the projections of the points it sees (in a shuffled order, so
    that keypoint index != point index), and every frame pair matched on the points both see."""
    rng = np.random.default_rng(5)
    K = len(xy)
    features_xy, index_of = [], []
    for k in range(K):
        pts = np.flatnonzero(visible[k])
        pts = pts[rng.permutation(len(pts))]
        features_xy.append(xy[k, pts])
        index_of.append({int(p): n for n, p in enumerate(pts)})
    matches = []
    for i in range(K):
        for j in range(i + 1, K):
            both = np.flatnonzero(visible[i] & visible[j])
            if len(both) >= 30:
                idx = np.array([(index_of[i][int(p)], index_of[j][int(p)]) for p in both], np.int64)
                matches.append(PairMatches(i, j, idx, np.eye(3)))
    return features_xy, matches


@pytest.fixture(scope="module")
def scene():
    R, C, X = make_scene(seed=4, frames=7, candidates=260)
    xy, _ = project(R, C, F_TRUE, X)
    xy = xy + np.random.default_rng(0).normal(0.0, 0.3, xy.shape)  # keypoint noise
    return R, C, X, xy


def _check_against_truth(Rw, C_est, R, C):
    """Every relative rotation within 0.2 deg; centres within 1% of the path's extent after a
    similarity (Umeyama)."""
    i, j = np.triu_indices(len(R), 1)
    rel_est = np.einsum("nij,nkj->nik", Rw[i], Rw[j])
    rel_true = np.einsum("nij,nkj->nik", R[i], R[j])
    assert rotation_angle_deg(rel_est, rel_true).max() < 0.2
    s, Ra, t = _umeyama(C_est, C)
    err = np.linalg.norm(s * C_est @ Ra.T + t - C, axis=1)
    assert err.max() < 0.01 * np.linalg.norm(C - C.mean(0), axis=1).max(), err


def test_incremental_registration_recovers_poses_and_focal(scene):
    """Every frame registered from a 5% wrong focal; poses within 0.2 deg / 1% of the truth, the
    focal refined to within 0.5%, every kept observation within the noise."""
    R, C, X, xy = scene
    visible = np.ones(xy.shape[:2], bool)
    features_xy, matches = _matches_of(xy, visible)
    from flow3r_jax.sfm.matching import Features

    frame, track, obs_xy = tracks_from_matches(Features(features_xy, [np.zeros((len(x), 128), np.float32) for x in features_xy]), matches)
    res = register_incrementally(features_xy, matches, len(R), 1.05 * F_TRUE, PRINCIPAL, frame, track, obs_xy)
    assert res.ok, res.reason
    assert res.info["registered"] == len(R) and sorted(res.info["registration_order"]) == list(range(len(R)))
    a, b = res.info["initial_pair"]
    assert res.info["registration_order"][:2] == [a, b] and res.info["initial_angle_deg"] >= 2.0
    assert abs(res.focal - F_TRUE) / F_TRUE < 0.005, res.focal
    _check_against_truth(res.rotations, res.centres, R, C)
    Xc = np.einsum("nij,nj->ni", res.rotations[res.frame], res.points[res.track] - res.centres[res.frame])
    px = res.focal * Xc[:, :2] / Xc[:, 2:] + np.asarray(PRINCIPAL)
    err = np.linalg.norm(px - res.xy, axis=1)
    assert np.median(err) < 0.5 and err.max() < 4.0
    assert len(res.points) >= 0.9 * len(X)


def test_incremental_registration_reports_a_frame_it_cannot_register(scene):
    """A frame that shares too few points with the others is named in the refusal."""
    R, C, X, xy = scene
    visible = np.ones(xy.shape[:2], bool)
    visible[3, 20:] = False  # frame 3 sees only 20 points (< min_inliers)
    features_xy, matches = _matches_of(xy, visible)
    from flow3r_jax.sfm.matching import Features

    frame, track, obs_xy = tracks_from_matches(Features(features_xy, [np.zeros((len(x), 128), np.float32) for x in features_xy]), matches)
    res = register_incrementally(features_xy, matches, len(R), F_TRUE, PRINCIPAL, frame, track, obs_xy)
    assert not res.ok and "[3]" in res.reason and res.rotations is None
    assert res.info["registered"] == len(R) - 1


@pytest.fixture(scope="module")
def rendered_clip():
    from data_pipelines.synthetic import SceneConfig, generate_clip

    cfg = SceneConfig(height=240, width=320, frames=10, dynamic=False, preset="orbit", kind="room", offsets=(1,), flow_px=(4.0, 8.0))
    return generate_clip(cfg, seed=0)


def test_run_sfm_routes_on_a_rendered_orbit(rendered_clip):
    """route="incremental" solves the rendered orbit; route="auto" with a global start that keeps
    almost no pair (forced: a 0.001-degree rotation threshold) also runs the incremental route
    on this 10-frame clip and ends with the better of the two, saying why; route="global" with
    the same threshold answers with its own route alone, right or refused. (Which of the two the
    global route does depends on the frames' last bits: under the suite's XLA flags its
    adjustment fails the two-view check, without them it passes and wins on the fit.)"""
    from flow3r_jax.flowmap.metrics import trajectory_errors
    from flow3r_jax.sfm import run_sfm

    clip = rendered_clip
    images = np.asarray(clip["images"])
    f_true = float(clip["intrinsics"][0][0, 0])
    gt = np.asarray(clip["poses"], np.float64)

    def accurate(res):
        err = trajectory_errors(res.poses, gt)
        return err["rot_err_deg"] < 0.3 and err["ate_rel"] < 0.02 and abs(res.focal - f_true) / f_true < 0.02

    inc = run_sfm(images, route="incremental")
    assert inc.ok, inc.reason
    assert inc.info["route"] == "incremental" and "global_failure" not in inc.info
    assert accurate(inc), trajectory_errors(inc.poses, gt)
    assert np.allclose(inc.poses[0], np.eye(4))  # frame 0 is the gauge whichever pair started

    auto = run_sfm(images, rotation_thresholds=(0.001,))
    assert auto.ok and accurate(auto), auto.reason
    assert "agree with the averaged rotations" in auto.info["low_agreement"]
    if "compared" in auto.info:  # both routes answered: the lower median reprojection error won
        compared = auto.info["compared"]
        medians = (compared["global_median_px"], compared["incremental_median_px"])
        assert compared["chosen"] == auto.info["route"] == ("global" if medians[0] <= medians[1] else "incremental"), compared
    else:  # the global route failed its checks: the incremental route's answer, and why
        assert auto.info["route"] == "incremental" and "after bundle adjustment" in auto.info["global_failure"], auto.info
        np.testing.assert_allclose(auto.poses, inc.poses, atol=1e-6)

    glob = run_sfm(images, rotation_thresholds=(0.001,), route="global")
    assert glob.info["route"] == "global" and "compared" not in glob.info
    assert (not glob.ok and glob.reason) or accurate(glob)
    with pytest.raises(ValueError, match="route"):
        run_sfm(images, route="sideways")


def test_a_fit_much_worse_than_the_two_view_noise_is_refused_on_both_routes(rendered_clip):
    """The solver compares the adjusted fit with the matches' own two-view noise (median Sampson
    distance under their fundamental matrices). Found with the rendered orbit under the test
    suite's XLA flags (its frames differ in the last bits): the global route settled at 0.18 px
    median, 3.3x the 0.054 px two-view noise, with a focal 19% off and 1.5 deg of rotation error,
    and passed every other check; refused now, the incremental route solves it. The auto route's
    answer is accurate and within 2x of the noise; a ratio demanded below what any solution
    reaches (1.0) makes the global route fail the check, the auto route fall back to the
    incremental one and that fail it too, each saying why."""
    from flow3r_jax.flowmap.metrics import trajectory_errors
    from flow3r_jax.sfm import run_sfm

    images = np.asarray(rendered_clip["images"])
    f_true = float(rendered_clip["intrinsics"][0][0, 0])
    auto = run_sfm(images)
    assert auto.ok, auto.reason
    err = trajectory_errors(auto.poses, np.asarray(rendered_clip["poses"], np.float64))
    assert err["rot_err_deg"] < 0.3 and abs(auto.focal - f_true) / f_true < 0.02, (err, auto.focal, f_true)
    ratio = auto.info["reprojection_px"]["median"] / auto.info["epipolar_px"]
    assert 0.5 < ratio < 2.0, ratio
    strict = run_sfm(images, max_epipolar_ratio=1.0)
    assert not strict.ok and strict.info["route"] == "incremental"
    assert "two-view epipolar error" in strict.info["global_failure"] and "two-view epipolar error" in strict.reason, strict.reason


@pytest.mark.slow
def test_a_low_parallax_handheld_clip_is_not_answered_with_a_wrong_minimum():
    """48 rendered frames of a handheld camera that mostly turns (1.5-2.5 px of flow between
    frames, 144x192): the global route's adjustment settles in a wrong minimum with a plausible
    fit (measured: ATE 98% of the radius, 1.4 deg of rotation error, median 0.43 px against
    0.06 px of two-view noise) and, before the two-view check, was returned. The solver's answer
    must be the right one (it comes from the incremental route)."""
    from data_pipelines.synthetic.clip import build_scene
    from data_pipelines.synthetic.config import SceneConfig
    from flow3r_jax.flowmap.metrics import trajectory_errors
    from flow3r_jax.sfm import run_sfm

    scene = build_scene(SceneConfig(height=144, width=192, frames=48, preset="handheld", flow_px=(1.5, 2.5), offsets=(1,)), 0)
    frames = np.stack([scene.render(i)["image"] for i in range(48)])
    f_true = float(np.asarray(scene.intrinsics).reshape(-1, 3, 3)[0, 0, 0])
    res = run_sfm(frames)
    assert res.ok, res.reason
    err = trajectory_errors(res.poses, np.asarray(scene.poses, np.float64))
    assert err["ate_rel"] < 0.05 and err["rot_err_deg"] < 0.2, err
    assert abs(res.focal - f_true) / f_true < 0.05, (res.focal, f_true)
    assert res.info["reprojection_px"]["median"] < 3.0 * res.info["epipolar_px"]


def test_incremental_route_refuses_a_camera_that_only_rotates():
    """A rendered pan whose camera only rotates: a homography explains every pair, so no initial
    pair is taken (without that check a pair whose 'parallax' is noise, 3 degrees, started a
    reconstruction with 0.9-degree rotation errors), and the solver refuses the clip."""
    import dataclasses

    from data_pipelines.synthetic.clip import build_scene
    from data_pipelines.synthetic.config import SceneConfig
    from flow3r_jax.sfm import run_sfm

    scene = build_scene(SceneConfig(height=144, width=192, frames=6, preset="pan", focal=0.8, flow_px=(5.0, 7.0), offsets=(1,)), 3)
    poses = scene.poses.copy()
    poses[:, :3, 3] = poses[0, :3, 3]
    scene = dataclasses.replace(scene, poses=poses, _frames={})
    frames = np.stack([scene.render(i)["image"] for i in range(6)])
    res = run_sfm(frames, route="incremental")  # (the auto route then solves it by rotations alone: tests/sfm/test_rotation.py)
    assert not res.ok and res.info["route"] == "incremental" and "parallax" in res.reason, res.reason
    assert res.info["pairs_verified"] >= 5  # matched and verified: refused for the geometry, not for lack of matches


@pytest.fixture(scope="module")
def orbit_2():
    from data_pipelines.synthetic import SceneConfig, generate_clip

    return generate_clip(SceneConfig(height=240, width=320, frames=10, dynamic=False, preset="orbit", kind="room", offsets=(1,), flow_px=(4.0, 8.0)), seed=2)


def test_a_short_clip_whose_pairwise_rotations_disagree_runs_both_routes(orbit_2):
    """Where fewer than half of the verified pairs agree with the averaged rotations (here forced
    on a rendered orbit by a 0.1-degree threshold: 9-10 of 45 agree), a clip of <= 40 frames runs
    the global route's adjustment and the incremental route, and keeps the better fit (the lower
    median reprojection error), saying so. The case that asked for it: a rendered 10-frame
    handheld clip of small baselines (seed 4 of benchmarks/sfm_seeds.py), 17 of 45 pairs
    agreeing, went to the incremental route alone (11.8% ATE, 0.66 deg, focal 5.3% off) where
    the global route's fit was better (median 0.054 vs 0.096 px) and its answer right (0.03 deg,
    0.6%); that clip's frames change in the last bits under the suite's XLA flags, and with them
    its outcome, so it is not the test."""
    from flow3r_jax.flowmap.metrics import trajectory_errors
    from flow3r_jax.sfm import run_sfm

    clip = orbit_2
    f_true = float(clip["intrinsics"][0][0, 0])
    res = run_sfm(np.asarray(clip["images"]), rotation_thresholds=(0.1,))
    assert res.ok, res.reason
    assert "agree with the averaged rotations" in res.info["low_agreement"]
    compared = res.info["compared"]
    medians = (compared["global_median_px"], compared["incremental_median_px"])
    assert compared["chosen"] == res.info["route"] == ("global" if medians[0] <= medians[1] else "incremental"), compared
    assert res.info["reprojection_px"]["median"] == min(medians)
    err = trajectory_errors(res.poses, np.asarray(clip["poses"], np.float64))
    assert err["rot_err_deg"] < 0.3 and err["ate_rel"] < 0.02, err
    assert abs(res.focal - f_true) / f_true < 0.02


def test_a_global_adjustment_stopped_at_its_limit_is_compared_with_the_incremental_route(orbit_2):
    """A short clip whose global adjustment is still moving at its iteration limit (forced here:
    6 iterations) runs the incremental route as well and keeps the lower median reprojection
    error, saying why, where the unconverged global answer passes its checks (under the suite's
    XLA flags it does; without them it fails the two-view check and the incremental route
    answers alone, as it should). Where the default limit lets the adjustment converge, a global
    answer stands alone."""
    from flow3r_jax.sfm import run_sfm

    images = np.asarray(orbit_2["images"])
    res = run_sfm(images, iterations=6)
    assert res.ok and not res.info["adjustment_converged"], res.info
    if "global_failure" in res.info:
        assert res.info["route"] == "incremental" and "after bundle adjustment" in res.info["global_failure"]
    else:
        assert res.info["compare_reason"] == "the global route's adjustment did not converge in 6 iterations", res.info
        compared = res.info["compared"]
        medians = (compared["global_median_px"], compared["incremental_median_px"])
        assert compared["chosen"] == res.info["route"] == ("global" if medians[0] <= medians[1] else "incremental"), compared
    plain = run_sfm(images)
    assert plain.ok, plain.reason
    if plain.info["route"] == "global" and plain.info["adjustment_converged"]:  # under the suite's flags
        assert "compared" not in plain.info and "compare_reason" not in plain.info
    else:
        assert "compared" in plain.info or "global_failure" in plain.info, plain.info
