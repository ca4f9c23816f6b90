"""DPT decoder pieces (channels-last, fp32): convolutions, resampling, RefineNet fusion.

Conventions follow the official PyTorch modules exactly where they matter numerically:
bilinear resizes use align_corners=True; each residual unit returns relu(x) + conv2(relu(conv1(
relu(x)))) because the official in-place ReLU overwrites the skip input; fusion blocks resize
*before* their 1x1 output conv.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["Conv", "ConvTransposeStride", "bilinear_resize_align_corners", "uv_embedding", "FusionBlock", "ResidualUnit"]

_INIT = nnx.initializers.lecun_normal()


class Conv(nnx.Module):
    """2D convolution, NHWC, kernel (kh, kw, in, out), symmetric zero padding."""

    def __init__(self, cin: int, cout: int, k: int, *, stride: int = 1, padding: int = 0, use_bias: bool = True, rngs: nnx.Rngs):
        self.stride, self.padding = stride, padding
        self.kernel = nnx.Param(_INIT(rngs.params(), (k, k, cin, cout)), out_sharding=(None, None, "conv_in", "conv_out"))
        self.bias = nnx.Param(jnp.zeros((cout,)), out_sharding=("conv_out",)) if use_bias else None

    def __call__(self, x):
        k = self.kernel[...]
        if k.shape[0] == 1 and self.stride == 1:  # 1x1 convolution: a matmul over channels
            y = jnp.einsum("...c,co->...o", x, k[0, 0])
        else:
            y = jax.lax.conv_general_dilated(
                x, k, (self.stride, self.stride), [(self.padding, self.padding)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
        return y + self.bias[...] if self.bias is not None else y


class ConvTransposeStride(nnx.Module):
    """Transposed convolution with kernel == stride and no padding (each input pixel writes one
    k x k output block): an exact einsum + reshape. Kernel stored (in, out, k, k) like torch."""

    def __init__(self, cin: int, cout: int, k: int, *, rngs: nnx.Rngs):
        self.k = k
        self.kernel = nnx.Param(_INIT(rngs.params(), (cin, cout, k, k)), out_sharding=("conv_in", "conv_out", None, None))
        self.bias = nnx.Param(jnp.zeros((cout,)), out_sharding=("conv_out",))

    def __call__(self, x):
        B, h, w, _ = x.shape
        y = jnp.einsum("bhwc,coyx->bhywxo", x, self.kernel[...])
        return y.reshape(B, h * self.k, w * self.k, -1) + self.bias[...]


@functools.lru_cache(maxsize=None)
def _align_corners_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear interpolation weights with align_corners=True."""
    W = np.zeros((n_out, n_in), np.float64)
    if n_in == 1 or n_out == 1:
        W[:, 0] = 1.0
        return W
    # torch computes the source position in fp32: scale = (in - 1) / (out - 1), src = scale * i.
    scale = np.float32(n_in - 1) / np.float32(n_out - 1)
    src = (scale * np.arange(n_out, dtype=np.float32)).astype(np.float32)
    lo = np.clip(np.floor(src).astype(int), 0, n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (src - lo.astype(np.float32)).astype(np.float64)
    W[np.arange(n_out), lo] += 1.0 - frac
    W[np.arange(n_out), hi] += frac
    return W


def bilinear_resize_align_corners(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """torch `interpolate(mode="bilinear", align_corners=True)` on NHWC, as two small matmuls."""
    H, W = x.shape[-3:-1]
    if (H, W) == tuple(size):
        return x
    Wy = jnp.asarray(_align_corners_matrix(H, size[0]), x.dtype)
    Wx = jnp.asarray(_align_corners_matrix(W, size[1]), x.dtype)
    prec = jax.lax.Precision.HIGHEST
    x = jnp.einsum("xW,...HWc->...Hxc", Wx, x, precision=prec)
    return jnp.einsum("yH,...Hxc->...yxc", Wy, x, precision=prec)


@functools.lru_cache(maxsize=None)
def uv_embedding(h: int, w: int, channels: int, aspect: float) -> np.ndarray:
    """(h, w, channels) float32 sin-cos embedding of a UV grid spanning the image's diagonal-
    normalised extent: u = s_x (2(i + 0.5)/w - 1), v = s_y (2(j + 0.5)/h - 1) with
    s_x = a / sqrt(a^2 + 1), s_y = 1 / sqrt(a^2 + 1), a = W / H; channels
    [sin(u w_k), cos(u w_k), sin(v w_k), cos(v w_k)], w_k = 100^(-k / (channels / 4))."""
    diag = (aspect**2 + 1.0) ** 0.5
    sx, sy = aspect / diag, 1.0 / diag
    # torch.linspace in fp32 between +-s (n - 1)/n, as the official grid.
    u = np.linspace(-sx * (w - 1) / w, sx * (w - 1) / w, w, dtype=np.float64).astype(np.float32)
    v = np.linspace(-sy * (h - 1) / h, sy * (h - 1) / h, h, dtype=np.float64).astype(np.float32)
    quarter = channels // 4
    omega = 1.0 / 100.0 ** (np.arange(quarter, dtype=np.float64) / quarter)
    uu = np.broadcast_to(u[None, :], (h, w)).astype(np.float64)[..., None] * omega
    vv = np.broadcast_to(v[:, None], (h, w)).astype(np.float64)[..., None] * omega
    return np.concatenate([np.sin(uu), np.cos(uu), np.sin(vv), np.cos(vv)], axis=-1).astype(np.float32)


class ResidualUnit(nnx.Module):
    def __init__(self, features: int, *, rngs: nnx.Rngs):
        self.conv1 = Conv(features, features, 3, padding=1, rngs=rngs)
        self.conv2 = Conv(features, features, 3, padding=1, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(x)  # the official in-place ReLU: the skip connection sees relu(x)
        return x + self.conv2(jax.nn.relu(self.conv1(x)))


class FusionBlock(nnx.Module):
    """RefineNet fusion: out = unit2(x + unit1(skip)); resize (align_corners=True); 1x1 conv."""

    def __init__(self, features: int, *, has_residual: bool = True, rngs: nnx.Rngs):
        self.resConfUnit1 = ResidualUnit(features, rngs=rngs) if has_residual else None
        self.resConfUnit2 = ResidualUnit(features, rngs=rngs)
        self.out_conv = Conv(features, features, 1, rngs=rngs)

    def __call__(self, x, skip=None, size=None):
        if self.resConfUnit1 is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            size = (x.shape[-3] * 2, x.shape[-2] * 2)
        return self.out_conv(bilinear_resize_align_corners(x, size))
