"""A 3 x 3 'SAME' convolution that stays fast inside `lax.scan` on XLA:CPU and under `vmap`.

Why not `nnx.Conv` / `lax.conv_general_dilated` as is: on XLA:CPU (jax 0.10) the two
convolutions of its gradient (with respect to the input and to the kernel) have non-canonical
dimension layouts. Outside loops XLA hands them to a fast library fusion; inside a while loop
(the body of `lax.scan`, i.e. the whole optimisation) they fall back to a generic loop and were
measured 10-50x slower (32 channels, 20 x 40 x 56: kernel gradient 21 ms -> 1000 ms, input
gradient 24 ms -> 210 ms), which made a 2000-step run take hours. And under `jax.vmap` over
scenes, each scene having its own kernel, the forward convolution becomes a grouped convolution,
again off the fast path (~2.5x).

`conv3x3` therefore defines its own derivative with canonical operations only: the input
gradient is the convolution of the output gradient with the flipped, transposed kernel (an
ordinary NHWC x HWIO convolution) and the kernel gradient is nine (N H W, C) x (N H W, O)
matrix products, one per tap. Its batching rule runs one canonical convolution per scene when
kernels differ and folds the scene axis into the batch when they are shared. Values equal
`lax.conv_general_dilated(x, w, (1, 1), "SAME")` up to float summation order (tested).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.custom_batching import custom_vmap
from jaxtyping import Array, Float

__all__ = ["conv3x3", "Conv3x3", "reference_conv"]

_DN = ("NHWC", "HWIO", "NHWC")


def reference_conv(x: Float[Array, "N H W C"], w: Float[Array, "k k C O"]) -> Float[Array, "N H W O"]:
    """The plain XLA convolution (stride 1, SAME padding)."""
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DN)


@custom_vmap
def _conv(x, w):
    return reference_conv(x, w)


@_conv.def_vmap
def _conv_vmap(axis_size, in_batched, x, w):
    x_batched, w_batched = in_batched
    if not w_batched:  # shared kernel: fold the vmapped axis into the image batch
        lead = x.shape[:2]
        out = _conv(x.reshape((-1,) + x.shape[2:]), w)
        return out.reshape(lead + out.shape[1:]), True
    if not x_batched:
        x = jnp.broadcast_to(x, (axis_size,) + x.shape)
    return jnp.stack([_conv(x[s], w[s]) for s in range(axis_size)]), True


def _taps(x, k):
    """The k * k shifted copies of x (SAME zero padding), tap order (dy, dx) row-major."""
    H, W = x.shape[-3:-1]
    r = k // 2
    xp = jnp.pad(x, [(0, 0)] * (x.ndim - 3) + [(r, r), (r, r), (0, 0)])
    return [xp[..., dy : dy + H, dx : dx + W, :] for dy in range(k) for dx in range(k)]


@jax.custom_vjp
def _conv_vjp(x, w):
    return _conv(x, w)


def _fwd(x, w):
    return _conv(x, w), (x, w)


def _bwd(res, g):
    x, w = res
    k = w.shape[0]
    dx = _conv(g, jnp.flip(w, (0, 1)).swapaxes(2, 3))
    dw = jnp.stack([jnp.einsum("nhwc,nhwo->co", t, g) for t in _taps(x, k)]).reshape(w.shape)
    return dx, dw


_conv_vjp.defvjp(_fwd, _bwd)


def conv3x3(x: Float[Array, "N H W C"], w: Float[Array, "k k C O"], b: Float[Array, " O"] | None = None) -> Float[Array, "N H W O"]:
    """Stride-1 'SAME' convolution with an odd square kernel (1 x 1 or 3 x 3), plus bias.
    A 1 x 1 kernel is a plain matrix product."""
    if w.shape[0] == 1:
        y = jnp.einsum("nhwc,co->nhwo", x, w[0, 0])
    else:
        y = _conv_vjp(x, w)
    return y if b is None else y + b


class Conv3x3(nnx.Module):
    """`nnx.Conv`-like module (stride 1, SAME, bias) on top of `conv3x3`."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, *, kernel_init=None, rngs: nnx.Rngs):
        init = kernel_init or nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (kernel_size, kernel_size, in_features, out_features), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32))

    def __call__(self, x):
        return conv3x3(x, self.kernel.get_value(), self.bias.get_value())
