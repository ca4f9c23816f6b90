"""The quickstart's report folder (`launch.quickstart`, stage `report`): built only from what the
earlier stages wrote to disk (the runs' metrics.jsonl, launch.eval's JSON, reconstruct's
cameras.json), so it can be rebuilt at any time.

    OUT/report/summary.md          metrics of step 0 against the final checkpoint, the trainer's
                                   held-back metrics, the reconstructions' errors
    OUT/report/metrics.json        the same figures, machine-readable
    OUT/report/loss_curves.png     training losses and held-back metrics over both stages
    OUT/report/trajectory_*.png    reconstructed cameras against the exact ones
    OUT/report/eval_plots/         launch.eval's plots of the final checkpoint
    OUT/report/points.ply          the refined reconstruction's point cloud
    OUT/report/tensorboard/        links to both runs' TensorBoard event files
"""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np

from flow3r_jax.eval.runner import SUMMARY_COLUMNS
from flow3r_jax.train.metrics import read_jsonl

__all__ = ["write_report", "eval_rows", "reconstruction_errors"]

# Shown in the report's curves: (metric, title)
_CURVES = (
    ("loss/total", "total loss"),
    ("loss/flow", "flow loss"),
    ("loss/point", "point loss"),
    ("loss/camera", "camera loss"),
    ("eval/flow_epe", "held-back flow EPE (px)"),
    ("eval/rot_err_deg", "held-back rotation error (deg)"),
)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def eval_rows(eval_dir: str, tags: tuple[str, ...] = ("step_0", "final"), bench: str = "synthetic") -> list[dict]:
    """[{task, metric, tag: value...}] from launch.eval's OUT/<tag>/<bench>.json, in
    SUMMARY_COLUMNS order."""
    reports = {}
    for tag in tags:
        path = os.path.join(eval_dir, tag, f"{bench}.json")
        with open(path) as f:
            reports[tag] = json.load(f)["tasks"]
    rows = []
    for task, cols in SUMMARY_COLUMNS.items():
        if not all(task in reports[t] for t in tags):
            continue
        for key, header in cols:
            vals = {t: reports[t][task]["summary"].get(key) for t in tags}
            if any(v is not None for v in vals.values()):
                rows.append({"task": task, "metric": header, **vals})
    return rows


def reconstruction_errors(cameras_json: str, gt_npz: str) -> dict:
    """Pose and focal errors of a reconstruct output against the synthetic clip's exact cameras."""
    from flow3r_jax.flowmap.metrics import focal_error, trajectory_errors

    with open(cameras_json) as f:
        doc = json.load(f)
    poses = np.array([fr["camera_to_world"] for fr in doc["frames"]], np.float64)
    gt = np.load(gt_npz)
    gt_poses = gt["poses"][: len(poses)]
    err = trajectory_errors(poses, gt_poses)
    return {
        "frames": len(poses),
        "ate_rel": err["ate_rel"],
        "rot_err_deg": err["rot_err_deg"],
        "rpe_rot_deg": err["rpe_rot_deg"],
        "focal_err": focal_error(doc["frames"][0]["fx"], float(gt["intrinsics"][0, 0, 0])),
        "poses": poses,
        "gt_poses": gt_poses,
    }


