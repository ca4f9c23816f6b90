"""Evaluating a checkpoint (or predictions on disk) on benchmarks, π³'s protocols (SPEC §5).

Per task, what is run and how it is scored (π³ `yyfz/Pi3` branch `evaluation`):

- video_depth: all frames of a sequence in one forward; predicted z-depth resized to the ground
  truth's size with bicubic interpolation (`videodepth/eval.py`, cv2.INTER_CUBIC); per-sequence
  scale & shift alignment (`align="scale_shift"`; `--depth_align median` for the median-scale
  variant); a benchmark's figures are the sequences' averages weighted by their valid pixels.
- mono_depth: every frame alone; per-frame median scale; valid-pixel weighted average.
- pose_trajectory: all frames (stride 1) in one forward; ATE / RPE-trans / RPE-rot after Sim(3)
  alignment of the camera centres; plain mean over sequences (`relpose/eval_dist.py`).
- pose_angular: the protocol's frames; relative rotation and translation-direction errors of
  every frame pair, pooled over all sequences, then RRA / RTA @ 5 / 15 / 30 and AUC @ 30 in
  percent (`relpose/eval_angle.py`).
- pointmap: keyframes in one forward (load width 518); global points resized to the ground
  truth's grid (antialiased bilinear), Umeyama Sim(3) on the valid pixels, ICP (0.1), then
  accuracy / completeness / normal consistency; plain mean over sequences (`mv_recon/eval.py`).
- flow (where the benchmark has ground-truth flow): the pairs of the ground truth; end-point
  error of the flow head and of the flow induced by the predicted geometry, pooled over valid
  pixels; predictions resized to the ground truth's grid (vectors scaled with the grid).

Results: `OUT/<tag>/<benchmark>.json` (per sequence and summary, the frame lists, timings),
`OUT/<tag>/<benchmark>/frames/<seq>.txt` (the frames used, for `reconstruct --frames-from`),
plots in `OUT/<tag>/<benchmark>/plots/`, and `OUT/results.md`, a table across every tag and
benchmark in OUT (rebuilt after each evaluation).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Iterable

import numpy as np

from flow3r_jax.eval.sequence import EvalSequence

log = logging.getLogger("flow3r_jax.eval")

__all__ = ["EvalOptions", "evaluate", "evaluate_predictions", "write_table", "SUMMARY_COLUMNS"]


@dataclasses.dataclass
class EvalOptions:
    depth_align: str = "scale_shift"  # video depth: "scale_shift" (π³ default), "l1_scale", "median"
    # Monocular depth: π³'s monodepth config says median-scale but its code selects the L1
    # (IRLS) scale (`align_with_scale`); its published numbers use that.
    mono_align: str = "l1_scale"
    load_width: int | None = None  # override π³'s input widths (512 / 518): quick looks and tests only
    plots: int = 2  # sequences plotted per benchmark and task (0: none)
    progress: bool = True
    max_sequences: int | None = None  # evaluate only the first N sequences of each benchmark (smoke runs)
    tasks: tuple[str, ...] | None = None  # restrict to these tasks (default: every task a benchmark supports)


# ---------------------------------------------------------------------------------- helpers


def _resize_maps(a: np.ndarray, hw: tuple[int, int], interpolation: str) -> np.ndarray:
    """(N, h, w[, C]) float maps -> (N, H, W[, C]) with OpenCV (cubic) or antialiased bilinear."""
    import cv2

    H, W = hw
    if a.shape[1:3] == (H, W):
        return a.astype(np.float32)
    if interpolation == "cubic":
        return np.stack([cv2.resize(np.asarray(m, np.float32), (W, H), interpolation=cv2.INTER_CUBIC) for m in a])
    import jax
    import jax.numpy as jnp

    shape = (a.shape[0], H, W) + a.shape[3:]
    return np.asarray(jax.image.resize(jnp.asarray(a, jnp.float32), shape, "linear", antialias=True))


def _resize_flow(flow: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(P, h, w, 2) pixel flow -> (P, H, W, 2) on the ground truth's grid (vectors scaled)."""
    h, w = flow.shape[1:3]
    out = _resize_maps(flow, hw, "linear")
    return out * np.asarray([hw[1] / w, hw[0] / h], np.float32)


