"""finite_or_zero: value and gradient pass through when finite, are zeroed (and flagged) otherwise."""

import jax
import jax.numpy as jnp
import numpy as np

from flow3r_jax.losses import finite_or_zero


def _term(x, mask):
    return jnp.sum(jnp.where(mask, jnp.log(x), 0.0) ** 2)


def test_finite_term_is_unchanged_with_its_gradient():
    x, mask = jnp.array([1.0, 2.0, 3.0]), jnp.array([True, False, True])
    f = jax.jit(jax.value_and_grad(lambda x: finite_or_zero(_term, x, mask)[0]))
    value, g = f(x)
    want_value, want_g = jax.value_and_grad(_term)(x, mask)
    np.testing.assert_allclose(value, want_value)
    np.testing.assert_allclose(g, want_g)
    assert finite_or_zero(_term, x, mask)[1] == 0.0


def test_nonfinite_term_is_zero_with_zero_gradient():
    x, mask = jnp.array([-1.0, 2.0, jnp.nan]), jnp.array([True, True, True])
    value, flag = jax.jit(lambda x: finite_or_zero(_term, x, mask))(x)
    assert value == 0.0 and flag == 1.0
    g = jax.jit(jax.grad(lambda x: finite_or_zero(_term, x, mask)[0]))(x)
    np.testing.assert_array_equal(g, 0.0)
