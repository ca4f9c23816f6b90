"""FlowMap accuracy on held-back synthetic scenes: exact vs teacher flow, pretrained vs random
initialisation, and pycolmap's incremental SfM on the same frames.

    python benchmarks/flowmap_accuracy.py [--scenes 5] [--only 2,3] [--separate] [--steps 2000] [--tracks chained|none] [--json OUT.json]

Scenes: static synthetic rooms (`data_pipelines.synthetic`, 20 frames, 160 x 224, seeds 0-4,
presets orbit / forward / random, mean consecutive flow 3-10 px). The shipped initialisation was
pretrained on seeds >= 10000 only, so these scenes were never seen.

Runs (each vmaps all scenes in one compiled program with split keys, or with `--separate`
optimises each scene alone with key 0, as the README's per-scene figures; `--only` picks scenes
by index). FlowMap's settings: 2000 steps, Adam 3e-5, soft-min focal then a free focal from step
1000, Procrustes on 1000 pixels, photometric masks, track loss from step 50 on tracks chained
through the run's flow as `reconstruct` does (`--tracks none` for the flow loss alone):
  exact / pretrained    exact flow, shipped initialisation (the target: ATE <= 1% of the
                        trajectory extent, focal error <= 2%)
  exact / random        exact flow, random initialisation (FlowMap's from-scratch setting)
  teacher / pretrained  OpenCV DIS flow (the CPU teacher `reconstruct` uses)
  teacher / random
  floor, floor/all      no optimisation: FlowMap's Procrustes poses from the exact depth, focal and
                        flow (validity-masked weights) on the 1000 pixels / on every pixel, the
                        readout's own error (seconds; with `--procrustes-edge` as well)
  pycolmap              incremental SfM (SIFT, exhaustive matching, one SIMPLE_PINHOLE camera)
                        on the same frames; scored on the frames it registers

Metrics (`flow3r_jax.flowmap.metrics`): ATE after Sim(3) alignment of the camera centres as a
fraction of the trajectory extent (RMS distance of the ground-truth centres from their mean),
mean rotation error after the best global rotation (degrees), relative focal error. Figures are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PRESETS = ("orbit", "forward", "random", "orbit", "random")


def make_scenes(n, frames, height, width, seed0=0):
    from data_pipelines.synthetic import SceneConfig, generate_clip

    from flow3r_jax.flowmap import consecutive_flows

    scenes = []
    for k in range(n):
        cfg = SceneConfig(height=height, width=width, frames=frames, dynamic=False, preset=PRESETS[k % len(PRESETS)], kind="room", offsets=(1,), flow_px=(3.0, 10.0))
        clip = generate_clip(cfg, seed=seed0 + k)
        fw, bw = consecutive_flows(clip["pairs"], clip["flow"])
        scenes.append(dict(images=clip["images"], flow_fw=fw, flow_bw=bw, poses=clip["poses"], K=clip["intrinsics"][0], depth=clip["depth"], preset=cfg.preset, seed=seed0 + k))
    return scenes


def teacher_flows(images):
    from flow3r_jax.correspondence.teacher import DISTeacher, compute_pair_flows

    K = len(images)
    pairs = np.array([(i, i + 1) for i in range(K - 1)] + [(i + 1, i) for i in range(K - 1)])
    flow = compute_pair_flows(DISTeacher("medium"), images, pairs).flow
    return flow[: K - 1], flow[K - 1 :]


def epe(a, b):
    return float(np.mean(np.linalg.norm(a - b, axis=-1)))


def chained_tracks(scenes, flows):
    """Point tracks chained through the given consecutive flows, as `reconstruct` makes them."""
    from flow3r_jax.correspondence.tracks import compute_tracks

    return [compute_tracks(s["images"], flows_fw=fw, flows_bw=bw) for s, (fw, bw) in zip(scenes, flows)]


def run_flowmap(scenes, flows, init, steps, seed=0, overrides=None, tracks=None):
    import jax

    from flow3r_jax.flowmap import FlowMapConfig, init_params, load_init, make_scene_inputs, optimize_scenes, stack_scenes

    tracks = tracks or [None] * len(scenes)
    inputs = stack_scenes([make_scene_inputs(s["images"], fw, bw, tracks=t) for s, (fw, bw), t in zip(scenes, flows, tracks)])
    F, H, W = inputs.images.shape[1:4]
    S = len(scenes)
    keys = jax.random.split(jax.random.key(seed), S)
    if init == "random":
        cfg = FlowMapConfig(steps=steps, progress_every=50, **(overrides or {}))
        params = None
    else:
        from flow3r_jax.flowmap.weights import DEFAULT_INIT

        state, cfg = load_init(DEFAULT_INIT if init == "pretrained" else init, FlowMapConfig(steps=steps, progress_every=50, **(overrides or {})))
        params = init_params(cfg, F, (H, W), pretrained=state)
    t0 = time.time()
    last = [0.0]

    def progress(step, loss):
        if time.time() - last[0] > 60 or step == steps - 1:
            last[0] = time.time()
            print(f"    step {step + 1}/{steps}  mean loss {loss:.5f}  ({time.time() - t0:.0f} s)", flush=True)

    result = jax.device_get(optimize_scenes(inputs, cfg, params, keys, progress=progress))
    return result, time.time() - t0


def score_flowmap(result, scenes, steps):
    from flow3r_jax.flowmap.metrics import focal_error, trajectory_errors

    rows = []
    H, W = scenes[0]["images"].shape[1:3]
    for s, sc in enumerate(scenes):
        err = trajectory_errors(result.poses[s], sc["poses"])
        f_gt = sc["K"][0, 0] / math.sqrt(H * W)
        mid = min(999, steps - 1)
        err_mid = trajectory_errors(result.history.poses[s, mid], sc["poses"])
        rows.append(
            dict(
                seed=sc["seed"],
                preset=sc["preset"],
                ate_rel=err["ate_rel"],
                rot_err_deg=err["rot_err_deg"],
                focal_err=focal_error(result.focal[s], f_gt),
                focal=float(result.focal[s]),
                focal_gt=float(f_gt),
                ate_rel_step1000=err_mid["ate_rel"],
                focal_err_step1000=focal_error(result.history.focal[s, mid], f_gt),
                final_loss=float(result.history.loss[s, -1]),
            )
        )
    return rows


def procrustes_floor(scene, points, edge=None):
    """The pose readout's floor: FlowMap's Procrustes poses from the exact depth, focal and flow,
    weighted by the validity mask alone (no optimisation; times the edge validity of the exact
    depth with `edge`), on `points` pixels per pair (None: all). Most of what remains comes from
    correspondences whose bilinearly sampled earlier point straddles a depth edge."""
    import jax.numpy as jnp

    from flow3r_jax.flowmap import make_scene_inputs
    from flow3r_jax.flowmap.intrinsics import intrinsics_from_normalized_focal
    from flow3r_jax.flowmap.metrics import trajectory_errors
    from flow3r_jax.flowmap.poses import edge_validity, poses_from_relative, procrustes_indices, relative_poses
    from flow3r_jax.geometry import unproject_depth

    inputs = make_scene_inputs(scene["images"], scene["flow_fw"], scene["flow_bw"])
    F, H, W = scene["depth"].shape
    idx = procrustes_indices(H, W, points)
    sel = jnp.asarray(idx) if len(idx) < H * W else slice(None)
    depth = jnp.asarray(scene["depth"], jnp.float32)
    weights = inputs.valid_bw.reshape(F - 1, H * W)[:, sel]
    if edge is not None:
        weights = weights * edge_validity(depth, inputs.flow_bw, sel, edge)
    K = intrinsics_from_normalized_focal(jnp.float32(scene["K"][0, 0] / math.sqrt(H * W)), H, W)
    poses = poses_from_relative(relative_poses(unproject_depth(depth, K), inputs.flow_bw, weights, sel))
    err = trajectory_errors(np.asarray(poses), scene["poses"])
    return dict(seed=scene["seed"], preset=scene["preset"], ate_rel=err["ate_rel"], rot_err_deg=err["rot_err_deg"], focal_err=0.0)


def run_pycolmap(scene, workdir):
    import cv2
    import pycolmap

    from flow3r_jax.flowmap.metrics import focal_error, trajectory_errors

    img_dir = os.path.join(workdir, "images")
    os.makedirs(img_dir, exist_ok=True)
    for i, im in enumerate(scene["images"]):
        cv2.imwrite(os.path.join(img_dir, f"{i:04d}.png"), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    db = os.path.join(workdir, "database.db")
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "SIMPLE_PINHOLE"
    t0 = time.time()
    pycolmap.extract_features(db, img_dir, camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader, device=pycolmap.Device.cpu)
    pycolmap.match_exhaustive(db, device=pycolmap.Device.cpu)
    maps = pycolmap.incremental_mapping(db, img_dir, os.path.join(workdir, "sparse"))
    seconds = time.time() - t0
    F = len(scene["images"])
    if not maps:
        return dict(seed=scene["seed"], preset=scene["preset"], registered=0, frames=F, ate_rel=float("nan"), rot_err_deg=float("nan"), focal_err=float("nan"), seconds=seconds)
    rec = max(maps.values(), key=lambda r: r.num_reg_images())
    idx, poses = [], []
    for im in rec.images.values():
        if not im.has_pose:
            continue
        w2c = np.vstack([im.cam_from_world().matrix(), [0, 0, 0, 1]])
        idx.append(int(os.path.splitext(im.name)[0]))
        poses.append(np.linalg.inv(w2c))
    order = np.argsort(idx)
    idx, poses = np.asarray(idx)[order], np.asarray(poses)[order]
    err = trajectory_errors(poses, scene["poses"][idx]) if len(idx) >= 3 else dict(ate_rel=float("nan"), rot_err_deg=float("nan"))
    cam = rec.cameras[rec.images[next(iter(rec.images))].camera_id]
    return dict(
        seed=scene["seed"],
        preset=scene["preset"],
        registered=len(idx),
        frames=F,
        ate_rel=err["ate_rel"],
        rot_err_deg=err["rot_err_deg"],
        focal_err=focal_error(cam.params[0], scene["K"][0, 0]),
        seconds=seconds,
    )


def summarize(name, rows, extra=""):
    a = np.array([r["ate_rel"] for r in rows]) * 100
    rot = np.array([r["rot_err_deg"] for r in rows])
    f = np.array([r["focal_err"] for r in rows]) * 100
    return f"| {name} | {np.nanmean(a):.2f} / {np.nanmax(a):.2f} | {np.nanmean(rot):.3f} | {np.nanmean(f):.2f} / {np.nanmax(f):.2f} | {extra} |"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenes", type=int, default=5)
    p.add_argument("--only", default=None, help="comma-separated scene indices to run (e.g. 2,3; default: all --scenes)")
    p.add_argument("--separate", action="store_true", help="optimise each scene alone with key 0 instead of vmapping them with split keys")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--size", default="160x224")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--init", default="pretrained", help="initialisation file for the 'pretrained' runs (default: the shipped one)")
    p.add_argument("--runs", default="floor,floor/all,exact/pretrained,teacher/pretrained,exact/random,teacher/random,pycolmap")
    p.add_argument("--json", default=None)
    p.add_argument(
        "--tracks",
        choices=("chained", "none"),
        default="chained",
        help="point tracks for FlowMap's track loss: chained through each run's flow (`flow3r_jax.correspondence.tracks`, what `reconstruct` does; default) or none (flow loss only)",
    )
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate of the model (default: FlowMap's 3e-5)")
    p.add_argument("--focal-lr", type=float, default=None, help="learning rate of the free focal (default: --lr, as FlowMap)")
    p.add_argument("--focal-after", type=int, default=None, help="step of the switch to the free focal (default: FlowMap's 1000)")
    p.add_argument("--procrustes-edge", type=float, default=None, help="drop Procrustes correspondences sampled across a depth edge of this relative spread (default: off, as FlowMap)")
    args = p.parse_args(argv)
    named = (("lr", args.lr), ("focal_lr", args.focal_lr), ("focal_regression_after", args.focal_after), ("procrustes_edge", args.procrustes_edge))
    overrides = {k: v for k, v in named if v is not None}
    if overrides:
        print(f"FlowMapConfig overrides: {overrides}")
    H, W = (int(v) for v in args.size.lower().split("x"))
    runs = args.runs.split(",")

    import jax

    print(f"flowmap_accuracy: {args.scenes} scenes, {args.frames} frames, {H}x{W}, {args.steps} steps; jax {jax.__version__} on {jax.devices()[0].platform}")
    t0 = time.time()
    scenes = make_scenes(args.scenes, args.frames, H, W)
    if args.only:
        picked = [int(v) for v in args.only.split(",")]
        bad = [k for k in picked if not 0 <= k < len(scenes)]
        if bad:
            p.error(f"--only {args.only}: scene indices must lie in 0..{len(scenes) - 1}, got {bad}")
        scenes = [scenes[k] for k in picked]
    print(f"scenes rendered in {time.time() - t0:.1f} s: " + ", ".join(f"seed {s['seed']} {s['preset']}" for s in scenes))
    exact = [(s["flow_fw"], s["flow_bw"]) for s in scenes]
    teacher = None
    if any(r.startswith("teacher") for r in runs):
        t0 = time.time()
        teacher = [teacher_flows(s["images"]) for s in scenes]
        err = np.mean([epe(t[0], e[0]) for t, e in zip(teacher, exact)])
        print(f"teacher flow (OpenCV DIS medium) in {time.time() - t0:.1f} s; mean end-point error vs exact {err:.3f} px (all pixels)")
    results = {}
    for run in runs:
        if run.startswith("floor"):
            points = None if run == "floor/all" else 1000
            results[run] = [procrustes_floor(s, points, overrides.get("procrustes_edge")) for s in scenes]
            continue
        if run == "pycolmap":
            try:
                import pycolmap  # noqa: F401
            except ImportError:
                print("pycolmap not installed: skipped")
                continue
            with tempfile.TemporaryDirectory() as tmp:
                rows = [run_pycolmap(s, os.path.join(tmp, str(k))) for k, s in enumerate(scenes)]
            results[run] = rows
            print(f"  pycolmap: registered {[r['registered'] for r in rows]} of {args.frames} frames")
            continue
        flow_name, init = run.split("/")
        flows = exact if flow_name == "exact" else teacher
        tracks = chained_tracks(scenes, flows) if args.tracks == "chained" else None
        print(f"run {run}:" + (f" tracks per scene {[t.xy.shape[1] for t in tracks]}" if tracks else " no tracks"), flush=True)
        init_file = args.init if init == "pretrained" else "random"
        groups = [[k] for k in range(len(scenes))] if args.separate else [list(range(len(scenes)))]
        rows, seconds = [], 0.0
        for g in groups:
            res, sec = run_flowmap([scenes[k] for k in g], [flows[k] for k in g], init_file, args.steps, overrides=overrides, tracks=None if tracks is None else [tracks[k] for k in g])
            rows += score_flowmap(res, [scenes[k] for k in g], args.steps)
            seconds += sec
        results[run] = rows
        how = "one at a time" if args.separate else "vmapped"
        print(f"  {run}: {seconds:.0f} s for {len(scenes)} scenes x {args.steps} steps ({how}, incl. compilation)")
    print()
    print("| run | ATE % of extent (mean / max) | rot err deg (mean) | focal err % (mean / max) | notes |")
    print("|---|---|---|---|---|")
    for run, rows in results.items():
        if run.startswith("floor"):
            extra = "exact depth, focal and flow; Procrustes poses, no optimisation"
        elif run == "pycolmap":
            extra = f"registered {sum(r['registered'] for r in rows)}/{sum(r['frames'] for r in rows)} frames"
        else:
            m = np.mean([r["ate_rel_step1000"] for r in rows]) * 100
            fm = np.mean([r["focal_err_step1000"] for r in rows]) * 100
            extra = f"at step 1000: ATE {m:.2f}%, focal {fm:.2f}%"
        print(summarize(run, rows, extra))
    print()
    print("per scene (ATE % / rot deg / focal %):")
    for run, rows in results.items():
        print(f"  {run:22s} " + "  ".join(f"{r['seed']}-{r['preset'][:6]}:{100 * r['ate_rel']:.2f}/{r['rot_err_deg']:.2f}/{100 * r['focal_err']:.1f}" for r in rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), results=results), f, indent=1)


if __name__ == "__main__":
    main()
