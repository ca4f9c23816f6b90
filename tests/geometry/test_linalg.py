"""polar_rotation: closest rotation, and a finite derivative where the generic SVD one is NaN."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads
from scipy.optimize import minimize
from scipy.spatial.transform import Rotation

from flow3r_jax import geometry as g


def test_skew_vee_det(rng):
    v, u = rng.normal(size=(2, 16, 3))
    np.testing.assert_allclose(np.einsum("nij,nj->ni", g.skew(jnp.asarray(v)), u), np.cross(v, u), atol=1e-6)
    np.testing.assert_allclose(g.vee(g.skew(jnp.asarray(v))), v, atol=0)
    A = rng.normal(size=(16, 3, 3))
    np.testing.assert_allclose(g.det3(jnp.asarray(A)), np.linalg.det(A), rtol=1e-5, atol=1e-6)


def test_polar_rotation_is_the_closest_rotation(rng):
    M = rng.normal(size=(6, 3, 3))
    R = np.asarray(g.polar_rotation(jnp.asarray(M)))
    for Mi, Ri in zip(M, R):
        # Independent check: minimise |R(v) - M|_F over axis-angle v with scipy, from many starts.
        cost = lambda v: np.sum((Rotation.from_rotvec(v).as_matrix() - Mi) ** 2)
        best = min((minimize(cost, x0, method="Nelder-Mead", options=dict(xatol=1e-10, fatol=1e-12, maxiter=4000)) for x0 in rng.normal(size=(6, 3)) * 2), key=lambda r: r.fun)
        assert cost(Rotation.from_matrix(Ri).as_rotvec()) <= best.fun + 1e-6
        np.testing.assert_allclose(Ri @ Ri.T, np.eye(3), atol=1e-5)
        assert np.linalg.det(Ri) > 0


def test_polar_rotation_gradient_matches_finite_differences(rng):
    with jax.enable_x64(True):
        M = jnp.asarray(rng.normal(size=(3, 3, 3)))
        check_grads(g.polar_rotation, (M,), order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)
        # Also with a reflection in M (det < 0): the flipped smallest direction.
        Mr = M * jnp.asarray([1.0, 1.0, -1.0])[None, :, None]
        check_grads(g.polar_rotation, (Mr,), order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


def test_polar_rotation_gradient_finite_when_singular_values_coincide(rng):
    """At M = c R0 all singular values are equal: JAX's SVD derivative is NaN, ours is not, and
    it matches the analytic derivative dR = R skew-part(R^T dM) / c (from s_i + s_j = 2c)."""
    with jax.enable_x64(True):
        R0 = jnp.asarray(Rotation.random(random_state=1).as_matrix())
        M = 2.0 * R0
        dM = jnp.asarray(rng.normal(size=(3, 3)))
        _, dR = jax.jvp(g.polar_rotation, (M,), (dM,))
        X = R0.T @ dM
        expected = R0 @ ((X - X.T) / 4.0)
        np.testing.assert_allclose(dR, expected, atol=1e-12)
        naive = jax.grad(lambda m: jnp.sum((lambda u, s, vt: u @ vt)(*jnp.linalg.svd(m)) * dM))(M)
        assert not np.all(np.isfinite(naive)), "premise: the generic SVD derivative is NaN here"
        grad = jax.grad(lambda m: jnp.sum(g.polar_rotation(m) * dM))(M)
        assert np.all(np.isfinite(grad))
        # Two equal singular values (a symmetric, rank-3 configuration).
        M2 = jnp.asarray(np.diag([3.0, 1.0, 1.0])) @ R0
        check_grads(g.polar_rotation, (M2,), order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)