def unproject(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """World points (N, H, W, 3) of z-depth maps, integer pixel-centre intrinsics (sequence.py)."""
    N, H, W = depth.shape
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    x = (u[None] - K[:, 0, 2, None, None]) / K[:, 0, 0, None, None] * depth
    y = (v[None] - K[:, 1, 2, None, None]) / K[:, 1, 1, None, None] * depth
    cam = np.stack([x, y, depth.astype(np.float64)], -1)
    return np.einsum("nij,nhwj->nhwi", c2w[:, :3, :3], cam) + c2w[:, None, None, :3, 3]


def _mean(rows: list[dict], weights: list[float] | None = None) -> dict:
    keys = [k for k in rows[0] if isinstance(rows[0][k], (int, float)) and k != "valid_pixels"]
    w = None if weights is None else np.asarray(weights, np.float64)
    return {k: float(np.average([r[k] for r in rows], weights=w)) for k in keys}


# ---------------------------------------------------------------------------------- scoring


def score_sequence(task: str, seq: EvalSequence, pred, options: EvalOptions, gt_depth=None) -> dict:
    """Metrics of one sequence's prediction (a `predict.SequencePrediction` or the same fields)."""
    from flow3r_jax.eval import metrics as M

    if task in ("video_depth", "mono_depth"):
        gt = gt_depth if gt_depth is not None else seq.load_depths()
        p = _resize_maps(pred.depth, gt.shape[1:3], "cubic")
        covered = getattr(pred, "depth_covered", None)
        if covered is not None:  # pixels the prediction's grid cropped away are not scored
            import cv2

            keep = cv2.resize(covered.astype(np.uint8), gt.shape[1:3][::-1], interpolation=cv2.INTER_NEAREST) > 0
            gt = np.where(keep[None], gt, 0)
        align = options.depth_align if task == "video_depth" else options.mono_align
        return M.depth_metrics(p, gt, align=align, **depth_protocol(seq))
    if task == "pose_trajectory":
        return M.trajectory_metrics(pred.poses, seq.poses)
    if task == "pose_angular":
        r, t = M.relative_pose_errors(pred.poses, seq.poses)
        return {"rot_err_deg": float(np.mean(r)), "trans_err_deg": float(np.mean(t)), "_r": r, "_t": t}
    if task == "pointmap":
        gt = gt_depth if gt_depth is not None else seq.load_depths()
        valid = gt > 0
        if seq.max_depth is not None:
            valid &= gt < seq.max_depth
        gt_pts = unproject(gt, seq.intrinsics, seq.poses)
        p = _resize_maps(pred.points, gt.shape[1:3], "linear")
        return M.pointmap_metrics(p[valid], gt_pts[valid])
    if task == "flow":
        gt = seq.load_flows()
        pairs, flow, valid = gt
        res = {}
        for name, f in (("head", pred.flow), ("induced", pred.induced_flow)):
            if f is None:
                continue
            m = M.flow_metrics(_resize_flow(f, flow.shape[1:3]), flow, valid)
            res.update({f"{name}_{k}": v for k, v in m.items()})
        return res
    raise ValueError(f"unknown task {task!r}")


def depth_protocol(seq: EvalSequence) -> dict:
    """`depth_metrics` keywords of a sequence's benchmark (π³'s EVAL_DEPTH_METADATA: caps,
    Sintel's clip of the aligned prediction), else the sequence's own `max_depth`."""
    from flow3r_jax.eval import metrics as M

    kw = dict(M.DEPTH_PROTOCOLS.get(seq.benchmark, {}))
    kw.setdefault("max_depth", seq.max_depth)
    return kw


def summarize(task: str, per_seq: dict[str, dict]) -> dict:
    """A benchmark's figures for `task` from its sequences' metrics (π³'s aggregation)."""
    from flow3r_jax.eval import metrics as M

    rows = list(per_seq.values())
    if not rows:
        return {}
    if task in ("video_depth", "mono_depth"):
        return {**_mean(rows, [r["valid_pixels"] for r in rows]), "valid_pixels": int(sum(r["valid_pixels"] for r in rows))}
    if task == "pose_angular":
        r = np.concatenate([np.asarray(x["_r"]) for x in rows])
        t = np.concatenate([np.asarray(x["_t"]) for x in rows])
        return {**M.angular_pose_metrics(r, t), "pairs": int(len(r))}
    if task == "flow":  # Flow3r's test mode: mean over pairs (each pair's mean over its pixels)
        out = {}
        for name in ("head", "induced"):
            n = [x.get(f"{name}_pairs", 0) for x in rows]
            if sum(n):
                keys = [k for k in rows[0] if k.startswith(name + "_") and k not in (f"{name}_pairs", f"{name}_count")]
                out.update({k: float(np.average([x[k] for x in rows], weights=n)) for k in keys})
                out[f"{name}_pairs"] = int(sum(n))
        return out
    return _mean(rows)


# ---------------------------------------------------------------------------------- running


def _task_sequences(bench: str, data_root: str, task: str, options: EvalOptions) -> list[EvalSequence]:
    from flow3r_jax.eval.benchmarks import load_benchmark

    seqs = load_benchmark(bench, benchmark_root(data_root, bench), task)
    if options.max_sequences is not None:
        seqs = seqs[: options.max_sequences]
    if task == "mono_depth":  # every frame alone
        seqs = [dataclasses.replace(s.select([k]), name=f"{s.name}/{s.frame_ids[k]}") for s in seqs for k in range(len(s))]
    return seqs


def benchmark_root(data_root: str, bench: str) -> str:
    """`data_root/<benchmark>` when that folder exists (several benchmarks under one root), else
    `data_root` itself (the benchmark's own directory)."""
    sub = os.path.join(data_root, bench)
    return sub if os.path.isdir(sub) else data_root


def _tasks_of(bench: str, options: EvalOptions) -> list[str]:
    from flow3r_jax.eval.benchmarks import BENCHMARKS

    spec = BENCHMARKS[bench]
    tasks = [t for t in spec.tasks if options.tasks is None or t in options.tasks]
    return tasks


def check_benchmarks(benchmarks: Iterable[str], data_root: str, options: EvalOptions) -> dict[tuple[str, str], list[EvalSequence]]:
    """Loads (lists and checks) every benchmark / task before any model work starts."""
    from flow3r_jax.eval.benchmarks import BENCHMARKS, BenchmarkError

    out = {}
    for b in benchmarks:
        if b not in BENCHMARKS:
            raise BenchmarkError(f"unknown benchmark {b!r}; known: {', '.join(sorted(BENCHMARKS))}")
        tasks = _tasks_of(b, options)
        if not tasks:
            raise BenchmarkError(f"benchmark {b!r} has none of the tasks {options.tasks} (it has {BENCHMARKS[b].tasks})")
        for t in tasks:
            seqs = _task_sequences(b, data_root, t, options)
            if t == "flow":
                seqs = [s for s in seqs if s._load_flow is not None]
                if not seqs:
                    continue
            out[(b, t)] = seqs
    return out


def _progress(total: int, desc: str, enabled: bool):
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled or not sys.stderr.isatty(), leave=False)


