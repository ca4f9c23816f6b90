"""Weighted Procrustes / Umeyama: exact recovery properties, outliers, reflections, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from flow3r_jax import geometry as g
from tests.geometry.helpers import random_rotations

seeds = st.integers(0, 2**31 - 1)


def _problem(seed, n, with_scale, n_outliers=0):
    rng = np.random.default_rng(seed)
    src = rng.uniform(-1, 1, size=(n, 3)) * rng.uniform(0.5, 3.0, size=3)
    R = random_rotations(rng, 1)[0]
    t = rng.normal(size=3) * 2
    s = rng.uniform(0.2, 5.0) if with_scale else 1.0
    dst = s * src @ R.T + t
    w = rng.uniform(0.1, 1.0, size=n)
    if n_outliers:
        idx = rng.choice(n, n_outliers, replace=False)
        dst[idx] = rng.normal(size=(n_outliers, 3)) * 10  # wild outliers ...
        w[idx] = 0.0  # ... with zero weight
    return src, dst, w, R, t, s


def _check(T, R, t, s):
    T = np.asarray(T)
    np.testing.assert_allclose(T[:3, :3] / s, R, atol=1e-5)
    np.testing.assert_allclose(T[:3, 3], t, atol=1e-5 * max(1.0, np.abs(t).max()))
    np.testing.assert_allclose(g.similarity_scale(jnp.asarray(T)), s, rtol=1e-5)
    np.testing.assert_allclose(T[3], [0, 0, 0, 1])


N_POINTS = st.sampled_from([3, 4, 17, 200])  # few shapes: each distinct shape recompiles


@given(seeds, N_POINTS, st.booleans())
def test_recovers_rigid_motion(seed, n, outliers):
    src, dst, w, R, t, s = _problem(seed, n + (20 if outliers else 0), False, 20 if outliers else 0)
    _check(g.weighted_procrustes(jnp.asarray(src, jnp.float32), jnp.asarray(dst, jnp.float32), jnp.asarray(w, jnp.float32)), R, t, s)


@given(seeds, N_POINTS, st.booleans())
def test_recovers_similarity_motion(seed, n, outliers):
    src, dst, w, R, t, s = _problem(seed, n + (20 if outliers else 0), True, 20 if outliers else 0)
    with jax.enable_x64(True):  # scale up to 5 amplifies float32 rounding beyond 1e-5 in t
        T = g.weighted_procrustes(jnp.asarray(src), jnp.asarray(dst), jnp.asarray(w), with_scale=True)
    _check(T, R, t, s)


def test_batched_matches_loop_and_weights_are_ratios(rng):
    probs = [_problem(i, 50, True) for i in range(6)]
    src = jnp.asarray(np.stack([p[0] for p in probs]).reshape(2, 3, 50, 3), jnp.float32)
    dst = jnp.asarray(np.stack([p[1] for p in probs]).reshape(2, 3, 50, 3) + rng.normal(size=(2, 3, 50, 3)) * 0.01, jnp.float32)
    w = jnp.asarray(np.stack([p[2] for p in probs]).reshape(2, 3, 50), jnp.float32)
    T = g.weighted_procrustes(src, dst, w, with_scale=True)
    assert T.shape == (2, 3, 4, 4)
    for a in range(2):
        for b in range(3):
            np.testing.assert_allclose(T[a, b], g.weighted_procrustes(src[a, b], dst[a, b], w[a, b], with_scale=True), atol=1e-6)
    np.testing.assert_allclose(g.weighted_procrustes(src, dst, 7.0 * w, with_scale=True), T, atol=1e-5)


def test_noisy_solution_is_weighted_least_squares_optimum(rng):
    """With noise there is no exact answer; check optimality: no small perturbation improves the
    weighted cost (an independent criterion from the SVD derivation)."""
    src, dst, w, *_ = _problem(3, 100, False)
    dst = dst + rng.normal(size=dst.shape) * 0.05
    with jax.enable_x64(True):
        T = g.weighted_procrustes(jnp.asarray(src), jnp.asarray(dst), jnp.asarray(w))
        cost = lambda T: float(np.sum(w * np.sum((np.asarray(g.transform_points(T, jnp.asarray(src))) - dst) ** 2, -1)))
        base = cost(T)
        for _ in range(50):
            d = rng.normal(size=6) * 1e-3
            dT = g.make_transform(g.axis_angle_to_matrix(jnp.asarray(d[:3])), jnp.asarray(d[3:]))
            assert cost(dT @ T) >= base - 1e-12


def test_never_returns_a_reflection():
    """dst a mirror image of src: the best *rotation* is returned (det +1), not the reflection."""
    rng = np.random.default_rng(0)
    src = rng.normal(size=(30, 3))
    dst = src * np.array([1, 1, -1])
    T = np.asarray(g.weighted_procrustes(jnp.asarray(src, jnp.float32), jnp.asarray(dst, jnp.float32)))
    np.testing.assert_allclose(np.linalg.det(T[:3, :3]), 1.0, atol=1e-5)


def test_gradients_finite_on_symmetric_point_sets():
    """The vertices of a cube: isotropic covariance, three equal singular values. Identity
    motion; gradients w.r.t. points and weights must be finite."""
    cube = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float32)

    def loss(src, w):
        T = g.weighted_procrustes(src, jnp.asarray(cube), w, with_scale=True)
        return jnp.sum(T**2)

    gs, gw = jax.grad(loss, argnums=(0, 1))(jnp.asarray(cube), jnp.ones(8))
    assert np.all(np.isfinite(gs)) and np.all(np.isfinite(gw))


def test_gradient_matches_finite_differences(rng):
    from jax.test_util import check_grads

    src, dst, w, *_ = _problem(5, 20, True)
    with jax.enable_x64(True):
        dst = dst + rng.normal(size=dst.shape) * 0.1
        f = lambda a, b, c: g.weighted_procrustes(a, b, c, with_scale=True)
        check_grads(f, (jnp.asarray(src), jnp.asarray(dst), jnp.asarray(w)), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)
