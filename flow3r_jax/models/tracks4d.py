"""TracksTo4D (Kasten et al., arXiv 2404.07097; `NVlabs/tracks-to-4d`): 2D point tracks in, cameras
and a low-rank dynamic 3D reconstruction out. No pixels are read.

Input: `tracks` (B, T, N, 2), the N tracks' positions in T frames in *normalised* camera
coordinates ((x - cx) / fx, (y - cy) / fy; the official dataset multiplies by K^-1), and
`visible` (B, T, N). Each (x, y, visibility) triple gets a Fourier encoding
[v, sin(2^j pi v), cos(2^j pi v)] for j < `pe_freqs` (official `positionalEncoding_vec`, 12
frequencies in the released configs, applied to the visibility too) and a constant 1, then
LayerNorm -> Linear -> LayerNorm to `width` features, plus a 1D sin-cos position encoding over
time (official `posemb_sincos_1d`).

Trunk: `blocks` x [a transformer over time within each track (T tokens), then a transformer
over the tracks within each frame (N tokens, no position encoding: permuting the tracks permutes
the per-track outputs and leaves the per-frame ones unchanged)]. Each is one pre-norm block of
the project's `layers.Block` (16 heads x 64, MLP 2048, no qkv/out bias, LayerNorm eps 1e-5, exact
GELU: the official `simple_vit_1d.Transformer` with depth 1) followed by a LayerNorm.

Heads (official `TracksTo4DNet.forward`):
  per frame: features averaged over tracks -> circular 1D convolution over time (kernel 31) ->
    channels [0:3] camera centre t, [3] focal correction, [4:4+K] basis coefficients c_t (c_t0
    fixed to 1: the static part), [4+K:10+K] camera rotation in the 6D representation
    (Gram-Schmidt rows, `geometry.rotation_6d_to_matrix`, as the official `vec6d_to_R`);
  per track: features averaged over time -> Linear -> the 3 x K basis B_n and the motion level
    NR_n = elu(.) + 1 + 1e-5 (large for points that the static part does not explain).
The 3D point of track n at time t is X_tn = sum_k c_tk B_nk (`points_at`), in a world frame where
camera t has camera-to-world rotation R_t and centre t_t (OpenCV axes), and projects to
f_t (X_c / Z_c) with X_c = R_t^T (X - t_t) (`project`). The focal factor is 1 + 0.05 x (channel 3)
when `predict_focal` (the official `--predict_focal_length`, for uncalibrated input), else 1.

All outputs are in the official conventions except the axis order: time before tracks.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from flow3r_jax.geometry.rotations import rotation_6d_to_matrix
from flow3r_jax.models.layers import Block, dense, layer_norm, run_stack, stacked

__all__ = ["Tracks4DConfig", "Tracks4D", "tracks4d_config", "fourier_encode", "time_encoding", "circular_conv1d", "points_at", "project", "TRACKS4D_SIZES"]


@dataclasses.dataclass(frozen=True)
class Tracks4DConfig:
    """Defaults: the released configuration (`pretrained_checkpoints/*.json`, `MyTransformerHead`)."""

    width: int = 256
    heads: int = 16
    head_dim: int = 64
    mlp: int = 2048
    blocks: int = 3
    basis: int = 12  # K
    pe_freqs: int = 12  # official positional_dim
    conv_kernel: int = 31  # official conv2_kernel_size (the per-frame head)
    predict_focal: bool = False
    remat: str = "none"

    def __post_init__(self):
        if self.mlp % self.width:
            raise ValueError(f"Tracks4DConfig: mlp={self.mlp} must be a multiple of width={self.width}")
        if self.basis < 1 or self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
            raise ValueError(f"Tracks4DConfig: basis >= 1 and an odd conv_kernel needed, got basis={self.basis}, conv_kernel={self.conv_kernel}")
        if self.width % 2:
            raise ValueError(f"Tracks4DConfig: width must be even (sin-cos time encoding), got {self.width}")

    @property
    def frame_channels(self) -> int:
        return 10 + self.basis


TRACKS4D_SIZES = {
    "tiny": dict(width=32, heads=2, head_dim=16, mlp=64, blocks=1, basis=4, pe_freqs=4, conv_kernel=5),
    "small": dict(width=128, heads=8, head_dim=32, mlp=512, blocks=2, basis=8, pe_freqs=8, conv_kernel=15),
    "base": {},
}


def tracks4d_config(size: str = "base", **overrides) -> Tracks4DConfig:
    if size not in TRACKS4D_SIZES:
        raise ValueError(f"unknown TracksTo4D size {size!r}; choose one of {sorted(TRACKS4D_SIZES)}")
    return Tracks4DConfig(**{**TRACKS4D_SIZES[size], **overrides})


# ----------------------------------------------------------------------------- pure parts


def fourier_encode(v: Float[Array, "*batch c"], freqs: int) -> Float[Array, "*batch d"]:
    """[v, sin(2^j pi v) for all c, cos(2^j pi v) for all c, j = 0 .. freqs-1]: d = c (1 + 2 freqs)."""
    scales = (2.0 ** jnp.arange(freqs, dtype=jnp.float32)) * jnp.pi
    proj = v[..., None, :] * scales[:, None]  # (*batch, freqs, c)
    enc = jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)
    return jnp.concatenate([v, enc.reshape(*v.shape[:-1], -1)], axis=-1)


def time_encoding(length: int, dim: int, temperature: float = 10000.0) -> Float[Array, "length dim"]:
    """The 1D sin-cos encoding of `simple_vit_1d.posemb_sincos_1d`: omega_i = T^(-i / (dim/2 - 1)),
    [sin(n omega), cos(n omega)]."""
    half = dim // 2
    omega = 1.0 / temperature ** (jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1))
    n = jnp.arange(length, dtype=jnp.float32)[:, None] * omega[None, :]
    return jnp.concatenate([jnp.sin(n), jnp.cos(n)], axis=1)


def circular_conv1d(x: Float[Array, "b t cin"], kernel: Float[Array, "k cin cout"], bias: Float[Array, " cout"]) -> Float[Array, "b t cout"]:
    """out[t] = bias + sum_j x[(t + j - k//2) mod T] @ kernel[j] (PyTorch Conv1d with circular
    padding k//2; here defined for any T, also T < k//2 where the taps wrap more than once)."""
    T, k = x.shape[1], kernel.shape[0]
    idx = (jnp.arange(T)[:, None] + jnp.arange(k)[None, :] - k // 2) % T
    return jnp.einsum("btjc,jcd->btd", x[:, idx], kernel) + bias


def points_at(coeffs: Float[Array, "*b t k"], basis: Float[Array, "*b n 3 k"]) -> Float[Array, "*b t n 3"]:
    """X_tn = sum_k c_tk B_nk."""
    return jnp.einsum("...tk,...nck->...tnc", coeffs, basis)


def project(
    points: Float[Array, "*b t n 3"], rotation: Float[Array, "*b t 3 3"], centre: Float[Array, "*b t 3"], focal: Float[Array, "*b t"] | float = 1.0, min_depth: float = 0.01
) -> tuple[Float[Array, "*b t n 2"], Float[Array, "*b t n"]]:
    """(normalised image coordinates f (X_c, Y_c) / max(Z_c, min_depth), depth Z_c) of world points
    seen by cameras with camera-to-world rotation R and centre c: X_c = R^T (X - c) (official
    projection, its depth clamp 0.01)."""
    cam = jnp.einsum("...tji,...tnj->...tni", rotation, points - centre[..., None, :])
    z = cam[..., 2]
    f = jnp.asarray(focal)[..., None, None] if jnp.ndim(focal) else focal
    return f * cam[..., :2] / jnp.maximum(z, min_depth)[..., None], z


# ----------------------------------------------------------------------------- modules


class _AxisTransformer(nnx.Module):
    """One pre-norm block (official Transformer of depth 1) and its closing LayerNorm."""

    def __init__(self, cfg: Tracks4DConfig, rngs: nnx.Rngs):
        self.block = Block(cfg.width, cfg.heads, mlp_ratio=cfg.mlp // cfg.width, eps=1e-5, head_dim=cfg.head_dim, attn_bias=False, rngs=rngs)
        self.norm = layer_norm(cfg.width, 1e-5, rngs=rngs)

    def __call__(self, x):
        return self.norm(self.block(x))


class _TimeTrackBlock(nnx.Module):
    def __init__(self, cfg: Tracks4DConfig, rngs: nnx.Rngs):
        self.time = _AxisTransformer(cfg, rngs)
        self.tracks = _AxisTransformer(cfg, rngs)

    def __call__(self, x):  # (B, T, N, D)
        B, T, N, D = x.shape
        x = jnp.swapaxes(x, 1, 2).reshape(B * N, T, D)  # within a track, over time
        x = self.time(x).reshape(B, N, T, D)
        x = jnp.swapaxes(x, 1, 2).reshape(B * T, N, D)  # within a frame, over tracks
        return self.tracks(x).reshape(B, T, N, D)


_XAVIER = nnx.initializers.xavier_uniform()


class Tracks4D(nnx.Module):
    """See the module docstring. `__call__(tracks, visible)` returns a dict:
    rotation (B, T, 3, 3) camera-to-world, centre (B, T, 3), focal (B, T), coeffs (B, T, K)
    (coeffs[..., 0] = 1), basis (B, N, 3, K), motion (B, N) (NR, > 0)."""

    def __init__(self, cfg: Tracks4DConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        with nnx.use_eager_sharding(False):  # logical axes are metadata; sharding happens in train/
            d_in = 3 * (1 + 2 * cfg.pe_freqs) + 1
            self.embed_norm_in = nnx.LayerNorm(d_in, epsilon=1e-5, param_dtype=jnp.float32, rngs=rngs)
            self.embed = dense(d_in, cfg.width, (None, "embed"), rngs=rngs)
            self.embed_norm_out = layer_norm(cfg.width, 1e-5, rngs=rngs)
            self.blocks = stacked(cfg.blocks, lambda r: _TimeTrackBlock(cfg, r), rngs)
            k, c = cfg.conv_kernel, cfg.frame_channels
            # torch xavier_uniform_ on a Conv1d weight (cout, cin, k): fans cin k and cout k.
            limit = math.sqrt(6.0 / (cfg.width * k + c * k))
            self.frame_kernel = nnx.Param(jax.random.uniform(rngs.params(), (k, cfg.width, c), jnp.float32, -limit, limit), out_sharding=(None, "embed", None))
            self.frame_bias = nnx.Param(jnp.zeros((c,), jnp.float32), out_sharding=(None,))
            self.point_head = dense(cfg.width, 3 * cfg.basis + 1, ("embed", None), rngs=rngs, init=_XAVIER)

    def features(self, tracks: Float[Array, "b t n 2"], visible: Float[Array, "b t n"]) -> Float[Array, "b t n d"]:
        cfg = self.cfg
        v = jnp.concatenate([tracks.astype(jnp.float32), visible.astype(jnp.float32)[..., None]], axis=-1)
        x = jnp.concatenate([fourier_encode(v, cfg.pe_freqs), jnp.ones(v.shape[:-1] + (1,), jnp.float32)], axis=-1)
        x = self.embed_norm_out(self.embed(self.embed_norm_in(x)))
        x = x + time_encoding(x.shape[1], cfg.width)[None, :, None, :]
        x, _ = run_stack(self.blocks, x, lambda layer, h: layer(h), remat=cfg.remat)
        return x

    def __call__(self, tracks: Float[Array, "b t n 2"], visible: Float[Array, "b t n"]) -> dict[str, jax.Array]:
        cfg = self.cfg
        x = self.features(tracks, visible)
        frame = circular_conv1d(x.mean(axis=2), self.frame_kernel[...], self.frame_bias[...])  # (B, T, C)
        point = self.point_head(x.mean(axis=1))  # (B, N, 3K + 1)
        K = cfg.basis
        B, N = point.shape[:2]
        coeffs = frame[..., 4 : 4 + K].at[..., 0].set(1.0)
        focal = 1.0 + 0.05 * frame[..., 3] if cfg.predict_focal else jnp.ones(frame.shape[:2], jnp.float32)
        return {
            "rotation": rotation_6d_to_matrix(frame[..., 4 + K : 10 + K]),
            "centre": frame[..., 0:3],
            "focal": focal,
            "coeffs": coeffs,
            "basis": point[..., : 3 * K].reshape(B, N, 3, K),
            "motion": jax.nn.elu(point[..., -1]) + 1.0 + 1e-5,
        }
