"""Shared fixtures: randomly initialised models built cheaply, and jitted apply functions.

Models are built from NumPy random values through `model_from_params` instead of the modules'
initialisers: eager initialisation compiles one RNG program per parameter shape, which costs far
more than the tests themselves on a 2-core machine.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flow3r_jax.models import get_model_config
from flow3r_jax.models.pretrained import abstract_params, model_from_params


def random_params(cfg, seed=0):
    """{path: array} with fan-in scaled kernels, LayerNorm scales near 1, small LayerScales and
    non-zero biases, so no parameter is degenerate (as the official parity dumps perturb theirs)."""
    rng = np.random.default_rng(seed)
    _, _, shapes = abstract_params(cfg)
    params = {}
    for path, shape in shapes.items():
        name = path[-1]
        if name == "scale":
            v = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name == "gamma":
            v = 0.2 + 0.05 * rng.standard_normal(shape)
        elif name == "kernel":
            fan_in = int(np.prod(shape[:-1])) // (shape[0] if len(shape) == 3 else 1)
            if path[-2:] and len(shape) == 4 and "resize_layers" in path:  # ConvTranspose (in, out, k, k)
                fan_in = shape[0]
            v = rng.standard_normal(shape) / np.sqrt(max(fan_in, 1))
        else:
            v = 0.05 * rng.standard_normal(shape)
        params[path] = v.astype(np.float32)
    return params


def random_model(size="tiny", seed=0, **overrides):
    cfg = get_model_config(size, **overrides)
    return model_from_params(cfg, random_params(cfg, seed))


def jit_apply(model):
    """A jitted (images, pairs) -> outputs function closed over the model's parameters."""
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda s, x, p: nnx.merge(graphdef, s)(x, p), static_argnums=())
    no_pairs = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    return lambda x, p=None: no_pairs(state, x) if p is None else fn(state, x, p)


@pytest.fixture(scope="session")
def tiny_model():
    return random_model("tiny")


@pytest.fixture(scope="session")
def tiny_apply(tiny_model):
    return jit_apply(tiny_model)


@pytest.fixture(scope="session")
def tiny_inputs():
    images = jax.random.uniform(jax.random.PRNGKey(1), (1, 3, 56, 70, 3))
    pairs = jnp.asarray([[[0, 1], [2, 0], [1, 1], [1, 2]]], jnp.int32)
    return images, pairs
