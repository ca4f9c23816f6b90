"""Confidence BCE (target: per-pixel point error < 0.02) and the optional sky hook."""

import jax
import jax.numpy as jnp
import numpy as np

from flow3r_jax.losses import bce_with_logits, conf_loss, point_weights
from tests.losses import reference as ref


def test_bce_with_logits_formula(rng):
    x, t = rng.normal(size=50) * 4, rng.random(50)
    p = 1 / (1 + np.exp(-x))
    want = -t * np.log(p) - (1 - t) * np.log(1 - p)
    np.testing.assert_allclose(bce_with_logits(jnp.float32(x), jnp.float32(t)), want, rtol=1e-5)
    assert np.isfinite(bce_with_logits(jnp.float32(-200.0), jnp.float32(1.0)))


def test_conf_loss_matches_official_with_and_without_sky(rng):
    B, N, H, W = 3, 2, 6, 7
    gt = np.abs(rng.normal(size=(B, N, H, W, 3))) + [0, 0, 1]
    pred = gt * (1 + rng.choice([0.001, 0.1], size=(B, N, H, W, 1)))  # both targets present
    logits = rng.normal(size=(B, N, H, W)) * 2
    mask = rng.random((B, N, H, W)) < 0.6
    mask[2] = False  # flow-only sample
    sky = rng.random((B, N, H, W)) < 0.3
    sky[2] = False  # the caller clears flow-only samples
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    w = point_weights(f32(gt[..., 2]), mask)
    f = jax.jit(conf_loss, static_argnums=5)
    err = (np.abs(pred - gt) * np.float64(w)[..., None]).mean(-1)
    target = (err[mask] < 0.02).astype(float)
    assert 0 < target.mean() < 1
    want = ref.bce(logits[mask], target).mean()
    np.testing.assert_allclose(f(f32(logits), f32(pred), f32(gt), w, mask, 0.02), want, rtol=1e-5)
    want_sky = want + ref.bce(logits[sky & ~mask], 0.0).mean()
    np.testing.assert_allclose(f(f32(logits), f32(pred), f32(gt), w, mask, 0.02, sky), want_sky, rtol=1e-5)


def test_conf_target_has_no_gradient_into_points(rng):
    gt = jnp.asarray(np.abs(rng.normal(size=(1, 1, 4, 4, 3))) + 1, jnp.float32)
    mask = jnp.ones((1, 1, 4, 4), bool)
    g = jax.jit(jax.grad(lambda p: conf_loss(jnp.zeros((1, 1, 4, 4)), p, gt, jnp.ones((1, 1, 4, 4)), mask)))(gt * 1.01)
    np.testing.assert_array_equal(g, 0.0)
