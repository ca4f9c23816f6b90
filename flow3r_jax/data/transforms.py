"""Host-side (NumPy / OpenCV) resize-and-crop and colour transforms of a training sample.

Every geometric change is one affine map of pixel coordinates (our convention: pixel centres at
+0.5, an image of width W spans [0, W]):

    x' = sx * x - x0,   y' = sy * y - y0

applied identically to all frames of a sample, so that

- images are resized (area filter when shrinking) then cropped;
- intrinsics become diag(sx, sy, 1) K with the principal point shifted by (-x0, -y0);
- depth and validity are resampled with nearest neighbours (no blending across edges);
- flow, a displacement between two frames that underwent the *same* map, is resampled at the new
  pixel centres and scaled by (sx, sy); a new pixel is kept covisible only if the four source
  pixels it interpolates are all covisible and their flows agree within `FLOW_SMOOTH_PX`, and if
  its target lands inside the new image.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

__all__ = [
    "ResizeCrop",
    "plan_resize_crop",
    "warp_frame",
    "warp_frames",
    "warp_intrinsics",
    "warp_depth",
    "warp_flow",
    "keep_landing_inside",
    "colour_params",
    "apply_colour",
    "colour_jitter",
    "FLOW_SMOOTH_PX",
]

FLOW_SMOOTH_PX = 1.0
"""Largest flow difference (pixels, before scaling) between the four bilinear source pixels for
a resampled flow value to count as valid; larger differences are motion boundaries."""


@dataclasses.dataclass(frozen=True)
class ResizeCrop:
    """x' = sx x - x0, y' = sy y - y0 from an (in_h, in_w) image to an (out_h, out_w) one."""

    in_h: int
    in_w: int
    resized_h: int
    resized_w: int
    x0: int
    y0: int
    out_h: int
    out_w: int

    @property
    def sx(self) -> float:
        return self.resized_w / self.in_w

    @property
    def sy(self) -> float:
        return self.resized_h / self.in_h

    @property
    def crop_only(self) -> bool:
        """No resampling: the output is a window of the input."""
        return (self.resized_h, self.resized_w) == (self.in_h, self.in_w)

    @property
    def window(self) -> tuple[slice, slice]:
        """(rows, cols) of the output in the resized image."""
        return slice(self.y0, self.y0 + self.out_h), slice(self.x0, self.x0 + self.out_w)


def plan_resize_crop(in_h: int, in_w: int, out_h: int, out_w: int, rng: np.random.Generator | None = None, max_zoom: float = 1.0) -> ResizeCrop:
    """Resize so the image covers (out_h, out_w) (times a random zoom in [1, max_zoom] when `rng`
    is given), then crop: at a random position with `rng`, centred without."""
    scale = max(out_h / in_h, out_w / in_w)
    if rng is not None and max_zoom > 1.0:
        scale *= float(rng.uniform(1.0, max_zoom))
    rh, rw = max(out_h, int(round(in_h * scale))), max(out_w, int(round(in_w * scale)))
    if rng is not None:
        y0, x0 = int(rng.integers(0, rh - out_h + 1)), int(rng.integers(0, rw - out_w + 1))
    else:
        y0, x0 = (rh - out_h) // 2, (rw - out_w) // 2
    return ResizeCrop(in_h, in_w, rh, rw, x0, y0, out_h, out_w)


def warp_frame(frame: np.ndarray, t: ResizeCrop, out: np.ndarray, colour=None) -> np.ndarray:
    """uint8 (in_h, in_w, C) -> `out` (out_h, out_w, C): resize (area filter when shrinking),
    crop, and the colour change of `colour_params` if given, each pixel written once."""
    if not t.crop_only:
        interp = cv2.INTER_AREA if t.resized_h < t.in_h or t.resized_w < t.in_w else cv2.INTER_LINEAR
        frame = cv2.resize(frame, (t.resized_w, t.resized_h), interpolation=interp).reshape((t.resized_h, t.resized_w) + frame.shape[2:])
    window = frame[t.window]
    if colour is None:
        out[...] = window
    else:
        apply_colour(window, colour, out)
    return out


def warp_frames(frames: np.ndarray, t: ResizeCrop, colour=None) -> np.ndarray:
    """uint8 (N, in_h, in_w, C) -> (N, out_h, out_w, C) (`warp_frame` on each)."""
    out = np.empty((len(frames), t.out_h, t.out_w) + frames.shape[3:], frames.dtype)
    for k, f in enumerate(frames):
        warp_frame(f, t, out[k], colour)
    return out


def warp_intrinsics(K: np.ndarray, t: ResizeCrop) -> np.ndarray:
    """(..., 3, 3) intrinsics after the map."""
    K = np.array(K, np.float32, copy=True)
    K[..., 0, :] *= t.sx
    K[..., 1, :] *= t.sy
    K[..., 0, 2] -= t.x0
    K[..., 1, 2] -= t.y0
    return K


def _source_positions(t: ResizeCrop) -> tuple[np.ndarray, np.ndarray]:
    """Continuous source coordinates of the new pixel centres (our convention), (out_h, out_w)."""
    x = (np.arange(t.out_w, dtype=np.float32) + 0.5 + t.x0) / np.float32(t.sx)
    y = (np.arange(t.out_h, dtype=np.float32) + 0.5 + t.y0) / np.float32(t.sy)
    return np.broadcast_to(x[None, :], (t.out_h, t.out_w)), np.broadcast_to(y[:, None], (t.out_h, t.out_w))


def warp_depth(depth: np.ndarray, valid: np.ndarray, t: ResizeCrop, frames=None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour resampling of (K, in_h, in_w) depth and validity (of the `frames` among
    K when given, read without copying the others): each new pixel takes the source pixel
    containing its centre (no blending across depth edges)."""
    frames = np.arange(len(depth)) if frames is None else np.asarray(frames).reshape(-1)
    if t.crop_only:  # each chosen frame's window copied once
        rows, cols = t.window
        d = np.stack([depth[f, rows, cols] for f in frames]).astype(np.float32, copy=False)
        return d, np.stack([valid[f, rows, cols] for f in frames]).astype(bool, copy=False)
    x, y = _source_positions(t)
    # cv2's nearest rounds (x - 0.5), i.e. picks the pixel containing x in our convention.
    mx, my = np.ascontiguousarray(x - 0.5), np.ascontiguousarray(y - 0.5)
    d = np.stack([cv2.remap(depth[f].astype(np.float32), mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE) for f in frames])
    v = np.stack([cv2.remap(valid[f].astype(np.uint8), mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE) for f in frames])
    return d, v.astype(bool)


