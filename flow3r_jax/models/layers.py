"""Transformer building blocks shared by the encoder, decoder and head decoders.

Parameters are created in fp32 with logical axis names (`embed`, `mlp`, `heads`, `layers`,
`conv_in`, `conv_out`); the mapping of logical names to mesh axes lives in the training config.
Computation runs in the module's `dtype` (bf16 for a bf16 trunk).

Layer stacks keep their blocks' parameters stacked on a leading `layers` axis and apply them with
`jax.lax.scan`, so a 36-block decoder compiles as one block, and rematerialisation is a policy on
the scan body.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec

__all__ = [
    "dense",
    "layer_norm",
    "Mlp",
    "LayerScale",
    "rope_2d",
    "Attention",
    "Block",
    "stacked",
    "run_stack",
    "layer_at",
    "remat_policy",
]

_TRUNC_NORMAL = nnx.initializers.truncated_normal(stddev=0.02)


def dense(din: int, dout: int, axes: tuple, *, rngs: nnx.Rngs, dtype=jnp.float32, use_bias: bool = True, init=_TRUNC_NORMAL) -> nnx.Linear:
    """A Linear layer with fp32 parameters annotated with logical axes (kernel `axes`, bias axes[1])."""
    return nnx.Linear(
        din,
        dout,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nnx.with_partitioning(init, axes),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (axes[1],)),
        rngs=rngs,
    )


def layer_norm(dim: int, eps: float, *, rngs: nnx.Rngs, dtype=jnp.float32, axis_name="embed") -> nnx.LayerNorm:
    return nnx.LayerNorm(
        dim,
        epsilon=eps,
        dtype=dtype,
        param_dtype=jnp.float32,
        scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), (axis_name,)),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (axis_name,)),
        rngs=rngs,
    )


class Mlp(nnx.Module):
    """fc1 -> exact (erf) GELU -> fc2."""

    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.fc1 = dense(dim, hidden, ("embed", "mlp"), rngs=rngs, dtype=dtype)
        self.fc2 = dense(hidden, dim, ("mlp", "embed"), rngs=rngs, dtype=dtype)

    def __call__(self, x):
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class LayerScale(nnx.Module):
    def __init__(self, dim: int, init: float):
        self.gamma = nnx.Param(jnp.full((dim,), init, jnp.float32), out_sharding=("embed",))

    def __call__(self, x):
        return x * self.gamma[...].astype(x.dtype)


def _rope_inv_freq(half_dim: int, base: float) -> np.ndarray:
    """1 / base^(2k / half_dim), k = 0 .. half_dim/2 - 1, in fp32 as the official code."""
    exponent = np.arange(0, half_dim, 2, dtype=np.float32) / np.float32(half_dim)
    return (np.float32(1.0) / (np.float32(base) ** exponent)).astype(np.float32)


def rope_2d(x: jax.Array, pos: jax.Array, base: float) -> jax.Array:
    """2D rotary embedding on (B, T, heads, head_dim) with integer positions (B or 1, T, 2) = (row, col).

    The first half of each head rotates by row, the second by column; inside a half of size D,
    dim d pairs with d + D/2 (rotate-half) at inverse frequency base^(-2k/D).
    """
    hd = x.shape[-1]
    half = hd // 2
    inv = jnp.asarray(_rope_inv_freq(half, base))

    def rotate(t, p):  # t (B, T, H, half), p (B, T)
        freqs = p.astype(jnp.float32)[..., None] * inv  # (B, T, half/2)
        freqs = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
        cos, sin = jnp.cos(freqs).astype(t.dtype), jnp.sin(freqs).astype(t.dtype)
        t1, t2 = t[..., : half // 2], t[..., half // 2 :]
        return t * cos + jnp.concatenate([-t2, t1], axis=-1) * sin

    return jnp.concatenate([rotate(x[..., :half], pos[..., 0]), rotate(x[..., half:], pos[..., 1])], axis=-1)


BATCH_AXES = ("data", "fsdp")  # the mesh axes a batch is split over (flow3r_jax.train.mesh)


def shard_batch(x: jax.Array, dim: int = 0) -> jax.Array:
    """Keeps dimension `dim` of an activation split over the mesh's batch axes.

    Under a mesh context (`jax.sharding.set_mesh`, as the train step is lowered) whose batch axes
    divide that dimension, a sharding constraint; otherwise (no mesh: inference, tests; or a
    dimension the axes do not divide) `x` unchanged. Without it, SPMD propagation from the
    parameters (split over "fsdp" along their width) may choose to split activations along
    their width and all-gather the batch, which multiplies activation memory by the device
    count (seen on 8 fake devices: 2.5x the temporaries of one device with the same batch)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names and mesh.shape[a] > 1)
    n = math.prod(mesh.shape[a] for a in axes)
    if not axes or x.shape[dim] % n:
        return x
    spec = [None] * x.ndim
    spec[dim] = axes
    return jax.lax.with_sharding_constraint(x, PartitionSpec(*spec))


