"""Pose chaining with an associative scan against the sequential product."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from flow3r_jax import geometry as g
from tests.geometry.helpers import random_poses


@given(st.sampled_from([1, 2, 5, 40]), st.integers(0, 10_000), st.booleans())
def test_associative_scan_equals_sequential_product(m, seed, with_first):
    rng = np.random.default_rng(seed)
    rel = random_poses(rng, m, 0.5)
    first = random_poses(rng, 1)[0] if with_first else np.eye(4)
    expected = [first]
    for k in range(m):
        expected.append(expected[-1] @ rel[k])
    out = g.chain_relative_poses(jnp.asarray(rel, jnp.float32), jnp.asarray(first, jnp.float32) if with_first else None)
    np.testing.assert_allclose(out, np.stack(expected), atol=2e-5 * max(1, m))


def test_chain_inverts_consecutive_relative_poses_batched(rng):
    poses = jnp.asarray(random_poses(rng, 2 * 7).reshape(2, 7, 4, 4))
    rel = g.consecutive_relative_poses(poses)
    assert rel.shape == (2, 6, 4, 4)
    np.testing.assert_allclose(g.chain_relative_poses(rel, poses[:, 0]), poses, atol=1e-5)
    out = jax.jit(jax.vmap(g.chain_relative_poses))(rel, poses[:, 0])
    np.testing.assert_allclose(out, poses, atol=1e-5)
