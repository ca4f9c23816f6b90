"""Rigid and similarity transforms against explicit numpy matrix algebra."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flow3r_jax import geometry as g
from tests.geometry.helpers import random_poses, random_rotations


def test_make_split_and_apply(rng):
    R = random_rotations(rng, 5)
    t = rng.normal(size=(5, 3))
    s = rng.uniform(0.5, 2, size=5)
    T = np.asarray(g.make_transform(jnp.asarray(R), jnp.asarray(t), jnp.asarray(s)))
    x = rng.normal(size=(5, 7, 3))
    expected = np.einsum("b,bij,bnj->bni", s, R, x) + t[:, None]
    np.testing.assert_allclose(g.transform_points(jnp.asarray(T), jnp.asarray(x)), expected, atol=1e-5)
    # Homogeneous coordinates agree.
    xh = np.concatenate([x, np.ones((5, 7, 1))], -1)
    np.testing.assert_allclose(np.einsum("bij,bnj->bni", T, xh)[..., :3], expected, atol=1e-5)
    A, tt = g.split_transform(jnp.asarray(T))
    np.testing.assert_allclose(tt, t, atol=1e-6)


def test_transform_points_broadcasts_over_pixel_grids(rng):
    T = jnp.asarray(random_poses(rng, 2))
    x = jnp.asarray(rng.normal(size=(2, 4, 5, 3)))
    out = g.transform_points(T, x)
    for b in range(2):
        np.testing.assert_allclose(out[b], np.asarray(x[b]) @ np.asarray(T[b, :3, :3]).T + np.asarray(T[b, :3, 3]), atol=1e-5)
    with pytest.raises(ValueError, match="batch dims"):
        g.transform_points(jnp.zeros((2, 3, 4, 4)), jnp.zeros((2, 3)))


def test_inverses_match_numpy_inv(rng):
    T = random_poses(rng, 8, 3.0)
    np.testing.assert_allclose(g.invert_rigid(jnp.asarray(T)), np.linalg.inv(T), atol=1e-5)
    S = T.copy()
    S[:, :3, :3] *= rng.uniform(0.3, 3.0, size=(8, 1, 1))
    np.testing.assert_allclose(g.invert_similarity(jnp.asarray(S)), np.linalg.inv(S), atol=1e-5)


def test_compose_and_relative_pose(rng):
    A, B, C = (random_poses(rng, 4) for _ in range(3))
    np.testing.assert_allclose(g.compose(jnp.asarray(A), jnp.asarray(B), jnp.asarray(C)), A @ B @ C, atol=1e-5)
    rel = np.asarray(g.relative_pose(jnp.asarray(A), jnp.asarray(B)))
    np.testing.assert_allclose(rel, np.linalg.inv(A) @ B, atol=1e-5)
    # relative maps points of camera j into camera i: same world point either way.
    x_j = rng.normal(size=(4, 3))
    world_from_j = np.einsum("bij,bj->bi", B[:, :3, :3], x_j) + B[:, :3, 3]
    x_i = np.einsum("bij,bj->bi", rel[:, :3, :3], x_j) + rel[:, :3, 3]
    world_from_i = np.einsum("bij,bj->bi", A[:, :3, :3], x_i) + A[:, :3, 3]
    np.testing.assert_allclose(world_from_i, world_from_j, atol=1e-5)


def test_transforms_jit_vmap_grad(rng):
    T = jnp.asarray(random_poses(rng, 3))
    x = jnp.asarray(rng.normal(size=(3, 10, 3)))
    np.testing.assert_allclose(jax.vmap(g.transform_points)(T, x), jax.jit(g.transform_points)(T, x), atol=1e-6)
    grad = jax.grad(lambda t: jnp.sum(g.transform_points(t, x) ** 2))(T)
    # d/dt of sum |R x + t|^2 = 2 sum (R x + t): check the translation column.
    np.testing.assert_allclose(grad[:, :3, 3], 2 * np.asarray(g.transform_points(T, x)).sum(1), rtol=1e-5)
