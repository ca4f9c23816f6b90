"""Rotations against scipy's Rotation, closed forms, round trips and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads
from scipy.spatial.transform import Rotation

from flow3r_jax import geometry as g
from tests.geometry.helpers import random_rotations


def test_quaternion_to_matrix_matches_scipy(rng):
    q_xyzw = Rotation.random(64, random_state=rng).as_quat()
    q_wxyz = np.concatenate([q_xyzw[:, 3:], q_xyzw[:, :3]], axis=1)
    expected = Rotation.from_quat(q_xyzw).as_matrix()
    np.testing.assert_allclose(g.quaternion_to_matrix(jnp.asarray(q_wxyz * 3.0)), expected, atol=1e-6)


def test_matrix_to_quaternion_matches_scipy_canonical_sign(rng):
    R = random_rotations(rng, 256)
    # Include the hard cases: identity and 180-degree turns about each axis and a diagonal.
    special = Rotation.from_rotvec(np.pi * np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0] / np.sqrt(2)])).as_matrix()
    R = np.concatenate([R, np.eye(3)[None], special])
    q = np.asarray(g.matrix_to_quaternion(jnp.asarray(R)))
    ref = Rotation.from_matrix(R).as_quat()
    ref = np.concatenate([ref[:, 3:], ref[:, :3]], axis=1)
    ref = np.where(ref[:, :1] < 0, -ref, ref)
    # At w == 0 both signs are the same rotation; compare up to sign there.
    same = np.minimum(np.abs(q - ref).max(1), np.abs(q + ref).max(1))
    assert same.max() < 1e-6
    assert (q[:, 0] >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-6)


def test_axis_angle_exp_matches_scipy(rng):
    v = rng.normal(size=(128, 3)) * rng.uniform(0, 3.1, size=(128, 1))
    v = np.concatenate([v, np.zeros((1, 3)), 1e-9 * np.ones((1, 3))])
    np.testing.assert_allclose(g.axis_angle_to_matrix(jnp.asarray(v)), Rotation.from_rotvec(v).as_matrix(), atol=2e-6)


@pytest.mark.parametrize("angle", [0.0, 1e-7, 1e-3, 0.5, 2.0, np.pi - 1e-3, np.pi - 1e-5, np.pi])
def test_axis_angle_log_round_trip_across_regimes(rng, angle):
    axes = rng.normal(size=(32, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    v = axes * angle
    R = Rotation.from_rotvec(v).as_matrix()
    out = np.asarray(g.matrix_to_axis_angle(jnp.asarray(R)))
    # The rotation is recovered exactly; at pi, v and -v are the same rotation.
    np.testing.assert_allclose(Rotation.from_rotvec(out).as_matrix(), R, atol=3e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), angle, atol=5e-6)
    if 0 < angle < np.pi - 1e-2:
        np.testing.assert_allclose(out, v, atol=5e-6)


def test_axis_angle_log_matches_scipy(rng):
    R = random_rotations(rng, 256)
    np.testing.assert_allclose(g.matrix_to_axis_angle(jnp.asarray(R)), Rotation.from_matrix(R).as_rotvec(), atol=1e-5)


def test_rotation_6d_round_trip_and_gram_schmidt(rng):
    R = jnp.asarray(random_rotations(rng, 64))
    np.testing.assert_allclose(g.rotation_6d_to_matrix(g.matrix_to_rotation_6d(R)), R, atol=1e-6)
    d6 = rng.normal(size=(64, 6))
    out = np.asarray(g.rotation_6d_to_matrix(jnp.asarray(d6)))
    np.testing.assert_allclose(out @ out.transpose(0, 2, 1), np.broadcast_to(np.eye(3), out.shape), atol=1e-6)
    np.testing.assert_allclose(np.linalg.det(out), 1.0, atol=1e-6)
    # Row 0 is the normalised first vector (Gram-Schmidt keeps its direction).
    np.testing.assert_allclose(out[:, 0], d6[:, :3] / np.linalg.norm(d6[:, :3], axis=1, keepdims=True), atol=1e-6)


def _official_9d_rule(m):
    """The official camera head's rule, transcribed with numpy: rows normalised, SVD of M^T."""
    M = m.reshape(-1, 3, 3)
    M = M / np.maximum(np.linalg.norm(M, axis=-1, keepdims=True), 1e-12)
    u, s, vh = np.linalg.svd(M.transpose(0, 2, 1))  # torch.svd returns V, numpy V^T
    v = vh.transpose(0, 2, 1)
    det = np.linalg.det(v @ u.transpose(0, 2, 1))
    v = np.concatenate([v[:, :, :-1], v[:, :, -1:] * det[:, None, None]], axis=2)
    return v @ u.transpose(0, 2, 1)


