"""conv3x3 equals XLA's convolution in value and gradient, alone, under vmap and inside scan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flow3r_jax.flowmap.conv import conv3x3, reference_conv


def _data(k=3, batch=()):
    x = jax.random.normal(jax.random.key(0), batch + (2, 6, 7, 5))
    w = jax.random.normal(jax.random.key(1), batch + (k, k, 5, 4))
    b = jax.random.normal(jax.random.key(2), batch + (4,))
    return x, w, b


def _loss(conv):
    return lambda x, w, b: jnp.sum(jnp.sin(conv(x, w) + b))


@pytest.mark.parametrize("k", [1, 3])
def test_value_and_gradient_match_xla_conv(k):
    x, w, b = _data(k)
    np.testing.assert_allclose(conv3x3(x, w, b), reference_conv(x, w) + b, rtol=1e-5, atol=1e-5)
    g = jax.grad(_loss(conv3x3), argnums=(0, 1, 2))(x, w, b)
    r = jax.grad(_loss(reference_conv), argnums=(0, 1, 2))(x, w, b)
    for a, e in zip(g, r):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shared", [True, False])
def test_vmap_with_shared_and_per_scene_kernels(shared):
    x, w, b = _data(batch=(3,))
    w_in = w[0] if shared else w
    axes = (0, None, None) if shared else (0, 0, 0)
    b_in = b[0] if shared else b
    got = jax.vmap(jax.grad(_loss(conv3x3), argnums=(0, 1)), in_axes=axes)(x, w_in, b_in)
    want = jax.vmap(jax.grad(_loss(reference_conv), argnums=(0, 1)), in_axes=axes)(x, w_in, b_in)
    for a, e in zip(got, want):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4)


def test_inside_scan():
    x, w, b = _data()

    def run(conv):
        def step(w, _):
            return w - 1e-3 * jax.grad(lambda w: _loss(conv)(x, w, b))(w), None

        return jax.jit(lambda w: jax.lax.scan(step, w, None, length=3)[0])(w)

    np.testing.assert_allclose(run(conv3x3), run(reference_conv), rtol=1e-4, atol=1e-5)
