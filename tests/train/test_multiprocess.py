"""Multi-process training through `launch/local_multiprocess.py`: two local JAX processes with 2
fake CPU devices each (gloo collectives, a 4-device data mesh, global batch 4) run the real
trainer on the real datasets. Both processes compute the same global step, so they log the same
losses; and when one process dies, the launcher stops the other and fails, without hanging.

These runs do not use JAX's persistent compilation cache: JAX writes cache entries only from
process 0, and on CPU the cache key differs between processes, so with a warm cache process 0
loads the step in seconds while process 1 compiles it for a minute; a skew over 30 s makes the
gloo context initialisation of the first collective time out (DEADLINE_EXCEEDED). Without the
cache both processes compile side by side and meet at the first step.
"""

import json
import math
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.train.conftest import ROOT, env, losses, train_args

STEPS = 3
LAUNCHER = os.path.join(ROOT, "launch", "local_multiprocess.py")
# "[1] ... step 2/3 loss 0.2485 (flow ...": the launcher's process prefix, the loop's step line.
LINE_RE = re.compile(r"^\[(\d)\] .*\bstep (\d+)/(\d+) loss (\S+)")

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def _env() -> dict:
    e = env()
    e.pop("JAX_COMPILATION_CACHE_DIR")
    return e


def _cmd(workdir, data):
    return [sys.executable, LAUNCHER, "-n", "2", "--cpu-devices", "2", "--grace", "5", "--", *train_args(workdir, data, steps=STEPS)]


def _step_losses(text) -> dict[int, dict[int, str]]:
    """process -> step -> the loss as logged (several handlers may print the same record)."""
    out: dict[int, dict[int, str]] = {}
    for line in text.splitlines():
        m = LINE_RE.search(line)
        if m:
            proc, step, total, loss = int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)
            assert total == STEPS, line
            seen = out.setdefault(proc, {})
            assert seen.get(step, loss) == loss, (proc, step, seen[step], loss)
            seen[step] = loss
    return out


def test_two_processes_train_in_lockstep(train_data, tmp_path):
    wd = tmp_path / "run"
    r = subprocess.run(_cmd(wd, train_data), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-5000:]
    assert "[0] " in r.stderr and "[1] " in r.stderr
    assert "mesh {'data': 4, 'fsdp': 1, 'tensor': 1} over 4 devices / 2 processes; global batch 4 (2 per process)" in r.stderr
    for i in (0, 1):
        assert f"[{i}] " in r.stderr and f"process {i} of 2, 2 local / 4 global devices" in r.stderr

    logged = _step_losses(r.stderr)
    assert sorted(logged) == [0, 1], r.stderr[-5000:]
    assert sorted(logged[0]) == list(range(1, STEPS + 1)) == sorted(logged[1])
    assert logged[0] == logged[1]  # the same global loss on both processes, step by step

    # Only process 0 writes metrics; its losses are the logged ones.
    got = losses(wd)
    assert sorted(got) == list(range(1, STEPS + 1))
    for s, v in got.items():
        assert math.isfinite(v) and v > 0
        assert float(logged[0][s]) == pytest.approx(v, rel=5e-4)  # %.4g in the log
    with open(wd / "metrics.jsonl") as f:
        assert len([json.loads(line) for line in f]) == STEPS  # one writer, not two

    # A checkpoint written by both processes together (checkpoint.every=2, then the final step),
    # with one Grain iterator state per process.
    ckpts = wd / "checkpoints"
    assert sorted(os.listdir(ckpts)) == ["2", "3"]
    for s in ("2", "3"):
        assert os.path.exists(ckpts / s / "_CHECKPOINT_METADATA")
        assert os.path.isdir(ckpts / s / "state")
        assert len(os.listdir(ckpts / s / "data")) >= 2, os.listdir(ckpts / s / "data")


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(d))
    return out


def _process_id(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env_vars = f.read().split(b"\0")
    except OSError:
        return None
    for kv in env_vars:
        if kv.startswith(b"FLOW3R_PROCESS_ID="):
            return kv.split(b"=", 1)[1].decode()
    return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_killed_process_stops_the_launcher(train_data, tmp_path):
    """SIGKILL of process 1 right after it logged step 1 (process 0 is then in, or on its way
    to, a collective with it): the launcher reports process 1, stops process 0 (SIGTERM, then
    SIGKILL after --grace 5 s) and exits 1, well within a minute; no process is left."""
    wd = tmp_path / "run"
    launcher = subprocess.Popen(_cmd(wd, train_data), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    q: queue.Queue = queue.Queue()

    def read():
        for line in launcher.stdout:
            lines.append(line)
            q.put(line)
        q.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 900
        while True:
            line = q.get(timeout=max(0.01, deadline - time.monotonic()))
            assert line is not None, "".join(lines)[-5000:]
            m = LINE_RE.search(line)
            if m and m.group(1) == "1" and m.group(2) == "1":
                break
        kids = {_process_id(p): p for p in _children(launcher.pid)}
        assert set(kids) == {"0", "1"}, kids
        os.kill(kids["1"], signal.SIGKILL)
        killed_at = time.monotonic()
        rc = launcher.wait(timeout=120)
        elapsed = time.monotonic() - killed_at
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait(timeout=30)
    reader.join(timeout=10)
    out = "".join(lines)
    print(f"launcher exited {elapsed:.1f} s after process 1 was killed")
    assert rc == 1, out[-5000:]
    assert "local_multiprocess: process 1 was killed by signal 9; stopping the other 1" in out, out[-5000:]
    assert elapsed < 60, elapsed  # 0.2 s polling + at most --grace 5 s for process 0
    assert not _alive(kids["0"]) and not _alive(kids["1"])
    # Process 1 died before step 3 finished: the run did not complete.
    assert "[1] " in out and not re.search(r"^\[1\] .*step 3/3 loss", out, re.M), out[-5000:]
