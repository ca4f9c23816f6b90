"""Camera trajectories: splines through waypoints, presets, look-at orientation, pacing.

World frame: y points down (gravity), so "up" is -y, and a camera with the identity pose is level
and looks along +z (OpenCV axes, as the rest of flow3r_jax). Poses are camera-to-world, float64.

A `CameraPath` is a smooth curve of camera centre, look-at target and roll over a raw parameter
v in [0, 1], re-parameterised by an arc-length-like motion measure (metres / `ref_depth` plus
radians of rotation) into u in [0, 1], so that equal steps of u give roughly equal image motion.
A clip traverses u in [0, s]: the fraction s (the speed) is chosen elsewhere from a flow target
(see `scene.py`), and everything placed in the scene keeps clear of the *whole* path, so any s
is safe.

Presets (`make_path`): "orbit" (circle around the scene centre, looking at it), "forward" (walk
along a wiggly line, looking ahead), "pan" (nearly fixed centre, a wide yaw sweep), "handheld"
(small drift plus jitter of position, target and roll), "random" (Catmull-Rom splines through
random position and target waypoints).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

__all__ = ["Bounds", "CameraPath", "catmull_rom", "look_at", "make_path", "PATH_PRESETS"]

PATH_PRESETS = ("orbit", "forward", "pan", "handheld", "random")
MAX_PITCH = np.deg2rad(60.0)
_DENSE = 1025  # samples of v for re-parameterisation and clearance checks


@dataclasses.dataclass(frozen=True)
class Bounds:
    """Where a camera may go. lo, hi: corners of the free box for camera centres (already kept
    away from walls); center: the scene's point of interest; look_lo, look_hi: box in which
    look-at targets are drawn; floor_y: height of the floor / ground (y, down positive);
    ref_depth: typical viewing distance, metres; outdoor: open scene."""

    lo: np.ndarray
    hi: np.ndarray
    center: np.ndarray
    look_lo: np.ndarray
    look_hi: np.ndarray
    floor_y: float
    ref_depth: float
    outdoor: bool


def catmull_rom(points: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Uniform Catmull-Rom spline through `points` (n, d), n >= 2, at v (...) in [0, 1]: passes
    through point k at v = k / (n - 1), C1, end tangents from reflected phantom points."""
    points = np.asarray(points, np.float64)
    n = len(points)
    P = np.concatenate([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])
    x = np.clip(np.asarray(v, np.float64), 0.0, 1.0) * (n - 1)
    seg = np.clip(np.floor(x).astype(int), 0, n - 2)
    s = (x - seg)[..., None]
    p0, p1, p2, p3 = P[seg], P[seg + 1], P[seg + 2], P[seg + 3]
    return 0.5 * (2 * p1 + (p2 - p0) * s + (2 * p0 - 5 * p1 + 4 * p2 - p3) * s**2 + (3 * p1 - p0 - 3 * p2 + p3) * s**3)


def look_at(position: np.ndarray, target: np.ndarray, roll: np.ndarray | float = 0.0) -> np.ndarray:
    """Camera-to-world rotations (..., 3, 3) looking from `position` at `target`, level (camera
    x axis horizontal) then rolled by `roll` radians about the optical axis. Pitch is clamped to
    +-60 degrees so the view never points straight up or down."""
    f = np.asarray(target, np.float64) - np.asarray(position, np.float64)
    horiz = f * np.array([1.0, 0.0, 1.0])
    hn = np.linalg.norm(horiz, axis=-1, keepdims=True)
    horiz = np.where(hn > 1e-9, horiz / np.maximum(hn, 1e-12), np.array([0.0, 0.0, 1.0]))
    pitch = np.clip(np.arctan2(f[..., 1], hn[..., 0]), -MAX_PITCH, MAX_PITCH)[..., None]
    fwd = np.cos(pitch) * horiz + np.sin(pitch) * np.array([0.0, 1.0, 0.0])
    right = np.cross(np.array([0.0, 1.0, 0.0]), fwd)
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd], axis=-1)  # columns: camera x, y, z in world coordinates
    c, s = np.cos(roll), np.sin(roll)
    c, s = np.broadcast_to(c, R.shape[:-2]), np.broadcast_to(s, R.shape[:-2])
    Rz = np.zeros(R.shape)
    Rz[..., 0, 0], Rz[..., 0, 1], Rz[..., 1, 0], Rz[..., 1, 1], Rz[..., 2, 2] = c, -s, s, c, 1.0
    return R @ Rz


