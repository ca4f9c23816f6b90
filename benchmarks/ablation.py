"""The paper's controlled experiment on the flow head at `tiny` scale, on synthetic dynamic scenes.

    python benchmarks/ablation.py [--workdir outputs/ablation] [--steps 300] [--seeds 0,1,2]
        [--variants supervised,factored,...] [--parallel 1] [--dry_run]

Data (written once into WORKDIR/data by the project's own writers, nothing downloaded):
- labeled: `--labeled` synthetic dynamic clips with exact depth, poses and flow;
- unlabeled: `--unlabeled` rendered dynamic videos whose flow comes from the CPU flow teacher
  (OpenCV DIS), not from the generator: the noisy pseudo-labels unlabeled video gives;
- unlabeled_more: `--more` times as many such videos (variant 5);
- two held-back benchmarks (`flow3r_jax.eval.synthetic`): dynamic scenes (moving objects) and
  static scenes, other seeds than any training clip.

Runs: `configs/ablation_flow_heads.py`'s sweep (6 variants x seeds) through launch.sweep's local
backend, one `launch.train` per job in WORKDIR/runs/NAME; every variant has the same budget
(`--steps` steps of global batch 8, 4 frames of 56x56, 4 flow pairs per clip, stage 2: all but
the encoder, random init). Rerunning resumes: finished jobs are skipped, interrupted ones resume
from their checkpoints, evaluations already written are reused.

Evaluation: each job's final checkpoint on both benchmarks with launch.eval's runner (π³'s
protocols; inputs 84 px wide): RRA@30, RTA@30, AUC@30 (relative poses over all frame pairs),
pointmap error ((Acc + Comp) / 2 after Umeyama + ICP), video depth AbsRel (scale & shift) and
flow EPE on consecutive pairs (the flow head's; for `projective`, which has none, the flow its
geometry induces). Printed as mean ± standard deviation over the seeds, and written to
WORKDIR/ablation.md and ablation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CONFIG = os.path.join(ROOT, "configs", "ablation_flow_heads.py")
# (task, summary key, column, higher is better)
COLUMNS = (
    ("pose_angular", "rra@30", "RRA@30", True),
    ("pose_angular", "rta@30", "RTA@30", True),
    ("pose_angular", "auc@30", "AUC@30", True),
    ("pointmap", "chamfer", "pointmap err", False),
    ("video_depth", "abs_rel", "depth AbsRel", False),
    ("flow", "head_epe", "flow EPE px", False),
)
LABELS = {
    "supervised": "1. 3D-supervised only",
    "factored": "2. + factored flow (Flow3r)",
    "tracking": "3. + tracking flow head",
    "projective": "4. + projective flow",
    "factored_more_data": "5. factored, 4x unlabeled",
    "consistency": "6. factored + DF-Net consistency",
}


def _run(*args: str) -> None:
    r = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"ablation: {' '.join(args[:1])} failed (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")


def make_data(root: str, labeled: int, unlabeled: int, more: int, bench: int, frames: int = 8, size: str = "64x84") -> dict[str, str]:
    """The datasets and benchmarks (each written once; a marker file records completion)."""
    out = {k: os.path.join(root, k) for k in ("labeled", "unlabeled", "unlabeled_more", "bench_dynamic", "bench_static")}
    common = ["--frames", str(frames), "--offsets", "1,2"]

    def once(name: str, fn) -> None:
        marker = os.path.join(root, f".{name}.done")
        if os.path.exists(marker):
            return
        t = time.time()
        fn()
        with open(marker, "w") as f:
            f.write(f"{time.time() - t:.1f}\n")
        print(f"ablation: data {name}: {time.time() - t:.0f} s", flush=True)

    once("labeled", lambda: _run("data_pipelines.make_dataset", "--synthetic", str(labeled), "--dynamic", "--seed", "0", "--size", size, "--output_dir", out["labeled"], "--overwrite", *common))

    def videos(name: str, n: int, seed: int) -> None:
        vids = os.path.join(root, f"videos_{name}")
        _run("data_pipelines.synthetic", "--out", vids, "--scenes", str(n), "--dynamic", "--frames", str(frames + 2), "--size", size, "--seed", str(seed))
        _run("data_pipelines.make_dataset", "--inputs", os.path.join(vids, "*", "video.mp4"), "--output_dir", out[name], "--overwrite", "--workers", "2", *common)

    once("unlabeled", lambda: videos("unlabeled", unlabeled, 10_000))
    # The larger set contains the smaller one's scenes (same seeds first) and adds others.
    once("unlabeled_more", lambda: videos("unlabeled_more", unlabeled * more, 10_000))
    h, w = size.split("x")
    for kind, dyn in (("dynamic", ["--dynamic"]), ("static", [])):
        once(f"bench_{kind}", lambda dyn=dyn, kind=kind: _run("flow3r_jax.eval.synthetic", "--out", out[f"bench_{kind}"], "--sequences", str(bench), "--frames", str(frames), "--size", f"{h}x{w}", "--seed", "50000" if dyn else "60000", *dyn))
    return out


def build(workdir: str, data: dict, steps: int, seeds: list[int], variants: list[str]):
    from launch.sweep import build_jobs

    fields = {
        "ablation.labeled": data["labeled"], "ablation.unlabeled": data["unlabeled"], "ablation.unlabeled_more": data["unlabeled_more"],
        "train.steps": steps, "checkpoint.every": max(steps // 4, 1), "log.every": 25, "log.progress": False,
    }
    jobs, _ = build_jobs(CONFIG, os.path.join(workdir, "runs"), global_fields=fields)
    return [j for j in jobs if j.overrides["variant"] in variants and int(j.overrides["seed"]) in seeds]


def evaluate_job(job, data: dict, workdir: str, load_width: int) -> dict:
    """{benchmark kind: {task: summary}} of the job's final checkpoint (cached in WORKDIR/eval)."""
    from flow3r_jax.eval.runner import EvalOptions, evaluate
    from flow3r_jax.models.pretrained import load_pretrained
    from flow3r_jax.train.checkpoint import find_step_dir

    step = os.path.basename(find_step_dir(job.workdir))
    out, model = {}, None
    for kind in ("dynamic", "static"):
        res_dir = os.path.join(workdir, "eval", kind)
        path = os.path.join(res_dir, job.name, "synthetic.json")
        if os.path.exists(path):
            with open(path) as f:
                rep = json.load(f)
            if rep.get("checkpoint", "").endswith(f"/{step}"):
                out[kind] = {t: r["summary"] for t, r in rep["tasks"].items()}
                continue
        if model is None:
            model = load_pretrained(os.path.join(job.workdir, "checkpoints", step), size="tiny")
        opts = EvalOptions(load_width=load_width, plots=0, progress=False)
        out[kind] = evaluate(model, ["synthetic"], data[f"bench_{kind}"], res_dir, job.name, opts, checkpoint=os.path.join(job.workdir, "checkpoints", step))["synthetic"]
    return out


