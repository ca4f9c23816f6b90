"""The output directory of `reconstruct`: checked before any work, written through a staging
folder, and reused without stale files.

A run writes every file into `OUT/.reconstruct-staging/`, and only then removes the files the
previous run wrote (the ones its `summary.json` lists, or the fixed names older versions wrote)
and moves the new ones in, so `OUT` never mixes two runs and a run that fails or is stopped
before writing leaves the previous results as they were.

Files reconstruct did not write are never deleted: a directory holding any is refused up front
(`check_output_dir`), except a `launch.sweep` job directory (it holds `sweep_job.json`), whose
own files (config, status, log) are left where they are.
"""

from __future__ import annotations

import json
import os
import shutil

__all__ = ["OutputDirError", "MANIFEST", "STAGING", "check_output_dir", "owned_files", "foreign_files", "staging_dir", "commit"]

MANIFEST = "summary.json"  # the run summary; its "files" list is what the run wrote
STAGING = ".reconstruct-staging"
TOOL = "flow3r_jax.reconstruct"
# What versions without a manifest wrote.
LEGACY = (
    "cameras.json",
    "points.ply",
    "trajectory.png",
    "depth.npz",
    "flowmap_history.json",
    "sparse/0/cameras.bin",
    "sparse/0/images.bin",
    "sparse/0/points3D.bin",
)
_SWEEP_JOB = "sweep_job.json"
_MANIFEST_TMP = f".{MANIFEST}.tmp"


class OutputDirError(ValueError):
    """The output directory cannot be used; the message names the path and why."""


def _all_files(out: str) -> list[str]:
    """Every file (and symlink) under `out`, as '/'-separated paths relative to it."""
    found = []
    for root, dirs, files in os.walk(out):
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        dirs[:] = [d for d in dirs if d not in links]
        for name in files + links:
            found.append(os.path.relpath(os.path.join(root, name), out).replace(os.sep, "/"))
    return sorted(found)


def _manifest(out: str) -> dict | None:
    path = os.path.join(out, MANIFEST)
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("tool") == TOOL and isinstance(doc.get("files"), list) else None


def owned_files(out: str) -> set[str]:
    """Files of `out` that an earlier reconstruct run wrote (relative paths)."""
    if not os.path.isdir(out):
        return set()
    present = set(_all_files(out))
    doc = _manifest(out)
    owned = set(LEGACY)
    if doc is not None:
        owned |= {str(f) for f in doc["files"]} | {MANIFEST}
    owned |= {f for f in present if f.startswith(STAGING + "/")} | {_MANIFEST_TMP}
    return owned & present


def foreign_files(out: str) -> list[str]:
    """Files of `out` that reconstruct did not write (relative paths)."""
    if not os.path.isdir(out):
        return []
    owned = owned_files(out)
    return [f for f in _all_files(out) if f not in owned]


def check_output_dir(out: str) -> None:
    """Raises OutputDirError unless `out` can receive the outputs: an existing directory that
    is writable and holds only reconstruct's files (or is a launch.sweep job directory), or a
    path whose nearest existing parent is a writable directory (created when writing)."""
    if not out:
        raise OutputDirError("--out: an output directory is needed")
    path = os.path.abspath(out)
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputDirError(f"--out {out}: is a file, not a directory")
    if os.path.isdir(path):
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputDirError(f"--out {out}: the directory is not writable")
        foreign = foreign_files(path)
        if foreign and not os.path.isfile(os.path.join(path, _SWEEP_JOB)):
            raise OutputDirError(
                f"--out {out}: holds {len(foreign)} file(s) that reconstruct did not write, e.g. {foreign[:5]}; "
                "reconstruct replaces its own earlier outputs but never deletes other files: choose a new or empty directory"
            )
        return
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise OutputDirError(f"--out {out}: cannot be created, {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputDirError(f"--out {out}: cannot be created, {parent} is not writable")


def staging_dir(out: str) -> str:
    """A fresh, empty `OUT/.reconstruct-staging` (OUT is created if needed)."""
    staging = os.path.join(out, STAGING)
    if os.path.lexists(staging):
        shutil.rmtree(staging)
    os.makedirs(staging)
    return staging


def commit(out: str, staging: str, manifest: dict) -> list[str]:
    """Replaces the previous run's files in `out` by the staged ones and writes `manifest`
    (plus "tool" and the sorted "files" list) as OUT/summary.json. Returns the files written.

    While it works, summary.json lists the old and the new files, so an interrupted commit
    leaves nothing that a later run would take for a user's file."""
    files = [f for f in _all_files(staging) if f != MANIFEST]
    old = {f for f in owned_files(out) if not f.startswith(STAGING + "/")}
    _write_manifest(out, dict(tool=TOOL, status="writing", files=sorted(old | set(files) | {MANIFEST})))
    for rel in sorted(old - set(files) - {MANIFEST}):
        os.remove(os.path.join(out, rel))
        _prune(out, os.path.dirname(rel))
    for rel in files:
        dst = os.path.join(out, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(os.path.join(staging, rel), dst)
    shutil.rmtree(staging)
    doc = dict(manifest, tool=TOOL, files=files + [MANIFEST])
    _write_manifest(out, doc)
    return doc["files"]


def _write_manifest(out: str, doc: dict) -> None:
    tmp = os.path.join(out, _MANIFEST_TMP)
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, os.path.join(out, MANIFEST))


def _prune(out: str, rel_dir: str) -> None:
    """Removes `rel_dir` and its parents below `out` while they are empty."""
    while rel_dir:
        d = os.path.join(out, rel_dir)
        try:
            os.rmdir(d)
        except OSError:
            return
        rel_dir = os.path.dirname(rel_dir)
