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


@pytest.mark.parametrize("size, grid_size", [((480, 640), (176, 240)), ((479, 641), (176, 240)), ((1080, 1920), (160, 272)), ((64, 96), (48, 64))])
def test_uniform_grid_keeps_pixels_square_and_maps_pixel_centres_exactly(size, grid_size):
    """One scale for both axes and a centred crop: a linear image resized onto the grid takes, at
    each grid pixel centre, the value at that centre's input position (`to_input`); a pinhole
    with fx = fy on the grid is one with fx = fy on the image, projecting the same points."""
    from flow3r_jax.data.frames import grid_to_input, resize_to_grid, uniform_grid

    (H0, W0), (h, w) = size, grid_size
    g = uniform_grid(H0, W0, (h, w))
    assert g.model_size == (h, w) and g.input_size == (H0, W0)
    x0, y0, x1, y1 = g.box
    assert (x1 - x0) * h == pytest.approx((y1 - y0) * w, rel=1e-12)  # the covered region has the grid's aspect
    assert min(x0, y0) >= 0 and x1 <= W0 and y1 <= H0 and (x0 == 0 or y0 == 0)
    ys, xs = np.mgrid[0:H0, 0:W0] + 0.5
    ramp = (0.05 * xs + 0.11 * ys).astype(np.float32)
    on_grid = resize_to_grid(ramp[None], g)[0]
    my, mx = np.mgrid[0:h, 0:w] + 0.5
    at = g.to_input(np.stack([mx, my], -1))
    want = 0.05 * at[..., 0] + 0.11 * at[..., 1]
    # away from the filter's clipped border; the resampling filter's discrete weights place a
    # value within ~0.05 input pixels of its centre (a 1-pixel shift would be 0.05-0.11 off)
    np.testing.assert_allclose(on_grid[3:-3, 3:-3], want[3:-3, 3:-3], atol=0.05 * (0.05 + 0.11))
    np.testing.assert_allclose(g.from_input(at), np.stack([mx, my], -1), atol=1e-9)
    # uint8 frames go through the same mapping (PIL's Lanczos, the official filter)
    frames = np.repeat((255 * (0.5 + 0.5 * np.sin(xs / 7.0 + ys / 11.0))).astype(np.uint8)[None, ..., None], 3, axis=-1)
    got = resize_to_grid(frames, g)[0, ..., 0].astype(float)
    smooth = 255 * (0.5 + 0.5 * np.sin(at[..., 0] / 7.0 + at[..., 1] / 11.0))
    assert got.shape == (h, w) and np.abs(got - smooth)[3:-3, 3:-3].mean() < 0.1 * 255 * g.scale
    # intrinsics: the same rays
    K = np.array([[0.9 * w, 0, w / 2], [0, 0.9 * w, h / 2], [0, 0, 1.0]])
    Ki = g.intrinsics_to_input(K)
    assert Ki[0, 0] == pytest.approx(Ki[1, 1], rel=1e-12) and Ki[0, 1] == 0
    assert (Ki[0, 2], Ki[1, 2]) == (pytest.approx(W0 / 2), pytest.approx(H0 / 2))  # a centred crop keeps the centre
    pts = np.random.default_rng(0).normal(size=(50, 3)) + [0, 0, 4]
    proj = lambda K_: (pts @ K_.T)[:, :2] / pts[:, 2:]  # noqa: E731
    np.testing.assert_allclose(g.to_input(proj(K)), proj(Ki), atol=1e-9)
    np.testing.assert_allclose(g.intrinsics_from_input(Ki), K, atol=1e-9)  # the inverse map
    np.testing.assert_allclose(g.from_input(proj(Ki)), proj(g.intrinsics_from_input(Ki)), atol=1e-9)
    # back onto the image: exact for a linear map on the covered pixels away from its edge
    back = grid_to_input(on_grid[None], g)[0]
    cov = g.covered()
    inner = cov & (xs > x0 + 3 / g.scale) & (xs < x1 - 3 / g.scale) & (ys > y0 + 3 / g.scale) & (ys < y1 - 3 / g.scale)
    assert cov.sum() >= 0.85 * H0 * W0 and inner.any()
    np.testing.assert_allclose(back[inner], ramp[inner], atol=0.01)