def evaluate(model, benchmarks: list[str], data_root: str, out_dir: str, tag: str, options: EvalOptions | None = None, checkpoint: str | None = None, work: dict | None = None) -> dict:
    """Runs `model` on the benchmarks and writes the results (see the module docstring).
    Returns {benchmark: {task: summary}}."""
    from flow3r_jax.eval.predict import LOAD_WIDTH, SequencePredictor, pi3_resize

    options = options or EvalOptions()
    work = work if work is not None else check_benchmarks(benchmarks, data_root, options)
    predictor = SequencePredictor(model)
    results: dict[str, dict] = {}
    for bench in benchmarks:
        report = {"benchmark": bench, "tag": tag, "checkpoint": checkpoint, "data_root": os.path.abspath(data_root), "tasks": {}, "frames": {}}
        t_bench = time.perf_counter()
        for task in [t for (b, t) in work if b == bench]:
            seqs = work[(bench, task)]
            per_seq, timing = {}, {"load_s": 0.0, "model_s": 0.0, "metrics_s": 0.0}
            bar = _progress(len(seqs), f"{tag} {bench} {task}", options.progress)
            # Same-shape sequences run together, one per device.
            groups: dict[tuple, list[tuple[EvalSequence, np.ndarray, object]]] = {}

            def flush(key):
                batch = groups.pop(key)
                pairs = key[1]
                t = time.perf_counter()
                preds = predictor([x for _, x, _ in batch], None if pairs is None else np.asarray(pairs))
                timing["model_s"] += time.perf_counter() - t
                for (seq, _, gt), pred in zip(batch, preds):
                    t = time.perf_counter()
                    per_seq[seq.name] = score_sequence(task, seq, pred, options, gt_depth=gt)
                    timing["metrics_s"] += time.perf_counter() - t
                    if len(per_seq) <= options.plots:
                        _plot(task, seq, pred, os.path.join(out_dir, tag, bench, "plots"), gt, options)
                    bar.update(1)

            for seq in seqs:
                t = time.perf_counter()
                images = pi3_resize(seq.load_images(), options.load_width or LOAD_WIDTH[task], model.cfg.patch_size)
                gt = seq.load_depths() if task in ("video_depth", "mono_depth", "pointmap") else None
                pairs = None
                if task == "flow":
                    pairs = tuple(map(tuple, seq.load_flows()[0].tolist()))
                timing["load_s"] += time.perf_counter() - t
                key = (images.shape, pairs)
                groups.setdefault(key, []).append((seq, images, gt))
                if len(groups[key]) == predictor.batch_size:
                    flush(key)
                report["frames"][seq.name] = list(seq.frame_ids)
            for key in list(groups):
                flush(key)
            bar.close()
            summary = summarize(task, per_seq)
            report["tasks"][task] = {
                "summary": summary,
                "sequences": {k: {m: v for m, v in r.items() if not m.startswith("_")} for k, r in per_seq.items()},
                "timing": timing,
            }
            log.info("%s %s %s: %s", tag, bench, task, ", ".join(f"{k}={v:.4g}" for k, v in summary.items() if isinstance(v, float)))
        report["seconds"] = time.perf_counter() - t_bench
        _write_report(out_dir, tag, bench, report)
        results[bench] = {t: r["summary"] for t, r in report["tasks"].items()}
    write_table(out_dir)
    return results


