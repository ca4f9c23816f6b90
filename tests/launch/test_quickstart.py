"""The quickstart (`./run.sh demo` = `python -m launch.quickstart`) end to end in its reduced form
(`--quick`: smaller scenes, a few steps), through the same entry point: data -> two training
stages on 8 fake CPU devices -> launch.eval -> reconstruct -> report. A second run reuses every
finished stage; a stage whose record is missing (as after an interruption) runs again and its
training resumes from the checkpoints instead of starting over."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.train.conftest import ROOT, env

pytestmark = pytest.mark.slow


def _quickstart(out, *extra, timeout=1500):
    r = subprocess.run([sys.executable, "-m", "launch.quickstart", "--quick", "--out", str(out), *extra], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (r.stdout[-6000:], r.stderr[-4000:])
    return r.stdout


def _ply_vertices(path) -> int:
    with open(path, "rb") as f:
        head = f.read(4096).split(b"end_header")[0].decode("ascii", "replace")
    return int(next(line.split()[-1] for line in head.splitlines() if line.startswith("element vertex")))


def _child_running(pid: int, needle: bytes) -> bool:
    """Whether a child process of `pid` has `needle` in its command line."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and needle in cmd:
            return True
    return False


def _train_commands(out, stage) -> int:
    with open(os.path.join(out, "logs", f"train_stage{stage}.log")) as f:
        return sum(line.startswith("$ ") for line in f)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart") / "qs"
    stdout = _quickstart(out)
    return out, stdout


