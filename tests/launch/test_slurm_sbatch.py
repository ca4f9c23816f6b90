"""`launch/slurm.sbatch`: it parses (`bash -n`), and its control flow works when run by bash with
fake `srun` / `scancel` / `scontrol` on PATH: the trainer command line it starts, USR1 forwarded
to the job's tasks and a requeue when the run has not finished, no requeue when it has or when
no signal came, and a clear error without WORKDIR."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.train.conftest import ROOT

SCRIPT = os.path.join(ROOT, "launch", "slurm.sbatch")

# srun: records its arguments and pid, then "trains" until USR1 / TERM (or exits at once).
FAKE_SRUN = """#!/bin/bash
printf '%s\\n' "$@" > "$FAKE/srun.args"
echo $$ > "$FAKE/srun.pid"
[ "${FAKE_SRUN_EXIT_AT_ONCE:-0}" = 1 ] && exit 0
trap 'echo "srun got USR1" >> "$FAKE/events"; exit 0' USR1
trap 'echo "srun got TERM" >> "$FAKE/events"; exit 0' TERM
while :; do sleep 0.05; done
"""
# scancel --signal=SIG JOB: signals the job's steps, here the fake srun.
FAKE_SCANCEL = """#!/bin/bash
echo "scancel $*" >> "$FAKE/events"
sig="${1#--signal=}"
kill -s "$sig" "$(cat "$FAKE/srun.pid")"
"""
FAKE_SCONTROL = """#!/bin/bash
echo "scontrol $*" >> "$FAKE/events"
"""


def test_bash_parses_it():
    r = subprocess.run(["bash", "-n", SCRIPT], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.fixture
def fake(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scancel", FAKE_SCANCEL), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    workdir = tmp_path / "run"
    workdir.mkdir()
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "FAKE": str(tmp_path),
        "SLURM_JOB_ID": "777",
        "SLURM_SUBMIT_DIR": ROOT,
        "WORKDIR": str(workdir),
        "CONFIG": "configs/flow3r.py:size=tiny",
        "PYTHON": sys.executable,
        "EXTRA_ARGS": "--config.log.every=5",
    }
    return tmp_path, workdir, env


def _events(tmp_path) -> list[str]:
    path = tmp_path / "events"
    return path.read_text().splitlines() if path.exists() else []


def _start(env, *args):
    return subprocess.Popen(["bash", SCRIPT, *args], cwd=env["FAKE"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(path, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text().strip():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _write_run(workdir, steps, saved):
    (workdir / "config.json").write_text(json.dumps({"train": {"steps": steps}}))
    for s in saved:
        (workdir / "checkpoints" / str(s)).mkdir(parents=True)


def _interrupt(tmp_path, env, signum):
    p = _start(env, "--config.train.lr=0.001")
    _wait_for(tmp_path / "srun.pid")
    p.send_signal(signum)
    out, _ = p.communicate(timeout=30)
    return p.returncode, out


def test_starts_the_trainer_with_config_workdir_and_overrides(fake):
    tmp_path, workdir, env = fake
    p = _start({**env, "FAKE_SRUN_EXIT_AT_ONCE": "1"}, "--config.train.lr=0.001")
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 0, out
    args = (tmp_path / "srun.args").read_text().splitlines()
    assert args[:2] == ["--kill-on-bad-exit=1", "--cpu-bind=none"]
    assert args[2:] == [sys.executable, "-u", "-m", "launch.train", "--config", "configs/flow3r.py:size=tiny", "--workdir", str(workdir), "--config.log.every=5", "--config.train.lr=0.001"]
    assert _events(tmp_path) == []  # no signal: no scancel, no requeue


def test_usr1_before_the_time_limit_forwards_and_requeues(fake):
    tmp_path, workdir, env = fake
    _write_run(workdir, steps=100, saved=[40, 60])
    rc, out = _interrupt(tmp_path, env, signal.SIGUSR1)
    assert rc == 0, out
    assert _events(tmp_path) == ["scancel --signal=USR1 777", "srun got USR1", "scontrol requeue 777"]
    assert "requeueing job 777" in out


def test_usr1_after_the_last_step_does_not_requeue(fake):
    tmp_path, workdir, env = fake
    _write_run(workdir, steps=100, saved=[80, 100])
    rc, out = _interrupt(tmp_path, env, signal.SIGUSR1)
    assert rc == 0, out
    assert _events(tmp_path) == ["scancel --signal=USR1 777", "srun got USR1"]
    assert "reached train.steps; not requeueing" in out


def test_term_stops_without_requeue(fake):
    tmp_path, workdir, env = fake
    _write_run(workdir, steps=100, saved=[40])
    rc, out = _interrupt(tmp_path, env, signal.SIGTERM)
    assert rc == 0, out
    assert _events(tmp_path) == ["scancel --signal=TERM 777", "srun got TERM"]


def test_missing_workdir_is_an_error(fake):
    tmp_path, _, env = fake
    env.pop("WORKDIR")
    p = _start(env)
    out, _ = p.communicate(timeout=30)
    assert p.returncode != 0 and "set WORKDIR" in out
    assert not (tmp_path / "srun.args").exists()
