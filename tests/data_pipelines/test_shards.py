"""Shards, the resumable dataset writer, the manifest and the local command line."""

import functools
import json
import os

import numpy as np
import pytest

from data_pipelines.dataset_writer import DatasetWriter, IncompleteShardError, PlanMismatchError, stable_shard
from data_pipelines.inputs import discover_inputs
from data_pipelines.make_dataset import _video_one, main, run
from data_pipelines.process import PipelineConfig, process_video
from data_pipelines.shards import open_dataset, read_shard, shard_filename, shard_length, write_shard
from flow3r_jax.data.records import LabeledClip, UnlabeledClip, decode_record
from tests.data_pipelines.conftest import files_of

CFG = PipelineConfig(frames=6, offsets=(1, 2))


def test_shard_round_trip_and_atomicity(tmp_path):
    recs = [os.urandom(n) for n in (10, 0, 5000, 1)]
    path = tmp_path / shard_filename("clips", 3, 8)
    assert path.name == "clips-train.array_record-00003-of-00008"
    size = write_shard(str(path), recs)
    assert size == path.stat().st_size and os.listdir(tmp_path) == [path.name]  # no temp file left
    assert read_shard(str(path)) == recs and shard_length(str(path)) == 4
    empty = tmp_path / "empty"
    write_shard(str(empty), [])
    assert read_shard(str(empty)) == [] and shard_length(str(empty)) == 0

    def failing():
        yield b"one"
        raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        write_shard(str(tmp_path / "partial"), failing())
    assert sorted(os.listdir(tmp_path)) == sorted([path.name, "empty"])  # nothing partial appears


def test_stable_shard_assignment():
    keys = [f"video_{i}.mp4" for i in range(2000)]
    shards = [stable_shard(k, 16) for k in keys]
    assert shards == [stable_shard(k, 16) for k in keys]  # deterministic (no per-process hash salt)
    counts = np.bincount(shards, minlength=16)
    assert counts.min() > 80 and counts.max() < 170  # ~125 each
    assert stable_shard("scene_0000/video.mp4", 7) == int.from_bytes(__import__("hashlib").sha256(b"scene_0000/video.mp4").digest()[:8], "big") % 7


def test_discover_inputs(pipe_videos, bad_inputs):
    root, paths = pipe_videos
    inputs = discover_inputs(str(root / "*" / "video.mp4"))
    assert [i.key for i in inputs] == [f"scene_{n:04d}/video.mp4" for n in range(4)]
    assert discover_inputs(paths) == inputs  # a shell-expanded glob gives the same ids
    assert discover_inputs(str(root)) == inputs  # directory search
    found = {i.key for i in discover_inputs(bad_inputs["root"])}
    assert {"corrupt.mp4", "short.mp4", "good_folder", "mixed_sizes", "unreadable_image"} <= found
    assert {i.key for i in discover_inputs(bad_inputs["root"], kind="folder")} == {"good_folder", "mixed_sizes", "unreadable_image"}
    with pytest.raises(ValueError, match="matches no input"):
        discover_inputs(str(root / "*.nothing"))


def _write(tmp, inputs, name="clips", num_shards=3, cfg=CFG, process=None):
    writer = DatasetWriter(str(tmp), name, "unlabeled", cfg.to_dict(), num_shards)
    return writer, run(writer, inputs, process or functools.partial(_video_one, cfg=cfg), progress=False)


def test_dataset_round_trip_and_manifest(pipe_videos, bad_inputs, tmp_path):
    inputs = discover_inputs([str(pipe_videos[0]), bad_inputs["short"]])
    writer, manifest = _write(tmp_path, inputs)
    c = manifest["counts"]
    assert (c["inputs"], c["written"], c["failed"]) == (5, 4, 1)
    assert manifest["failures"][0]["key"] == "short.mp4" and manifest["failures"][0]["stage"] == "read"
    assert manifest["teacher"]["name"] == "opencv-dis" and manifest["config"] == CFG.to_dict()
    assert manifest["schema_versions"]["flow_codec"] == 2 and manifest["record_type"] == "UnlabeledClip"
    assert [s["file"] for s in manifest["shards"]] == [shard_filename("clips", s, 3) for s in range(3)]
    for s in manifest["shards"]:
        assert os.path.getsize(tmp_path / s["file"]) == s["bytes"] and shard_length(str(tmp_path / s["file"])) == s["records"]
    assert manifest["bytes"] == sum(s["bytes"] for s in manifest["shards"])
    assert not (tmp_path / "_work" / "staging").exists() or not any((tmp_path / "_work" / "staging").iterdir())
    # Every record reads back equal to processing its input directly, each exactly once.
    with open_dataset(str(tmp_path), decode=False) as ds:
        raw = list(ds)
    assert len(raw) == 4
    by_key = {decode_record(r).video_id: r for r in raw}
    assert len(by_key) == 4
    for inp in inputs:
        if inp.key != "short.mp4":
            assert by_key[inp.key] == process_video(inp.path, CFG, key=inp.key).record
    rec = open_dataset(str(tmp_path))[0]
    assert isinstance(rec, UnlabeledClip)


class _Crash(Exception):
    pass


def _crashing(inp, cfg, after, seen):
    if len(seen) >= after:
        raise _Crash("simulated crash")
    seen.append(inp.key)
    return process_video(inp.path, cfg, key=inp.key)


