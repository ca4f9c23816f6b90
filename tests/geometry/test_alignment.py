"""Alignment: order statistics vs numpy, ROE scale vs brute force, lstsq vs numpy.linalg,
Sim(3) trajectory alignment recovering a known similarity."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from flow3r_jax import geometry as g
from tests.geometry.helpers import random_poses, random_rotations


@given(st.integers(0, 10_000), st.sampled_from([1, 2, 7, 60]))  # few shapes: few compiles
def test_weighted_median_minimises_weighted_l1(seed, n):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n).astype(np.float32)
    w = (rng.uniform(0, 1, size=n) * (rng.uniform(size=n) > 0.2)).astype(np.float32)
    if w.sum() == 0:
        w[0] = 1.0
    m = float(g.weighted_median(jnp.asarray(x), jnp.asarray(w)))
    cost = lambda a: np.sum(w * np.abs(a - x))
    # The minimum of a piecewise-linear convex function is attained at a data point.
    assert cost(m) <= min(cost(a) for a in x) + 1e-6
    assert m in x


def test_masked_median_matches_numpy(rng):
    x = rng.normal(size=(5, 31))
    mask = rng.uniform(size=(5, 31)) > 0.4
    out = np.asarray(g.masked_median(jnp.asarray(x), jnp.asarray(mask)))
    np.testing.assert_allclose(out, [np.median(x[i][mask[i]]) for i in range(5)], atol=1e-12)
    assert np.isnan(float(g.masked_median(jnp.ones(4), jnp.zeros(4, bool))))


@given(st.integers(0, 10_000))
def test_robust_scale_is_the_weighted_l1_optimum(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=80)
    y = 2.5 * x + rng.normal(size=80) * 0.1
    y[:10] = rng.normal(size=10) * 50  # outliers barely move an L1 fit
    w = rng.uniform(0.1, 1, size=80)
    a = float(g.robust_scale(jnp.asarray(x), jnp.asarray(y), jnp.asarray(w)))
    cost = lambda s: np.sum(w * np.abs(s * x - y))
    grid = np.linspace(a - 0.5, a + 0.5, 2001)
    assert cost(a) <= min(cost(s) for s in grid) + 1e-9
    assert abs(a - 2.5) < 0.1


def test_robust_scale_exact_and_negative_inputs(rng):
    x = rng.normal(size=(3, 50))
    np.testing.assert_allclose(g.robust_scale(jnp.asarray(x), jnp.asarray(-1.7 * x)), [-1.7] * 3, rtol=1e-6)


def test_median_scale_and_scale_shift(rng):
    x = rng.uniform(1, 5, size=(2, 100))
    y = 3.0 * x
    np.testing.assert_allclose(g.median_scale(jnp.asarray(x), jnp.asarray(y)), [3.0, 3.0], rtol=1e-6)
    y2 = 0.7 * x - 2.0 + rng.normal(size=x.shape) * 0.05
    w = rng.uniform(0.2, 1.0, size=x.shape)
    s, b = g.scale_shift_lstsq(jnp.asarray(x), jnp.asarray(y2), jnp.asarray(w))
    for i in range(2):
        # Independent reference: weighted least squares via numpy.linalg.lstsq.
        A = np.stack([x[i], np.ones(100)], 1) * np.sqrt(w[i])[:, None]
        ref, *_ = np.linalg.lstsq(A, y2[i] * np.sqrt(w[i]), rcond=None)
        np.testing.assert_allclose([s[i], b[i]], ref, atol=1e-5)


def test_align_trajectories_recovers_similarity(rng):
    gt = random_poses(rng, 12, 3.0)
    R = random_rotations(rng, 1)[0]
    s, t = 0.37, np.array([4.0, -1.0, 2.0])
    # pred = the GT trajectory in another world frame at another scale.
    S_inv = np.eye(4)
    S_inv[:3, :3] = s * R
    S_inv[:3, 3] = t
    pred = np.einsum("ij,njk->nik", S_inv, gt)
    pred[:, :3, :3] /= s  # rotations stay rotations; only positions carry the scale
    S, aligned = g.align_trajectories(jnp.asarray(pred), jnp.asarray(gt))
    np.testing.assert_allclose(aligned, gt, atol=1e-4)
    np.testing.assert_allclose(np.asarray(S) @ S_inv, np.eye(4), atol=1e-4)
    # Batched over trajectories, jit-compatible.
    out = jax.jit(g.align_trajectories)(jnp.stack([jnp.asarray(pred)] * 2), jnp.stack([jnp.asarray(gt)] * 2))[1]
    np.testing.assert_allclose(out[1], gt, atol=1e-4)
