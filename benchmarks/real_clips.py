"""`reconstruct` next to COLMAP (pycolmap's incremental SfM) on real clips with reference poses.

    python benchmarks/real_clips.py --clips /work/data/real_clips [--only NAME,...] \\
        [--steps 2000] [--converge W] [--focal auto] [--sfm auto|off] [--colmap default,relaxed] [--json FILE]

Clip directory (one folder per clip; `benchmarks/real_clips_prepare.py` makes the project's set
from public GitHub repositories and its docstring says where each clip comes from)::

    <clip>/images/<frame>.png|jpg   the frames, file-name (natural) order = time order
    <clip>/groundtruth.txt          reference poses: a TUM trajectory (image stems = timestamps),
    <clip>/cameras.json             or flow3r_jax's cameras.json (see eval/benchmarks/generic.py)
    <clip>/clip.json                {"kind": ..., "intrinsics": [fx, fy, cx, cy] or null, "source": ...}

Both methods see the same frames. reconstruct runs in this process with the given options (its
defaults otherwise) and writes to WORKDIR/<clip>/reconstruct; COLMAP extracts SIFT features
(one shared SIMPLE_RADIAL camera), matches every pair and runs incremental mapping, keeping the
largest model, with its default options ("default") and with a relaxed initial pair ("relaxed":
init_min_tri_angle 4 deg instead of 16, init_min_num_inliers 50 instead of 100, init_max_forward_motion 0.99 instead of 0.95;
what registers forward-driving clips).

Scores per clip and method (against the reference poses of the registered frames):
- registered: frames with a pose (reconstruct: all).
- ATE %: camera centres Sim(3)-aligned (Umeyama), RMS error over the trajectory radius (RMS
  distance of the reference centres from their mean) (`flowmap.metrics.trajectory_errors`).
- rel. rot.: mean relative rotation error over all frame pairs, degrees; RRA@5 / RTA@5 /
  AUC@30: pi^3's pairwise angular metrics (`eval.metrics.pose_angular`), where a pair with an
  unregistered frame counts as a failure.
- focal %: |f - f_ref| / f_ref with f_ref = sqrt(fx fy) of the clip's intrinsics (reconstruct's
  fx = fy; COLMAP's single focal), blank without reference intrinsics.
- time: wall seconds, frames in to files out; reconstruct's split: read, flow, tracks, setup
  (focal estimate, masks, initialisation), compile (and the first step), optimise, export.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

COLMAP_SETTINGS = {
    "default": {},
    "relaxed": {"init_min_tri_angle": 4.0, "init_min_num_inliers": 50, "init_max_forward_motion": 0.99},
}


class ClipError(ValueError):
    """A clip folder that cannot be benchmarked; the message names it."""


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def load_clip(clip_dir: str) -> dict:
    """{name, kind, image_dir, names, poses (N, 4, 4) camera-to-world by image name order,
    focal (reference sqrt(fx fy) in pixels or None), clip (clip.json)}."""
    from flow3r_jax.eval.benchmarks import generic

    name = os.path.basename(os.path.normpath(clip_dir))
    meta_path = os.path.join(clip_dir, "clip.json")
    meta = {}
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
    image_dir = os.path.join(clip_dir, "images")
    if not os.path.isdir(image_dir):
        raise ClipError(f"{clip_dir}: no images/ folder")
    intr = meta.get("intrinsics")
    seq = generic.load(clip_dir, "pose_trajectory", intrinsics=tuple(intr) if intr else None)[0]
    by_name = {os.path.basename(p): T for p, T in zip(seq.image_paths, seq.poses)}
    names = sorted(by_name, key=_natural_key)
    focal = None
    if intr:
        focal = math.sqrt(intr[0] * intr[1])
    elif seq.intrinsics is not None:
        focal = float(np.sqrt(seq.intrinsics[0, 0, 0] * seq.intrinsics[0, 1, 1]))
    return dict(name=name, kind=meta.get("kind", "?"), image_dir=image_dir, names=names, poses=np.stack([by_name[n] for n in names]), focal=focal, clip=meta)


def score(names: list[str], poses: dict[str, np.ndarray], focal: float | None, clip: dict) -> dict:
    """The metrics of one method's poses {image name: camera-to-world} against the clip's
    reference (see the module docstring)."""
    from flow3r_jax.eval.metrics.pose_angular import angular_pose_metrics, relative_pose_errors
    from flow3r_jax.flowmap.metrics import focal_error, trajectory_errors

    ref = clip["poses"]
    reg = np.array([n in poses for n in clip["names"]])
    out = dict(registered=int(reg.sum()), frames=len(reg))
    if reg.sum() >= 3:
        est = np.stack([poses[n] for n, r in zip(clip["names"], reg) if r])
        tr = trajectory_errors(est, ref[reg])
        out.update(ate_pct=100.0 * tr["ate_rel"], rot_err_deg=tr["rot_err_deg"])
    # Angular metrics over all pairs of the clip; pairs with an unregistered frame fail.
    filled = np.stack([poses.get(n, np.eye(4)) for n in clip["names"]])
    r_err, t_err = relative_pose_errors(filled, ref)
    i, j = np.triu_indices(len(reg), 1)
    missing = ~(reg[i] & reg[j])
    r_err, t_err = np.where(missing, 180.0, r_err), np.where(missing, 180.0, t_err)
    ang = angular_pose_metrics(r_err, t_err, thresholds=(5, 30))
    out.update(rel_rot_deg=float(np.mean(r_err[~missing])) if (~missing).any() else float("nan"), rra5=ang["rra@5"], rta5=ang["rta@5"], auc30=ang["auc@30"])
    if focal is not None and clip["focal"] is not None:
        out["focal_pct"] = 100.0 * focal_error(focal, clip["focal"])
    return out


def run_reconstruct(
    clip: dict, workdir: str, steps: int, converge: int, focal: str, pixels: int, checkpoint: str | None = None, refine: bool = False, ff_pixels: int = 255_000, flowmap: dict | None = None,
    sfm: str = "auto",
    dense: str = "flow",
) -> dict:
    from flow3r_jax.reconstruct import reconstruct

    out_dir = os.path.join(workdir, clip["name"], "reconstruct" + ("_ff" if checkpoint else "") + ("_refine" if refine else ""))
    flowmap = dict(flowmap or {}, **({"converge_window": converge} if converge else {})) or None
    t0 = time.time()
    result = reconstruct(clip["image_dir"], out_dir, checkpoint, refine, steps=steps, pixels=pixels, progress=False, flowmap=flowmap, focal=focal, ff_pixels=ff_pixels, sfm=sfm, dense=dense)
    seconds = time.time() - t0
    with open(os.path.join(out_dir, "cameras.json")) as f:
        cams = json.load(f)
    poses = {fr["image_name"]: np.asarray(fr["camera_to_world"], np.float64) for fr in cams["frames"]}
    fx = cams["frames"][0]["fx"]
    info = result["info"]
    out = score(clip["names"], poses, fx, clip)
    out.update(
        seconds=seconds,
        timing=info.get("timing", {}),
        steps_done=info.get("converged_at", info.get("steps", steps)),
        focal_mode=(info.get("focal_init") or {}).get("used", (info.get("focal_init") or {}).get("mode")),
        rotation_fit=(info.get("focal_init") or {}).get("rotation"),
        poses_from=info.get("poses_from"),
        depth_from=info.get("depth_from", "flowmap"),
        sfm={k: v for k, v in (info.get("sfm") or {}).items() if k != "depth_scales"},
    )
    return out


def run_colmap(clip: dict, workdir: str, setting: str) -> dict:
    import pycolmap

    pycolmap.logging.minloglevel = 2  # errors only: the per-image INFO lines would bury the table
    base = os.path.join(workdir, clip["name"], f"colmap_{setting}")
    os.makedirs(base, exist_ok=True)
    db = os.path.join(base, "database.db")
    if os.path.exists(db):
        os.remove(db)
    t0 = time.time()
    pycolmap.extract_features(db, clip["image_dir"], image_names=clip["names"], camera_mode=pycolmap.CameraMode.SINGLE, device=pycolmap.Device.cpu)
    pycolmap.match_exhaustive(db, device=pycolmap.Device.cpu)
    options = pycolmap.IncrementalPipelineOptions()
    for key, value in COLMAP_SETTINGS[setting].items():
        setattr(options.mapper, key, value)
    models = pycolmap.incremental_mapping(db, clip["image_dir"], os.path.join(base, "sparse"), options=options)
    seconds = time.time() - t0
    poses, focal = {}, None
    if models:
        model = max(models.values(), key=lambda m: m.num_reg_images())
        for image in model.images.values():
            if image.has_pose:
                w2c = np.eye(4)
                w2c[:3] = image.cam_from_world().matrix()
                poses[image.name] = np.linalg.inv(w2c)
        cam = next(iter(model.cameras.values()))
        focal = float(cam.mean_focal_length())
    out = score(clip["names"], poses, focal, clip)
    out.update(seconds=seconds, models=len(models))
    return out


def _literal(text: str):
    """A --flowmap value: int, float, None or the text itself."""
    if text == "None":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _fmt(v, spec):
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def table(results: list[dict]) -> str:
    head = f"{'clip':24s} {'kind':20s} {'method':18s} {'reg':>7s} {'ATE%':>6s} {'relrot':>7s} {'RRA@5':>6s} {'RTA@5':>6s} {'AUC30':>6s} {'focal%':>7s} {'time s':>7s}"
    lines = [head, "-" * len(head)]
    for r in results:
        m = r["metrics"]
        if "error" in m:
            lines.append(f"{r['clip']:24s} {r['kind']:20s} {r['method']:18s} error: {m['error']}")
            continue
        lines.append(
            f"{r['clip']:24s} {r['kind']:20s} {r['method']:18s} {m['registered']:>3d}/{m['frames']:<3d} {_fmt(m.get('ate_pct'), '6.2f')} {_fmt(m.get('rel_rot_deg'), '7.2f')} "
            f"{_fmt(m.get('rra5'), '6.1f')} {_fmt(m.get('rta5'), '6.1f')} {_fmt(m.get('auc30'), '6.1f')} {_fmt(m.get('focal_pct'), '7.2f')} {_fmt(m.get('seconds'), '7.1f')}"
        )
        if m.get("timing"):
            split = ", ".join(f"{k} {v:.1f}" for k, v in m["timing"].items())
            lines.append(f"{'':24s} {'':20s} {'':18s} time split (s): {split}; focal: {m.get('focal_mode')}; steps {m.get('steps_done')}; poses: {m.get('poses_from')}")
            if m.get("sfm", {}).get("reason"):
                lines.append(f"{'':24s} {'':20s} {'':18s} sfm not used: {m['sfm']['reason']}")
    return "\n".join(lines)


def _focal_option(text: str):
    from flow3r_jax.reconstruct import _focal_option as parse

    return parse(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", required=True, help="folder of clip folders (see the module docstring)")
    p.add_argument("--only", default=None, help="comma-separated clip names")
    p.add_argument("--workdir", default="/tmp/real_clips", help="outputs of both methods (default /tmp/real_clips)")
    p.add_argument("--methods", default="reconstruct,colmap", help="reconstruct, colmap or both (default)")
    p.add_argument("--colmap", default="default,relaxed", help="COLMAP settings to run: default, relaxed (default both)")
    p.add_argument("--steps", type=int, default=2000, help="reconstruct --steps (default 2000)")
    p.add_argument("--converge", type=int, default=0, help="reconstruct --converge W (default 0: all steps)")
    p.add_argument("--focal", type=_focal_option, default="auto", help="reconstruct --focal: auto (default), softmin, rotation or a focal in input pixels")
    p.add_argument("--sfm", default="auto", choices=("auto", "off"), help="reconstruct --sfm: auto (default: poses from the sparse solver where it succeeds) or off (FlowMap's)")
    p.add_argument("--dense", default="flow", choices=("flow", "flowmap"), help="reconstruct --dense: flow (default: depth triangulated from the flow with the solver's cameras) or flowmap (FlowMap's depth, --steps steps)")
    p.add_argument("--pixels", type=int, default=43_200, help="reconstruct --pixels (default 43200)")
    p.add_argument("--checkpoint", default=None, help="reconstruct --checkpoint (a Flow3r checkpoint: the feed-forward model, and with --refine also FlowMap from its depth)")
    p.add_argument("--refine", action="store_true", help="with --checkpoint: score the feed-forward result and its --refine")
    p.add_argument("--ff_pixels", type=int, default=255_000, help="reconstruct --ff_pixels (default 255000)")
    p.add_argument("--flowmap", default="", metavar="K=V,...", help="further FlowMapConfig fields for reconstruct, e.g. lr=1e-4,focal_lr=1e-3,focal_regression_after=250")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    try:
        flowmap = {k: _literal(v) for k, v in (kv.split("=", 1) for kv in args.flowmap.split(",") if kv)}
    except ValueError:
        p.error(f"--flowmap {args.flowmap!r}: expected KEY=VALUE pairs separated by commas")
    if args.refine and not args.checkpoint:
        p.error("--refine needs --checkpoint")
    if not os.path.isdir(args.clips):
        p.error(f"--clips {args.clips}: no such folder")
    names = sorted(d for d in os.listdir(args.clips) if os.path.isdir(os.path.join(args.clips, d, "images")))
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            p.error(f"--only: no clip folder {unknown} in {args.clips} (have {names})")
        names = [n for n in names if n in wanted]
    if not names:
        p.error(f"--clips {args.clips}: no clip folders (<clip>/images/ with reference poses)")
    methods = args.methods.split(",")
    settings = [s for s in args.colmap.split(",") if s]
    for s in settings:
        if s not in COLMAP_SETTINGS:
            p.error(f"--colmap {s!r}: expected one of {', '.join(COLMAP_SETTINGS)}")
    clips = []
    for n in names:  # every clip is checked before any long work starts
        try:
            clips.append(load_clip(os.path.join(args.clips, n)))
        except Exception as err:  # noqa: BLE001 - reported with the clip's name
            p.error(f"{os.path.join(args.clips, n)}: {err}")
    results = []
    for clip in clips:
        runs = []
        if "reconstruct" in methods:
            common = dict(steps=args.steps, converge=args.converge, focal=args.focal, pixels=args.pixels, ff_pixels=args.ff_pixels, flowmap=flowmap, sfm=args.sfm, dense=args.dense)
            if args.checkpoint:
                runs.append(("feed-forward", lambda c=clip: run_reconstruct(c, args.workdir, checkpoint=args.checkpoint, **common)))
                if args.refine:
                    runs.append(("ff + refine", lambda c=clip: run_reconstruct(c, args.workdir, checkpoint=args.checkpoint, refine=True, **common)))
            else:
                runs.append(("reconstruct", lambda c=clip: run_reconstruct(c, args.workdir, **common)))
        if "colmap" in methods:
            runs += [(f"colmap ({s})", lambda c=clip, s=s: run_colmap(c, args.workdir, s)) for s in settings]
        for method, fn in runs:
            print(f"[{clip['name']}] {method} on {len(clip['names'])} frames ...", file=sys.stderr, flush=True)
            try:
                metrics = fn()
            except Exception as err:  # noqa: BLE001 - one failing method must not lose the others' results
                metrics = {"error": f"{type(err).__name__}: {err}"}
            results.append(dict(clip=clip["name"], kind=clip["kind"], method=method, metrics=metrics))
            print(table(results[-1:]).split("\n", 2)[-1], file=sys.stderr, flush=True)
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), results=results), f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
