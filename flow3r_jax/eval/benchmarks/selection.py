"""Frame-selection rules of the protocols, and the frame lists saved next to results.

- `keyframes(n, every)`: positions 0, every, 2 every, ... < n (π³ `mv_recon/sampling.py`,
  strategy "stride").
- `random_frame_lists(counts, num_frames, seed)`: π³ `relpose/sampling.py`, strategy
  "random_order": `np.random.seed(seed)` once, then for every sequence in order
  `np.random.choice(n, num_frames, replace=False)` from the *same* global stream; a sequence with
  fewer than `num_frames` frames is skipped and draws nothing. The legacy `RandomState(seed)`
  gives the same stream, so the lists equal π³'s published seq-id-maps when the sequence order
  and frame counts are the same (checked in the tests against entries of those maps). The ids
  keep their drawn (unsorted) order, which is the order the frames are fed to the model.
- Frame lists are JSON `{sequence: [frame position, ...]}` (π³'s seq-id-map format, so π³'s own
  maps can be passed in): `resolve_frame_lists` reads the file when it exists, else draws and
  writes it, so a second run (or another method) sees the same frames.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

import numpy as np

from flow3r_jax.eval.benchmarks.base import BenchmarkError

__all__ = ["keyframes", "random_frame_lists", "save_frame_lists", "load_frame_lists", "resolve_frame_lists"]


def keyframes(n: int, every: int) -> list[int]:
    if every < 1:
        raise ValueError(f"keyframe stride must be >= 1, got {every}")
    return list(range(0, n, every))


def random_frame_lists(counts: Mapping[str, int], num_frames: int = 10, seed: int = 42) -> dict[str, list[int]]:
    """`{sequence: ids}` for the sequences of `counts` ({name: frame count}) in its order."""
    rng = np.random.RandomState(seed)
    lists = {}
    for name, n in counts.items():
        if n < num_frames:
            continue
        lists[name] = [int(i) for i in rng.choice(n, num_frames, replace=False)]
    return lists


def save_frame_lists(path: str, lists: Mapping[str, list[int]]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({k: [int(i) for i in v] for k, v in lists.items()}, f, indent=1)
    os.replace(tmp, path)


def load_frame_lists(path: str) -> dict[str, list[int]]:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise BenchmarkError(f"{path}: missing frame-list file") from None
    except (OSError, json.JSONDecodeError) as e:
        raise BenchmarkError(f"{path}: unreadable frame-list JSON ({e})") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(i, int) for i in v) for v in data.values()):
        raise BenchmarkError(f"{path}: expected a JSON object {{sequence: [frame index, ...]}}")
    return data


def resolve_frame_lists(
    counts: Mapping[str, int], path: str | None, num_frames: int = 10, seed: int = 42
) -> dict[str, list[int]]:
    """The frame lists for the sequences of `counts`: read from `path` when it exists (every id
    checked against the sequence's frame count; sequences absent from the file are skipped, as π³
    skips sequences without a map entry), else drawn with `random_frame_lists` and written to
    `path` (when given)."""
    if path is not None and os.path.exists(path):
        saved = load_frame_lists(path)
        lists = {}
        for name, n in counts.items():
            if name not in saved:
                continue
            ids = saved[name]
            bad = [i for i in ids if not 0 <= i < n]
            if bad:
                raise BenchmarkError(f"{path}: sequence {name} has {n} frames but the frame list names {bad}")
            lists[name] = ids
        unknown = sorted(set(saved) - set(counts))
        if unknown and not lists:
            raise BenchmarkError(f"{path}: none of its sequences are present (e.g. {unknown[:3]})")
        return lists
    lists = random_frame_lists(counts, num_frames, seed)
    if path is not None:
        save_frame_lists(path, lists)
    return lists
