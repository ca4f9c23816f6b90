"""The one place that calls `jax.distributed.initialize`.

`initialize()` hides the differences between environments, checked in this order:

- **explicit coordinator**: `coordinator_address`, `num_processes`, `process_id` given as
  arguments or as the environment variables `FLOW3R_COORDINATOR` (host:port),
  `FLOW3R_NUM_PROCESSES`, `FLOW3R_PROCESS_ID` (local multi-process runs, `launch/` scripts);
- **SLURM** (`SLURM_JOB_ID` and more than one task): read here by `slurm_cluster(os.environ)`
  and passed to JAX as explicit arguments (JAX's own SLURM detection is switched off: it pins
  every task to one GPU even when a task should drive the whole node, see below);
- **TPU pods / GKE** (`TPU_WORKER_HOSTNAMES` or `MEGASCALE_COORDINATOR_ADDRESS`): JAX's own
  cluster detection (`jax.distributed.initialize()` without arguments);
- **single process** (nothing of the above): does nothing; `jax.process_count() == 1`.

On CPU, several processes communicate through gloo collectives (`cpu_collectives="gloo"`), which
is how multi-host code is tested on one machine. Call it before anything touches a JAX device.

SLURM, one JAX process per srun task (`launch/slurm.sbatch`):

- coordinator: the first host of `SLURM_STEP_NODELIST` (else `SLURM_JOB_NODELIST`), hostlist
  syntax such as `gpu[01-03,07],cpu5` expanded here; port `FLOW3R_COORDINATOR_PORT`, else
  `JAX_COORDINATOR_PORT`, else JAX's rule `61440 + SLURM_JOB_ID % 4096` (so that two jobs
  sharing a first node rarely collide);
- `num_processes` = `SLURM_STEP_NUM_TASKS` (else `SLURM_NTASKS`), `process_id` = `SLURM_PROCID`;
- local devices: with **one task per node** (`--ntasks-per-node=1`) the process drives every GPU
  the node gives it (`local_device_ids=None`). With **one task per GPU** (several tasks on the
  node) task `SLURM_LOCALID` takes the node's GPU number `SLURM_LOCALID`
  (`local_device_ids=[SLURM_LOCALID]`), unless Slurm already bound one GPU to each task
  (`--gpus-per-task=1` / `--gpu-bind`: `CUDA_VISIBLE_DEVICES` lists a single device), in which
  case that one is all it sees and `local_device_ids=None`. Tasks on the node come from
  `SLURM_STEP_TASKS_PER_NODE` (e.g. `4(x2),2`) at `SLURM_NODEID`, else tasks / nodes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections.abc import Mapping

import jax

__all__ = ["ClusterSpec", "expand_hostlist", "expand_tasks_per_node", "initialize", "is_initialized", "slurm_cluster"]

log = logging.getLogger(__name__)
_INITIALIZED = False

# JAX's SLURM port rule (jax/_src/clusters/slurm_cluster.py): the top 4096 ports of the range.
SLURM_PORT_BASE = 65535 - 2**12 + 1  # 61440
SLURM_PORT_SPAN = 2**12


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """How this process joins its cluster: the arguments of `jax.distributed.initialize`."""

    coordinator_address: str  # host:port of process 0's coordination service
    num_processes: int
    process_id: int
    local_process_id: int  # index of this process among those on its host
    local_device_ids: tuple[int, ...] | None  # None: every device the process can see


def is_initialized() -> bool:
    return _INITIALIZED


# --- SLURM --------------------------------------------------------------------------------------


def _split_top_level(text: str, name: str) -> list[str]:
    """Splits at the commas outside brackets: `a[1,2],b` -> [`a[1,2]`, `b`]."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
            if depth > 1:
                raise ValueError(f"{name}={text!r}: nested brackets")
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"{name}={text!r}: ']' without '['")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"{name}={text!r}: '[' without ']'")
    parts.append(text[start:])
    return parts


def _expand_range_set(ranges: str, text: str, name: str) -> list[str]:
    """`01-03,07` -> [`01`, `02`, `03`, `07`], keeping the zero padding of the lower bound."""
    out = []
    for part in ranges.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(f"{name}={text!r}: bad range {part!r} (want N or N-M)")
        lo, hi = m.group(1), m.group(2) or m.group(1)
        if int(hi) < int(lo):
            raise ValueError(f"{name}={text!r}: range {part!r} goes down")
        out += [str(n).zfill(len(lo)) for n in range(int(lo), int(hi) + 1)]
    return out


