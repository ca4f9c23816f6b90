"""Preemption and crashes with real processes and real signals: SIGTERM saves and exits 0, the
restart continues exactly (same losses as an uninterrupted run: parameters, optimiser and the
data order all restored); SIGKILL during an asynchronous save leaves the last committed
checkpoint usable, and a half-written (temporary) Orbax directory is never picked.

All runs share one program: 4 fake devices (fsdp=2 x data=2), global batch 8, 6 steps, the same
configuration as test_checkpoint.py's restore run, so the step compiles once for both files
(checkpoint.every and log.every do not enter the compiled step).
"""

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.train.conftest import ROOT, env, losses, train_args

CFG4 = {"data.global_batch": 8, "mesh.fsdp": 2, "mesh.data": 2}  # = test_checkpoint.CFG4
N = 6
STEP_RE = re.compile(r"step (\d+)/(\d+) loss")


class Watched:
    """A subprocess whose combined output is read line by line (a thread) as it comes."""

    def __init__(self, args):
        self.p = subprocess.Popen([sys.executable, "-u", "-m", "launch.train", *args], cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._q: queue.Queue = queue.Queue()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line)
            self._q.put(line)
        self._q.put(None)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern, timeout: float) -> re.Match:
        """The first output line (from now on) matching `pattern`; fails if the process ends or
        `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r} within {timeout} s:\n{self.output[-3000:]}")
            if line is None:
                pytest.fail(f"exited ({self.p.wait()}) before a line matching {pattern!r}:\n{self.output[-3000:]}")
            m = re.search(pattern, line)
            if m:
                return m

    def finish(self, timeout: float) -> int:
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"still running after {timeout} s:\n{self.output[-3000:]}")
        self._t.join(timeout=10)
        return rc

    def kill(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
        self.p.wait(timeout=30)


def _args(workdir, data, every):
    return train_args(workdir, data, steps=N, **CFG4, **{"checkpoint.every": every}) + ["--cpu_devices=4"]


def _committed_steps(ckpt_dir) -> list[int]:
    """Step directories with Orbax's commit marker (and both checkpointables)."""
    out = []
    for d in os.listdir(ckpt_dir):
        p = os.path.join(ckpt_dir, d)
        if d.isdigit() and os.path.exists(os.path.join(p, "_CHECKPOINT_METADATA")) and os.path.isdir(os.path.join(p, "state")) and os.path.isdir(os.path.join(p, "data")):
            out.append(int(d))
    return sorted(out)


def _logged_steps(text) -> list[int]:
    return sorted({int(m.group(1)) for m in STEP_RE.finditer(text)})


def _assert_same_losses(got: dict, ref: dict, steps):
    for s in steps:
        assert got[s] == pytest.approx(ref[s], rel=1e-5, abs=0), (s, got[s], ref[s], got, ref)


