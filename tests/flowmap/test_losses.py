"""Flow / track losses, the Huber mapping and the photometric mask."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from flow3r_jax.flowmap.losses import flow_loss, huber_mapping, photometric_mask, pose_induced_flows, track_loss
from flow3r_jax.geometry import relative_pose, unproject_depth

from tests.flowmap.conftest import exact_tracks


def test_huber_mapping_matches_formula_and_has_a_finite_gradient_at_zero():
    d = np.array([[0.0, 0.0], [0.3, -0.4], [30.0, 40.0]], np.float32)
    H, W = 40, 90
    n = np.linalg.norm(d, axis=-1) / math.sqrt(H * W)
    delta = 0.01
    ref = np.where(n < delta, 0.5 * n**2, delta * (n - 0.5 * delta)) / delta
    np.testing.assert_allclose(huber_mapping(jnp.asarray(d), H, W, delta), ref, rtol=1e-6, atol=1e-9)
    g = jax.grad(lambda x: jnp.sum(huber_mapping(x, H, W, delta)))(jnp.asarray(d))
    assert np.all(np.isfinite(np.asarray(g))) and np.all(np.asarray(g[0]) == 0)


def _gt_geometry(clip):
    K = jnp.asarray(clip["intrinsics"][0])
    points = unproject_depth(jnp.asarray(clip["depth"]), K)
    poses = jnp.asarray(clip["poses"])
    rel = relative_pose(poses[:-1], poses[1:])
    return K, points, poses, rel


def test_flow_loss_vanishes_on_ground_truth_geometry(tiny_scene):
    c = tiny_scene
    K, points, _, rel = _gt_geometry(c)
    fw, bw = pose_induced_flows(points, rel, K)
    cov_fw, cov_bw = (jnp.asarray(m, jnp.float32) for m in (c["cov_fw"], c["cov_bw"]))
    np.testing.assert_allclose(np.asarray(fw)[c["cov_fw"]], c["flow_fw"][c["cov_fw"]], atol=2e-3)
    np.testing.assert_allclose(np.asarray(bw)[c["cov_bw"]], c["flow_bw"][c["cov_bw"]], atol=2e-3)
    args = (jnp.asarray(c["flow_fw"]), jnp.asarray(c["flow_bw"]), cov_fw, cov_bw)
    assert float(flow_loss(fw, bw, *args)) < 1e-6
    # A wrong motion is penalised.
    wrong = rel.at[:, :3, 3].multiply(1.5)
    assert float(flow_loss(*pose_induced_flows(points, wrong, K), *args)) > 1e-3


def test_track_loss_vanishes_on_exact_tracks_and_grows_with_pose_error(tiny_scene):
    c = tiny_scene
    K, points, poses, _ = _gt_geometry(c)
    xy, vis = exact_tracks(c)
    assert vis.sum() > 0.3 * vis.size
    base = float(track_loss(points, poses, K, jnp.asarray(xy), jnp.asarray(vis)))
    assert base < 1e-3  # exact up to bilinear lifting between pixel centres
    bad = poses.at[1:, :3, 3].multiply(1.3)
    assert float(track_loss(points, bad, K, jnp.asarray(xy), jnp.asarray(vis))) > 10 * base + 1e-3
    # Invisible everywhere: no pair counts, loss 0 (not NaN).
    assert float(track_loss(points, bad, K, jnp.asarray(xy), jnp.zeros_like(jnp.asarray(vis)))) == 0.0


def test_photometric_mask():
    rng = np.random.default_rng(0)
    img = jnp.asarray(rng.uniform(size=(3, 8, 10, 3)).astype(np.float32))
    same = jnp.broadcast_to(img[:1], img.shape)
    zero = jnp.zeros((2, 8, 10, 2))
    np.testing.assert_allclose(photometric_mask(same, zero), 1.0)
    # A one-pixel shift to the right, with the matching flow: consistent inside, 0 where the
    # target leaves the image (zero padding against a bright source) .
    shifted = jnp.concatenate([img[:1], jnp.roll(img[:1], 1, axis=2)], 0)
    m = photometric_mask(jnp.concatenate([shifted, shifted[:1]], 0), jnp.concatenate([jnp.full((1, 8, 10, 2), jnp.asarray([1.0, 0.0])), zero[:1]], 0))
    np.testing.assert_allclose(m[0, :, :-1], 1.0, atol=1e-6)
    expected_edge = (1.0 - np.max(np.abs(np.asarray(img[0, :, -1])), axis=-1)) ** 8
    np.testing.assert_allclose(m[0, :, -1], expected_edge, rtol=1e-5, atol=1e-6)
    # Backward direction: frame i + 1 -> i.
    mb = photometric_mask(jnp.concatenate([shifted, shifted[:1]], 0), jnp.concatenate([jnp.full((1, 8, 10, 2), jnp.asarray([-1.0, 0.0])), zero[:1]], 0), backward=True)
    np.testing.assert_allclose(mb[0, :, 1:], 1.0, atol=1e-6)