def expand_hostlist(text: str, name: str = "hostlist") -> list[str]:
    """Expands a SLURM hostlist: `gpu[01-03,07],cpu5` -> gpu01 gpu02 gpu03 gpu07 cpu5; several
    bracket groups in one name multiply (`r[1-2]n[1-2]` -> r1n1 r1n2 r2n1 r2n2). `name` (the
    variable read) goes into the ValueError raised for a malformed list."""
    if not text or not text.strip():
        raise ValueError(f"{name}={text!r}: empty host list")
    hosts: list[str] = []
    for item in _split_top_level(text.strip(), name):
        if not item:
            raise ValueError(f"{name}={text!r}: empty host name")
        # "r[1-2]n[3,5]" -> literals r, n, "" between bracket groups 1-2, 3,5.
        pieces = re.split(r"\[([^\]]*)\]", item)
        expanded = [pieces[0]]
        for ranges, literal in zip(pieces[1::2], pieces[2::2]):
            expanded = [e + n + literal for e in expanded for n in _expand_range_set(ranges, text, name)]
        hosts += expanded
    return hosts


def expand_tasks_per_node(text: str, name: str = "SLURM_TASKS_PER_NODE") -> list[int]:
    """`4(x2),2` -> [4, 4, 2]: SLURM's per-node task counts with repetition."""
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not m or int(m.group(2) or 1) < 1:
            raise ValueError(f"{name}={text!r}: bad entry {part!r} (want N or N(xK))")
        out += [int(m.group(1))] * int(m.group(2) or 1)
    return out


def _int(environ: Mapping[str, str], name: str, minimum: int = 0) -> int:
    value = environ[name]
    try:
        n = int(value)
    except ValueError:
        n = None
    if n is None or n < minimum:
        raise ValueError(f"{name}={value!r}: expected an integer >= {minimum}")
    return n


def _first(environ: Mapping[str, str], *names: str) -> str | None:
    """The first of `names` set in `environ`, or None."""
    return next((n for n in names if environ.get(n)), None)


