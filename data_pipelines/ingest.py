"""Clip sampling: K frames of a video file or an image folder, resized to a pixel budget.

Frames are read with `flow3r_jax.data.frames` (the project's one frame reader), so every read
problem (unopenable / corrupt file, truncated video, unreadable image, mixed frame sizes in a
folder) surfaces as its `FrameReadError` naming the input. On top of it this module adds:

- **Too few frames**: an input with fewer than K frames raises `FrameReadError`.
- **Uniform sampling**: frame indices round(linspace(0, N - 1, K)) over the N source frames.
- **Flow sampling** (skips static stretches): M = min(N, `flow_candidates` * K) candidate frames
  are taken uniformly, shrunk to about `probe_pixels` pixels, and OpenCV DIS (ultrafast) measures
  the mean flow magnitude of each consecutive candidate step, divided by the probe image diagonal.
  Each step weighs its motion plus a floor of `motion_floor` x the mean step motion (so a fully
  static stretch still advances slowly and a static video degrades to uniform); the K frames are
  the candidates nearest to K equally spaced levels of the accumulated weight, made strictly
  increasing (first and last candidate always kept).
- **Resizing**: to at most `max_pixels` pixels, keeping the aspect ratio (never upscaling;
  sides scaled by sqrt(max_pixels / (H W)) and floored), with `resize_frames` (Lanczos, the
  official loader's filter).
- **Window**: `max_seconds` restricts sampling to the centred window of that duration.

Frame times are kept (seconds: decode index / fps for videos, index / 30 for image folders).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import cv2
import numpy as np

from flow3r_jax.data.frames import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, FrameReadError, list_images, probe_video, read_image_folder, read_video, resize_frames

__all__ = ["IngestConfig", "SampledClip", "sample_clip", "target_size", "uniform_indices", "select_by_motion", "motion_profile"]

SAMPLING = ("uniform", "flow")


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    """How a clip is cut from an input (see the module docstring for the rules)."""

    frames: int = 24
    sampling: str = "uniform"
    max_pixels: int = 255_000
    max_seconds: float | None = None
    flow_candidates: int = 4
    probe_pixels: int = 160 * 120
    motion_floor: float = 0.05

    def __post_init__(self):
        if not (isinstance(self.frames, int) and self.frames >= 2):
            raise ValueError(f"IngestConfig.frames: need an integer >= 2, got {self.frames!r}")
        if self.sampling not in SAMPLING:
            raise ValueError(f"IngestConfig.sampling: choose one of {SAMPLING}, got {self.sampling!r}")
        if not self.max_pixels >= 1:
            raise ValueError(f"IngestConfig.max_pixels: need >= 1, got {self.max_pixels!r}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"IngestConfig.max_seconds: need > 0 or None, got {self.max_seconds!r}")
        if not self.flow_candidates >= 1:
            raise ValueError(f"IngestConfig.flow_candidates: need >= 1, got {self.flow_candidates!r}")


@dataclasses.dataclass
class SampledClip:
    frames: np.ndarray  # uint8 (K, H, W, 3), resized
    times: np.ndarray  # float32 (K,) seconds
    indices: np.ndarray  # int64 (K,) source frame indices
    source_size: tuple[int, int]  # (H0, W0) before resizing
    num_source_frames: int
    timings: dict  # seconds: decode, sample (motion probe), resize


def target_size(height: int, width: int, max_pixels: int) -> tuple[int, int]:
    """(h, w) with h * w <= max_pixels and the aspect kept; the input size if it already fits."""
    if height * width <= max_pixels:
        return height, width
    s = math.sqrt(max_pixels / (height * width))
    return max(1, int(height * s)), max(1, int(width * s))


def uniform_indices(n: int, k: int) -> np.ndarray:
    """k distinct indices spread evenly over range(n) (n >= k), first and last included."""
    return np.round(np.linspace(0, n - 1, k)).astype(np.int64)


def motion_profile(frames: np.ndarray, probe_pixels: int = 160 * 120) -> np.ndarray:
    """Mean DIS (ultrafast) flow magnitude of each consecutive step of frames (M, H, W, 3),
    computed at about `probe_pixels` pixels and divided by that image's diagonal. (M - 1,)."""
    h, w = target_size(frames.shape[1], frames.shape[2], probe_pixels)
    gray = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (w, h), interpolation=cv2.INTER_AREA) for f in frames]
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    out = np.empty(len(frames) - 1, np.float64)
    for t in range(len(frames) - 1):
        flow = dis.calc(gray[t], gray[t + 1], None)
        out[t] = float(np.mean(np.linalg.norm(flow, axis=-1))) / math.hypot(h, w)
    return out


