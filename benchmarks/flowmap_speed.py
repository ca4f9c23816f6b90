"""FlowMap step time: this project's compiled optimiser vs the official PyTorch FlowMap, side by
side in one run, at 20 frames x 160 x 224 on the CPU.

    python benchmarks/flowmap_speed.py [--official ROOT] [--steps 20] [--full-run]

Both sides get identical inputs: a synthetic room (`data_pipelines.synthetic`, seed 0) with its
exact consecutive flows, written in the official harness' .npz format (flow in FlowMap's
normalised units); both use FlowMap's photometric masks, 60 soft-min candidates on 8192 pixels,
Adam, fp32. Settings compared:
  explicit depth   FlowMap's `ablation_explicit_depth` (per-pixel depth, Procrustes on every
                   pixel) vs this project's `FlowMapConfig.explicit_depth()`;
  depth network    FlowMap's random-init MiDaS-small (`ablation_random_initialization`) vs this
                   project's default depth CNN (a different, much smaller network: the ratio is
                   the end-to-end cost of the default setting of each, not of equal networks).
Tracks are off on both sides (the harness runs `ablation_no_tracks`).

Ours: each setting is compiled once (reported apart), then a K-step program (one `lax.scan`) is
timed R times; the step time is the median over R of (run time / K). `--full-run` also times the
whole default 2000-step run (one program). Official: `run_flowmap_ref.py` (in
`../shared/tools/flowmap_ref`, environment from its `setup_env.sh`; `--official ROOT` is the
directory holding `venv/`, `flowmap/` and `hub/`), median per-step wall time of its plain loop
(step 0 excluded), FlowMap's runtime type checks on (as `flowmap.overfit` runs). The machine is
shared, so every figure is noisy: compare the ratios, which come from the same run. Nothing here
is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HARNESS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "tools", "flowmap_ref")


def make_scene(frames, height, width):
    from data_pipelines.synthetic import SceneConfig, generate_clip

    from flow3r_jax.flowmap import consecutive_flows

    cfg = SceneConfig(height=height, width=width, frames=frames, dynamic=False, preset="orbit", kind="room", offsets=(1,), flow_px=(3.0, 10.0))
    clip = generate_clip(cfg, seed=0)
    fw, bw = consecutive_flows(clip["pairs"], clip["flow"])
    return clip, fw, bw


def write_harness_input(path, clip, fw, bw):
    """The official harness' .npz: videos (F, 3, H, W) in [0, 1], flows in FlowMap's normalised
    units (dx / W, dy / H), no masks (so it computes FlowMap's photometric masks itself)."""
    F, H, W = clip["images"].shape[:3]
    scale = np.array([1.0 / W, 1.0 / H], np.float32)
    K = clip["intrinsics"][0].astype(np.float64)
    k_norm = K.copy()
    k_norm[0] /= W
    k_norm[1] /= H
    np.savez(
        path,
        videos=(clip["images"].astype(np.float32) / 255.0).transpose(0, 3, 1, 2),
        flow_forward=(fw * scale).astype(np.float32),
        flow_backward=(bw * scale).astype(np.float32),
        gt_extrinsics=clip["poses"].astype(np.float32),
        gt_intrinsics=np.repeat(k_norm[None], F, 0).astype(np.float32),
        gt_focal_norm=np.float32(K[0, 0] / np.sqrt(H * W)),
    )


def time_ours(inputs, cfg, steps, repeats, params=None):
    """(compile seconds, median seconds per step, per-repeat values) of a `steps`-step program."""
    import jax

    from flow3r_jax.flowmap.optimize import _compiled, abstract_model, init_params

    F, (H, W) = inputs.num_frames, inputs.image_shape
    cfg = cfg.replace(steps=steps)
    if params is None:
        params = init_params(cfg, F, (H, W), 0)
    graphdef, _ = abstract_model(cfg, F, (H, W))
    key = jax.random.key(0)
    fn = _compiled(graphdef, cfg, False)
    t0 = time.perf_counter()
    compiled = fn.lower(params, inputs, key).compile()
    compile_s = time.perf_counter() - t0
    per_step = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(params, inputs, key))
        per_step.append((time.perf_counter() - t0) / steps)
    return compile_s, float(np.median(per_step)), per_step


