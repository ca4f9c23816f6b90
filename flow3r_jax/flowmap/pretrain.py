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
flow_bw float16 (N, K-1, H, W, 2) consecutive flows (pixels, flow3r_jax conventions); focal
float32 (N,); optionally depth float16 (N, K, H, W), the true depth (0 where unknown). Masks
are FlowMap's photometric weights, computed per step.

Two departures from FlowMap's recipe: `known_focal` uses each clip's true focal instead of the
soft-min (the default here; `--softmin` is FlowMap's way, and the shipped file was made with
it), and `depth_weight` (off by default) adds a supervised scale-invariant depth term on the
pool's true depth, standing in for the supervised depth training FlowMap's MiDaS-small backbone
had before FlowMap's self-supervised fine-tuning. Neither gave a better initialisation on the
accuracy benchmark (docs/flowmap_accuracy.md).

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
import os
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
    depth: jax.Array | None = None  # float16 (N, K, H, W) true depth, 0 where unknown (for `depth_weight`)


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """steps, batch (clips per step), frames (per clip), lr -> lr_final (cosine, after
    `warmup` linear steps), chunk (steps per compiled call), seed; `flowmap` holds the model and
    loss settings (its focal regression is off, as in FlowMap's pretraining). `known_focal` uses
    each clip's true focal instead of the soft-min (see the module docstring). `depth_weight`
    > 0 adds a supervised, scale-invariant depth term (`scale_invariant_depth_loss`) on the
    pool's true depth: the stand-in for the supervised depth prior FlowMap starts from
    (MiDaS, trained on depth datasets before FlowMap's self-supervised fine-tuning)."""

    steps: int = 3000
    batch: int = 4
    frames: int = 8
    lr: float = 3e-4
    lr_final: float = 3e-5
    warmup: int = 100
    chunk: int = 100
    seed: int = 0
    known_focal: bool = True
    depth_weight: float = 0.0
    flowmap: FlowMapConfig = FlowMapConfig(focal_regression_after=None)

    def __post_init__(self):
        if self.flowmap.depth != "cnn":
            raise ValueError("PretrainConfig: pretraining needs the CNN depth mode")
        if self.flowmap.regression_active:
            object.__setattr__(self, "flowmap", self.flowmap.replace(focal_regression_after=None))


def _to_device(pool: ClipPool) -> ClipPool:
    return ClipPool(*(None if a is None else jnp.asarray(a) for a in pool))


def sample_batch(pool: ClipPool, key: jax.Array, batch: int, frames: int, known_focal: bool = True, with_depth: bool = False):
    """Draws `batch` clips of `frames` consecutive frames from the pool, each randomly reversed
    in time and flipped left-right (flow adjusted), with photometric masks (and their focal when
    `known_focal`). With `with_depth`, returns (inputs, true depth (batch, frames, H, W))
    transformed the same way."""
    if with_depth and pool.depth is None:
        raise ValueError("sample_batch: with_depth needs a pool with depth")
    pool = _to_device(pool)
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
        dep = jax.lax.dynamic_slice_in_dim(pool.depth[c], s, frames).astype(jnp.float32) if with_depth else jnp.zeros((frames, 1, 1), jnp.float32)
        img, fw, bw, dep = jax.lax.cond(rev, lambda: (img[::-1], bw[::-1], fw[::-1], dep[::-1]), lambda: (img, fw, bw, dep))
        sign = jnp.asarray([-1.0, 1.0], jnp.float32)
        img, fw, bw, dep = jax.lax.cond(
            fl, lambda: (img[:, :, ::-1], fw[:, :, ::-1] * sign, bw[:, :, ::-1] * sign, dep[:, :, ::-1]), lambda: (img, fw, bw, dep)
        )
        return SceneInputs(img, fw, bw, photometric_mask(img, fw), photometric_mask(img, bw, backward=True)), dep

    out, dep = jax.vmap(one)(clip, start, reverse, flip)
    if known_focal:
        out = out._replace(focal=pool.focal[clip])
    return (out, dep) if with_depth else out


def scale_invariant_depth_loss(depth: jax.Array, true_depth: jax.Array) -> jax.Array:
    """Mean over frames of the mean |r - mean(r)|, r = log(depth) - log(true depth) over the
    pixels with a known (positive, finite) true depth: the log-depth error after the best
    per-frame scale (in the mean sense), blind to the scale a flow loss cannot see either.
    Shapes (..., H, W); 0 for a frame without known pixels."""
    known = (true_depth > 0) & jnp.isfinite(true_depth)
    r = jnp.where(known, jnp.log(jnp.maximum(depth, 1e-6)) - jnp.log(jnp.where(known, true_depth, 1.0)), 0.0)
    n = jnp.maximum(jnp.sum(known, axis=(-2, -1)), 1)
    mean = jnp.sum(r, axis=(-2, -1)) / n
    err = jnp.sum(jnp.where(known, jnp.abs(r - mean[..., None, None]), 0.0), axis=(-2, -1)) / n
    return jnp.mean(err)


