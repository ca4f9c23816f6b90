"""The per-scene optimisation as one compiled program, for one scene or a vmapped stack.

Every step (official `model.py` + `model_wrapper_overfit.py`):
  1. depth (and features) from the model; correspondence weights at the Procrustes pixels;
  2. the focal: stage 1, FlowMap's soft-min over candidates on pair (0, 1) with a fresh random
     pixel set (`intrinsics.softmin_focal`); stage 2 (from `focal_regression_after`), a free
     parameter that starts at the mean of the last `focal_regression_window` soft-min focals;
  3. unproject with the shared K, Procrustes poses of consecutive pairs, chained;
  4. loss = 1000 x flow loss (+ 100 x track loss from step 50 when tracks are given);
  5. Adam (lr 3e-5) on the model parameters and, in stage 2, on the focal.

Stage switches are functions of the step counter (`lax.cond`, `jnp.where`), and the soft-min
window is a running sum in the carry, so a stretch of steps is one loop inside one `jax.jit`
(`_advance`: the first step index and the number of steps are arguments, so any stretch runs
the same compiled program): no Python state, no retracing, and `jax.vmap` runs several scenes
at once. The host calls it for stretches of about half a second (`CHUNK_SECONDS`; the first
call, which compiles, runs one step), reports progress and asks `stop()` between calls, so a
run can end early with the state reached (`FlowMapResult.steps_done`). The free focal has its
own Adam state, reset at the switch, as in FlowMap where that parameter receives its first
gradient (and hence its first Adam step) at step 1000.

The step's random pixel set comes from `fold_in(key, step)`, so runs are reproducible and a
vmapped run equals separate runs with the same keys.

`optimize_scene(inputs, cfg)` runs one scene; `optimize_scenes(stacked_inputs, cfg)` runs a stack.
Both return a `FlowMapResult` with the final depth, poses, focal, intrinsics and the per-step
history (loss, flow loss, track loss, focal).
"""

from __future__ import annotations

import functools
import math
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from flow3r_jax.flowmap.config import FlowMapConfig
from flow3r_jax.flowmap.inputs import SceneInputs, procrustes_validity
from flow3r_jax.flowmap.intrinsics import focal_candidates, intrinsics_from_normalized_focal, softmin_focal
from flow3r_jax.flowmap.losses import flow_loss, pose_induced_flows, track_loss
from flow3r_jax.flowmap.model import FlowMapModel
from flow3r_jax.flowmap.poses import edge_validity, poses_from_relative, procrustes_indices, relative_poses
from flow3r_jax.geometry import unproject_depth

__all__ = [
    "FlowMapResult",
    "StepMetrics",
    "RunState",
    "abstract_model",
    "init_params",
    "forward",
    "optimize_scene",
    "optimize_scenes",
    "CHUNK_SECONDS",
]

CHUNK_SECONDS = 0.5  # host-side time between progress reports / stop checks during a run
_MAX_CHUNK = 256  # most steps per compiled call (the size of its history buffers)


class StepMetrics(NamedTuple):
    loss: jax.Array  # total weighted loss
    flow_loss: jax.Array  # unweighted flow loss
    track_loss: jax.Array  # unweighted track loss (0 before it starts or without tracks)
    focal: jax.Array  # focal used this step, FlowMap units (f_px / sqrt(H W))
    poses: jax.Array  # (F, 4, 4) camera-to-world poses of this step


class RunState(NamedTuple):
    params: nnx.State
    adam: optax.OptState
    focal: jax.Array  # stage-2 free focal (FlowMap units)
    focal_adam: optax.OptState
    window_sum: jax.Array  # sum of the soft-min focals of the window before the switch


class FlowMapResult(NamedTuple):
    depth: jax.Array  # (F, H, W)
    poses: jax.Array  # (F, 4, 4) camera-to-world, frame 0 = identity
    focal: jax.Array  # () FlowMap units
    intrinsics: jax.Array  # (3, 3) pixels
    weights: jax.Array  # (F-1, P) correspondence weights at the Procrustes pixels
    history: StepMetrics  # each (steps_done, ...): the values of every step run (poses (steps_done, F, 4, 4))
    params: nnx.State  # final model parameters
    steps_done: int | None = None  # steps run: cfg.steps, or fewer when `stop()` ended the run or it converged
    converged: bool = False  # ended early by `cfg.converge_window` (a complete run, not a partial one)


