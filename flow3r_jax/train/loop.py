"""The training loop, top to bottom: `train(config, workdir)`.

1. join the cluster (`distributed.initialize`), log per process, save the resolved config;
2. the mesh and the checks that must fail before any work (mesh vs devices, batch vs axes,
   datasets present, init checkpoint present and the right size);
3. the Grain input (this process's share of every source);
4. the parameter layout, the trainable / frozen split and the optimiser;
5. the train state: restored from the workdir's latest checkpoint (parameters, optimiser and
   the data iterator: the run continues exactly), else created sharded from the init source;
6. the compiled steps, one per batch shape (frame-count buckets, `plan.py`), ahead of time, so
   their FLOPs are known before the first batch and no step recompiles;
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
import ml_collections
import numpy as np

from flow3r_jax.data.pipeline import InputConfig, to_global_batch
from flow3r_jax.data.sources import DatasetError
from flow3r_jax.train import distributed
from flow3r_jax.train.checkpoint import Checkpoints, CheckpointError, PreemptionGuard, read_params
from flow3r_jax.train.mesh import make_mesh
from flow3r_jax.train.metrics import MetricWriter, setup_logging
from flow3r_jax.train.plan import BatchShape, ConfigError, TrainPlan, model_config, sample_config
from flow3r_jax.train.state import ParamLayout

__all__ = ["train", "ConfigError", "parse_sources", "model_config", "TrainResult"]

log = logging.getLogger("flow3r_jax.train")


class TrainResult(dict):
    """What `train` returns: final step, whether it was preempted, last metrics, eval results."""


def parse_sources(text: str) -> tuple[tuple[str, float], ...]:
    """'DIR[:WEIGHT],DIR[:WEIGHT]' -> ((dir, weight), ...)."""
    out = []
    for item in filter(None, (s.strip() for s in str(text).split(","))):
        path, _, weight = item.rpartition(":") if ":" in item and item.rsplit(":", 1)[1].replace(".", "", 1).isdigit() else (item, "", "1")
        out.append((os.path.expanduser(path), float(weight)))
    return tuple(out)


def _input_config(c, shapes: list[BatchShape]) -> InputConfig:
    sources = parse_sources(c.data.sources)
    if not sources:
        raise ConfigError("config.data.sources is empty: give dataset directories, e.g. --config.data.sources=/data/labeled:1,/data/videos:3")
    for path, _ in sources:
        if not os.path.isdir(path):
            raise DatasetError(f"dataset directory not found: {path} (config.data.sources)")
    pc = jax.process_count()
    buckets = tuple(s.input_bucket(pc) for s in shapes) if c.data.buckets else ()
    return InputConfig(
        sources=sources, batch_size=shapes[0].global_batch // pc, sample=sample_config(c), seed=c.data.seed, num_workers=c.data.num_workers, read_threads=c.data.read_threads, buckets=buckets,
        bad_records=c.data.get("bad_records", "raise"), max_bad_fraction=c.data.get("max_bad_fraction", 0.001), max_bad_records=c.data.get("max_bad_records", 10),
    )


def _write_config(c, workdir: str, mcfg=None) -> None:
    if jax.process_index() != 0:
        return
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(c.to_json_best_effort(indent=2, sort_keys=True))
    import dataclasses

    with open(os.path.join(workdir, "model_config.json"), "w") as f:
        json.dump(dataclasses.asdict(model_config(c) if mcfg is None else mcfg), f, indent=2)


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
    plan = TrainPlan(c, mesh)  # batch shapes, layout, optimiser, abstract state (ConfigErrors)
    method = plan.method  # the model family (train/method.py): input, model, loss
    icfg = method.input_config(plan.shapes)
    mcfg, layout = plan.model_config, plan.layout
    eval_fn = _load_eval_fn(c.eval.fn)
    _write_config(c, workdir, mcfg)
    shapes_text = ", ".join(f"{s.frames} frames x {s.global_batch}" for s in plan.shapes)
    log.info("mesh %s over %d devices / %d processes; batch shapes (global) %s", dict(mesh.shape), jax.device_count(), jax.process_count(), shapes_text)
    n_all, n_train = plan.param_count
    log.info("model %s: %d parameters, %d trainable (%s)", method.describe(), n_all, n_train, c.train.trainable)

    # ---- input and state (restored when the workdir has a checkpoint) --------------------
    ds = method.dataset(icfg)
    it = iter(ds)
    ckpts = Checkpoints(os.path.join(workdir, "checkpoints"), c.checkpoint.every, c.checkpoint.keep, c.checkpoint.best_metric, c.checkpoint.best_mode, c.checkpoint.keep_best)
    latest = ckpts.latest_step
    if latest is not None:
        state = ckpts.restore(latest, plan.abstract_state, it)
        log.info("resumed from %s/%d", ckpts.directory, latest)
    else:
        state = plan.initial_state(_initial_params(c, layout, mesh, plan.rules))
        if c.checkpoint.get("save_initial", False):  # the untrained model, for "step 0" comparisons
            ckpts.save(0, state, it, force=True)
    start = int(jax.device_get(state["step"]))
    total = int(c.train.steps)

    # ---- the compiled steps: one per batch shape, ahead of time ---------------------------
    steps = {}
    for shape in plan.shapes:
        cs = plan.compile(shape)
        steps[(shape.global_batch, shape.frames)] = cs
        log.info("train step for %d frames x %d compiled in %.1f s; XLA cost analysis: %.3g FLOPs per step per device", shape.frames, shape.global_batch, cs.seconds, cs.flops)

    writer = MetricWriter(workdir, total, start, progress=c.log.progress)
    guard = PreemptionGuard()
    result = TrainResult(start_step=start, preempted=False, eval={}, compiled_shapes=[(s.frames, s.global_batch) for s in plan.shapes])

    def run_eval(step):
        if eval_fn is None:
            return
        host = _host_params(state)
        if jax.process_index() == 0:
            model = method.model_from_params(mcfg, host)
            values = eval_fn(model, c, step)
            values = {k if k.startswith("eval/") else f"eval/{k}": float(v) for k, v in values.items()}
            writer.write(step, values)
            result["eval"][step] = values
            log.info("eval at step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in values.items()))

    try:
        if start == 0 and eval_fn is not None and c.eval.every > 0:
            run_eval(0)
        last_t, last_step, saved = time.perf_counter(), start, False
        window = {"samples": 0, "frames": 0, "flops": 0.0}  # since the last log line
        skipped = 0  # bad records the input skipped since this run (re)started, this process
        for step in range(start, total):
            host_batch = next(it)
            skipped += int(host_batch["skipped_records"].sum())
            n_local, frames = method.host_shape(host_batch)
            cs = steps.get((n_local * jax.process_count(), frames))
            if cs is None:
                raise RuntimeError(f"the input gave a batch of {n_local} x {frames} frames per process, which matches no compiled shape ({shapes_text})")
            state, metrics = cs.compiled(state, to_global_batch(host_batch, mesh))
            window["samples"] += cs.shape.global_batch
            window["frames"] += cs.shape.images
            window["flops"] += cs.flops
            done = step + 1
            if done % c.log.every == 0 or done == total or done == start + 1:
                host = jax.device_get(metrics)
                now = time.perf_counter()
                n = max(done - last_step, 1)
                dt = (now - last_t) / n
                host.update({"input/skipped_records": float(skipped), "perf/step_time_s": dt, "perf/samples_per_s": window["samples"] / (dt * n), "perf/frames_per_s": window["frames"] / (dt * n), "perf/flops_per_step_per_device": window["flops"] / n, "perf/achieved_flops_per_s_per_device": window["flops"] / (dt * n)})
                last_t, last_step, window = now, done, {"samples": 0, "frames": 0, "flops": 0.0}
                writer.write(done, host)
                result["metrics"] = {k: float(v) for k, v in host.items()}
                if not sys.stderr.isatty() or not c.log.progress:
                    log.info("step %d/%d loss %.4g (%s %.4g) grad_norm %.3g lr %.3g %.2f s/step", done, total, host["loss/total"], method.log_term, host[f"loss/{method.log_term}"], host["train/grad_norm"], host["train/lr"], dt)
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
