"""Reading frames from videos and image folders, and the official model input sizing.

One reader for the whole project (dataset ingest, `reconstruct`, model inference): frames come
back as uint8 RGB (K, H, W, 3) with their times in seconds. Every problem raises `FrameReadError`
naming the file and what is wrong (unreadable / corrupt file, truncated video, too few frames,
mixed frame sizes in a folder) instead of silently skipping data.

Image folders are read in natural order (`frame2.png` before `frame10.png`, `natural_key`).
Subsets (`indices=`) are read without holding the rest: a folder opens only the selected files,
a video grabs the skipped frames without converting or copying them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

import cv2
import numpy as np

__all__ = [
    "FrameReadError",
    "VideoInfo",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "natural_key",
    "list_images",
    "read_image",
    "read_image_folder",
    "probe_video",
    "read_video",
    "read_frames",
    "count_video_frames",
    "even_indices",
    "official_target_size",
    "resize_frames",
    "load_model_input",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v")


class FrameReadError(ValueError):
    """A video or image input cannot be read as asked; the message names the file."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    path: str
    num_frames: int  # as reported by the container (may be approximate; read_video counts)
    fps: float
    height: int
    width: int


_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key ordering names as people number them: `frame2.png` before `frame10.png`.
    Digit runs compare as numbers and the rest case-insensitively; ties (`frame01` / `frame1`,
    `A` / `a`) fall back to the plain name, so the order is total and deterministic."""
    parts = _DIGITS.split(name)
    return tuple((0, int(p), "") if i % 2 else (1, 0, p.lower()) for i, p in enumerate(parts)), name


def list_images(folder: str) -> list[str]:
    """Image files of a folder (by extension), in natural order (`natural_key`)."""
    if not os.path.isdir(folder):
        raise FrameReadError(f"{folder}: not a directory")
    names = [f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f))]
    return [os.path.join(folder, f) for f in sorted(names, key=natural_key)]


def even_indices(count: int, want: int) -> list[int]:
    """`want` indices evenly spaced over range(count), first and last included (all of them when
    count <= want)."""
    if count <= want:
        return list(range(count))
    return np.unique(np.round(np.linspace(0, count - 1, want)).astype(int)).tolist()


def read_image(path: str) -> np.ndarray:
    """uint8 RGB (H, W, 3)."""
    data = np.fromfile(path, np.uint8) if os.path.isfile(path) else None
    if data is None:
        raise FrameReadError(f"{path}: no such image file")
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise FrameReadError(f"{path}: unreadable or corrupt image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_image_folder(folder: str, stride: int = 1, max_frames: int | None = None, fps: float = 30.0, indices=None):
    """Frames (K, H, W, 3) uint8, times (K,) (index / fps) and file names of an image folder.

    `indices` selects images by position in the natural order (sorted, unique); otherwise every
    `stride`-th image up to `max_frames`. Only the selected files are opened."""
    paths = list_images(folder)
    if indices is not None:
        wanted = sorted(set(int(i) for i in indices))
        if wanted and (wanted[0] < 0 or wanted[-1] >= len(paths)):
            raise FrameReadError(f"{folder}: {len(paths)} images, image index {wanted[-1] if wanted[-1] >= len(paths) else wanted[0]} was requested")
        positions = wanted
    else:
        positions = list(range(0, len(paths), stride))
        if max_frames is not None:
            positions = positions[:max_frames]
    paths = [paths[i] for i in positions]
    if not paths:
        raise FrameReadError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    frames = [read_image(p) for p in paths]
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
        first = frames[0].shape
        odd = [os.path.basename(p) for p, f in zip(paths, frames) if f.shape != first]
        raise FrameReadError(f"{folder}: mixed frame sizes: {os.path.basename(paths[0])} is {first[1]}x{first[0]} but {odd[:5]} differ")
    times = np.asarray(positions, np.float64) / fps
    return np.stack(frames), times.astype(np.float32), [os.path.basename(p) for p in paths]


def probe_video(path: str) -> VideoInfo:
    if not os.path.isfile(path):
        raise FrameReadError(f"{path}: no such video file")
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise FrameReadError(f"{path}: cannot be opened as a video (corrupt or unsupported container)")
        return VideoInfo(
            path,
            int(cap.get(cv2.CAP_PROP_FRAME_COUNT)),
            float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
        )
    finally:
        cap.release()


def read_video(path: str, indices=None, stride: int = 1, max_frames: int | None = None, min_frames: int = 1):
    """Decodes a video sequentially. Returns frames (K, H, W, 3) uint8 and times (K,) seconds.

    `indices` selects frames by decode index (sorted, unique); otherwise every `stride`-th frame
    up to `max_frames`. Frames that are not kept are only grabbed (`VideoCapture.grab`: demuxed
    and decoded by the codec, never converted to RGB or copied out), so memory holds the kept
    frames only. Raises FrameReadError if the file cannot be opened, decodes to fewer than
    `min_frames` frames, or requested indices lie beyond the decodable end (truncated file).
    """
    info = probe_video(path)
    fps = info.fps if info.fps > 0 else 30.0
    wanted = None if indices is None else sorted(set(int(i) for i in indices))
    wanted_set = None if wanted is None else set(wanted)
    frames, times = [], []
    cap = cv2.VideoCapture(path)
    index = 0
    try:
        while True:
            if wanted is not None and (not wanted or index > wanted[-1]):
                break
            if wanted is None and max_frames is not None and len(frames) >= max_frames:
                break
            take = (index in wanted_set) if wanted is not None else (index % stride == 0)
            if not cap.grab():
                break
            if take:
                ok, frame = cap.retrieve()
                if not ok or frame is None:
                    break
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                times.append(index / fps)
            index += 1
    finally:
        cap.release()
    if wanted is not None and len(frames) < len(wanted):
        raise FrameReadError(f"{path}: truncated or corrupt: decoded {index} frames, frame {wanted[len(frames)]} was requested")
    if len(frames) < min_frames:
        raise FrameReadError(f"{path}: only {len(frames)} decodable frame(s), at least {min_frames} needed")
    if len({f.shape for f in frames}) > 1:
        raise FrameReadError(f"{path}: frame size changes within the video")
    return np.stack(frames), np.asarray(times, np.float32)


def count_video_frames(path: str) -> int:
    """The number of decodable frames, counted by grabbing every frame (no RGB conversion, no
    copies): exact where the container's `probe_video(path).num_frames` is only a claim."""
    probe_video(path)
    cap = cv2.VideoCapture(path)
    n = 0
    try:
        while cap.grab():
            n += 1
    finally:
        cap.release()
    return n


