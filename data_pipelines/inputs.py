"""Finding the inputs of a dataset run and giving each a stable id.

An input spec is a glob (`DIR/*/video.mp4`, `DIR/**/*.mov`), a single video file or image
folder, or a directory to search recursively. Searching a directory finds video files
(`VIDEO_EXTENSIONS`) when `kind` is "video", folders holding images (`IMAGE_EXTENSIONS`) when
"folder", and both when "auto". A glob match is taken as it is: a file is a video, a directory
an image folder (non-videos fail later, with a reason, as inputs).

Remote specs (gs://bucket/videos/**/*.mp4) are globbed with etils.epath, which needs gcsfs (or
s3fs) installed; their files are copied to a local temporary file when processed.

Each input's id (the record's `video_id` and the key that assigns it to a shard) is its path
relative to the spec's root: the spec itself for a directory, the part before the first wildcard
for a glob, the deepest directory holding all of the single inputs named on their own (so a
shell-expanded glob gives the same ids as the quoted one). Ids use '/' separators, so they do not
depend on the machine the run starts on.
"""

from __future__ import annotations

import glob
import os
from typing import NamedTuple

from flow3r_jax.data.frames import VIDEO_EXTENSIONS, FrameReadError, list_images

__all__ = ["Input", "discover_inputs"]

KINDS = ("auto", "video", "folder")


class Input(NamedTuple):
    path: str  # what to read: a video file or an image folder (local path or URI)
    key: str  # its id: the record's video_id and the key of its shard


def _has_images(folder: str) -> bool:
    """Whether `folder` is an image folder: the project's frame reader (`list_images`, which also
    fixes the frame order) finds images in it, so discovery and reading agree."""
    try:
        return any(os.path.isfile(p) for p in list_images(folder))
    except FrameReadError:
        return False


def _search(root: str, kind: str) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        if kind in ("auto", "folder") and _has_images(folder):
            found.append(folder)
        if kind in ("auto", "video"):
            found.extend(os.path.join(folder, f) for f in sorted(files) if f.lower().endswith(VIDEO_EXTENSIONS))
    return found


def _glob_root(spec: str) -> str:
    parts = spec.replace(os.sep, "/").split("/")
    fixed = []
    for p in parts:
        if any(c in p for c in "*?["):
            break
        fixed.append(p)
    return "/".join(fixed) or "."


def discover_inputs(specs, kind: str = "auto") -> list[Input]:
    """Sorted, de-duplicated inputs of one spec or a list of specs. Raises ValueError when a spec
    matches nothing or two inputs get the same id."""
    if kind not in KINDS:
        raise ValueError(f"discover_inputs: kind must be one of {KINDS}, got {kind!r}")
    specs = [specs] if isinstance(specs, (str, os.PathLike)) else list(specs)
    groups: list[tuple[str, list[str]]] = []  # (root, paths)
    singles: list[str] = []
    for spec in map(os.fspath, specs):
        if "://" in spec:  # gs://, s3://: through etils.epath (needs gcsfs / s3fs installed)
            from etils import epath

            root = _glob_root(spec)
            paths = sorted(os.fspath(p) for p in epath.Path(root).glob(spec[len(root) :].lstrip("/"))) if root != spec else [spec]
            if not paths:
                raise ValueError(f"discover_inputs: {spec!r} matches no input")
            groups.append((root, paths))
            continue
        if any(c in spec for c in "*?["):
            root = _glob_root(spec)
            paths = sorted(glob.glob(spec, recursive=True))
        elif os.path.isdir(spec) and (kind == "video" or not _has_images(spec)):
            root, paths = spec, _search(spec, kind)
        elif os.path.exists(spec):
            singles.append(spec)
            continue
        else:
            raise ValueError(f"discover_inputs: {spec!r} does not exist")
        if not paths:
            raise ValueError(f"discover_inputs: {spec!r} matches no input (kind={kind})")
        groups.append((root, paths))
    if singles:
        groups.append((os.path.commonpath([os.path.dirname(os.path.abspath(s)) for s in singles]), singles))
    out: dict[str, str] = {}
    for root, paths in groups:
        for p in paths:
            if "://" in p:
                key = p[len(root) :].lstrip("/") or p.rsplit("/", 1)[-1]
            else:
                key = os.path.relpath(os.path.abspath(p), os.path.abspath(root)).replace(os.sep, "/")
                if key == ".":
                    key = os.path.basename(os.path.abspath(p))
            if key in out and out[key] != p and os.path.abspath(out[key]) != os.path.abspath(p):
                raise ValueError(f"discover_inputs: {out[key]!r} and {p!r} both get the id {key!r}; use one spec per root")
            out[key] = p
    return [Input(p, k) for k, p in sorted(out.items())]
