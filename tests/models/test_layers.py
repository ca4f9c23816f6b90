"""Model building blocks against independent references written here: explicit numpy loops of
SPEC §1's formulas (RoPE, pixel shuffle, convolutions, align-corners bilinear, UV embedding,
token positions, the camera head's SVD rule), numpy forward passes of attention / blocks /
residual units, and PyTorch's own operators when torch is installed.

Modules get random parameters (LayerNorm affines, LayerScale, biases included) so that every
parameter takes part in the comparison. References run in float64; modules in float32 with the
highest matmul precision.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from flow3r_jax.models.config import get_model_config
from flow3r_jax.models.decoder import token_positions
from flow3r_jax.models.dpt import Conv, ConvTransposeStride, FusionBlock, ResidualUnit, bilinear_resize_align_corners, uv_embedding
from flow3r_jax.models.encoder import Encoder, patchify
from flow3r_jax.models.heads import CameraHead, pixel_shuffle
from flow3r_jax.models.layers import Attention, Block, dense, layer_at, rope_2d, run_stack, stacked


@pytest.fixture(autouse=True)
def _highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


# ----------------------------------------------------------------------------- helpers


def _build(factory):
    """Constructs a module the way Flow3r does (logical axes as metadata, no eager sharding),
    with nnx.Rngs(0). Used where the initialisation itself is under test."""
    with nnx.use_eager_sharding(False):
        return factory(nnx.Rngs(0))


def _random_module(factory, rng, scale=0.5):
    """The module `factory` builds, every nnx.Param set to scale * N(0, 1) (kernels divided by
    sqrt(fan-in)). Built abstractly (nnx.eval_shape): its initial values are overwritten anyway,
    and eager initialisation would compile an initialiser per shape on this 2-core machine."""
    module = nnx.eval_shape(lambda: _build(factory))

    def draw(a):
        s = scale / math.sqrt(a.shape[-2]) if len(a.shape) >= 2 else scale
        return jnp.asarray(s * rng.normal(size=a.shape), a.dtype)

    nnx.update(module, jax.tree.map(draw, nnx.state(module, nnx.Param)))
    assert all(isinstance(a, jax.Array) for a in jax.tree.leaves(nnx.state(module)))
    return module


def _jit_fn(fn, module, *args):
    """fn(module, *args) under one jax.jit (one compile instead of one per eager primitive)."""
    graphdef, state = nnx.split(module)
    return jax.jit(lambda st, a: fn(nnx.merge(graphdef, st), *a))(state, args)


def _call(module, *args, **static):
    """module(*args, **static), jitted; None arguments are empty pytrees."""
    return _jit_fn(lambda m, *a: m(*a, **static), module, *args)


_rope = jax.jit(rope_2d, static_argnums=2)


def _np(v):
    return np.asarray(v[...], np.float64)


def _linear(x, lin):
    out = x @ _np(lin.kernel)
    return out + _np(lin.bias) if lin.bias is not None else out


def _layer_norm(x, ln, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * _np(ln.scale) + _np(ln.bias)


def _gelu_erf(x):
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def _relu(x):
    return np.maximum(x, 0.0)


def _softmax(s, axis=-1):
    s = s - s.max(axis=axis, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=axis, keepdims=True)


def rope_reference(x, pos, base=100.0):
    """SPEC §1 written as a loop: x (B, T, H, D), pos (B or 1, T, 2) = (row, col)."""
    x = np.asarray(x, np.float64)
    B, T, _, D = x.shape
    d = D // 2
    pos = np.broadcast_to(np.asarray(pos), (B, T, 2))
    out = np.empty_like(x)
    for b in range(B):
        for t in range(T):
            for axis in range(2):  # first half: row, second half: column
                p, off = float(pos[b, t, axis]), axis * d
                for k in range(d // 2):
                    w = base ** (-2.0 * k / d)
                    c, s = math.cos(p * w), math.sin(p * w)
                    lo, hi = x[b, t, :, off + k], x[b, t, :, off + k + d // 2]
                    out[b, t, :, off + k] = lo * c - hi * s
                    out[b, t, :, off + k + d // 2] = hi * c + lo * s
    return out


def attention_reference(x, attn, heads, *, qk_norm, rope_base, pos=None):
    B, T, D = x.shape
    hd = D // heads
    qkv = _linear(x, attn.qkv).reshape(B, T, 3, heads, hd)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if qk_norm:
        q, k = _layer_norm(q, attn.q_norm, 1e-5), _layer_norm(k, attn.k_norm, 1e-5)
    if rope_base is not None:
        q, k = rope_reference(q, pos, rope_base), rope_reference(k, pos, rope_base)
    p = _softmax(np.einsum("bqhd,bkhd->bhqk", q, k) * hd**-0.5)
    out = np.einsum("bhqk,bkhd->bqhd", p, v).reshape(B, T, D)
    return _linear(out, attn.proj)


def block_reference(x, blk, heads, *, qk_norm, rope_base, pos=None):
    a = attention_reference(_layer_norm(x, blk.norm1, 1e-6), blk.attn, heads, qk_norm=qk_norm, rope_base=rope_base, pos=pos)
    x = x + (a * _np(blk.ls1.gamma) if blk.ls1 is not None else a)
    m = _linear(_gelu_erf(_linear(_layer_norm(x, blk.norm2, 1e-6), blk.mlp.fc1)), blk.mlp.fc2)
    return x + (m * _np(blk.ls2.gamma) if blk.ls2 is not None else m)


def conv_reference(x, kernel_hwio, bias, stride=1, pad=0):
    """Zero-padded cross-correlation as a loop over output pixels (NHWC, HWIO)."""
    x = np.asarray(x, np.float64)
    k = kernel_hwio.shape[0]
    B, H, W, _ = x.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    Ho, Wo = (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1
    out = np.zeros((B, Ho, Wo, kernel_hwio.shape[-1]))
    for i in range(Ho):
        for j in range(Wo):
            window = xp[:, i * stride : i * stride + k, j * stride : j * stride + k, :]
            out[:, i, j] = np.einsum("byxc,yxco->bo", window, kernel_hwio)
    return out + bias if bias is not None else out


def bilinear_align_corners_reference(x, size):
    """torch's bilinear align_corners=True by its definition: src = dst * (in - 1) / (out - 1)."""
    x = np.asarray(x, np.float64)
    B, H, W, C = x.shape
    Ho, Wo = size
    out = np.zeros((B, Ho, Wo, C))

    def src(i, n_in, n_out):
        s = i * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        i0 = min(int(math.floor(s)), n_in - 1)
        return i0, min(i0 + 1, n_in - 1), s - i0

    for y in range(Ho):
        y0, y1, fy = src(y, H, Ho)
        for xo in range(Wo):
            x0, x1, fx = src(xo, W, Wo)
            out[:, y, xo] = (
                (1 - fy) * (1 - fx) * x[:, y0, x0] + (1 - fy) * fx * x[:, y0, x1] + fy * (1 - fx) * x[:, y1, x0] + fy * fx * x[:, y1, x1]
            )
    return out


