"""Local command line: videos / image folders -> unlabeled clip dataset, or synthetic -> labeled.

    python -m data_pipelines.make_dataset --inputs 'DIR/*/video.mp4' --output_dir OUT \
        [--frames 24 --offsets 1,2,4,8 --max_pixels 255000 --sampling uniform|flow \
         --teacher dis --teacher_arg preset=medium --workers N --num_shards S]
    python -m data_pipelines.make_dataset --synthetic 100 --output_dir OUT [--size 224x224 --dynamic]

Same per-input function, layout and resumability as the Beam pipeline (`dataset_writer`):
rerunning the same command after an interruption skips finished inputs and shards. Per-input
problems are recorded as failures in the manifest and never stop the run; a failed input stays
failed on a rerun unless `--retry_failed` (e.g. once its cause is fixed).

The whole configuration (every option's range, the teacher: registered, its module importable,
its arguments accepted) is checked before any input is looked at (`configure`); a bad setting is
never recorded as a failure of the inputs. Exit status: 0 when the dataset was written (failures
allowed), 1 when every input failed (the reasons are summarized), 2 on a usage or configuration
error or an output directory that cannot be written as asked (nothing is touched).

Progress: a tqdm bar on a terminal; otherwise (batch jobs) a log line every `--progress_every`
seconds and at the end, with done / failed / total, the rate and the ETA.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import datetime
import functools
import multiprocessing
import sys
import threading
import time
from typing import Callable

from tqdm import tqdm

from data_pipelines.dataset_writer import DatasetWriter, PlanMismatchError, default_num_shards
from data_pipelines.inputs import Input, discover_inputs
from data_pipelines.process import ConfigError, PipelineConfig, check_range, check_teacher, process_synthetic_scene, process_video
from data_pipelines.shards import check_name
from flow3r_jax.cli import ArgumentParser

__all__ = ["main", "build_parser", "run", "configure", "report", "add_pipeline_args", "add_output_args", "check_output_args", "pipeline_config_from_args", "synthetic_inputs", "Job"]

EXIT_OK, EXIT_ALL_FAILED, EXIT_USAGE = 0, 1, 2


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
    g.add_argument("--frames", type=int, default=d.frames, help=f"frames per clip, >= 2 (default {d.frames})")
    g.add_argument("--offsets", type=_ints, default=d.offsets, help="flow pair offsets |i-j|, both directions, each in 1..frames-1 (default 1,2,4,8)")
    g.add_argument("--max_pixels", type=int, default=d.max_pixels, help=f"resize frames to at most this many pixels, >= 1 (default {d.max_pixels})")
    g.add_argument("--sampling", choices=("uniform", "flow"), default=d.sampling, help="frame sampling (flow: by accumulated motion)")
    g.add_argument("--max_seconds", type=float, default=None, help="sample within the centred window of this duration (> 0)")
    g.add_argument("--teacher", default=d.teacher, help="registered flow teacher (default dis)")
    g.add_argument("--teacher_module", default=None, help="module to import first (in every worker); it calls register_teacher")
    g.add_argument("--teacher_arg", type=_kv, action="append", default=[], help="NAME=VALUE passed to the teacher factory (repeatable)")
    g.add_argument("--teacher_batch", type=int, default=d.teacher_batch, help=f"pairs per teacher call, >= 1 (default {d.teacher_batch})")
    g.add_argument("--track_stride", type=int, default=d.track_stride, help=f"track seed grid stride, px, >= 1 (default {d.track_stride})")
    g.add_argument("--jpeg_quality", type=int, default=d.jpeg_quality, help=f"JPEG quality of the stored frames, 1..100 (default {d.jpeg_quality})")
    g.add_argument("--flow_level", type=int, default=d.flow_level, help=f"zstd level of the flow codec, 1..22 (default {d.flow_level})")
    g.add_argument("--input_kind", choices=("auto", "video", "folder"), default="auto", help="what to look for in input directories")


def add_output_args(p: argparse.ArgumentParser) -> None:
    """The options of the output directory (shared with `beam_flow`)."""
    p.add_argument("--output_dir", required=True, help="dataset directory (created; a local path or a gs:// URI)")
    p.add_argument("--overwrite", action="store_true", help="delete the dataset files already in --output_dir (a previous run, finished or not) first")
    p.add_argument("--retry_failed", action="store_true", help="process again the inputs that failed in an earlier run into --output_dir (they are skipped otherwise)")
    g = p.add_argument_group("dataset")
    g.add_argument("--name", default=None, help="dataset name (snake_case; default flow3r_videos / flow3r_synthetic)")
    g.add_argument("--num_shards", type=int, default=None, help="shards, >= 1 (default: one per --inputs_per_shard inputs)")
    g.add_argument("--inputs_per_shard", type=int, default=64, help="inputs per shard when --num_shards is not given, >= 1 (default 64)")


def check_output_args(args) -> None:
    """ConfigError for an invalid output option (see `add_output_args`)."""
    if args.num_shards is not None:
        check_range("--num_shards", args.num_shards, 1)
    check_range("--inputs_per_shard", args.inputs_per_shard, 1)
    if args.name is not None:
        try:
            check_name(args.name)
        except ValueError as err:
            raise ConfigError(f"--name: {err}") from None


def pipeline_config_from_args(args) -> PipelineConfig:
    """The PipelineConfig of the options; ConfigError names a bad one."""
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


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _log(text: str) -> None:
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    print(f"[{stamp}] {text}", file=sys.stderr, flush=True)


class _Progress:
    """Done / failed / total of a run: a tqdm bar ("bar"), or ("log") a line every `every`
    seconds (from a background thread, so a slow input does not silence it) and at the end."""

    def __init__(self, name: str, total: int, done: int, failed: int, mode: str, every: float):
        self.name, self.total, self.done, self.failed, self.mode, self.every = name, total, done, failed, mode, every
        self.processed = 0
        self.start = time.monotonic()
        self._bar = tqdm(total=total, initial=done, unit="input", desc=name) if mode == "bar" else None
        self._stop = threading.Event()
        self._thread = None
        if mode == "log":
            self._thread = threading.Thread(target=self._loop, name="progress-log", daemon=True)
            self._thread.start()

    def _loop(self):
        while not self._stop.wait(self.every):
            self.log()

    def line(self, final: bool = False) -> str:
        elapsed = time.monotonic() - self.start
        rate = self.processed / elapsed * 60 if elapsed > 0 else 0.0
        text = f"{self.name}: {self.done}/{self.total} inputs done, {self.failed} failed"
        if final:
            return f"{text}; {self.processed} processed in {_duration(elapsed)} ({rate:.1f} inputs/min)"
        left = self.total - self.done
        eta = _duration(left / rate * 60) if rate > 0 else "unknown"
        return f"{text}; {rate:.1f} inputs/min, ETA {eta}"

    def log(self, final: bool = False) -> None:
        _log(self.line(final))

    def update(self, ok: bool) -> None:
        self.done += 1
        self.processed += 1
        self.failed += not ok
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(failed=self.failed)

    def close(self, finished: bool) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            if finished:
                self.log(final=True)


def run(
    writer: DatasetWriter,
    inputs: list[Input],
    process_one: Callable,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool | None = None,
    description: str = "",
    retry_failed: bool = False,
    progress_every: float = 30.0,
) -> dict:
    """Processes the unfinished inputs (in `workers` processes), commits shards as they fill and
    writes the manifest. Returns the manifest.

    `retry_failed` processes again the inputs that failed in an earlier run (else they stay
    failed). `progress`: True a tqdm bar, False nothing, None (default) a bar on a terminal and
    otherwise a log line on stderr every `progress_every` seconds and at the end."""
    assignment = writer.prepare(inputs, overwrite=overwrite, retry_failed=retry_failed)
    remaining: dict[int, set] = {}
    for s in writer.pending_shards():
        remaining[s] = {i.key for i in assignment[s] if not writer.is_staged(i.key)}
    todo = [i for s in sorted(remaining) for i in assignment[s] if i.key in remaining[s]]
    for s in [s for s, keys in remaining.items() if not keys]:
        writer.commit(s, assignment[s])
    skipped = len(inputs) - len(todo)
    failed_before = writer.previous_failures(assignment) if skipped else 0
    if skipped:
        note = f"; {failed_before} of them failed and stay failed (--retry_failed retries them)" if failed_before else ""
        _log(f"{writer.name}: {skipped} of {len(inputs)} inputs were done by an earlier run and are skipped{note}")
    mode = "off" if progress is False else "bar" if progress or (progress is None and sys.stderr.isatty()) else "log"
    bar = _Progress(writer.name, len(inputs), skipped, failed_before, mode, progress_every)
    finished = False

    def handle(res):
        writer.stage(res)
        shard = writer.shard_of(res.key)
        remaining[shard].discard(res.key)
        if not remaining[shard]:
            writer.commit(shard, assignment[shard])
        bar.update(res.ok)

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
                try:
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
                except BaseException:
                    for fut in pending:  # e.g. a ConfigError: do not start the queued inputs
                        fut.cancel()
                    raise
        finished = True
    finally:
        bar.close(finished)
    return writer.finalize(assignment, description)


def _failure_reasons(failures: list[dict]) -> list[str]:
    """One line per (stage, error type), most frequent first, with an example message."""
    groups = collections.Counter((f["stage"], f["error_type"]) for f in failures)
    example = {}
    for f in failures:
        example.setdefault((f["stage"], f["error_type"]), f["message"])
    return [f"{n} x [{stage}] {etype}, e.g. {example[(stage, etype)]}" for (stage, etype), n in groups.most_common()]


def report(manifest: dict, output_dir: str, seconds: float) -> int:
    """Prints the outcome of a run to stderr and returns the exit status: EXIT_ALL_FAILED when
    every input failed (with a summary of the reasons), else EXIT_OK."""
    c = manifest["counts"]
    print(
        f"{output_dir}: {c['written']} written, {c['failed']} failed of {c['inputs']} inputs, "
        f"{len(manifest['shards'])} shard(s), {manifest['bytes'] / 1e6:.1f} MB, {seconds:.1f} s",
        file=sys.stderr,
    )
    failures = manifest["failures"]
    for f in failures[:10]:
        print(f"  failed [{f['stage']}] {f['input']}: {f['error_type']}: {f['message']}", file=sys.stderr)
    if len(failures) > 10:
        print(f"  ... {len(failures) - 10} more in manifest.json", file=sys.stderr)
    if c["inputs"] and c["written"] == 0:
        print(f"error: every input failed ({c['failed']} of {c['inputs']}); the dataset is empty. Reasons:", file=sys.stderr)
        for line in _failure_reasons(failures):
            print(f"  {line}", file=sys.stderr)
        print("Fix the cause, then rerun the same command with --retry_failed to process the failed inputs again.", file=sys.stderr)
        return EXIT_ALL_FAILED
    return EXIT_OK


@dataclasses.dataclass
class Job:
    """A checked configuration: what to process and how; `inputs()` is the first look at the inputs."""

    name: str
    kind: str  # unlabeled | labeled
    config: dict  # what the plan and manifest record
    process_one: Callable
    inputs: Callable[[], list[Input]]


def configure(args) -> Job:
    """Checks every option (ranges, the teacher) without touching any input; ConfigError names
    the option to fix and what it allows."""
    check_range("--workers", args.workers, 1)
    check_range("--progress_every", args.progress_every, 0, integer=False, lo_open=True)
    check_output_args(args)
    if args.synthetic is not None:
        from data_pipelines.synthetic import SceneConfig

        check_range("--synthetic", args.synthetic, 1)
        check_range("--seed", args.seed, 0)
        check_range("--size (height)", args.size[0], 1)
        check_range("--size (width)", args.size[1], 1)
        check_range("--frames", args.frames, 2)
        check_range("--jpeg_quality", args.jpeg_quality, 1, 100)
        check_range("--flow_level", args.flow_level, 1, 22)
        try:
            scene_cfg = SceneConfig(height=args.size[0], width=args.size[1], frames=args.frames, offsets=args.offsets, dynamic=args.dynamic, preset=args.preset)
        except ValueError as err:  # SceneConfig.<field> is the option --<field> (--size for height / width)
            raise ConfigError(f"synthetic scene options (--size, --frames, --offsets, --preset): {err}") from None
        n, seed = args.synthetic, args.seed
        return Job(
            name=args.name or "flow3r_synthetic",
            kind="labeled",
            config={"synthetic": scene_cfg.to_json(), "jpeg_quality": args.jpeg_quality, "flow_level": args.flow_level},
            process_one=functools.partial(_synthetic_one, scene_cfg=scene_cfg, jpeg_quality=args.jpeg_quality, flow_level=args.flow_level),
            inputs=lambda: synthetic_inputs(n, seed),
        )
    cfg = pipeline_config_from_args(args)
    check_teacher(cfg)
    specs, kind = args.inputs, args.input_kind
    return Job(
        name=args.name or "flow3r_videos",
        kind="unlabeled",
        config=cfg.to_dict(),
        process_one=functools.partial(_video_one, cfg=cfg),
        inputs=lambda: discover_inputs(specs, kind),
    )


def build_parser() -> ArgumentParser:
    p = ArgumentParser(module="data_pipelines.make_dataset", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--inputs", nargs="+", help="globs, video files, image folders or directories to search")
    src.add_argument("--synthetic", type=int, metavar="N", help="write N (>= 1) labeled synthetic clips instead")
    add_output_args(p)
    p.add_argument("--workers", type=int, default=1, help="processes, >= 1 (default 1)")
    p.add_argument("--progress_every", type=float, default=30.0, metavar="SECONDS",
                   help="when stderr is not a terminal, log progress (done / failed / total, rate, ETA) every SECONDS (> 0; default 30) and at the end")
    add_pipeline_args(p)
    s = p.add_argument_group("synthetic (--synthetic N)")
    s.add_argument("--size", type=_size, default=(224, 224), help="HxW (default 224x224)")
    s.add_argument("--dynamic", action="store_true", help="independently moving objects")
    s.add_argument("--seed", type=int, default=0, help="first seed, >= 0 (default 0)")
    s.add_argument("--preset", default="mixed", help="camera path preset (default mixed)")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        job = configure(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        inputs = job.inputs()
        shards = args.num_shards or default_num_shards(len(inputs), args.inputs_per_shard)
        writer = DatasetWriter(args.output_dir, job.name, job.kind, job.config, shards)
        manifest = run(writer, inputs, job.process_one, workers=args.workers, overwrite=args.overwrite,
                       retry_failed=args.retry_failed, progress_every=args.progress_every)
    except (ValueError, PlanMismatchError) as err:  # ConfigError included (a teacher that cannot be built)
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return report(manifest, args.output_dir, time.perf_counter() - start)


if __name__ == "__main__":
    sys.exit(main())