@dataclasses.dataclass
class CameraPath:
    """position / target: v (...) -> (..., 3); roll: v (...) -> (...). See the module docstring."""

    preset: str
    position: Callable[[np.ndarray], np.ndarray]
    target: Callable[[np.ndarray], np.ndarray]
    roll: Callable[[np.ndarray], np.ndarray]
    ref_depth: float

    def __post_init__(self):
        v = np.linspace(0.0, 1.0, _DENSE)
        P = self.position(v)
        R = look_at(P, self.target(v), self.roll(v))
        step_t = np.linalg.norm(np.diff(P, axis=0), axis=-1) / self.ref_depth
        rel = np.einsum("nji,njk->nik", R[:-1], R[1:])
        step_r = np.arccos(np.clip((np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0))
        self._v = v
        self._measure = np.concatenate([[0.0], np.cumsum(step_t + step_r)])
        self.dense_positions = P

    def raw(self, u: np.ndarray) -> np.ndarray:
        """u (path fraction, uniform in image motion) -> raw spline parameter v."""
        u = np.clip(np.asarray(u, np.float64), 0.0, 1.0)
        total = self._measure[-1]
        if total <= 0:
            return u
        return np.interp(u * total, self._measure, self._v)

    def poses(self, u: np.ndarray) -> np.ndarray:
        """Camera-to-world poses (..., 4, 4) at path fractions u (...)."""
        v = self.raw(u)
        P = self.position(v)
        T = np.zeros(P.shape[:-1] + (4, 4))
        T[..., :3, :3] = look_at(P, self.target(v), self.roll(v))
        T[..., :3, 3] = P
        T[..., 3, 3] = 1.0
        return T


def _uniform(rng, lo, hi):
    return lo + (hi - lo) * rng.random(3)


def _orbit(rng, b: Bounds):
    c = b.center.copy()
    c[[0, 2]] += rng.uniform(-0.1, 0.1, 2) * (b.hi - b.lo)[[0, 2]]
    c = np.clip(c, b.lo, b.hi)
    room = min(c[0] - b.lo[0], b.hi[0] - c[0], c[2] - b.lo[2], b.hi[2] - c[2])
    radius = rng.uniform(3.0, 7.0) if b.outdoor else rng.uniform(0.55, 0.95) * room
    radius = max(min(radius, room), 0.3)
    a0, sgn = rng.uniform(0, 2 * np.pi), rng.choice([-1.0, 1.0])
    amp, freq, phase = rng.uniform(0.0, 0.15), rng.integers(1, 4), rng.uniform(0, 2 * np.pi)
    y0 = c[1]
    look = b.center.copy()
    look[1] = y0 + rng.uniform(0.2, 0.6) * (b.floor_y - y0)
    wob = rng.normal(0, 0.1, size=(5, 3))

    def position(v):
        a = a0 + sgn * 2 * np.pi * np.asarray(v)
        y = np.clip(y0 + amp * np.sin(2 * np.pi * freq * np.asarray(v) + phase), b.lo[1], b.hi[1])
        return np.stack([c[0] + radius * np.cos(a), y, c[2] + radius * np.sin(a)], axis=-1)

    return position, lambda v: look + catmull_rom(wob, v), lambda v: np.zeros(np.shape(v))


def _forward(rng, b: Bounds):
    n = 5
    if b.outdoor:
        heading = rng.uniform(0, 2 * np.pi)
        axis = np.array([np.sin(heading), 0.0, np.cos(heading)])
        side = np.array([axis[2], 0.0, -axis[0]])
        length = rng.uniform(10.0, 16.0)
        along = np.linspace(-length / 2, length / 2, n)[:, None] * axis
        lateral = rng.uniform(-1.0, 1.0, (n, 1)) * side
        way = b.center + along + lateral
    else:
        k = 0 if (b.hi - b.lo)[0] >= (b.hi - b.lo)[2] else 2
        j = 2 - k
        sgn = rng.choice([-1.0, 1.0])
        way = np.tile(b.center, (n, 1))
        way[:, k] = np.linspace(b.lo[k], b.hi[k], n)[:: int(sgn)]
        half_w = 0.5 * (b.hi[j] - b.lo[j])
        way[:, j] = 0.5 * (b.lo[j] + b.hi[j]) + rng.uniform(-0.5, 0.5) * half_w + rng.uniform(-0.25, 0.25, n) * half_w
    way[:, 1] = b.center[1] + rng.uniform(-0.05, 0.05, n)
    length = np.sum(np.linalg.norm(np.diff(way, axis=0), axis=-1))
    steps = max(1.0, round(length / 0.7))
    bob = rng.uniform(0.0, 0.02)
    gaze = rng.uniform(0.1, 0.35)

    def position(v):
        p = catmull_rom(way, v)
        p[..., 1] += bob * np.sin(np.pi * steps * np.asarray(v))
        return np.clip(p, b.lo, b.hi)

    def target(v):
        v = np.asarray(v)
        ahead = catmull_rom(way, np.minimum(v + 0.02, 1.0)) - catmull_rom(way, np.maximum(v - 0.02, 0.0))
        ahead[..., 1] = 0.0
        ahead /= np.maximum(np.linalg.norm(ahead, axis=-1, keepdims=True), 1e-9)
        return position(v) + 2.5 * (ahead + np.array([0.0, gaze, 0.0]))

    return position, target, lambda v: np.zeros(np.shape(v))


def _pan(rng, b: Bounds):
    p0 = b.center + rng.uniform(-0.3, 0.3, 3) * (b.hi - b.lo) / 2
    p0 = np.clip(p0, b.lo, b.hi)
    drift = p0 + rng.normal(0, 0.03, size=(4, 3))
    yaw0, sgn, sweep = rng.uniform(0, 2 * np.pi), rng.choice([-1.0, 1.0]), rng.uniform(2.0, 3.0)
    pitch0, pamp, pfreq, phase = rng.uniform(0.05, 0.3), rng.uniform(0.0, 0.1), rng.uniform(0.5, 1.5), rng.uniform(0, 6.3)

    def position(v):
        return np.clip(catmull_rom(drift, v), b.lo, b.hi)

    def target(v):
        v = np.asarray(v)
        yaw = yaw0 + sgn * sweep * v
        pitch = pitch0 + pamp * np.sin(2 * np.pi * pfreq * v + phase)
        d = np.stack([np.cos(pitch) * np.sin(yaw), np.sin(pitch), np.cos(pitch) * np.cos(yaw)], axis=-1)
        return position(v) + 3.0 * d

    return position, target, lambda v: np.zeros(np.shape(v))


def _handheld(rng, b: Bounds):
    n = 12
    p0 = np.clip(b.center + rng.uniform(-0.4, 0.4, 3) * (b.hi - b.lo) / 2, b.lo, b.hi)
    heading = rng.uniform(0, 2 * np.pi)
    drift = rng.uniform(0.2, 0.6) * np.array([np.sin(heading), 0.0, np.cos(heading)])
    jitter = rng.normal(0, 0.04, size=(n, 3))
    t0 = _uniform(rng, b.look_lo, b.look_hi)
    for _ in range(50):
        if np.linalg.norm(t0 - p0) > 2.0:
            break
        t0 = _uniform(rng, b.look_lo, b.look_hi)
    t_jit = rng.normal(0, 0.08, size=(n, 3))
    r_jit = rng.normal(0, 0.03, size=(n, 1))

    def position(v):
        return np.clip(p0 + drift * (np.asarray(v)[..., None] - 0.5) + catmull_rom(jitter, v), b.lo, b.hi)

    return position, lambda v: t0 + catmull_rom(t_jit, v), lambda v: catmull_rom(r_jit, v)[..., 0]


def _random(rng, b: Bounds):
    n = int(rng.integers(4, 7))
    margin = 0.15 * (b.hi - b.lo)  # Catmull-Rom overshoots a little: draw inside a margin
    way = np.stack([_uniform(rng, b.lo + margin, b.hi - margin) for _ in range(n)])
    targets = []
    for p in way:
        t = _uniform(rng, b.look_lo, b.look_hi)
        for _ in range(50):
            if np.linalg.norm(t - p) > 2.0:
                break
            t = _uniform(rng, b.look_lo, b.look_hi)
        targets.append(t)
    targets = np.stack(targets)
    rolls = rng.normal(0, 0.04, size=(n, 1))

    def position(v):
        return np.clip(catmull_rom(way, v), b.lo, b.hi)

    return position, lambda v: catmull_rom(targets, v), lambda v: catmull_rom(rolls, v)[..., 0]


_BUILDERS = {"orbit": _orbit, "forward": _forward, "pan": _pan, "handheld": _handheld, "random": _random}


def make_path(preset: str, rng: np.random.Generator, bounds: Bounds) -> CameraPath:
    """A random camera path of the given preset inside `bounds`."""
    if preset not in _BUILDERS:
        raise ValueError(f"make_path: unknown preset {preset!r}, expected one of {PATH_PRESETS}")
    position, target, roll = _BUILDERS[preset](rng, bounds)
    return CameraPath(preset, position, target, roll, bounds.ref_depth)
