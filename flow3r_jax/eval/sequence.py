"""The one in-memory form every benchmark loader returns and the evaluation runner consumes.

Conventions (every loader converts to these, whatever its on-disk format):
- poses: camera-to-world 4x4, OpenCV camera axes (x right, y down, z forward), float64, in the
  benchmark's own world units (metres where the dataset has them).
- intrinsics: 3x3 pinhole in pixels of the images as returned by `images()` (after any crop the
  protocol applies), principal point in pixel-centre coordinates (pixel (0, 0)'s centre is 0, 0).
- depth: z-depth (distance along the optical axis, not ray length) in metres, float32, 0 where
  invalid / missing; same pixel grid as the images.
- frame_ids: the dataset's own frame indices / names of the selected frames, in order, so a
  run is reproducible and the frame lists can be saved next to the results.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence as Seq

import numpy as np

__all__ = ["EvalSequence", "TASKS"]

# The evaluation tasks (SPEC §5); a benchmark declares the ones its ground truth supports.
TASKS = ("video_depth", "mono_depth", "pose_trajectory", "pose_angular", "pointmap", "flow")


@dataclasses.dataclass
class EvalSequence:
    """One evaluation sequence, frames already selected by the benchmark's protocol.

    `load_images()` -> (N, H, W, 3) uint8; `load_depths()` -> (N, H, W) float32 metres (0 =
    invalid) or None where the benchmark has no depth. Loading is lazy so that listing a
    benchmark (and checking it) costs no image decoding.
    """

    benchmark: str
    name: str
    frame_ids: list[str]
    image_paths: list[str]
    poses: np.ndarray | None = None  # (N, 4, 4) camera-to-world, OpenCV axes
    intrinsics: np.ndarray | None = None  # (N, 3, 3) pixels
    depth_paths: list[str] | None = None
    timestamps: np.ndarray | None = None  # (N,) seconds, where the format has them
    dynamic: bool = False  # moving content (Sintel, Bonn, ...)
    max_depth: float | None = None  # protocol's depth cap for metrics (e.g. 70 for Sintel / Bonn)
    _read_image: Callable[[str], np.ndarray] | None = dataclasses.field(default=None, repr=False)
    _read_depth: Callable[[str], np.ndarray] | None = dataclasses.field(default=None, repr=False)
    # Ground-truth optical flow where the benchmark has it: () -> (pairs (P, 2) positions in this
    # sequence, flow (P, H, W, 2) pixel flow i -> j on i's grid, valid (P, H, W)).
    _load_flow: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]] | None = dataclasses.field(default=None, repr=False)
    _crop: tuple[int, int, int, int] | None = None  # (top, left, height, width) applied to images and depths

    def __len__(self) -> int:
        return len(self.image_paths)

    def load_images(self) -> np.ndarray:
        from flow3r_jax.data.frames import read_image

        read = self._read_image or read_image
        return np.stack([self._apply_crop(np.asarray(read(p))) for p in self.image_paths])

    def load_depths(self) -> np.ndarray | None:
        if self.depth_paths is None:
            return None
        if self._read_depth is None:
            raise ValueError(f"{self.benchmark}/{self.name}: depth paths without a depth reader")
        return np.stack([self._apply_crop(np.asarray(self._read_depth(p), np.float32)) for p in self.depth_paths])

    def load_flows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(pairs, flow, valid) of the ground-truth flow, or None where the benchmark has none."""
        if self._load_flow is None:
            return None
        pairs, flow, valid = self._load_flow()
        if self._crop is not None:
            flow, valid = self._apply_crop_stack(flow), self._apply_crop_stack(valid)
        return np.asarray(pairs, np.int32), np.asarray(flow, np.float32), np.asarray(valid, bool)

    def _apply_crop_stack(self, a: np.ndarray) -> np.ndarray:
        t, l, h, w = self._crop
        return a[:, t : t + h, l : l + w]

    def _apply_crop(self, a: np.ndarray) -> np.ndarray:
        if self._crop is None:
            return a
        t, l, h, w = self._crop
        return a[t : t + h, l : l + w]

    def select(self, idx: Seq[int]) -> "EvalSequence":
        """The sub-sequence of frames `idx` (positions in this sequence)."""
        idx = [int(i) for i in idx]
        pick = lambda a: None if a is None else (a[idx] if isinstance(a, np.ndarray) else [a[i] for i in idx])  # noqa: E731
        return dataclasses.replace(
            self,
            frame_ids=pick(self.frame_ids),
            image_paths=pick(self.image_paths),
            poses=pick(self.poses),
            intrinsics=pick(self.intrinsics),
            depth_paths=pick(self.depth_paths),
            timestamps=pick(self.timestamps),
            _load_flow=None if self._load_flow is None else _subset_flows(self._load_flow, idx),
        )


def _subset_flows(load, idx: list[int]):
    """The ground-truth flows among the kept frames `idx`, pairs renumbered to their positions."""
    where = {f: k for k, f in enumerate(idx)}

    def sub():
        pairs, flow, valid = load()
        keep = [p for p, (i, j) in enumerate(np.asarray(pairs)) if int(i) in where and int(j) in where]
        new = np.asarray([[where[int(pairs[p][0])], where[int(pairs[p][1])]] for p in keep], np.int32).reshape(-1, 2)
        return new, flow[keep], valid[keep]

    return sub
