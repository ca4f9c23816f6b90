"""A long clip through `reconstruct`: peak memory and time at the default resolution.

    python benchmarks/long_clip.py [--frames 200] [--steps 50] [--pixels 43200] [--workdir DIR]

Renders a synthetic room video of F frames (`data_pipelines.synthetic`, `--preset` path, seed 0)
at the size whose optimisation grid is the default (180 x 240 for 43200 pixels) and runs
`python -m flow3r_jax.reconstruct` on it in a child process: with its defaults (`--mode
default`: the sparse solver's cameras and the flow's depth; FlowMap only if the solver refuses)
or FlowMap alone (`--mode flowmap`: `--sfm off` for `--steps` steps; the per-step cost does not
depend on the step count, the default 2000 steps are projected from the measured rate). Prints
the child's peak resident memory (ru_maxrss), the run's time split (from its cameras.json) and,
where FlowMap ran, the projected time of 2000 steps. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def render(folder: str, frames: int, height: int, width: int, preset: str = "handheld", flow_px=(3.0, 5.0)) -> None:
    import cv2

    from data_pipelines.synthetic.clip import build_scene
    from data_pipelines.synthetic.config import SceneConfig

    os.makedirs(folder, exist_ok=True)
    if len([f for f in os.listdir(folder) if f.endswith(".png")]) == frames:
        return
    scene = build_scene(SceneConfig(height=height, width=width, frames=frames, preset=preset, flow_px=tuple(flow_px), offsets=(1,)), 0)
    t0 = time.time()
    for i in range(frames):
        cv2.imwrite(os.path.join(folder, f"{i:04d}.png"), cv2.cvtColor(scene.render(i)["image"], cv2.COLOR_RGB2BGR))
        if (i + 1) % 25 == 0:
            print(f"rendered {i + 1}/{frames} frames ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=200, help="frames of the video (default 200)")
    p.add_argument("--mode", default="default", choices=("default", "flowmap"), help="default: reconstruct's defaults; flowmap: --sfm off (FlowMap alone)")
    p.add_argument("--steps", type=int, default=50, help="FlowMap's steps actually run where it runs (default 50; 2000 are projected)")
    p.add_argument("--pixels", type=int, default=43_200, help="reconstruct --pixels (default 43200)")
    p.add_argument("--size", default="180x240", help="rendered frame size HxW (default 180x240, the default optimisation grid)")
    p.add_argument("--preset", default="handheld", help="camera path of the rendered video (default handheld)")
    p.add_argument("--flow_px", default="3,5", help="range of the mean flow between consecutive frames, pixels (default 3,5)")
    p.add_argument("--workdir", default="/tmp/long_clip", help="rendered frames (reused) and the outputs (default /tmp/long_clip)")
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))
    flow_px = tuple(float(v) for v in args.flow_px.split(","))
    frames_dir = os.path.join(args.workdir, f"frames_{args.frames}_{h}x{w}_{args.preset}_{args.flow_px.replace(',', '-')}")
    render(frames_dir, args.frames, h, w, args.preset, flow_px)
    out = os.path.join(args.workdir, "out")
    cmd = [sys.executable, "-m", "flow3r_jax.reconstruct", "--input", frames_dir, "--out", out, "--frames", str(args.frames),
           "--steps", str(args.steps), "--pixels", str(args.pixels), "--no_progress", "--jit_cache", "off"] + (["--sfm", "off"] if args.mode == "flowmap" else [])
    t0 = time.time()
    r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True)
    wall = time.time() - t0
    if r.returncode != 0:
        print(r.stderr[-4000:], file=sys.stderr)
        return r.returncode
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
    with open(os.path.join(out, "cameras.json")) as f:
        run = json.load(f)["run"]
    timing = run.get("timing", {})
    print(f"{args.frames} frames at {run['size'][0]}x{run['size'][1]} (grid), poses from {run.get('poses_from')}, depth from {run.get('depth_from', 'flowmap')}:")
    print(f"  peak resident memory of the reconstruct process: {peak_gib:.2f} GiB")
    print(f"  wall {wall:.1f} s; split: " + ", ".join(f"{k} {v:.1f}" for k, v in timing.items()))
    if "optimise" in timing:  # FlowMap ran
        rate = timing["optimise"] / max(args.steps - 1, 1)  # the first step is counted with the compilation
        fixed = wall - timing["optimise"]
        print(f"  FlowMap {args.steps} steps, {rate * 1000:.0f} ms/step -> the default 2000 steps: ~{fixed + 2000 * rate:.0f} s ({(fixed + 2000 * rate) / 60:.1f} min) end to end")
    sfm = run.get("sfm") or {}
    if sfm.get("used"):
        print(f"  sfm: {sfm.get('route')} route, solver split: " + ", ".join(f"{k} {v}" for k, v in (sfm.get("timing") or {}).items()))
    elif sfm:
        print(f"  sfm not used: {sfm.get('reason')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
