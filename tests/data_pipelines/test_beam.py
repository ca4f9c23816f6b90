"""The Beam pipeline on the DirectRunner: same records as the local runner; crash / kill + rerun
ends with byte-identical files (no duplicates, no gaps)."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("apache_beam")

from data_pipelines.beam_flow import main  # noqa: E402
from data_pipelines.shards import open_dataset  # noqa: E402
from flow3r_jax.data.records import decode_record  # noqa: E402
from tests.data_pipelines.conftest import files_of  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
RUNNER = ["--runner", "DirectRunner", "--direct_num_workers", "1", "--direct_running_mode", "in_memory"]


def _argv(inputs, out, *extra):
    return ["--input_glob", *inputs, "--output_dir", str(out), "--frames", "4", "--offsets", "1,2", "--num_shards", "3", *extra, *RUNNER]


@pytest.fixture(scope="module")
def beam_inputs(pipe_videos, bad_inputs):
    return [str(pipe_videos[0] / "*" / "video.mp4"), bad_inputs["corrupt"]]


@pytest.fixture(scope="module")
def whole(beam_inputs, tmp_path_factory):
    """An uninterrupted run: {file name: bytes}."""
    out = tmp_path_factory.mktemp("beam") / "whole"
    assert main(_argv(beam_inputs, out)) == 0
    return out, files_of(out)


@pytest.mark.slow
def test_beam_output(whole, beam_inputs, tmp_path):
    out, files = whole
    manifest = json.loads(files["manifest.json"])
    assert manifest["counts"] == {"inputs": 5, "written": 4, "failed": 1, "failed_by_stage": {"read": 1}}
    keys = [decode_record(r).video_id for r in open_dataset(str(out), decode=False)]
    assert sorted(keys) == [f"scene_{n:04d}/video.mp4" for n in range(4)]  # no duplicates, no gaps
    # Beam and the local runner produce the same dataset.
    from data_pipelines.make_dataset import main as local_main

    local = tmp_path / "local"
    assert local_main(["--inputs", *beam_inputs, "--output_dir", str(local), "--frames", "4", "--offsets", "1,2", "--num_shards", "3"]) == 0
    assert files_of(local) == files


@pytest.mark.slow
def test_beam_crash_and_lost_shard_rerun_identically(whole, beam_inputs, tmp_path):
    _, files = whole
    out = tmp_path / "resumed"
    # A failure after 2 inputs are staged: no manifest, no half-written shard.
    with pytest.raises(Exception, match="simulated crash"):
        main(_argv(beam_inputs, out, "--simulate_crash_after", "2"))
    assert not (out / "manifest.json").exists()
    staged = list((out / "_work" / "staging").glob("*/*.json"))
    assert len(staged) == 2
    assert main(_argv(beam_inputs, out)) == 0  # the rerun finishes the job ...
    assert files_of(out) == files  # ... with byte-identical shards, manifest and TFDS metadata
    assert all(not p.exists() for p in staged)  # staging is cleaned once shards are committed
    # Lose a shard (e.g. a bad disk): the rerun rebuilds exactly it.
    os.remove(out / json.loads(files["manifest.json"])["shards"][0]["file"])
    assert main(_argv(beam_inputs, out)) == 0
    assert files_of(out) == files


@pytest.mark.slow
def test_beam_killed_process_reruns_identically(whole, beam_inputs, tmp_path):
    """SIGKILL the pipeline process once two inputs are staged, rerun, compare."""
    _, files = whole
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "data_pipelines.beam_flow", *_argv(beam_inputs, out, "--simulate_slow_input", "1.0")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list((out / "_work" / "staging").glob("*/*.json"))) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the pipeline ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not (out / "manifest.json").exists()
    assert main(_argv(beam_inputs, out)) == 0
    assert files_of(out) == files
