"""Bilinear sampling against a per-point loop (and torch's grid_sample when installed); the
antialiased bicubic resize against a direct numpy implementation of the kernel (and torch)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flow3r_jax import geometry as g
from tests.geometry.helpers import bilinear_reference


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_bilinear_matches_loop_reference(rng, padding):
    H, W, C = 5, 7, 3
    image = rng.normal(size=(2, H, W, C))
    # Positions inside, on the border band, and well outside.
    xy = rng.uniform(-2, max(H, W) + 2, size=(2, 4, 6, 2))
    out = np.asarray(g.bilinear_sample(jnp.asarray(image), jnp.asarray(xy), padding=padding))
    assert out.shape == (2, 4, 6, C)
    for b in range(2):
        for i in range(4):
            for j in range(6):
                np.testing.assert_allclose(out[b, i, j], bilinear_reference(image[b], *xy[b, i, j], padding), atol=1e-5)


def test_bilinear_exact_at_pixel_centres_and_linear_in_between(rng):
    image = rng.normal(size=(4, 6, 2))
    np.testing.assert_allclose(g.bilinear_sample(jnp.asarray(image), g.pixel_grid(4, 6)), image, atol=1e-6)
    # A linear function is reproduced exactly in the interior.
    yy, xx = np.meshgrid(np.arange(4) + 0.5, np.arange(6) + 0.5, indexing="ij")
    lin = (2 * xx - 3 * yy + 1)[..., None]
    q = rng.uniform(0.5, [5.5, 3.5], size=(20, 2))
    np.testing.assert_allclose(g.bilinear_sample(jnp.asarray(lin), jnp.asarray(q))[:, 0], 2 * q[:, 0] - 3 * q[:, 1] + 1, atol=1e-5)


def test_bilinear_gradient_wrt_positions(rng):
    image = jnp.asarray(rng.normal(size=(6, 8, 1)))
    q = jnp.asarray(rng.uniform(1, 5, size=(10, 2)))
    with jax.enable_x64(True):
        from jax.test_util import check_grads

        check_grads(lambda p: g.bilinear_sample(jnp.asarray(image, jnp.float64), p), (jnp.asarray(q, jnp.float64),), order=1, modes=("rev",), eps=1e-4)


@pytest.mark.torch
@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_bilinear_matches_torch_grid_sample(rng, padding):
    torch = pytest.importorskip("torch")
    H, W, C = 9, 13, 4
    image = rng.normal(size=(3, H, W, C)).astype(np.float32)
    xy = rng.uniform(-3, 16, size=(3, 5, 8, 2)).astype(np.float32)
    grid = 2 * xy / np.array([W, H], np.float32) - 1
    ref = torch.nn.functional.grid_sample(torch.from_numpy(image).permute(0, 3, 1, 2), torch.from_numpy(grid), mode="bilinear", padding_mode=padding, align_corners=False)
    np.testing.assert_allclose(g.bilinear_sample(jnp.asarray(image), jnp.asarray(xy), padding), ref.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_nearest_sample(rng):
    image = rng.normal(size=(4, 5, 2))
    xy = np.array([[0.0, 0.0], [4.99, 3.99], [2.5, 1.0], [-3.0, 10.0]])
    out = np.asarray(g.nearest_sample(jnp.asarray(image), jnp.asarray(xy)))
    np.testing.assert_allclose(out, image[[0, 3, 1, 3], [0, 4, 2, 0]], atol=0)


def _aa_bicubic_reference(x, out_h, out_w):
    """Direct loop evaluation of the antialiased Keys (a=-0.5) filter, separable, width first."""

    def kernel(t):
        t = abs(t)
        a = -0.5
        if t < 1:
            return (a + 2) * t**3 - (a + 3) * t**2 + 1
        if t < 2:
            return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
        return 0.0

    def resize_axis(arr, n_out, axis):
        n_in = arr.shape[axis]
        scale = n_in / n_out
        support = 2 * scale if scale >= 1 else 2.0
        stretch = scale if scale >= 1 else 1.0
        arr = np.moveaxis(arr, axis, 0)
        out = np.zeros((n_out,) + arr.shape[1:])
        for i in range(n_out):
            center = scale * (i + 0.5)
            lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n_in)
            ws = [kernel((j - center + 0.5) / stretch) for j in range(lo, hi)]
            total = sum(ws)
            for j, w in zip(range(lo, hi), ws):
                out[i] += (w / total) * arr[j]
        return np.moveaxis(out, 0, axis)

    return resize_axis(resize_axis(x, out_w, 1), out_h, 0)


@pytest.mark.parametrize("size", [(37, 37, 8, 11), (37, 37, 27, 27), (37, 37, 45, 60), (10, 16, 10, 16), (12, 9, 5, 20)])
def test_bicubic_antialias_matches_direct_numpy_kernel(rng, size):
    H, W, h, w = size
    x = rng.normal(size=(H, W, 3))
    with jax.enable_x64(True):  # float64 in and out: the exact filter, compared tightly
        out = np.asarray(g.resize_bicubic_antialias(jnp.asarray(x, jnp.float64), (h, w)))
    np.testing.assert_allclose(out, _aa_bicubic_reference(x, h, w), atol=1e-12)


def test_bicubic_antialias_preserves_constants_and_identity_size(rng):
    x = jnp.full((2, 37, 37, 4), 3.0)
    np.testing.assert_allclose(g.resize_bicubic_antialias(x, (8, 30)), 3.0, atol=1e-5)
    y = jnp.asarray(rng.normal(size=(5, 6, 2)))
    np.testing.assert_allclose(g.resize_bicubic_antialias(y, (5, 6)), y, atol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize("out_hw", [(8, 11), (27, 38), (60, 45), (37, 37)])
def test_bicubic_antialias_matches_torch(rng, out_hw):
    torch = pytest.importorskip("torch")
    x = rng.normal(size=(1, 37, 37, 16)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=out_hw, mode="bicubic", antialias=True, align_corners=False)
    out = g.resize_bicubic_antialias(jnp.asarray(x), out_hw)
    np.testing.assert_allclose(out, ref.permute(0, 2, 3, 1).numpy(), atol=1e-5)
    # torch's scale_factor path uses 1/scale_factor as the ratio (DINOv2's interpolate_offset).
    sf = ((out_hw[0] + 0.1) / 37, (out_hw[1] + 0.1) / 37)
    ref2 = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), scale_factor=sf, mode="bicubic", antialias=True, align_corners=False)
    out2 = g.resize_bicubic_antialias(jnp.asarray(x), out_hw, scale=(1 / sf[0], 1 / sf[1]))
    np.testing.assert_allclose(out2, ref2.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_bilinear_non_finite_positions_give_nan_with_and_without_jit():
    image = jnp.ones((4, 4, 1))
    xy = jnp.asarray([[jnp.inf, 1.0], [1.0, -jnp.inf], [jnp.nan, 1.0], [1.0, 1.0]])
    for fn in (g.bilinear_sample, jax.jit(g.bilinear_sample)):
        out = np.asarray(fn(image, xy))[:, 0]
        assert np.isnan(out[:3]).all() and out[3] == 1.0


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_bilinear_dense_and_sparse_paths_agree(rng, padding):
    """Many queries take the one-gather path (2x2 neighbourhoods), few take four gathers: the
    same positions must give the same values and the same image gradient either way."""
    H, W, C = 6, 8, 2
    image = jnp.asarray(rng.normal(size=(H, W, C)), jnp.float32)
    few = jnp.asarray(rng.uniform(-1.5, [W + 1.5, H + 1.5], size=(5, 2)), jnp.float32)  # 5 * 4 < 48: four gathers
    many = jnp.concatenate([few, jnp.asarray(rng.uniform(0, [W, H], size=(40, 2)), jnp.float32)])  # one gather
    sparse = g.bilinear_sample(image, few, padding=padding)
    dense = g.bilinear_sample(image, many, padding=padding)[:5]
    np.testing.assert_allclose(np.asarray(dense), np.asarray(sparse), atol=1e-6)
    cot = jnp.asarray(rng.normal(size=(5, C)), jnp.float32)
    g_sparse = jax.grad(lambda im: jnp.sum(g.bilinear_sample(im, few, padding=padding) * cot))(image)
    g_dense = jax.grad(lambda im: jnp.sum(g.bilinear_sample(im, many, padding=padding)[:5] * cot))(image)
    np.testing.assert_allclose(np.asarray(g_dense), np.asarray(g_sparse), atol=1e-6)