def test_report_is_complete_with_finite_metrics(first_run):
    out, stdout = first_run
    rep = out / "report"
    metrics = json.loads((rep / "metrics.json").read_text())
    # launch.eval's numbers, both checkpoints, every task of the synthetic benchmark
    tasks = {r["task"] for r in metrics["eval"]}
    assert {"video_depth", "pose_trajectory", "pose_angular", "pointmap", "flow"} <= tasks
    for r in metrics["eval"]:
        assert math.isfinite(r["step_0"]) and math.isfinite(r["final"]), r
    # the report's table carries launch.eval's JSON values, not numbers of its own
    for tag in ("step_0", "final"):
        rep_json = json.loads((out / "eval" / tag / "synthetic.json").read_text())
        ate = rep_json["tasks"]["pose_trajectory"]["summary"]["ate"]
        assert any(r["metric"].startswith("ATE") and r[tag] == ate for r in metrics["eval"])
    # step 0 is the untrained model: training changed the flow head's output
    epe = {r["metric"]: r for r in metrics["eval"] if r["task"] == "flow"}["EPE ↓"]
    assert epe["step_0"] != epe["final"]
    for kind in ("feedforward", "refined"):
        e = metrics["reconstruct"][kind]
        assert e["frames"] == 6
        assert all(math.isfinite(e[k]) for k in ("ate_rel", "rot_err_deg", "rpe_rot_deg", "focal_err")), e
    # the trainer's eval hook ran at the start and the end of both stages
    assert set(metrics["heldout"]) == {"stage 1", "stage 2"}
    assert metrics["heldout"]["stage 2"]["last"]["step"] == 8
    summary = (rep / "summary.md").read_text()
    assert "| task | metric | step 0 | final |" in summary and "nan" not in summary.lower()
    for png in ("loss_curves.png", "trajectory_feedforward.png", "trajectory_refined.png"):
        assert (rep / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert _ply_vertices(rep / "points.ply") > 0
    for stage in ("stage1", "stage2"):
        tb = rep / "tensorboard" / stage
        assert tb.is_dir() and any(n.startswith("events.out.tfevents") for n in os.listdir(tb))
    # every output it names exists, and it says where they are
    for line in stdout.splitlines():
        if line.startswith("  ") and "/report/" in line:
            assert os.path.exists(line.split()[-1]), line
    assert str(rep / "summary.md") in stdout


def test_training_ran_on_8_devices_data_x_fsdp(first_run):
    out, _ = first_run
    for stage in (1, 2):
        log = (out / "logs" / f"train_stage{stage}.log").read_text()
        assert log.count("mesh {'data': 4, 'fsdp': 2, 'tensor': 1} over 8 devices") == 1  # printed once, not by absl too
    cfg = json.loads((out / "runs" / "stage2" / "config.json").read_text())
    assert cfg["init"]["kind"] == "checkpoint" and cfg["init"]["path"].endswith("stage1")
    assert cfg["train"]["trainable"] == "all_but_encoder"
    steps = sorted(int(n) for n in os.listdir(out / "runs" / "stage1" / "checkpoints") if n.isdigit())
    assert steps[0] == 0 and steps[-1] == 6  # the initial model is kept for the step-0 column


def test_rerun_reuses_and_an_interrupted_stage_resumes(first_run):
    out, _ = first_run
    ckpts = sorted(os.listdir(out / "runs" / "stage2" / "checkpoints"))
    # a rerun: nothing is run again
    stdout = _quickstart(out)
    for stage in ("data", "stage1", "stage2", "eval", "reconstruct"):
        assert f"{stage}: reusing the finished stage" in stdout
    assert _train_commands(out, 1) == 1 and _train_commands(out, 2) == 1
    # stage 2 without its record (as if interrupted after its last checkpoint), and Ctrl-C while
    # it runs again: the quickstart stops its launch.train and says how to resume
    os.remove(out / "stages" / "stage2.json")
    # SIGINT at its default in the child (a test run started in the background by a shell has it
    # ignored, and an ignored SIGINT stays ignored across exec: Python then raises no
    # KeyboardInterrupt)
    p = subprocess.Popen([sys.executable, "-m", "launch.quickstart", "--quick", "--out", str(out)], cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in p.stdout:
        if "[3/6] stage2" in line:
            break
    # Ctrl-C while its launch.train runs (a resume with nothing left to train ends within seconds
    # of starting, so the signal goes as soon as the process exists, not after a fixed wait)
    deadline = time.monotonic() + 120
    while not _child_running(p.pid, b"launch.train") and time.monotonic() < deadline:
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    rest, err = p.communicate(timeout=300)
    assert p.returncode == 130, (rest[-3000:], err[-3000:])
    assert "stopping train_stage2" in rest and "rerun the same command to resume" in err
    assert not (out / "stages" / "stage2.json").exists()
    assert _train_commands(out, 2) == 2
    # the same command again: stage 2 resumes from its checkpoints, the rest is reused
    stdout = _quickstart(out)
    assert "stage2: reusing" not in stdout and "stage1: reusing" in stdout
    assert _train_commands(out, 2) == 3
    log = (out / "logs" / "train_stage2.log").read_text()
    assert "resumed from" in log.split("$ ")[-1]
    assert sorted(os.listdir(out / "runs" / "stage2" / "checkpoints")) == ckpts
    metrics = [json.loads(line) for line in (out / "runs" / "stage2" / "metrics.jsonl").read_text().splitlines()]
    assert max(m["step"] for m in metrics) == 8 and np.isfinite([m.get("loss/total", 0.0) for m in metrics]).all()


def test_refuses_other_settings_and_foreign_directories(tmp_path, first_run):
    out, _ = first_run
    r = subprocess.run([sys.executable, "-m", "launch.quickstart", "--out", str(out)], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "other settings" in r.stderr and "--fresh" in r.stderr
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("x")
    for extra in ([], ["--fresh"]):
        r = subprocess.run([sys.executable, "-m", "launch.quickstart", "--quick", "--out", str(foreign), *extra], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and "quickstart" in r.stderr
    assert (foreign / "precious.txt").read_text() == "x"
    f = tmp_path / "file"
    f.write_text("")
    r = subprocess.run([sys.executable, "-m", "launch.quickstart", "--quick", "--out", str(f)], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "is a file" in r.stderr
