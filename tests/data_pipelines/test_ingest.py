"""Clip sampling: uniform and motion-based frame choice, resizing, times, read errors."""

import numpy as np
import pytest

from data_pipelines.ingest import IngestConfig, sample_clip, select_by_motion, target_size, uniform_indices
from data_pipelines.synthetic.video import write_video
from flow3r_jax.data.frames import FrameReadError, read_video


def test_uniform_indices():
    np.testing.assert_array_equal(uniform_indices(8, 8), np.arange(8))
    idx = uniform_indices(100, 24)
    assert idx[0] == 0 and idx[-1] == 99 and np.all(np.diff(idx) > 0) and len(idx) == 24


@pytest.mark.parametrize("hw", [(96, 128), (1080, 1920), (1920, 1080), (7, 3000), (500, 500)])
def test_target_size_keeps_aspect_and_budget(hw):
    H, W = hw
    for budget in (1_000, 50_000, 255_000, 10**7):
        h, w = target_size(H, W, budget)
        assert h <= H and w <= W  # never upscales
        if H * W <= budget:
            assert (h, w) == (H, W)
        else:
            assert h * w <= budget
            assert abs(h / w - H / W) / (H / W) <= 1.0 / h + 1.0 / w  # aspect kept to a pixel


def test_select_by_motion_skips_static_stretch():
    motion = np.concatenate([np.ones(10), np.zeros(30), np.ones(10)])  # moving, static, moving
    sel = select_by_motion(motion, 12)
    assert sel[0] == 0 and sel[-1] == 50 and np.all(np.diff(sel) > 0)
    in_static = np.sum((sel > 10) & (sel < 40))
    assert in_static <= 2, sel  # uniform sampling would put ~7 of 12 there
    np.testing.assert_array_equal(select_by_motion(np.zeros(20), 5), uniform_indices(21, 5))  # static video: uniform
    tight = select_by_motion(np.r_[np.zeros(3), 100.0, np.zeros(2)], 7)  # K = M: every candidate, in order
    np.testing.assert_array_equal(tight, np.arange(7))


def test_uniform_clip_matches_the_reader(pipe_videos):
    path = pipe_videos[1][0]
    clip = sample_clip(path, IngestConfig(frames=5))
    np.testing.assert_array_equal(clip.indices, uniform_indices(8, 5))
    frames, times = read_video(path, indices=clip.indices)
    np.testing.assert_array_equal(clip.frames, frames)  # no resize needed: 96 x 128 fits
    np.testing.assert_allclose(clip.times, clip.indices / 30.0, atol=1e-6)
    assert clip.frames.dtype == np.uint8 and clip.times.dtype == np.float32
    assert clip.source_size == (96, 128) and clip.num_source_frames == 8


def test_resize_to_max_pixels(pipe_videos):
    clip = sample_clip(pipe_videos[1][0], IngestConfig(frames=4, max_pixels=3000))
    h, w = clip.frames.shape[1:3]
    assert (h, w) == target_size(96, 128, 3000) and h * w <= 3000
    assert clip.frames.shape == (4, h, w, 3) and clip.frames.dtype == np.uint8


def test_flow_sampling_skips_a_static_stretch(pipe_clips, tmp_path):
    moving = pipe_clips[0]["images"]  # 8 frames with camera motion
    frames = np.concatenate([moving[:4], np.repeat(moving[4:5], 16, axis=0), moving[4:]])  # 24 frames, 15 static steps
    path = tmp_path / "static_middle.mp4"
    write_video(path, frames, fps=30)
    cfg = IngestConfig(frames=6, sampling="flow", flow_candidates=4)
    clip = sample_clip(str(path), cfg)
    static = (clip.indices > 4) & (clip.indices < 19)
    uniform = uniform_indices(24, 6)
    assert np.sum(static) < np.sum((uniform > 4) & (uniform < 19)), (clip.indices, uniform)
    assert np.all(np.diff(clip.indices) > 0) and clip.frames.shape[0] == 6


def test_image_folder_clip(bad_inputs, pipe_clips):
    clip = sample_clip(bad_inputs["good_folder"], IngestConfig(frames=4))
    np.testing.assert_array_equal(clip.frames, pipe_clips[0]["images"][uniform_indices(8, 4)])


@pytest.mark.parametrize(
    "case, match",
    [
        ("corrupt", "cannot be opened|corrupt"),
        ("truncated", "cannot be opened|truncated|corrupt"),
        ("short", "too few frames"),
        ("unreadable_image", "unreadable or corrupt image"),
        ("mixed_sizes", "mixed frame sizes"),
    ],
)
def test_bad_inputs_raise_named_errors(bad_inputs, case, match):
    with pytest.raises(FrameReadError, match=match) as info:
        sample_clip(bad_inputs[case], IngestConfig(frames=6))
    assert bad_inputs[case].split("/")[-1] in str(info.value) or case == "unreadable_image"


def test_missing_and_non_video_inputs(tmp_path):
    with pytest.raises(FrameReadError, match="no such file"):
        sample_clip(str(tmp_path / "nope.mp4"))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(FrameReadError, match="not an image folder or a video"):
        sample_clip(str(tmp_path / "notes.txt"))


def test_config_validation():
    with pytest.raises(ValueError, match="frames"):
        IngestConfig(frames=1)
    with pytest.raises(ValueError, match="sampling"):
        IngestConfig(sampling="random")


def test_image_folder_opens_only_the_sampled_images(pipe_clips, tmp_path):
    import cv2

    images = pipe_clips[0]["images"]  # 8 frames
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, img in enumerate(images):
        cv2.imwrite(str(folder / f"f{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    skipped = sorted(set(range(8)) - set(uniform_indices(8, 4).tolist()))
    (folder / f"f{skipped[0]}.png").write_bytes(b"not a png")  # never opened: not a sampled image
    clip = sample_clip(str(folder), IngestConfig(frames=4))
    np.testing.assert_array_equal(clip.indices, uniform_indices(8, 4))
    np.testing.assert_array_equal(clip.frames, images[uniform_indices(8, 4)])
    np.testing.assert_allclose(clip.times, clip.indices / 30.0, atol=1e-6)
    assert clip.num_source_frames == 8
    with pytest.raises(FrameReadError, match="unreadable or corrupt image"):  # a sampled one is
        sample_clip(str(folder), IngestConfig(frames=8))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FrameReadError, match="empty: no images"):
        sample_clip(str(empty), IngestConfig(frames=4))
