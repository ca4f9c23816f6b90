"""S*: the official prepare_ROE resampling and MoGe's weighted-L1 scale fit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flow3r_jax.losses import optimal_scale, roe_indices, roe_resample
from tests.losses import reference as ref

COUNTS = [0, 1, 7, 2048, 4096, 5000, 123457]  # none, repeats, exact halving, identity, > 4096


def _masks(rng, M=130_000):
    masks = np.zeros((len(COUNTS), M), bool)
    for row, n in zip(masks, COUNTS):
        row[rng.choice(M, n, replace=False)] = True
    return masks


def test_roe_indices_follow_torch_nearest_rule(rng):
    masks = _masks(rng)
    idx, any_valid = jax.jit(roe_indices)(masks)
    np.testing.assert_array_equal(any_valid, np.array(COUNTS) > 0)
    for row, got, n in zip(masks, np.asarray(idx), COUNTS):
        if n:
            np.testing.assert_array_equal(got, np.flatnonzero(row)[ref.nearest_indices(n, 4096)])
    # For large n the float32 product differs from the exact integer floor: the rule matters.
    exact = np.minimum(np.arange(4096) * COUNTS[-1] // 4096, COUNTS[-1] - 1)
    assert np.any(ref.nearest_indices(COUNTS[-1], 4096) != exact)


@pytest.mark.torch
def test_nearest_rule_is_torch_interpolate():
    torch = pytest.importorskip("torch")
    for n in COUNTS[1:]:
        src = torch.arange(n, dtype=torch.float64)[None, None]
        got = torch.nn.functional.interpolate(src, size=4096, mode="nearest")[0, 0].numpy().astype(np.int64)
        np.testing.assert_array_equal(got, ref.nearest_indices(n, 4096))


def test_roe_resample_matches_official_prepare_roe(rng):
    pts = rng.normal(size=(3, 2, 5, 6, 3)).astype(np.float32)
    mask = rng.random((3, 2, 5, 6)) < 0.5
    mask[2] = False
    got = jax.jit(roe_resample, static_argnums=2)(pts.reshape(3, -1, 3), mask.reshape(3, -1), 4096)
    np.testing.assert_array_equal(got, ref.prepare_roe(pts, mask, 4096))


def test_optimal_scale_matches_moge_align(rng):
    B, N, H, W = 4, 2, 7, 9
    gt = rng.normal(size=(B, N, H, W, 3)) + [0, 0, 3]
    pred = gt * rng.uniform(0.2, 4, size=(B, 1, 1, 1, 1)) + 0.3 * rng.normal(size=gt.shape)
    pred[1] *= -1  # negative fitted scale: flipped to positive
    w = rng.uniform(0.1, 2, size=(B, N, H, W))
    mask = rng.random((B, N, H, W)) < 0.6
    mask[3] = False  # no valid point: ones against ones, S* = 1
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    got = jax.jit(optimal_scale)(f32(pred), f32(gt), f32(w), mask)
    want = ref.optimal_scale(pred, gt, w, mask)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got[1] > 0 and got[3] == 1.0


def test_optimal_scale_ignores_30_percent_outliers(rng):
    gt = rng.uniform(0.5, 2, size=(1, 2, 10, 12, 3)) * rng.choice([-1, 1], size=(1, 2, 10, 12, 3))
    pred = gt / 2.5
    bad = rng.random((1, 2, 10, 12)) < 0.3
    pred = np.where(bad[..., None], rng.uniform(-2, 2, size=pred.shape), pred)
    mask = np.ones((1, 2, 10, 12), bool)
    s = jax.jit(optimal_scale)(jnp.asarray(pred, jnp.float32), jnp.asarray(gt, jnp.float32), jnp.ones((1, 2, 10, 12)), mask)
    np.testing.assert_allclose(s, [2.5], rtol=1e-5)


def test_optimal_scale_has_no_gradient(rng):
    x = jnp.asarray(rng.normal(size=(2, 1, 4, 4, 3)), jnp.float32)
    g = jax.jit(jax.grad(lambda p: optimal_scale(p, 2 * x, jnp.ones(x.shape[:-1]), jnp.ones(x.shape[:-1], bool)).sum()))(x)
    np.testing.assert_array_equal(g, 0.0)
