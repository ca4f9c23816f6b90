"""Microsoft 7-Scenes (test split): pointmap reconstruction from keyframes.

Directory layout (the dataset as unpacked, plus SimpleRecon's rendered depth, as Spann3R's
`docs/data_preprocess.md` prepares it and π³ reads it)::

    <data_root>/<scene>/TestSplit.txt                   lines 'sequenceN'
    <data_root>/<scene>/seq-NN/frame-000000.color.png   colour, 640x480
    <data_root>/<scene>/seq-NN/frame-000000.depth.proj.png   depth rendered into the colour
                                                        camera (SimpleRecon), 16-bit millimetres
    <data_root>/<scene>/seq-NN/frame-000000.depth.png   raw Kinect depth, millimetres, 65535 invalid
    <data_root>/<scene>/seq-NN/frame-000000.pose.txt    4x4 camera-to-world

Conventions converted: pose.txt is camera-to-world with OpenCV axes, used as is. Depth:
value / 1000 metres, 65535 and 0 invalid, and (as π³ `datasets/sevenscenes.py` does) depths
above 10 m or below 1 mm set invalid. With `.depth.proj.png` (π³'s choice, registered to the
colour image) the intrinsics are SimpleRecon's fx = fy = 525, cx = 320, cy = 240; with the raw
`.depth.png` (`depth="raw"`, not registered to colour) the dataset's published depth-camera
values fx = fy = 585, cx = 320, cy = 240.

Protocol (π³ `configs/data/mv_recon.yaml` 7scenes-sparse / 7scenes-dense, `mv_recon/sampling.py`
strategy "stride"): scenes sorted by name, each scene's TestSplit.txt sequences (18 in all),
keyframes at positions 0, k, 2k, ... of the frames sorted by name: k = 200 (sparse, CUT3R's
setting) or 40 (dense).

Options: sequences ("scene/seq-NN"), kf_every (200 / 40 by registry name), depth ("proj" | "raw").
"""

from __future__ import annotations

import os

import numpy as np

from flow3r_jax.eval.benchmarks.base import BenchmarkError, check_counts, list_files, pick_sequences, require_dir, require_file
from flow3r_jax.eval.benchmarks.formats import png_depth_reader, read_matrix_rows, read_text_rows
from flow3r_jax.eval.benchmarks.selection import keyframes
from flow3r_jax.eval.sequence import EvalSequence

__all__ = ["INTRINSICS", "test_sequences", "load"]

INTRINSICS = {"proj": (525.0, 525.0, 320.0, 240.0), "raw": (585.0, 585.0, 320.0, 240.0)}
_DEPTH_SUFFIX = {"proj": ".depth.proj.png", "raw": ".depth.png"}


def test_sequences(data_root: str) -> list[str]:
    """'scene/seq-NN' of every scene's TestSplit.txt, sorted (π³'s order)."""
    out = []
    scenes = sorted(d for d in os.listdir(require_dir(data_root, "benchmark directory")) if os.path.isdir(os.path.join(data_root, d)))
    for scene in scenes:
        split = os.path.join(data_root, scene, "TestSplit.txt")
        if not os.path.isfile(split):
            continue
        for row in read_text_rows(split):
            digits = "".join(ch for ch in row[0] if ch.isdigit())
            if not digits:
                raise BenchmarkError(f"{split}: line {row[0]!r} is not 'sequenceN'")
            out.append(f"{scene}/seq-{int(digits):02d}")
    if not out:
        raise BenchmarkError(f"{data_root}: no <scene>/TestSplit.txt found")
    return sorted(out)


def load(data_root: str, task: str, sequences=None, kf_every: int = 200, depth: str = "proj") -> list[EvalSequence]:
    if depth not in _DEPTH_SUFFIX:
        raise ValueError(f"depth must be one of {sorted(_DEPTH_SUFFIX)}, got {depth!r}")
    listed = test_sequences(data_root)
    present = [s for s in listed if os.path.isdir(os.path.join(data_root, s))]
    if sequences is None:
        missing = [s for s in listed if s not in present]
        if missing:
            raise BenchmarkError(f"{data_root}: missing sequence dir(s) {', '.join(os.path.join(data_root, m) for m in missing)}")
    names = pick_sequences(present, sequences, data_root, default=listed)
    fx, fy, cx, cy = INTRINSICS[depth]
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    out = []
    for seq in names:
        d = os.path.join(data_root, seq)
        images = list_files(d, ".color.png", what="colour images")
        depths = list_files(d, _DEPTH_SUFFIX[depth], what=f"{_DEPTH_SUFFIX[depth]} depth maps")
        poses = list_files(d, ".pose.txt", what="pose files")
        check_counts(d, images=len(images), depths=len(depths), poses=len(poses))
        stems = [os.path.basename(p)[: -len(".color.png")] for p in images]
        for other, suffix in ((depths, _DEPTH_SUFFIX[depth]), (poses, ".pose.txt")):
            for s, p in zip(stems, other):
                if os.path.basename(p) != s + suffix:
                    raise BenchmarkError(f"{p}: does not match {s}.color.png (frames must pair by name)")
        sel = keyframes(len(images), kf_every)
        T = np.stack([read_matrix_rows(require_file(poses[i]), (4, 4)) for i in sel])
        out.append(
            EvalSequence(
                benchmark="7scenes",
                name=seq,
                frame_ids=[stems[i] for i in sel],
                image_paths=[images[i] for i in sel],
                poses=T,
                intrinsics=np.repeat(K[None], len(sel), 0),
                depth_paths=[depths[i] for i in sel],
                max_depth=10.0,
                _read_depth=png_depth_reader(1000.0, invalid=(0, 65535), min_depth=1e-3, max_depth=10.0),
            )
        )
    return out
