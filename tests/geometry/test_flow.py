"""Flow: induced flow vs explicit per-pixel reprojection, coordinates, NDC, masks, colours."""

import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from flow3r_jax import geometry as g
from tests.geometry.helpers import intrinsics, random_poses, random_rotations


def _explicit_flow(depth, K_i, P_i, K_j, P_j):
    H, W = depth.shape
    flow = np.zeros((H, W, 2))
    for r in range(H):
        for c in range(W):
            x_cam = np.linalg.inv(K_i) @ np.array([c + 0.5, r + 0.5, 1.0]) * depth[r, c]
            x_world = P_i[:3, :3] @ x_cam + P_i[:3, 3]
            x_j = P_j[:3, :3].T @ (x_world - P_j[:3, 3])
            p = K_j @ x_j
            flow[r, c] = p[:2] / p[2] - np.array([c + 0.5, r + 0.5])
    return flow


@given(st.integers(0, 10_000))
def test_induced_flow_equals_explicit_reprojection(seed):
    rng = np.random.default_rng(seed)
    H, W = 5, 6
    depth = rng.uniform(2.0, 6.0, size=(H, W))
    K_i = intrinsics(*rng.uniform(5, 10, 2), *rng.uniform(2, 4, 2))
    K_j = intrinsics(*rng.uniform(5, 10, 2), *rng.uniform(2, 4, 2))
    P_i = random_poses(rng, 1, 0.2)[0]
    P_j = P_i.copy()
    P_j[:3, :3] = P_i[:3, :3] @ g.axis_angle_to_matrix(jnp.asarray(rng.normal(size=3) * 0.1)).__array__()
    P_j[:3, 3] += rng.normal(size=3) * 0.3
    flow, valid = g.induced_flow(*(jnp.asarray(a, jnp.float64 if False else jnp.float32) for a in (depth, K_i, P_i, K_j, P_j)))
    assert np.all(valid)
    np.testing.assert_allclose(flow, _explicit_flow(depth, K_i, P_i, K_j, P_j), atol=2e-4)


