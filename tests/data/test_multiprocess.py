"""Two local JAX processes (gloo CPU collectives, 2 fake devices each) read disjoint data and
assemble the expected global batch with make_array_from_process_local_data."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.data.conftest import ROOT


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.multiprocess
def test_two_processes_assemble_the_global_batch(datasets, tmp_path):
    port = _free_port()
    worker = os.path.join(ROOT, "tests", "data", "multiprocess_worker.py")
    env = {**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": ""}
    procs = [subprocess.Popen([sys.executable, worker, str(p), str(port), datasets["labeled"], str(tmp_path / f"p{p}.npz")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for p in range(2)]
    logs = [p.communicate(timeout=300)[0].decode(errors="replace") for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    out = [np.load(tmp_path / f"p{p}.npz") for p in range(2)]
    for o in out:
        assert int(o["process_count"]) == 2 and int(o["device_count"]) == 4
        assert tuple(o["global_shape"]) == (4, 2, 28, 28, 3)
    # Disjoint data: the two processes' samples come from different clips.
    assert not np.array_equal(out[0]["local"], out[1]["local"])
    # The global batch is process 0's rows then process 1's, identical on both processes.
    expected = np.concatenate([out[0]["local"], out[1]["local"]])
    for o in out:
        np.testing.assert_array_equal(o["gathered"], expected)
    # Each process holds exactly its own rows on its own two devices.
    assert [int(r[1]) for r in out[0]["shards"]] == [0, 1] and [int(r[1]) for r in out[1]["shards"]] == [2, 3]