def time_official(root, npz, backbone, steps, threads, typecheck=True):
    out = tempfile.mktemp(suffix=".npz")
    summary = tempfile.mktemp(suffix=".json")
    cmd = [
        os.path.join(root, "venv", "bin", "python"),
        os.path.join(HARNESS, "run_flowmap_ref.py"),
        "--repo", os.path.join(root, "flowmap"),
        "--midas-hub", os.path.join(root, "hub", "isl-org+MiDaS"),
        "--geffnet-hub", os.path.join(root, "hub", "rwightman+gen-efficientnet-pytorch"),
        "--input", npz, "--output", out, "--backbone", backbone, "--steps", str(steps),
        "--threads", str(threads), "--log-every", "0", "--summary", summary,
    ]
    if not typecheck:
        cmd.append("--no-typecheck")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"official FlowMap failed ({backbone}):\n{proc.stderr[-3000:]}")
    with open(summary) as f:
        s = json.load(f)
    for p in (out, summary):
        if os.path.exists(p):
            os.remove(p)
    return s


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--official", default=os.environ.get("FLOWMAP_REF_ROOT", "/work/flowmap_ref"), help="root of the official reference environment (setup_env.sh; default $FLOWMAP_REF_ROOT)")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--size", default="160x224")
    p.add_argument("--steps", type=int, default=20, help="steps per timed program (ours) and per official run")
    p.add_argument("--official-midas-steps", type=int, default=6)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--full-run", action="store_true", help="also time the whole default 2000-step run (ours)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    H, W = (int(v) for v in args.size.lower().split("x"))

    import jax

    from flow3r_jax.flowmap import FlowMapConfig, init_params, load_init, make_scene_inputs

    clip, fw, bw = make_scene(args.frames, H, W)
    inputs = make_scene_inputs(clip["images"], fw, bw)
    have_official = os.path.isfile(os.path.join(args.official, "venv", "bin", "python"))
    npz = None
    if have_official:
        npz = tempfile.mktemp(suffix=".npz")
        write_harness_input(npz, clip, fw, bw)
    else:
        print(f"official reference environment not found at {args.official}: ours only (see ../shared/tools/flowmap_ref/README.md)")
    print(f"flowmap_speed: {args.frames} frames x {H}x{W}; jax {jax.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")

    rows = {}
    state, cnn_cfg = load_init()
    settings = [
        ("explicit depth", FlowMapConfig.explicit_depth(), None, "explicit_depth"),
        ("depth network", cnn_cfg, init_params(cnn_cfg, args.frames, (H, W), pretrained=state), "midas"),
    ]
    for name, cfg, params, backbone in settings:  # interleaved: ours, official, ours, official
        c, med, reps = time_ours(inputs, cfg, args.steps, args.repeats, params)
        rows[name] = dict(ours_compile_s=c, ours_step_s=med, ours_repeats=reps)
        print(f"{name:15s} ours: compile {c:.1f} s, {1e3 * med:.0f} ms/step (median of {args.repeats} x {args.steps} steps: {[round(1e3 * r) for r in reps]})", flush=True)
        if have_official:
            steps = args.steps if backbone == "explicit_depth" else args.official_midas_steps
            s = time_official(args.official, npz, backbone, steps, args.threads)
            rows[name].update(official_step_s=s["median_step_s"], official_first_step_s=s["first_step_s"], official_params=s["n_params"], official_steps=steps)
            print(f"{name:15s} official ({backbone}, {s['n_params'] / 1e6:.1f}M params): {1e3 * s['median_step_s']:.0f} ms/step (median of {steps - 1} steps; first {s['first_step_s']:.1f} s)", flush=True)
    if args.full_run:
        from flow3r_jax.flowmap import optimize_scene

        cfg = cnn_cfg.replace(steps=2000)
        params = init_params(cfg, args.frames, (H, W), pretrained=state)
        t0 = time.perf_counter()
        jax.block_until_ready(optimize_scene(inputs, cfg, params))
        total = time.perf_counter() - t0
        rows["full run"] = dict(seconds_incl_compile=total)
        print(f"whole default run (depth network, 2000 steps, one program): {total:.0f} s including compilation", flush=True)

    print()
    print(f"| setting (20 x {H}x{W}) | ours ms/step | compile s | official ms/step | official / ours |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        if name == "full run":
            continue
        off = r.get("official_step_s")
        ratio = f"{off / r['ours_step_s']:.1f}x" if off else "n/a"
        print(f"| {name} | {1e3 * r['ours_step_s']:.0f} | {r['ours_compile_s']:.1f} | {1e3 * off:.0f} | {ratio} |" if off else f"| {name} | {1e3 * r['ours_step_s']:.0f} | {r['ours_compile_s']:.1f} | n/a | n/a |")
    if "full run" in rows:
        print(f"| whole 2000-step run, depth network | {rows['full run']['seconds_incl_compile']:.0f} s incl. compile | | | |")
    if npz and os.path.exists(npz):
        os.remove(npz)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