def _curves(runs: dict[str, str], path: str) -> dict:
    """loss_curves.png over both stages (stage 2's steps continue stage 1's); returns the first
    and last held-back metrics of each run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = {name: read_jsonl(os.path.join(d, "metrics.jsonl")) for name, d in runs.items()}
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    offset, held = 0, {}
    for name, rows in logs.items():
        last = max((r["step"] for r in rows), default=0)
        for ax, (key, title) in zip(axes.flat, _CURVES):
            pts = [(r["step"] + offset, r[key]) for r in rows if key in r and math.isfinite(r[key])]
            if pts and any(v != 0.0 for _, v in pts):  # (a term the run does not have logs 0)
                x, y = zip(*pts)
                ax.plot(x, y, "o-" if key.startswith("eval/") else "-", ms=3, label=name)
            ax.set_title(title)
            ax.set_xlabel("step (both stages)")
        ev = [r for r in rows if any(k.startswith("eval/") for k in r)]
        if ev:
            held[name] = {"first": {k: v for k, v in ev[0].items() if k.startswith("eval/") or k == "step"}, "last": {k: v for k, v in ev[-1].items() if k.startswith("eval/") or k == "step"}}
        offset += last
    for ax in axes.flat:
        if ax.lines:
            ax.legend(fontsize=8)
            if ax.get_title().endswith("loss") and all(min(l.get_ydata()) > 0 for l in ax.lines):
                ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return held


def _link(target: str, link: str) -> None:
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(os.path.relpath(target, os.path.dirname(link)), link)


def write_report(paths: dict, video: str) -> dict:
    """Writes OUT/report/ (module docstring); returns {"outputs": {name: path}, "metrics": ...}."""
    from flow3r_jax.flowmap.plot import plot_trajectory

    rep = paths["report"]
    os.makedirs(rep, exist_ok=True)
    outputs = {"summary": os.path.join(rep, "summary.md")}

    rows = eval_rows(paths["eval"])
    runs = {"stage 1": paths["stage1"], "stage 2": paths["stage2"]}
    outputs["loss curves"] = os.path.join(rep, "loss_curves.png")
    held = _curves(runs, outputs["loss curves"])

    gt_npz = os.path.join(os.path.dirname(video), "gt.npz")
    recon = {}
    for kind in ("feedforward", "refined"):
        d = os.path.join(paths["recon"], kind)
        e = reconstruction_errors(os.path.join(d, "cameras.json"), gt_npz)
        png = os.path.join(rep, f"trajectory_{kind}.png")
        plot_trajectory(png, e.pop("poses"), e.pop("gt_poses"), title=f"reconstruct ({kind}) against the exact cameras")
        outputs[f"trajectory ({kind})"] = png
        recon[kind] = e

    plots = os.path.join(paths["eval"], "final", "synthetic", "plots")
    if os.path.isdir(plots):
        dst = os.path.join(rep, "eval_plots")
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(plots, dst)
        outputs["eval plots"] = dst
    outputs["point cloud"] = os.path.join(rep, "points.ply")
    shutil.copyfile(os.path.join(paths["recon"], "refined", "points.ply"), outputs["point cloud"])
    outputs["COLMAP model"] = os.path.join(paths["recon"], "refined", "sparse", "0")
    tb = os.path.join(rep, "tensorboard")
    os.makedirs(tb, exist_ok=True)
    for name, d in (("stage1", paths["stage1"]), ("stage2", paths["stage2"])):
        _link(os.path.join(d, "tensorboard"), os.path.join(tb, name))
    outputs["tensorboard"] = tb
    outputs["eval results"] = os.path.join(paths["eval"], "results.md")
    outputs["checkpoints"] = os.path.join(paths["stage2"], "checkpoints")

    lines = [
        "# flow3r_jax quickstart", "",
        "Everything here was made on this machine from synthetic data: labeled clips with exact geometry, unlabeled "
        "videos with the CPU flow teacher's flow, `tiny` trained in two stages on 8 fake CPU devices (data x fsdp), "
        "then evaluated and used by `reconstruct` on held-back scenes. The figures show that the loop works; "
        "a model this small trained for minutes is not a useful model.", "",
        "## Held-back benchmark (`launch.eval`, π³'s protocols): the initial model against the final checkpoint", "",
        "| task | metric | step 0 | final |", "|---|---|---|---|",
    ]
    lines += [f"| {r['task']} | {r['metric']} | {_fmt(r['step_0'])} | {_fmt(r['final'])} |" for r in rows]
    lines += ["", "## Held-back clips during training (the trainer's eval hook)", "", "| run | step | flow EPE px | < 3 px | rotation error deg | point loss |", "|---|---|---|---|---|---|"]
    for name, h in held.items():
        for which in ("first", "last"):
            m = h[which]
            lines.append(f"| {name} | {m['step']} | {_fmt(m.get('eval/flow_epe'))} | {_fmt(m.get('eval/flow_3px'))} | {_fmt(m.get('eval/rot_err_deg'))} | {_fmt(m.get('eval/point_loss'))} |")
    lines += ["", f"## `reconstruct` of a held-back video ({os.path.relpath(video, paths['out'])}) against its exact cameras", "",
              "| mode | frames | ATE / trajectory size | rotation error deg | relative rotation error deg (consecutive) | focal error |", "|---|---|---|---|---|---|"]
    for kind, e in recon.items():
        lines.append(f"| {kind} | {e['frames']} | {_fmt(e['ate_rel'])} | {_fmt(e['rot_err_deg'])} | {_fmt(e['rpe_rot_deg'])} | {_fmt(e['focal_err'])} |")
    lines += ["", "## Outputs", ""] + [f"- {k}: `{os.path.relpath(v, rep)}`" for k, v in outputs.items() if k != "summary"]
    lines += ["", f"TensorBoard: `tensorboard --logdir {tb}`", ""]
    with open(outputs["summary"], "w") as f:
        f.write("\n".join(lines))
    metrics = {"eval": rows, "heldout": held, "reconstruct": recon}
    with open(os.path.join(rep, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1, default=float)
    outputs["metrics"] = os.path.join(rep, "metrics.json")
    return {"outputs": outputs, "metrics": metrics}