def test_rotation_9d_matches_official_rule(rng):
    m = rng.normal(size=(256, 9))
    out = np.asarray(g.rotation_9d_to_matrix(jnp.asarray(m, jnp.float32)))
    np.testing.assert_allclose(out, _official_9d_rule(m), atol=2e-6)
    # A 9D vector that already is a rotation maps to itself; a reflection maps to a rotation.
    R = random_rotations(rng, 8)
    np.testing.assert_allclose(g.rotation_9d_to_matrix(jnp.asarray(R.reshape(8, 9))), R, atol=1e-6)
    refl = R * np.array([1, 1, -1])[None, :, None]
    assert np.all(np.linalg.det(np.asarray(g.rotation_9d_to_matrix(jnp.asarray(refl.reshape(8, 9))))) > 0.999)


def test_rotation_9d_gradient_matches_finite_differences(rng):
    m = jnp.asarray(rng.normal(size=(4, 9)))
    with jax.enable_x64(True):
        m64 = jnp.asarray(np.asarray(m), jnp.float64)
        check_grads(g.rotation_9d_to_matrix, (m64,), order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


@given(st.floats(0.0, np.pi), st.integers(0, 10_000))
def test_geodesic_angle_is_rotation_angle(angle, seed):
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    R1 = random_rotations(rng, 1)[0]
    R2 = R1 @ Rotation.from_rotvec(axis * angle).as_matrix()
    assert abs(float(g.geodesic_angle(jnp.asarray(R1), jnp.asarray(R2))) - angle) < 2e-6


def test_geodesic_angle_gradient_is_finite_at_zero_and_correct_elsewhere(rng):
    with jax.enable_x64(True):
        R = jnp.asarray(random_rotations(rng, 1)[0])
        grad = jax.grad(lambda v: g.geodesic_angle(R, R @ g.axis_angle_to_matrix(v)))
        assert np.all(np.isfinite(grad(jnp.zeros(3))))
        v = jnp.asarray([0.3, -0.2, 0.5])
        # d|v|/dv = v/|v| for the angle of exp(v).
        np.testing.assert_allclose(grad(v), v / jnp.linalg.norm(v), atol=1e-9)


def test_axis_angle_gradients_finite_differences_and_zero(rng):
    with jax.enable_x64(True):
        v = jnp.asarray(rng.normal(size=(5, 3)))
        check_grads(g.axis_angle_to_matrix, (v,), order=1, modes=("fwd", "rev"))
        R = g.axis_angle_to_matrix(v)
        check_grads(g.matrix_to_axis_angle, (R,), order=1, modes=("fwd", "rev"))
        assert np.all(np.isfinite(jax.jacfwd(g.axis_angle_to_matrix)(jnp.zeros(3))))
        assert np.all(np.isfinite(jax.jacrev(g.matrix_to_axis_angle)(jnp.eye(3))))


def test_random_rotation_is_uniform_enough():
    R = np.asarray(g.random_rotation(jax.random.PRNGKey(0), (4000,)))
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-5)
    # Haar measure: E[R] = 0 and the angle density is (1 - cos t) / pi, whose mean is pi/2 + 2/pi.
    assert np.abs(R.mean(0)).max() < 0.05
    angles = np.asarray(g.geodesic_angle(jnp.asarray(R)))
    assert abs(angles.mean() - (np.pi / 2 + 2 / np.pi)) < 0.03


def test_rotations_batch_over_leading_dims_and_vmap(rng):
    R = jnp.asarray(random_rotations(rng, 6).reshape(2, 3, 3, 3))
    q = g.matrix_to_quaternion(R)
    assert q.shape == (2, 3, 4)
    np.testing.assert_allclose(jax.vmap(g.matrix_to_quaternion)(R), q, atol=1e-7)
    np.testing.assert_allclose(jax.jit(g.quaternion_to_matrix)(q), R, atol=1e-6)