def _schedule(cfg: PretrainConfig):
    decay = optax.cosine_decay_schedule(cfg.lr, max(cfg.steps - cfg.warmup, 1), alpha=cfg.lr_final / cfg.lr)
    return optax.join_schedules([optax.linear_schedule(cfg.lr / 10, cfg.lr, cfg.warmup), decay], [cfg.warmup])


def _chunk_fn(graphdef, cfg: PretrainConfig, length: int):
    opt = optax.adam(_schedule(cfg))
    fm = cfg.flowmap

    supervised = cfg.depth_weight > 0

    def batch_loss(params, inputs, true_depth, step, key):
        keys = jax.random.split(key, cfg.batch)
        loss_fn = lambda inp, k: forward(graphdef, fm, params, jnp.zeros((), jnp.float32), inp, step, k)  # noqa: E731
        loss, (metrics, _, depth, *_) = jax.vmap(loss_fn)(inputs, keys)
        loss = jnp.mean(loss)
        if supervised:
            loss = loss + cfg.depth_weight * scale_invariant_depth_loss(depth, true_depth)
        return loss, metrics

    def step_fn(carry, step):
        params, opt_state, pool, key = carry
        k_data, k_loss = jax.random.split(jax.random.fold_in(key, step))
        drawn = sample_batch(pool, k_data, cfg.batch, cfg.frames, cfg.known_focal, with_depth=supervised)
        inputs, true_depth = drawn if supervised else (drawn, None)
        (loss, metrics), grads = jax.value_and_grad(batch_loss, has_aux=True)(params, inputs, true_depth, step, k_loss)
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
    if cfg.depth_weight > 0 and pool.depth is None:
        raise ValueError("pretrain: depth_weight > 0 needs a pool with true depth (ClipPool.depth)")

    def to_device(pool: ClipPool) -> ClipPool:  # the true depth stays on the host unless used
        return _to_device(pool if cfg.depth_weight > 0 else pool._replace(depth=None))

    pool = to_device(pool)
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
            pool = to_device(new)
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
    of the exact flow. The pool carries the true depth (0 where unknown) for `--depth_weight`."""
    from flow3r_jax.correspondence.teacher import DISTeacher, compute_pair_flows  # offline data side
    from data_pipelines.synthetic import SceneConfig, generate_clip

    from flow3r_jax.flowmap.inputs import consecutive_flows

    rng = np.random.default_rng(seed)
    teacher = DISTeacher("medium")
    cfg = SceneConfig(height=height, width=width, frames=frames, dynamic=False, preset="mixed", kind="room", offsets=(1,), flow_px=flow_px)
    images, fws, bws, focals, depths = [], [], [], [], []
    t0 = time.time()
    for n in range(num_clips):
        clip = generate_clip(cfg, seed=seed + n)
        if rng.random() < teacher_share:
            out = compute_pair_flows(teacher, clip["images"], clip["pairs"]).flow
            fw, bw = consecutive_flows(clip["pairs"], out)
        else:
            fw, bw = consecutive_flows(clip["pairs"], clip["flow"])
        images.append(clip["images"])
        depths.append(np.where(clip["valid"], clip["depth"], 0.0).astype(np.float16))
        focals.append(clip["intrinsics"][0, 0, 0] / math.sqrt(height * width))
        fws.append(fw.astype(np.float16))
        bws.append(bw.astype(np.float16))
        if (n + 1) % 50 == 0:
            log.info("pool: %d/%d clips (%.0f s)", n + 1, num_clips, time.time() - t0)
    return ClipPool(np.stack(images), np.stack(fws), np.stack(bws), np.asarray(focals, np.float32), np.stack(depths))


class _StopPretraining(Exception):
    pass


def _number(kind, low=None, high=None, low_open=False):
    """argparse `type`: an int or float in [low, high] ((low, high] with `low_open`), refused
    with the allowed range otherwise."""
    lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
    hi = "" if high is None else f"<= {high}"
    allowed = f"{'an integer' if kind is int else 'a number'}{' ' + lo if lo else ''}{' and ' + hi if lo and hi else (' ' + hi if hi else '')}"

    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {allowed}") from None
        if not math.isfinite(v) or (low is not None and (v <= low if low_open else v < low)) or (high is not None and v > high):
            raise argparse.ArgumentTypeError(f"{text} is out of range (allowed: {allowed})")
        return v

    return parse


def _size(text: str) -> tuple[int, int]:
    """argparse `type` of --size: HxW, both positive multiples of 16 (the depth CNN's stride)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HxW (e.g. 160x224)") from None
    if h < 16 or w < 16 or h % 16 or w % 16:
        raise argparse.ArgumentTypeError(f"{text} is out of range (allowed: HxW with both sides multiples of 16, at least 16)")
    return h, w


def build_parser():
    from flow3r_jax.cli import ArgumentParser

    p = ArgumentParser(module="flow3r_jax.flowmap.pretrain", description="Pretrain the FlowMap depth CNN + correspondence MLP on synthetic scenes.")
    p.add_argument("--out", required=True, help="output .npz (e.g. flow3r_jax/flowmap/assets/pretrained_init.npz)")
    p.add_argument("--clips", type=_number(int, 1), default=400, help="synthetic clips in the pool, >= 1 (default 400)")
    p.add_argument("--clip_frames", type=_number(int, 2), default=12, help="frames per pool clip, >= 2 and >= --frames (default 12)")
    p.add_argument("--size", type=_size, default=(160, 224), metavar="HxW", help="clip size HxW, multiples of 16 (default 160x224)")
    p.add_argument("--steps", type=_number(int, 1), default=3000, help="training steps, >= 1 (default 3000; the learning-rate schedule spans them)")
    p.add_argument("--batch", type=_number(int, 1), default=4, help="clips per step, >= 1 (default 4)")
    p.add_argument("--frames", type=_number(int, 2), default=8, help="frames per training clip, >= 2 (default 8, FlowMap's)")
    p.add_argument("--lr", type=_number(float, 0.0, low_open=True), default=3e-4, help="peak learning rate, > 0 (default 3e-4; cosine decay to a tenth)")
    p.add_argument("--chunk", type=_number(int, 1), default=100, help="steps per compiled call (and per log line / checkpoint), >= 1 (default 100)")
    p.add_argument("--seed", type=_number(int, 0), default=0, help="seed of the initialisation and the batches, >= 0")
    p.add_argument("--pool_seed", type=_number(int, 0), default=10_000, help="seed of the first pool scene, >= 0 (default 10000; the accuracy benchmark holds out seeds below 1000)")
    p.add_argument("--teacher_share", type=_number(float, 0.0, 1.0), default=0.5, help="share of the clips with OpenCV DIS flow instead of the exact flow, in [0, 1] (default 0.5)")
    p.add_argument("--pool_cache", default=None, help="save / reuse the clip pool here (.npz)")
    p.add_argument("--refresh", type=_number(int, 0), default=0, help="render a fresh pool of --clips scenes every this many steps, >= 0 (0: one pool)")
    p.add_argument("--init", default=None, help="continue from this initialisation file")
    p.add_argument("--softmin", action="store_true", help="estimate each clip's focal by the soft-min (FlowMap's pretraining) instead of using the known one")
    p.add_argument(
        "--depth_weight",
        type=_number(float, 0.0),
        default=0.0,
        help="add this weight (>= 0) x a scale-invariant log-depth loss on the synthetic true depth (a stand-in for FlowMap's supervised MiDaS prior; 0: self-supervised only)",
    )
    p.add_argument("--stop_after", type=_number(int, 1), default=None, help="stop after this many steps, >= 1 (the learning-rate schedule still spans --steps)")
    return p


def main(argv=None) -> None:
    p = build_parser()
    args = p.parse_args(argv)
    if args.frames > args.clip_frames:
        p.error(f"--frames {args.frames} is more than --clip_frames {args.clip_frames} (allowed: 2 <= --frames <= --clip_frames)")
    if args.init is not None and not os.path.isfile(args.init):
        p.error(f"--init {args.init}: no such file")
    parent = os.path.dirname(os.path.abspath(args.out))
    if os.path.isdir(args.out) or not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        p.error(f"--out {args.out}: needs a file path in an existing, writable directory")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    H, W = args.size

    if args.pool_cache and os.path.isfile(args.pool_cache):
        with np.load(args.pool_cache) as d:
            pool = ClipPool(d["images"], d["flow_fw"], d["flow_bw"], d["focal"], d["depth"] if "depth" in d.files else None)
        log.info("pool: loaded %s (%d clips)", args.pool_cache, len(pool.images))
        if args.depth_weight > 0 and pool.depth is None:
            raise SystemExit(f"{args.pool_cache}: this pool cache has no true depth, which --depth_weight needs; rebuild it (delete the file)")
    else:
        pool = build_synthetic_pool(args.clips, args.clip_frames, H, W, args.pool_seed, args.teacher_share)
        if args.pool_cache:
            np.savez(args.pool_cache, **{k: v for k, v in pool._asdict().items() if v is not None})
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
    cfg = PretrainConfig(steps=args.steps, batch=args.batch, frames=args.frames, lr=args.lr, lr_final=args.lr / 10, chunk=args.chunk, seed=args.seed, known_focal=not args.softmin, depth_weight=args.depth_weight)
    params = None
    if args.init:
        from flow3r_jax.flowmap.weights import load_init

        params, fm = load_init(args.init, cfg.flowmap)
        cfg = dataclasses.replace(cfg, flowmap=fm)
    info = dict(recipe="flow3r_jax.flowmap.pretrain", clips=int(len(pool.images)), refresh=args.refresh, clip_frames=int(pool.images.shape[1]), size=[H, W], steps=args.steps, batch=args.batch, frames=args.frames, lr=args.lr, pool_seed=args.pool_seed, teacher_share=args.teacher_share, known_focal=not args.softmin, depth_weight=args.depth_weight)
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
