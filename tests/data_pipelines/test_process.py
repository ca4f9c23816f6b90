"""The per-input functions: record contents, labeled synthetic clips, and per-input failures."""

import json

import numpy as np
import pytest

from data_pipelines.covisibility import covisibility_masks
from flow3r_jax.correspondence.teacher import DISTeacher, TeacherOutput, compute_pair_flows, register_teacher
from data_pipelines.ingest import uniform_indices
from data_pipelines.make_dataset import _video_one, run
from data_pipelines.dataset_writer import DatasetWriter
from data_pipelines.inputs import discover_inputs
from data_pipelines.process import ConfigError, PipelineConfig, make_pairs, process_synthetic_scene, process_video
from flow3r_jax.data.flow_codec import decode_flow
from flow3r_jax.data.records import LabeledClip, UnlabeledClip, decode_jpeg, decode_record
from flow3r_jax.data.frames import read_video
from tests.data_pipelines.conftest import PIPE_CFG

CFG = PipelineConfig(frames=6, offsets=(1, 2), max_pixels=100_000, track_stride=8)


def test_make_pairs_matches_the_synthetic_order(pipe_clips):
    np.testing.assert_array_equal(make_pairs(PIPE_CFG.frames, PIPE_CFG.offsets), pipe_clips[0]["pairs"])
    assert make_pairs(3, (1, 8)).tolist() == [[0, 1], [1, 0], [1, 2], [2, 1]]


def test_config_round_trip_and_validation():
    cfg = PipelineConfig(offsets=[1, 3], teacher_kwargs={"preset": "fast"})
    assert PipelineConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="no pairs"):
        PipelineConfig(frames=4, offsets=(4, 8))
    with pytest.raises(ValueError, match="offsets"):
        PipelineConfig(offsets=(0, 1))


def test_unlabeled_record_contents(pipe_videos):
    path = pipe_videos[1][2]
    res = process_video(path, CFG, key="scene_0002/video.mp4")
    assert res.ok and res.failure is None, res.failure
    rec = decode_record(res.record)
    assert isinstance(rec, UnlabeledClip)
    assert rec.video_id == "scene_0002/video.mp4" and rec.source == path
    assert (rec.height, rec.width) == (96, 128) and len(rec.frames_jpeg) == 6
    idx = uniform_indices(8, 6)
    np.testing.assert_allclose(rec.frame_times, idx / 30.0, atol=1e-6)
    frames, _ = read_video(path, indices=idx)
    back = decode_jpeg(rec.frames_jpeg)
    assert back.shape == frames.shape and np.abs(back.astype(int) - frames).mean() < 5  # JPEG q95, 4:2:0 chroma
    pairs = make_pairs(6, (1, 2))
    np.testing.assert_array_equal(rec.pairs, pairs)
    assert len(rec.flows) == len(pairs)
    teacher = compute_pair_flows(DISTeacher(), frames, pairs).flow  # the same teacher, rerun
    masks = covisibility_masks(teacher, pairs)
    for p, blob in enumerate(rec.flows):
        flow, mask = decode_flow(blob)
        assert np.abs(flow - teacher[p]).max() <= 1 / 32 + 1e-6  # codec quantisation only
        np.testing.assert_array_equal(mask, masks[p])
    assert rec.tracks_xy.dtype == np.float32 and rec.tracks_xy.shape[:1] == (6,) and rec.tracks_xy.shape[2] == 2
    assert rec.tracks_visible.shape == rec.tracks_xy.shape[:2] and rec.tracks_visible[0, : 12 * 16].all()  # the frame-0 grid
    assert rec.teacher_name == "opencv-dis" and rec.teacher_version.startswith("opencv-")
    assert rec.extra["fb_alpha"] == 0.01 and rec.extra["fb_beta"] == 0.5
    assert json.loads(rec.extra["source_frame_indices"]) == idx.tolist()
    # Deterministic: the same input gives the same bytes (what resumption relies on).
    assert process_video(path, CFG, key="scene_0002/video.mp4").record == res.record


