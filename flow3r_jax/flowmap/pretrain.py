"""FlowMap's pretraining recipe: the depth CNN and the correspondence MLP trained across many
clips with the same self-supervised loss as the per-scene optimisation, giving the default
initialisation of `reconstruct` (official `pretrain.py` / `pretrain.yaml`: 8-frame clips, flow
loss only, soft-min intrinsics throughout, Adam; there on CO3D + RealEstate10K with GMFlow
flow, here on the synthetic scenes of `data_pipelines.synthetic`).

Same compiled machinery as `optimize`: a training step is `optimize.forward` vmapped over a
batch of clips with shared parameters (the mean loss), and a chunk of steps is one `lax.scan`
inside one `jax.jit`. The clip pool lives on the device; each step draws its clips, a window of
consecutive frames, a time reversal and a horizontal flip from the step's key, so no data
crosses the host boundary inside a chunk.

Pool layout (`ClipPool`, N clips of K frames): images uint8 (N, K, H, W, 3); flow_fw,
flow_bw float16 (N, K-1, H, W, 2) consecutive flows (pixels, flow3r_jax conventions). Masks are
FlowMap's photometric weights, computed per step.

    python -m flow3r_jax.flowmap.pretrain --out flow3r_jax/flowmap/assets/pretrained_init.npz

builds the pool from synthetic scenes (exact flow, and OpenCV DIS flow for a share of clips so
the correspondence MLP sees real flow errors) and trains; see `main` for the options.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from flow3r_jax.flowmap.config import FlowMapConfig
from flow3r_jax.flowmap.inputs import SceneInputs
from flow3r_jax.flowmap.losses import photometric_mask
from flow3r_jax.flowmap.optimize import abstract_model, compiler_options, forward, init_params
from flow3r_jax.flowmap.weights import save_init

__all__ = ["ClipPool", "PretrainConfig", "sample_batch", "pretrain", "main"]

log = logging.getLogger(__name__)


class ClipPool(NamedTuple):
    images: jax.Array  # uint8 (N, K, H, W, 3)
    flow_fw: jax.Array  # float16 (N, K-1, H, W, 2)
    flow_bw: jax.Array  # float16 (N, K-1, H, W, 2)
    focal: jax.Array  # float32 (N,) focal in FlowMap units (f_px / sqrt(H W))


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """steps, batch (clips per step), frames (per clip), lr -> lr_final (cosine, after
    `warmup` linear steps), chunk (steps per compiled call), seed; `flowmap` holds the model and
    loss settings (its focal regression is off, as in FlowMap's pretraining). `known_focal` uses
    each clip's true focal instead of the soft-min (see the module docstring)."""

    steps: int = 3000
    batch: int = 4
    frames: int = 8
    lr: float = 3e-4
    lr_final: float = 3e-5
    warmup: int = 100
    chunk: int = 100
    seed: int = 0
    known_focal: bool = True
    flowmap: FlowMapConfig = FlowMapConfig(focal_regression_after=None)

    def __post_init__(self):
        if self.flowmap.depth != "cnn":
            raise ValueError("PretrainConfig: pretraining needs the CNN depth mode")
        if self.flowmap.regression_active:
            object.__setattr__(self, "flowmap", self.flowmap.replace(focal_regression_after=None))


def sample_batch(pool: ClipPool, key: jax.Array, batch: int, frames: int, known_focal: bool = True) -> SceneInputs:
    """Draws `batch` clips of `frames` consecutive frames from the pool, each randomly reversed
    in time and flipped left-right (flow adjusted), with photometric masks (and their focal when
    `known_focal`)."""
    N, K = pool.images.shape[:2]
    k_clip, k_start, k_rev, k_flip = jax.random.split(key, 4)
    clip = jax.random.randint(k_clip, (batch,), 0, N)
    start = jax.random.randint(k_start, (batch,), 0, K - frames + 1)
    reverse = jax.random.bernoulli(k_rev, 0.5, (batch,))
    flip = jax.random.bernoulli(k_flip, 0.5, (batch,))

    def one(c, s, rev, fl):
        img = jax.lax.dynamic_slice_in_dim(pool.images[c], s, frames).astype(jnp.float32) / 255.0
        fw = jax.lax.dynamic_slice_in_dim(pool.flow_fw[c], s, frames - 1).astype(jnp.float32)
        bw = jax.lax.dynamic_slice_in_dim(pool.flow_bw[c], s, frames - 1).astype(jnp.float32)
        img, fw, bw = jax.lax.cond(rev, lambda: (img[::-1], bw[::-1], fw[::-1]), lambda: (img, fw, bw))
        sign = jnp.asarray([-1.0, 1.0], jnp.float32)
        img, fw, bw = jax.lax.cond(fl, lambda: (img[:, :, ::-1], fw[:, :, ::-1] * sign, bw[:, :, ::-1] * sign), lambda: (img, fw, bw))
        return SceneInputs(img, fw, bw, photometric_mask(img, fw), photometric_mask(img, bw, backward=True))

    out = jax.vmap(one)(clip, start, reverse, flip)
    return out._replace(focal=pool.focal[clip]) if known_focal else out


def _schedule(cfg: PretrainConfig):
    decay = optax.cosine_decay_schedule(cfg.lr, max(cfg.steps - cfg.warmup, 1), alpha=cfg.lr_final / cfg.lr)
    return optax.join_schedules([optax.linear_schedule(cfg.lr / 10, cfg.lr, cfg.warmup), decay], [cfg.warmup])


def _chunk_fn(graphdef, cfg: PretrainConfig, length: int):
    opt = optax.adam(_schedule(cfg))
    fm = cfg.flowmap

    def batch_loss(params, inputs, step, key):
        keys = jax.random.split(key, cfg.batch)
        loss_fn = lambda inp, k: forward(graphdef, fm, params, jnp.zeros((), jnp.float32), inp, step, k)  # noqa: E731
        loss, (metrics, *_) = jax.vmap(loss_fn)(inputs, keys)
        return jnp.mean(loss), metrics

    def step_fn(carry, step):
        params, opt_state, pool, key = carry
        k_data, k_loss = jax.random.split(jax.random.fold_in(key, step))
        inputs = sample_batch(pool, k_data, cfg.batch, cfg.frames, cfg.known_focal)
        (loss, metrics), grads = jax.value_and_grad(batch_loss, has_aux=True)(params, inputs, step, k_loss)
        grads = jax.tree.map(lambda g: jnp.where(jnp.isfinite(g), g, 0.0), grads)  # a degenerate clip must not poison the weights
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, pool, key), (loss, jnp.mean(metrics.flow_loss), jnp.mean(metrics.focal))

    @functools.partial(jax.jit, compiler_options=compiler_options())
    def run(params, opt_state, pool, key, first_step):
        (params, opt_state, _, _), hist = jax.lax.scan(step_fn, (params, opt_state, pool, key), first_step + jnp.arange(length))
        return params, opt_state, hist

    return opt, run


