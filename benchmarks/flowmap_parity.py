"""Numerical parity of one FlowMap step with the official PyTorch code, on identical inputs.

    python benchmarks/flowmap_parity.py [--official /work/flowmap_ref]

Both sides evaluate FlowMap's explicit-depth model (`ablation_explicit_depth`: per-pixel depth
and correspondence-weight parameters, Procrustes on every pixel, soft-min focal on 8192 pixels)
at the same depth maps and weight parameters, with the same soft-min pixels (the official
`torch.randperm` is replaced by the fixed set for the comparison), on a synthetic room with
exact flow. Compared: FlowMap's photometric masks, the soft-min focal, the camera poses, the
flow loss at step 0 (soft-min) and at step 1000 (free focal), and the gradient of the loss with
respect to the depth. Runs the official side in its own environment
(`../shared/tools/flowmap_ref/setup_env.sh`) as a subprocess; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HARNESS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "tools", "flowmap_ref")

OFFICIAL = textwrap.dedent(
    r"""
    import sys, numpy as np, torch
    sys.path.insert(0, HARNESS)
    import run_flowmap_ref as h
    from omegaconf import OmegaConf
    torch.set_float32_matmul_precision("highest")
    h.make_torchvision_importable()
    fm = h.import_flowmap(REPO, typecheck=False, lightning_loop=False)
    cfg, _ = h.compose_config(REPO, "explicit_depth", [])
    model_cfg = fm["get_typed_config"](fm["ModelCfg"], cfg.model)
    losses = fm["get_losses"](fm["separate_multiple_defaults"](fm["LossCfg"])(OmegaConf.to_container(cfg.loss)))
    d = np.load(INPUT)
    batch, flows, gt, _ = h.load_inputs(__import__("pathlib").Path(INPUT), fm, "photometric")
    _, f, _, H, W = batch.videos.shape
    idx = torch.from_numpy(d["soft_idx"].astype(np.int64))
    n = H * W
    chosen = set(idx.tolist())
    fixed = torch.cat([idx, torch.tensor([i for i in range(n) if i not in chosen], dtype=torch.int64)])
    real_randperm = torch.randperm
    torch.randperm = lambda m, **kw: fixed.clone() if m == n else real_randperm(m, **kw)
    out = {"mask_fw": flows.forward_mask[0].numpy(), "mask_bw": flows.backward_mask[0].numpy()}
    for step in (0, 1000):
        model = fm["Model"](model_cfg, num_frames=f, image_shape=(H, W))
        with torch.no_grad():
            model.backbone.depth.copy_(torch.from_numpy(d["depth"]))
            model.backbone.weights.copy_(torch.from_numpy(d["weights"]))
            if step == 1000:
                model.intrinsics.window = [torch.tensor(float(d["window_focal"]))]
        o = model(batch, flows, step)
        loss = sum(l.forward(batch, flows, None, o, step) for l in losses)
        loss.backward()
        K = o.intrinsics[0, 0].detach().numpy()
        out[f"focal_{step}"] = np.float64((K[0, 0] * W + K[1, 1] * H) / 2 / np.sqrt(H * W))
        out[f"poses_{step}"] = o.extrinsics[0].detach().numpy()
        out[f"loss_{step}"] = np.float64(loss.item())
        out[f"grad_{step}"] = model.backbone.depth.grad.numpy()
    np.savez(OUTPUT, **out)
    """
)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--official", default=os.environ.get("FLOWMAP_REF_ROOT", "/work/flowmap_ref"), help="root of the official reference environment (setup_env.sh; default $FLOWMAP_REF_ROOT)")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", default="96x128")
    args = p.parse_args(argv)
    H, W = (int(v) for v in args.size.lower().split("x"))

    import jax
    import jax.numpy as jnp

    from benchmarks.flowmap_speed import make_scene, write_harness_input
    from flow3r_jax.flowmap import FlowMapConfig, make_scene_inputs
    from flow3r_jax.flowmap.intrinsics import focal_candidates, intrinsics_from_normalized_focal, softmin_focal
    from flow3r_jax.flowmap.losses import flow_loss, pose_induced_flows
    from flow3r_jax.flowmap.poses import poses_from_relative, relative_poses
    from flow3r_jax.geometry import unproject_depth

    clip, fw, bw = make_scene(args.frames, H, W)
    F = args.frames
    rng = np.random.default_rng(0)
    # A depth that is neither constant nor exact (the ground truth, smoothly distorted), and
    # non-trivial weight parameters.
    yy, xx = np.meshgrid(np.linspace(-1, 1, H), np.linspace(-1, 1, W), indexing="ij")
    depth = (clip["depth"] * (1.0 + 0.1 * np.sin(2.0 * xx + 1.0) * np.cos(1.5 * yy))[None]).astype(np.float32)
    weights = (0.02 * rng.normal(size=(F - 1, H, W))).astype(np.float32)
    soft_idx = rng.permutation(H * W)[:8192].astype(np.int64)
    window_focal = 1.05
    tmp = tempfile.mkdtemp()
    npz = os.path.join(tmp, "in.npz")
    write_harness_input(npz, clip, fw, bw)
    with np.load(npz) as d:
        data = dict(d)
    np.savez(npz, **data, depth=depth, weights=weights, soft_idx=soft_idx, window_focal=np.float64(window_focal))
    script = os.path.join(tmp, "official.py")
    with open(script, "w") as f:
        f.write(f"HARNESS = {os.path.abspath(HARNESS)!r}\nREPO = __import__('pathlib').Path({os.path.join(args.official, 'flowmap')!r})\nINPUT = {npz!r}\nOUTPUT = {os.path.join(tmp, 'out.npz')!r}\n" + OFFICIAL)
    proc = subprocess.run([os.path.join(args.official, "venv", "bin", "python"), script], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"official side failed:\n{proc.stderr[-3000:]}")
    ref = dict(np.load(os.path.join(tmp, "out.npz")))

    cfg = FlowMapConfig.explicit_depth()
    inputs = make_scene_inputs(clip["images"], fw, bw)
    w_sig = jax.nn.sigmoid(cfg.explicit_weight_sensitivity * jnp.asarray(weights))
    idx_all = jnp.arange(H * W)
    cands = jnp.asarray(focal_candidates())

    def loss_and_more(depth, step):
        d = jnp.asarray(depth)
        if step == 0:
            focal, _ = softmin_focal(d[:2], inputs.flow_bw[0], w_sig[0].reshape(-1)[soft_idx], jnp.asarray(soft_idx), cands, cfg.softmin_temperature)
        else:
            focal = jnp.asarray(window_focal, jnp.float32)
        K = intrinsics_from_normalized_focal(focal, H, W)
        pts = unproject_depth(d, K)
        rel = relative_poses(pts, inputs.flow_bw, w_sig.reshape(F - 1, -1), idx_all)
        loss = cfg.flow_weight * flow_loss(*pose_induced_flows(pts, rel, K), inputs.flow_fw, inputs.flow_bw, inputs.mask_fw, inputs.mask_bw, cfg.huber_delta)
        return loss, (focal, poses_from_relative(rel))

    print(f"flowmap_parity: {F} frames x {H}x{W}, explicit depth, exact flow, fixed soft-min pixels")
    for name, ours, theirs in (("mask_fw", inputs.mask_fw, ref["mask_fw"]), ("mask_bw", inputs.mask_bw, ref["mask_bw"])):
        print(f"  {name}: max |diff| {np.abs(np.asarray(ours) - theirs).max():.2e}")
    for step in (0, 1000):
        (loss, (focal, poses)), grad = jax.jit(jax.value_and_grad(lambda d: loss_and_more(d, step), has_aux=True))(depth)
        g, gr = np.asarray(grad), ref[f"grad_{step}"]
        cos = float(np.sum(g * gr) / np.linalg.norm(g) / np.linalg.norm(gr))
        print(
            f"  step {step:4d}: focal ours {float(focal):.6f} official {ref[f'focal_{step}']:.6f} | loss ours {float(loss):.6f} official {ref[f'loss_{step}']:.6f}"
            f" (rel {abs(float(loss) - ref[f'loss_{step}']) / ref[f'loss_{step}']:.1e}) | poses max |diff| {np.abs(np.asarray(poses) - ref[f'poses_{step}']).max():.1e}"
            f" | depth gradient: cosine {cos:.6f}, max |diff| / max |grad| {np.abs(g - gr).max() / np.abs(gr).max():.1e}"
        )


if __name__ == "__main__":
    main()
