"""Shared test configuration: deterministic hypothesis settings sized for a 2-core CPU."""

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import hypothesis
import numpy as np
import pytest

# jit compilation makes the first example slow; deadlines would be flaky. Derandomised so that a
# CI run is reproducible (a failing example is printed and can be pinned with @example).
hypothesis.settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True, print_blob=True)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def rng():
    return np.random.default_rng(0)
