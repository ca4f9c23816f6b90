"""A synthetic benchmark with exact ground truth, written by the project itself (nothing to
download), in a plain on-disk format every task can be scored on: depth, trajectory, relative
pose, pointmap and flow. It runs the whole evaluation path in tests, the throughput benchmark
and the README's example.

    python -m flow3r_jax.eval.synthetic --out DIR [--sequences 4] [--frames 8] [--size 112x154] [--seed 1000] [--dynamic]

Layout (one folder per sequence):

    DIR/<seq>/images/frame_0000.png ...   RGB frames
    DIR/<seq>/cameras.json                 the format `reconstruct` writes (camera-to-world
                                           OpenCV poses, fx fy cx cy of the images)
    DIR/<seq>/depth.npz                    depth (N, H, W) float32 z-depth, 0 = no surface
    DIR/<seq>/flow.npz                     pairs (P, 2), flow (P, H, W, 2) pixel flow i -> j,
                                           covisible (P, H, W): consecutive frames, both ways

Scenes come from `data_pipelines.synthetic` (rooms, mixed camera paths; `--dynamic` adds moving
objects), seeds from `--seed` on, so a benchmark is a pure function of its arguments. The
generator and cameras.json put pixel centres at +0.5; the loader converts to the integer-centre
convention of `flow3r_jax.eval.sequence` (cx, cy - 1/2).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from flow3r_jax.eval.sequence import EvalSequence

__all__ = ["write_synthetic_benchmark", "load_synthetic"]


def write_synthetic_benchmark(out: str, sequences: int = 4, frames: int = 8, size: tuple[int, int] = (112, 154), seed: int = 1000, dynamic: bool = False, progress: bool = False) -> list[str]:
    """Renders `sequences` clips into `out`; returns the sequence folders."""
    import cv2

    from data_pipelines.synthetic import SceneConfig, generate_clip
    from flow3r_jax.export.formats import CameraModel, write_cameras_json

    H, W = size
    presets = ("orbit", "forward", "random", "handheld")
    dirs = []
    for s in range(sequences):
        cfg = SceneConfig(height=H, width=W, frames=frames, dynamic=dynamic, preset=presets[s % len(presets)], kind="room", offsets=(1,), flow_px=(2.0, 6.0))
        clip = generate_clip(cfg, seed=seed + s)
        d = os.path.join(out, f"seq_{seed + s:05d}")
        os.makedirs(os.path.join(d, "images"), exist_ok=True)
        names = []
        for k, im in enumerate(clip["images"]):
            names.append(f"frame_{k:04d}.png")
            cv2.imwrite(os.path.join(d, "images", names[-1]), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
        K = clip["intrinsics"][0].astype(np.float64)
        camera = CameraModel(width=W, height=H, fx=K[0, 0], fy=K[1, 1], cx=K[0, 2], cy=K[1, 2])
        write_cameras_json(os.path.join(d, "cameras.json"), names, clip["poses"].astype(np.float64), camera, {"synthetic": {"seed": seed + s, "dynamic": dynamic}})
        np.savez_compressed(os.path.join(d, "depth.npz"), depth=clip["depth"].astype(np.float32))
        np.savez_compressed(os.path.join(d, "flow.npz"), pairs=clip["pairs"], flow=clip["flow"].astype(np.float32), covisible=clip["covisible"])
        dirs.append(d)
        if progress:
            print(f"synthetic benchmark: {s + 1}/{sequences} {d}", file=sys.stderr)
    return dirs


def load_synthetic(root: str, task: str | None = None, max_sequences: int | None = None) -> list[EvalSequence]:
    """The sequences of a synthetic benchmark folder (all frames; every task)."""
    from flow3r_jax.eval.benchmarks import BenchmarkError

    if not os.path.isdir(root):
        raise BenchmarkError(f"{root}: synthetic benchmark directory not found (write one with python -m flow3r_jax.eval.synthetic --out {root})")
    seqs = []
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        cams = os.path.join(d, "cameras.json")
        if not os.path.isfile(cams):
            continue
        with open(cams) as f:
            frames = json.load(f)["frames"]
        paths = [os.path.join(d, "images", fr["image_name"]) for fr in frames]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise BenchmarkError(f"{cams}: {len(missing)} listed image(s) missing, e.g. {missing[0]}")
        poses = np.asarray([fr["camera_to_world"] for fr in frames], np.float64)
        K = np.asarray([[[fr["fx"], 0, fr["cx"] - 0.5], [0, fr["fy"], fr["cy"] - 0.5], [0, 0, 1]] for fr in frames], np.float64)
        depth_file = os.path.join(d, "depth.npz")
        flow_file = os.path.join(d, "flow.npz")

        def read_depth(i, _f=depth_file):
            with np.load(_f) as z:
                return z["depth"][int(i)]

        seq = EvalSequence(
            benchmark="synthetic",
            name=name,
            frame_ids=[os.path.splitext(fr["image_name"])[0] for fr in frames],
            image_paths=paths,
            poses=poses,
            intrinsics=K,
            depth_paths=[str(i) for i in range(len(frames))] if os.path.isfile(depth_file) else None,
            _read_depth=read_depth,
            _load_flow=(lambda _f=flow_file: _read_flow(_f)) if os.path.isfile(flow_file) else None,
        )
        seqs.append(seq)
    if not seqs:
        raise BenchmarkError(f"{root}: no sequence folders with a cameras.json")
    return seqs[:max_sequences]


def _read_flow(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(path) as z:
        return z["pairs"], z["flow"], z["covisible"]


def main(argv=None) -> int:
    from flow3r_jax.cli import ArgumentParser

    p = ArgumentParser(module="flow3r_jax.eval.synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="directory to write the benchmark into (one folder per sequence)")
    p.add_argument("--sequences", type=int, default=4, help="number of sequences (default 4)")
    p.add_argument("--frames", type=int, default=8, help="frames per sequence (default 8)")
    p.add_argument("--size", default="112x154", help="frame size HxW (default 112x154)")
    p.add_argument("--seed", type=int, default=1000, help="random seed of the scenes (default 1000)")
    p.add_argument("--dynamic", action="store_true", help="include moving objects (default: static scenes)")
    a = p.parse_args(argv)
    try:
        H, W = (int(v) for v in a.size.lower().split("x"))
    except ValueError:
        p.error(f"--size must be HxW, got {a.size!r}")
    dirs = write_synthetic_benchmark(a.out, a.sequences, a.frames, (H, W), a.seed, a.dynamic, progress=True)
    print(f"wrote {len(dirs)} sequences to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
