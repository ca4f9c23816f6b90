"""benchmarks/aot_memory.py on `tiny` with 8 fake CPU devices (data 2 x fsdp 4): the train step
compiles without running, and the per-device argument bytes XLA reports equal the shard sizes of
the train state and the batch computed here from their shardings."""

import json
import subprocess
import sys

import pytest

from tests.train.conftest import ROOT, env

pytestmark = pytest.mark.slow

SCRIPT = r"""
import json, sys
import jax
jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_num_cpu_devices", 8)
import numpy as np
sys.path.insert(0, ".")
from benchmarks.aot_memory import plan_memory, train_config
from flow3r_jax.train.mesh import make_mesh
from flow3r_jax.train.plan import TrainPlan

c = train_config("tiny", (2, 4, 1), "none", frames=2, height=28, width=28, clips_per_device=1, pairs=2)
res = plan_memory(c)
plan = TrainPlan(c, make_mesh((2, 4, 1)))
# jit drops unused arguments: the batch's source ids are not read by the step
leaves = jax.tree.leaves(plan.abstract_state) + [v for k, v in plan.abstract_batch(plan.shapes[0]).items() if k != "source"]
expected = sum(int(np.prod(x.sharding.shard_shape(x.shape))) * np.dtype(x.dtype).itemsize for x in leaves)
print("RESULT " + json.dumps({"row": res["rows"][0], "expected_args": expected, "params": res["params"]}))
"""


def test_tiny_plan_on_8_fake_devices():
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-5000:]
    out = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("RESULT "))[7:])
    row = out["row"]
    assert (row["frames"], row["batch"], row["pairs"]) == (2, 8, 2)  # 1 clip per device x (2 x 4) batch shards
    assert row["arguments"] == out["expected_args"]  # the state and batch shards, byte for byte
    assert row["flops"] > 0 and row["temporaries"] > 0
    assert row["total"] == row["arguments"] + row["outputs"] - row["aliased"] + row["temporaries"]
    assert row["aliased"] > 0  # the donated state is updated in place
    n_all, n_train = out["params"]
    assert 0 < n_train < n_all  # stage 2: the encoder is frozen
