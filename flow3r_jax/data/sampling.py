"""Choosing the N frames and S flow pairs of a training sample from a clip.

Pure NumPy on index arrays with an explicit `np.random.Generator`, so a sample is a pure function
of (clip, seed): Grain's `random_map` hands each element its own generator, which is what makes
the input pipeline deterministic and resumable.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SamplingError", "choose_frames", "choose_pairs", "all_ordered_pairs"]


class SamplingError(ValueError):
    """A clip cannot provide the requested sample (e.g. fewer frames than N)."""


def choose_frames(num_frames: int, n: int, rng: np.random.Generator, mode: str = "window", max_stride: int = 3, clip_id: str = "") -> np.ndarray:
    """Sorted indices of n frames of a clip of `num_frames`.

    - "window": a contiguous window with a random stride s in [1, max_stride] (limited so that
      n frames fit), starting at a random frame: frames t0, t0 + s, ..., t0 + (n-1) s;
    - "spread": n distinct frames drawn uniformly from the whole clip, sorted.
    """
    if num_frames < n:
        raise SamplingError(f"clip {clip_id!r} has {num_frames} frames, fewer than the {n} a sample needs")
    if mode == "window":
        top = max(1, min(max_stride, (num_frames - 1) // max(n - 1, 1)))
        stride = int(rng.integers(1, top + 1))
        start = int(rng.integers(0, num_frames - (n - 1) * stride))
        return start + stride * np.arange(n)
    if mode == "spread":
        return np.sort(rng.choice(num_frames, size=n, replace=False))
    raise ValueError(f"choose_frames: unknown mode {mode!r} (window | spread)")


def all_ordered_pairs(n: int) -> np.ndarray:
    """(n (n - 1), 2) every (i, j) with i != j."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    keep = i != j
    return np.stack([i[keep], j[keep]], axis=-1).astype(np.int32)


def choose_pairs(frames: np.ndarray, stored_pairs: np.ndarray | None, s: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to s flow pairs among the chosen frames.

    `stored_pairs` (P, 2) are the clip's pairs with stored flow (in clip frame indices); None
    means flow can be derived for any pair (labeled clips without stored flow). Returns
    (pairs (s, 2) int32 in *sample* frame indices, stored index (s,) int32 into stored_pairs or
    -1 for derived flow, valid (s,) bool). When fewer than s pairs exist the rest is padding
    (pair (0, 0), valid False).
    """
    pos = {int(f): k for k, f in enumerate(frames)}
    if stored_pairs is None:
        cand = all_ordered_pairs(len(frames))
        stored = np.full(len(cand), -1, np.int32)
    else:
        keep = [p for p, (a, b) in enumerate(np.asarray(stored_pairs)) if int(a) in pos and int(b) in pos and a != b]
        cand = np.array([[pos[int(stored_pairs[p][0])], pos[int(stored_pairs[p][1])]] for p in keep], np.int32).reshape(-1, 2)
        stored = np.asarray(keep, np.int32)
    take = rng.permutation(len(cand))[:s]
    pairs = np.zeros((s, 2), np.int32)
    index = np.full(s, -1, np.int32)
    valid = np.zeros(s, bool)
    pairs[: len(take)] = cand[take]
    index[: len(take)] = stored[take]
    valid[: len(take)] = True
    return pairs, index, valid
