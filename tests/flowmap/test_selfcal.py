"""The rotation-only focal estimate (flowmap/selfcal.py): homography flows in closed form, a
rendered pure-rotation clip against FlowMap's soft-min, and its refusal on translating clips."""

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from data_pipelines.synthetic.clip import build_scene
from data_pipelines.synthetic.config import SceneConfig
from flow3r_jax.flowmap.intrinsics import focal_candidates, softmin_focal
from flow3r_jax.flowmap.selfcal import _valid_flow, chained_pairs, rotation_focal


def _homography_flows(f_px, H, W, rotations):
    """Consecutive flows of a camera rotating by `rotations` (camera i+1 from camera i), from
    x' ~ K R K^-1 x written out per pixel (no code of the module under test)."""
    K = np.array([[f_px, 0, W / 2], [0, f_px, H / 2], [0, 0, 1.0]])
    y, x = np.mgrid[0:H, 0:W] + 0.5
    pix = np.stack([x, y, np.ones_like(x)], -1)
    fw, bw = [], []
    for R in rotations:
        for M, out in ((K @ R @ np.linalg.inv(K), fw), (K @ R.T @ np.linalg.inv(K), bw)):
            q = pix @ M.T
            out.append(q[..., :2] / q[..., 2:] - pix[..., :2])
    return np.stack(fw).astype(np.float32), np.stack(bw).astype(np.float32)


@pytest.mark.parametrize("H,W,f_norm", [(60, 80, 0.7), (72, 96, 1.6), (96, 64, 1.1)])
def test_homography_flows_give_the_focal(H, W, f_norm):
    rng = np.random.default_rng(0)
    rotations = [Rotation.from_rotvec(rng.normal(size=3) * np.deg2rad(1.5)).as_matrix() for _ in range(7)]
    fw, bw = _homography_flows(f_norm * math.sqrt(H * W), H, W, rotations)
    est = rotation_focal(fw, bw)
    assert est.rotational and est.pairs > 7  # chained pairs (i, i + k) as well as consecutive ones
    assert abs(est.focal / f_norm - 1) < 1e-3
    assert est.residual_px < 1e-3 * est.flow_px


def test_no_motion_is_not_rotational():
    fw = np.zeros((4, 48, 64, 2), np.float32)
    est = rotation_focal(fw, fw)
    assert not est.rotational and est.contrast < 1.01  # every focal explains zero flow


def test_chained_pairs_follow_the_flow():
    # A flow field of frame i that moves every pixel by (1 + i, 0.5): chaining k steps from frame
    # i moves a point by the sum of those, until it leaves the frame.
    F, H, W = 6, 20, 40
    fw = np.zeros((F - 1, H, W, 2), np.float32)
    for i in range(F - 1):
        fw[i, ..., 0], fw[i, ..., 1] = 1.0 + i, 0.5
    valid = np.ones((F - 1, H, W), bool)
    pairs = chained_pairs(fw, valid, spans=(1, 2, 4), max_points=10**6, max_pairs=100, min_points=1)
    assert {(i, j) for i, j, _, _ in pairs} == {(i, i + k) for k in (1, 2, 4) for i in range(F - k)}
    for i, j, a, b in pairs:
        shift = np.array([sum(1.0 + s for s in range(i, j)), 0.5 * (j - i)])
        np.testing.assert_allclose(b - a, np.broadcast_to(shift, a.shape), atol=1e-9)
        assert np.all(b[:, 0] <= W) and np.all(b[:, 1] <= H)
        # pixel centres x + 0.5 that stay inside [0, W] after the shift (likewise y)
        inside = (math.floor(W - 0.5 - shift[0]) + 1) * (math.floor(H - 0.5 - shift[1]) + 1)
        assert len(a) == inside


def _scene(preset, seed, H=96, W=128, F=8, fixed_centre=False):
    cfg = SceneConfig(height=H, width=W, frames=F, preset=preset, focal=0.8, flow_px=(4.0, 6.0), offsets=(1,))
    scene = build_scene(cfg, seed)
    if fixed_centre:
        poses = scene.poses.copy()
        poses[:, :3, 3] = poses[0, :3, 3]
        scene = dataclasses.replace(scene, poses=poses, _frames={})
    fw = np.stack([scene.flow(i, i + 1)[0] for i in range(F - 1)])
    bw = np.stack([scene.flow(i + 1, i)[0] for i in range(F - 1)])
    return scene, fw, bw, scene.intrinsics[0, 0] / math.sqrt(H * W)


def test_rendered_pure_rotation_beats_the_softmin():
    """A rendered clip whose camera only rotates (the 'pan' path with its centre held fixed):
    the rotation-only estimate is within 1% of the true focal; FlowMap's soft-min on pair (0, 1)
    is not, neither through the true depth nor through an uninformative (constant) one."""
    scene, fw, bw, f_true = _scene("pan", 3, fixed_centre=True)
    est = rotation_focal(fw, bw)
    assert est.rotational
    assert abs(est.focal / f_true - 1) < 0.01
    H, W = fw.shape[1:3]
    depth = np.stack([scene.render(i)["depth"] for i in range(2)])
    idx = jnp.arange(H * W)
    for d in (depth, np.ones_like(depth)):
        soft, _ = softmin_focal(jnp.asarray(d), jnp.asarray(bw[0]), jnp.ones(H * W), idx, jnp.asarray(focal_candidates()))
        assert abs(float(soft) / f_true - 1) > 0.03


@pytest.mark.parametrize("preset,seed", [("orbit", 0), ("handheld", 2)])
def test_translating_clips_fall_back(preset, seed):
    _, fw, bw, _ = _scene(preset, seed)
    est = rotation_focal(fw, bw)
    assert not est.rotational
    assert est.residual_ratio > 0.15 or est.contrast < 1.5


def test_valid_flow_matches_the_library_test():
    from flow3r_jax.geometry import forward_backward_mask

    _, fw, bw, _ = _scene("orbit", 0, H=48, W=64, F=3)
    ours = _valid_flow(fw, bw)
    theirs = np.asarray(forward_backward_mask(jnp.asarray(fw), jnp.asarray(bw)))
    assert np.mean(ours == theirs) > 0.97  # nearest vs bilinear lookup of the backward flow