def _write_report(out_dir: str, tag: str, bench: str, report: dict) -> None:
    d = os.path.join(out_dir, tag)
    os.makedirs(os.path.join(d, bench, "frames"), exist_ok=True)
    for name, ids in report["frames"].items():
        with open(os.path.join(d, bench, "frames", name.replace("/", "_") + ".txt"), "w") as f:
            f.write("\n".join(map(str, ids)) + "\n")
    tmp = os.path.join(d, f".{bench}.json.tmp")
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1, default=_json_default)
    os.replace(tmp, os.path.join(d, f"{bench}.json"))  # a result file is complete or absent


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


# ---------------------------------------------------------------------------------- predictions on disk


@dataclasses.dataclass
class _DiskPrediction:
    poses: np.ndarray
    depth: np.ndarray | None
    points: np.ndarray | None = None
    flow: np.ndarray | None = None
    induced_flow: np.ndarray | None = None
    depth_covered: np.ndarray | None = None  # (H, W) bool: image pixels the depth grid covers


def read_prediction(pred_dir: str, seq: EvalSequence) -> _DiskPrediction:
    """A method's outputs for `seq` in the formats `reconstruct` writes: `cameras.json` (or a
    COLMAP model in `sparse/0`) and optionally `depth.npz`; frames matched by image name."""
    from flow3r_jax.eval.benchmarks import BenchmarkError

    names = [os.path.basename(p) for p in seq.image_paths]
    stems = [os.path.splitext(n)[0] for n in names]
    cams = os.path.join(pred_dir, "cameras.json")
    if os.path.isfile(cams):
        with open(cams) as f:
            frames = json.load(f)["frames"]
        by = {fr["image_name"]: np.asarray(fr["camera_to_world"], np.float64) for fr in frames}
    elif os.path.isdir(os.path.join(pred_dir, "sparse", "0")):
        from flow3r_jax.export.formats import read_colmap_model

        model = read_colmap_model(os.path.join(pred_dir, "sparse", "0"))
        by = dict(zip(model.names, model.poses))
    else:
        raise BenchmarkError(f"{pred_dir}: no cameras.json or sparse/0 COLMAP model for sequence {seq.name}")
    by.update({os.path.splitext(k)[0]: v for k, v in list(by.items())})
    missing = [n for n, s in zip(names, stems) if n not in by and s not in by]
    if missing:
        raise BenchmarkError(f"{pred_dir}: no pose for {len(missing)} of the sequence's {len(names)} frames, e.g. {missing[:3]} (use the frame list in the results' frames/ folder with reconstruct --frames-from)")
    poses = np.stack([by.get(n, by.get(s)) for n, s in zip(names, stems)])
    depth = None
    dfile = os.path.join(pred_dir, "depth.npz")
    if os.path.isfile(dfile):
        with np.load(dfile) as z:
            dn = [os.path.splitext(str(n))[0] for n in z["names"]]
            where = {n: k for k, n in enumerate(dn)}
            if all(s in where for s in stems):
                depth = np.stack([z["depth"][where[s]] for s in stems])
            if depth is not None and "scale" in z:  # a cropped grid (reconstruct): back to the image
                from flow3r_jax.data.frames import ModelGrid, grid_to_input

                grid = ModelGrid(tuple(int(v) for v in z["input_size"]), tuple(depth.shape[1:3]), float(z["scale"]), tuple(float(v) for v in z["offset"]))
                return _DiskPrediction(poses=poses, depth=grid_to_input(depth, grid), depth_covered=grid.covered())
    return _DiskPrediction(poses=poses, depth=depth)


