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