def read_frames(path: str, **kwargs):
    """A video file or an image folder -> (frames, times, names): a folder's file names, or
    `frame_NNNNN` (the decode index) for a video."""
    if os.path.isdir(path):
        return read_image_folder(path, **{k: v for k, v in kwargs.items() if k in ("stride", "max_frames", "fps", "indices")})
    if path.lower().endswith(VIDEO_EXTENSIONS):
        frames, times = read_video(path, **{k: v for k, v in kwargs.items() if k in ("indices", "stride", "max_frames", "min_frames")})
        if kwargs.get("indices") is not None:
            decoded = sorted(set(int(i) for i in kwargs["indices"]))
        else:
            decoded = range(0, len(frames) * kwargs.get("stride", 1), kwargs.get("stride", 1))
        return frames, times, [f"frame_{i:05d}" for i in decoded]
    if not os.path.exists(path):
        raise FrameReadError(f"{path}: no such file or directory")
    raise FrameReadError(f"{path}: not an image folder or a video ({', '.join(VIDEO_EXTENSIONS)})")


def official_target_size(height: int, width: int, max_pixels: int = 255_000, patch: int = 14) -> tuple[int, int]:
    """The official Flow3r / pi^3 inference size: scale to about `max_pixels` keeping the aspect,
    round both sides to multiples of `patch`, then shrink the side that keeps the aspect best
    until the area fits. Returns (H, W)."""
    scale = math.sqrt(max_pixels / (width * height)) if width * height > 0 else 1.0
    w_t, h_t = width * scale, height * scale
    k, m = round(w_t / patch), round(h_t / patch)
    while (k * patch) * (m * patch) > max_pixels:
        if k / m > w_t / h_t:
            k -= 1
        else:
            m -= 1
    return max(1, m) * patch, max(1, k) * patch


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes uint8 frames (K, H, W, 3) to (h, w) with PIL's Lanczos filter (the official loader's)."""
    from PIL import Image

    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.LANCZOS)) for f in frames])


def load_model_input(path: str, max_pixels: int = 255_000, stride: int = 1, max_frames: int | None = None):
    """Frames of a video or folder sized by the official rule, as float32 (N, H, W, 3) in [0, 1],
    plus the original size (H0, W0) and the frame names."""
    frames, _, names = read_frames(path, stride=stride, max_frames=max_frames)
    size = official_target_size(frames.shape[1], frames.shape[2], max_pixels)
    return resize_frames(frames, size).astype(np.float32) / 255.0, frames.shape[1:3], names