# ----------------------------------------------------------------------------- set-up


def abstract_model(cfg: FlowMapConfig, num_frames: int, image_shape: tuple[int, int]) -> tuple[nnx.GraphDef, nnx.State]:
    """(graphdef, abstract state) of the model, without allocating parameters."""
    return nnx.eval_shape(lambda: nnx.split(FlowMapModel(cfg, num_frames, image_shape, rngs=nnx.Rngs(0))))


def init_params(
    cfg: FlowMapConfig,
    num_frames: int,
    image_shape: tuple[int, int],
    key: jax.Array | int = 0,
    pretrained: nnx.State | None = None,
    base_depth: jax.Array | None = None,
) -> nnx.State:
    """Initial parameters of one scene: random (FlowMap's from-scratch ablation), or a
    pretrained state (`weights.load_init`) for the CNN, or in explicit mode the base depth."""
    if isinstance(key, int):
        key = jax.random.key(key)
    if pretrained is not None:
        if cfg.depth != "cnn":
            raise ValueError("init_params: a pretrained initialisation needs depth='cnn'")
        _, abstract = abstract_model(cfg, num_frames, image_shape)
        if jax.tree.structure(abstract) != jax.tree.structure(pretrained) or any(
            a.shape != b.shape for a, b in zip(jax.tree.leaves(abstract), jax.tree.leaves(pretrained))
        ):
            raise ValueError("init_params: the pretrained state does not match this config's architecture")
        return jax.tree.map(jnp.asarray, pretrained)

    @jax.jit
    def init(key):
        return nnx.state(FlowMapModel(cfg, num_frames, image_shape, rngs=nnx.Rngs(key)))

    params = init(key)
    if cfg.depth == "explicit" and base_depth is not None:
        params["explicit"]["depth"].set_value(jnp.asarray(base_depth, jnp.float32))
    return params


def _optimizer(cfg: FlowMapConfig, focal: bool = False) -> optax.GradientTransformation:
    lr = cfg.focal_lr if focal and cfg.focal_lr is not None else cfg.lr
    return optax.adam(lr)  # torch defaults: betas (0.9, 0.999), eps 1e-8


def _initial_state(cfg: FlowMapConfig, params: nnx.State) -> RunState:
    focal = jnp.zeros((), jnp.float32)
    return RunState(params, _optimizer(cfg).init(params), focal, _optimizer(cfg, focal=True).init(focal), jnp.zeros((), jnp.float32))


# ---------------------------------------------------------------------------- one step


class _Static(NamedTuple):
    """Host-side constants of a compiled run (shapes decide them)."""

    proc_idx: np.ndarray
    candidates: np.ndarray
    soft_points: int
    soft_perm: np.ndarray


def _static(cfg: FlowMapConfig, image_shape) -> _Static:
    H, W = image_shape
    return _Static(
        procrustes_indices(H, W, cfg.procrustes_points),
        focal_candidates(cfg.focal_min, cfg.focal_max, cfg.focal_candidates),
        min(cfg.softmin_points, H * W),
        np.random.default_rng(0).permutation(H * W).astype(np.int32),
    )


def _softmin_pixels(st: _Static, key) -> jax.Array:
    """The step's soft-min pixels: a window of P consecutive entries, at a random offset, of a
    fixed random permutation of all pixels. Like FlowMap's fresh `randperm(HW)[:P]` every pixel
    is drawn with probability P / HW and the P pixels are distinct; unlike it, no per-step sort
    (a full random permutation of 35840 pixels cost ~20 ms per step on the CPU)."""
    n = len(st.soft_perm)
    offset = jax.random.randint(key, (), 0, n)
    return jnp.asarray(st.soft_perm)[(offset + jnp.arange(st.soft_points)) % n]