def chunked_attention(q: jax.Array, k: jax.Array, v: jax.Array, scale: float, chunk: int) -> jax.Array:
    """`jax.nn.dot_product_attention` computed `chunk` queries at a time (q, k, v: (B, T, H, d)).

    The same numbers as the plain call (each query's softmax is over all keys either way), but the
    logits held at once are (B, H, chunk, T) instead of (B, H, T, T): for 24 frames of 518x378
    (24k tokens, 16 heads) 1.6 GB per clip in fp32 at chunk 1024 instead of 37 GB. Each chunk is
    rematerialised (`jax.checkpoint`), so the backward pass also keeps only its inputs. On GPU and
    TPU, where a fused (flash) kernel exists, it is the better choice; this is the portable one."""
    B, T, H, d = q.shape
    if chunk <= 0 or T <= chunk:
        return jax.nn.dot_product_attention(q, k, v, scale=scale)
    n = -(-T // chunk)
    qp = jnp.pad(q, ((0, 0), (0, n * chunk - T), (0, 0), (0, 0)))  # padded queries are dropped below
    qs = jnp.moveaxis(qp.reshape(B, n, chunk, H, d), 1, 0)

    k, v = shard_batch(k), shard_batch(v)

    @jax.checkpoint
    def one(qc):
        return shard_batch(jax.nn.dot_product_attention(shard_batch(qc), k, v, scale=scale))

    out = jax.lax.map(one, qs)  # (n, B, chunk, H, d)
    return jnp.moveaxis(out, 0, 1).reshape(B, n * chunk, H, d)[:, :T]


class Attention(nnx.Module):
    """Multi-head self-attention, optional per-head qk LayerNorm (eps 1e-5) and 2D RoPE.
    `chunk` > 0 computes it `chunk` queries at a time (`chunked_attention`: same result, less memory).
    `head_dim` (default dim // heads) lets the heads' total width differ from `dim` (TracksTo4D:
    width 256, 16 heads x 64); `use_bias=False` drops the qkv and output biases."""

    def __init__(self, dim: int, heads: int, *, qk_norm: bool, rope_base: float | None, rngs: nnx.Rngs, dtype=jnp.float32, chunk: int = 0, head_dim: int | None = None, use_bias: bool = True):
        self.heads = heads
        self.chunk = int(chunk)
        self.rope_base = rope_base
        head_dim = dim // heads if head_dim is None else int(head_dim)
        self.head_dim = head_dim
        inner = heads * head_dim
        self.qkv = dense(dim, 3 * inner, ("embed", "heads"), rngs=rngs, dtype=dtype, use_bias=use_bias)
        self.proj = dense(inner, dim, ("heads", "embed"), rngs=rngs, dtype=dtype, use_bias=use_bias)
        self.q_norm = layer_norm(head_dim, 1e-5, rngs=rngs, dtype=dtype, axis_name=None) if qk_norm else None
        self.k_norm = layer_norm(head_dim, 1e-5, rngs=rngs, dtype=dtype, axis_name=None) if qk_norm else None

    def __call__(self, x: jax.Array, pos: jax.Array | None = None) -> jax.Array:
        B, T, _ = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.heads, self.head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.q_norm is not None:
            q = self.q_norm(q).astype(v.dtype)
            k = self.k_norm(k).astype(v.dtype)
        if self.rope_base is not None:
            q = rope_2d(q, pos, self.rope_base)
            k = rope_2d(k, pos, self.rope_base)
        out = chunked_attention(q, k, v, self.head_dim**-0.5, self.chunk)
        return self.proj(out.reshape(B, T, self.heads * self.head_dim))


class Block(nnx.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        mlp_ratio: int = 4,
        layerscale: float | None = None,
        qk_norm: bool = False,
        rope_base: float | None = None,
        eps: float = 1e-6,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        attention_chunk: int = 0,
        head_dim: int | None = None,
        attn_bias: bool = True,
    ):
        self.norm1 = layer_norm(dim, eps, rngs=rngs, dtype=dtype)
        self.attn = Attention(dim, heads, qk_norm=qk_norm, rope_base=rope_base, rngs=rngs, dtype=dtype, chunk=attention_chunk, head_dim=head_dim, use_bias=attn_bias)
        self.ls1 = LayerScale(dim, layerscale) if layerscale is not None else None
        self.norm2 = layer_norm(dim, eps, rngs=rngs, dtype=dtype)
        self.mlp = Mlp(dim, dim * mlp_ratio, rngs=rngs, dtype=dtype)
        self.ls2 = LayerScale(dim, layerscale) if layerscale is not None else None

    def __call__(self, x: jax.Array, pos: jax.Array | None = None) -> jax.Array:
        x = shard_batch(x)
        a = shard_batch(self.attn(self.norm1(x), pos))
        x = x + (self.ls1(a) if self.ls1 is not None else a)
        m = shard_batch(self.mlp(self.norm2(x)))
        return shard_batch(x + (self.ls2(m) if self.ls2 is not None else m))


def stacked(n: int, factory: Callable[[nnx.Rngs], nnx.Module], rngs: nnx.Rngs) -> nnx.Module:
    """n independently initialised copies of factory(rngs), parameters stacked on axis 0 ('layers')."""

    @nnx.split_rngs(splits=n)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def create(r):
        return factory(r)

    return create(rngs)


def layer_at(stack: nnx.Module, index: int) -> nnx.Module:
    """Layer `index` of a stacked module, as an ordinary module (for inspection and tests)."""
    graphdef, state = nnx.split(stack)
    return nnx.merge(graphdef, jax.tree.map(lambda a: a[index], state))


def remat_policy(name: str):
    """Maps a config name to a `jax.checkpoint` policy (None = no rematerialisation)."""
    return {
        "none": None,
        "full": jax.checkpoint_policies.nothing_saveable,
        "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    }[name]


def run_stack(stack: nnx.Module, carry, apply: Callable, *, remat: str = "none", keep_last: int = 0, apply_last: Callable | None = None):
    """Applies a stacked module layer by layer: carry = apply(layer, carry).

    The first n - keep_last layers run inside one `lax.scan`; the last keep_last run unrolled and
    their outputs are returned, so intermediate features cost no stacked history. `apply_last`
    (layer, carry) -> (carry, output) replaces `apply` for those layers when a layer's output is
    not simply its carry. Returns (carry, [outputs of the last keep_last layers]).
    """
    graphdef, state = nnx.split(stack)
    n = jax.tree.leaves(state)[0].shape[0]
    policy = remat_policy(remat)

    def step(c, layer_state):
        return apply(nnx.merge(graphdef, layer_state), c)

    def last(c, layer_state):
        layer = nnx.merge(graphdef, layer_state)
        if apply_last is None:
            out = apply(layer, c)
            return out, out
        return apply_last(layer, c)

    if policy is not None:
        step = jax.checkpoint(step, policy=policy, prevent_cse=False)
        last = jax.checkpoint(last, policy=policy, prevent_cse=False)
    n_scan = n - keep_last
    if n_scan > 0:
        carry, _ = jax.lax.scan(lambda c, s: (step(c, s), None), carry, jax.tree.map(lambda a: a[:n_scan], state))
    outs = []
    for i in range(n_scan, n):
        carry, out = last(carry, jax.tree.map(lambda a: a[i], state))
        outs.append(out)
    return carry, outs
