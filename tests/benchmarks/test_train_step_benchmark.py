"""benchmarks/train_step.py: the official model rebuilt at our sizes, and one end-to-end run.

Both need torch and a checkout of the official code (`Kidrauh/flow3r`, named by
FLOW3R_OFFICIAL_REPO as for benchmarks/inference.py); they are skipped without either. The
figures are printed, never asserted: only that both sides produced finite ones.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

from tests.train.conftest import ROOT, env

OFFICIAL_KEYS = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "official_keys.json"
# The benchmark's step is compiled in a fresh process; a lower XLA optimisation level roughly
# halves its compile time on 2 cores (the timings are not asserted), and the persistent cache of
# the training tests makes reruns cheap.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


@pytest.fixture(scope="module")
def official_repo():
    pytest.importorskip("torch")
    repo = os.environ.get("FLOW3R_OFFICIAL_REPO")
    if not repo or not os.path.isfile(os.path.join(repo, "flow3r", "models", "flow3r.py")):
        pytest.skip("official Flow3r checkout not available (set FLOW3R_OFFICIAL_REPO)")
    return repo


@pytest.mark.torch
def test_official_model_at_large_has_exactly_the_official_keys_and_shapes(official_repo):
    """The size-parameterised constructor, at `large`, is the official `Flow3r()` (built on the
    meta device: shapes only; DINOv2's drop-path schedule needs a real `linspace`)."""
    from unittest import mock

    import torch

    from benchmarks.train_step import official_flow3r
    from flow3r_jax.models import get_model_config

    linspace = torch.linspace
    with torch.device("meta"), mock.patch.object(torch, "linspace", lambda *a, **k: linspace(*a, **{**k, "device": "cpu"})):
        model = official_flow3r(official_repo, get_model_config("large"))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    official = {k: v["shape"] for k, v in json.loads(OFFICIAL_KEYS.read_text())["state_dict"].items()}
    assert ours == official


@pytest.mark.torch
@pytest.mark.slow
def test_benchmark_prints_finite_figures_for_both_sides(official_repo):
    args = ["--sizes", "tiny", "--frames", "2", "--height", "28", "--width", "28", "--steps", "1", "--warmup", "0"]
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "train_step.py"), *args],
        cwd=ROOT, env=env(xla_flags=FAST_COMPILE, FLOW3R_OFFICIAL_REPO=official_repo), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    # The converted weights give the same forward pass on both sides.
    same = next(line for line in out.splitlines() if "max abs forward differences" in line)
    diffs = [float(tok.rstrip(",")) for tok in same.split("differences")[1].split()[1::2]]
    assert len(diffs) == 4 and max(diffs) < 1e-3, same
    # The table row: size, B x N, HxW, compile s, ours ms, official ms, ours f/s, official f/s,
    # ours/official, CPU-s ratio, XLA GFLOP, GFLOP/s.
    row = next(line for line in out.splitlines() if line.startswith("tiny ")).split()
    assert row[1:4] == ["1", "x", "2"] and row[4] == "28x28", row
    figures = [float(v) for v in row[5:]]
    assert len(figures) == 9 and all(math.isfinite(v) and v > 0 for v in figures), row
