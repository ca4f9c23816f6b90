"""Procedural solid textures: hashed multi-octave value noise, checkers, stripes, colour palettes.

Textures are *solid*: a function of the hit point in the primitive's local frame, so they stick
to surfaces (and move with moving objects) and need no UV maps. Boxes pick one of six palettes
by face, so neighbouring faces differ in colour. Each octave is faded out once its lattice cell
shrinks below about one pixel at the hit point (the pixel's footprint on the surface), a cheap
analytic anti-aliasing that keeps far or grazing surfaces from aliasing into noise.

Host side: `sample_materials` / `sample_sky` draw parameters with a NumPy Generator.
Device side: `surface_colour` / `sky_colour` evaluate them in JAX (jit-friendly, branch-free).
"""

from __future__ import annotations

import colorsys

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["MATERIAL_FIELDS", "sample_materials", "sample_sky", "value_noise", "fbm", "surface_colour", "sky_colour"]

OCTAVES = 5
GAIN = 0.6  # amplitude ratio between consecutive octaves
LACUNARITY = 2.0
# Each octave's lattice is rotated by this fixed matrix (about (1, 2, 3), ~0.6 rad) and offset,
# so octaves do not share axis-aligned lattice planes.
_AXIS = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
_ANGLE = 0.6
_SKEW = np.array([[0, -_AXIS[2], _AXIS[1]], [_AXIS[2], 0, -_AXIS[0]], [-_AXIS[1], _AXIS[0], 0]])
_OCTAVE_ROT = (np.eye(3) + np.sin(_ANGLE) * _SKEW + (1 - np.cos(_ANGLE)) * _SKEW @ _SKEW).astype(np.float32)

MATERIAL_FIELDS = ("palette", "params", "stripe_dir", "tex_rot", "tex_seed")
"""Per-primitive material arrays, N primitives:
palette (N, 6, 3, 3): per box face (axis * 2 + [coordinate > 0]; spheres use face 0) three RGB
  colours: A and B are blended by noise, C is the accent of checkers and stripes;
params (N, 6): noise frequency (lattice cells per metre), checker weight, checker frequency
  (cells per metre), stripe weight, stripe frequency (cycles per metre), flat flag;
stripe_dir (N, 3) unit vectors; tex_rot (N, 3, 3) rotations of the noise lattice;
tex_seed (N,) uint32 hash seeds."""


# ------------------------------------------------------------------------------------------------
# Host: parameter sampling
# ------------------------------------------------------------------------------------------------


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def _colour(rng: np.random.Generator, hue: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(0.15, 0.85), np.clip(value, 0.05, 1.0)))


def _palette(rng: np.random.Generator, hue: float) -> np.ndarray:
    """Three colours around `hue` with a strong brightness contrast between A and B."""
    v = rng.uniform(0.25, 0.5)
    a = _colour(rng, hue + rng.normal(0, 0.05), v)
    b = _colour(rng, hue + rng.normal(0, 0.12), v + rng.uniform(0.35, 0.6))
    c = _colour(rng, hue + rng.uniform(0.2, 0.8), rng.uniform(0.2, 1.0))
    return np.stack([a, b, c])


def sample_materials(
    rng: np.random.Generator, n: int, freq_range=(1.5, 4.0), texture_scale: float = 1.0, flat_prob: float = 0.0
) -> dict[str, np.ndarray]:
    """Random materials for `n` primitives (see `MATERIAL_FIELDS` for the layout)."""
    palette = np.zeros((n, 6, 3, 3), np.float32)
    params = np.zeros((n, 6), np.float32)
    stripe_dir = np.zeros((n, 3), np.float32)
    tex_rot = np.zeros((n, 3, 3), np.float32)
    for k in range(n):
        hue = rng.random()
        for f in range(6):
            palette[k, f] = _palette(rng, hue + rng.normal(0, 0.08))
        params[k, 0] = rng.uniform(*freq_range) * texture_scale
        if rng.random() < 0.35:
            params[k, 1] = rng.uniform(0.3, 0.7)
            params[k, 2] = rng.uniform(1.5, 5.0) * texture_scale
        if rng.random() < 0.3:
            params[k, 3] = rng.uniform(0.3, 0.7)
            params[k, 4] = rng.uniform(2.0, 8.0) * texture_scale
        params[k, 5] = float(rng.random() < flat_prob)
        d = rng.normal(size=3)
        stripe_dir[k] = d / np.linalg.norm(d)
        tex_rot[k] = _random_rotation(rng)
    tex_seed = rng.integers(0, 2**32, size=n, dtype=np.uint32)
    return {"palette": palette, "params": params, "stripe_dir": stripe_dir, "tex_rot": tex_rot, "tex_seed": tex_seed}


