"""Precision / recall of the DF-Net dynamic-region estimate on synthetic clips with moving objects.

    python benchmarks/dfnet_mask.py [--clips 4] [--size 72x96] [--frames 6] [--seed 0]

For each clip (data_pipelines.synthetic, dynamic=True, flow pairs at offsets 1 and 2 in both
directions) the rigid flow comes from depth and poses, the flow from the generator's exact flow,
and `flow3r_jax.losses.consistency.dynamic_regions` flags pixels where they disagree (LossConfig's
default thresholds: 1 px + 10% of |flow|). Scored per directed pair against the generator's exact
dynamic mask of frame i, pooled over clips, on the covisible pixels (pixels the test does not
reach count as predicted static). Geometry settings:
- exact: the generator's depth and poses (the mask's ceiling);
- noisy: depth x (1 + 3% per-frame scale + 2% per-pixel noise), camera rotations perturbed by
  0.3 degrees and translations by 3% of the motion (a rough stand-in for a trained model).
Also prints the consistency loss (unweighted) and the mean |rigid - flow| on static pixels.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--size", default="72x96", help="HxW")
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    H, W = (int(v) for v in a.size.split("x"))

    import jax
    import jax.numpy as jnp
    from scipy.spatial.transform import Rotation

    from data_pipelines.synthetic import SceneConfig, generate_clip
    from flow3r_jax.geometry import flow_to_ndc_coords, unproject_depth
    from flow3r_jax.losses import consistency as C

    @jax.jit
    def score(out, batch, gt):
        rigid, flow, mask, _ = C.consistency_inputs(out, batch)
        dyn, _, tested = C.dynamic_regions(out, batch)
        cov = batch["covisible"]
        err = jnp.sqrt(jnp.sum((rigid - flow) ** 2, -1))
        static = tested & ~gt
        return dict(
            tp=jnp.sum(dyn & gt & cov), fp=jnp.sum(dyn & ~gt & cov), fn=jnp.sum(~dyn & gt & cov),
            tested_dyn=jnp.sum(tested & gt), cov_dyn=jnp.sum(cov & gt), loss=C.cross_consistency(rigid, flow, mask, batch["pair_valid"]),
            static_err=jnp.sum(jnp.where(static, err, 0.0)) / jnp.maximum(jnp.sum(static), 1),
        )

    rng = np.random.default_rng(a.seed)
    totals = {"exact": [], "noisy": []}
    for k in range(a.clips):
        c = generate_clip(SceneConfig(height=H, width=W, frames=a.frames, dynamic=True, offsets=(1, 2)), seed=a.seed + k)
        P = len(c["pairs"])
        batch = dict(flow_target=flow_to_ndc_coords(jnp.asarray(c["flow"]))[None], covisible=jnp.asarray(c["covisible"])[None], pairs=jnp.asarray(c["pairs"])[None], pair_valid=jnp.ones((1, P), bool))
        gt = jnp.asarray(c["dynamic"][c["pairs"][:, 0]])[None]
        for setting in totals:
            depth, poses = c["depth"].copy(), c["poses"].copy()
            if setting == "noisy":
                depth = depth * (1 + 0.03 * rng.normal(size=(a.frames, 1, 1))) * (1 + 0.02 * rng.normal(size=depth.shape))
                step = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=-1).mean()
                poses[:, :3, :3] = poses[:, :3, :3] @ Rotation.from_rotvec(rng.normal(size=(a.frames, 3)) * np.deg2rad(0.3) / np.sqrt(3)).as_matrix()
                poses[:, :3, 3] += rng.normal(size=(a.frames, 3)) * 0.03 * step / np.sqrt(3)
            pts = unproject_depth(jnp.asarray(depth, jnp.float32), jnp.asarray(c["intrinsics"]))[None]
            out = dict(local_points=pts, camera_poses=jnp.asarray(poses, jnp.float32)[None], flow=batch["flow_target"])
            totals[setting].append({key: float(v) for key, v in score(out, batch, gt).items()})

    print(f"DF-Net dynamic-region estimate: {a.clips} synthetic dynamic clips, {a.frames} frames {H}x{W}, offsets 1,2 both ways")
    print("| geometry | precision | recall | tested share of moving px | consistency loss | static |r - f| px |")
    print("|---|---|---|---|---|---|")
    for setting, rows in totals.items():
        s = {key: sum(r[key] for r in rows) for key in rows[0]}
        p, r = s["tp"] / max(s["tp"] + s["fp"], 1), s["tp"] / max(s["tp"] + s["fn"], 1)
        print(f"| {setting} | {p:.3f} | {r:.3f} | {s['tested_dyn'] / max(s['cov_dyn'], 1):.3f} | {np.mean([x['loss'] for x in rows]):.3f} | {np.mean([x['static_err'] for x in rows]):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
