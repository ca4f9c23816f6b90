"""Small datasets written by the real data_pipelines writers, shared by the input-pipeline tests."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(args, cwd):
    subprocess.run([sys.executable, "-m", *args], cwd=cwd, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": ROOT})


@pytest.fixture(scope="session")
def datasets(tmp_path_factory):
    """{"labeled": dir of 4 synthetic clips with exact flow, "unlabeled": dir of 3 teacher-flow
    clips made from synthetic videos}; 8 frames of 112x154, offsets 1 and 2."""
    root = tmp_path_factory.mktemp("datasets")
    _run(["data_pipelines.make_dataset", "--synthetic", "4", "--output_dir", str(root / "labeled"), "--frames", "8", "--size", "112x154", "--offsets", "1,2"], root)
    _run(["data_pipelines.synthetic", "--out", str(root / "videos"), "--scenes", "3", "--frames", "10", "--size", "112x154", "--seed", "5"], root)
    _run(["data_pipelines.make_dataset", "--inputs", str(root / "videos" / "*" / "video.mp4"), "--output_dir", str(root / "unlabeled"), "--frames", "8", "--offsets", "1,2"], root)
    return {"labeled": str(root / "labeled"), "unlabeled": str(root / "unlabeled")}