def evaluate_predictions(pred_root: str, benchmarks: list[str], data_root: str, out_dir: str, tag: str, options: EvalOptions | None = None) -> dict:
    """Scores predictions already on disk: `pred_root/<benchmark>/<sequence>/` holds what
    `reconstruct` writes for that sequence (cameras.json or sparse/0, depth.npz). Tasks without
    the needed output (depth, points, flow) are skipped with a warning."""
    from flow3r_jax.eval.benchmarks import BenchmarkError

    options = options or EvalOptions()
    work = check_benchmarks(benchmarks, data_root, options)
    results = {}
    for bench in benchmarks:
        report = {"benchmark": bench, "tag": tag, "predictions": os.path.abspath(pred_root), "data_root": os.path.abspath(data_root), "tasks": {}, "frames": {}}
        for task in [t for (b, t) in work if b == bench]:
            if task in ("pointmap", "flow", "mono_depth"):
                log.warning("%s: predictions on disk carry no %s; skipped", bench, task)
                continue
            per_seq = {}
            for seq in work[(bench, task)]:
                d = os.path.join(pred_root, bench, seq.name)
                if not os.path.isdir(d):
                    raise BenchmarkError(f"{d}: no predictions for sequence {seq.name} of {bench}")
                pred = read_prediction(d, seq)
                if task == "video_depth" and pred.depth is None:
                    log.warning("%s: no depth.npz with every frame; video depth skipped", d)
                    continue
                per_seq[seq.name] = score_sequence(task, seq, pred, options)
                report["frames"][seq.name] = list(seq.frame_ids)
            if per_seq:
                report["tasks"][task] = {"summary": summarize(task, per_seq), "sequences": {k: {m: v for m, v in r.items() if not m.startswith("_")} for k, r in per_seq.items()}}
        _write_report(out_dir, tag, bench, report)
        results[bench] = {t: r["summary"] for t, r in report["tasks"].items()}
    write_table(out_dir)
    return results


# ---------------------------------------------------------------------------------- table and plots

# The papers' columns per task (π³ Tables 1-5): metric keys of the summaries and their headers.
SUMMARY_COLUMNS = {
    "video_depth": [("abs_rel", "AbsRel ↓"), ("delta<1.25", "δ<1.25 ↑")],
    "mono_depth": [("abs_rel", "AbsRel ↓"), ("delta<1.25", "δ<1.25 ↑")],
    "pose_trajectory": [("ate", "ATE ↓"), ("rpe_trans", "RPE trans ↓"), ("rpe_rot", "RPE rot ↓")],
    "pose_angular": [("rra@30", "RRA@30 ↑"), ("rta@30", "RTA@30 ↑"), ("auc@30", "AUC@30 ↑")],
    "pointmap": [("acc", "Acc mean ↓"), ("acc_med", "Acc med ↓"), ("comp", "Comp mean ↓"), ("comp_med", "Comp med ↓"), ("nc", "NC mean ↑"), ("nc_med", "NC med ↑")],
    "flow": [("head_epe", "EPE ↓"), ("head_<3px", "<3px % ↑"), ("induced_epe", "EPE geometry ↓")],
}


