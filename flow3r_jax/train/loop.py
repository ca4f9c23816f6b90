"""The training loop, top to bottom: `train(config, workdir)`.

1. join the cluster (`distributed.initialize`), log per process, save the resolved config;
2. the mesh and the checks that must fail before any work (mesh vs devices, batch vs axes,
   datasets present, init checkpoint present and the right size);
3. the Grain input (this process's share of every source);
4. the parameter layout, the trainable / frozen split and the optimiser;
5. the train state: restored from the workdir's latest checkpoint (parameters, optimiser and
   the data iterator: the run continues exactly), else created sharded from the init source;
6. the compiled step (ahead of time, so its FLOPs are known before the first batch);
7. the loop: batch -> step -> metrics / eval hook / checkpoint; SIGTERM saves and stops.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from flow3r_jax.data.pipeline import InputConfig, batch_spec, build_dataset, to_global_batch
from flow3r_jax.data.sample import SampleConfig
from flow3r_jax.data.sources import DatasetError
from flow3r_jax.losses import LossConfig
from flow3r_jax.models.config import get_model_config
from flow3r_jax.train import distributed
from flow3r_jax.train.checkpoint import Checkpoints, CheckpointError, PreemptionGuard, read_params
from flow3r_jax.train.mesh import BATCH_AXES, make_mesh
from flow3r_jax.train.metrics import MetricWriter, setup_logging
from flow3r_jax.train.optimizer import make_optimizer
from flow3r_jax.train.state import ParamLayout, replicated, trainable_mask
from flow3r_jax.train.step import NONFINITE_TERMS, build_train_step, make_step_fn

__all__ = ["train", "ConfigError", "parse_sources", "model_config", "TrainResult"]

log = logging.getLogger("flow3r_jax.train")


class ConfigError(ValueError):
    pass


class TrainResult(dict):
    """What `train` returns: final step, whether it was preempted, last metrics, eval results."""


def parse_sources(text: str) -> tuple[tuple[str, float], ...]:
    """'DIR[:WEIGHT],DIR[:WEIGHT]' -> ((dir, weight), ...)."""
    out = []
    for item in filter(None, (s.strip() for s in str(text).split(","))):
        path, _, weight = item.rpartition(":") if ":" in item and item.rsplit(":", 1)[1].replace(".", "", 1).isdigit() else (item, "", "1")
        out.append((os.path.expanduser(path), float(weight)))
    return tuple(out)


def model_config(c: ml_collections.ConfigDict):
    return get_model_config(c.model.size, flow_head=c.model.flow_head, trunk_dtype=c.model.trunk_dtype, remat=c.model.remat)


def _input_config(c, per_process: int) -> InputConfig:
    sources = parse_sources(c.data.sources)
    if not sources:
        raise ConfigError("config.data.sources is empty: give dataset directories, e.g. --config.data.sources=/data/labeled:1,/data/videos:3")
    for path, _ in sources:
        if not os.path.isdir(path):
            raise DatasetError(f"dataset directory not found: {path} (config.data.sources)")
    sample = SampleConfig(frames=c.data.frames, pairs=c.data.pairs, height=c.data.height, width=c.data.width, frame_mode=c.data.frame_mode, max_zoom=c.data.max_zoom, colour=c.data.colour)
    return InputConfig(sources=sources, batch_size=per_process, sample=sample, seed=c.data.seed, num_workers=c.data.num_workers, read_threads=c.data.read_threads)


def _check_batch(c, mesh) -> int:
    gb, pc = int(c.data.global_batch), jax.process_count()
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if gb < 1 or gb % shards:
        raise ConfigError(f"config.data.global_batch={gb} is not divisible by the batch axes data x fsdp = {mesh.shape['data']} x {mesh.shape['fsdp']} = {shards}")
    if gb % pc:
        raise ConfigError(f"config.data.global_batch={gb} is not divisible by the {pc} processes")
    m = int(c.train.microbatches)
    if m < 1 or (gb // shards) % m:
        raise ConfigError(f"config.train.microbatches={m} must divide the per-device batch {gb // shards}")
    return gb // pc


def _write_config(c, workdir: str) -> None:
    if jax.process_index() != 0:
        return
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(c.to_json_best_effort(indent=2, sort_keys=True))
    import dataclasses

    with open(os.path.join(workdir, "model_config.json"), "w") as f:
        json.dump(dataclasses.asdict(model_config(c)), f, indent=2)


def _initial_params(c, layout: ParamLayout, mesh, rules) -> dict:
    kind, path = c.init.kind, c.init.path
    if kind == "random":
        return layout.init_sharded(c.seed, mesh, rules)
    if not path:
        raise ConfigError(f"config.init.kind={kind!r} needs config.init.path")
    if not os.path.exists(path):
        raise CheckpointError(f"init checkpoint not found: {path} (config.init.path)")
    if kind == "pretrained":
        from flow3r_jax.models.pretrained import load_pretrained

        model = load_pretrained(path, size=c.model.size, flow_head=c.model.flow_head, trunk_dtype=c.model.trunk_dtype, remat=c.model.remat)
        host = {k: np.asarray(v) for k, v in layout.params_of(model).items()}
    elif kind == "checkpoint":
        host = read_params(path)
        missing = [n for n in layout.names if n not in host]
        extra = [n for n in host if n not in layout.shapes]
        shapes = [f"{n} {tuple(np.shape(host[n]))} vs {layout.shapes[n]}" for n in layout.names if n in host and tuple(np.shape(host[n])) != layout.shapes[n]]
        if missing or extra or shapes:
            raise CheckpointError(
                f"{path}: checkpoint parameters do not match model size {c.model.size!r}: "
                f"{len(missing)} missing {missing[:3]}, {len(extra)} unexpected {extra[:3]}, {len(shapes)} of another shape {shapes[:3]}"
            )
    else:
        raise ConfigError(f"config.init.kind must be random, pretrained or checkpoint, got {kind!r}")
    return layout.put(host, mesh, rules)


def _opt_shardings(abstract_opt, param_sh: dict, shapes: dict, mesh):
    """Each optimiser leaf that belongs to a parameter (Adam moments) gets its sharding."""
    repl = replicated(mesh)

    def pick(path, leaf):
        for k in reversed(path):
            name = getattr(k, "key", None)
            if isinstance(name, str) and name in param_sh and tuple(leaf.shape) == tuple(shapes[name]):
                return param_sh[name]
        return repl

    return jax.tree_util.tree_map_with_path(pick, abstract_opt)


def _load_eval_fn(name: str):
    if not name:
        return None
    if ":" not in name:
        raise ConfigError(f"config.eval.fn must be 'module:function', got {name!r}")
    mod, fn = name.split(":", 1)
    try:
        return getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"config.eval.fn={name!r} cannot be loaded: {e}") from e


def _host_params(state) -> dict:
    """Full parameters on this host (gathered across processes when there are several)."""
    params = {**state["frozen"], **state["params"]}
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return {k: np.asarray(v) for k, v in multihost_utils.process_allgather(params, tiled=True).items()}
    return {k: np.asarray(v) for k, v in params.items()}


def train(config: ml_collections.ConfigDict, workdir: str) -> TrainResult:
    distributed.initialize()
    setup_logging()
    c = config
    os.makedirs(workdir, exist_ok=True)

    # ---- checks that must fail before any long work --------------------------------------
    mesh = make_mesh((c.mesh.data, c.mesh.fsdp, c.mesh.tensor))
    rules = tuple(tuple(r) for r in c.mesh.rules)
    per_process = _check_batch(c, mesh)
    icfg = _input_config(c, per_process)
    mcfg = model_config(c)
    eval_fn = _load_eval_fn(c.eval.fn)
    _write_config(c, workdir)
    log.info("mesh %s over %d devices / %d processes; global batch %d (%d per process)", dict(mesh.shape), jax.device_count(), jax.process_count(), c.data.global_batch, per_process)

    # ---- parameters, optimiser, abstract state -------------------------------------------
    layout = ParamLayout.of(mcfg)
    mask = trainable_mask(layout.names, c.train.trainable)
    train_names = [n for n in layout.names if mask[n]]
    frozen_names = [n for n in layout.names if not mask[n]]
    if not train_names:
        raise ConfigError(f"config.train.trainable={c.train.trainable!r} leaves nothing to train for flow head {c.model.flow_head!r}")
    tx, schedule = make_optimizer(c.train, train_names)
    param_sh = layout.shardings(mesh, rules)
    abstract_params = layout.abstract(mesh, rules, train_names)
    opt_sh = _opt_shardings(jax.eval_shape(tx.init, abstract_params), param_sh, layout.shapes, mesh)
    repl = replicated(mesh)
    counters = ["skipped_steps"] + [f"nonfinite/{k}" for k in NONFINITE_TERMS]
    state_sh = {
        "step": repl,
        "params": {n: param_sh[n] for n in train_names},
        "frozen": {n: param_sh[n] for n in frozen_names},
        "opt": opt_sh,
        "counters": {k: repl for k in counters},
    }
    abstract_opt = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), jax.eval_shape(tx.init, abstract_params), opt_sh)
    abstract_state = {
        "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=repl),
        "params": abstract_params,
        "frozen": layout.abstract(mesh, rules, frozen_names),
        "opt": abstract_opt,
        "counters": {k: jax.ShapeDtypeStruct((), jnp.int32, sharding=repl) for k in counters},
    }
    n_train = sum(int(np.prod(layout.shapes[n])) for n in train_names)
    n_all = sum(int(np.prod(s)) for s in layout.shapes.values())
    log.info("model %s (%s flow head): %d parameters, %d trainable (%s)", c.model.size, c.model.flow_head, n_all, n_train, c.train.trainable)

    # ---- input and state (restored when the workdir has a checkpoint) --------------------
    ds = build_dataset(icfg)
    it = iter(ds)
    ckpts = Checkpoints(os.path.join(workdir, "checkpoints"), c.checkpoint.every, c.checkpoint.keep, c.checkpoint.best_metric, c.checkpoint.best_mode, c.checkpoint.keep_best)
    latest = ckpts.latest_step
    if latest is not None:
        state = ckpts.restore(latest, abstract_state, it)
        log.info("resumed from %s/%d", ckpts.directory, latest)
    else:
        params = _initial_params(c, layout, mesh, rules)
        trainable = {n: params[n] for n in train_names}
        state = {
            "step": jax.device_put(jnp.int32(0), repl),
            "params": trainable,
            "frozen": {n: params[n] for n in frozen_names},
            "opt": jax.jit(tx.init, out_shardings=opt_sh)(trainable),
            "counters": {k: jax.device_put(jnp.int32(0), repl) for k in counters},
        }
    start = int(jax.device_get(state["step"]))
    total = int(c.train.steps)

    # ---- the compiled step ---------------------------------------------------------------
    loss_cfg = LossConfig(point_weight=c.loss.point_weight, normal_weight=c.loss.normal_weight, conf_weight=c.loss.conf_weight, camera_weight=c.loss.camera_weight, flow_weight=c.loss.flow_weight)
    step_fn = make_step_fn(layout, tx, schedule, loss_cfg, float(c.train.clip_loss), int(c.train.microbatches), mesh)
    spec = batch_spec(icfg, int(c.data.global_batch))
    batch_sh = {k: NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (len(s.shape) - 1)))) for k, s in spec.items()}
    jitted = build_train_step(step_fn, state_sh, batch_sh, mesh)
    t0 = time.perf_counter()
    abstract_batch = {k: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=batch_sh[k]) for k, s in spec.items()}
    compiled = jitted.lower(abstract_state, abstract_batch).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float((cost or {}).get("flops", float("nan")))  # per device program
    log.info("train step compiled in %.1f s; XLA cost analysis: %.3g FLOPs per step per device", time.perf_counter() - t0, flops)

    writer = MetricWriter(workdir, total, start, progress=c.log.progress)
    guard = PreemptionGuard()
    result = TrainResult(start_step=start, preempted=False, eval={})
    frames_per_step = int(c.data.global_batch) * int(c.data.frames)

    def run_eval(step):
        if eval_fn is None:
            return
        host = _host_params(state)
        if jax.process_index() == 0:
            from flow3r_jax.models.pretrained import model_from_params

            model = model_from_params(mcfg, {tuple(k.split("/")): v for k, v in host.items()})
            values = eval_fn(model, c, step)
            values = {k if k.startswith("eval/") else f"eval/{k}": float(v) for k, v in values.items()}
            writer.write(step, values)
            result["eval"][step] = values
            log.info("eval at step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in values.items()))

    try:
        if start == 0 and eval_fn is not None and c.eval.every > 0:
            run_eval(0)
        last_t, last_step, saved = time.perf_counter(), start, False
        for step in range(start, total):
            batch = to_global_batch(next(it), mesh)
            state, metrics = compiled(state, batch)
            done = step + 1
            if done % c.log.every == 0 or done == total or done == start + 1:
                host = jax.device_get(metrics)
                now = time.perf_counter()
                dt = (now - last_t) / max(done - last_step, 1)
                last_t, last_step = now, done
                host.update({"perf/step_time_s": dt, "perf/samples_per_s": c.data.global_batch / dt, "perf/frames_per_s": frames_per_step / dt, "perf/flops_per_step_per_device": flops, "perf/achieved_flops_per_s_per_device": flops / dt})
                writer.write(done, host)
                result["metrics"] = {k: float(v) for k, v in host.items()}
                if not sys.stderr.isatty() or not c.log.progress:
                    log.info("step %d/%d loss %.4g (flow %.4g) grad_norm %.3g lr %.3g %.2f s/step", done, total, host["loss/total"], host["loss/flow"], host["train/grad_norm"], host["train/lr"], dt)
            writer.progress(done)
            if eval_fn is not None and c.eval.every > 0 and (done % c.eval.every == 0 or done == total):
                run_eval(done)
            best = result["eval"].get(done) if c.checkpoint.best_metric else None
            saved = ckpts.save(done, state, it, metrics=best)
            if guard.should_stop():
                if not saved:
                    ckpts.save(done, state, it, metrics=best, force=True)
                ckpts.wait()
                log.warning("preempted: saved step %d in %s; rerun the same command to resume", done, ckpts.directory)
                result["preempted"] = True
                break
        else:
            if total > start and not saved:
                ckpts.save(total, state, it, force=True)
        ckpts.wait()
    finally:
        ckpts.close()
        writer.close()
        guard.restore_handlers()
    result["final_step"] = int(jax.device_get(state["step"]))
    result["state"] = state
    return result