def _residual_unit_reference(x, unit):
    r = _relu(x)
    h = _relu(conv_reference(r, _np(unit.conv1.kernel), _np(unit.conv1.bias), pad=1))
    return r + conv_reference(h, _np(unit.conv2.kernel), _np(unit.conv2.bias), pad=1)


# ----------------------------------------------------------------------------- 1. RoPE


@pytest.mark.parametrize("head_dim", [8, 64])
@pytest.mark.parametrize("pos_batch", [1, 2])
def test_rope_2d_matches_loop_reference(rng, head_dim, pos_batch):
    B, T, H = 2, 7, 3
    x = rng.normal(size=(B, T, H, head_dim)).astype(np.float32)
    pos = rng.integers(0, 20, size=(pos_batch, T, 2)).astype(np.int32)
    out = np.asarray(_rope(jnp.asarray(x), jnp.asarray(pos), 100.0))
    np.testing.assert_allclose(out, rope_reference(x, pos, 100.0), atol=2e-5, rtol=1e-5)


def test_rope_2d_halves_use_row_then_column(rng):
    """Moving only the column leaves the first (row) half untouched, and vice versa."""
    x = jnp.asarray(rng.normal(size=(1, 1, 1, 16)).astype(np.float32))
    base = np.asarray(_rope(x, jnp.array([[[3, 5]]]), 100.0))
    col_moved = np.asarray(_rope(x, jnp.array([[[3, 9]]]), 100.0))
    row_moved = np.asarray(_rope(x, jnp.array([[[7, 5]]]), 100.0))
    np.testing.assert_array_equal(col_moved[..., :8], base[..., :8])
    assert np.abs(col_moved[..., 8:] - base[..., 8:]).max() > 1e-2
    np.testing.assert_array_equal(row_moved[..., 8:], base[..., 8:])
    assert np.abs(row_moved[..., :8] - base[..., :8]).max() > 1e-2


def test_rope_2d_scores_depend_only_on_relative_position(rng):
    T, H, D = 6, 2, 16
    q = jnp.asarray(rng.normal(size=(1, T, H, D)).astype(np.float32))
    k = jnp.asarray(rng.normal(size=(1, T, H, D)).astype(np.float32))
    pos = rng.integers(0, 10, size=(1, T, 2)).astype(np.int32)

    def scores(p):
        p = jnp.asarray(p)
        return np.asarray(jnp.einsum("bqhd,bkhd->bhqk", _rope(q, p, 100.0), _rope(k, p, 100.0)))

    s0 = scores(pos)
    np.testing.assert_allclose(scores(pos + np.array([4, 11], np.int32)), s0, atol=1e-4)
    np.testing.assert_allclose(scores(pos + np.array([0, 3], np.int32)), s0, atol=1e-4)
    # ...and not only on the content: changing one token's position changes its scores.
    moved = pos.copy()
    moved[0, 0] += np.array([2, 1], np.int32)
    assert np.abs(scores(moved)[:, :, 0, 1:] - s0[:, :, 0, 1:]).max() > 1e-2