def _validity(cfg: FlowMapConfig, inputs: SceneInputs) -> jax.Array | None:
    """(F-1, H*W) Procrustes validity of the backward correspondences, or None (unmasked)."""
    if not cfg.procrustes_mask:
        return None
    valid = inputs.valid_bw if inputs.valid_bw is not None else procrustes_validity(inputs.flow_fw, inputs.flow_bw)
    valid = valid.reshape(valid.shape[0], -1)
    # A pair with no valid correspondence at all (flow of another video, say) keeps its weights.
    return jnp.where(jnp.sum(valid, axis=1, keepdims=True) > 0, valid, 1.0)


def _softmin(model: FlowMapModel, cfg, st: _Static, depth, features, inputs: SceneInputs, key, valid=None):
    idx = _softmin_pixels(st, key)
    feats = None if features is None else features[:2]
    w = model.weights(feats, inputs.flow_bw[:1], idx)[0]
    if valid is not None:
        w = w * valid[0, idx]
    focal, _ = softmin_focal(depth[:2], inputs.flow_bw[0], w, idx, jnp.asarray(st.candidates), cfg.softmin_temperature)
    return focal


def forward(
    graphdef: nnx.GraphDef,
    cfg: FlowMapConfig,
    params: nnx.State,
    focal_param: jax.Array,
    inputs: SceneInputs,
    step: jax.Array,
    key: jax.Array,
):
    """Loss and outputs of one scene at one step: (loss, (metrics, soft-min focal, depth, poses,
    K, weights)). The soft-min focal is NaN in stage 2."""
    st = _static(cfg, inputs.image_shape)
    H, W = inputs.image_shape
    model = nnx.merge(graphdef, params)
    depth, features = model.depth(inputs.images, inputs.base_depth)
    # Every pixel (the explicit-depth setting): a slice, so the per-pixel values are used as they
    # are, not gathered with an identity index (whose gradient XLA makes a scatter, ~5 ms each).
    proc_idx = slice(None) if len(st.proc_idx) == H * W else jnp.asarray(st.proc_idx)
    weights = model.weights(features, inputs.flow_bw, proc_idx)
    valid = _validity(cfg, inputs)
    if valid is not None:
        weights = weights * valid[:, proc_idx]
    if cfg.procrustes_edge is not None:
        weights = weights * edge_validity(depth, inputs.flow_bw, proc_idx, cfg.procrustes_edge)
    step_key = jax.random.fold_in(key, step)

    if inputs.focal is not None:  # known intrinsics
        focal = soft = inputs.focal
    elif cfg.fixed_focal is not None:
        focal = soft = jnp.asarray(cfg.fixed_focal, jnp.float32)
    elif cfg.focal_regression_after is not None:
        focal, soft = jax.lax.cond(
            step >= cfg.focal_regression_after,
            lambda: (focal_param, jnp.full((), jnp.nan, jnp.float32)),
            lambda: (lambda f: (f, f))(_softmin(model, cfg, st, depth, features, inputs, step_key, valid)),
        )
    else:
        focal = soft = _softmin(model, cfg, st, depth, features, inputs, step_key, valid)

    K = intrinsics_from_normalized_focal(focal, H, W)
    if inputs.principal is not None:  # a known principal point (with a known focal)
        K = K.at[..., 0, 2].set(inputs.principal[0]).at[..., 1, 2].set(inputs.principal[1])
    points = unproject_depth(depth, K)
    rel = relative_poses(points, inputs.flow_bw, weights, proc_idx)
    poses = poses_from_relative(rel)
    pred_fw, pred_bw = pose_induced_flows(points, rel, K)
    l_flow = flow_loss(pred_fw, pred_bw, inputs.flow_fw, inputs.flow_bw, inputs.mask_fw, inputs.mask_bw, cfg.huber_delta)
    if inputs.has_tracks and cfg.track_weight > 0:
        l_track = jax.lax.cond(
            step >= cfg.track_after,
            lambda: track_loss(points, poses, K, inputs.track_xy, inputs.track_visible, cfg.huber_delta),
            lambda: jnp.zeros((), jnp.float32),
        )
    else:
        l_track = jnp.zeros((), jnp.float32)
    loss = cfg.flow_weight * l_flow + cfg.track_weight * l_track
    return loss, (StepMetrics(loss, l_flow, l_track, focal, poses), soft, depth, poses, K, weights)


