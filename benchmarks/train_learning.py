"""Learning curve of `tiny` through the real training loop on data the project makes itself.

    python benchmarks/train_learning.py [--stage1 100] [--stage2 300] [--every 50] [--workdir DIR] [--json OUT.json]

Data (written by `data_pipelines`, as the tests do): 12 synthetic labeled clips with exact
flow, 6 unlabeled clips of rendered videos with the CPU teacher's flow, 4 held-back synthetic
clips (other seeds) for the metrics; 8 frames of 64x84 each, flow offsets 1 and 2.

Runs: stage 1 (flow head only, everything else frozen) on the unlabeled clips alone, then
stage 2 (everything but the encoder) from its checkpoint on labeled:2 + unlabeled:1. Both from
a random init; global batch 4, 3 frames and 3 flow pairs per sample, 56x56. The eval hook
(`flow3r_jax.train.evaluate:heldout_metrics`) runs every `--every` steps on the held-back
clips: flow end-point error (pixels, covisible pixels), share under 3 px, mean relative
rotation error over ordered frame pairs (degrees), point loss. Figures are printed, never
asserted; also step time and XLA's FLOPs per step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def make_data(root: str) -> dict[str, str]:
    def run(*args):
        subprocess.run([sys.executable, "-m", *args], cwd=ROOT, check=True, capture_output=True)

    out = {k: os.path.join(root, k) for k in ("labeled", "unlabeled", "heldout")}
    common = ["--frames", "8", "--size", "64x84", "--offsets", "1,2"]
    run("data_pipelines.make_dataset", "--synthetic", "12", "--output_dir", out["labeled"], *common)
    run("data_pipelines.make_dataset", "--synthetic", "4", "--seed", "100", "--output_dir", out["heldout"], *common)
    run("data_pipelines.synthetic", "--out", os.path.join(root, "videos"), "--scenes", "6", "--frames", "10", "--size", "64x84", "--seed", "5")
    run("data_pipelines.make_dataset", "--inputs", os.path.join(root, "videos", "*", "video.mp4"), "--output_dir", out["unlabeled"], "--frames", "8", "--offsets", "1,2")
    return out


def config(stage: int, sources: str, heldout: str, steps: int, every: int, **kw):
    from configs.flow3r import get_config

    c = get_config(f"size=tiny,stage={stage}")
    c.data.sources = sources
    c.data.global_batch = 4
    c.data.frames = 3
    c.data.pairs = 3
    c.train.steps = steps
    c.log.every = 10
    c.log.progress = False
    c.checkpoint.every = steps
    c.eval.fn = "flow3r_jax.train.evaluate:heldout_metrics"
    c.eval.every = every
    c.eval.sources = heldout
    c.eval.batches = 4
    for k, v in kw.items():
        node, leaf = k.split(".")
        c[node][leaf] = v
    return c


def show(name: str, result, seconds: float) -> list[dict]:
    rows = []
    print(f"\n{name}: {seconds:.0f} s")
    print(f"{'step':>6} {'flow EPE px':>12} {'< 3 px':>8} {'rot err deg':>12} {'point loss':>11}")
    for step in sorted(result["eval"]):
        e = result["eval"][step]
        rows.append({"step": step, **e})
        print(f"{step:6d} {e['eval/flow_epe']:12.3f} {e['eval/flow_3px']:8.3f} {e.get('eval/rot_err_deg', float('nan')):12.2f} {e.get('eval/point_loss', float('nan')):11.4f}")
    m = result["metrics"]
    print(f"last step: {m.get('perf/step_time_s', float('nan')):.3f} s, {m.get('perf/samples_per_s', float('nan')):.1f} samples/s, XLA FLOPs/step/device {m.get('perf/flops_per_step_per_device', float('nan')):.3g}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage1", type=int, default=100)
    ap.add_argument("--stage2", type=int, default=300)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--workdir", default=None, help="keep data and runs here (default: a temporary directory)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    from flow3r_jax.train.loop import train

    root = a.workdir or tempfile.mkdtemp(prefix="flow3r_learning_")
    os.makedirs(root, exist_ok=True)
    t = time.time()
    data = make_data(os.path.join(root, "data"))
    print(f"data: {time.time() - t:.0f} s in {root}")

    t = time.time()
    r1 = train(config(1, data["unlabeled"], data["heldout"], a.stage1, a.every), os.path.join(root, "stage1"))
    rows1 = show("stage 1: flow head only, unlabeled clips only", r1, time.time() - t)
    t = time.time()
    c2 = config(2, f"{data['labeled']}:2,{data['unlabeled']}:1", data["heldout"], a.stage2, a.every, **{"init.kind": "checkpoint", "init.path": os.path.join(root, "stage1")})
    r2 = train(c2, os.path.join(root, "stage2"))
    rows2 = show("stage 2: all but the encoder, labeled:2 + unlabeled:1, from stage 1", r2, time.time() - t)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"stage1": rows1, "stage2": rows2}, f, indent=2)


if __name__ == "__main__":
    main()