def slurm_cluster(environ: Mapping[str, str]) -> ClusterSpec | None:
    """The cluster of an srun task, from its SLURM_* environment (see the module docstring for
    the rules); None outside SLURM or for a single task. A pure function of `environ`. Raises
    ValueError naming the variable and its value when one is malformed or inconsistent, or when
    a multi-task job runs this outside srun (in the batch script itself)."""
    if "SLURM_JOB_ID" not in environ:
        return None
    ntasks_var = _first(environ, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS")
    if ntasks_var is None:
        return None
    num = _int(environ, ntasks_var, minimum=1)
    if num == 1:
        return None
    job_id = _int(environ, "SLURM_JOB_ID")
    if _first(environ, "SLURM_STEP_ID", "SLURM_STEPID", "SLURM_STEP_NODELIST", "SLURM_STEP_NUM_TASKS") is None:
        raise ValueError(
            f"{ntasks_var}={environ[ntasks_var]!r} but this process is not an srun task (no SLURM_STEP_* variables): "
            "start one process per task with `srun python -m launch.train ...` (launch/slurm.sbatch), or unset "
            f"{ntasks_var} to run a single process"
        )
    for var in ("SLURM_PROCID", "SLURM_LOCALID"):
        if var not in environ:
            raise ValueError(f"{ntasks_var}={environ[ntasks_var]!r} but {var} is not set")
    process_id = _int(environ, "SLURM_PROCID")
    if process_id >= num:
        raise ValueError(f"SLURM_PROCID={environ['SLURM_PROCID']!r}: not below {ntasks_var}={num}")
    local_id = _int(environ, "SLURM_LOCALID")

    nodelist_var = _first(environ, "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")
    if nodelist_var is None:
        raise ValueError("SLURM: none of SLURM_STEP_NODELIST, SLURM_JOB_NODELIST, SLURM_NODELIST is set")
    hosts = expand_hostlist(environ[nodelist_var], nodelist_var)

    port_var = _first(environ, "FLOW3R_COORDINATOR_PORT", "JAX_COORDINATOR_PORT")
    port = _int(environ, port_var, minimum=1) if port_var else SLURM_PORT_BASE + job_id % SLURM_PORT_SPAN
    if port > 65535:
        raise ValueError(f"{port_var}={environ[port_var]!r}: not a port (1-65535)")

    # Tasks sharing this node: the per-node counts at this node's index, else the average.
    per_node_var = _first(environ, "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE")
    if per_node_var and "SLURM_NODEID" in environ:
        counts = expand_tasks_per_node(environ[per_node_var], per_node_var)
        node = _int(environ, "SLURM_NODEID")
        if node >= len(counts):
            raise ValueError(f"SLURM_NODEID={environ['SLURM_NODEID']!r}: {per_node_var}={environ[per_node_var]!r} lists {len(counts)} nodes")
        on_node = counts[node]
    else:
        on_node = math.ceil(num / len(hosts))
    if local_id >= on_node:
        raise ValueError(f"SLURM_LOCALID={environ['SLURM_LOCALID']!r}: not below the {on_node} tasks of this node")

    local_devices: tuple[int, ...] | None = None
    if on_node > 1:
        visible = [d for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        if len(visible) == 1:
            local_devices = None  # Slurm bound one GPU to this task: it is the only one visible
        elif visible and local_id >= len(visible):
            raise ValueError(f"SLURM_LOCALID={local_id} but CUDA_VISIBLE_DEVICES={environ['CUDA_VISIBLE_DEVICES']!r} lists {len(visible)} GPUs")
        else:
            local_devices = (local_id,)
    return ClusterSpec(f"{hosts[0]}:{port}", num, process_id, local_id, local_devices)


# --- initialisation ------------------------------------------------------------------------------


# Fake CPU devices share the host's cores: a collective may wait for its slowest participant far
# longer than XLA's default 40 s (then the process is aborted), e.g. 8 devices on 2 busy cores.
_CPU_COLLECTIVE_WAIT = (("call_terminate_timeout_seconds", 1800), ("call_warn_stuck_timeout_seconds", 600), ("timeout_seconds", 1800))


def _patient_cpu_collectives() -> None:
    """Raises XLA:CPU's collective timeouts through XLA_FLAGS (read when the backend starts),
    unless the user set them."""
    flags = os.environ.get("XLA_FLAGS", "")
    extra = [f"--xla_cpu_collective_{k}={v}" for k, v in _CPU_COLLECTIVE_WAIT if f"--xla_cpu_collective_{k}=" not in flags]
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()


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
        if int(cpu_devices) > 1:
            _patient_cpu_collectives()
    coordinator_address = coordinator_address or os.environ.get("FLOW3R_COORDINATOR")
    if num_processes is None and "FLOW3R_NUM_PROCESSES" in os.environ:
        num_processes = int(os.environ["FLOW3R_NUM_PROCESSES"])
    if process_id is None and "FLOW3R_PROCESS_ID" in os.environ:
        process_id = int(os.environ["FLOW3R_PROCESS_ID"])

    def use_collectives():
        if cpu_collectives:
            jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)

    tpu_pod = "TPU_WORKER_HOSTNAMES" in os.environ or "MEGASCALE_COORDINATOR_ADDRESS" in os.environ
    if coordinator_address:
        if num_processes is None or process_id is None:
            raise ValueError("distributed.initialize: a coordinator address needs num_processes and process_id")
        use_collectives()
        # Explicit means explicit: no cluster detection may fill in local devices.
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id, cluster_detection_method="deactivate")
    elif (slurm := slurm_cluster(os.environ)) is not None:
        use_collectives()
        devices = None if slurm.local_device_ids is None else list(slurm.local_device_ids)
        log.info("SLURM: coordinator %s, task %d of %d (local %d), devices %s", slurm.coordinator_address, slurm.process_id, slurm.num_processes, slurm.local_process_id, devices or "all")
        jax.distributed.initialize(
            coordinator_address=slurm.coordinator_address,
            num_processes=slurm.num_processes,
            process_id=slurm.process_id,
            local_device_ids=devices,
            cluster_detection_method="deactivate",
        )
    elif tpu_pod:
        use_collectives()
        jax.distributed.initialize()
    _INITIALIZED = True
    log.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())