def _train_step(graphdef, cfg: FlowMapConfig, inputs: SceneInputs, key, state: RunState, step):
    opt, focal_opt = _optimizer(cfg), _optimizer(cfg, focal=True)
    after = cfg.focal_regression_after if cfg.regression_active and inputs.focal is None else None
    focal_param, focal_adam = state.focal, state.focal_adam
    if after is not None:
        switch = step == after
        focal_param = jnp.where(switch, state.window_sum / cfg.focal_regression_window, focal_param)
        fresh = focal_opt.init(focal_param)
        focal_adam = jax.tree.map(lambda a, b: jnp.where(step <= after, a, b), fresh, focal_adam)

    grad_fn = jax.value_and_grad(forward, argnums=(2, 3), has_aux=True)
    (_, (metrics, soft, *_)), (g_params, g_focal) = grad_fn(graphdef, cfg, state.params, focal_param, inputs, step, key)
    updates, adam = opt.update(g_params, state.adam, state.params)
    params = optax.apply_updates(state.params, updates)

    window_sum = state.window_sum
    if after is not None:
        f_updates, f_adam = focal_opt.update(g_focal, focal_adam, focal_param)
        stage2 = step >= after
        focal_param = jnp.where(stage2, optax.apply_updates(focal_param, f_updates), focal_param)
        focal_adam = jax.tree.map(lambda new, old: jnp.where(stage2, new, old), f_adam, focal_adam)
        in_window = (step >= after - cfg.focal_regression_window) & (step < after)
        window_sum = window_sum + jnp.where(in_window, soft, 0.0)

    return RunState(params, adam, focal_param, focal_adam, window_sum), metrics


def _outputs(graphdef, cfg: FlowMapConfig, inputs: SceneInputs, key, state: RunState, step):
    """(depth, poses, focal, K, weights) at the parameters of `state`, reached after `step` steps."""
    focal = state.focal
    if cfg.regression_active and inputs.focal is None:
        # Stopped exactly at the switch: the outputs use the free focal's starting value (what
        # step `step` would use), which no step has set yet.
        focal = jnp.where(step == cfg.focal_regression_after, state.window_sum / cfg.focal_regression_window, focal)
    _, (metrics, _, depth, poses, K, weights) = forward(graphdef, cfg, state.params, focal, inputs, step, key)
    return depth, poses, metrics.focal, K, weights


def _advance(graphdef, cfg: FlowMapConfig, capacity: int, state: RunState, inputs: SceneInputs, key, first, count, finish):
    """Steps `first` .. `first + count - 1` (count <= capacity) from `state`. Returns the new
    state, the metrics of those steps in the first `count` rows of (capacity, ...) buffers, and,
    when `finish`, the outputs at the parameters reached (`_outputs`; zeros otherwise)."""
    step_fn = functools.partial(_train_step, graphdef, cfg, inputs, key)
    shapes = jax.eval_shape(step_fn, state, first)[1]
    buffers = jax.tree.map(lambda a: jnp.zeros((capacity, *a.shape), a.dtype), shapes)

    def body(i, carry):
        state, buffers = carry
        state, metrics = step_fn(state, first + i)
        return state, jax.tree.map(lambda b, m: b.at[i].set(m), buffers, metrics)

    state, buffers = jax.lax.fori_loop(0, count, body, (state, buffers))
    out = functools.partial(_outputs, graphdef, cfg, inputs, key, state, first + count)
    zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(out))
    return state, buffers, jax.lax.cond(finish, out, lambda: zeros)


