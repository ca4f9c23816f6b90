"""The whole solver (`flow3r_jax.sfm.run_sfm`) on a rendered clip with exact poses, and its refusal
of a clip without texture.
"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def rendered_clip():
    from data_pipelines.synthetic import SceneConfig, generate_clip

    cfg = SceneConfig(height=240, width=320, frames=10, dynamic=False, preset="handheld", kind="room", offsets=(1,), flow_px=(4.0, 8.0))
    return generate_clip(cfg, seed=2)


def test_run_sfm_on_a_rendered_clip(rendered_clip):
    """The whole solver (SIFT tracks -> initial estimate -> bundle adjustment) on a rendered
    handheld clip, against its exact poses and focal."""
    from flow3r_jax.flowmap.metrics import trajectory_errors
    from flow3r_jax.sfm import run_sfm

    clip = rendered_clip
    r = run_sfm(np.asarray(clip["images"]))
    assert r.ok, r.reason
    f_true = float(clip["intrinsics"][0][0, 0])
    assert abs(r.focal - f_true) / f_true < 0.02, (r.focal, f_true)
    assert np.allclose(r.poses[0], np.eye(4))
    err = trajectory_errors(r.poses, np.asarray(clip["poses"], np.float64))
    assert err["rot_err_deg"] < 0.5 and err["ate_rel"] < 0.1, err
    assert r.info["reprojection_px"]["median"] < 0.5


def test_run_sfm_refuses_a_clip_without_texture():
    from flow3r_jax.sfm import run_sfm

    frames = np.full((5, 120, 160, 3), 128, np.uint8)
    r = run_sfm(frames)
    assert not r.ok and r.poses is None and "verified matches" in r.reason


def test_run_sfm_solves_large_frames_at_max_size_and_answers_in_input_pixels(rendered_clip):
    """Frames above max_size are solved on resized copies; focal, principal point and keypoints
    come back in the input's pixels (here the clip enlarged 2x, solved at its own size)."""
    import cv2

    from flow3r_jax.flowmap.metrics import trajectory_errors
    from flow3r_jax.sfm import run_sfm

    clip = rendered_clip
    big = np.stack([cv2.resize(np.asarray(im), (640, 480), interpolation=cv2.INTER_CUBIC) for im in clip["images"]])
    r = run_sfm(big, max_size=320)
    assert r.ok, r.reason
    assert r.info["solved_at"] == [240, 320] and r.principal == (320.0, 240.0)
    f_true = 2.0 * float(clip["intrinsics"][0][0, 0])
    assert abs(r.focal - f_true) / f_true < 0.02, (r.focal, f_true)
    assert r.xy.max(0)[0] > 320  # keypoints in the 640-wide frames
    err = trajectory_errors(r.poses, np.asarray(clip["poses"], np.float64))
    assert err["rot_err_deg"] < 0.5 and err["ate_rel"] < 0.1, err
    given = run_sfm(big, focal=f_true, max_size=320)  # a given focal is taken in input pixels too
    assert given.ok and given.focal == pytest.approx(f_true, rel=1e-12)


def test_run_sfm_finds_an_off_centre_principal_point(rendered_clip):
    """The rendered clip cropped by 24 rows at the top and 16 columns at the left: its principal
    point sits at (144, 96), 8 and 12 px from the crop's centre. The solver's likelihood-ratio test
    keeps the refined principal point, which lands within 3 px of the truth, and the poses and
    focal are better than those of the centred model (principal_lrt=inf). On the uncropped clip
    the test keeps the centre (test_run_sfm_solves_large_frames_at_max_size...)."""
    from flow3r_jax.eval.metrics.pose_angular import relative_pose_errors
    from flow3r_jax.flowmap.metrics import trajectory_errors
    from flow3r_jax.sfm import run_sfm

    clip = rendered_clip
    K = np.asarray(clip["intrinsics"])[0]
    true_c = np.array([K[0, 2] - 16.0, K[1, 2] - 24.0])  # +0.5 convention, like the solver's
    images = np.ascontiguousarray(np.asarray(clip["images"])[:, 24:, 16:])
    gt = np.asarray(clip["poses"], np.float64)
    found = run_sfm(images)
    centred = run_sfm(images, principal_lrt=np.inf)
    assert found.ok and centred.ok, (found.reason, centred.reason)
    assert found.info["principal_test"]["kept"] and found.info["principal_test"]["lrt"] > 55.3
    assert centred.principal == (152.0, 108.0) and "principal_test" not in centred.info
    assert np.all(np.abs(np.asarray(found.principal) - true_c) < 3.0), (found.principal, true_c)
    np.testing.assert_allclose(found.intrinsics[:2, 2], found.principal)
    rot = [relative_pose_errors(r.poses, gt)[0].mean() for r in (found, centred)]
    ate = [trajectory_errors(r.poses, gt)["ate_rel"] for r in (found, centred)]
    focal = [abs(r.focal / K[0, 0] - 1) for r in (found, centred)]
    assert rot[0] < 0.7 * rot[1] and ate[0] < 0.7 * ate[1] and focal[0] < 0.7 * focal[1], (rot, ate, focal)


@pytest.mark.slow
def test_run_sfm_never_answers_a_wrong_focal_on_the_demo_orbit(tmp_path):
    """The project's demo video (a 16-frame orbit, 160x224, through an MP4 encoder): the
    fundamental matrices leave the focal ambiguous, and bundle adjustments from different starting
    focals can reach good fits at different focals (one 40% off the truth with 3.9 deg of
    rotation error, which the solver used to return). Whatever the RANSAC draws (the outcome on
    this clip changes with the process's numerics), the solver either refuses with the reason,
    having seen starts end more than 10% apart, or answers a focal within 5% of the truth that
    every successful start agrees with; with the true focal given it solves the clip."""
    from data_pipelines.synthetic import SceneConfig, generate_clip
    from data_pipelines.synthetic.video import write_video
    from flow3r_jax.data.frames import read_frames
    from flow3r_jax.flowmap.metrics import trajectory_errors
    from flow3r_jax.sfm import run_sfm

    clip = generate_clip(SceneConfig(height=160, width=224, frames=16, dynamic=False, preset="orbit", kind="room", offsets=(1,), flow_px=(4.0, 8.0)), seed=7)
    video = str(tmp_path / "demo.mp4")
    write_video(video, clip["images"], 30.0)
    frames = np.asarray(read_frames(video)[0])
    f_true = float(clip["intrinsics"][0][0, 0])
    r = run_sfm(frames)
    ends = [v for v in r.info["focal_starts"].values() if v is not None]
    assert len(r.info["focal_starts"]) >= 3  # the focal was ambiguous: several starts ran
    if r.ok:
        assert abs(r.focal - f_true) / f_true < 0.05, r.info["focal_starts"]
        assert max(ends) <= 1.1 * min(ends)
    else:
        assert "focal length is not determined" in r.reason, r.reason
        assert len(ends) >= 2 and max(ends) > 1.1 * min(ends)
    given = run_sfm(frames, focal=f_true)
    assert given.ok, given.reason
    assert trajectory_errors(given.poses, np.asarray(clip["poses"], np.float64))["rot_err_deg"] < 1.0
