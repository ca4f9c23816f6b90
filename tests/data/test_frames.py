"""Frame reading from videos and folders, errors, and the official sizing rule."""

import os

import cv2
import numpy as np
import pytest

from flow3r_jax.data.frames import FrameReadError, official_target_size, read_frames, read_image_folder, read_video, resize_frames


def _write_video(path, frames, fps=10):
    h, w = frames.shape[1:3]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), (64, 48), interpolation=cv2.INTER_CUBIC)
    return np.stack([np.roll(base, 2 * k, axis=1) for k in range(7)])


def test_video_round_trip_indices_and_times(tmp_path, frames):
    path = tmp_path / "v.mp4"
    _write_video(path, frames, fps=10)
    got, times = read_video(str(path))
    assert got.shape == frames.shape and got.dtype == np.uint8
    # Lossy codec: each decoded frame is much closer to its own source than to the neighbours.
    err = np.abs(got[:, None].astype(int) - frames[None].astype(int)).mean(axis=(2, 3, 4))
    assert np.all(np.argmin(err, axis=1) == np.arange(7)) and np.all(np.diag(err) < 0.5 * np.sort(err, 1)[:, 1])
    np.testing.assert_allclose(times, np.arange(7) / 10, atol=1e-6)
    sub, t = read_video(str(path), indices=[5, 1, 3])
    np.testing.assert_array_equal(sub, got[[1, 3, 5]])
    np.testing.assert_allclose(t, [0.1, 0.3, 0.5], atol=1e-6)
    strided, _ = read_video(str(path), stride=3)
    np.testing.assert_array_equal(strided, got[[0, 3, 6]])


def test_video_errors(tmp_path, frames):
    path = tmp_path / "v.mp4"
    _write_video(path, frames)
    with pytest.raises(FrameReadError, match="frame 20 was requested"):
        read_video(str(path), indices=[1, 20])
    with pytest.raises(FrameReadError, match="at least 30"):
        read_video(str(path), min_frames=30)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(2000))
    with pytest.raises(FrameReadError, match="corrupt.mp4"):
        read_video(str(corrupt))
    with pytest.raises(FrameReadError, match="no such"):
        read_video(str(tmp_path / "missing.mp4"))


def test_image_folder_and_errors(tmp_path, frames):
    for k, f in enumerate(frames[:3]):
        cv2.imwrite(str(tmp_path / f"{k:03d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    got, times, names = read_frames(str(tmp_path))
    np.testing.assert_array_equal(got, frames[:3])  # PNG is lossless
    assert names == ["000.png", "001.png", "002.png"]
    (tmp_path / "003.png").write_bytes(b"not a png")
    with pytest.raises(FrameReadError, match="003.png: unreadable"):
        read_image_folder(str(tmp_path))
    os.remove(tmp_path / "003.png")
    cv2.imwrite(str(tmp_path / "004.png"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(FrameReadError, match="mixed frame sizes.*004.png"):
        read_image_folder(str(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FrameReadError, match="no images"):
        read_frames(str(empty))


def _official_rule(W_orig, H_orig, limit=255000):
    """The official loader's rule, transcribed."""
    import math

    scale = math.sqrt(limit / (W_orig * H_orig))
    W_t, H_t = W_orig * scale, H_orig * scale
    k, m = round(W_t / 14), round(H_t / 14)
    while (k * 14) * (m * 14) > limit:
        if k / m > W_t / H_t:
            k -= 1
        else:
            m -= 1
    return max(1, m) * 14, max(1, k) * 14


@pytest.mark.parametrize("hw", [(480, 640), (1080, 1920), (1920, 1080), (224, 224), (100, 3000), (378, 518)])
def test_official_target_size(hw):
    H, W = official_target_size(*hw)
    assert (H, W) == _official_rule(hw[1], hw[0])
    assert H % 14 == 0 and W % 14 == 0 and H * W <= 255000


def test_resize_frames_uses_lanczos(frames):
    from PIL import Image

    out = resize_frames(frames[:2], (42, 56))
    assert out.shape == (2, 42, 56, 3)
    np.testing.assert_array_equal(out[1], np.asarray(Image.fromarray(frames[1]).resize((56, 42), Image.Resampling.LANCZOS)))
