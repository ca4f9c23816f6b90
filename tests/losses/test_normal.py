"""MoGe normal loss against the official statement (triangle masks, depth edges, clamped angle)."""

import jax
import jax.numpy as jnp
import numpy as np

from flow3r_jax.losses import normal_loss
from tests.losses import reference as ref


def _surface(rng, B=3, N=2, H=8, W=9):
    out, batch = ref.random_batch(rng, B=B, N=N, H=H, W=W, labeled=(True,) * B, zero_invalid=0.0)
    gt = ref.unproject(batch["depth"].astype(np.float64), batch["intrinsics"].astype(np.float64))
    pred = gt * (1 + 0.03 * rng.normal(size=gt.shape))
    return pred, gt, batch["valid"]


def test_normal_loss_matches_official(rng):
    pred, gt, mask = _surface(rng)
    select = np.array([True, False, True])
    edges = ref.depth_edge(gt[..., 2], 0.03)
    assert edges[select].any() and (~edges[select] & mask[select]).mean() > 0.3  # both kinds present
    got = jax.jit(normal_loss)(jnp.asarray(pred, jnp.float32), jnp.asarray(gt, jnp.float32), mask, select)
    want = ref.normal_loss(pred[select], gt[select], mask[select])
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_no_selected_sample_or_degenerate_points_give_finite_gradients(rng):
    pred, gt, mask = _surface(rng)
    f = jax.jit(jax.value_and_grad(normal_loss))
    value, g = f(jnp.asarray(pred, jnp.float32), jnp.asarray(gt, jnp.float32), mask, np.zeros(3, bool))
    assert value == 0.0 and np.all(g == 0.0)
    # All-zero (degenerate) predictions: every normal is zero, the angle saturates, grads stay finite.
    value, g = f(jnp.zeros(pred.shape), jnp.asarray(gt, jnp.float32), mask, np.ones(3, bool))
    assert np.isfinite(value) and value > 0 and np.all(np.isfinite(g))
