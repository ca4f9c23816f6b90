"""The SLURM path for real: two local processes of `python -m launch.train`, each with the
SLURM_* variables srun gives a task of a 2-task step on one node (and 2 fake CPU devices), join
one JAX cluster through `distributed.slurm_cluster` (gloo collectives), train 2 steps of the tiny
config in lockstep (the same loss on both, one metrics writer, one checkpoint with an iterator
state per process) and exit 0. No persistent compilation cache (see tests/train/test_multiprocess.py).
This is also the suite's multi-process training test; tests/train/test_multiprocess.py covers the
explicit-coordinator path of `launch/local_multiprocess.py` and its failure handling."""

import os
import re
import subprocess
import sys

import pytest

from launch.local_multiprocess import free_port
from tests.train.conftest import ROOT, env, losses, train_args

STEPS = 2
STEP_RE = re.compile(r"\bstep (\d+)/(\d+) loss (\S+)")

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def srun_task_env(procid: int, port: int) -> dict:
    e = env()
    e.pop("JAX_COMPILATION_CACHE_DIR")
    for k in [k for k in e if k.startswith(("SLURM_", "FLOW3R_", "TPU_", "MEGASCALE_"))]:
        e.pop(k)
    e.update(
        SLURM_JOB_ID="4242",
        SLURM_NTASKS="2",
        SLURM_PROCID=str(procid),
        SLURM_LOCALID=str(procid),
        SLURM_STEP_NODELIST="localhost",
        SLURM_NODEID="0",
        FLOW3R_COORDINATOR_PORT=str(port),
    )
    return e


def test_two_srun_tasks_train_in_lockstep(train_data, tmp_path):
    wd = tmp_path / "run"
    port = free_port()
    cmd = [sys.executable, "-u", "-m", "launch.train", *train_args(wd, train_data, steps=STEPS), "--cpu_devices", "2"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=srun_task_env(i, port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        outs = [p.communicate(timeout=900)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {i}:\n{out[-5000:]}"
        assert f"process {i} of 2, 2 local / 4 global devices" in out, out[-5000:]
    assert "mesh {'data': 4, 'fsdp': 1, 'tensor': 1} over 4 devices / 2 processes" in outs[0]

    logged = [{int(m.group(1)): m.group(3) for m in STEP_RE.finditer(out) if int(m.group(2)) == STEPS} for out in outs]
    assert sorted(logged[0]) == list(range(1, STEPS + 1)), outs[0][-5000:]
    assert logged[0] == logged[1]  # the same global loss on both processes, step by step
    got = losses(wd)  # process 0's metrics
    assert sorted(got) == list(range(1, STEPS + 1))
    for s, v in got.items():
        assert float(logged[0][s]) == pytest.approx(v, rel=5e-4)
    with open(wd / "metrics.jsonl") as f:
        assert len(f.readlines()) == STEPS  # one writer, not two
    # One checkpoint written by both processes together, with one Grain iterator state each.
    ckpt = wd / "checkpoints" / str(STEPS)
    assert sorted(os.listdir(wd / "checkpoints")) == [str(STEPS)]
    assert os.path.exists(ckpt / "_CHECKPOINT_METADATA") and os.path.isdir(ckpt / "state")
    assert len(os.listdir(ckpt / "data")) >= 2, os.listdir(ckpt / "data")
