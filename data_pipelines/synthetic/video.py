"""MP4 writing and reading with OpenCV (`cv2.VideoWriter` with the 'mp4v' codec: MPEG-4 Part 2,
available in opencv-python-headless without FFmpeg extras).

MPEG-4 Part 2 needs even frame sizes; the encoder would silently crop an odd size, so odd
heights / widths are padded by one row / column replicating the border instead (no pixel is lost
and the top-left origin, hence the intrinsics, is unchanged).
"""

from __future__ import annotations

import os

import cv2
import numpy as np

__all__ = ["write_video", "read_video", "VideoError"]

FOURCC = "mp4v"


class VideoError(RuntimeError):
    """MP4 writing or reading is unavailable or failed."""


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float) -> tuple[int, int]:
    """Writes RGB uint8 frames (K, H, W, 3) to an .mp4 file; returns the (height, width) written
    (H, W rounded up to even numbers)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"write_video: expected uint8 frames (K, H, W, 3) with K >= 1, got {frames.dtype} {frames.shape}")
    if not fps > 0:
        raise ValueError(f"write_video: fps must be positive, got {fps!r}")
    H, W = frames.shape[1:3]
    pad = ((0, 0), (0, H % 2), (0, W % 2), (0, 0))
    if H % 2 or W % 2:
        frames = np.pad(frames, pad, mode="edge")
    h, w = frames.shape[1:3]
    path = os.fspath(path)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*FOURCC), float(fps), (w, h))
    if not writer.isOpened():
        raise VideoError(
            f"write_video: OpenCV {cv2.__version__} cannot open an '{FOURCC}' MP4 writer for {path!r} "
            "(codec unavailable in this OpenCV build, or the directory is not writable)"
        )
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise VideoError(f"write_video: OpenCV {cv2.__version__} wrote no data to {path!r}")
    return h, w


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Decodes every frame of a video file into RGB uint8 (K, H, W, 3)."""
    path = os.fspath(path)
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise VideoError(f"read_video: OpenCV {cv2.__version__} cannot open {path!r}")
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not frames:
        raise VideoError(f"read_video: no frame could be decoded from {path!r}")
    return np.stack(frames)
