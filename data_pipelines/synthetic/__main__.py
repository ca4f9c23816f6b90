"""Command line: render synthetic scenes to disk.

    python -m data_pipelines.synthetic --out DIR --scenes N --frames K --size HxW [--dynamic] [--seed S]

Scene n uses seed S + n. See `writer.py` for the layout written into DIR (DIR/README.md
documents it for users of the data).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

from tqdm import tqdm

from flow3r_jax.cli import ArgumentParser
from data_pipelines.synthetic.clip import generate_clip
from data_pipelines.synthetic.config import KINDS, PRESETS, SceneConfig
from data_pipelines.synthetic.writer import write_clip, write_readme


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size: expected HxW (e.g. 224x224), got {text!r}") from None
    return h, w


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def build_parser() -> ArgumentParser:
    p = ArgumentParser(module="data_pipelines.synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=pathlib.Path, help="output directory (created if missing)")
    p.add_argument("--scenes", type=int, default=1, help="number of scenes (default 1)")
    p.add_argument("--frames", type=int, default=24, help="frames per scene (default 24)")
    p.add_argument("--size", type=_size, default=(224, 224), help="HxW (default 224x224)")
    p.add_argument("--dynamic", action="store_true", help="add independently moving objects")
    p.add_argument("--seed", type=int, default=0, help="seed of the first scene (scene n uses seed + n)")
    p.add_argument("--preset", choices=PRESETS, default="mixed", help="camera trajectory (default: mixed, one per seed)")
    p.add_argument("--kind", choices=KINDS, default="room", help="room or outdoor (default room)")
    p.add_argument("--offsets", type=_ints, default=(1, 2, 4, 8), help="flow pair offsets (default 1,2,4,8)")
    p.add_argument("--flow_px", type=_floats, default=(1.0, 30.0), help="min,max target mean consecutive flow, px")
    p.add_argument("--supersample", type=int, default=1, help="colour rays per pixel side (default 1)")
    p.add_argument("--no_video", action="store_true", help="skip the .mp4")
    p.add_argument("--compress", action="store_true", help="compress gt.npz (~25%% smaller, much slower)")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.scenes < 1:
        print(f"error: --scenes must be >= 1, got {args.scenes}", file=sys.stderr)
        return 2
    if args.seed < 0:
        print(f"error: --seed must be >= 0, got {args.seed}", file=sys.stderr)
        return 2
    try:
        cfg = SceneConfig(
            height=args.size[0], width=args.size[1], frames=args.frames, dynamic=args.dynamic, preset=args.preset,
            kind=args.kind, offsets=args.offsets, flow_px=args.flow_px, supersample=args.supersample,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    write_readme(args.out)
    steps = cfg.frames + len(cfg.pairs())
    start = time.perf_counter()
    with tqdm(total=args.scenes * steps, unit="img", desc="synthetic", disable=None) as bar:
        for n in range(args.scenes):
            bar.set_postfix_str(f"scene {n + 1}/{args.scenes}")
            clip = generate_clip(cfg, args.seed + n, progress=bar.update)
            write_clip(args.out / f"scene_{n:04d}", clip, cfg.fps, video=not args.no_video, compress=args.compress)
    print(f"wrote {args.scenes} scene(s) to {args.out} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
