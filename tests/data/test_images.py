"""Frame image codec: JPEG / PNG round trips, format detection, and errors."""

import cv2
import numpy as np
import pytest

from flow3r_jax.data import images, records
from flow3r_jax.data.images import IMAGE_MAGIC, FrameCodecError, decode_images, decode_jpeg, encode_jpeg, encode_png, image_format


def _frames(rng, k=3, h=24, w=40):
    low = rng.integers(0, 256, (k, h // 8, w // 8, 3), dtype=np.uint8)  # smooth, like video frames
    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC) for f in low])


def test_png_is_lossless_and_jpeg_close(rng):
    frames = _frames(rng)
    png = encode_png(frames)
    assert len(png) == 3 and all(type(b) is bytes for b in png)
    np.testing.assert_array_equal(decode_images(png), frames)
    jpeg = decode_images(encode_jpeg(frames))
    assert jpeg.shape == frames.shape and jpeg.dtype == np.uint8
    assert np.abs(jpeg.astype(np.float64) - frames).mean() < 4
    low = decode_images(encode_jpeg(frames, quality=20))
    assert np.abs(low.astype(np.float64) - frames).mean() > np.abs(jpeg.astype(np.float64) - frames).mean()


def test_channels_are_rgb():
    red = np.zeros((1, 16, 16, 3), np.uint8)
    red[..., 0] = 255
    for files in (encode_png(red), encode_jpeg(red)):
        got = decode_images(files)
        assert got[..., 0].min() > 240 and got[..., 1:].max() < 15


def test_decode_jpeg_is_decode_images_and_records_reexports(rng):
    files = encode_jpeg(_frames(rng)) + encode_png(_frames(rng, k=1))  # formats may mix
    np.testing.assert_array_equal(decode_jpeg(files), decode_images(files))
    for name in ("encode_jpeg", "encode_png", "decode_jpeg", "FrameCodecError"):
        assert getattr(records, name) is getattr(images, name)


def test_image_format(rng):
    jpeg, png = encode_jpeg(_frames(rng, k=1))[0], encode_png(_frames(rng, k=1))[0]
    assert image_format(jpeg) == "jpeg" and image_format(png) == "png"
    assert image_format(memoryview(png)) == "png" and image_format(bytearray(jpeg)) == "jpeg"
    assert jpeg.startswith(IMAGE_MAGIC["jpeg"]) and png.startswith(IMAGE_MAGIC["png"])
    for other in (b"", b"\xff\xd8", b"GIF89a...", png[1:]):
        assert image_format(other) is None


@pytest.mark.parametrize(
    "frames, match",
    [
        (np.zeros((2, 8, 8, 3), np.float32), r"encode.jpg: frames must be uint8 RGB \(K, H, W, 3\), got float32 \(2, 8, 8, 3\)"),
        (np.zeros((8, 8, 3), np.uint8), r"got uint8 \(8, 8, 3\)"),
        (np.zeros((1, 8, 8, 4), np.uint8), r"got uint8 \(1, 8, 8, 4\)"),
        ([np.zeros((8, 8, 3), np.uint8)], "got list"),
    ],
)
def test_encode_errors(frames, match):
    with pytest.raises(FrameCodecError, match=match):
        encode_jpeg(frames)
    with pytest.raises(FrameCodecError, match=match.replace("jpg", "png")):
        encode_png(frames)


def test_decode_errors(rng):
    a, b = encode_jpeg(_frames(rng, k=1)), encode_jpeg(_frames(rng, k=1, h=32))
    with pytest.raises(FrameCodecError, match=r"decode_images: frame 1 has shape \(32, 40, 3\), frame 0 has \(24, 40, 3\)"):
        decode_images(a + b)
    with pytest.raises(FrameCodecError, match="decode_jpeg: frame 1 has shape"):
        decode_jpeg(a + b)
    with pytest.raises(FrameCodecError, match=r"decode_images: frame 0 \(13 bytes\) is not a decodable image"):
        decode_images([b"\xff\xd8\xff garbage!!"])
    with pytest.raises(FrameCodecError, match="frame 1 .* not a decodable image"):
        decode_images(a + [a[0][: len(a[0]) // 8]])  # truncated
    with pytest.raises(FrameCodecError, match="decode_images: no frames given"):
        decode_images([])
    assert issubclass(FrameCodecError, ValueError)