def test_rope_2d_leaves_position_zero_unchanged(rng):
    x = rng.normal(size=(2, 5, 2, 16)).astype(np.float32)
    pos = np.zeros((1, 5, 2), np.int32)
    np.testing.assert_array_equal(np.asarray(_rope(jnp.asarray(x), jnp.asarray(pos), 100.0)), x)
    # Registers at (0, 0) next to patches at (r+1, c+1): only the registers are untouched.
    tp = token_positions(2, 2, 1)[None]
    out = np.asarray(_rope(jnp.asarray(x), jnp.asarray(tp), 100.0))
    np.testing.assert_array_equal(out[:, 0], x[:, 0])
    assert np.abs(out[:, 1:] - x[:, 1:]).max() > 1e-2


# ----------------------------------------------------------------------------- 2. Attention

ATTN_CASES = [(False, None), (True, None), (False, 100.0), (True, 100.0)]


def _attention_inputs(rng, qk_norm, rope_base, D=32, heads=4, B=2, T=7):
    attn = _random_module(lambda r: Attention(D, heads, qk_norm=qk_norm, rope_base=rope_base, rngs=r), rng)
    x = rng.normal(size=(B, T, D)).astype(np.float32)
    pos = rng.integers(0, 6, size=(1, T, 2)).astype(np.int32)
    return attn, x, pos


@pytest.mark.parametrize("qk_norm, rope_base", ATTN_CASES)
def test_attention_matches_numpy(rng, qk_norm, rope_base):
    attn, x, pos = _attention_inputs(rng, qk_norm, rope_base)
    out = np.asarray(_call(attn, jnp.asarray(x), jnp.asarray(pos) if rope_base else None))
    ref = attention_reference(x, attn, 4, qk_norm=qk_norm, rope_base=rope_base, pos=pos)
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=1e-4)


@pytest.mark.torch
@pytest.mark.parametrize("qk_norm, rope_base", ATTN_CASES)
def test_attention_matches_torch_sdpa(rng, qk_norm, rope_base):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    heads = 4
    attn, x, pos = _attention_inputs(rng, qk_norm, rope_base)
    B, T, D = x.shape
    hd = D // heads

    def t(v):
        return torch.from_numpy(_np(v))

    qkv = F.linear(torch.from_numpy(x).double(), t(attn.qkv.kernel).T, t(attn.qkv.bias)).reshape(B, T, 3, heads, hd)
    q, k, v = qkv.unbind(2)
    if qk_norm:
        q = F.layer_norm(q, (hd,), t(attn.q_norm.scale), t(attn.q_norm.bias), eps=1e-5)
        k = F.layer_norm(k, (hd,), t(attn.k_norm.scale), t(attn.k_norm.bias), eps=1e-5)
    if rope_base is not None:
        q = torch.from_numpy(rope_reference(q.numpy(), pos, rope_base))
        k = torch.from_numpy(rope_reference(k.numpy(), pos, rope_base))
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # default scale hd^-0.5
    ref = F.linear(o.transpose(1, 2).reshape(B, T, D), t(attn.proj.kernel).T, t(attn.proj.bias)).numpy()
    out = np.asarray(_call(attn, jnp.asarray(x), jnp.asarray(pos) if rope_base else None))
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- 3. Block


@pytest.mark.parametrize(
    "layerscale, qk_norm, rope_base",
    [(None, False, None), (0.01, True, 100.0), (1.0, False, None)],
)
def test_block_matches_numpy(rng, layerscale, qk_norm, rope_base):
    D, heads = 32, 4
    blk = _random_module(lambda r: Block(D, heads, layerscale=layerscale, qk_norm=qk_norm, rope_base=rope_base, rngs=r), rng)
    assert blk.mlp.fc1.kernel[...].shape == (D, 4 * D)
    x = rng.normal(size=(2, 6, D)).astype(np.float32)
    pos = rng.integers(0, 5, size=(1, 6, 2)).astype(np.int32)
    out = np.asarray(_call(blk, jnp.asarray(x), jnp.asarray(pos) if rope_base else None))
    ref = block_reference(x, blk, heads, qk_norm=qk_norm, rope_base=rope_base, pos=pos)
    np.testing.assert_allclose(out, ref, atol=3e-5, rtol=1e-4)


def test_block_gelu_is_exact_erf(rng):
    """The tanh approximation of GELU would differ by far more than the tolerance used above."""
    z = np.linspace(-3, 3, 61)
    approx = np.asarray(jax.nn.gelu(jnp.asarray(z), approximate=True))
    assert np.abs(approx - _gelu_erf(z)).max() > 1e-4
    blk = _random_module(lambda r: Block(16, 2, rngs=r), rng)
    h = rng.normal(size=(1, 3, 16)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(_call(blk.mlp, jnp.asarray(h))), _linear(_gelu_erf(_linear(h, blk.mlp.fc1)), blk.mlp.fc2), atol=2e-5)


