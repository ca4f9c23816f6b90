"""Training input for TracksTo4D: batches of point tracks from clip files (`clip_*.npz` written by
`data_pipelines.synthetic_tracks`, or any file with the same keys: tracks (T, N, 2) pixels,
visible (T, N), intrinsics (T, 3, 3)).

Each sample is a window of `frames` consecutive frames of a clip and `tracks` of its tracks that
are visible in at least 2 of those frames (drawn without replacement when there are enough, as
the official `CustomDataset` keeps tracks seen more than 10 times), in normalised camera
coordinates (x - cx) / fx, (y - cy) / fy (the official loader multiplies by K^-1). The Grain
pipeline (shuffled, repeated, per-sample seeds from the position in the stream, per-process
shards) gives checkpointable iterators, as `flow3r_jax.data.pipeline` does for Flow3r.

    batch = {"tracks": float32 (B, T, N, 2), "visible": bool (B, T, N),
             "skipped_records": int32 (B,) (always 0: a host-only field the train loop counts)}
"""

from __future__ import annotations

import glob
import os
import threading

import grain
import jax
import numpy as np

from flow3r_jax.data.sources import DatasetError

__all__ = ["TrackClips", "sample_tracks", "normalise_tracks", "build_track_dataset", "track_batch_spec"]


_NPZ_LOCK = threading.Lock()


class TrackClips:
    """A random-access source over the clip files of one or more directories."""

    def __init__(self, directories):
        self.paths = []
        for d in directories:
            if not os.path.isdir(d):
                raise DatasetError(f"track dataset directory not found: {d}")
            found = sorted(glob.glob(os.path.join(d, "clip_*.npz")))
            if not found:
                raise DatasetError(f"{d}: no clip_*.npz track files (write them with `python -m data_pipelines.synthetic_tracks --out {d}`)")
            self.paths += found

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        # One reader at a time: NumPy parses .npy headers with ast.literal_eval, which is not
        # thread-safe in CPython 3.11 ("SystemError: AST constructor recursion depth mismatch"
        # from Grain's reader threads, seen once in CI). The files are small.
        with _NPZ_LOCK, np.load(self.paths[i]) as z:
            out = {k: z[k] for k in ("tracks", "visible", "intrinsics")}
        if out["tracks"].ndim != 3 or out["tracks"].shape[-1] != 2 or out["visible"].shape != out["tracks"].shape[:2]:
            raise DatasetError(f"{self.paths[i]}: tracks {out['tracks'].shape} / visible {out['visible'].shape} are not (T, N, 2) / (T, N)")
        return out


def normalise_tracks(xy: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels (T, N, 2) -> normalised coordinates with per-frame intrinsics K (T, 3, 3)."""
    return ((xy - K[:, None, :2, 2]) / np.stack([K[:, 0, 0], K[:, 1, 1]], -1)[:, None]).astype(np.float32)


def sample_tracks(clip: dict, frames: int, tracks: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    T = clip["tracks"].shape[0]
    if T < frames:
        raise DatasetError(f"a track clip has {T} frames, fewer than data.frames={frames}")
    s = int(rng.integers(0, T - frames + 1))
    vis = clip["visible"][s : s + frames].astype(bool)
    ok = np.flatnonzero(vis.sum(0) >= 2)
    if len(ok) == 0:
        ok = np.arange(vis.shape[1])
    pick = rng.choice(ok, tracks, replace=len(ok) < tracks)
    return {
        "tracks": normalise_tracks(clip["tracks"][s : s + frames][:, pick], clip["intrinsics"][s : s + frames]),
        "visible": vis[:, pick],
        "skipped_records": np.int32(0),
    }


class _Sample(grain.transforms.RandomMap):
    def __init__(self, frames: int, tracks: int):
        self.frames, self.tracks = frames, tracks

    def random_map(self, element, rng: np.random.Generator):
        return sample_tracks(element, self.frames, self.tracks, rng)


def _stack(samples):
    return {k: np.stack([s[k] for s in samples]) for k in samples[0]}


def build_track_dataset(directories, frames: int, tracks: int, batch_size: int, seed: int = 0, process_index: int | None = None, process_count: int | None = None) -> grain.IterDataset:
    """An infinite, checkpointable dataset of this process's batches."""
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    src = TrackClips(directories)
    ds = grain.MapDataset.source(src)[pi::pc]
    if len(ds) == 0:
        raise DatasetError(f"{len(src)} track clips cannot feed {pc} processes")
    ds = ds.shuffle(seed=seed).repeat().random_map(_Sample(frames, tracks), seed=seed * 7919 + pi)
    return ds.to_iter_dataset().batch(batch_size, drop_remainder=True, batch_fn=_stack)


def track_batch_spec(global_batch: int, frames: int, tracks: int) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes of a global batch as the train step sees it (host-only fields left out)."""
    return {
        "tracks": jax.ShapeDtypeStruct((global_batch, frames, tracks, 2), np.float32),
        "visible": jax.ShapeDtypeStruct((global_batch, frames, tracks), np.bool_),
    }