def test_reused_work_buffers_carry_nothing_between_videos(pipe_videos, monkeypatch):
    """process_video keeps its flow / mask arrays per worker thread across videos: a video's
    record must not depend on what the buffers held before (another video, another size)."""
    import threading

    from data_pipelines import process

    a, b = pipe_videos[1][0], pipe_videos[1][3]
    monkeypatch.setattr(process, "_BUFFERS", threading.local())
    fresh = process_video(a, CFG).record
    flows = process._BUFFERS.flows
    assert flows.shape == (len(make_pairs(6, (1, 2))), 96, 128, 2)
    other = process_video(b, CFG).record  # same shapes: the same arrays, overwritten
    assert process._BUFFERS.flows is flows and other != fresh
    assert process_video(a, CFG).record == fresh
    process_video(b, PipelineConfig(frames=5, offsets=(1, 3), max_pixels=100_000))  # other shapes: reallocated
    assert process._BUFFERS.flows.shape == (len(make_pairs(5, (1, 3))), 96, 128, 2)
    assert process_video(a, CFG).record == fresh


class _ConfidentDIS(DISTeacher):
    """DIS flow plus a per-pixel confidence computed from the two frames' pixel values, so that
    the test can recompute it and every pair's mask gets a different cut."""

    name = "dis-with-confidence"

    @staticmethod
    def confidence(src, dst):
        return ((src[..., 0].astype(np.int32) + 3 * dst[..., 1]) % 256).astype(np.float32) / 255.0

    def __call__(self, src, dst):
        return TeacherOutput(super().__call__(src, dst).flow, self.confidence(src, dst))


def test_teacher_confidence_is_anded_into_the_stored_masks(pipe_videos):
    """A teacher's confidence below min_confidence removes pixels from the covisibility mask:
    stored mask = forward-backward mask AND confidence >= min_confidence, pair by pair."""
    path = pipe_videos[1][2]
    res = process_video(path, CFG, teacher=_ConfidentDIS())
    assert res.ok, res.failure
    rec = decode_record(res.record)
    assert rec.teacher_name == "dis-with-confidence"
    frames, _ = read_video(path, indices=uniform_indices(8, 6))  # the frames the pipeline used
    pairs = make_pairs(6, (1, 2))
    fb = covisibility_masks(compute_pair_flows(DISTeacher(), frames, pairs).flow, pairs)
    conf = _ConfidentDIS.confidence(frames[pairs[:, 0]], frames[pairs[:, 1]])
    removed = 0
    for p, blob in enumerate(rec.flows):
        _, mask = decode_flow(blob)
        np.testing.assert_array_equal(mask, fb[p] & (conf[p] >= CFG.min_confidence))
        removed += int((fb[p] & (conf[p] < CFG.min_confidence)).sum())
    assert removed > 0.2 * fb.sum()  # the confidence really cut the masks


def test_compute_pair_flows_into_a_given_array(pipe_clips):
    frames = pipe_clips[0]["images"][:4]
    pairs = make_pairs(4, (1,))
    plain = compute_pair_flows(DISTeacher(), frames, pairs).flow
    out = np.full((len(pairs),) + frames.shape[1:3] + (2,), np.nan, np.float32)
    res = compute_pair_flows(DISTeacher(), frames, pairs, out=out)
    assert res.flow is out
    np.testing.assert_array_equal(out, plain)
    masks = covisibility_masks(plain, pairs)
    into = np.zeros(masks.shape, bool)
    assert covisibility_masks(plain, pairs, out=into) is into
    np.testing.assert_array_equal(into, masks)
    with pytest.raises(ValueError, match="out must be float32"):
        compute_pair_flows(DISTeacher(), frames, pairs, out=out[:-1])
    with pytest.raises(ValueError, match="out must be bool"):
        covisibility_masks(plain, pairs, out=into.astype(np.uint8))


def test_labeled_synthetic_record(pipe_clips):
    res = process_synthetic_scene(PIPE_CFG, 1)
    assert res.ok, res.failure
    rec = decode_record(res.record)
    clip = pipe_clips[1]
    assert isinstance(rec, LabeledClip) and rec.clip_id == "synthetic/seed_00000001" and rec.dataset == "synthetic"
    for name in ("depth", "valid", "intrinsics", "poses"):
        np.testing.assert_array_equal(getattr(rec, name), clip[name])
    np.testing.assert_array_equal(rec.pairs, clip["pairs"])
    for p, blob in enumerate(rec.flows):
        flow, mask = decode_flow(blob)
        assert np.abs(flow - clip["flow"][p]).max() <= 1 / 32 + 1e-6
        np.testing.assert_array_equal(mask, clip["covisible"][p])
    assert len(rec.frames_jpeg) == PIPE_CFG.frames and rec.extra["seed"] == 1
    np.testing.assert_array_equal(rec.dynamic, clip["dynamic"])
    assert np.abs(rec.decode_frames().astype(int) - clip["images"]).mean() < 5  # JPEG q95, 4:2:0 chroma