def sample_sky(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Sky: zenith and horizon colours, cloud colour, cloud frequency and a hash seed."""
    zenith = np.array(colorsys.hsv_to_rgb(rng.uniform(0.55, 0.65), rng.uniform(0.4, 0.8), rng.uniform(0.6, 0.9)))
    horizon = np.array(colorsys.hsv_to_rgb(rng.uniform(0.5, 0.65), rng.uniform(0.05, 0.3), rng.uniform(0.85, 1.0)))
    cloud = np.full(3, rng.uniform(0.85, 1.0))
    colours = np.stack([zenith, horizon, cloud]).astype(np.float32)
    return {"colours": colours, "freq": np.float32(rng.uniform(2.0, 5.0)), "seed": np.uint32(rng.integers(0, 2**32))}


# ------------------------------------------------------------------------------------------------
# Device: evaluation
#
# Everything below works on *lists of component arrays* ([x, y, z] or [r, g, b], each (...)),
# not on (..., 3) arrays: XLA:CPU vectorises along the minor axis, so a trailing axis of 3 wastes
# most of each SIMD register (this layout made shading ~3x faster).
# ------------------------------------------------------------------------------------------------


def _hash(ix, iy, iz, seed):
    """uint32 lattice hash (multiplicative mixing + an avalanche finaliser)."""
    u = jnp.uint32
    h = ix * u(0x8DA6B343) ^ iy * u(0xD8163841) ^ iz * u(0xCB1AB31F) ^ seed
    h = h ^ (h >> u(16))
    h = h * u(0x7FEB352D)
    h = h ^ (h >> u(15))
    h = h * u(0x846CA68B)
    return h ^ (h >> u(16))


def value_noise(q, seed):
    """Three independent channels of value noise in [0, 1] at points q = [x, y, z] (lattice
    units, arrays (...)). Quintic interpolation of hashed lattice values; seed uint32, scalar or
    (...). Returns a list of three arrays (...)."""
    u = jnp.uint32
    corners, weights = [], []
    for c in q:
        cf = jnp.floor(c)
        f = c - cf
        corners.append(cf.astype(jnp.int32).view(jnp.uint32))
        weights.append(f * f * f * (f * (f * 6.0 - 15.0) + 10.0))
    out = [0.0, 0.0, 0.0]
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                h = _hash(corners[0] + u(dx), corners[1] + u(dy), corners[2] + u(dz), seed)
                w = (weights[0] if dx else 1.0 - weights[0]) * (weights[1] if dy else 1.0 - weights[1])
                w = w * (weights[2] if dz else 1.0 - weights[2])
                for ch, shift in enumerate((0, 11, 22)):
                    out[ch] = out[ch] + w * ((h >> u(shift)) & u(0x3FF)).astype(jnp.float32)
    return [o * (1.0 / 1023.0) for o in out]


def _fade(cells_per_pixel):
    """1 while a lattice cell spans >= 2 pixels, 0 once it spans <= 1 pixel."""
    return jnp.clip(2.0 - 2.0 * cells_per_pixel, 0.0, 1.0)


def fbm(q, seed, cells_per_pixel):
    """Fractal sum of `OCTAVES` value-noise octaves at q = [x, y, z]: three channels (a list),
    zero mean, roughly in [-0.5, 0.5]. `cells_per_pixel` (...) is the size of one pixel in lattice
    units of the first octave; octaves finer than the pixel grid fade out (to their mean, 0).
    A loop, not unrolled, to keep compile times short."""
    rot = jnp.asarray(_OCTAVE_ROT)

    def body(o, carry):
        q, cpp, amp, out = carry
        n = value_noise(q, seed + o.astype(jnp.uint32) * jnp.uint32(0x9E37))
        w = amp * _fade(cpp)
        out = [acc + w * (v - 0.5) for acc, v in zip(out, n)]
        q = [(rot[k, 0] * q[0] + rot[k, 1] * q[1] + rot[k, 2] * q[2]) * LACUNARITY + 17.31 for k in range(3)]
        return q, cpp * LACUNARITY, amp * GAIN, out

    zero = jnp.zeros_like(q[0])
    init = (list(q), cells_per_pixel + zero, jnp.float32(1.0), [zero] * 3)
    out = jax.lax.fori_loop(0, OCTAVES, body, init)[3]
    total = sum(GAIN**o for o in range(OCTAVES))
    return [acc / total for acc in out]


def _lerp(a, b, w):
    return [x + w * (y - x) for x, y in zip(a, b)]


def surface_colour(p, face, mat, prim, footprint):
    """Albedo in [0, 1] of hit points, as a list [r, g, b] of arrays (...).

    p = [x, y, z] hit points in their primitive's frame; face (...) int face index; mat the
    material arrays (`MATERIAL_FIELDS`); prim (...) int primitive index (>= 0); footprint (...)
    the size of one pixel on the surface, metres.
    """
    params = mat["params"]
    freq, cw, cf, sw, sf, flat = (params[:, k][prim] for k in range(6))
    pal = mat["palette"].reshape(-1, 9)  # (N * 6, colour * 3 + channel)
    slot = prim * 6 + face
    a, b, c = ([pal[:, 3 * k + ch][slot] for ch in range(3)] for k in range(3))
    rot = mat["tex_rot"].reshape(-1, 9)
    q = [sum(rot[:, 3 * k + m][prim] * p[m] for m in range(3)) * freq for k in range(3)]
    n = fbm(q, mat["tex_seed"][prim], footprint * freq)
    m = [jnp.clip(0.5 + 2.5 * v, 0.0, 1.0) for v in n]  # contrast-stretched channels in [0, 1]
    col = _lerp(a, b, m[0])
    col = [x * (0.7 + 0.6 * m[1]) for x in col]  # brightness detail
    col = _lerp(col, c, 0.15 * (m[2] - 0.5))  # hue variation toward the accent
    # 3D checker of cell size 1 / cf (parity of the cell index), faded to grey when too fine.
    parity = jnp.mod(sum(jnp.floor(x * cf) for x in p), 2.0)
    chk = _fade(footprint * cf * 2.0)
    wc = cw * (chk * parity + (1.0 - chk) * 0.5)
    col = _lerp(col, [x * (0.8 + 0.4 * m[1]) for x in c], wc)
    # Stripes perpendicular to stripe_dir, wobbled by the noise.
    sd = mat["stripe_dir"]
    phase = 2.0 * jnp.pi * sf * sum(sd[:, k][prim] * p[k] for k in range(3)) + 3.0 * n[2]
    stp = _fade(footprint * sf * 2.0)
    col = _lerp(col, c, sw * (stp * (0.5 + 0.5 * jnp.sin(phase)) + (1.0 - stp) * 0.5))
    return [jnp.clip(jnp.where(flat > 0.5, x, y), 0.0, 1.0) for x, y in zip(a, col)]


def sky_colour(d, sky, pixel_angle):
    """Sky colour [r, g, b] for world directions d = [x, y, z] (any length; world up is -y): a
    zenith-to-horizon gradient with fbm clouds. `pixel_angle`: angle of one pixel, radians."""
    inv = 1.0 / jnp.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
    d = [x * inv for x in d]
    up = jnp.sqrt(jnp.clip(-d[1], 0.0, 1.0))
    zenith, horizon, cloud = sky["colours"][0], sky["colours"][1], sky["colours"][2]
    col = [horizon[k] + (zenith[k] - horizon[k]) * up for k in range(3)]
    n = fbm([x * sky["freq"] for x in d], sky["seed"], jnp.broadcast_to(pixel_angle * sky["freq"], d[0].shape))
    cover = 0.8 * jnp.clip(0.5 + 3.0 * n[0], 0.0, 1.0) ** 2
    return [jnp.clip(col[k] + (cloud[k] - col[k]) * cover, 0.0, 1.0) for k in range(3)]
