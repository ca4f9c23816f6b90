"""A long clip through `reconstruct`: peak memory and time at the default resolution.

    python benchmarks/long_clip.py [--frames 200] [--steps 50] [--pixels 43200] [--workdir DIR]

Renders a synthetic room video of F frames (`data_pipelines.synthetic`, 'handheld' path, seed 0)
at the size whose optimisation grid is the default (180 x 240 for 43200 pixels) and runs
`python -m flow3r_jax.reconstruct` on it in a child process for `--steps` steps (the
per-step cost does not depend on the step count; the default 2000 steps are projected from
the measured optimisation rate). Prints the child's peak resident memory (ru_maxrss), the run's
time split (read, flow, tracks, setup, compile, optimise, export; from its cameras.json
and log) and the projected time of the default 2000 steps. Nothing is asserted.
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


def render(folder: str, frames: int, height: int, width: int) -> None:
    import cv2

    from data_pipelines.synthetic.clip import build_scene
    from data_pipelines.synthetic.config import SceneConfig

    os.makedirs(folder, exist_ok=True)
    if len([f for f in os.listdir(folder) if f.endswith(".png")]) == frames:
        return
    scene = build_scene(SceneConfig(height=height, width=width, frames=frames, preset="handheld", flow_px=(3.0, 5.0), offsets=(1,)), 0)
    t0 = time.time()
    for i in range(frames):
        cv2.imwrite(os.path.join(folder, f"{i:04d}.png"), cv2.cvtColor(scene.render(i)["image"], cv2.COLOR_RGB2BGR))
        if (i + 1) % 25 == 0:
            print(f"rendered {i + 1}/{frames} frames ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=200, help="frames of the video (default 200)")
    p.add_argument("--steps", type=int, default=50, help="optimisation steps actually run (default 50; 2000 are projected)")
    p.add_argument("--pixels", type=int, default=43_200, help="reconstruct --pixels (default 43200)")
    p.add_argument("--size", default="180x240", help="rendered frame size HxW (default 180x240, the default optimisation grid)")
    p.add_argument("--workdir", default="/tmp/long_clip", help="rendered frames (reused) and the outputs (default /tmp/long_clip)")
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))
    frames_dir = os.path.join(args.workdir, f"frames_{args.frames}_{h}x{w}")
    render(frames_dir, args.frames, h, w)
    out = os.path.join(args.workdir, "out")
    cmd = [sys.executable, "-m", "flow3r_jax.reconstruct", "--input", frames_dir, "--out", out, "--frames", str(args.frames),
           "--steps", str(args.steps), "--pixels", str(args.pixels), "--no_progress", "--jit_cache", "off"]
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
    rate = timing["optimise"] / max(args.steps - 1, 1)  # the first step is counted with the compilation
    fixed = wall - timing["optimise"]
    print(f"{args.frames} frames at {run['size'][0]}x{run['size'][1]} (optimisation grid), {args.steps} steps:")
    print(f"  peak resident memory of the reconstruct process: {peak_gib:.2f} GiB")
    print(f"  wall {wall:.1f} s; split: " + ", ".join(f"{k} {v:.1f}" for k, v in timing.items()))
    print(f"  optimisation {rate * 1000:.0f} ms/step -> the default 2000 steps: ~{fixed + 2000 * rate:.0f} s ({(fixed + 2000 * rate) / 60:.1f} min) end to end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