class _PickyTeacher:
    """Fails on 128-pixel-wide clips only, like a model that runs out of memory on some inputs."""

    name, version = "picky", "1"

    def __init__(self):
        self.dis = DISTeacher()

    def __call__(self, src, dst):
        if src.shape[2] == 128:
            raise RuntimeError("out of memory on a 128-wide clip")
        return self.dis(src, dst)


def test_every_bad_input_is_a_failure_and_the_others_are_written(bad_inputs, pipe_videos, pipe_clips, tmp_path):
    """inputs = written + failed, each failure with its stage and reason; nothing stops the run."""
    from data_pipelines.synthetic.video import write_video

    register_teacher("picky", _PickyTeacher)
    small = tmp_path / "small"
    small.mkdir()
    write_video(small / "narrow.mp4", pipe_clips[2]["images"][:, :48, :64], fps=30)  # 64 wide: the teacher copes
    specs = [bad_inputs["root"], str(small / "narrow.mp4")]
    inputs = discover_inputs(specs)
    cfg = PipelineConfig(frames=6, offsets=(1, 2), teacher="picky")
    writer = DatasetWriter(str(tmp_path / "out"), "bad_inputs", "unlabeled", cfg.to_dict(), num_shards=2)
    import functools

    manifest = run(writer, inputs, functools.partial(_video_one, cfg=cfg), progress=False)
    c = manifest["counts"]
    assert c["inputs"] == len(inputs) == c["written"] + c["failed"]
    assert c["written"] == 1  # only the narrow video survives the picky teacher
    by_input = {f["key"]: f for f in manifest["failures"]}
    expect = {
        "corrupt.mp4": ("read", "FrameReadError"),
        "truncated.mp4": ("read", "FrameReadError"),
        "short.mp4": ("read", "FrameReadError"),
        "unreadable_image": ("read", "FrameReadError"),
        "mixed_sizes": ("read", "FrameReadError"),
        "good_folder": ("teacher", "TeacherError"),
    }
    for key, (stage, etype) in expect.items():
        f = by_input[key]
        assert (f["stage"], f["error_type"]) == (stage, etype), f
        assert f["input"].endswith(key) and f["message"]
    assert "too few frames" in by_input["short.mp4"]["message"]
    assert "mixed frame sizes" in by_input["mixed_sizes"]["message"]
    assert "out of memory" in by_input["good_folder"]["message"]
    assert manifest["counts"]["failed_by_stage"] == {"read": 5, "teacher": 1}


def test_teacher_from_a_user_module(pipe_videos, tmp_path, monkeypatch):
    (tmp_path / "my_teachers_for_test.py").write_text(
        "from flow3r_jax.correspondence.teacher import DISTeacher, register_teacher\n"
        "class Fast(DISTeacher):\n"
        "    name = 'my-fast-dis'\n"
        "register_teacher('my_fast', lambda **kw: Fast('fast', **kw))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = PipelineConfig(frames=4, offsets=(1,), teacher="my_fast", teacher_module="my_teachers_for_test")
    res = process_video(pipe_videos[1][0], cfg)
    assert res.ok, res.failure
    rec = decode_record(res.record)
    assert rec.teacher_name == "my-fast-dis" and rec.teacher_version.endswith("-fast")


def test_failures_never_raise(tmp_path):
    res = process_video(str(tmp_path / "missing.mp4"), CFG)
    assert not res.ok and res.failure["stage"] == "read" and "no such file" in res.failure["message"]
    # A teacher that cannot be built is a configuration error, not a failure of the input.
    bad = PipelineConfig(frames=6, offsets=(1, 2), teacher="no_such_teacher")
    with pytest.raises(ConfigError, match="--teacher: unknown flow teacher 'no_such_teacher'"):
        process_video(str(tmp_path / "missing.mp4"), bad)

    class NaNTeacher:
        name, version = "nan", "0"

        def __call__(self, src, dst):
            return TeacherOutput(np.full(src.shape[:3] + (2,), np.nan, np.float32))

    write = tmp_path / "v.mp4"
    from data_pipelines.synthetic.video import write_video

    write_video(write, np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8), fps=30)
    res = process_video(str(write), CFG, teacher=NaNTeacher())
    assert res.failure["stage"] == "teacher" and "non-finite" in res.failure["message"]
