"""reconstruct's output directory: what counts as its own files, refusals, and the swap."""

import json
import os

import pytest

from flow3r_jax.export.outdir import LEGACY, OutputDirError, check_output_dir, commit, foreign_files, owned_files, staging_dir


def _touch(path, text="x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _write_run(out, files, status="complete"):
    stage = staging_dir(out)
    for rel in files:
        _touch(os.path.join(stage, rel), rel)
    return commit(out, stage, {"status": status})


def test_a_run_replaces_the_previous_runs_files_only(tmp_path):
    out = str(tmp_path / "out")
    _write_run(out, ["cameras.json", "images/frame_00000.png", "images/frame_00001.png", "depth/frame_00000.npy", "PARTIAL"], "partial")
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f)["status"] == "partial"
    written = _write_run(out, ["cameras.json", "images/a.jpg", "depth/a.npy"])
    assert sorted(written) == sorted(["cameras.json", "images/a.jpg", "depth/a.npy", "summary.json"])
    present = sorted(os.path.relpath(os.path.join(r, f), out) for r, _, fs in os.walk(out) for f in fs)
    assert present == sorted(written)  # no stale frame, depth map or PARTIAL marker, no staging folder
    assert open(os.path.join(out, "images", "a.jpg")).read() == "images/a.jpg"
    assert foreign_files(out) == [] and owned_files(out) == set(written)


def test_refusals_and_what_is_tolerated(tmp_path):
    check_output_dir(str(tmp_path / "new" / "deeper"))  # created when writing
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputDirError, match="is a file"):
        check_output_dir(str(f))
    with pytest.raises(OutputDirError, match="is a file"):
        check_output_dir(str(f / "sub"))
    old = tmp_path / "old"  # what a version without summary.json wrote: reused
    for rel in LEGACY:
        _touch(str(old / rel))
    check_output_dir(str(old))
    _touch(str(old / "images" / "mine.png"))  # not in any manifest: the user's
    with pytest.raises(OutputDirError, match=r"images/mine.png"):
        check_output_dir(str(old))
    fake = tmp_path / "fake"
    _touch(str(fake / "summary.json"), json.dumps({"files": ["x"]}))  # not reconstruct's summary
    with pytest.raises(OutputDirError, match="summary.json"):
        check_output_dir(str(fake))
    sweep = tmp_path / "job"  # a launch.sweep job directory: its files stay, untouched
    for rel in ("sweep_job.json", "config.json", "log.txt"):
        _touch(str(sweep / rel))
    check_output_dir(str(sweep))
    _write_run(str(sweep), ["cameras.json"])
    _write_run(str(sweep), ["points.ply"])
    assert sorted(os.listdir(sweep)) == ["config.json", "log.txt", "points.ply", "summary.json", "sweep_job.json"]
