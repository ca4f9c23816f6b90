"""Multi-process training through `launch/local_multiprocess.py`: two local JAX processes with 2
fake CPU devices each (gloo collectives, a 4-device data mesh, global batch 4) run the real
trainer on the real datasets; when one process dies, the launcher stops the other and fails,
without hanging. (That two processes train in lockstep is tested through the SLURM path:
tests/launch/test_slurm_multiprocess.py.)

These runs do not use JAX's persistent compilation cache: JAX writes cache entries only from
process 0, and on CPU the cache key differs between processes, so with a warm cache process 0
loads the step in seconds while process 1 compiles it for a minute; a skew over 30 s makes the
gloo context initialisation of the first collective time out (DEADLINE_EXCEEDED). Without the
cache both processes compile side by side and meet at the first step.
"""

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.train.conftest import ROOT, env, train_args

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