def _value(summary: dict, task: str, key: str) -> float:
    s = summary.get(task, {})
    if key == "chamfer":
        return 0.5 * (s["acc"] + s["comp"]) if "acc" in s else float("nan")
    return float(s.get(key, float("nan")))


def table(results: dict, variants: list[str]) -> tuple[str, dict]:
    """Markdown tables (one per benchmark kind): mean ± std over seeds per variant."""
    lines, stats = [], {}
    for kind in ("dynamic", "static"):
        lines += [f"### held-back {kind} scenes", "", "| variant | seeds | " + " | ".join(f"{c} {'↑' if hi else '↓'}" for _, _, c, hi in COLUMNS) + " |", "|---" * (2 + len(COLUMNS)) + "|"]
        for v in variants:
            runs = [r[kind] for (var, _), r in sorted(results.items()) if var == v]
            if not runs:
                continue
            cells = []
            for task, key, col, _ in COLUMNS:
                vals = np.array([_value(r, task, key) for r in runs])
                mean, std = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan"), float(np.nanstd(vals)) if np.isfinite(vals).any() else float("nan")
                stats.setdefault(kind, {}).setdefault(v, {})[col] = {"mean": mean, "std": std, "values": vals.tolist()}
                cells.append(f"{mean:.3g} ± {std:.2g}")
            lines.append(f"| {LABELS[v]} | {len(runs)} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines), stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=os.path.join(ROOT, "outputs", "ablation"))
    ap.add_argument("--steps", type=int, default=300, help="training steps of every variant (the shared budget)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default="supervised,factored,tracking,projective,factored_more_data,consistency")
    ap.add_argument("--labeled", type=int, default=8, help="labeled synthetic clips")
    ap.add_argument("--unlabeled", type=int, default=16, help="unlabeled videos (teacher flow)")
    ap.add_argument("--more", type=int, default=4, help="factor of unlabeled videos for factored_more_data")
    ap.add_argument("--bench", type=int, default=6, help="sequences per held-back benchmark")
    ap.add_argument("--parallel", type=int, default=1, help="training jobs at a time")
    ap.add_argument("--load_width", type=int, default=84, help="evaluation input width")
    ap.add_argument("--dry_run", action="store_true", help="list the jobs and exit")
    a = ap.parse_args()

    from configs.ablation_flow_heads import VARIANTS

    variants = [v for v in a.variants.split(",") if v]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        ap.error(f"unknown variants {bad}; choose from {VARIANTS}")
    seeds = [int(s) for s in a.seeds.split(",") if s]
    if a.steps < 1 or not seeds:
        ap.error("--steps must be >= 1 and --seeds non-empty")
    workdir = os.path.abspath(a.workdir)
    names = {k: os.path.join(workdir, "data", k) for k in ("labeled", "unlabeled", "unlabeled_more", "bench_dynamic", "bench_static")}
    jobs = build(workdir, names, a.steps, seeds, variants)
    if a.dry_run:
        for j in jobs:
            print(j.name, " ".join(j.command))
        return 0

    from launch.sweep import prepare, run_local

    t0 = time.time()
    data = make_data(os.path.join(workdir, "data"), a.labeled, a.unlabeled, a.more, a.bench)
    prepare(jobs, os.path.join(workdir, "runs"), CONFIG)
    print(f"ablation: {len(jobs)} training jobs of {a.steps} steps in {workdir}/runs", flush=True)
    failed = run_local(jobs, a.parallel)
    results = {}
    for j in jobs:
        try:
            results[(j.overrides["variant"], int(j.overrides["seed"]))] = evaluate_job(j, data, workdir, a.load_width)
        except FileNotFoundError as e:
            print(f"ablation: {j.name}: no checkpoint to evaluate ({e})", file=sys.stderr)
    text, stats = table(results, variants)
    header = f"## Flow-head ablation (tiny, {a.steps} steps, seeds {a.seeds}; {a.labeled} labeled clips, {a.unlabeled} / {a.unlabeled * a.more} unlabeled videos)\n\n"
    print("\n" + header + text)
    with open(os.path.join(workdir, "ablation.md"), "w") as f:
        f.write(header + text)
    with open(os.path.join(workdir, "ablation.json"), "w") as f:
        json.dump({"args": vars(a), "stats": stats, "runs": {f"{v},seed={s}": r for (v, s), r in results.items()}, "seconds": time.time() - t0}, f, indent=1)
    print(f"ablation: {time.time() - t0:.0f} s; {workdir}/ablation.md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
