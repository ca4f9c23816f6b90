"""Evaluating the checkpoints of a training run as they appear, and the trainer's eval hook.

`follow(workdir, ...)` polls `WORKDIR/checkpoints/` and evaluates every committed step once
(tag `step_<N>`); a step whose results are all on disk is never redone, so a restarted follower
picks up where it stopped. It returns once the run's last step (`train.steps` of the run's
config.json) is evaluated, or after `idle_timeout` seconds without a new checkpoint.

`benchmark_metrics` is a `config.eval.fn` for the trainer: the same benchmarks, run in the
training process every `eval.every` steps (`config.eval.benchmarks`, `config.eval.data_root`).
"""

from __future__ import annotations

import json
import logging
import os
import time

from flow3r_jax.eval.runner import EvalOptions, check_benchmarks, evaluate

log = logging.getLogger("flow3r_jax.eval")

__all__ = ["committed_steps", "follow", "benchmark_metrics", "step_tag"]


def step_tag(step: int) -> str:
    return f"step_{step:08d}"


def committed_steps(workdir: str) -> list[int]:
    """Steps of `workdir/checkpoints` whose Orbax save completed (temporary directories of a save
    in flight never count)."""
    root = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(root):
        return []
    return sorted(int(d) for d in os.listdir(root) if d.isdigit() and os.path.isdir(os.path.join(root, d, "state")) and os.path.exists(os.path.join(root, d, "_CHECKPOINT_METADATA")))


def _done(out_dir: str, tag: str, benchmarks: list[str]) -> bool:
    return all(os.path.isfile(os.path.join(out_dir, tag, f"{b}.json")) for b in benchmarks)


def _final_step(workdir: str) -> int | None:
    try:
        with open(os.path.join(workdir, "config.json")) as f:
            return int(json.load(f)["train"]["steps"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def follow(workdir: str, benchmarks: list[str], data_root: str, out_dir: str, options: EvalOptions | None = None, poll_seconds: float = 60.0, idle_timeout: float | None = None, load=None) -> list[int]:
    """Evaluates each new checkpoint of the training run `workdir`; returns the steps evaluated
    by this call. `load(step_dir) -> model` defaults to `load_pretrained`."""
    from flow3r_jax.models.pretrained import load_pretrained

    options = options or EvalOptions()
    load = load or load_pretrained
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"--follow {workdir}: no such training workdir")
    work = check_benchmarks(benchmarks, data_root, options)  # fail on bad data before waiting
    final = _final_step(workdir)
    evaluated, last_new = [], time.monotonic()
    while True:
        todo = [s for s in committed_steps(workdir) if not _done(out_dir, step_tag(s), benchmarks)]
        for step in todo:
            step_dir = os.path.join(workdir, "checkpoints", str(step))
            if not os.path.isdir(step_dir):  # removed by the trainer's keep-last-N meanwhile
                log.warning("checkpoint %s was removed before it could be evaluated", step_dir)
                continue
            log.info("evaluating %s", step_dir)
            evaluate(load(step_dir), benchmarks, data_root, out_dir, step_tag(step), options, checkpoint=step_dir, work=work)
            evaluated.append(step)
            last_new = time.monotonic()
        done_steps = [s for s in committed_steps(workdir) if _done(out_dir, step_tag(s), benchmarks)]
        if final is not None and final in done_steps:
            log.info("the run's last step %d is evaluated; stopping", final)
            return evaluated
        if idle_timeout is not None and time.monotonic() - last_new > idle_timeout:
            log.info("no new checkpoint for %.0f s; stopping", idle_timeout)
            return evaluated
        time.sleep(poll_seconds)


def benchmark_metrics(model, config, step: int) -> dict[str, float]:
    """Trainer eval hook (`config.eval.fn = "flow3r_jax.eval.follow:benchmark_metrics"`):
    the summaries of `config.eval.benchmarks` on `config.eval.data_root` as
    {"<benchmark>/<task>/<metric>": value}; results also written under WORKDIR-independent
    `config.eval.out_dir` when set."""
    import tempfile

    benches = [b for b in str(config.eval.get("benchmarks", "")).split(",") if b]
    if not benches:
        raise ValueError("benchmark_metrics: config.eval.benchmarks is empty")
    out_dir = config.eval.get("out_dir", "") or tempfile.mkdtemp(prefix="flow3r_eval_")
    tasks = tuple(t for t in str(config.eval.get("tasks", "")).split(",") if t) or None
    opts = EvalOptions(plots=0, progress=False, max_sequences=config.eval.get("max_sequences", None) or None, tasks=tasks, load_width=config.eval.get("load_width", None) or None)
    res = evaluate(model, benches, config.eval.data_root, out_dir, step_tag(step), opts)
    return {f"{b}/{t}/{k}": float(v) for b, tasks in res.items() for t, s in tasks.items() for k, v in s.items() if isinstance(v, (int, float))}
