"""The one place that calls `jax.distributed.initialize`.

`initialize()` hides the differences between environments:

- **single process** (nothing configured): does nothing; `jax.process_count() == 1`;
- **explicit coordinator**: `coordinator_address`, `num_processes`, `process_id` given as
  arguments or as the environment variables `FLOW3R_COORDINATOR` (host:port),
  `FLOW3R_NUM_PROCESSES`, `FLOW3R_PROCESS_ID` (local multi-process runs, `launch/` scripts);
- **SLURM** (`SLURM_JOB_ID` and more than one task) and **TPU pods / GKE**: JAX's own cluster
  detection (`jax.distributed.initialize()` without arguments).

On CPU, several processes communicate through gloo collectives (`cpu_collectives="gloo"`), which
is how multi-host code is tested on one machine. Call it before anything touches a JAX device.
"""

from __future__ import annotations

import logging
import os

import jax

__all__ = ["initialize", "is_initialized"]

log = logging.getLogger(__name__)
_INITIALIZED = False


def is_initialized() -> bool:
    return _INITIALIZED


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    cpu_devices: int | None = None,
    cpu_collectives: str | None = "gloo",
) -> None:
    """Joins this process to its JAX cluster (idempotent). `cpu_devices` sets the number of
    (fake) CPU devices of this process, for tests and CPU runs."""
    global _INITIALIZED
    if _INITIALIZED:
        return
    if cpu_devices is not None:
        jax.config.update("jax_num_cpu_devices", int(cpu_devices))
    coordinator_address = coordinator_address or os.environ.get("FLOW3R_COORDINATOR")
    if num_processes is None and "FLOW3R_NUM_PROCESSES" in os.environ:
        num_processes = int(os.environ["FLOW3R_NUM_PROCESSES"])
    if process_id is None and "FLOW3R_PROCESS_ID" in os.environ:
        process_id = int(os.environ["FLOW3R_PROCESS_ID"])
    slurm = "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1
    tpu_pod = "TPU_WORKER_HOSTNAMES" in os.environ or "MEGASCALE_COORDINATOR_ADDRESS" in os.environ
    if coordinator_address:
        if num_processes is None or process_id is None:
            raise ValueError("distributed.initialize: a coordinator address needs num_processes and process_id")
        if cpu_collectives:
            jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)
    elif slurm or tpu_pod:
        if cpu_collectives:
            jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
        jax.distributed.initialize()
    _INITIALIZED = True
    log.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())