def write_table(out_dir: str) -> str:
    """OUT/results.md: per task, one row per tag (checkpoint) and the benchmarks side by side."""
    cells: dict[str, dict[str, dict[str, dict]]] = {}
    if not os.path.isdir(out_dir):
        return ""
    for tag in sorted(os.listdir(out_dir)):
        d = os.path.join(out_dir, tag)
        if not os.path.isdir(d):
            continue
        for f in sorted(os.listdir(d)):
            if not f.endswith(".json"):
                continue
            with open(os.path.join(d, f)) as fh:
                rep = json.load(fh)
            for task, r in rep.get("tasks", {}).items():
                cells.setdefault(task, {}).setdefault(rep["benchmark"], {})[tag] = r["summary"]
    lines = ["# Evaluation results", ""]
    for task in [t for t in SUMMARY_COLUMNS if t in cells]:
        cols = SUMMARY_COLUMNS[task]
        benches = sorted(cells[task])
        tags = sorted({t for b in benches for t in cells[task][b]})
        lines += [f"## {task}", "", "| checkpoint | " + " | ".join(f"{b} {h}" for b in benches for _, h in cols) + " |", "|---" * (1 + len(benches) * len(cols)) + "|"]
        for tag in tags:
            row = []
            for b in benches:
                s = cells[task][b].get(tag, {})
                row += [f"{s[k]:.4g}" if isinstance(s.get(k), (int, float)) else "" for k, _ in cols]
            lines.append(f"| {tag} | " + " | ".join(row) + " |")
        lines.append("")
    text = "\n".join(lines)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(text)
    return text


def _plot(task: str, seq: EvalSequence, pred, plot_dir: str, gt_depth=None, options: EvalOptions | None = None) -> None:
    options = options or EvalOptions()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    os.makedirs(plot_dir, exist_ok=True)
    base = os.path.join(plot_dir, f"{task}_{seq.name.replace('/', '_')}")
    if task in ("pose_trajectory", "pose_angular") and seq.poses is not None:
        from flow3r_jax.flowmap.plot import plot_trajectory

        plot_trajectory(base + ".png", pred.poses, seq.poses, title=f"{seq.benchmark} {seq.name}")
    elif task in ("video_depth", "mono_depth") and gt_depth is not None:
        from flow3r_jax.eval import metrics as M

        p = _resize_maps(pred.depth, gt_depth.shape[1:3], "cubic")
        kw = depth_protocol(seq)
        aligned = M.align_depth(p, gt_depth, align=options.mono_align if task == "mono_depth" else options.depth_align, max_depth=kw["max_depth"])
        k = 0
        valid = gt_depth[k] > 0
        err = np.where(valid, np.abs(aligned[k] - gt_depth[k]) / np.maximum(gt_depth[k], 1e-6), np.nan)
        vmax = float(np.percentile(gt_depth[k][valid], 98)) if valid.any() else 1.0
        fig, ax = plt.subplots(1, 3, figsize=(12, 3.4))
        for a, im, title, kw in ((ax[0], gt_depth[k], "ground truth", dict(vmin=0, vmax=vmax)), (ax[1], aligned[k], "prediction (aligned)", dict(vmin=0, vmax=vmax)), (ax[2], err, "abs. rel. error", dict(vmin=0, vmax=0.5, cmap="magma"))):
            h = a.imshow(im, **kw)
            a.set_title(title)
            a.axis("off")
            fig.colorbar(h, ax=a, fraction=0.04)
        fig.suptitle(f"{seq.benchmark} {seq.name} frame {seq.frame_ids[k]}")
        fig.savefig(base + ".png", dpi=80, bbox_inches="tight")
        plt.close(fig)
    elif task == "flow" and getattr(pred, "flow", None) is not None:
        from flow3r_jax.geometry.flow import flow_to_color

        pairs, gt, valid = seq.load_flows()
        f = _resize_flow(pred.flow[:1], gt.shape[1:3])[0]
        scale = float(np.percentile(np.linalg.norm(gt[0], axis=-1), 99)) + 1e-6
        fig, ax = plt.subplots(1, 2, figsize=(8, 3.4))
        ax[0].imshow(np.asarray(flow_to_color(gt[0], scale)))
        ax[0].set_title(f"ground truth {pairs[0][0]}->{pairs[0][1]}")
        ax[1].imshow(np.asarray(flow_to_color(f, scale)))
        ax[1].set_title("flow head")
        for a in ax:
            a.axis("off")
        fig.savefig(base + ".png", dpi=80, bbox_inches="tight")
        plt.close(fig)
