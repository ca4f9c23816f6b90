"""Depth quality and poses of `reconstruct` against FlowMap's step count, with and without the
sparse solver, and of the default depth triangulated from the flow with the solver's cameras
(`--dense flow`, no FlowMap steps), on a rendered clip with exact depth and poses.

    python benchmarks/depth_vs_steps.py --preset handheld --seed 1 --steps 100,300,1000

Runs: `--sfm auto --dense flow` once (steps do not apply), then FlowMap's depth for each step
count with the solver's cameras (`--dense flowmap`) and without the solver (`--sfm off`).
Per run: wall seconds (frames in, files out), depth abs-rel and delta < 1.25 of depth.npz against
the clip's depth on the same grid (surface pixels with a known depth (> 0; `known` is their
fraction); one global scale, the median ratio), ATE as a
fraction of the trajectory radius and rotation error (`flowmap.metrics.trajectory_errors`), and
where the poses came from.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="handheld", help="synthetic camera path (default handheld)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--size", default="240x320", help="frame size HxW (default 240x320)")
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--steps", default="100,300,1000", help="comma-separated step counts")
    p.add_argument("--runs", default="flow,flowmap,off", help="comma-separated: flow (--dense flow), flowmap (--dense flowmap at each --steps), off (--sfm off at each --steps); default all three")
    args = p.parse_args(argv)
    import cv2

    from data_pipelines.synthetic import SceneConfig, generate_clip
    from flow3r_jax.data.frames import resize_to_grid, uniform_grid
    from flow3r_jax.flowmap.metrics import trajectory_errors
    from flow3r_jax.reconstruct import reconstruct

    H, W = (int(v) for v in args.size.split("x"))
    cfg = SceneConfig(height=H, width=W, frames=args.frames, dynamic=False, preset=args.preset, kind="room", offsets=(1,), flow_px=(4.0, 8.0))
    clip = generate_clip(cfg, seed=args.seed)
    tmp = tempfile.mkdtemp(prefix="depth_vs_steps_")
    folder = os.path.join(tmp, "frames")
    os.makedirs(folder)
    for k, im in enumerate(clip["images"]):
        cv2.imwrite(os.path.join(folder, f"{k:03d}.png"), cv2.cvtColor(np.asarray(im), cv2.COLOR_RGB2BGR))
    runs = []
    for kind in args.runs.split(","):
        if kind not in ("flow", "flowmap", "off"):
            p.error(f"--runs: unknown run {kind!r} (flow, flowmap, off)")
        step_list = [0] if kind == "flow" else [int(s) for s in args.steps.split(",")]
        runs += [(kind, steps) for steps in step_list]
    for kind, steps in runs:
        out = os.path.join(tmp, f"{kind}_{steps}")
        options = dict(sfm="off") if kind == "off" else dict(sfm="auto", dense=kind)
        t0 = time.time()
        result = reconstruct(folder, out, steps=steps or 2000, progress=False, **options)
        seconds = time.time() - t0
        pred = np.load(os.path.join(out, "depth.npz"))["depth"]
        grid = uniform_grid(H, W, pred.shape[1:])
        gt = resize_to_grid(clip["depth"].astype(np.float32), grid)
        surface = resize_to_grid(clip["valid"].astype(np.float32), grid) > 0.99
        ok = surface & (pred > 0)
        s = np.median(gt[ok] / pred[ok])
        ratio = s * pred[ok] / gt[ok]
        err = trajectory_errors(result["poses"], clip["poses"].astype(np.float64))
        row = dict(run=kind, steps=steps, seconds=round(seconds, 1), depth_absrel=round(float(np.mean(np.abs(ratio - 1))), 4),
                   depth_d125=round(float(np.mean(np.maximum(ratio, 1 / ratio) < 1.25)), 4), known=round(float(ok.sum() / surface.sum()), 4),
                   ate_rel=round(float(err["ate_rel"]), 4), rot_err_deg=round(float(err["rot_err_deg"]), 3), poses_from=result["info"].get("poses_from"),
                   depth_from=result["info"].get("depth_from", "flowmap"))
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
