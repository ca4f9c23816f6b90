"""Zeroing a loss term that is not finite, with the gradient zeroed too.

The official training loss replaces a NaN / Inf term by `nan_to_num(output).sum() * 0`: the value
becomes 0 and the term contributes no gradient. `finite_or_zero` does the same under `jit`: the
term's value and its whole gradient (not only its cotangent, which would still give 0 * NaN) are
zeroed when any entry of the value is not finite, and a flag reports it.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["finite_or_zero"]


def _zero_unless(ok, tree):
    return jax.tree.map(lambda g: g if g.dtype == jax.dtypes.float0 else jnp.where(ok, g, jnp.zeros_like(g)), tree)


def finite_or_zero(fn: Callable[..., Array], *args) -> tuple[Float[Array, "*shape"], Float[Array, ""]]:
    """(fn(*args), 0.) when every entry of fn(*args) is finite, else (zeros, 1.).

    `args` are pytrees of arrays (boolean / integer leaves are fine). Where the value is not
    finite, the gradient with respect to every argument is exactly zero.
    """

    def zeroed(v):
        ok = jnp.all(jnp.isfinite(v))
        return (jnp.where(ok, v, jnp.zeros_like(v)), jnp.logical_not(ok).astype(jnp.float32)), ok

    @jax.custom_vjp
    def guarded(*a):
        return zeroed(fn(*a))[0]

    def fwd(*a):
        v, pullback = jax.vjp(fn, *a)
        out, ok = zeroed(v)
        return out, (ok, pullback)

    def bwd(res, cotangents):
        ok, pullback = res
        ct = jnp.where(ok, cotangents[0], jnp.zeros_like(cotangents[0]))
        return _zero_unless(ok, tuple(pullback(ct)))

    guarded.defvjp(fwd, bwd)
    return guarded(*args)

