"""Procedural scene layout on the host: environment, primitives, placement and rigid motion.

World frame as in `trajectory.py` (y down, up is -y, metres). An `Environment` is either a
closed box-shaped room (4 walls, floor, ceiling; the camera inside) or a wide ground slab whose
top face is the ground plane y = 0, under a sky. `Primitive`s are boxes (including thin panels)
and spheres with a rigid pose; a dynamic primitive moves smoothly with constant acceleration and
spins at a constant rate about a fixed axis:

    centre(t) = centre + velocity (t - t_mid) + acceleration (t - t_mid)^2 / 2
    rotation(t) = exp([spin_axis]_x spin_rate (t - t_mid)) @ rotation

Placement is rejection sampling: objects stay inside the room (above the ground), do not overlap
each other (bounding spheres), and keep a margin from the camera: static ones from the whole
camera path, moving ones from the camera at every (sub-frame) time of the clip (at least
`NEAR_FACTOR` radii, so they never fill the view; they move mostly across the line of sight).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipelines.synthetic.render import BOX, SPHERE
from data_pipelines.synthetic.trajectory import Bounds, CameraPath

__all__ = ["Environment", "Primitive", "sample_environment", "place_static", "place_dynamic", "rotation_exp", "CAMERA_MARGIN"]

CAMERA_MARGIN = 0.35  # metres between an object's bounding sphere and the camera centre
GAP = 0.05  # metres between the bounding spheres of two objects
NEAR_FACTOR = 3.5  # moving objects stay this many radii from the camera (so they never fill the view)
GROUND_HALF = 40.0  # outdoor ground extends to |x|, |z| <= GROUND_HALF (then sky)
OUTDOOR_SPAN = 25.0  # outdoor objects stay within |x|, |z| <= OUTDOOR_SPAN


def rotation_exp(axis_angle: np.ndarray) -> np.ndarray:
    """Rodrigues: axis-angle vectors (..., 3) -> rotation matrices (..., 3, 3)."""
    w = np.asarray(axis_angle, np.float64)
    theta = np.linalg.norm(w, axis=-1)[..., None, None]
    k = w / np.maximum(theta[..., 0], 1e-12)
    K = np.zeros(w.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 0] = -k[..., 2], k[..., 1], k[..., 2]
    K[..., 1, 2], K[..., 2, 0], K[..., 2, 1] = -k[..., 0], -k[..., 1], k[..., 0]
    return np.eye(3) + np.sin(theta) * K + (1.0 - np.cos(theta)) * (K @ K)


@dataclasses.dataclass
class Primitive:
    """A box (half extents `half`) or sphere (radius half[0]) with a rigid, possibly moving pose."""

    kind: int
    half: np.ndarray
    center: np.ndarray
    rotation: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(3))
    velocity: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(3))
    acceleration: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(3))
    spin_axis: np.ndarray = dataclasses.field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    spin_rate: float = 0.0
    t_mid: float = 0.0

    @property
    def dynamic(self) -> bool:
        return bool(np.any(self.velocity != 0) or np.any(self.acceleration != 0) or self.spin_rate != 0)

    @property
    def radius(self) -> float:
        """Bounding-sphere radius."""
        return float(self.half[0] if self.kind == SPHERE else np.linalg.norm(self.half))

    def extent(self) -> np.ndarray:
        """Half extents of the world-axis-aligned bounding box at rest."""
        return np.full(3, self.half[0]) if self.kind == SPHERE else np.abs(self.rotation) @ self.half

    def centers(self, t: np.ndarray) -> np.ndarray:
        tau = (np.asarray(t, np.float64) - self.t_mid)[..., None]
        return self.center + self.velocity * tau + 0.5 * self.acceleration * tau**2

    def poses(self, t: np.ndarray) -> np.ndarray:
        """Object-to-world transforms (..., 4, 4) at times t (...)."""
        t = np.asarray(t, np.float64)
        tau = (t - self.t_mid)[..., None]
        T = np.zeros(t.shape + (4, 4))
        T[..., :3, :3] = rotation_exp(self.spin_axis * self.spin_rate * tau) @ self.rotation
        T[..., :3, 3] = self.centers(t)
        T[..., 3, 3] = 1.0
        return T

    def describe(self) -> dict:
        d = {"kind": {BOX: "box", SPHERE: "sphere"}[self.kind], "half": self.half, "center": self.center, "rotation": self.rotation}
        if self.dynamic:
            d.update(velocity=self.velocity, acceleration=self.acceleration, spin_axis=self.spin_axis, spin_rate=self.spin_rate, t_mid=self.t_mid)
        return {k: np.round(np.asarray(v, np.float64), 6).tolist() for k, v in d.items() if k != "kind"} | {"kind": d["kind"]}


@dataclasses.dataclass
class Environment:
    kind: str
    shell: Primitive  # the room box (seen from inside) or the ground slab
    floor_y: float
    ceiling_y: float | None
    bounds: Bounds
    object_scale: float  # objects are larger outdoors

    def contains(self, center: np.ndarray, extent: np.ndarray) -> bool:
        """Does the axis-aligned box (center, extent) fit inside the room / above the ground?"""
        if self.kind == "room":
            lo = self.shell.center - self.shell.half
            hi = self.shell.center + self.shell.half
            return bool(np.all(center - extent >= lo - 1e-9) and np.all(center + extent <= hi + 1e-9))
        return bool(center[1] + extent[1] <= self.floor_y + 1e-9 and np.all(np.abs(center[[0, 2]]) + extent[[0, 2]] <= OUTDOOR_SPAN))

    def random_point(self, rng: np.random.Generator, extent: np.ndarray) -> np.ndarray:
        if self.kind == "room":
            half = np.maximum(self.shell.half - extent, 0.0)
            return self.shell.center + rng.uniform(-1, 1, 3) * half
        span = OUTDOOR_SPAN - extent
        return np.array([rng.uniform(-span[0], span[0]), rng.uniform(-4.0, 0.0), rng.uniform(-span[2], span[2])])

    def describe(self) -> dict:
        return {"kind": self.kind, "shell": self.shell.describe(), "floor_y": self.floor_y, "ceiling_y": self.ceiling_y}


def sample_environment(kind: str, rng: np.random.Generator) -> Environment:
    """A room (walls 5-10 m apart, 2.6-3.5 m high) or open ground with the camera at eye height."""
    if kind == "room":
        half = np.array([rng.uniform(2.5, 4.5), rng.uniform(1.3, 1.75), rng.uniform(2.5, 5.0)])
        floor, ceiling = half[1], -half[1]
        eye = floor - rng.uniform(1.2, 1.7)
        margin = 0.6
        lo = np.array([-half[0] + margin, max(eye - 0.2, ceiling + 0.4), -half[2] + margin])
        hi = np.array([half[0] - margin, min(eye + 0.2, floor - 0.4), half[2] - margin])
        look_lo = np.array([-half[0] + 0.3, eye - 0.5, -half[2] + 0.3])
        look_hi = np.array([half[0] - 0.3, floor - 0.2, half[2] - 0.3])
        shell = Primitive(BOX, half, np.zeros(3))
        bounds = Bounds(lo, hi, np.array([0.0, eye, 0.0]), look_lo, look_hi, float(floor), 2.5, False)
        return Environment(kind, shell, float(floor), float(ceiling), bounds, 1.0)
    if kind == "outdoor":
        eye = -rng.uniform(1.2, 2.2)
        lo = np.array([-8.0, eye - 0.3, -8.0])
        hi = np.array([8.0, min(eye + 0.3, -0.5), 8.0])
        shell = Primitive(BOX, np.array([GROUND_HALF, 0.5, GROUND_HALF]), np.array([0.0, 0.5, 0.0]))
        bounds = Bounds(lo, hi, np.array([0.0, eye, 0.0]), np.array([-12.0, -1.5, -12.0]), np.array([12.0, 0.0, 12.0]), 0.0, 5.0, True)
        return Environment(kind, shell, 0.0, None, bounds, 2.0)
    raise ValueError(f"sample_environment: unknown kind {kind!r}")


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return rotation_exp(v / np.linalg.norm(v) * rng.uniform(0, np.pi))


def _random_shape(rng: np.random.Generator, scale: float, resting: bool) -> Primitive:
    if rng.random() < 0.4:
        r = rng.uniform(0.2, 0.55) * scale
        return Primitive(SPHERE, np.full(3, r), np.zeros(3), _random_rotation(rng))
    half = rng.uniform(0.15, 0.6, 3) * scale
    if rng.random() < 0.2:  # a thin panel
        half[rng.integers(3)] = rng.uniform(0.02, 0.05)
    rot = rotation_exp(np.array([0.0, rng.uniform(0, 2 * np.pi), 0.0])) if resting else _random_rotation(rng)
    return Primitive(BOX, half, np.zeros(3), rot)


def _clear(p: Primitive, center, others: list[Primitive], cameras: np.ndarray) -> bool:
    if np.min(np.linalg.norm(cameras - center, axis=-1)) < p.radius + CAMERA_MARGIN:
        return False
    return all(np.linalg.norm(o.center - center) >= p.radius + o.radius + GAP for o in others)


def place_static(
    rng: np.random.Generator, count: int, env: Environment, path: CameraPath, s: float, K: np.ndarray, size: tuple[int, int], tries: int = 100
) -> list[Primitive]:
    """Up to `count` static objects, most of them in view of the path segment u in [0, s]."""
    H, W = size
    placed: list[Primitive] = []
    for _ in range(count):
        for _ in range(tries):
            resting = rng.random() < 0.6
            p = _random_shape(rng, env.object_scale, resting)
            ext = p.extent()
            if rng.random() < 0.75:  # in front of the camera somewhere along the used segment
                cam = path.poses(rng.uniform(0.0, s))
                xy = np.array([rng.uniform(0.1, 0.9) * W, rng.uniform(0.1, 0.9) * H])
                ray = np.array([(xy[0] - K[0, 2]) / K[0, 0], (xy[1] - K[1, 2]) / K[1, 1], 1.0])
                depth = rng.uniform(1.5, 5.0) * env.object_scale
                if depth < 3.0 * p.radius:  # would fill most of the view
                    continue
                center = cam[:3, 3] + cam[:3, :3] @ ray * depth
            else:
                center = env.random_point(rng, ext)
            if resting:
                center[1] = env.floor_y - ext[1]
            if env.contains(center, ext) and _clear(p, center, placed, path.dense_positions):
                p.center = center
                placed.append(p)
                break
    return placed


def place_dynamic(
    rng: np.random.Generator,
    count: int,
    env: Environment,
    statics: list[Primitive],
    cam_centers,
    times: np.ndarray,
    rays: np.ndarray,
    depth: np.ndarray,
    mid_pose: np.ndarray,
    focal_px: float,
    flow_px: float,
    tries: int = 200,
) -> list[Primitive]:
    """Up to `count` moving objects, each centred at mid-clip on a ray of the middle frame in front
    of the first static surface, moving fast enough to flow roughly `flow_px` pixels per frame.

    cam_centers: t (T,) -> camera centres (T, 3), any time in the clip; times: frame times;
    rays (M, 3) camera-frame ray directions (z = 1) of the middle frame and depth (M,) their depth.
    """
    t0, t1 = float(times[0]), float(times[-1])
    t_mid = 0.5 * (t0 + t1)
    dt = (t1 - t0) / max(len(times) - 1, 1)
    check_t = np.linspace(t0, t1, 4 * (len(times) - 1) + 1)
    cams = cam_centers(check_t)
    depth = np.where(np.isfinite(depth), depth, 30.0)
    placed: list[Primitive] = []
    for _ in range(count):
        for _ in range(tries):
            p = _random_shape(rng, env.object_scale * 0.8, resting=False)
            k = rng.integers(len(rays))
            lo, hi = max(1.0 + p.radius, NEAR_FACTOR * p.radius), min(depth[k] - p.radius - 0.2, 5.0 * env.object_scale)
            if hi <= lo:
                continue
            z = rng.uniform(lo, hi)
            p.center = mid_pose[:3, 3] + mid_pose[:3, :3] @ rays[k] * z
            step = flow_px * rng.uniform(0.5, 1.5) * z / focal_px  # metres per frame
            direction = rng.normal(size=3) * np.array([1.0, 0.3 if env.kind == "room" else 0.5, 1.0])
            view = mid_pose[:3, :3] @ rays[k]
            view /= np.linalg.norm(view)
            direction -= 0.8 * (direction @ view) * view  # mostly across the view, not towards it
            p.velocity = direction / np.linalg.norm(direction) * step / dt
            bend = rng.normal(size=3)
            p.acceleration = bend / np.linalg.norm(bend) * rng.uniform(0.0, 1.0) * np.linalg.norm(p.velocity) / max(t1 - t0, dt)
            axis = rng.normal(size=3)
            p.spin_axis = axis / np.linalg.norm(axis)
            p.spin_rate = float(np.clip(rng.uniform(0.3, 1.0) * np.linalg.norm(p.velocity) / p.radius, 0.3, 4.0))
            p.t_mid = t_mid
            centers = p.centers(check_t)
            ext = np.full(3, p.radius)
            if not all(env.contains(c, ext) for c in centers):
                continue
            if np.min(np.linalg.norm(centers - cams, axis=-1)) < max(p.radius + CAMERA_MARGIN, NEAR_FACTOR * p.radius):
                continue
            if any(np.min(np.linalg.norm(centers - o.centers(check_t), axis=-1)) < p.radius + o.radius + GAP for o in statics + placed):
                continue
            placed.append(p)
            break
    return placed
