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
    "ModelGrid",
    "uniform_grid",
    "resize_frames",
    "resize_to_grid",
    "grid_to_input",
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


@dataclasses.dataclass(frozen=True)
class ModelGrid:
    """Where a model grid of `model_size` (h, w) sits in input frames of `input_size` (H0, W0):
    one scale for both axes and a centred crop, so a square-pixel pinhole stays one,

        x_model = scale * x_input - offset        (continuous pixel coordinates, (x, y) alike)

    with the centre of the top-left pixel at (0.5, 0.5) on both grids."""

    input_size: tuple[int, int]
    model_size: tuple[int, int]
    scale: float
    offset: tuple[float, float]  # (ox, oy) in model pixels

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The input region the model grid covers, (x0, y0, x1, y1) in input pixels."""
        (h, w), (ox, oy), s = self.model_size, self.offset, self.scale
        H0, W0 = self.input_size
        return (max(0.0, ox / s), max(0.0, oy / s), min(float(W0), (ox + w) / s), min(float(H0), (oy + h) / s))

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        """Model-grid pixel coordinates (..., 2) -> input-image pixel coordinates."""
        return (np.asarray(xy, np.float64) + np.asarray(self.offset)) / self.scale

    def from_input(self, xy: np.ndarray) -> np.ndarray:
        """Input-image pixel coordinates (..., 2) -> model-grid pixel coordinates."""
        return self.scale * np.asarray(xy, np.float64) - np.asarray(self.offset)

    def _input_to_model(self) -> np.ndarray:
        return np.array([[self.scale, 0.0, -self.offset[0]], [0.0, self.scale, -self.offset[1]], [0.0, 0.0, 1.0]])

    def intrinsics_to_input(self, K: np.ndarray) -> np.ndarray:
        """Intrinsics (3, 3) on the model grid -> the same camera in input pixels."""
        return np.linalg.solve(self._input_to_model(), np.asarray(K, np.float64))

    def intrinsics_from_input(self, K: np.ndarray) -> np.ndarray:
        """Intrinsics (3, 3) in input pixels -> the same camera on the model grid."""
        return self._input_to_model() @ np.asarray(K, np.float64)

    def covered(self) -> np.ndarray:
        """(H0, W0) bool: input pixels whose centre lies on the model grid."""
        H0, W0 = self.input_size
        x0, y0, x1, y1 = self.box
        xs, ys = np.arange(W0) + 0.5, np.arange(H0) + 0.5
        return ((ys >= y0) & (ys <= y1))[:, None] & ((xs >= x0) & (xs <= x1))[None, :]


def uniform_grid(height: int, width: int, size: tuple[int, int]) -> ModelGrid:
    """The model grid `size` (h, w) on (height, width) frames with one scale: the larger of
    h / height and w / width, the other axis cropped about the centre (a few pixels when `size`
    rounds the input's aspect to multiples of a patch size)."""
    h, w = size
    scale = max(h / height, w / width)
    return ModelGrid((int(height), int(width)), (int(h), int(w)), float(scale), ((scale * width - w) / 2.0, (scale * height - h) / 2.0))


def resize_to_grid(maps: np.ndarray, grid: ModelGrid) -> np.ndarray:
    """uint8 frames (K, H0, W0, 3) or float maps (K, H0, W0) -> the model grid, with PIL's
    Lanczos filter over the grid's input region (`ModelGrid.box`): exact pixel-centre mapping."""
    from PIL import Image

    h, w = grid.model_size
    if tuple(maps.shape[1:3]) != tuple(grid.input_size):
        raise ValueError(f"resize_to_grid: maps of {maps.shape[1]}x{maps.shape[2]}, the grid is for {grid.input_size[0]}x{grid.input_size[1]}")
    if grid.model_size == grid.input_size and grid.scale == 1.0:
        return maps
    box = grid.box
    if maps.dtype == np.uint8:
        return np.stack([np.asarray(Image.fromarray(m).resize((w, h), Image.Resampling.LANCZOS, box=box)) for m in maps])
    return np.stack([np.asarray(Image.fromarray(np.asarray(m, np.float32), mode="F").resize((w, h), Image.Resampling.BILINEAR, box=box)) for m in maps])


def grid_to_input(maps: np.ndarray, grid: ModelGrid) -> np.ndarray:
    """Float maps (K, h, w) on the model grid -> (K, H0, W0) on the input frames (bilinear; the
    cropped border repeats the nearest model pixel: see `ModelGrid.covered`)."""
    H0, W0 = grid.input_size
    s, (ox, oy) = grid.scale, grid.offset
    # input index i -> model index: (i + 0.5) s - o - 0.5
    M = np.array([[s, 0.0, 0.5 * s - ox - 0.5], [0.0, s, 0.5 * s - oy - 0.5]])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return np.stack([cv2.warpAffine(np.asarray(m, np.float32), M, (W0, H0), flags=flags, borderMode=cv2.BORDER_REPLICATE) for m in maps])


def load_model_input(path: str, max_pixels: int = 255_000, stride: int = 1, max_frames: int | None = None):
    """Frames of a video or folder sized by the official rule, as float32 (N, H, W, 3) in [0, 1],
    plus the original size (H0, W0) and the frame names."""
    frames, _, names = read_frames(path, stride=stride, max_frames=max_frames)
    size = official_target_size(frames.shape[1], frames.shape[2], max_pixels)
    return resize_frames(frames, size).astype(np.float32) / 255.0, frames.shape[1:3], names
