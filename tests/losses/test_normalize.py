"""Normalisation of GT (camera-0 frame, mean valid norm) and prediction against the official path."""

import jax
import jax.numpy as jnp
import numpy as np

from flow3r_jax.losses import gt_local_points, mean_point_norm, normalize_gt, normalize_pred
from tests.losses import reference as ref


def test_gt_local_points_unproject_at_pixel_centres(rng):
    out, batch = ref.random_batch(rng)
    got = jax.jit(gt_local_points)(batch["depth"], batch["intrinsics"], batch["labeled"][:, None])
    K = np.where(batch["labeled"][:, None, None, None], batch["intrinsics"], np.eye(3))
    np.testing.assert_allclose(got, ref.unproject(batch["depth"].astype(np.float64), K), rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(got))  # unlabeled samples have all-zero intrinsics


def test_normalize_gt_matches_official_round_trip(rng):
    B, N, H, W = 3, 3, 5, 6
    local = rng.normal(size=(B, N, H, W, 3)) + [0, 0, 4]
    poses = np.stack([ref._rigid(rng, N, 2.0) for _ in range(B)])
    mask = rng.random((B, N, H, W)) < 0.7
    mask[2] = False
    got_local, got_poses, got_f = jax.jit(normalize_gt)(jnp.asarray(local, jnp.float32), jnp.asarray(poses, jnp.float32), mask)
    want_local, want_poses, want_f = ref.prepare_gt(local, poses, mask)
    np.testing.assert_allclose(got_f, want_f, rtol=1e-5)
    assert got_f[2] == 1.0
    np.testing.assert_allclose(got_local, want_local, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_poses, want_poses, rtol=1e-5, atol=1e-5)


def test_normalize_pred_matches_official(rng):
    B, N, H, W = 3, 2, 5, 6
    local = rng.normal(size=(B, N, H, W, 3)) * 3
    poses = np.stack([ref._rigid(rng, N, 2.0) for _ in range(B)])
    mask = rng.random((B, N, H, W)) < 0.5
    mask[0] = False
    got = jax.jit(normalize_pred)(jnp.asarray(local, jnp.float32), jnp.asarray(poses, jnp.float32), mask)
    for g, w in zip(got, ref.normalize_pred(local, poses, mask)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_mean_point_norm_empty_sample_has_finite_zero_gradient():
    pts = jnp.zeros((1, 2, 3, 3, 3))
    f = jax.jit(jax.value_and_grad(lambda p: mean_point_norm(p, jnp.zeros((1, 2, 3, 3), bool)).sum()))
    value, g = f(pts)
    assert value == 1.0
    np.testing.assert_array_equal(g, 0.0)
