"""Local command line: videos / image folders -> unlabeled clip dataset, or synthetic -> labeled.

    python -m data_pipelines.make_dataset --inputs 'DIR/*/video.mp4' --output_dir OUT \
        [--frames 24 --offsets 1,2,4,8 --max_pixels 255000 --sampling uniform|flow \
         --teacher dis --teacher_arg preset=medium --workers N --num_shards S]
    python -m data_pipelines.make_dataset --synthetic 100 --output_dir OUT [--size 224x224 --dynamic]

Same per-input function, layout and resumability as the Beam pipeline (`dataset_writer`):
rerunning the same command after an interruption skips finished inputs and shards. Per-input
problems are recorded as failures in the manifest and never stop the run; the exit status is
0 when the dataset was written (even with failures), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import multiprocessing
import sys
import time

from tqdm import tqdm

from data_pipelines.dataset_writer import DatasetWriter, PlanMismatchError, default_num_shards
from data_pipelines.inputs import Input, discover_inputs
from data_pipelines.process import PipelineConfig, process_synthetic_scene, process_video

__all__ = ["main", "run", "add_pipeline_args", "pipeline_config_from_args", "synthetic_inputs"]


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, got {text!r}") from None
    return h, w


def _kv(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    for conv in (int, float):
        try:
            return k, conv(v)
        except ValueError:
            pass
    return k, v


def add_pipeline_args(p: argparse.ArgumentParser) -> None:
    """The options that define records (shared with `beam_flow`)."""
    d = PipelineConfig()
    g = p.add_argument_group("clips and flow")
    g.add_argument("--frames", type=int, default=d.frames, help=f"frames per clip (default {d.frames})")
    g.add_argument("--offsets", type=_ints, default=d.offsets, help="flow pair offsets |i-j|, both directions (default 1,2,4,8)")
    g.add_argument("--max_pixels", type=int, default=d.max_pixels, help=f"resize frames to at most this many pixels (default {d.max_pixels})")
    g.add_argument("--sampling", choices=("uniform", "flow"), default=d.sampling, help="frame sampling (flow: by accumulated motion)")
    g.add_argument("--max_seconds", type=float, default=None, help="sample within the centred window of this duration")
    g.add_argument("--teacher", default=d.teacher, help="registered flow teacher (default dis)")
    g.add_argument("--teacher_module", default=None, help="module to import first (in every worker); it calls register_teacher")
    g.add_argument("--teacher_arg", type=_kv, action="append", default=[], help="NAME=VALUE passed to the teacher factory (repeatable)")
    g.add_argument("--teacher_batch", type=int, default=d.teacher_batch, help="pairs per teacher call")
    g.add_argument("--track_stride", type=int, default=d.track_stride, help="track seed grid stride, px")
    g.add_argument("--jpeg_quality", type=int, default=d.jpeg_quality)
    g.add_argument("--flow_level", type=int, default=d.flow_level, help=f"zstd level of the flow codec (default {d.flow_level})")
    g.add_argument("--name", default=None, help="dataset name (snake_case; default flow3r_videos / flow3r_synthetic)")
    g.add_argument("--num_shards", type=int, default=None, help="shards (default: one per --inputs_per_shard inputs)")
    g.add_argument("--inputs_per_shard", type=int, default=64)
    g.add_argument("--input_kind", choices=("auto", "video", "folder"), default="auto", help="what to look for in input directories")


def pipeline_config_from_args(args) -> PipelineConfig:
    return PipelineConfig(
        frames=args.frames, offsets=args.offsets, max_pixels=args.max_pixels, sampling=args.sampling, max_seconds=args.max_seconds,
        teacher=args.teacher, teacher_module=args.teacher_module, teacher_kwargs=tuple(args.teacher_arg), teacher_batch=args.teacher_batch,
        track_stride=args.track_stride, jpeg_quality=args.jpeg_quality, flow_level=args.flow_level,
    )


def synthetic_inputs(n: int, first_seed: int = 0) -> list[Input]:
    return [Input(f"synthetic:seed={s}", f"synthetic/seed_{s:08d}") for s in range(first_seed, first_seed + n)]


def _video_one(inp: Input, cfg: PipelineConfig):
    return process_video(inp.path, cfg, key=inp.key)


def _synthetic_one(inp: Input, scene_cfg, jpeg_quality: int, flow_level: int):
    seed = int(inp.path.rsplit("=", 1)[1])
    return process_synthetic_scene(scene_cfg, seed, jpeg_quality=jpeg_quality, flow_level=flow_level)


def _init_worker():
    import cv2

    cv2.setNumThreads(1)  # one process per core; OpenCV's own threads would oversubscribe


def run(writer: DatasetWriter, inputs: list[Input], process_one, workers: int = 1, overwrite: bool = False, progress: bool | None = None, description: str = "") -> dict:
    """Processes the unfinished inputs (in `workers` processes), commits shards as they fill and
    writes the manifest. Returns the manifest."""
    assignment = writer.prepare(inputs, overwrite=overwrite)
    remaining: dict[int, set] = {}
    for s in writer.pending_shards():
        remaining[s] = {i.key for i in assignment[s] if not writer.is_staged(i.key)}
    todo = [i for s in sorted(remaining) for i in assignment[s] if i.key in remaining[s]]
    for s in [s for s, keys in remaining.items() if not keys]:
        writer.commit(s, assignment[s])
    skipped = len(inputs) - len(todo)
    bar = tqdm(total=len(inputs), initial=skipped, unit="input", desc=writer.name, disable=None if progress is None else not progress)
    failed = 0

    def handle(res):
        nonlocal failed
        writer.stage(res)
        shard = writer.shard_of(res.key)
        remaining[shard].discard(res.key)
        if not remaining[shard]:
            writer.commit(shard, assignment[shard])
        failed += not res.ok
        bar.update(1)
        bar.set_postfix(failed=failed)

    try:
        if workers <= 1 or len(todo) <= 1:
            for inp in todo:
                handle(process_one(inp))
        else:
            # spawn: JAX (synthetic rendering) is not fork-safe. A worker that dies (a crash in a
            # native decoder, the OOM killer) breaks the pool: the run stops naming the inputs in
            # flight, and a rerun resumes.
            ctx = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
                pending = {}
                queue = iter(todo)
                for inp in queue:
                    pending[pool.submit(process_one, inp)] = inp
                    if len(pending) >= 2 * workers:
                        break
                while pending:
                    done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                    for fut in done:
                        inp = pending.pop(fut)
                        try:
                            res = fut.result()
                        except concurrent.futures.process.BrokenProcessPool as err:
                            in_flight = sorted([inp.path] + [i.path for i in pending.values()])
                            raise RuntimeError(f"a worker process died while processing one of {in_flight}; rerun to resume") from err
                        handle(res)
                        nxt = next(queue, None)
                        if nxt is not None:
                            pending[pool.submit(process_one, nxt)] = nxt
    finally:
        bar.close()
    return writer.finalize(assignment, description)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m data_pipelines.make_dataset", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--inputs", nargs="+", help="globs, video files, image folders or directories to search")
    src.add_argument("--synthetic", type=int, metavar="N", help="write N labeled synthetic clips instead")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--overwrite", action="store_true", help="discard a previous (partial) run in --output_dir")
    add_pipeline_args(p)
    s = p.add_argument_group("synthetic (--synthetic N)")
    s.add_argument("--size", type=_size, default=(224, 224), help="HxW (default 224x224)")
    s.add_argument("--dynamic", action="store_true", help="independently moving objects")
    s.add_argument("--seed", type=int, default=0, help="first seed")
    s.add_argument("--preset", default="mixed", help="camera path preset")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        if args.synthetic is not None:
            from data_pipelines.synthetic import SceneConfig

            if args.synthetic < 1:
                raise ValueError(f"--synthetic must be >= 1, got {args.synthetic}")
            scene_cfg = SceneConfig(height=args.size[0], width=args.size[1], frames=args.frames, offsets=args.offsets, dynamic=args.dynamic, preset=args.preset)
            inputs = synthetic_inputs(args.synthetic, args.seed)
            config = {"synthetic": scene_cfg.to_json(), "jpeg_quality": args.jpeg_quality, "flow_level": args.flow_level}
            name, kind = args.name or "flow3r_synthetic", "labeled"
            process_one = functools.partial(_synthetic_one, scene_cfg=scene_cfg, jpeg_quality=args.jpeg_quality, flow_level=args.flow_level)
        else:
            cfg = pipeline_config_from_args(args)
            inputs = discover_inputs(args.inputs, args.input_kind)
            config = cfg.to_dict()
            name, kind = args.name or "flow3r_videos", "unlabeled"
            process_one = functools.partial(_video_one, cfg=cfg)
        shards = args.num_shards or default_num_shards(len(inputs), args.inputs_per_shard)
        writer = DatasetWriter(args.output_dir, name, kind, config, shards)
        manifest = run(writer, inputs, process_one, workers=args.workers, overwrite=args.overwrite)
    except (ValueError, PlanMismatchError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    c = manifest["counts"]
    print(
        f"{args.output_dir}: {c['written']} written, {c['failed']} failed of {c['inputs']} inputs, "
        f"{len(manifest['shards'])} shard(s), {manifest['bytes'] / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s",
        file=sys.stderr,
    )
    for f in manifest["failures"][:10]:
        print(f"  failed [{f['stage']}] {f['input']}: {f['error_type']}: {f['message']}", file=sys.stderr)
    if len(manifest["failures"]) > 10:
        print(f"  ... {len(manifest['failures']) - 10} more in manifest.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