# ----------------------------------------------------------------------------- 4. stacked / run_stack


STACK_N, STACK_D = 3, 16


@pytest.fixture(scope="module")
def block_stack():
    """3 stacked RoPE + qk-norm blocks with random parameters (built once: stacking compiles)."""

    def factory(r):
        return stacked(STACK_N, lambda rr: Block(STACK_D, 2, layerscale=0.5, qk_norm=True, rope_base=100.0, rngs=rr), r)

    return _random_module(factory, np.random.default_rng(1))


@pytest.fixture(scope="module")
def stack_inputs(block_stack):
    """(x, pos, outputs of each layer applied one by one via layer_at)."""
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 5, STACK_D)).astype(np.float32))
    pos = jnp.asarray(token_positions(2, 2, 1)[None])

    def loop(stack, x):
        outs = []
        for i in range(STACK_N):
            x = layer_at(stack, i)(x, pos)
            outs.append(x)
        return outs

    return x, pos, _jit_fn(loop, block_stack, x)


def test_stacked_layers_are_independent_and_stacked_on_axis0(block_stack):
    k = np.asarray(block_stack.attn.qkv.kernel[...])
    assert k.shape == (STACK_N, STACK_D, 3 * STACK_D)
    assert block_stack.attn.qkv.kernel.out_sharding[0] == "layers"
    np.testing.assert_array_equal(np.asarray(layer_at(block_stack, 2).attn.qkv.kernel[...]), k[2])
    # Each copy gets its own initialisation (on a fresh, unperturbed stack).
    fresh = np.asarray(_build(lambda r: stacked(3, lambda rr: dense(4, 4, ("embed", "mlp"), rngs=rr), r)).kernel[...])
    assert fresh.shape == (3, 4, 4)
    assert min(np.abs(fresh[i] - fresh[j]).max() for i, j in [(0, 1), (0, 2), (1, 2)]) > 1e-3


@pytest.mark.parametrize("keep_last", [0, 1, STACK_N])
def test_run_stack_equals_python_loop(block_stack, stack_inputs, keep_last):
    x, pos, ref = stack_inputs
    carry, outs = _jit_fn(lambda st, x: run_stack(st, x, lambda blk, t: blk(t, pos), keep_last=keep_last), block_stack, x)
    np.testing.assert_allclose(np.asarray(carry), np.asarray(ref[-1]), atol=1e-5, rtol=1e-5)
    assert len(outs) == keep_last
    for got, want in zip(outs, ref[STACK_N - keep_last :], strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)
    # The loop itself is not trivial: each layer changes the activations.
    assert np.abs(np.asarray(ref[-1] - ref[-2])).max() > 1e-2


def test_run_stack_apply_last_outputs(block_stack, stack_inputs):
    x, pos, ref = stack_inputs

    def apply_last(layer, c):
        y = layer(c, pos)
        return y, (c, y)

    carry, outs = _jit_fn(lambda st, x: run_stack(st, x, lambda blk, t: blk(t, pos), keep_last=2, apply_last=apply_last), block_stack, x)
    np.testing.assert_allclose(np.asarray(carry), np.asarray(ref[2]), atol=1e-5, rtol=1e-5)
    (i1, o1), (i2, o2) = outs
    for got, want in [(i1, ref[0]), (o1, ref[1]), (i2, ref[1]), (o2, ref[2])]:
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)


def _checkpoint_policies(jaxpr):
    """The `policy` of every checkpoint (remat) equation in a jaxpr, sub-jaxprs included."""
    found = []
    for eqn in jaxpr.eqns:
        if "policy" in eqn.params:
            found.append(eqn.params["policy"])
        for v in eqn.params.values():
            for sub in v if isinstance(v, (list, tuple)) else [v]:
                if hasattr(sub, "eqns"):
                    found += _checkpoint_policies(sub)
    return found


