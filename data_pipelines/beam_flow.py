"""Apache Beam pipeline: the same per-video function as the local runner, at scale.

    python -m data_pipelines.beam_flow --input_glob 'gs://b/videos/**/*.mp4' --output_dir OUT \
        [record options as make_dataset: --frames --offsets --max_pixels --sampling --teacher ...] \
        --runner DirectRunner | DataflowRunner | FlinkRunner | SparkRunner [runner options]

Unknown options go to Beam (`PipelineOptions`), so every runner option works unchanged (see the
README for Dataflow / Flink / Spark). The graph:

    Create(inputs of unfinished shards) -> Reshuffle (spread over workers)
      -> ProcessAndStage: skip if already staged, else process_video + stage the result
      -> (shard, (path, id)) -> GroupByKey -> CommitShard: one ArrayRecord file per shard
    then, on the launching machine, finalize: manifest + TFDS metadata from the shard sidecars.

Idempotent and resumable by construction (details in `dataset_writer`): inputs are assigned to
shards by a stable hash of their id; each input's result is staged atomically before anything
depends on it, so a rerun after a crash skips finished videos; a shard is written once, atomically,
from staged results sorted by id, and committed by its sidecar; the manifest is rebuilt from the
sidecars. Beam's own retries re-run the same deterministic steps, which rewrite identical files.
Only the small (shard, id) pairs go through the shuffle, never the records. `OUT` must be visible
to every worker (a bucket, or a shared file system); results are staged there.

The configuration is checked (option ranges, the teacher) before any input is looked at, exactly
as by `make_dataset`; exit status as there: 0 written, 1 every input failed (reasons summarized),
2 a usage / configuration / output directory error. `--retry_failed` processes again the inputs
that failed in an earlier run into the same directory.

`--simulate_crash_after N` and `--simulate_slow_input S` (tests only) make processing raise once N
inputs are staged, and sleep S seconds before each input (so that a test can kill the process
mid-run).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from data_pipelines.dataset_writer import DatasetWriter, PlanMismatchError, default_num_shards
from data_pipelines.inputs import Input, discover_inputs
from data_pipelines.make_dataset import EXIT_USAGE, add_output_args, add_pipeline_args, check_output_args, pipeline_config_from_args, report
from data_pipelines.process import ConfigError, PipelineConfig, check_teacher, process_video
from flow3r_jax.cli import ArgumentParser

__all__ = ["main", "build_parser", "build_pipeline", "SimulatedCrash"]

log = logging.getLogger("data_pipelines.beam_flow")


class SimulatedCrash(RuntimeError):
    """Raised on purpose by --simulate_crash_after (to test resumption)."""


def _staged_count(writer: DatasetWriter) -> int:
    staging = writer.work / "staging"
    return len(list(staging.glob("*/*.json"))) if staging.exists() else 0


def build_pipeline(pipeline, writer: DatasetWriter, assignment: dict, cfg: PipelineConfig, crash_after: int | None = None, slow: float = 0.0):
    """Adds the processing and shard-writing steps for the unfinished shards to `pipeline`."""
    import apache_beam as beam
    from apache_beam.metrics import Metrics

    class ProcessAndStage(beam.DoFn):
        def __init__(self, writer, cfg_dict, crash_after, slow):
            self.writer, self.cfg_dict, self.crash_after, self.slow = writer, cfg_dict, crash_after, slow
            self.processed = Metrics.counter("flow3r", "processed")
            self.failed = Metrics.counter("flow3r", "failed")
            self.skipped = Metrics.counter("flow3r", "skipped_already_staged")

        def setup(self):
            self.cfg = PipelineConfig.from_dict(self.cfg_dict)

        def process(self, item):
            path, key = item
            if self.writer.is_staged(key):
                self.skipped.inc()
            else:
                if self.crash_after is not None and _staged_count(self.writer) >= self.crash_after:
                    raise SimulatedCrash(f"simulated crash before processing {key!r}")
                time.sleep(self.slow)
                res = process_video(path, self.cfg, key=key)
                self.writer.stage(res)
                self.processed.inc()
                if not res.ok:
                    self.failed.inc()
                    log.warning("failed [%s] %s: %s", res.failure["stage"], path, res.failure["message"])
            yield self.writer.shard_of(key), (path, key)

    class CommitShard(beam.DoFn):
        def __init__(self, writer):
            self.writer = writer

        def process(self, item):
            shard, members = item
            sidecar = self.writer.commit(shard, [Input(p, k) for p, k in members])
            yield shard, sidecar["records"]

    items = [(inp.path, inp.key) for s in writer.pending_shards() for inp in assignment[s]]
    return (
        pipeline
        | "Inputs" >> beam.Create(items)
        | "Spread" >> beam.Reshuffle()
        | "ProcessAndStage" >> beam.ParDo(ProcessAndStage(writer, cfg.to_dict(), crash_after, slow))
        | "ByShard" >> beam.GroupByKey()
        | "CommitShard" >> beam.ParDo(CommitShard(writer))
    )


def build_parser() -> ArgumentParser:
    p = ArgumentParser(module="data_pipelines.beam_flow", description=__doc__.split("\n\n")[0],
                       epilog="Options not listed here go to Beam (PipelineOptions: --runner, --project, ...).")
    p.add_argument("--input_glob", nargs="+", required=True, help="globs / files / directories of videos or image folders")
    add_output_args(p)
    p.add_argument("--simulate_crash_after", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--simulate_slow_input", type=float, default=0.0, help=argparse.SUPPRESS)
    add_pipeline_args(p)
    return p


def parse_args(argv=None):
    """(our options, the rest: Beam's PipelineOptions)."""
    return build_parser().parse_known_args(argv)


def main(argv=None) -> int:
    args, beam_args = parse_args(argv)
    try:
        import apache_beam as beam
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError:
        print("error: apache-beam is not installed (pip install -e '.[beam]')", file=sys.stderr)
        return EXIT_USAGE
    start = time.perf_counter()
    try:  # the whole configuration first: nothing is read before it is valid
        check_output_args(args)
        cfg = pipeline_config_from_args(args)
        check_teacher(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        inputs = discover_inputs(args.input_glob, args.input_kind)
        shards = args.num_shards or default_num_shards(len(inputs), args.inputs_per_shard)
        writer = DatasetWriter(args.output_dir, args.name or "flow3r_videos", "unlabeled", cfg.to_dict(), shards)
        assignment = writer.prepare(inputs, overwrite=args.overwrite, retry_failed=args.retry_failed)
    except (ValueError, PlanMismatchError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    pending = writer.pending_shards()
    failed_before = writer.previous_failures(assignment)
    note = f"; {failed_before} input(s) failed in an earlier run and stay failed (--retry_failed retries them)" if failed_before else ""
    print(f"{len(inputs)} inputs in {shards} shard(s); {len(pending)} shard(s) to write{note}", file=sys.stderr)
    if pending:
        with beam.Pipeline(options=PipelineOptions(beam_args)) as pipeline:
            build_pipeline(pipeline, writer, assignment, cfg, args.simulate_crash_after, args.simulate_slow_input)
    manifest = writer.finalize(assignment)
    return report(manifest, args.output_dir, time.perf_counter() - start)


if __name__ == "__main__":
    sys.exit(main())
