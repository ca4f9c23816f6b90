"""Test-time fine-tuning of TracksTo4D on one clip's tracks (official `inference.py
--finetunning_iterations`: Adam lr 1e-4 on the network, the training loss, and the parameters of
the lowest loss seen are kept), run the way FlowMap's per-scene optimisation runs
(`flowmap.optimize`): stretches of steps as one `lax.fori_loop` inside one `jax.jit` whose first
step and step count are arguments (no retracing), sized to about `CHUNK_SECONDS` on the host,
with progress and `stop()` between stretches, and its XLA options.

    result = finetune_tracks4d(tracks_px, visible, intrinsics, cfg=Tracks4DConfig(...), steps=500)
    result.poses (T, 4, 4) camera-to-world; result.intrinsics (T, 3, 3) pixels (the focal
    correction applied); result.points (T, N, 3) world; result.depth (T, N); result.history.

From a random initialisation (no pretrained TracksTo4D weights exist in this project) the first
`loss_cfg.warmup_steps` steps are the official camera warm-up.
"""

from __future__ import annotations

import functools
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from flow3r_jax.data.tracks4d import normalise_tracks
from flow3r_jax.flowmap.optimize import _next_count, compiler_options  # FlowMap's pacing and XLA options
from flow3r_jax.losses.tracks4d import Tracks4DLossConfig, full_points, tracks4d_loss
from flow3r_jax.models.tracks4d import Tracks4D, Tracks4DConfig, project

__all__ = ["Tracks4DResult", "finetune_tracks4d", "tracks4d_outputs"]

_MAX_CHUNK = 256


class Tracks4DResult(NamedTuple):
    poses: np.ndarray  # (T, 4, 4) camera-to-world
    intrinsics: np.ndarray  # (T, 3, 3) pixels
    points: np.ndarray  # (T, N, 3) world
    depth: np.ndarray  # (T, N) camera z-depth of the tracks' points
    motion: np.ndarray  # (N,) motion level NR
    history: np.ndarray  # (steps_done,) loss per step
    best_loss: float
    params: nnx.State
    steps_done: int


def tracks4d_outputs(out: dict, K: np.ndarray) -> dict[str, jax.Array]:
    """Model outputs of one clip (batch 1) -> poses, pixel intrinsics, points, depth."""
    T = out["rotation"].shape[1]
    poses = jnp.zeros((T, 4, 4)).at[:, :3, :3].set(out["rotation"][0]).at[:, :3, 3].set(out["centre"][0]).at[:, 3, 3].set(1.0)
    Kf = jnp.asarray(K, jnp.float32)
    Kf = Kf.at[:, 0, 0].multiply(out["focal"][0]).at[:, 1, 1].multiply(out["focal"][0])
    pts = full_points(out, stop_static=False)
    _, depth = project(pts, out["rotation"], out["centre"], out["focal"])
    return {"poses": poses, "intrinsics": Kf, "points": pts[0], "depth": depth[0], "motion": out["motion"][0]}


class _Run(NamedTuple):
    params: nnx.State
    adam: optax.OptState
    best: nnx.State
    best_loss: jax.Array


def _advance(graphdef, loss_cfg, tx, capacity, run: _Run, batch, first, count):
    def loss_fn(params, step):
        return tracks4d_loss(nnx.merge(graphdef, params)(batch["tracks"], batch["visible"]), batch, loss_cfg, step)[0]

    def body(i, carry):
        run, hist = carry
        step = first + i
        loss, g = jax.value_and_grad(loss_fn)(run.params, step)
        # the best parameters are tracked after the warm-up only (the warm-up loss is another loss)
        better = (loss < run.best_loss) & (step >= loss_cfg.warmup_steps)
        best = jax.tree.map(lambda a, b: jnp.where(better, a, b), run.params, run.best)
        updates, adam = tx.update(g, run.adam, run.params)
        params = optax.apply_updates(run.params, updates)
        return _Run(params, adam, best, jnp.where(better, loss, run.best_loss)), hist.at[i].set(loss)

    return jax.lax.fori_loop(0, count, body, (run, jnp.zeros((capacity,), jnp.float32)))


@functools.lru_cache(maxsize=8)
def _compiled(graphdef, loss_cfg, lr, capacity):
    tx = optax.adam(lr)
    return tx, jax.jit(functools.partial(_advance, graphdef, loss_cfg, tx, capacity), compiler_options=compiler_options())


def finetune_tracks4d(
    tracks_px: np.ndarray,
    visible: np.ndarray,
    intrinsics: np.ndarray,
    cfg: Tracks4DConfig = Tracks4DConfig(),
    steps: int = 500,
    loss_cfg: Tracks4DLossConfig = Tracks4DLossConfig(warmup_steps=100),
    params: nnx.State | None = None,
    lr: float = 1e-4,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> Tracks4DResult:
    """Fine-tunes (or fits from `seed`'s random initialisation) on tracks (T, N, 2) in pixels with
    visibility (T, N) and intrinsics (T, 3, 3) (approximate ones with `cfg.predict_focal`)."""
    tracks_px, visible, intrinsics = np.asarray(tracks_px, np.float32), np.asarray(visible, bool), np.asarray(intrinsics, np.float32)
    if tracks_px.ndim != 3 or tracks_px.shape[-1] != 2 or visible.shape != tracks_px.shape[:2] or intrinsics.shape != (tracks_px.shape[0], 3, 3):
        raise ValueError(f"finetune_tracks4d: tracks (T, N, 2), visible (T, N), intrinsics (T, 3, 3) expected, got {tracks_px.shape}, {visible.shape}, {intrinsics.shape}")
    if steps < 1:
        raise ValueError(f"finetune_tracks4d: steps must be >= 1, got {steps}")
    batch = {"tracks": jnp.asarray(normalise_tracks(tracks_px, intrinsics))[None], "visible": jnp.asarray(visible)[None]}
    model = nnx.eval_shape(lambda: Tracks4D(cfg, rngs=nnx.Rngs(seed)))
    graphdef, _ = nnx.split(model)
    if params is None:
        params = nnx.state(nnx.jit(lambda: Tracks4D(cfg, rngs=nnx.Rngs(seed)))())
    capacity = min(steps, _MAX_CHUNK)
    tx, advance = _compiled(graphdef, loss_cfg, float(lr), capacity)
    run = _Run(params, tx.init(params), params, jnp.asarray(jnp.inf, jnp.float32))
    hist, done, count, calls = [], 0, 1, 0
    while done < steps:
        if done and stop is not None and stop():
            break
        count = min(count, steps - done)
        t0 = time.perf_counter()
        run, h = advance(run, batch, jnp.int32(done), jnp.int32(count))
        h = np.asarray(jax.device_get(h))[:count]
        seconds = time.perf_counter() - t0
        hist.append(h)
        done, calls = done + count, calls + 1
        if progress is not None:
            progress(done - 1, float(h[-1]))
        count = _next_count(count, seconds, capacity) if calls > 1 else 1
    final = run.best if np.isfinite(float(run.best_loss)) else run.params
    out = nnx.jit(lambda m: m(batch["tracks"], batch["visible"]))(nnx.merge(graphdef, final))
    o = jax.device_get(tracks4d_outputs(out, intrinsics))
    return Tracks4DResult(np.asarray(o["poses"]), np.asarray(o["intrinsics"]), np.asarray(o["points"]), np.asarray(o["depth"]), np.asarray(o["motion"]), np.concatenate(hist), float(run.best_loss), final, done)