def test_run_stack_remat_policies_same_values_and_gradients(rng):
    stack = _random_module(lambda r: stacked(2, lambda rr: Block(8, 2, layerscale=0.5, rope_base=100.0, rngs=rr), r), rng)
    graphdef, state = nnx.split(stack)
    x = jnp.asarray(rng.normal(size=(1, 5, 8)).astype(np.float32))
    pos = jnp.asarray(token_positions(2, 2, 1)[None])
    w = jnp.asarray(rng.normal(size=(1, 5, 8)).astype(np.float32))
    names = ("none", "full", "dots")

    def f(st, x, remat):  # one layer inside the scan, one unrolled (both paths are checkpointed)
        carry, outs = run_stack(nnx.merge(graphdef, st), x, lambda blk, t: blk(t, pos), remat=remat, keep_last=1)
        return jnp.sum(w * carry) + jnp.sum(outs[0] ** 2)

    # The policy really is applied: checkpoint equations carry it, in the scan body and the unrolled layer.
    cp = jax.checkpoint_policies
    expected = {"none": [], "full": [cp.nothing_saveable] * 2, "dots": [cp.dots_with_no_batch_dims_saveable] * 2}
    for name in names:
        assert _checkpoint_policies(jax.make_jaxpr(lambda st, x: f(st, x, name))(state, x).jaxpr) == expected[name], name

    # One compile for the three variants (cheaper than three on a shared 2-core machine).
    results = jax.jit(lambda st, x: {n: jax.value_and_grad(f, argnums=(0, 1))(st, x, n) for n in names})(state, x)
    v0, g0 = results["none"]
    g0 = jax.tree.leaves(g0)
    assert len(g0) == len(jax.tree.leaves(state)) + 1
    assert min(float(jnp.abs(g).max()) for g in g0) > 1e-4  # every parameter receives a gradient
    for name in ("full", "dots"):
        v, g = results[name]
        np.testing.assert_allclose(float(v), float(v0), rtol=1e-6, err_msg=name)
        for a, b in zip(jax.tree.leaves(g), g0, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=1e-6, err_msg=name)


# ----------------------------------------------------------------------------- 5. pixel shuffle