def select_by_motion(step_motion: np.ndarray, k: int, floor: float = 0.05) -> np.ndarray:
    """k strictly increasing indices into the M = len(step_motion) + 1 candidates, equally spaced
    in accumulated motion (each step weighs motion + floor * mean motion)."""
    m = len(step_motion) + 1
    if m < k:
        raise ValueError(f"select_by_motion: {m} candidates for {k} frames")
    step = np.maximum(np.asarray(step_motion, np.float64), 0.0)
    mean = float(step.mean()) if len(step) else 0.0
    if not mean > 0:
        return uniform_indices(m, k)
    acc = np.concatenate([[0.0], np.cumsum(step + floor * mean)])
    levels = np.linspace(0.0, acc[-1], k)
    sel = np.clip(np.searchsorted(acc, levels), 1, m - 1)
    sel = np.where(levels - acc[sel - 1] <= acc[sel] - levels, sel - 1, sel)  # nearest
    for i in range(1, k):  # strictly increasing, leaving room for the rest
        sel[i] = max(sel[i], sel[i - 1] + 1)
    for i in range(k - 1, -1, -1):
        sel[i] = min(sel[i], m - k + i)
    return sel.astype(np.int64)


def _window(n: int, fps: float, max_seconds: float | None) -> tuple[int, int]:
    if max_seconds is None:
        return 0, n
    span = max(1, int(round(max_seconds * fps)))
    if span >= n:
        return 0, n
    start = (n - span) // 2
    return start, start + span


def _too_few(path: str, n: int, k: int, what: str = "frames") -> FrameReadError:
    return FrameReadError(f"{path}: too few frames: {n} {what}, the clip needs {k}")


def _read_video_clip(path: str, cfg: IngestConfig, timings: dict):
    info = probe_video(path)
    fps = info.fps if info.fps > 0 else 30.0
    n = info.num_frames
    t0 = time.perf_counter()
    if n <= 0:  # container does not say: decode everything once, then pick
        frames, times = read_video(path, min_frames=cfg.frames)
        n = len(frames)
        lo, hi = _window(n, fps, cfg.max_seconds)
        frames, times, base = frames[lo:hi], times[lo:hi], np.arange(lo, hi)
        cand = uniform_indices(len(frames), min(len(frames), cfg.flow_candidates * cfg.frames if cfg.sampling == "flow" else cfg.frames))
        frames, times, base = frames[cand], times[cand], base[cand]
    else:
        lo, hi = _window(n, fps, cfg.max_seconds)
        if hi - lo < cfg.frames:
            raise _too_few(path, hi - lo, cfg.frames, "frames" if (lo, hi) == (0, n) else f"frames in the {cfg.max_seconds} s window")
        m = min(hi - lo, cfg.flow_candidates * cfg.frames) if cfg.sampling == "flow" else cfg.frames
        base = lo + uniform_indices(hi - lo, m)
        frames, times = read_video(path, indices=base, min_frames=cfg.frames)
    timings["decode"] = time.perf_counter() - t0
    return frames, times, base, n


def _read_folder_clip(path: str, cfg: IngestConfig, timings: dict):
    n = len(list_images(path))  # only the candidate images are opened and decoded
    if n == 0:
        raise FrameReadError(f"{path}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    lo, hi = _window(n, 30.0, cfg.max_seconds)
    if hi - lo < cfg.frames:
        raise _too_few(path, hi - lo, cfg.frames, "images")
    m = min(hi - lo, cfg.flow_candidates * cfg.frames) if cfg.sampling == "flow" else cfg.frames
    base = lo + uniform_indices(hi - lo, m)
    t0 = time.perf_counter()
    frames, times, _ = read_image_folder(path, indices=base)
    timings["decode"] = time.perf_counter() - t0
    return frames, times, base, n


def sample_clip(path: str, cfg: IngestConfig = IngestConfig()) -> SampledClip:
    """Reads a video file or an image folder and returns its sampled, resized clip.

    Raises FrameReadError (from the frame reader, or for too few frames)."""
    timings: dict[str, float] = {}
    path = os.fspath(path)
    reader = _read_folder_clip if os.path.isdir(path) else _read_video_clip
    if not os.path.isdir(path) and not os.path.exists(path):
        raise FrameReadError(f"{path}: no such file or directory")
    if not os.path.isdir(path) and not path.lower().endswith(VIDEO_EXTENSIONS):
        raise FrameReadError(f"{path}: not an image folder or a video ({', '.join(VIDEO_EXTENSIONS)})")
    frames, times, base, n = reader(path, cfg, timings)
    if len(frames) < cfg.frames:
        raise _too_few(path, len(frames), cfg.frames)
    t0 = time.perf_counter()
    if cfg.sampling == "flow" and len(frames) > cfg.frames:
        sel = select_by_motion(motion_profile(frames, cfg.probe_pixels), cfg.frames, cfg.motion_floor)
    else:
        sel = uniform_indices(len(frames), cfg.frames)
    timings["sample"] = time.perf_counter() - t0
    frames, times, base = frames[sel], times[sel], base[sel]
    t0 = time.perf_counter()
    h0, w0 = frames.shape[1:3]
    out = resize_frames(frames, target_size(h0, w0, cfg.max_pixels))
    timings["resize"] = time.perf_counter() - t0
    return SampledClip(np.ascontiguousarray(out), np.asarray(times, np.float32), np.asarray(base, np.int64), (h0, w0), n, timings)