def pretrain(pool, cfg: PretrainConfig = PretrainConfig(), params: nnx.State | None = None, on_chunk=None):
    """Trains from `params` (default: random) on the pool; returns (params, history dict of
    per-step loss, flow loss and mean focal). `pool` is a `ClipPool`, or a function of the step
    returning the pool to use from that step on (called at every chunk; return the same object
    to keep it), so that a long run can draw fresh scenes. `on_chunk(step, params, hist)` is
    called after every compiled chunk (e.g. to log or checkpoint)."""
    pool_fn = pool if callable(pool) else (lambda step: pool)
    pool = pool_fn(0)
    H, W = pool.images.shape[2:4]
    graphdef, _ = abstract_model(cfg.flowmap, cfg.frames, (H, W))
    if params is None:
        params = init_params(cfg.flowmap, cfg.frames, (H, W), jax.random.key(cfg.seed))
    current = pool
    pool = ClipPool(*(jnp.asarray(a) for a in pool))
    key = jax.random.key(cfg.seed + 1)
    opt, _ = _chunk_fn(graphdef, cfg, cfg.chunk)
    opt_state = opt.init(params)
    runs = {}
    history = {"loss": [], "flow_loss": [], "focal": []}
    step = 0
    while step < cfg.steps:
        new = pool_fn(step)
        if new is not current:
            current = new
            pool = ClipPool(*(jnp.asarray(a) for a in new))
        length = min(cfg.chunk, cfg.steps - step)
        if length not in runs:
            runs[length] = _chunk_fn(graphdef, cfg, length)[1]
        params, opt_state, hist = runs[length](params, opt_state, pool, key, jnp.asarray(step, jnp.int32))
        for name, values in zip(history, hist):
            history[name].extend(np.asarray(values).tolist())
        step += length
        if on_chunk is not None:
            on_chunk(step, params, history)
    return params, history


# ---------------------------------------------------------------------- synthetic pool


