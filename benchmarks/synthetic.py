"""Wall-clock benchmark of the synthetic-scene renderer (`data_pipelines.synthetic`).

What is measured
----------------
One clip = `generate_clip(cfg, seed)` for the issue's reference workload: 24 frames of
224 x 224 and the exact flow, covisibility and dynamic masks of every pair (i, j) with
|i - j| in {1, 2, 4, 8}, both directions (162 pairs), for a static and a dynamic room scene
(and, with ``--kind outdoor``, open ground with sky). The time is split into:

- ``build``: drawing the scene on the host (layout, camera path, and the sparse ray casts that
  set the camera speed from the flow target);
- ``frames``: ray casting and shading the 24 frames, results copied to host numpy arrays;
- ``flows``: the 162 pair kernels (reprojection + visibility rays), copied to the host.

Compilation is reported apart: ``first clip`` is the wall time of the first clip of a
configuration in the process (tracing and compiling its kernels, then rendering), and
``compile`` = first clip - median clip. Every timed run then renders a new scene (seeds 1, 2,
...; same shapes, so warm kernels), and the table shows the median over ``--repeats`` runs.
The static and dynamic configurations have different numbers of primitive slots, so each
compiles its own kernels. On a shared 2-core machine expect ~10-20% noise.

Usage::

    python benchmarks/synthetic.py                 # static + dynamic room, 5 runs each
    python benchmarks/synthetic.py --kind outdoor  # open ground and sky
    python benchmarks/synthetic.py --quick         # 64 x 80, 8 frames: a smoke test
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import numpy as np

from data_pipelines.synthetic import SceneConfig, build_scene


def machine_info() -> str:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    cpu = platform.processor() or platform.system()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    dev = jax.devices()[0]
    return (
        f"python {platform.python_version()} on {platform.machine()} ({cpu})\n"
        f"jax {jax.__version__}, device {dev.platform}, CPU cores: {os.cpu_count()} (usable: {usable}), numpy {np.__version__}"
    )


def one_clip(cfg: SceneConfig, seed: int) -> dict[str, float]:
    """Times one clip, phase by phase (each phase ends with its results on the host)."""
    t0 = time.perf_counter()
    scene = build_scene(cfg, seed)
    t1 = time.perf_counter()
    for i in range(cfg.frames):
        scene.render(i)
    t2 = time.perf_counter()
    pairs = cfg.pairs()
    for i, j in pairs:
        scene.flow(i, j)
    t3 = time.perf_counter()
    return {"build": t1 - t0, "frames": t2 - t1, "flows": t3 - t2, "total": t3 - t0, "pairs": len(pairs)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed clips per configuration (median reported)")
    parser.add_argument("--kind", choices=["room", "outdoor"], default="room")
    parser.add_argument("--quick", action="store_true", help="64 x 80, 8 frames: a smoke test")
    args = parser.parse_args(argv)

    print(machine_info())
    size, frames = ((64, 80), 8) if args.quick else ((224, 224), 24)
    rows = []
    for dynamic in (False, True):
        cfg = SceneConfig(height=size[0], width=size[1], frames=frames, dynamic=dynamic, kind=args.kind, preset="mixed", offsets=(1, 2, 4, 8))
        label = f"{args.kind} {'dynamic' if dynamic else 'static'}"
        print(f"\n[{label}] {frames} frames of {size[0]}x{size[1]}, {len(cfg.pairs())} flow pairs, {cfg.max_objects + 1} primitive slots")
        first = one_clip(cfg, 0)["total"]
        runs = [one_clip(cfg, seed) for seed in range(1, args.repeats + 1)]
        med = {k: statistics.median(r[k] for r in runs) for k in ("build", "frames", "flows", "total")}
        print(f"  first clip (compile + render) {first:6.2f} s  ->  compile ~ {first - med['total']:5.2f} s")
        print("  per run total: " + ", ".join(f"{r['total']:.2f}" for r in runs) + " s")
        rows.append((label, med, runs[0]["pairs"], frames))

    print(f"\nMedian over {args.repeats} clips (warm kernels; seconds)")
    header = f"{'scene':<16} {'build':>7} {'frames':>7} {'flows':>7} {'total':>7}   {'ms/frame':>8} {'ms/pair':>8}"
    print(header)
    print("-" * len(header))
    for label, med, pairs, frames in rows:
        print(
            f"{label:<16} {med['build']:7.2f} {med['frames']:7.2f} {med['flows']:7.2f} {med['total']:7.2f}   "
            f"{1e3 * med['frames'] / frames:8.1f} {1e3 * med['flows'] / pairs:8.1f}"
        )


if __name__ == "__main__":
    main()
