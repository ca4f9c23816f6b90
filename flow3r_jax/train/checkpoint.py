"""Checkpoints: Orbax's `training.Checkpointer` (the v1 API of the pinned Orbax), async.

Each step directory `WORKDIR/checkpoints/<step>/` holds two checkpointables saved together:
`state` (the train state, a pure dict of sharded arrays, OCDBT) and `data` (the Grain iterator
state, one JSON file per process). Orbax writes a step into a temporary directory and renames it
when every process has finished, so a checkpoint that was being written when a process died is
never picked: `latest_step` only sees committed steps, and leftovers are cleaned up at start.

Kept: the last `keep` steps, plus the `keep_best` best by a metric when `best_metric` is set
(metrics are saved with each step). Restoring goes into an abstract target whose shardings may
come from another mesh (saved on 8 devices, restored on 4).

Preemption: `PreemptionGuard` turns SIGTERM and SIGUSR1 (which SLURM can send before
the time limit) into a flag that the loop checks after each step; the loop then saves the step,
waits for the write and exits. With several processes the flag is combined across them so that
all save the same step.
"""

from __future__ import annotations

import logging
import os
import signal

import jax
import numpy as np

import orbax.checkpoint.experimental.v1 as ocp

__all__ = ["CheckpointError", "Checkpoints", "PreemptionGuard", "find_step_dir", "read_params"]

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    pass


MIN_REPLICA_SLICE_BYTES = 4 << 20


class Checkpoints:
    """The run's checkpoint sequence (all calls on all processes)."""

    def __init__(self, directory: str, every: int, keep: int = 3, best_metric: str = "", best_mode: str = "min", keep_best: int = 1):
        self.directory = os.path.abspath(directory)
        policies = ocp.training.preservation_policies
        keep_policies = [policies.LatestN(n=max(1, int(keep)))]
        if best_metric:
            if best_mode not in ("min", "max"):
                raise ValueError(f"checkpoint.best_mode must be 'min' or 'max', got {best_mode!r}")
            # BestN sorts ascending and keeps the tail; reverse=True keeps the lowest values.
            keep_policies.append(policies.BestN(get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min", n=int(keep_best), keep_checkpoints_without_metrics=False))
        decisions = ocp.training.save_decision_policies
        context = ocp.Context()
        # Replica-parallel writes (each replica of a replicated shard writes a slice of it) only
        # for slices of at least this size: smaller ones cost an eager slice per replica and
        # array (three saves of `tiny` on 8 CPU devices: 30 s, almost all of it slicing).
        context.array.saving.min_slice_bytes_for_replica_parallel = MIN_REPLICA_SLICE_BYTES
        self._ckptr = ocp.training.Checkpointer(
            self.directory,
            context=context,
            save_decision_policy=decisions.FixedIntervalPolicy(max(1, int(every))),
            preservation_policy=policies.AnyPreservationPolicy(keep_policies) if len(keep_policies) > 1 else keep_policies[0],
            cleanup_tmp_directories=True,
        )
        self.best_metric = best_metric

    @property
    def latest_step(self) -> int | None:
        latest = self._ckptr.latest
        return None if latest is None else int(latest.step)

    @property
    def steps(self) -> list[int]:
        return sorted(int(m.step) for m in self._ckptr.checkpoints)

    def save(self, step: int, state, data_iterator, metrics: dict | None = None, force: bool = False) -> bool:
        """Starts an async save when the interval policy (or `force`) says so; returns whether
        one started. The previous save is finished first."""
        if not force and not self._ckptr.should_save(step):
            return False
        if self.best_metric and (not metrics or self.best_metric not in metrics):
            metrics = None
        items = {"state": state, "data": data_iterator}
        response = self._ckptr.save_checkpointables_async(step, items, force=force, metrics=metrics)
        return response is not None

    def wait(self) -> None:
        self._ckptr.wait()

    def restore(self, step: int, abstract_state, data_iterator):
        """The train state at `step` in the shardings of `abstract_state`; sets the iterator."""
        out = self._ckptr.load_checkpointables(step, {"state": abstract_state, "data": data_iterator})
        return out["state"]

    def close(self) -> None:
        self._ckptr.close()


def find_step_dir(path: str) -> str:
    """A workdir, its checkpoints/ directory or a step directory -> the step directory with a
    committed `state` (the latest one for a workdir)."""
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if os.path.isdir(os.path.join(path, "state")):
        if not os.path.exists(os.path.join(path, "commit_success.txt")) and not os.path.exists(os.path.join(path, "_CHECKPOINT_METADATA")):
            raise CheckpointError(f"{path}: the checkpoint was not completely written")
        return path
    root = os.path.join(path, "checkpoints") if os.path.isdir(os.path.join(path, "checkpoints")) else path
    steps = sorted((int(d) for d in os.listdir(root) if d.isdigit() and os.path.isdir(os.path.join(root, d, "state"))), reverse=True)
    if not steps:
        raise CheckpointError(f"{path}: no committed checkpoint step found (expected a workdir, its checkpoints/ directory or a step directory)")
    return os.path.join(root, str(steps[0]))


def read_params(path: str) -> dict[str, np.ndarray]:
    """All model parameters (trainable and frozen) of a trainer checkpoint as host arrays (on the
    first local CPU device; the optimiser state is not read)."""
    step_dir = find_step_dir(path)
    tree = ocp.metadata(step_dir, checkpointable_name="state").metadata
    cpu = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    abstract = {part: {n: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=cpu) for n, m in tree[part].items()} for part in ("params", "frozen")}
    ctx = ocp.Context()
    ctx.pytree.loading.partial_load = True
    with ctx:
        restored = ocp.load(step_dir, abstract, checkpointable_name="state")
    return {k: np.asarray(v) for part in ("params", "frozen") for k, v in restored[part].items()}


class PreemptionGuard:
    """Sets `requested` on SIGTERM (and the other given signals); `should_stop()` combines the
    flag over processes."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGUSR1)):
        self.requested = False
        self.signum = None
        self._previous = {}
        for s in signals:
            self._previous[s] = signal.signal(s, self._handle)

    def _handle(self, signum, frame):
        self.requested = True
        self.signum = signum
        log.warning("received signal %d: will save a checkpoint after this step and stop", signum)

    def should_stop(self) -> bool:
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.asarray([self.requested], np.int32))
        return bool(np.any(flags))

    def restore_handlers(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
