"""Exact 2D point tracks of synthetic dynamic clips (for TracksTo4D training and evaluation).

A track is a surface point seen by a pixel of a seed frame (frames spread over the clip; half
the seeds on moving objects when any are in view), held in its primitive's local frame so that it
follows the primitive. At every frame t it is moved by the primitive's object-to-world transform,
projected by camera t (pixel coordinates, centre of the top-left pixel at (0.5, 0.5)), and is
visible when it lands inside the image, in front of the camera, and the ray from camera t to it
hits nothing closer (the exact test of `synthetic.flow`). Tracks visible in fewer than 2 frames
are dropped.

    python -m data_pipelines.synthetic_tracks --out DIR --clips 8 --frames 8 --tracks 64 --size 64x64 [--images]

writes DIR/clip_NNNN.npz with (T frames, N tracks):
    tracks float32 (T, N, 2) pixels; visible bool (T, N); depth float32 (T, N) camera z-depth;
    points float32 (T, N, 3) world positions; dynamic bool (N,) on a moving object;
    poses float32 (T, 4, 4) camera-to-world; intrinsics float32 (T, 3, 3); image_size int32 (2,)
    (H, W); seed int64; [images uint8 (T, H, W, 3) with --images: for pixel-based methods].
`flow3r_jax.data.tracks4d` reads them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines.synthetic import SceneConfig, build_scene
from data_pipelines.synthetic.flow import RTOL
from data_pipelines.synthetic.render import intersect

__all__ = ["scene_tracks", "clip_tracks", "main"]


@jax.jit
def _follow(prim, p_local, poses, K, o2w, w2o, types, sizes):
    """World points (T, M, 3), pixels (T, M, 2), depth (T, M), visible (T, M) of M local points."""
    ph = jnp.concatenate([p_local, jnp.ones_like(p_local[:, :1])], -1)

    def one(pose, o2w_t, w2o_t):
        X = jnp.einsum("mij,mj->mi", o2w_t[prim], ph)[:, :3]
        w2c = jnp.linalg.inv(pose)
        cam = X @ w2c[:3, :3].T + w2c[:3, 3]
        z = cam[:, 2]
        front = z > 1e-6
        uv = cam[:, :2] / jnp.where(front, z, 1.0)[:, None]
        xy = uv * jnp.array([K[0, 0], K[1, 1]]) + jnp.array([K[0, 2], K[1, 2]])
        dirs = (X - pose[:3, 3]) / jnp.where(front, z, 1.0)[:, None]
        t_hit, _, _ = intersect(pose[:3, 3], dirs, w2o_t, types, sizes)
        return X, xy, z, front & (t_hit >= z * (1.0 - RTOL))

    X, xy, z, vis = jax.vmap(one)(poses, o2w, w2o)
    return X, xy, z, vis


def scene_tracks(scene, num_tracks: int, rng: np.random.Generator, seed_frames: int = 3) -> dict[str, np.ndarray]:
    """Exact tracks of a built scene (see the module docstring)."""
    H, W = scene.config.height, scene.config.width
    T = scene.num_frames
    prims, locs = [], []
    per = -(-2 * num_tracks // seed_frames)
    for q in sorted(set(np.linspace(0, T - 1, seed_frames).round().astype(int).tolist())):
        f = scene.render(int(q))
        valid, dyn = f["valid"].ravel(), f["dynamic"].ravel()
        idx_dyn, idx_all = np.flatnonzero(dyn), np.flatnonzero(valid)
        n_dyn = min(per // 2, len(idx_dyn))
        pick = np.concatenate([rng.choice(idx_dyn, n_dyn, replace=False) if n_dyn else np.zeros(0, int), rng.choice(idx_all, per - n_dyn, replace=len(idx_all) < per - n_dyn)])
        prims.append(f["prim"].ravel()[pick])
        locs.append(f["p_local"].reshape(-1, 3)[pick])
    prim, loc = np.concatenate(prims), np.concatenate(locs)
    K = scene.intrinsics
    X, xy, z, vis = jax.device_get(_follow(jnp.asarray(prim), jnp.asarray(loc), scene.poses, K, scene.o2w, scene.w2o, scene.types, scene.sizes))
    inside = (xy[..., 0] >= 0) & (xy[..., 0] <= W) & (xy[..., 1] >= 0) & (xy[..., 1] <= H)
    vis = np.asarray(vis) & inside
    keep = np.flatnonzero(vis.sum(0) >= 2)
    if len(keep) == 0:
        raise RuntimeError(f"scene seed {scene.seed}: no track is visible in 2 frames")
    keep = rng.choice(keep, num_tracks, replace=len(keep) < num_tracks)
    return {
        "tracks": np.asarray(xy[:, keep], np.float32),
        "visible": vis[:, keep],
        "depth": np.asarray(z[:, keep], np.float32),
        "points": np.asarray(X[:, keep], np.float32),
        "dynamic": np.asarray(scene.dynamic[prim[keep]], bool),
        "poses": scene.poses.astype(np.float32),
        "intrinsics": np.broadcast_to(K, (T, 3, 3)).astype(np.float32),
        "image_size": np.array([H, W], np.int32),
        "seed": np.int64(scene.seed),
    }


def clip_tracks(seed: int, frames: int = 8, tracks: int = 64, size: tuple[int, int] = (64, 64), images: bool = False, **scene_kw) -> dict[str, np.ndarray]:
    """Tracks of the dynamic synthetic clip `seed` (and its frames when `images`)."""
    cfg = SceneConfig(height=size[0], width=size[1], frames=frames, dynamic=True, offsets=(1,), **{"num_dynamic": (1, 2), "flow_px": (0.5, 3.0), **scene_kw})
    scene = build_scene(cfg, seed)
    out = scene_tracks(scene, tracks, np.random.default_rng([seed, 7]))
    if images:
        out["images"] = np.stack([scene.render(i)["image"] for i in range(frames)])
    return out


def _size(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    try:
        return int(h), int(w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, got {text!r}") from None


def main(argv=None) -> int:
    from flow3r_jax.cli import ArgumentParser

    p = ArgumentParser(module="data_pipelines.synthetic_tracks", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory of the clip_*.npz files")
    p.add_argument("--clips", type=int, default=8, help="number of synthetic dynamic clips")
    p.add_argument("--frames", type=int, default=8, help="frames per clip")
    p.add_argument("--tracks", type=int, default=64, help="point tracks per clip")
    p.add_argument("--size", type=_size, default=(64, 64), help="image size HxW the tracks live in")
    p.add_argument("--seed", type=int, default=0, help="seed of the first clip (clip n uses seed + n)")
    p.add_argument("--images", action="store_true", help="also store the rendered frames")
    a = p.parse_args(argv)
    if a.clips < 1 or a.frames < 2 or a.tracks < 1:
        print(f"error: need --clips >= 1, --frames >= 2, --tracks >= 1 (got {a.clips}, {a.frames}, {a.tracks})", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    t0 = time.perf_counter()
    for n in range(a.clips):
        clip = clip_tracks(a.seed + n, a.frames, a.tracks, a.size, images=a.images)
        np.savez(os.path.join(a.out, f"clip_{n:04d}.npz"), **clip)
    print(f"wrote {a.clips} track clip(s) to {a.out} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