def _pixel_shuffle_loop(x, p, C):
    B, h, w, _ = x.shape
    out = np.full((B, h * p, w * p, C), np.nan)
    for b in range(B):
        for row in range(h):
            for col in range(w):
                for k in range(C * p * p):
                    dy, dx = (k % (p * p)) // p, k % p
                    out[b, p * row + dy, p * col + dx, k // (p * p)] = x[b, row, col, k]
    return out


@pytest.mark.parametrize("p, C, h, w", [(3, 2, 2, 3), (14, 1, 1, 2), (14, 3, 2, 1)])
def test_pixel_shuffle_matches_index_formula(rng, p, C, h, w):
    x = rng.normal(size=(2, h, w, C * p * p)).astype(np.float32)
    ref = _pixel_shuffle_loop(x, p, C)
    assert not np.isnan(ref).any()
    np.testing.assert_array_equal(np.asarray(pixel_shuffle(jnp.asarray(x), p, C)), ref.astype(np.float32))


@pytest.mark.torch
@pytest.mark.parametrize("p, C", [(3, 2), (14, 3)])
def test_pixel_shuffle_matches_torch(rng, p, C):
    torch = pytest.importorskip("torch")
    x = rng.normal(size=(2, 2, 3, C * p * p)).astype(np.float32)
    ref = torch.nn.functional.pixel_shuffle(torch.from_numpy(x).permute(0, 3, 1, 2), p).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(np.asarray(pixel_shuffle(jnp.asarray(x), p, C)), ref)


# ----------------------------------------------------------------------------- 6. patchify


def _patch_conv_loop(images, weight, bias, p):
    """Stride-p p x p convolution (weight (D, 3, p, p), torch layout) as a loop over patches."""
    B, H, W, _ = images.shape
    out = np.zeros((B, H // p, W // p, weight.shape[0]))
    for r in range(H // p):
        for c in range(W // p):
            block = images[:, r * p : (r + 1) * p, c * p : (c + 1) * p, :].astype(np.float64)
            out[:, r, c] = np.einsum("oiyx,byxi->bo", weight, block) + bias
    return out


def _patch_case(rng, D=8, p=14):
    images = rng.uniform(size=(2, 2 * p, 3 * p, 3)).astype(np.float32)
    weight = (rng.normal(size=(D, 3, p, p)) / p).astype(np.float32)
    bias = rng.normal(size=(D,)).astype(np.float32)
    kernel = weight.transpose(2, 3, 1, 0).reshape(p * p * 3, D)
    return images, weight, bias, kernel


def test_patchify_dense_equals_patch_convolution(rng):
    p = 14
    images, weight, bias, kernel = _patch_case(rng)
    tokens = np.asarray(patchify(jnp.asarray(images), p))
    assert tokens.shape == (2, 2, 3, p * p * 3)
    out = tokens.astype(np.float64) @ kernel + bias
    np.testing.assert_allclose(out, _patch_conv_loop(images, weight, bias, p), atol=1e-5)
    conv = jax.lax.conv_general_dilated(
        jnp.asarray(images), jnp.asarray(weight), (p, p), "VALID", dimension_numbers=("NHWC", "OIHW", "NHWC")
    ) + bias
    np.testing.assert_allclose(out, np.asarray(conv), atol=1e-5)


def test_encoder_patch_embedding_equals_patch_convolution(rng):
    """The Encoder's patch_embed Linear, loaded with the reshaped conv weight, is the conv."""
    cfg = get_model_config("tiny", enc_depth=1)
    p, D = cfg.patch_size, cfg.enc_dim
    images, weight, bias, kernel = _patch_case(rng, D=D)
    enc = _random_module(lambda r: Encoder(cfg, rngs=r), rng)
    enc.patch_embed.kernel[...] = jnp.asarray(kernel)
    enc.patch_embed.bias[...] = jnp.asarray(bias)
    out = np.asarray(_jit_fn(lambda e, im: e.embed_patches(im), enc, jnp.asarray(images))).reshape(2, 2, 3, D)
    np.testing.assert_allclose(out, _patch_conv_loop(images, weight, bias, p), atol=1e-4)


@pytest.mark.torch
def test_patchify_dense_equals_torch_conv2d(rng):
    torch = pytest.importorskip("torch")
    p = 14
    images, weight, bias, kernel = _patch_case(rng)
    ref = torch.nn.functional.conv2d(torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(weight), torch.from_numpy(bias), stride=p)
    out = np.asarray(patchify(jnp.asarray(images), p) @ jnp.asarray(kernel) + bias)
    np.testing.assert_allclose(out, ref.permute(0, 2, 3, 1).numpy(), atol=1e-5)


# ----------------------------------------------------------------------------- 7. DPT pieces

RESIZE_CASES = [((4, 5), (7, 9)), ((6, 7), (3, 4)), ((1, 3), (2, 5)), ((3, 4), (12, 16)), ((5, 2), (5, 7))]


@pytest.mark.parametrize("src, dst", RESIZE_CASES)
def test_bilinear_align_corners_matches_loop(rng, src, dst):
    x = rng.normal(size=(2, *src, 3)).astype(np.float32)
    out = np.asarray(bilinear_resize_align_corners(jnp.asarray(x), dst))
    assert out.shape == (2, *dst, 3)
    np.testing.assert_allclose(out, bilinear_align_corners_reference(x, dst), atol=1e-5)


def test_bilinear_align_corners_keeps_corners_and_identity(rng):
    x = rng.normal(size=(1, 4, 6, 2)).astype(np.float32)
    out = np.asarray(bilinear_resize_align_corners(jnp.asarray(x), (9, 11)))
    for (i, j), (io, jo) in [((0, 0), (0, 0)), ((0, 5), (0, 10)), ((3, 0), (8, 0)), ((3, 5), (8, 10))]:
        np.testing.assert_allclose(out[0, io, jo], x[0, i, j], atol=1e-6)
    np.testing.assert_array_equal(np.asarray(bilinear_resize_align_corners(jnp.asarray(x), (4, 6))), x)


@pytest.mark.torch
@pytest.mark.parametrize("src, dst", RESIZE_CASES + [((37, 27), (74, 54)), ((10, 13), (140, 182))])
def test_bilinear_align_corners_matches_torch(rng, src, dst):
    torch = pytest.importorskip("torch")
    x = rng.normal(size=(2, *src, 3)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=dst, mode="bilinear", align_corners=True)
    out = np.asarray(bilinear_resize_align_corners(jnp.asarray(x), dst))
    np.testing.assert_allclose(out, ref.permute(0, 2, 3, 1).numpy(), atol=1e-6)


def _conv_transpose_loop(x, kernel, bias, k):
    B, h, w, _ = x.shape
    out = np.zeros((B, h * k, w * k, kernel.shape[1]))
    for i in range(h):
        for j in range(w):
            for dy in range(k):
                for dx in range(k):
                    out[:, k * i + dy, k * j + dx] = x[:, i, j].astype(np.float64) @ kernel[:, :, dy, dx]
    return out + bias


def _conv_transpose_case(rng, k, cin=3, cout=5):
    m = _random_module(lambda r: ConvTransposeStride(cin, cout, k, rngs=r), rng)
    x = rng.normal(size=(2, 3, 4, cin)).astype(np.float32)
    return m, x


@pytest.mark.parametrize("k", [2, 4])
def test_conv_transpose_stride_matches_loop(rng, k):
    m, x = _conv_transpose_case(rng, k)
    out = np.asarray(_call(m, jnp.asarray(x)))
    np.testing.assert_allclose(out, _conv_transpose_loop(x, _np(m.kernel), _np(m.bias), k), atol=1e-5)


@pytest.mark.torch
@pytest.mark.parametrize("k", [2, 4])
def test_conv_transpose_stride_matches_torch(rng, k):
    torch = pytest.importorskip("torch")
    m, x = _conv_transpose_case(rng, k)
    ref = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(np.array(m.kernel[...])), torch.from_numpy(np.array(m.bias[...])), stride=k
    )
    np.testing.assert_allclose(np.asarray(_call(m, jnp.asarray(x))), ref.permute(0, 2, 3, 1).numpy(), atol=1e-5)


CONV_CASES = [  # (k, stride, padding, use_bias, H, W)
    (3, 1, 1, True, 5, 6),
    (3, 1, 1, False, 4, 4),
    (3, 2, 1, True, 6, 7),
    (3, 2, 1, True, 5, 8),
    (1, 1, 0, True, 4, 5),
]


def _conv_case(rng, k, stride, padding, use_bias, H, W, cin=3, cout=4):
    m = _random_module(lambda r: Conv(cin, cout, k, stride=stride, padding=padding, use_bias=use_bias, rngs=r), rng)
    x = rng.normal(size=(2, H, W, cin)).astype(np.float32)
    return m, x


@pytest.mark.parametrize("k, stride, padding, use_bias, H, W", CONV_CASES)
def test_conv_matches_loop(rng, k, stride, padding, use_bias, H, W):
    m, x = _conv_case(rng, k, stride, padding, use_bias, H, W)
    ref = conv_reference(x, _np(m.kernel), _np(m.bias) if use_bias else None, stride, padding)
    np.testing.assert_allclose(np.asarray(_call(m, jnp.asarray(x))), ref, atol=1e-5)


@pytest.mark.torch
@pytest.mark.parametrize("k, stride, padding, use_bias, H, W", CONV_CASES)
def test_conv_matches_torch_with_transposed_weight(rng, k, stride, padding, use_bias, H, W):
    torch = pytest.importorskip("torch")
    m, x = _conv_case(rng, k, stride, padding, use_bias, H, W)
    w_oihw = rng.normal(size=(4, 3, k, k)).astype(np.float32)
    m.kernel[...] = jnp.asarray(w_oihw.transpose(2, 3, 1, 0))
    b = torch.from_numpy(np.array(m.bias[...])) if use_bias else None
    ref = torch.nn.functional.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(w_oihw), b, stride=stride, padding=padding)
    np.testing.assert_allclose(np.asarray(_call(m, jnp.asarray(x))), ref.permute(0, 2, 3, 1).numpy(), atol=1e-5)


@pytest.mark.parametrize("h, w, C, aspect", [(4, 6, 16, 1.5), (27, 37, 32, 518 / 378), (5, 5, 8, 1.0), (3, 1, 4, 0.25)])
def test_uv_embedding_matches_spec_formula(h, w, C, aspect):
    emb = uv_embedding(h, w, C, aspect)
    assert emb.shape == (h, w, C) and emb.dtype == np.float32
    s_x, s_y = aspect / math.sqrt(aspect**2 + 1), 1 / math.sqrt(aspect**2 + 1)
    q = C // 4
    ref = np.zeros((h, w, C))
    for j in range(h):
        for i in range(w):
            u = s_x * (2 * (i + 0.5) / w - 1)
            v = s_y * (2 * (j + 0.5) / h - 1)
            for k in range(q):
                wk = 100.0 ** (-k / q)
                ref[j, i, k] = math.sin(u * wk)
                ref[j, i, q + k] = math.cos(u * wk)
                ref[j, i, 2 * q + k] = math.sin(v * wk)
                ref[j, i, 3 * q + k] = math.cos(v * wk)
    np.testing.assert_allclose(emb, ref, atol=1e-6)


def test_residual_unit_uses_relu_skip(rng):
    unit = _random_module(lambda r: ResidualUnit(4, rngs=r), rng)
    x = rng.normal(size=(2, 5, 6, 4)).astype(np.float32)
    out = np.asarray(_call(unit, jnp.asarray(x)))
    np.testing.assert_allclose(out, _residual_unit_reference(x, unit), atol=1e-5)
    # Composing the module's own Conv calls gives the same, and the plain-x skip would not.

    def compose(u, x):
        xr = jax.nn.relu(x)
        return xr + u.conv2(jax.nn.relu(u.conv1(xr))), x + u.conv2(jax.nn.relu(u.conv1(xr)))

    composed, plain_skip = (np.asarray(a) for a in _jit_fn(compose, unit, jnp.asarray(x)))
    np.testing.assert_allclose(out, composed, atol=1e-5)
    assert np.abs(out - plain_skip).max() > 1e-1


@pytest.mark.parametrize("has_residual, size", [(True, None), (True, (5, 9)), (False, None)])
def test_fusion_block_matches_numpy(rng, has_residual, size):
    """out = out_conv(resize(unit2(x + unit1(skip)))).

    Note: an align-corners bilinear resize has rows summing to 1, so it commutes exactly with a
    1x1 conv (bias included); the resize-then-conv order is therefore checked only up to rounding.
    """
    F = 4
    fb = _random_module(lambda r: FusionBlock(F, has_residual=has_residual, rngs=r), rng)
    x = rng.normal(size=(2, 3, 4, F)).astype(np.float32)
    skip = rng.normal(size=(2, 3, 4, F)).astype(np.float32) if has_residual else None
    out = np.asarray(_call(fb, jnp.asarray(x), None if skip is None else jnp.asarray(skip), size=size))
    h = x.astype(np.float64)
    if has_residual:
        h = h + _residual_unit_reference(skip, fb.resConfUnit1)
    h = _residual_unit_reference(h, fb.resConfUnit2)
    h = bilinear_align_corners_reference(h, size or (6, 8))
    ref = conv_reference(h, _np(fb.out_conv.kernel), _np(fb.out_conv.bias))
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=2e-5)


# ----------------------------------------------------------------------------- 8. token positions


@pytest.mark.parametrize("h, w, R", [(2, 3, 5), (1, 1, 0), (4, 2, 1)])
def test_token_positions(h, w, R):
    pos = token_positions(h, w, R)
    assert pos.shape == (R + h * w, 2) and pos.dtype == np.int32
    expected = [(0, 0)] * R
    for r in range(h):
        for c in range(w):
            expected.append((r + 1, c + 1))
    np.testing.assert_array_equal(pos, np.array(expected, np.int32).reshape(-1, 2))


# ----------------------------------------------------------------------------- 9. camera head


def test_camera_head_pose_matches_numpy(rng):
    D = 16
    head = _random_module(lambda r: CameraHead(D, rngs=r), rng, scale=1.0)
    tokens = rng.normal(size=(3, 6, D)).astype(np.float32)
    pose = np.asarray(_call(head, jnp.asarray(tokens)), np.float64)
    assert pose.shape == (3, 4, 4)

    # Rigid: orthonormal rotation with det +1 and the homogeneous last row.
    R = pose[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (3, 3, 3)), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-5)
    np.testing.assert_array_equal(pose[:, 3], np.broadcast_to([0.0, 0.0, 0.0, 1.0], (3, 4)))

    # Explicit forward: two residual units, mean over tokens, Linear-ReLU x2, fc_t / fc_rot.
    x = tokens.astype(np.float64)
    for unit in head.res_conv:
        y = _relu(_linear(_relu(_linear(_relu(_linear(x, unit.res_conv1)), unit.res_conv2)), unit.res_conv3))
        x = x + y
    x = x.mean(axis=1)
    for lin in head.more_mlps:
        x = _relu(_linear(x, lin))
    assert np.abs(x).max() > 1e-2  # the pooled feature is not all clipped away by the ReLUs
    np.testing.assert_allclose(pose[:, :3, 3], _linear(x, head.fc_t), atol=1e-5, rtol=1e-5)

    # Rotation: rows of the 3x3 normalised, then R = V diag(1, 1, det(V U^T)) U^T for M^T = U S V^T.
    M = _linear(x, head.fc_rot).reshape(-1, 3, 3)
    M = M / np.maximum(np.linalg.norm(M, axis=-1, keepdims=True), 1e-12)
    for b in range(3):
        U, _, Vt = np.linalg.svd(M[b].T)
        V = Vt.T
        R_ref = V @ np.diag([1.0, 1.0, np.linalg.det(V @ U.T)]) @ U.T
        np.testing.assert_allclose(R[b], R_ref, atol=1e-4)


def test_chunked_attention_equals_plain_attention_and_its_gradients():
    """Queries in chunks (with a ragged last chunk) give the plain attention's values and
    gradients for q, k and v; the reference is the softmax formula in NumPy."""
    from flow3r_jax.models.layers import chunked_attention

    rng = np.random.default_rng(0)
    B, T, H, d = 2, 37, 3, 8
    q, k, v = (jnp.asarray(rng.normal(size=(B, T, H, d)), jnp.float32) for _ in range(3))
    scale = d**-0.5
    logits = np.einsum("bqhd,bkhd->bhqk", np.asarray(q, np.float64), np.asarray(k, np.float64)) * scale
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ref = np.einsum("bhqk,bkhd->bqhd", p, np.asarray(v, np.float64))
    for chunk in (0, 5, 16, 37, 64):
        np.testing.assert_allclose(chunked_attention(q, k, v, scale, chunk), ref, atol=2e-6)
    w = jnp.asarray(rng.normal(size=(B, T, H, d)), jnp.float32)
    loss = lambda chunk: lambda q, k, v: jnp.sum(w * chunked_attention(q, k, v, scale, chunk))  # noqa: E731
    plain = jax.grad(loss(0), argnums=(0, 1, 2))(q, k, v)
    chunked = jax.jit(jax.grad(loss(8), argnums=(0, 1, 2)))(q, k, v)
    for a, b in zip(plain, chunked):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_a_model_with_chunked_attention_gives_the_same_outputs():
    from flow3r_jax.models.flow3r import Flow3r

    images = jnp.asarray(np.random.default_rng(1).uniform(size=(1, 3, 28, 42, 3)), jnp.float32)
    pairs = jnp.asarray([[[0, 1], [2, 0]]], jnp.int32)
    plain = Flow3r(get_model_config("tiny"), rngs=nnx.Rngs(0))
    chunked = Flow3r(get_model_config("tiny", attention_chunk=4), rngs=nnx.Rngs(0))
    a, b = plain(images, pairs), chunked(images, pairs)
    for key in ("local_points", "camera_poses", "flow"):
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), atol=1e-4, rtol=1e-4)