@pytest.mark.slow
def test_sigterm_and_sigkill_resume_exactly(train_data, tmp_path):
    """(1) A: 6 uninterrupted steps. (2) B: SIGTERM once step 2 is logged -> saves step k' and
    exits 0 with "preempted". (3) C: restart with a checkpoint every step: resumes from k',
    first runs step k'+1; SIGKILL once it has logged step k'+2 (while an asynchronous save is
    being written). (4) D, after fake half-written checkpoints of later steps were put
    next to the real ones: resumes from the last committed step, finishes step 6. Every step's
    loss of B's workdir (the last record of each step) equals A's: an exact resume, data
    order included."""
    ref_wd, wd = tmp_path / "uninterrupted", tmp_path / "interrupted"
    ckpts = wd / "checkpoints"

    # A and B side by side: both only need the compiled step (a cache hit after test_checkpoint).
    a = Watched(_args(ref_wd, train_data, every=100))
    b = Watched(_args(wd, train_data, every=100))
    try:
        b.wait_for(r"step 2/6 loss", timeout=600)
        b.p.send_signal(signal.SIGTERM)
        rc_b = b.finish(timeout=300)
        rc_a = a.finish(timeout=600)
    finally:
        a.kill()
        b.kill()
    assert rc_a == 0, a.output[-3000:]
    ref = losses(ref_wd)
    assert sorted(ref) == list(range(1, N + 1)) and all(np.isfinite(v) for v in ref.values()), ref
    # checkpoint.every=100: only the final save.
    assert _committed_steps(ref_wd / "checkpoints") == [N]

    assert rc_b == 0, b.output[-3000:]
    m = re.search(r"preempted: saved step (\d+) in (\S+);", b.output)
    assert m, b.output[-3000:]
    k = int(m.group(1))
    assert k in (2, 3), k  # the step the signal arrived in, or the next one
    assert m.group(2) == str(ckpts)
    assert _committed_steps(ckpts) == [k]  # the preemption save only (every=100)
    assert _logged_steps(b.output) == list(range(1, k + 1))
    got = losses(wd)
    assert sorted(got) == list(range(1, k + 1))
    _assert_same_losses(got, ref, range(1, k + 1))

    # C: restart, a checkpoint every step; SIGKILL right after step k+2 is logged.
    c = Watched(_args(wd, train_data, every=1))
    try:
        c.wait_for(rf"resumed from {re.escape(str(ckpts))}/{k}\b", timeout=600)
        c.wait_for(rf"step {k + 2}/6 loss", timeout=300)
        os.kill(c.p.pid, signal.SIGKILL)
        rc_c = c.finish(timeout=60)
    finally:
        c.kill()
    assert rc_c == -signal.SIGKILL
    assert _logged_steps(c.output)[0] == k + 1  # continued at the step after the saved one
    committed = _committed_steps(ckpts)
    leftovers = sorted(d for d in os.listdir(ckpts) if ".orbax-checkpoint-tmp" in d)
    print(f"preempted at {k}; killed after step {k + 2}: committed {committed}, temporary {leftovers}")
    # The kill lands while the asynchronous save of step k+1 (or k+2) is being written: the
    # steps before it are committed, the one in flight is at most a temporary directory.
    assert committed == list(range(k, max(committed) + 1)) and max(committed) <= k + 2, (committed, leftovers)
    last = max(committed)

    # Half-written checkpoints of later steps, named the way Orbax names its temporary
    # directories (orbax/checkpoint/_src/path/atomicity_types.py TMP_DIR_SUFFIX, also with the
    # timestamp of step.py's TMP_DIR_STEP_PATTERN), with the files a finished one would have.
    fakes = [ckpts / "90.orbax-checkpoint-tmp", ckpts / "91.orbax-checkpoint-tmp-1700000000123456"]
    for fake in fakes:
        for sub in ("state.orbax-checkpoint-tmp", "data.orbax-checkpoint-tmp"):
            (fake / sub).mkdir(parents=True)
        (fake / "state.orbax-checkpoint-tmp" / "junk").write_bytes(os.urandom(256))
        (fake / "_CHECKPOINT_METADATA").write_text("{not json")

    # D: restart again; resumes from the last committed step and finishes.
    d = Watched(_args(wd, train_data, every=1))
    try:
        rc_d = d.finish(timeout=600)
    finally:
        d.kill()
    assert rc_d == 0, d.output[-3000:]
    m = re.search(r"resumed from (\S+)/(\d+)", d.output)
    assert m and m.group(1) == str(ckpts) and int(m.group(2)) == last, (last, d.output[-3000:])
    assert _logged_steps(d.output) == list(range(last + 1, N + 1))
    # Temporary directories (the fakes and any the kill left) are cleaned up at start.
    assert not any(".orbax-checkpoint-tmp" in d for d in os.listdir(ckpts)), os.listdir(ckpts)
    assert max(_committed_steps(ckpts)) == N
    got = losses(wd)
    assert sorted(got) == list(range(1, N + 1))
    _assert_same_losses(got, ref, range(1, N + 1))
