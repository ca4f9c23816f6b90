"""Point weights and the pooled weighted-L1 point loss against the official boolean-indexed form."""

import jax
import jax.numpy as jnp
import numpy as np

from flow3r_jax.losses import point_loss, point_weights
from tests.losses import reference as ref


def _inputs(rng, B=3, N=2, H=6, W=7):
    gt = rng.normal(size=(B, N, H, W, 3)) + [0, 0, 2]
    gt[..., 2] = np.abs(gt[..., 2]) + rng.choice([0.01, 1.0], size=(B, N, H, W))  # some z below the floor
    pred = gt + 0.2 * rng.normal(size=gt.shape)
    mask = rng.random((B, N, H, W)) < 0.6
    mask[1, 0] = False  # an empty view
    mask[2] = False  # an empty (flow-only) sample
    return [jnp.asarray(a, jnp.float32) for a in (pred, gt)] + [mask]


def test_point_weights_match_moge_weighted_mean(rng):
    _, gt, mask = _inputs(rng)
    want = ref.point_weights(np.float64(gt[..., 2]), mask)
    np.testing.assert_allclose(jax.jit(point_weights)(gt[..., 2], mask), want, rtol=1e-5)


def test_point_loss_is_pooled_over_the_batch(rng):
    pred, gt, mask = _inputs(rng)
    w = point_weights(gt[..., 2], mask)
    got = jax.jit(point_loss)(pred, gt, w, mask)
    p, g, ww = (np.asarray(a, np.float64) for a in (pred, gt, w))
    want = (np.abs(p[mask] - g[mask]) * ww[mask][:, None]).mean()
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # Pooled, not a mean of per-sample means: vmapping over samples gives each sample's own mean.
    per_sample = jax.jit(jax.vmap(point_loss))(pred, gt, w, mask)
    for b in range(2):
        m = mask[b]
        np.testing.assert_allclose(per_sample[b], (np.abs(p[b][m] - g[b][m]) * ww[b][m][:, None]).mean(), rtol=1e-5)
    assert per_sample[2] == 0.0


def test_empty_mask_and_nan_outside_mask_give_finite_values_and_gradients(rng):
    pred, gt, mask = _inputs(rng)
    pred = pred.at[~mask].set(jnp.nan)
    w = point_weights(gt[..., 2], mask)
    f = jax.jit(jax.value_and_grad(point_loss))
    value, g = f(pred, gt, w, mask)
    assert np.isfinite(value) and np.all(np.isfinite(g))
    np.testing.assert_array_equal(g[~mask], 0.0)
    value, g = f(pred, gt, w, jnp.zeros_like(mask))
    assert value == 0.0 and np.all(g == 0.0)
