"""What every benchmark loader shares: the error type, the registry record, and the checks a
loader runs on the user's directory before any long work (missing directories / files, counts
that disagree, unreadable files), each failing with a `BenchmarkError` that names the path.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Iterable

import numpy as np

from flow3r_jax.eval.sequence import TASKS, EvalSequence

__all__ = [
    "BenchmarkError",
    "BenchmarkSpec",
    "require_dir",
    "require_file",
    "list_files",
    "pick_sequences",
    "check_counts",
    "image_size",
    "finite_poses",
]


class BenchmarkError(ValueError):
    """A benchmark's data on disk is not what its loader expects; the message names the file or
    directory and the problem."""


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
    """One registered benchmark.

    `load(data_root, task, **opts)` returns the protocol's sequences for `task` (frames already
    selected); `tasks` is the subset of `sequence.TASKS` its ground truth supports; `dynamic` says
    whether scenes contain moving content.
    """

    name: str
    tasks: tuple[str, ...]
    dynamic: bool
    load: Callable[..., list[EvalSequence]]
    description: str = ""

    def __post_init__(self):
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"benchmark {self.name}: unknown tasks {unknown} (known: {TASKS})")


def require_dir(path: str, what: str = "directory") -> str:
    if not os.path.isdir(path):
        raise BenchmarkError(f"{path}: missing {what}")
    return path


def require_file(path: str, what: str = "file") -> str:
    if not os.path.isfile(path):
        raise BenchmarkError(f"{path}: missing {what}")
    return path


def list_files(folder: str, suffix: str | tuple[str, ...], key: Callable[[str], object] | None = None, what: str = "files") -> list[str]:
    """Full paths of the files in `folder` whose names end with `suffix`, sorted by name (or `key`
    of the name); a missing folder or no such file is a `BenchmarkError`."""
    require_dir(folder)
    names = [n for n in os.listdir(folder) if n.endswith(suffix) and not n.startswith(".")]
    if not names:
        raise BenchmarkError(f"{folder}: no {what} (*{suffix})")
    try:
        names.sort(key=key)
    except (ValueError, IndexError) as e:
        raise BenchmarkError(f"{folder}: a file name does not follow the expected pattern ({e})") from None
    return [os.path.join(folder, n) for n in names]


def pick_sequences(available: Iterable[str], requested: Iterable[str] | None, root: str, default: Iterable[str] | None = None) -> list[str]:
    """The sequences to load: `requested` (opts) or `default` (the protocol's list) or everything
    `available`; a named sequence that is not there is a `BenchmarkError`."""
    available = list(available)
    wanted = list(requested) if requested is not None else (list(default) if default is not None else sorted(available))
    have = set(available)
    missing = [s for s in wanted if s not in have]
    if missing:
        raise BenchmarkError(f"{root}: missing sequence(s) {', '.join(os.path.join(root, m) for m in missing)}")
    if not wanted:
        raise BenchmarkError(f"{root}: no sequences found")
    return wanted


def check_counts(where: str, **counts: int) -> None:
    """All counts equal, else a `BenchmarkError` listing them (e.g. images=10, poses=9)."""
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{k}={v}" for k, v in counts.items())
        raise BenchmarkError(f"{where}: frame counts disagree ({listed})")


def image_size(path: str) -> tuple[int, int]:
    """(height, width) from the image header, without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except FileNotFoundError:
        raise BenchmarkError(f"{path}: missing image") from None
    except Exception as e:  # PIL raises several types for corrupt files
        raise BenchmarkError(f"{path}: unreadable image ({e})") from None
    return h, w


def finite_poses(poses: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(poses)))
