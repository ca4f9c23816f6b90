"""Generalised Charbonnier and the pooled NDC flow loss."""

import jax
import jax.numpy as jnp
import numpy as np

from flow3r_jax.losses import charbonnier, charbonnier_squared, flow_loss
from tests.losses import reference as ref


def test_charbonnier_formula_and_zero_at_zero():
    r = np.array([0.0, 1e-4, 0.05, 0.24, 1.0, 7.0])
    # a = 0.5: |a - 2| / a = 3 and the power is 1/4.
    want = 3.0 * ((1.0 + (r / 0.24) ** 2 / 1.5) ** 0.25 - 1.0)
    np.testing.assert_allclose(charbonnier(jnp.float32(r)), want, rtol=1e-5, atol=1e-9)
    other = charbonnier(jnp.float32(r), alpha=-1.0, c=0.5)
    np.testing.assert_allclose(other, ref.charbonnier(r, -1.0, 0.5), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(charbonnier_squared(jnp.float32(r * r)), want, rtol=1e-5, atol=1e-9)
    assert charbonnier(jnp.float32(0.0)) == 0.0
    assert jax.grad(charbonnier)(jnp.float32(0.0)) == 0.0


def test_flow_loss_matches_official(rng):
    _, batch = ref.random_batch(rng)
    out, _ = ref.random_batch(np.random.default_rng(1))
    valid = batch["covisible"] & batch["pair_valid"][..., None, None]
    pred, target = out["flow"], batch["flow_target"]
    got = jax.jit(flow_loss)(pred, target, valid)
    np.testing.assert_allclose(got, ref.flow_loss(pred, np.float64(target), valid), rtol=1e-5)
    per_sample = jax.jit(jax.vmap(flow_loss))(pred, target, valid)  # vmap: one pooled mean per sample
    for b in range(len(valid)):
        np.testing.assert_allclose(per_sample[b], ref.flow_loss(pred[b], np.float64(target[b]), valid[b]), rtol=1e-5)


def test_no_covisible_pixel_gives_zero_with_finite_gradients(rng):
    pred = jnp.asarray(rng.normal(size=(2, 2, 4, 5, 2)), jnp.float32)
    value, g = jax.jit(jax.value_and_grad(flow_loss))(pred, pred, jnp.zeros((2, 2, 4, 5), bool))
    assert value == 0.0 and np.all(g == 0.0)
    value, g = jax.jit(jax.value_and_grad(flow_loss))(pred, pred, jnp.ones((2, 2, 4, 5), bool))  # r = 0 everywhere
    assert value == 0.0 and np.all(g == 0.0)
