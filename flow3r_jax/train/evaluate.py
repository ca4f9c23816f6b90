"""Held-back-clip metrics for the training loop's eval hook (`config.eval.fn =
"flow3r_jax.train.evaluate:heldout_metrics"`, `config.eval.sources = DIRS`).

On the first `config.eval.batches` samples of the held-back datasets (centre crop, no colour
jitter, the same frames and pairs every time):
- `flow_epe`: mean end-point error in pixels of the flow head over covisible pixels of valid
  pairs; `flow_1px`/`flow_3px`/`flow_5px` the fraction of those pixels below 1/3/5 px;
- `rot_err_deg`: mean geodesic angle between predicted and true relative rotations over all
  ordered frame pairs of labeled samples (pose-free: invariant to the world frame);
- `point_loss`: the training point loss (S*-aligned, normalised), labeled samples.
The benchmark protocols of the papers live in `flow3r_jax.eval`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from flow3r_jax.data.pipeline import HOST_ONLY_KEYS, InputConfig, build_dataset
from flow3r_jax.data.sample import SampleConfig
from flow3r_jax.data.targets import prepare_batch
from flow3r_jax.geometry import geodesic_angle, ndc_coords_to_flow, relative_pose
from flow3r_jax.losses import LossConfig, flow3r_loss
from flow3r_jax.models.inference import Predictor

__all__ = ["heldout_metrics", "evaluate_batches", "heldout_batches"]


def heldout_batches(config, count: int | None = None) -> list[dict]:
    from flow3r_jax.train.loop import parse_sources

    sources = parse_sources(config.eval.sources)
    if not sources:
        raise ValueError("config.eval.sources is empty: the held-back dataset directories are needed")
    d = config.data
    sample = SampleConfig(frames=d.frames, pairs=d.pairs, height=d.height, width=d.width, frame_mode=d.frame_mode, train=False)
    icfg = InputConfig(sources=sources, batch_size=1, sample=sample, seed=d.seed + 12345, shuffle=False, read_threads=1, keep_freed_memory=False)
    it = iter(build_dataset(icfg, process_index=0, process_count=1))
    return [next(it) for _ in range(count or config.eval.batches)]


# Compiled once per shape (op by op, the first eval of a run took ~30 s on CPU, mostly compiling
# each operation of the targets and the loss).
_prepare = jax.jit(prepare_batch)
_flow_px = jax.jit(ndc_coords_to_flow)


@jax.jit
def _relative_angles(poses, poses_gt):
    """(B, N, N) degrees between predicted and true relative rotations of every frame pair."""
    rel_p = relative_pose(poses[:, :, None], poses[:, None])
    rel_g = relative_pose(poses_gt[:, :, None], poses_gt[:, None])
    return jnp.degrees(geodesic_angle(rel_p[..., :3, :3], rel_g[..., :3, :3]))


@jax.jit
def _point_loss(out, batch):
    return flow3r_loss(out, batch, LossConfig())[1]["point"]


def evaluate_batches(model, batches: list[dict]) -> dict[str, float]:
    predict = Predictor(model)
    epe, under, n_px, rot, n_rot, point = [], {1: 0.0, 3: 0.0, 5: 0.0}, 0, 0.0, 0, []
    for host in batches:
        b = _prepare({k: jnp.asarray(v) for k, v in host.items() if k not in HOST_ONLY_KEYS})
        out = predict(b["images"], b["pairs"])
        mask = np.asarray(b["covisible"] & b["pair_valid"][..., None, None])
        err = np.linalg.norm(np.asarray(_flow_px(jnp.asarray(out["flow"]))) - np.asarray(b["flow"]), axis=-1)[mask]
        epe.append(err.sum())
        n_px += err.size
        for t in under:
            under[t] += float((err < t).sum())
        if bool(np.asarray(b["labeled"]).all()):
            ang = np.asarray(_relative_angles(jnp.asarray(out["camera_poses"]), b["poses"]))
            N = ang.shape[-1]
            off = ~np.eye(N, dtype=bool)
            rot += float(ang[..., off].sum())
            n_rot += int(ang[..., off].size)
            point.append(float(_point_loss({k: jnp.asarray(v) for k, v in out.items()}, b)))
    res = {"flow_epe": float(np.sum(epe) / max(n_px, 1))}
    res.update({f"flow_{t}px": under[t] / max(n_px, 1) for t in under})
    if n_rot:
        res["rot_err_deg"] = rot / n_rot
        res["point_loss"] = float(np.mean(point))
    return res


_CACHE: dict = {}


def heldout_metrics(model, config, step: int) -> dict[str, float]:
    """The eval hook: metrics of `model` on the held-back clips (batches cached per config)."""
    key = (str(config.eval.sources), config.eval.batches, config.data.frames, config.data.pairs, config.data.height, config.data.width)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = heldout_batches(config)
    return evaluate_batches(model, _CACHE[key])
