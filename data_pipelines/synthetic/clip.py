"""Assembling a scene from a config and a seed, and rendering clips and frame pairs from it.

`build_scene(cfg, seed)` draws everything on the host with NumPy Generators spawned from the
seed alone (environment, path, objects, motion, materials, lighting each get their own stream),
sets the camera speed from the flow target, and packs the primitives into fixed-size arrays (one
slot per possible object, unused slots disabled) so that every seed of a config reuses the same
compiled kernels. `Scene.render(i)` and `Scene.flow(i, j)` run the JAX kernels on demand and
cache frames; `generate_clip` renders a whole clip into the documented dict of numpy arrays.

Camera speed: a clip traverses the fraction s of its path (see `trajectory.py`). The mean
consecutive-frame flow magnitude over static surfaces is measured by casting a 12 x 12 grid of
rays per frame and reprojecting the hits into the next frame (sky rays are left out);
s is rescaled by target / measured a few times (flow is nearly linear in s), capped at 1 (the
whole path; a short path may then give less flow than asked).
"""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np

from data_pipelines.synthetic.config import SceneConfig
from data_pipelines.synthetic.flow import pair_flow
from data_pipelines.synthetic.render import NONE, cast_depth, render_frame
from data_pipelines.synthetic.scene import Environment, Primitive, place_dynamic, place_static, sample_environment
from data_pipelines.synthetic.textures import sample_materials, sample_sky
from data_pipelines.synthetic.trajectory import PATH_PRESETS, CameraPath, make_path

__all__ = ["Scene", "build_scene", "generate_clip", "render_pair_flow"]

_GRID = 12  # rays per side of the sparse grid used to set the camera speed


def _intrinsics(focal_px: float, height: int, width: int) -> np.ndarray:
    return np.array([[focal_px, 0.0, width / 2.0], [0.0, focal_px, height / 2.0], [0.0, 0.0, 1.0]])


