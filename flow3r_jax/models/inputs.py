"""Checks of the model's inputs at its public boundary (`Flow3r.__call__`, `Predictor.__call__`).

- images: (B, N, H, W, 3), floating point, values in [0, 1] (1e-6 of rounding slack), H and W
  positive multiples of the patch size (14). uint8 frames are refused, not rescaled: divide by
  255 first.
- pairs: (B, S, 2), an integer dtype (not float, not bool), each index in [0, N).

Shape and dtype are checked always. Values (range, NaN / inf, pair indices) are checked, on the
host, only on concrete arrays this process can read: under someone's `jax.jit` the inputs are
tracers whose values are unknown, and the checks are skipped rather than turned into device-side
asserts. Every problem
raises `ModelInputError` (a ValueError) naming the argument, the offending value or shape and
what is allowed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["ModelInputError", "RESIZE_HINT", "check_image_shape", "check_images", "check_pairs", "is_concrete"]

# The project's resize helpers (flow3r_jax/data/frames.py); tests check that these names exist.
RESIZE_HINT = (
    "resize the frames with flow3r_jax.data.frames.resize_frames(frames, "
    "flow3r_jax.data.frames.official_target_size(H, W)), or load a video / image folder with "
    "flow3r_jax.data.frames.load_model_input"
)
# Rounding slack of the [0, 1] range: a resampling filter may land a few ulps outside it.
_RANGE_SLACK = 1e-6


class ModelInputError(ValueError):
    """An input of the model is refused: the message names the argument, the offending value or
    shape and the allowed range."""


def is_concrete(x) -> bool:
    """Whether this process can read x's values: False for a tracer (inside jit / vmap / grad /
    eval_shape) and for a global array spread over several processes."""
    return not isinstance(x, jax.core.Tracer) and getattr(x, "is_fully_addressable", True)


def check_image_shape(shape: tuple[int, ...], patch: int = 14) -> None:
    """Raises ModelInputError unless shape is (B, N, H, W, 3) with H and W positive multiples of patch."""
    if len(shape) != 5 or shape[-1] != 3:
        raise ModelInputError(f"images must have shape (B, N, H, W, 3), got {tuple(shape)}")
    H, W = shape[2], shape[3]
    if H <= 0 or W <= 0 or H % patch or W % patch:
        h, w = max(1, round(H / patch)) * patch, max(1, round(W / patch)) * patch
        raise ModelInputError(
            f"images: height and width must be positive multiples of the patch size {patch}, got {H}x{W} "
            f"(shape {tuple(shape)}); {RESIZE_HINT} (e.g. to {h}x{w})"
        )


def _first_index(mask) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(np.asarray(mask))[0])


def check_images(images, patch: int = 14) -> None:
    """Shape and dtype always; finiteness and the [0, 1] range when `images` is concrete."""
    if not hasattr(images, "dtype"):
        images = np.asarray(images)
    shape, dtype = tuple(images.shape), np.dtype(images.dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        hint = " (uint8 frames: pass images.astype(np.float32) / 255)" if dtype == np.uint8 else ""
        raise ModelInputError(f"images: dtype {dtype} is not accepted; the model takes floating-point images with values in [0, 1]{hint}")
    check_image_shape(shape, patch)
    if not is_concrete(images) or not np.prod(shape):
        return
    # On the host, in NumPy: jnp reductions of a concrete array closed over by someone's jit
    # would be traced, not evaluated.
    host = np.asarray(images)
    if host.dtype.itemsize < 4:  # float16 / bfloat16
        host = host.astype(np.float32)
    lo, hi = float(host.min()), float(host.max())  # NaN propagates; inf shows as a bound
    if not (np.isfinite(lo) and np.isfinite(hi)):
        bad = ~np.isfinite(host)
        count, where = int(bad.sum()), _first_index(bad)
        raise ModelInputError(
            f"images: {count} non-finite value(s) (first {float(host[where])} at index {where} of shape {shape}); "
            "allowed: finite values in [0, 1]"
        )
    if lo < -_RANGE_SLACK or hi > 1 + _RANGE_SLACK:
        where = _first_index((host < -_RANGE_SLACK) | (host > 1 + _RANGE_SLACK))
        scale = " (0-255 pixel values? divide by 255)" if hi > 1.5 and lo >= 0 else ""
        raise ModelInputError(
            f"images: values must be in [0, 1], got min {lo:g} and max {hi:g} "
            f"(first outside: {float(host[where]):g} at index {where} of shape {shape}){scale}"
        )


def check_pairs(pairs, batch: int, frames: int):
    """Shape (batch, S, 2) and an integer dtype always; each index in [0, frames) when concrete.
    Returns `pairs` as an int32 array (a tracer stays a tracer)."""
    if not hasattr(pairs, "dtype"):
        pairs = np.asarray(pairs)
    dtype = np.dtype(pairs.dtype)
    if dtype == np.bool_ or not jnp.issubdtype(dtype, jnp.integer):
        raise ModelInputError(f"pairs: dtype {dtype} is not accepted; pairs are integer frame indices (i, j) in [0, {frames}), shape (B, S, 2)")
    shape = tuple(pairs.shape)
    if len(shape) != 3 or shape[0] != batch or shape[-1] != 2:
        raise ModelInputError(f"pairs must have shape (B={batch}, S, 2), got {shape}")
    if is_concrete(pairs) and np.prod(shape):
        host = np.asarray(pairs)
        bad = (host < 0) | (host >= frames)
        if bad.any():
            b, s, _ = _first_index(bad)
            raise ModelInputError(
                f"pairs[{b}, {s}] = {host[b, s].tolist()} is outside [0, {frames}) (the images have N={frames} frames); "
                f"{int(bad.any(-1).sum())} of {shape[0] * shape[1]} pairs are out of range"
            )
    return jnp.asarray(pairs, jnp.int32)
