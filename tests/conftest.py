"""Shared test configuration: deterministic hypothesis settings sized for a 2-core CPU."""

import os
import tempfile

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# Compile time dominates this suite on a 2-core CPU (each test compiles small programs and runs
# them a few times), so tests ask XLA's CPU backend for less optimisation: about 40% less CPU time
# for the model tests, the same results within the tests' fp32 tolerances. XLA's newer CPU fusion
# emitters take twice as long to compile the tiny train step as the classic ones (32 -> 15 s;
# tests/models/test_flow3r.py + tests/flowmap/test_optimize.py: 385 -> 285 CPU-s), so tests use
# the classic ones. Benchmarks, demos and real runs keep XLA's defaults. Subprocesses inherit the
# flags unless a test sets its own XLA_FLAGS; FLOW3R_TEST_XLA_OPT=default turns this off.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true --xla_cpu_use_fusion_emitters=false"
if os.environ.get("FLOW3R_TEST_XLA_OPT", "fast") == "fast" and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()

# The same small programs (the tiny model's forward and train step, FlowMap's step) are compiled
# by many tests and by the subprocesses they start: JAX's persistent compilation cache, shared by
# the test workers and their subprocesses (tests that start several JAX processes remove it from
# their children's environment). A run can point it elsewhere with JAX_COMPILATION_CACHE_DIR.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "flow3r_jax_test_jit_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import hypothesis
import numpy as np
import pytest

# jit compilation makes the first example slow; deadlines would be flaky. Derandomised so that a
# CI run is reproducible (a failing example is printed and can be pinned with @example).
hypothesis.settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True, print_blob=True)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    import jax  # the environment above is read when jax is imported; set it again if it already was

    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# The longest test files first. `./run.sh test` runs `--dist loadfile --no-loadscope-reorder`:
# xdist hands whole files to the two workers in collection order, so a long file collected last
# leaves the other worker idle (xdist's default order, by number of tests per file, put the
# one-test multi-process files last: a worker sat idle for minutes at the end). Longest first
# (LPT scheduling) keeps both busy to the end. Rough per-file times from `--durations` on the
# 2-core VM (2026-12-07); files not listed follow in their usual order.
_LONGEST_FIRST = (
    "tests/launch/test_quickstart.py",
    "tests/test_reconstruct.py",
    "tests/test_reconstruct_sfm.py",
    "tests/train/test_step.py",
    "tests/train/test_preemption.py",
    "tests/train/test_multiprocess.py",
    "tests/train/test_learning.py",
    "tests/launch/test_slurm_multiprocess.py",
    "tests/flowmap/test_optimize.py",
    "tests/convert/test_official.py",
    "tests/benchmarks/test_ablation.py",
    "tests/train/test_checkpoint.py",
    "tests/eval/test_runner.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {path: k for k, path in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable: order within a file kept