def test_interrupted_local_run_resumes_to_identical_files(pipe_videos, tmp_path):
    inputs = discover_inputs(str(pipe_videos[0]))
    _write(tmp_path / "whole", inputs)
    seen = []
    with pytest.raises(_Crash):
        _write(tmp_path / "resumed", inputs, process=functools.partial(_crashing, cfg=CFG, after=2, seen=seen))
    assert not (tmp_path / "resumed" / "manifest.json").exists()
    (tmp_path / "resumed" / "clips-train.array_record-00001-of-00003.tmp-0badc0de").write_bytes(b"half a shard")  # a killed write
    done = []
    _write(tmp_path / "resumed", inputs, process=functools.partial(_crashing, cfg=CFG, after=99, seen=done))
    assert sorted(seen + done) == sorted(i.key for i in inputs)  # nothing processed twice
    assert files_of(tmp_path / "whole") == files_of(tmp_path / "resumed")
    # A deleted shard is rebuilt (its inputs reprocessed), again with identical bytes.
    victim = json.loads((tmp_path / "resumed" / "manifest.json").read_text())["shards"][0]["file"]
    os.remove(tmp_path / "resumed" / victim)
    _write(tmp_path / "resumed", inputs)
    assert files_of(tmp_path / "whole") == files_of(tmp_path / "resumed")


def test_rerun_with_other_settings_is_refused(pipe_videos, tmp_path):
    inputs = discover_inputs(str(pipe_videos[0]))[:2]
    _write(tmp_path, inputs, num_shards=1)
    with pytest.raises(PlanMismatchError, match="config"):
        _write(tmp_path, inputs, num_shards=1, cfg=PipelineConfig(frames=5, offsets=(1, 2)))
    with pytest.raises(PlanMismatchError, match="inputs_fingerprint"):
        _write(tmp_path, inputs[:1], num_shards=1)
    # A run started by a version of data_pipelines with another flow format is not resumed into
    # a dataset that would mix the two.
    plan_path = tmp_path / "_work" / "plan.json"
    plan = json.loads(plan_path.read_text())
    plan["schema_versions"]["flow_codec"] = 1
    plan_path.write_text(json.dumps(plan))
    with pytest.raises(PlanMismatchError, match="schema_versions"):
        _write(tmp_path, inputs, num_shards=1)
    fresh = DatasetWriter(str(tmp_path / "fresh"), "clips", "unlabeled", CFG.to_dict(), 1)
    assignment = fresh.prepare(inputs)
    with pytest.raises(IncompleteShardError, match="not processed"):
        fresh.finalize(assignment)  # inputs never processed: no manifest with gaps
    assert not (tmp_path / "fresh" / "manifest.json").exists()


def test_command_line_synthetic_labeled(tmp_path):
    out = tmp_path / "syn"
    argv = ["--synthetic", "2", "--output_dir", str(out), "--size", "96x128", "--frames", "8", "--offsets", "1,2,4", "--preset", "random"]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"inputs": 2, "written": 2, "failed": 0, "failed_by_stage": {}}
    assert manifest["kind"] == "labeled" and manifest["name"] == "flow3r_synthetic"
    recs = list(open_dataset(str(out)))
    assert sorted(r.clip_id for r in recs) == ["synthetic/seed_00000000", "synthetic/seed_00000001"]
    assert all(isinstance(r, LabeledClip) and r.depth.shape == (8, 96, 128) and len(r.flows) == 34 for r in recs)
    assert main(argv) == 0  # rerun: everything committed, nothing changes
    assert main(argv[:-2] + ["--preset", "orbit"]) == 2  # other settings, same directory: refused


def test_command_line_videos_in_worker_processes(pipe_videos, tmp_path, capsys):
    args = ["--inputs", str(pipe_videos[0] / "*" / "video.mp4"), "--frames", "4", "--offsets", "1", "--max_pixels", "3000"]
    assert main([*args, "--output_dir", str(tmp_path / "two"), "--workers", "2"]) == 0
    assert "4 written, 0 failed of 4 inputs" in capsys.readouterr().err
    recs = list(open_dataset(str(tmp_path / "two")))
    assert {(r.height, r.width) for r in recs} == {(47, 63)} and all(r.pairs.shape == (6, 2) for r in recs)
    assert main([*args, "--output_dir", str(tmp_path / "one")]) == 0
    assert files_of(tmp_path / "one") == files_of(tmp_path / "two")  # same bytes, whatever the process count


def _dies_on_scene_2(inp):
    if "scene_0002" in inp.key:
        os._exit(1)  # like a segfault in a native decoder, or the OOM killer
    return process_video(inp.path, PipelineConfig(frames=4, offsets=(1,)), key=inp.key)


def test_a_dying_worker_stops_the_run_instead_of_hanging(pipe_videos, tmp_path):
    inputs = discover_inputs(str(pipe_videos[0]))
    writer = DatasetWriter(str(tmp_path), "clips", "unlabeled", {"test": 1}, 1)
    with pytest.raises(RuntimeError, match="worker process died"):
        run(writer, inputs, _dies_on_scene_2, workers=2, progress=False)
    assert not (tmp_path / "manifest.json").exists()