def build_synthetic_pool(num_clips: int, frames: int, height: int, width: int, seed: int = 10_000, teacher_share: float = 0.5, flow_px=(2.0, 12.0)):
    """A pool of static synthetic room clips (seeds seed, seed + 1, ...; the accuracy benchmark
    holds out seeds below 1000). A `teacher_share` of the clips carry OpenCV DIS flow instead
    of the exact flow."""
    from data_pipelines.flow_teacher import DISTeacher, compute_pair_flows  # offline data side
    from data_pipelines.synthetic import SceneConfig, generate_clip

    from flow3r_jax.flowmap.inputs import consecutive_flows

    rng = np.random.default_rng(seed)
    teacher = DISTeacher("medium")
    cfg = SceneConfig(height=height, width=width, frames=frames, dynamic=False, preset="mixed", kind="room", offsets=(1,), flow_px=flow_px)
    images, fws, bws, focals = [], [], [], []
    t0 = time.time()
    for n in range(num_clips):
        clip = generate_clip(cfg, seed=seed + n)
        if rng.random() < teacher_share:
            out = compute_pair_flows(teacher, clip["images"], clip["pairs"]).flow
            fw, bw = consecutive_flows(clip["pairs"], out)
        else:
            fw, bw = consecutive_flows(clip["pairs"], clip["flow"])
        images.append(clip["images"])
        focals.append(clip["intrinsics"][0, 0, 0] / math.sqrt(height * width))
        fws.append(fw.astype(np.float16))
        bws.append(bw.astype(np.float16))
        if (n + 1) % 50 == 0:
            log.info("pool: %d/%d clips (%.0f s)", n + 1, num_clips, time.time() - t0)
    return ClipPool(np.stack(images), np.stack(fws), np.stack(bws), np.asarray(focals, np.float32))


class _StopPretraining(Exception):
    pass


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Pretrain the FlowMap depth CNN + correspondence MLP on synthetic scenes.")
    p.add_argument("--out", required=True, help="output .npz (e.g. flow3r_jax/flowmap/assets/pretrained_init.npz)")
    p.add_argument("--clips", type=int, default=400)
    p.add_argument("--clip-frames", type=int, default=12)
    p.add_argument("--size", default="160x224", help="HxW")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--chunk", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool-seed", type=int, default=10_000)
    p.add_argument("--teacher-share", type=float, default=0.5)
    p.add_argument("--pool-cache", default=None, help="save / reuse the clip pool here (.npz)")
    p.add_argument("--refresh", type=int, default=0, help="render a fresh pool of --clips scenes every this many steps (0: one pool)")
    p.add_argument("--init", default=None, help="continue from this initialisation file")
    p.add_argument("--softmin", action="store_true", help="estimate each clip's focal by the soft-min (FlowMap's pretraining) instead of using the known one")
    p.add_argument("--stop-after", type=int, default=None, help="stop after this many steps (the learning-rate schedule still spans --steps)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    H, W = (int(v) for v in args.size.lower().split("x"))

    import os

    if args.pool_cache and os.path.isfile(args.pool_cache):
        with np.load(args.pool_cache) as d:
            pool = ClipPool(d["images"], d["flow_fw"], d["flow_bw"], d["focal"])
        log.info("pool: loaded %s (%d clips)", args.pool_cache, len(pool.images))
    else:
        pool = build_synthetic_pool(args.clips, args.clip_frames, H, W, args.pool_seed, args.teacher_share)
        if args.pool_cache:
            np.savez(args.pool_cache, **pool._asdict())
    if args.refresh:
        pools = {0: pool}

        def pool_at(step):
            k = step // args.refresh
            if k not in pools:
                pools.clear()
                log.info("pool: rendering %d fresh clips (seeds from %d)", args.clips, args.pool_seed + k * args.clips)
                pools[k] = build_synthetic_pool(args.clips, args.clip_frames, H, W, args.pool_seed + k * args.clips, args.teacher_share)
            return pools[k]

        source = pool_at
    else:
        source = pool
    cfg = PretrainConfig(steps=args.steps, batch=args.batch, frames=args.frames, lr=args.lr, lr_final=args.lr / 10, chunk=args.chunk, seed=args.seed, known_focal=not args.softmin)
    params = None
    if args.init:
        from flow3r_jax.flowmap.weights import load_init

        params, fm = load_init(args.init, cfg.flowmap)
        cfg = dataclasses.replace(cfg, flowmap=fm)
    info = dict(recipe="flow3r_jax.flowmap.pretrain", clips=int(len(pool.images)), refresh=args.refresh, clip_frames=int(pool.images.shape[1]), size=[H, W], steps=args.steps, batch=args.batch, frames=args.frames, lr=args.lr, pool_seed=args.pool_seed, teacher_share=args.teacher_share, known_focal=not args.softmin)
    t0 = time.time()

    def on_chunk(step, params, hist):
        n = min(len(hist["loss"]), cfg.chunk)
        log.info("step %d/%d  loss %.4f  flow %.5f  focal %.3f  (%.0f s)", step, cfg.steps, np.mean(hist["loss"][-n:]), np.mean(hist["flow_loss"][-n:]), np.mean(hist["focal"][-n:]), time.time() - t0)
        save_init(args.out, params, cfg.flowmap, dict(info, steps_done=step))
        if args.stop_after is not None and step >= args.stop_after:
            raise _StopPretraining

    try:
        pretrain(source, cfg, params, on_chunk)
    except _StopPretraining:
        log.info("stopped after step %d (--stop-after)", args.stop_after)
    log.info("wrote %s", args.out)
    print(json.dumps(dict(out=args.out, seconds=round(time.time() - t0)), indent=1))


if __name__ == "__main__":
    main()
