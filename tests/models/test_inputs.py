"""The model's public boundary (`Flow3r.__call__`, `Predictor.__call__`) refuses bad inputs with a
ModelInputError (a ValueError) naming the argument, the offending value or shape and the allowed
range; value checks run on concrete inputs only, shape and dtype checks also under jit."""

import importlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flow3r_jax.models import ModelInputError, Predictor

N = 3  # frames of tiny_inputs


@pytest.fixture(scope="module")
def predictor(tiny_model):
    return Predictor(tiny_model)


@pytest.fixture
def images(tiny_inputs):
    return np.asarray(tiny_inputs[0])  # (1, 3, 56, 70, 3) float32 in [0, 1)


@pytest.fixture
def pairs(tiny_inputs):
    return np.asarray(tiny_inputs[1])  # (1, 4, 2) int32


def _both(tiny_model, predictor):
    """The two public entry points, called eagerly on concrete arrays."""
    return {"Flow3r": tiny_model, "Predictor": predictor}


def test_pair_indices_outside_the_frame_range_are_refused(tiny_model, predictor, images, pairs):
    for name, call in _both(tiny_model, predictor).items():
        for bad_value, where in ((N, (0, 2, 1)), (-1, (0, 1, 0))):
            bad = pairs.copy()
            bad[where] = bad_value
            with pytest.raises(ModelInputError) as info:
                call(images, bad)
            msg = str(info.value)
            b, s, _ = where
            assert f"pairs[{b}, {s}] = {bad[b, s].tolist()}" in msg, (name, msg)
            assert f"outside [0, {N})" in msg, (name, msg)
    # unbatched Predictor input: (N, H, W, 3) with (S, 2) pairs
    with pytest.raises(ModelInputError, match=r"pairs\[0, 0\] = \[0, 7\] is outside \[0, 3\)"):
        predictor(images[0], np.array([[0, 7]]))


def test_non_integer_pairs_are_refused(tiny_model, predictor, images, pairs):
    for name, call in _both(tiny_model, predictor).items():
        for bad, dtype in ((pairs.astype(np.float32), "float32"), (pairs.astype(np.float64) + 0.5, "float64"), (pairs.astype(bool), "bool")):
            with pytest.raises(ModelInputError, match=rf"pairs: dtype {dtype} is not accepted; pairs are integer frame indices \(i, j\) in \[0, {N}\)"):
                call(images, bad)
        with pytest.raises(ModelInputError, match="pairs: dtype float"):
            call(images, [[[0.0, 1.0]]])  # a Python list of floats
    assert isinstance(ModelInputError("x"), ValueError)


def test_uint8_images_are_refused(tiny_model, predictor, images):
    frames = (images * 255).astype(np.uint8)
    for name, call in _both(tiny_model, predictor).items():
        with pytest.raises(ModelInputError, match=r"images: dtype uint8 is not accepted; .*values in \[0, 1\].*astype\(np.float32\) / 255"):
            call(frames)
        with pytest.raises(ModelInputError, match="images: dtype int32"):
            call(frames.astype(np.int32))


def test_images_outside_zero_one_are_refused(tiny_model, predictor, images):
    for name, call in _both(tiny_model, predictor).items():
        high = images.copy()
        high[0, 1, 2, 3, 0] = 1.5
        with pytest.raises(ModelInputError) as info:
            call(high)
        msg = str(info.value)
        assert "images: values must be in [0, 1]" in msg and "max 1.5" in msg and "(0, 1, 2, 3, 0)" in msg and "(1, 3, 56, 70, 3)" in msg, msg
        with pytest.raises(ModelInputError, match=r"divide by 255"):
            call(images * 255)  # 0-255 values in a float array
        with pytest.raises(ModelInputError, match=r"values must be in \[0, 1\], got min -0.2"):
            call(images - 0.25)
        with pytest.raises(ModelInputError, match=r"values must be in \[0, 1\]"):
            call(jnp.asarray(high))  # a concrete jax.Array is checked too


def test_non_finite_images_are_refused(tiny_model, predictor, images):
    for name, call in _both(tiny_model, predictor).items():
        for value in (np.nan, np.inf, -np.inf):
            bad = images.copy()
            bad[0, 2, 10, 20, 1] = value
            bad[0, 2, 11, 20, 1] = value
            with pytest.raises(ModelInputError) as info:
                call(bad)
            msg = str(info.value)
            assert f"images: 2 non-finite value(s) (first {value} at index (0, 2, 10, 20, 1)" in msg, (name, msg)
            assert "allowed: finite values in [0, 1]" in msg, msg


def test_size_error_names_the_projects_resize_helpers(tiny_model, predictor):
    for call in (tiny_model, predictor):
        with pytest.raises(ModelInputError) as info:
            call(np.zeros((1, 2, 57, 70, 3), np.float32))
        msg = str(info.value)
        assert "57x70" in msg and "multiples of the patch size 14" in msg and "e.g. to 56x70" in msg
    names = re.findall(r"\b(flow3r_jax(?:\.\w+)+)", msg)
    assert names, msg
    for dotted in names:  # every helper the message points to exists
        module, _, attr = dotted.rpartition(".")
        assert callable(getattr(importlib.import_module(module), attr)), dotted


def test_under_jit_values_are_not_checked_but_shapes_and_dtypes_are(tiny_model, images, pairs):
    """Tracing (jax.eval_shape: what jit does before compiling) with tracers skips the value
    checks and still refuses wrong dtypes and shapes."""
    graphdef, state = nnx.split(tiny_model)

    def forward(state, x, p):
        return nnx.merge(graphdef, state)(x, p)

    bad_values = pairs.copy()
    bad_values[0, 0] = (0, 99)
    out = jax.eval_shape(forward, state, images * 7 - 3, bad_values)  # no error: values unknown
    assert out["flow"].shape == (1, 4, 56, 70, 2)
    with pytest.raises(ModelInputError, match="pairs: dtype float32"):
        jax.eval_shape(forward, state, images, pairs.astype(np.float32))
    with pytest.raises(ModelInputError, match="images: dtype uint8"):
        jax.eval_shape(forward, state, images.astype(np.uint8), pairs)
    with pytest.raises(ModelInputError, match=r"pairs must have shape \(B=1, S, 2\), got \(1, 4, 3\)"):
        jax.eval_shape(forward, state, images, np.zeros((1, 4, 3), np.int32))


def test_boundary_values_are_accepted(predictor, images):
    """Exactly 0 and 1, every frame index from 0 to N-1, and integer dtypes other than int32."""
    x = images.copy()
    x[0, 0] = 0.0
    x[0, 1] = 1.0
    out = predictor(x.astype(np.float64), np.array([[[0, N - 1], [N - 1, 0], [1, 1]]], np.int64))
    assert out["flow"].shape == (1, 3, 56, 70, 2)
    assert all(np.isfinite(v).all() for v in out.values())