def compiler_options() -> dict[str, str]:
    """XLA options of the compiled runs. On CPU, XLA's YNNPACK library fusions are turned off:
    the per-pixel geometry here (3x3 transforms of every pixel, Procrustes moments, their
    gradients) is reductions and products over axes of size 3, which those fusions ran about
    1.5x slower end to end than XLA's own loop emitter (20 x 160 x 224, measured with
    `benchmarks/flowmap_speed.py`: explicit depth 230 -> 150 ms per step, depth CNN 285 -> 194)."""
    return {"xla_cpu_experimental_ynn_fusion_type": ""} if jax.default_backend() == "cpu" else {}


def _capacity(cfg: FlowMapConfig) -> int:
    return min(cfg.steps, cfg.progress_every or _MAX_CHUNK)


def _program_config(cfg: FlowMapConfig) -> FlowMapConfig:
    """`cfg` less the host-side stopping rule (runs that differ only in it share a program)."""
    return cfg.replace(converge_window=0, converge_rtol=FlowMapConfig.converge_rtol)


@functools.lru_cache(maxsize=16)
def _compiled(graphdef, cfg: FlowMapConfig, batched: bool):
    """(start: params -> RunState, advance: `_advance`), jitted (and vmapped over scenes)."""
    start = functools.partial(_initial_state, cfg)
    advance = functools.partial(_advance, graphdef, cfg, _capacity(cfg))
    if batched:
        start = jax.vmap(start)
        advance = jax.vmap(advance, in_axes=(0, 0, 0, None, None, None))
    options = compiler_options()
    return jax.jit(start, compiler_options=options), jax.jit(advance, compiler_options=options)


def _next_count(count: int, seconds: float, capacity: int) -> int:
    """Steps for the next call: about CHUNK_SECONDS of them at the last call's pace, growing at
    most twofold per call."""
    per_step = max(seconds / max(count, 1), 1e-6)
    return int(max(1, min(capacity, 2 * count, CHUNK_SECONDS / per_step)))


def converge_start(cfg: FlowMapConfig, has_focal: bool = False) -> int:
    """The first step count at which `cfg.converge_window` may end a run: two windows, both after
    the free-focal switch when the run has one."""
    W = cfg.converge_window
    after = cfg.focal_regression_after if cfg.regression_active and not has_focal else None
    return 2 * W + (after if after is not None and after < cfg.steps else 0)


def has_converged(losses: np.ndarray, window: int, rtol: float) -> bool:
    """|mean(last W) - mean(W before)| <= rtol |mean(W before)| over per-step losses (steps
    last; leading axes, e.g. scenes, are averaged first)."""
    loss = np.asarray(losses, np.float64).reshape(-1, np.shape(losses)[-1]).mean(0)
    if window < 1 or loss.shape[-1] < 2 * window or not np.all(np.isfinite(loss[-2 * window :])):
        return False
    before, last = loss[-2 * window : -window].mean(), loss[-window:].mean()
    return abs(last - before) <= rtol * abs(before)


def _drive(compiled, cfg: FlowMapConfig, params, inputs: SceneInputs, key, batched: bool, progress, stop) -> FlowMapResult:
    """The host loop: stretches of steps until `cfg.steps` are done, `stop()` says so (asked
    between calls, never inside one; at least one step runs) or the loss has converged
    (`cfg.converge_window`), then the outputs."""
    start, advance = compiled
    state = start(params)
    capacity = _capacity(cfg)
    axis = 1 if batched else 0
    chunks, done, count, outputs, converged = [], 0, 1, None, False
    earliest = converge_start(cfg, inputs.focal is not None) if cfg.converge_window else None
    while done < cfg.steps:
        if done and stop is not None and stop():
            break
        if earliest is not None and done >= earliest:
            losses = np.concatenate([np.moveaxis(np.asarray(c.loss), axis, -1) for c in chunks], axis=-1)
            if has_converged(losses, cfg.converge_window, cfg.converge_rtol):
                converged = True
                break
        count = min(count, cfg.steps - done)
        finish = done + count == cfg.steps
        t0 = time.perf_counter()
        state, buffers, out = advance(state, inputs, key, jnp.int32(done), jnp.int32(count), finish)
        metrics = jax.device_get(buffers)  # waits for the stretch
        seconds = time.perf_counter() - t0
        chunks.append(jax.tree.map(lambda b: np.take(b, np.arange(count), axis=axis), metrics))
        if finish:
            outputs = out
        if progress is not None:
            progress(done + count - 1, float(np.mean(np.take(metrics.loss, count - 1, axis=axis))))
        # The first call compiles, so its time says nothing about the pace: the second runs one
        # step too, and later ones are sized by the pace of the one before.
        ran, done = count, done + count
        count = _next_count(ran, seconds, capacity) if len(chunks) > 1 else 1
    if outputs is None:
        _, _, outputs = advance(state, inputs, key, jnp.int32(done), jnp.int32(0), True)
    history = jax.tree.map(lambda *xs: np.concatenate(xs, axis=axis), *chunks)
    depth, poses, focal, K, weights = outputs
    return FlowMapResult(depth, poses, focal, K, weights, history, state.params, done, converged)