def test_induced_flow_identity_and_pure_translation(rng):
    H, W = 6, 8
    K = intrinsics(10, 10, 4, 3)
    P = random_poses(rng, 1)[0]
    depth = rng.uniform(1, 3, size=(H, W))
    flow, _ = g.induced_flow(*map(jnp.asarray, (depth, K, P, K, P)))
    np.testing.assert_allclose(flow, 0.0, atol=1e-5)
    # Camera j moved by +b along its own x axis: static points shift by -f b / z pixels in x.
    Pj = P @ np.array([[1, 0, 0, 0.5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    flow, _ = g.induced_flow(*map(jnp.asarray, (depth, K, P, K, Pj)))
    np.testing.assert_allclose(flow[..., 0], -10 * 0.5 / depth, atol=1e-5)
    np.testing.assert_allclose(flow[..., 1], 0.0, atol=1e-5)


def test_coords_and_ndc_round_trips(rng):
    flow = jnp.asarray(rng.normal(size=(2, 7, 9, 2)) * 3)
    np.testing.assert_allclose(g.coords_to_flow(g.flow_to_coords(flow)), flow, atol=1e-6)
    ndc = g.flow_to_ndc_coords(flow)
    np.testing.assert_allclose(g.ndc_coords_to_flow(ndc), flow, atol=1e-5)
    # Zero flow maps every pixel to its own NDC position: corners at (+1, +1) and (-1, -1).
    z = np.asarray(g.flow_to_ndc_coords(jnp.zeros((7, 9, 2))))
    np.testing.assert_allclose(z[0, 0], [1, 1], atol=1e-6)
    np.testing.assert_allclose(z[-1, -1], [-1, -1], atol=1e-6)


def test_forward_backward_mask_on_exact_and_corrupted_flow(rng):
    H, W = 12, 16
    K = intrinsics(20, 20, 8, 6)
    depth = np.full((H, W), 5.0)
    P_i = np.eye(4)
    P_j = np.eye(4)
    P_j[0, 3] = 0.5  # fronto-parallel plane, pure translation: flow is a constant -2 px in x
    fw, _ = g.induced_flow(*map(jnp.asarray, (depth, K, P_i, K, P_j)))
    bw, _ = g.induced_flow(*map(jnp.asarray, (depth, K, P_j, K, P_i)))
    mask = np.asarray(g.forward_backward_mask(fw, bw))
    # Consistent everywhere except the 2-pixel strip that leaves frame j on the left.
    expected = np.ones((H, W), bool)
    expected[:, :2] = False
    np.testing.assert_array_equal(mask, expected)
    bad = np.asarray(bw).copy()
    bad[4:8, 4:8] += 5.0  # a blob of wrong backward flow (at its own location in frame j)
    mask_bad = np.asarray(g.forward_backward_mask(fw, jnp.asarray(bad)))
    # Forward pixels landing in the corrupted blob (x in 4..8 of frame j <- x in 6..10 of i).
    assert not mask_bad[4:8, 6:10].any()
    assert mask_bad[:, 12:].all() and mask_bad[:2, 2:].all()


def test_gt_flow_depth_check_flags_occlusion():
    """Camera j looks at a wall; an occluder in front of part of the wall is visible only in i
    (it is placed so that it is seen by i but not present in j's depth). Pixels of i on the wall
    that j sees are covisible; occluded ones are not."""
    H, W = 10, 10
    K = intrinsics(10, 10, 5, 5)
    P = np.eye(4)
    depth_i = np.full((H, W), 4.0)
    depth_j = np.full((H, W), 4.0)
    depth_j[:, :3] = 2.0  # something in front of the wall in j's left third
    flow, covis = g.gt_flow_with_depth_check(*map(jnp.asarray, (depth_i, K, P, depth_j, K, P)))
    np.testing.assert_allclose(flow, 0.0, atol=1e-5)
    expected = np.ones((H, W), bool)
    expected[:, :3] = False
    np.testing.assert_array_equal(np.asarray(covis), expected)
    # 4% disagreement passes, 6% does not.
    for factor, ok in ((1.04, True), (1.06, False)):
        _, c = g.gt_flow_with_depth_check(*map(jnp.asarray, (depth_i * factor, K, P, np.full((H, W), 4.0), K, P)))
        assert bool(np.all(np.asarray(c))) == ok


def test_induced_flow_batched_and_behind_camera(rng):
    H, W = 4, 5
    K = np.stack([intrinsics(8, 8, 2.5, 2)] * 3)
    P = random_poses(rng, 3)
    depth = rng.uniform(1, 2, size=(3, H, W))
    Pj = P.copy()
    Pj[2, :3, :3] = P[2, :3, :3] @ np.diag([-1.0, 1.0, -1.0])  # camera 2 of j turned around
    flow, valid = g.induced_flow(*map(jnp.asarray, (depth, K, P, K, Pj)))
    assert flow.shape == (3, H, W, 2)
    assert np.asarray(valid)[:2].all() and not np.asarray(valid)[2].any()
    for b in range(2):
        np.testing.assert_allclose(flow[b], _explicit_flow(depth[b], K[b], P[b], K[b], Pj[b]), atol=1e-4)


def test_flow_to_color_hues_and_saturation():
    # Unit flows in the four axis directions at max magnitude; zero flow is white.
    flow = jnp.asarray([[[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.0, 0.0]]])
    col = np.asarray(g.flow_to_color(flow, max_flow=1.0))[0]
    np.testing.assert_allclose(col[4], [1, 1, 1])
    assert col.min() >= 0 and col.max() <= 1
    # Middlebury wheel: flow to the left (-x) is red-ish... check the documented anchors:
    # angle = atan2(-v, -u)/pi; u=-1 -> angle 0 -> index 27 (of 55); u=+1 -> index 0: pure red.
    np.testing.assert_allclose(col[0], [1, 0, 0], atol=1e-6)
    assert col[1, 2] > 0.9 and col[1, 0] < 0.1  # -x: cyan/blue side
    # Beyond max_flow the colour is darkened (x0.75) instead of saturated further.
    far = np.asarray(g.flow_to_color(jnp.asarray([[[2.0, 0.0]]]), max_flow=1.0))[0, 0]
    np.testing.assert_allclose(far, [0.75, 0, 0], atol=1e-6)