def _invert_rigid(T: np.ndarray) -> np.ndarray:
    out = np.zeros_like(T)
    Rt = np.swapaxes(T[..., :3, :3], -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, T[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def _pack(prims: list[Primitive], slots: int, times: np.ndarray):
    """Fixed-size arrays: types (N,), sizes (N, 3), o2w (F, N, 4, 4), dynamic (N,)."""
    types = np.full(slots, NONE, np.int32)
    sizes = np.ones((slots, 3))
    o2w = np.tile(np.eye(4), (len(times), slots, 1, 1))
    dynamic = np.zeros(slots, bool)
    for k, p in enumerate(prims):
        types[k], sizes[k], dynamic[k] = p.kind, p.half, p.dynamic
        o2w[:, k] = p.poses(times)
    return types, sizes, o2w, dynamic


def _sparse_rays(K: np.ndarray, height: int, width: int):
    g = (np.arange(_GRID) + 0.5) / _GRID
    xy = np.stack(np.meshgrid(g * width, g * height, indexing="xy"), -1).reshape(-1, 2)
    rays = np.concatenate([(xy - K[:2, 2]) / np.diag(K)[:2], np.ones((len(xy), 1))], axis=-1)
    return xy, rays


def _mean_flow(poses: np.ndarray, K: np.ndarray, rays: np.ndarray, depth: np.ndarray) -> float:
    """Mean |flow| from frame k to k + 1 of the sparse rays that hit a surface (depth (F, M),
    inf = sky; sky rays count only when no ray hits anything)."""
    hit = np.isfinite(depth)
    pts = np.where(hit[..., None], rays * np.where(hit, depth, 1.0)[..., None], rays)  # sky: direction
    rel = np.einsum("kij,kjl->kil", _invert_rigid(poses[1:]), poses[:-1])  # camera k -> camera k+1
    q = np.einsum("kij,kmj->kmi", rel[:, :3, :3], pts[:-1]) + np.where(hit[:-1, :, None], rel[:, None, :3, 3], 0.0)
    front = q[..., 2] > 1e-6
    xy = q[..., :2] / np.where(front, q[..., 2], 1.0)[..., None] * np.diag(K)[:2]
    flow = np.linalg.norm(xy - rays[None, :, :2] * np.diag(K)[:2], axis=-1)
    use = front & hit[:-1] if np.any(front & hit[:-1]) else front  # surfaces; sky only if nothing else
    return float(np.mean(flow[use])) if np.any(use) else 0.0


def _solve_speed(path: CameraPath, K, frames: int, prims, slots: int, xy, rays, target: float, s: float = 0.2):
    """Path fraction s giving a mean consecutive flow of `target` px; also the flow reached and the
    sparse depth at that s."""
    types, sizes, o2w, _ = _pack(prims, slots, np.zeros(1))
    w2o = np.broadcast_to(_invert_rigid(o2w), (frames,) + o2w.shape[1:]).astype(np.float32)
    u = np.linspace(0.0, 1.0, frames)

    def measure(s):
        poses = path.poses(s * u)
        depth = np.asarray(cast_depth(poses.astype(np.float32), K.astype(np.float32), w2o, types, sizes.astype(np.float32), xy.astype(np.float32)))
        return _mean_flow(poses, K, rays, depth), depth

    for _ in range(4):
        m, _ = measure(s)
        # Rounded (4 significant digits; depths below to 1 mm) so the host-side layout does not
        # depend on the last bits of XLA's float32 results, which may differ between CPUs.
        s = 1.0 if m <= 1e-9 else float(f"{np.clip(s * target / m, 1e-4, 1.0):.4g}")
    m, depth = measure(s)
    return s, m, np.round(depth, 3)


@dataclasses.dataclass
class Scene:
    """A built scene: everything needed to render any frame or frame pair of the clip.

    Arrays (float32 unless noted; F frames, N primitive slots, slot 0 the room / ground):
    intrinsics (3, 3); poses (F, 4, 4) camera-to-world; times (F,) seconds; types (N,) int32;
    sizes (N, 3); o2w, w2o (F, N, 4, 4) object-to-world / world-to-object per frame; dynamic
    (N,) bool. `description` is a JSON-able summary (preset, focal, flow target and estimate,
    environment, objects).
    """

    config: SceneConfig
    seed: int
    intrinsics: np.ndarray
    poses: np.ndarray
    times: np.ndarray
    types: np.ndarray
    sizes: np.ndarray
    o2w: np.ndarray
    w2o: np.ndarray
    dynamic: np.ndarray
    materials: dict
    light: np.ndarray
    sky: dict
    description: dict
    _frames: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def num_frames(self) -> int:
        return len(self.poses)

    def _check(self, i: int, name: str = "i") -> int:
        if not (isinstance(i, (int, np.integer)) and 0 <= i < self.num_frames):
            raise IndexError(f"Scene: frame index {name}={i!r} out of range [0, {self.num_frames})")
        return int(i)

    def _tables(self) -> dict:
        return {"types": self.types, "sizes": self.sizes, "materials": self.materials, "light": self.light, "sky": self.sky}

    def render(self, i: int) -> dict[str, np.ndarray]:
        """Frame i: image uint8 (H, W, 3), depth float32 (H, W) (0: no surface), valid bool,
        dynamic bool (pixel shows a moving object), prim int32 (primitive index, -1: none) and
        p_local float32 (H, W, 3) (hit point in the primitive's frame). Cached."""
        i = self._check(i)
        if i not in self._frames:
            cfg = self.config
            out = render_frame(
                self.poses[i], self.intrinsics, self.w2o[i], self._tables(),
                height=cfg.height, width=cfg.width, supersample=cfg.supersample, has_sky=cfg.kind == "outdoor",
            )
            out = jax.device_get(out)
            prim = np.asarray(out["prim"], np.int32)
            valid = prim >= 0
            rgb = np.stack(out["rgb"], axis=-1)
            self._frames[i] = {
                "image": np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8),
                "depth": np.asarray(out["depth"], np.float32),
                "valid": valid,
                "dynamic": valid & self.dynamic[np.maximum(prim, 0)],
                "prim": prim,
                "p_local": np.stack(out["p_local"], axis=-1).astype(np.float32),
            }
        return self._frames[i]

    def flow(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact flow i -> j (H, W, 2) float32 on i's grid, covisible (H, W) bool (pixel of i is
        visible in j: in bounds, in front, not occluded, valid) and dynamic (H, W) bool (pixel of
        i shows a primitive that moves between times i and j)."""
        i, j = self._check(i, "i"), self._check(j, "j")
        fi = self.render(i)
        moved = np.any(self.o2w[i] != self.o2w[j], axis=(-2, -1))
        out = pair_flow(
            fi["prim"], fi["p_local"], self.poses[i], self.poses[j], self.intrinsics,
            self.o2w[j], self.w2o[j], self.types, self.sizes, moved,
        )
        flow, covisible, dynamic = jax.device_get(out)
        return np.asarray(flow, np.float32), np.asarray(covisible, bool), np.asarray(dynamic, bool)


def build_scene(cfg: SceneConfig, seed: int) -> Scene:
    """Draws the scene of `cfg` for `seed` (deterministic: the same pair gives the same scene)."""
    if not isinstance(cfg, SceneConfig):
        raise TypeError(f"build_scene: cfg must be a SceneConfig, got {type(cfg).__name__}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"build_scene: seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    r_env, r_path, r_obj, r_dyn, r_mat, r_misc = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6))
    H, W, F = cfg.height, cfg.width, cfg.frames
    preset = str(r_misc.choice(PATH_PRESETS)) if cfg.preset == "mixed" else cfg.preset
    focal = cfg.focal if cfg.focal is not None else float(r_misc.uniform(*cfg.focal_range))
    K = _intrinsics(focal * W, H, W)
    lo, hi = cfg.flow_px
    target = float(np.exp(r_misc.uniform(np.log(lo), np.log(hi))))
    slots = 1 + cfg.max_objects

    env: Environment = sample_environment(cfg.kind, r_env)
    path = make_path(preset, r_path, env.bounds)
    xy, rays = _sparse_rays(K, H, W)
    s_env, _, _ = _solve_speed(path, K, F, [env.shell], slots, xy, rays, target)
    n_static = int(r_obj.integers(cfg.num_objects[0], cfg.num_objects[1] + 1))
    statics = place_static(r_obj, n_static, env, path, s_env, K, (H, W))
    s, mean_flow, depth = _solve_speed(path, K, F, [env.shell] + statics, slots, xy, rays, target, s_env)

    times = np.arange(F) / cfg.fps
    u = s * np.arange(F) / (F - 1)
    poses = path.poses(u)
    movers: list[Primitive] = []
    if cfg.dynamic:
        n_dyn = int(r_dyn.integers(cfg.num_dynamic[0], cfg.num_dynamic[1] + 1))
        mid = (F - 1) // 2

        def cam_centers(t):
            return path.poses(s * np.asarray(t) / times[-1])[..., :3, 3]

        movers = place_dynamic(r_dyn, n_dyn, env, statics, cam_centers, times, rays, depth[mid], poses[mid], K[0, 0], target)

    prims = [env.shell] + statics + movers
    types, sizes, o2w, dynamic = _pack(prims, slots, times)
    materials = sample_materials(r_mat, slots, freq_range=(1.5, 4.0), texture_scale=cfg.texture_scale, flat_prob=cfg.flat_prob)
    shell_mat = sample_materials(r_mat, 1, freq_range=(0.8, 2.5), texture_scale=cfg.texture_scale, flat_prob=cfg.flat_prob)
    for key in materials:
        materials[key][0] = shell_mat[key][0]
    light = np.array([r_misc.uniform(-0.6, 0.6), -1.0, r_misc.uniform(-0.6, 0.6)])
    light /= np.linalg.norm(light)
    sky = sample_sky(r_misc)

    description = {
        "seed": seed,
        "kind": cfg.kind,
        "preset": preset,
        "focal": focal,
        "focal_px": focal * W,
        "target_flow_px": target,
        "estimated_flow_px": mean_flow,
        "path_fraction": s,
        "environment": env.describe(),
        "objects": [{"slot": 1 + k} | p.describe() for k, p in enumerate(statics)],
        "dynamic_objects": [{"slot": 1 + len(statics) + k} | p.describe() for k, p in enumerate(movers)],
        "light": light.round(6).tolist(),
    }
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    return Scene(
        config=cfg,
        seed=seed,
        intrinsics=f32(K),
        poses=f32(poses),
        times=f32(times),
        types=types,
        sizes=f32(sizes),
        o2w=f32(o2w),
        w2o=f32(_invert_rigid(o2w)),
        dynamic=dynamic,
        materials=materials,
        light=f32(light),
        sky=sky,
        description=description,
    )


def render_pair_flow(scene: Scene, i: int, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flow, covisible, dynamic) for an arbitrary pair (i, j) of a built scene; see `Scene.flow`."""
    if not isinstance(scene, Scene):
        raise TypeError(f"render_pair_flow: expected a Scene from build_scene(cfg, seed), got {type(scene).__name__}")
    return scene.flow(i, j)


def generate_clip(cfg: SceneConfig, seed: int, progress=None) -> dict[str, np.ndarray]:
    """Renders the clip of (cfg, seed): frames and the flow of every pair in `cfg.pairs()`.
    See the package docstring for the keys. `progress`, if given, is called with no arguments
    after each frame and each pair (e.g. a tqdm `update`)."""
    scene = build_scene(cfg, seed)
    H, W, F = cfg.height, cfg.width, cfg.frames
    frames = []
    for i in range(F):
        frames.append(scene.render(i))
        if progress:
            progress()
    pairs = np.asarray(cfg.pairs(), np.int32).reshape(-1, 2)
    flow = np.zeros((len(pairs), H, W, 2), np.float32)
    covisible = np.zeros((len(pairs), H, W), bool)
    for p, (i, j) in enumerate(pairs):
        flow[p], covisible[p], _ = scene.flow(int(i), int(j))
        if progress:
            progress()
    stack = lambda key: np.stack([f[key] for f in frames])  # noqa: E731
    return {
        "images": stack("image"),
        "depth": stack("depth"),
        "valid": stack("valid"),
        "poses": scene.poses.copy(),
        "intrinsics": np.broadcast_to(scene.intrinsics, (F, 3, 3)).copy(),
        "times": scene.times.copy(),
        "pairs": pairs,
        "flow": flow,
        "covisible": covisible,
        "dynamic": stack("dynamic"),
        "seed": np.asarray(seed, np.int64),
        "config": np.asarray(cfg.to_json()),
        "scene": np.asarray(json.dumps(scene.description, sort_keys=True)),
    }
