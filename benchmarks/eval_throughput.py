"""Evaluation throughput: sequences per second of the `tiny` model on the synthetic benchmark,
and how the time splits between loading (decode + π³ resize), the model and the metrics.

    python benchmarks/eval_throughput.py [--sequences 8] [--frames 8] [--size 112x154] [--load_width 224] [--tasks ...]

The model time of the first batch of each input shape includes its compilation; a warm-up pass
over one sequence per task runs first so that the timed pass measures steady state. Figures are
printed, never asserted; the metrics should not dominate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sequences", type=int, default=8)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", default="112x154")
    ap.add_argument("--load_width", type=int, default=224, help="model input width (π³ uses 512 / 518)")
    ap.add_argument("--tasks", default="video_depth,pose_trajectory,pose_angular,pointmap,flow")
    a = ap.parse_args()

    import jax
    import numpy as np

    from flow3r_jax.eval.runner import EvalOptions, evaluate
    from flow3r_jax.eval.synthetic import write_synthetic_benchmark
    from flow3r_jax.models.config import get_model_config
    from flow3r_jax.models.pretrained import model_from_params
    from flow3r_jax.train.state import ParamLayout

    H, W = (int(v) for v in a.size.split("x"))
    root = tempfile.mkdtemp(prefix="flow3r_evalbench_")
    t = time.time()
    write_synthetic_benchmark(os.path.join(root, "synthetic"), a.sequences, a.frames, (H, W))
    print(f"benchmark data: {a.sequences} sequences x {a.frames} frames of {H}x{W} in {time.time() - t:.1f} s")
    layout = ParamLayout.of(get_model_config("tiny"))
    model = model_from_params(layout.cfg, {tuple(k.split("/")): np.asarray(v) for k, v in jax.jit(layout.init_fn(0))().items()})
    tasks = tuple(a.tasks.split(","))
    opts = EvalOptions(tasks=tasks, plots=0, progress=False, load_width=a.load_width)
    evaluate(model, ["synthetic"], root, os.path.join(root, "warm"), "warm", EvalOptions(tasks=tasks, plots=0, progress=False, load_width=a.load_width, max_sequences=1))
    t = time.time()
    evaluate(model, ["synthetic"], root, os.path.join(root, "out"), "timed", opts)
    wall = time.time() - t
    with open(os.path.join(root, "out", "timed", "synthetic.json")) as f:
        rep = json.load(f)
    print(f"{jax.device_count()} device(s) ({jax.devices()[0].platform}), tiny, input width {a.load_width}")
    print(f"{'task':16s} {'seq/s':>7s} {'load s':>7s} {'model s':>8s} {'metrics s':>10s}")
    for task, r in rep["tasks"].items():
        tm = r["timing"]
        total = sum(tm.values())
        print(f"{task:16s} {a.sequences / total:7.2f} {tm['load_s']:7.2f} {tm['model_s']:8.2f} {tm['metrics_s']:10.2f}")
    print(f"all tasks: {wall:.1f} s wall for {a.sequences} sequences")


if __name__ == "__main__":
    main()
