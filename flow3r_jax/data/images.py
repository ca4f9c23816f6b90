"""Frame image codec: uint8 RGB frames <-> JPEG / PNG files (OpenCV), and format detection.

Clip records (`flow3r_jax.data.records`) store their frames as the image files these functions
produce, one file per frame:

- `encode_jpeg(frames, quality=95)`: (K, H, W, 3) uint8 RGB -> K JPEG files (libjpeg, 4:2:0).
- `encode_png(frames)`: (K, H, W, 3) uint8 RGB -> K lossless PNG files.
- `decode_images(files)` (alias `decode_jpeg`, its historical name): JPEG or PNG files -> uint8
  RGB (K, H, W, 3); all files must decode to one size. EXIF orientation is ignored.
- `image_format(data)`: "jpeg", "png" or None, from the file's magic bytes (`IMAGE_MAGIC`).

Every failure raises `FrameCodecError` (a ValueError).
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

__all__ = [
    "FrameCodecError",
    "IMAGE_MAGIC",
    "encode_jpeg",
    "encode_png",
    "decode_images",
    "decode_jpeg",
    "image_format",
]

IMAGE_MAGIC = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n"}
"""The leading bytes of a file of each supported format (the keys are the format names)."""


class FrameCodecError(ValueError):
    """Frames that cannot be encoded or decoded as JPEG / PNG images of one size."""


def encode_jpeg(frames: np.ndarray, quality: int = 95) -> list[bytes]:
    """uint8 RGB frames (K, H, W, 3) -> K JPEG files (OpenCV / libjpeg, 4:2:0 chroma)."""
    return _encode_images(frames, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(quality)])


def encode_png(frames: np.ndarray) -> list[bytes]:
    """uint8 RGB frames (K, H, W, 3) -> K lossless PNG files."""
    return _encode_images(frames, ".png", [cv2.IMWRITE_PNG_COMPRESSION, 3])


def _encode_images(frames, ext: str, params: list[int]) -> list[bytes]:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        desc = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise FrameCodecError(f"encode{ext}: frames must be uint8 RGB (K, H, W, 3), got {desc}")
    out = []
    for k, frame in enumerate(frames):
        ok, buf = cv2.imencode(ext, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise FrameCodecError(f"encode{ext}: OpenCV failed to encode frame {k} of shape {frame.shape}")
        out.append(buf.tobytes())
    return out


def decode_images(frames: Sequence[bytes]) -> np.ndarray:
    """JPEG or PNG files -> uint8 RGB (K, H, W, 3); all frames must decode to one size."""
    return _decode_images(frames, "decode_images")


def decode_jpeg(frames: Sequence[bytes]) -> np.ndarray:
    """The same as `decode_images` (JPEG or PNG files), under its historical name."""
    return _decode_images(frames, "decode_jpeg")


def _decode_images(frames: Sequence[bytes], caller: str) -> np.ndarray:
    if len(frames) == 0:
        raise FrameCodecError(f"{caller}: no frames given")
    out = None
    for k, data in enumerate(frames):
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
        if img is None:
            raise FrameCodecError(f"{caller}: frame {k} ({len(data)} bytes) is not a decodable image")
        if out is None:
            out = np.empty((len(frames),) + img.shape, np.uint8)
        elif img.shape != out.shape[1:]:
            raise FrameCodecError(f"{caller}: frame {k} has shape {img.shape}, frame 0 has {out.shape[1:]}")
        out[k] = img
    return out


def image_format(data: bytes | bytearray | memoryview) -> str | None:
    """The format ("jpeg" or "png") whose magic bytes `data` starts with, else None. Only the
    first bytes are looked at: a file with the right magic may still fail to decode."""
    head = bytes(data[:8])
    for fmt, magic in IMAGE_MAGIC.items():
        if head.startswith(magic):
            return fmt
    return None
