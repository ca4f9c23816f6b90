"""Jitted inference: `Predictor(model)(images, pairs)` compiles the forward once per input shape.

Calling an NNX module directly runs op by op; for the 1B-parameter model that is several times
slower than one compiled program. `Predictor` splits the model once and keeps a jitted
`merge -> forward` (fp32 at highest matmul precision by default, as the parity checks).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flow3r_jax.models.flow3r import Flow3r
from flow3r_jax.models.inputs import ModelInputError, check_images, check_pairs

__all__ = ["Predictor"]


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, images, pairs):
    """One compiled forward per model structure (graphdef), input shape and matmul precision,
    shared by every Predictor: the training loop's eval hook makes a new model at each eval."""
    return nnx.merge(graphdef, state)(images, pairs)


class Predictor:
    def __init__(self, model: Flow3r, precision: str | None = "highest"):
        self.cfg = model.cfg
        self._graphdef, self._state = nnx.split(model)
        self._precision = precision

    def __call__(self, images, pairs=None) -> dict[str, np.ndarray]:
        """images (B, N, H, W, 3) or (N, H, W, 3), floating point in [0, 1]; pairs (B, S, 2) or
        (S, 2) integer frame indices in [0, N). Inputs are checked here, before the compiled
        forward (`flow3r_jax.models.inputs`): a bad shape, dtype, value range, NaN / inf or pair
        index raises ModelInputError."""
        if not hasattr(images, "dtype"):
            images = np.asarray(images)
        if pairs is not None and not hasattr(pairs, "dtype"):
            pairs = np.asarray(pairs)
        single = images.ndim == 4
        if single:
            images = images[None]
            if pairs is not None:
                if pairs.ndim != 2:
                    raise ModelInputError(f"pairs for unbatched images (N, H, W, 3) must have shape (S, 2), got {tuple(pairs.shape)}")
                pairs = pairs[None]
        check_images(images, self.cfg.patch_size)
        if pairs is not None:
            pairs = check_pairs(pairs, images.shape[0], images.shape[1])
        images = jnp.asarray(images, jnp.float32)
        with jax.default_matmul_precision(self._precision):
            out = _forward(self._graphdef, self._state, images, pairs)
        out = {k: np.asarray(v) for k, v in out.items()}
        return {k: v[0] for k, v in out.items()} if single else out
