"""Dynamic-scene methods side by side on held-back synthetic dynamic clips (exact ground truth):
TracksTo4D (per-clip fitting from scratch, or fine-tuning from a `launch.train` workdir),
FlowMap (per-scene optimisation on the frames) and, given a checkpoint, the feed-forward Flow3r
model. Poses: ATE / RPE (`eval.metrics.trajectory_metrics`, Sim(3)-aligned); depth of the
visible track points: AbsRel and delta < 1.25 after per-frame median scaling (TracksTo4D's
`calculate_depth_evaluation_metrics`; pixel methods' depth maps are read at the tracks' pixels).

    python -m benchmarks.dynamic_methods [--clips 2] [--frames 8] [--tracks 64] [--size 64x64]
        [--t4d_steps 300] [--flowmap_steps 300] [--flow3r_checkpoint CKPT --flow3r_size tiny --flow3r_pixels 3136]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from data_pipelines.synthetic_tracks import clip_tracks
from flow3r_jax.eval.metrics.trajectory import trajectory_metrics


def track_depth_metrics(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray) -> dict[str, float]:
    """AbsRel and delta < 1.25 over visible entries, each frame scaled by median(gt) / median(pred)."""
    absrel, d1 = [], []
    for t in range(gt.shape[0]):
        m = visible[t] & (gt[t] > 0) & np.isfinite(pred[t]) & (pred[t] > 0)
        if m.sum() < 2:
            continue
        p = pred[t][m] * np.median(gt[t][m]) / np.median(pred[t][m])
        g = gt[t][m]
        absrel.append(np.mean(np.abs(p - g) / g))
        d1.append(np.mean(np.maximum(p / g, g / p) < 1.25))
    return {"absrel": float(np.mean(absrel)), "delta1": float(np.mean(d1))}


def _sample_depth(depth_maps: np.ndarray, tracks_px: np.ndarray, grid) -> np.ndarray:
    """Nearest-pixel lookup of depth maps (T, h, w) on `grid` (a `data.frames.ModelGrid`) at
    track pixels given on the input image."""
    T, h, w = depth_maps.shape
    xy = grid.from_input(tracks_px)
    x = np.clip(xy[..., 0].astype(int), 0, w - 1)
    y = np.clip(xy[..., 1].astype(int), 0, h - 1)
    return depth_maps[np.arange(T)[:, None], y, x]


def run_tracks4d(clip, steps: int, size: str, workdir: str | None):
    from flow3r_jax.flowmap.tracks4d import finetune_tracks4d
    from flow3r_jax.losses.tracks4d import Tracks4DLossConfig
    from flow3r_jax.models.tracks4d import tracks4d_config

    params = None
    if workdir:
        from flax import nnx

        from flow3r_jax.models.tracks4d import Tracks4D
        from flow3r_jax.train.checkpoint import read_params

        cfg = tracks4d_config(size)
        host = read_params(workdir)
        model = nnx.eval_shape(lambda: Tracks4D(cfg, rngs=nnx.Rngs(0)))
        state = nnx.state(model)
        flat = [(p, host["/".join(map(str, p))]) for p, _ in nnx.to_flat_state(state)]
        params = nnx.State.from_flat_path(flat)
    loss_cfg = Tracks4DLossConfig(warmup_steps=0 if workdir else min(100, steps // 3))
    t0 = time.perf_counter()
    # from scratch a higher rate than the official fine-tuning's 1e-4 (which starts from trained weights)
    r = finetune_tracks4d(clip["tracks"], clip["visible"], clip["intrinsics"], tracks4d_config(size), steps=steps, loss_cfg=loss_cfg, params=params, lr=1e-4 if workdir else 1e-3)
    return r.poses, r.depth, time.perf_counter() - t0


def run_flowmap(clip, steps: int):
    from flow3r_jax.reconstruction import run_flowmap as rf

    t0 = time.perf_counter()
    rec = rf(clip["images"], steps=steps, init="random", pixels=int(np.prod(clip["images"].shape[1:3])), progress=False)
    depth = _sample_depth(np.asarray(rec.depth), clip["tracks"], rec.grid)
    return np.asarray(rec.poses), depth, time.perf_counter() - t0


def run_flow3r(clip, checkpoint: str, size: str, pixels: int):
    from flow3r_jax.reconstruction import run_feedforward

    t0 = time.perf_counter()
    rec = run_feedforward(clip["images"], checkpoint, size=size, max_pixels=pixels)
    depth = _sample_depth(np.asarray(rec.depth), clip["tracks"], rec.grid)
    return np.asarray(rec.poses), depth, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=2)
    p.add_argument("--seed", type=int, default=5000, help="first held-back clip seed")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--tracks", type=int, default=64)
    p.add_argument("--size", default="64x64")
    p.add_argument("--t4d_size", default="tiny")
    p.add_argument("--t4d_steps", type=int, default=300)
    p.add_argument("--t4d_workdir", default=None, help="also fine-tune from this launch.train workdir (configs/tracks4d.py, same --t4d_size)")
    p.add_argument("--t4d_ft_steps", type=int, default=100, help="fine-tuning steps from --t4d_workdir")
    p.add_argument("--flowmap_steps", type=int, default=300)
    p.add_argument("--flow3r_checkpoint", default=None, help="a Flow3r checkpoint (file, save_pretrained dir or launch.train workdir)")
    p.add_argument("--flow3r_size", default="tiny", help="its model size")
    p.add_argument("--flow3r_pixels", type=int, default=255_000, help="its input area (the official rule's max_pixels; a tiny checkpoint: its training area, e.g. 3136 for 56x56)")
    a = p.parse_args(argv)
    H, W = (int(v) for v in a.size.lower().split("x"))
    methods = {"tracks4d": lambda c: run_tracks4d(c, a.t4d_steps, a.t4d_size, None)}
    if a.t4d_workdir:
        methods["t4d-ft"] = lambda c: run_tracks4d(c, a.t4d_ft_steps, a.t4d_size, a.t4d_workdir)
    methods["flowmap"] = lambda c: run_flowmap(c, a.flowmap_steps)
    if a.flow3r_checkpoint:
        methods["flow3r"] = lambda c: run_flow3r(c, a.flow3r_checkpoint, a.flow3r_size, a.flow3r_pixels)
    # reference: one constant depth (what no depth information scores; no poses)
    methods["constant"] = lambda c: (None, np.ones_like(c["depth"]), 0.0)
    rows = {m: [] for m in methods}
    for n in range(a.clips):
        clip = clip_tracks(a.seed + n, a.frames, a.tracks, (H, W), images=True)
        for name, fn in methods.items():
            poses, depth, secs = fn(clip)
            tm = trajectory_metrics(poses, clip["poses"]) if poses is not None else dict.fromkeys(("ate", "rpe_trans", "rpe_rot"), float("nan"))
            dm = track_depth_metrics(np.asarray(depth), clip["depth"], clip["visible"])
            rows[name].append({"ate": tm["ate"], "rpe_trans": tm["rpe_trans"], "rpe_rot": tm["rpe_rot"], **dm, "seconds": secs})
    print(f"{a.clips} dynamic synthetic clips, {a.frames} frames {H}x{W}, {a.tracks} exact tracks; means over clips")
    print(f"{'method':10s} {'ATE':>8s} {'RPE-t':>8s} {'RPE-r°':>8s} {'AbsRel':>8s} {'δ<1.25':>8s} {'time s':>8s}")
    for name, rs in rows.items():
        m = {k: np.mean([r[k] for r in rs]) for k in rs[0]}
        print(f"{name:10s} {m['ate']:8.4f} {m['rpe_trans']:8.4f} {m['rpe_rot']:8.3f} {m['absrel']:8.3f} {m['delta1']:8.3f} {m['seconds']:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
