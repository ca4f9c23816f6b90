"""Shared by the training tests: small datasets written by the real data_pipelines writers, and
the command line of a tiny training run through the real entry point (`launch.train`)."""

import json
import os
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Compiled programs are reused across the subprocesses of a test (a restarted run compiles the
# same step): JAX's persistent compilation cache, shared by the test workers.
JIT_CACHE = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "flow3r_jax_test_jit_cache")  # tests/conftest.py sets it


# Fake CPU devices share 2 cores: a collective may wait far longer than XLA's default 40 s for
# its slowest participant, which then aborts the process. Tests wait instead.
COLLECTIVE_WAIT = " ".join(f"--xla_cpu_collective_{k}={v}" for k, v in [("call_terminate_timeout_seconds", 1800), ("call_warn_stuck_timeout_seconds", 600), ("timeout_seconds", 1800)])


def env(xla_flags: str = "", **extra) -> dict:
    e = {**os.environ, "PYTHONPATH": ROOT, "JAX_COMPILATION_CACHE_DIR": JIT_CACHE, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    e["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {xla_flags} {COLLECTIVE_WAIT}".strip()  # keeps tests/conftest.py's compile flags
    e.update(extra)
    return e


def _run(args, cwd):
    subprocess.run([sys.executable, "-m", *args], cwd=cwd, check=True, capture_output=True, env=env())


@pytest.fixture(scope="session")
def train_data(tmp_path_factory):
    """{"labeled": 6 synthetic clips with exact flow, "unlabeled": 4 teacher-flow clips of rendered
    videos, "heldout": 2 other synthetic clips}; 8 frames of 64x84, flow offsets 1 and 2."""
    root = tmp_path_factory.mktemp("train_data")
    _run(["data_pipelines.make_dataset", "--synthetic", "6", "--output_dir", str(root / "labeled"), "--frames", "8", "--size", "64x84", "--offsets", "1,2"], root)
    _run(["data_pipelines.make_dataset", "--synthetic", "2", "--seed", "100", "--output_dir", str(root / "heldout"), "--frames", "8", "--size", "64x84", "--offsets", "1,2"], root)
    _run(["data_pipelines.synthetic", "--out", str(root / "videos"), "--scenes", "4", "--frames", "10", "--size", "64x84", "--seed", "5"], root)
    _run(["data_pipelines.make_dataset", "--inputs", str(root / "videos" / "*" / "video.mp4"), "--output_dir", str(root / "unlabeled"), "--frames", "8", "--offsets", "1,2"], root)
    return {k: str(root / k) for k in ("labeled", "unlabeled", "heldout")}


def train_args(workdir, data, steps=4, **overrides) -> list[str]:
    """launch.train arguments of a tiny run (4 frames, 4 pairs, 56x56, global batch 4)."""
    cfg = {
        "data.sources": f"{data['labeled']}:1,{data['unlabeled']}:1",
        "data.global_batch": 4,
        "train.steps": steps,
        "log.every": 1,
        "checkpoint.every": 2,
        **overrides,
    }
    return ["--config", os.path.join(ROOT, "configs", "flow3r.py") + ":size=tiny", "--workdir", str(workdir)] + [f"--config.{k}={v}" for k, v in cfg.items()]


def run_train(args, timeout=600, **popen):
    """launch.train in a subprocess -> CompletedProcess (output in .stdout)."""
    return subprocess.run([sys.executable, "-m", "launch.train", *args], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout, **popen)


def losses(workdir) -> dict[int, float]:
    """step -> loss/total from metrics.jsonl (the last record of a step wins, as after a resume)."""
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if "loss/total" in rec:
                out[rec["step"]] = rec["loss/total"]
    return out