_BLOCK = np.ones((2, 2), np.uint8)


def _block_min(a: np.ndarray) -> np.ndarray:
    """min over the 2x2 block whose top-left pixel is each pixel (edge pixels replicated)."""
    return cv2.erode(a, _BLOCK, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)


def _block_max(a: np.ndarray) -> np.ndarray:
    return cv2.dilate(a, _BLOCK, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)


def warp_flow(flow: np.ndarray, mask: np.ndarray, t: ResizeCrop) -> tuple[np.ndarray, np.ndarray]:
    """(in_h, in_w, 2) flow + (in_h, in_w) covisibility -> (out_h, out_w, 2), (out_h, out_w)."""
    if t.crop_only:  # no resampling
        new = np.ascontiguousarray(flow[t.window], np.float32)
        keep = mask[t.window].astype(bool)
    else:
        x, y = _source_positions(t)
        mx, my = np.ascontiguousarray(x - 0.5), np.ascontiguousarray(y - 0.5)  # cv2.remap index space
        new = cv2.remap(flow, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        new *= np.array([t.sx, t.sy], np.float32)
        # A 2x2 source block is usable if all four pixels are covisible and their flows agree.
        fx, fy = cv2.split(np.ascontiguousarray(flow, np.float32))
        spread = np.maximum(_block_max(fx) - _block_min(fx), _block_max(fy) - _block_min(fy))
        block = (_block_min(mask.astype(np.uint8)) > 0) & (spread <= FLOW_SMOOTH_PX)
        ix = np.clip(np.floor(mx).astype(np.int32), 0, t.in_w - 1)
        iy = np.clip(np.floor(my).astype(np.int32), 0, t.in_h - 1)
        keep = block[iy, ix]
    keep_landing_inside(new, keep)
    return new, keep


_BOUNDS: dict = {}


def _landing_bounds(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel (h, w, 2) float32 bounds on the flow for landing in [0, w] x [0, h]: from -c
    to (w, h) - c, c the pixel centre (x + 0.5, y + 0.5); both exact in float32. Cached per size."""
    if (h, w) not in _BOUNDS:
        if len(_BOUNDS) > 8:
            _BOUNDS.clear()
        x, y = np.meshgrid(np.arange(w, dtype=np.float32) + 0.5, np.arange(h, dtype=np.float32) + 0.5)
        centres = np.stack([x, y], -1)
        _BOUNDS[(h, w)] = (np.ascontiguousarray(-centres), np.ascontiguousarray(np.array([w, h], np.float32) - centres))
    return _BOUNDS[(h, w)]


def keep_landing_inside(flow: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """mask (h, w) bool &= the flow (h, w, 2) takes the pixel centre into [0, w] x [0, h]
    (bounds included); in place, and returned.

    Only pixels within max |flow| of the border can land outside, so only those bands are
    tested (about 15% of the image for the benchmark's flows); the result is the same as testing
    every pixel (the bounds are exact in float32)."""
    h, w = mask.shape
    flow = np.ascontiguousarray(flow, np.float32)
    lo, hi = _landing_bounds(h, w)
    low, high, _, _ = cv2.minMaxLoc(flow.reshape(h, 2 * w))
    reach = max(-low, high)  # |flow| <= reach everywhere; NaN fails every comparison below
    # Pixel centres c with reach <= c <= size - reach cannot leave along that axis.
    x0, x1 = (max(0, math.ceil(reach - 0.5)), min(w, math.floor(w - reach - 0.5) + 1)) if reach == reach else (w, w)
    y0, y1 = (max(0, math.ceil(reach - 0.5)), min(h, math.floor(h - reach - 0.5) + 1)) if reach == reach else (h, h)
    if x0 >= x1 or y0 >= y1:
        bands = [(slice(0, h), slice(0, w))]
    else:
        bands = [(slice(0, y0), slice(0, w)), (slice(y1, h), slice(0, w)), (slice(y0, y1), slice(0, x0)), (slice(y0, y1), slice(x1, w))]
    for rows, cols in bands:
        band = mask[rows, cols]
        if band.size:
            inside = cv2.inRange(flow[rows, cols], lo[rows, cols], hi[rows, cols])  # 255 where both components fit
            np.logical_and(band, inside, out=band)
    return mask


_RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float64)


def colour_params(rng: np.random.Generator, strength: float = 1.0) -> tuple[np.ndarray, float, float]:
    """Draws one colour change (see `colour_jitter`): colour matrix A (3, 3), contrast, brightness."""
    brightness = rng.uniform(-0.1, 0.1) * strength * 255.0
    contrast = 1.0 + rng.uniform(-0.2, 0.2) * strength
    saturation = 1.0 + rng.uniform(-0.2, 0.2) * strength
    hue = rng.uniform(-0.05, 0.05) * strength * np.pi
    luma = np.array([0.299, 0.587, 0.114])
    sat = saturation * np.eye(3) + (1.0 - saturation) * np.outer(np.ones(3), luma)
    c, s = np.cos(hue), np.sin(hue)
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    A = np.linalg.inv(_RGB2YIQ) @ rot @ _RGB2YIQ @ sat
    return A, float(contrast), float(brightness)


def apply_colour(frame: np.ndarray, params: tuple[np.ndarray, float, float], dst: np.ndarray | None = None) -> np.ndarray:
    """One frame (H, W, 3) uint8 (any view) through `colour_params`' change: c A x + (1 - c) m +
    b, m the frame's mean intensity after A; written into `dst` when given."""
    A, contrast, brightness = params
    mean = float((A @ np.asarray(cv2.mean(frame)[:3])).mean())
    M = np.concatenate([contrast * A, np.full((3, 1), (1.0 - contrast) * mean + brightness)], axis=1)
    return cv2.transform(frame, M, dst=dst)


def colour_jitter(frames: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """The same random brightness, contrast, saturation and hue change for every frame of a
    sample (photometric consistency between frames is kept). uint8 in, uint8 out.

    Saturation (blend with luma) and hue (rotation of the YIQ chroma plane) are one 3x3 colour
    matrix A; contrast c scales around each frame's mean intensity m and brightness b adds, so a
    frame becomes c A x + (1 - c) m + b: one `cv2.transform` per frame.
    """
    params = colour_params(rng, strength)
    out = np.empty_like(frames)
    for k, f in enumerate(frames):
        apply_colour(f, params, out[k])
    return out
