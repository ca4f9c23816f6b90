"""Depth parameterisations of the per-scene optimisation: a small CNN (default) and explicit
per-pixel depth (FlowMap's ablation).

Depth is the only free variable of FlowMap: poses and intrinsics are computed from it (and the
flow) in closed form every step. Taking depth from a network instead of free per-pixel values is
FlowMap's regulariser: two identical image patches get the same depth, so the depth of pixels
the flow constrains poorly is filled in from pixels that look alike.

`DepthCNN` replaces FlowMap's MiDaS-small (21M parameters, ~5-9 s per step on a 2-core CPU at
20 x 160 x 224) by a CPU-sized U-Net (~0.4M parameters) built for XLA's CPU convolutions, which
are efficient only with tens of channels: the image is first folded into 4 x 4 pixel cells
(space-to-depth, 48 channels), the U-Net runs at 1/4, 1/8 and 1/16 resolution, and a linear head
on [decoder features, the cell's own 48 pixel values] emits the 16 raw depths of each cell
(depth-to-space), so depth keeps full-resolution detail. The same decoder also gives the
features of the correspondence-weight MLP (1/4 resolution).

The depth mapping is FlowMap's exp mapping: depth = exp(raw) + 0.01; with a base depth (the
Flow3r model's, `reconstruct --refine`) it is base * exp(raw), so a zero output keeps the base.
The raw head starts small, so a freshly initialised network gives a nearly constant depth.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from flow3r_jax.flowmap.conv import Conv3x3

__all__ = ["DepthCNN", "ExplicitDepth", "space_to_depth", "depth_to_space", "depth_from_raw", "CELL"]

CELL = 4  # space-to-depth cell size (pixels per side)
_MULTIPLE = CELL * 4  # two stride-2 levels below the cell grid
_MEAN, _STD = 0.45, 0.25  # image normalisation


def space_to_depth(x: Float[Array, "*b H W C"], r: int) -> Float[Array, "*b H/r W/r r*r*C"]:
    """Folds r x r pixel cells into channels (row-major within the cell, then channels)."""
    *b, H, W, C = x.shape
    x = x.reshape(*b, H // r, r, W // r, r, C)
    x = jnp.moveaxis(x, -4, -3)  # (..., H/r, W/r, r_y, r_x, C)
    return x.reshape(*b, H // r, W // r, r * r * C)


def depth_to_space(x: Float[Array, "*b h w r*r*C"], r: int) -> Float[Array, "*b h*r w*r C"]:
    """Inverse of `space_to_depth`."""
    *b, h, w, D = x.shape
    C = D // (r * r)
    x = x.reshape(*b, h, w, r, r, C)
    x = jnp.moveaxis(x, -3, -4)  # (..., h, r_y, w, r_x, C)
    return x.reshape(*b, h * r, w * r, C)


def depth_from_raw(raw: Array, base_depth: Array | None = None) -> Array:
    """FlowMap's exp mapping: exp(raw) + 0.01, or base * exp(raw) around a given base depth."""
    if base_depth is None:
        return jnp.exp(raw) + 0.01
    return base_depth * jnp.exp(raw)


def _up2(x):
    return jnp.repeat(jnp.repeat(x, 2, axis=-3), 2, axis=-2)


class DepthCNN(nnx.Module):
    """image (F, H, W, 3) in [0, 1] -> raw log-depth (F, H, W) and features (F, H/4, W/4, C).

    Any H, W: the input is edge-padded to multiples of 16 and the outputs cropped back (the
    features then cover the padded grid: feature cell (i, j) spans pixels [4j, 4j + 4) x
    [4i, 4i + 4) of the image, which `correspondence.sample_features` assumes). Downsampling is
    space-to-depth followed by a 1 x 1 convolution and upsampling is nearest-neighbour, so every
    convolution is a stride-1 `conv.conv3x3` (fast inside the compiled loop, see `conv.py`)."""

    def __init__(self, widths: tuple[int, int, int] = (24, 48, 96), feature_dim: int = 32, *, rngs: nnx.Rngs):
        c1, c2, c3 = widths
        cin = CELL * CELL * 3

        def conv(a, b, k=3, **kw):
            return Conv3x3(a, b, k, rngs=rngs, **kw)

        self.stem = conv(cin, c1, k=1)
        self.enc1 = conv(c1, c1)
        self.down2 = conv(4 * c1, c2, k=1)
        self.enc2 = conv(c2, c2)
        self.down3 = conv(4 * c2, c3, k=1)
        self.enc3 = conv(c3, c3)
        self.lat3 = conv(c3, c2, k=1)
        self.dec2 = conv(c2, c2)
        self.lat2 = conv(c2, c1, k=1)
        self.dec1 = conv(c1, c1)
        self.depth_head = conv(c1 + cin, CELL * CELL, k=1, kernel_init=nnx.initializers.normal(1e-3))
        self.feature_head = conv(c1, feature_dim, k=1)

    def __call__(self, images: Float[Array, "F H W 3"]) -> tuple[Float[Array, "F H W"], Float[Array, "F h w C"]]:
        F, H, W, _ = images.shape
        ph, pw = (-H) % _MULTIPLE, (-W) % _MULTIPLE
        x = (images - _MEAN) / _STD
        if ph or pw:
            x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
        cells = space_to_depth(x, CELL)
        relu = jax.nn.relu
        e1 = relu(self.enc1(relu(self.stem(cells))))
        e2 = relu(self.enc2(relu(self.down2(space_to_depth(e1, 2)))))
        e3 = relu(self.enc3(relu(self.down3(space_to_depth(e2, 2)))))
        d2 = relu(self.dec2(relu(e2 + _up2(self.lat3(e3)))))
        d1 = relu(self.dec1(relu(e1 + _up2(self.lat2(d2)))))
        raw = depth_to_space(self.depth_head(jnp.concatenate([d1, cells], axis=-1)), CELL)[..., 0]
        return raw[:, :H, :W], self.feature_head(d1)


class ExplicitDepth(nnx.Module):
    """FlowMap's explicit-depth ablation: depth (F, H, W) and correspondence weights
    (F - 1, H, W) are free parameters; depth starts at `initial_depth` and is used as is,
    weights are sigmoid(sensitivity * w) with w starting at 0."""

    def __init__(self, num_frames: int, image_shape: tuple[int, int], initial_depth: float = 0.1, *, rngs: nnx.Rngs | None = None):
        H, W = image_shape
        self.depth = nnx.Param(jnp.full((num_frames, H, W), initial_depth, jnp.float32))
        self.weights = nnx.Param(jnp.zeros((num_frames - 1, H, W), jnp.float32))