# ------------------------------------------------------------------------------ public


def _key(key):
    return jax.random.key(key) if isinstance(key, int) else key


def optimize_scene(
    inputs: SceneInputs,
    cfg: FlowMapConfig = FlowMapConfig(),
    params: nnx.State | None = None,
    key: jax.Array | int = 0,
    progress: Callable[[int, float], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> FlowMapResult:
    """Runs the optimisation of one scene with one compiled program. `params` default to a
    random initialisation from `key` (FlowMap's from-scratch setting); pass
    `init_params(..., pretrained=weights.load_init())` for the pretrained start.

    `progress(step, loss)` is called on the host after every stretch of steps (the index of its
    last step and that step's loss; the first call comes after compilation and one step).
    `stop()` is asked between stretches (about every `CHUNK_SECONDS`); when it returns True the
    run ends there, and the result holds the state reached (`steps_done` < `cfg.steps`)."""
    F, (H, W) = inputs.num_frames, inputs.image_shape
    key = _key(key)
    if params is None:
        params = init_params(cfg, F, (H, W), jax.random.fold_in(key, 1), base_depth=inputs.base_depth)
    graphdef, _ = abstract_model(cfg, F, (H, W))
    return _drive(_compiled(graphdef, _program_config(cfg), False), cfg, params, inputs, key, False, progress, stop)


def optimize_scenes(
    inputs: SceneInputs,
    cfg: FlowMapConfig = FlowMapConfig(),
    params: nnx.State | None = None,
    keys: jax.Array | None = None,
    progress: Callable[[int, float], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> FlowMapResult:
    """`optimize_scene` over S stacked scenes (`inputs.stack_scenes`) at once with `jax.vmap`:
    params and keys carry a leading S axis (a single unstacked params state is broadcast).
    `progress` receives the mean loss over the scenes; `stop` ends every scene at once."""
    S = inputs.images.shape[0]
    F, (H, W) = inputs.images.shape[1], inputs.images.shape[2:4]
    if keys is None:
        keys = jax.random.split(jax.random.key(0), S)
    graphdef, abstract = abstract_model(cfg, F, (H, W))
    if params is None:
        params = jax.vmap(lambda k, b: init_params_traced(cfg, F, (H, W), k, b))(keys, inputs.base_depth)
    elif jax.tree.leaves(params)[0].shape == jax.tree.leaves(abstract)[0].shape:
        params = jax.tree.map(lambda a: jnp.broadcast_to(a, (S,) + a.shape), params)
    return _drive(_compiled(graphdef, _program_config(cfg), True), cfg, params, inputs, keys, True, progress, stop)


def init_params_traced(cfg, num_frames, image_shape, key, base_depth=None):
    """`init_params` for random initialisation inside a transform (e.g. vmapped over keys)."""
    params = nnx.state(FlowMapModel(cfg, num_frames, image_shape, rngs=nnx.Rngs(jax.random.fold_in(key, 1))))
    if cfg.depth == "explicit" and base_depth is not None:
        params["explicit"]["depth"].set_value(base_depth)
    return params


def focal_px(result_focal, image_shape) -> jax.Array:
    """FlowMap-unit focal -> pixels."""
    H, W = image_shape
    return result_focal * math.sqrt(H * W)
