"""Input-pipeline throughput: samples per second per CPU core, and where the time goes.

Setting (SPEC §3 target: >= 40 samples/s per core): samples of 8 frames + 8 flow pairs at
378x518 (H x W), from a 50/50 mixture of labeled synthetic clips (exact flow, depth, poses) and
unlabeled clips (teacher flow of synthetic videos), both stored at 378x518 by `data_pipelines`
(so the geometric transform is a random crop of a slightly zoomed image when --zoom > 1).

1. One core: the Grain pipeline in the main process, one decode thread, OpenCV on one thread; the time of each
   stage is measured by wrapping the library functions the sample builder calls:
   read (record lookup in the shard: `shard_reader`, or ArrayRecord's reader as fallback), decode (record parse, JPEG frames, flow codec; when the transform is
   a pure crop, the flow decoder writes the window straight into the sample, so the crop is
   inside "decode"), transform (resize / crop of frames, depth, intrinsics and flows; colour
   jitter; flow landing test), verify (each record's CRC-32, `sources.CheckedRecords`), other
   (sampling, the rest of building a sample, batching, Grain).
   Then the cost of verification: the same one-core pipeline with and without the checksums
   (`InputConfig.verify_records`), rounds interleaved, samples per CPU-second of each.
2. All cores: the same pipeline with Grain worker processes (--workers, default: all cores).

Usage: python benchmarks/input_pipeline.py [--data DIR] [--samples 200] [--rounds 3] [--zoom 1.0]
The datasets are generated once into --data (default: a temp dir); that time is not measured.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

from flow3r_jax.data import container, records, sample as sample_mod, sources
from flow3r_jax.data.pipeline import InputConfig, build_dataset
from flow3r_jax.data.sample import SampleConfig

H, W = 378, 518


def make_datasets(root: str) -> tuple[str, str]:
    labeled, unlabeled, videos = (os.path.join(root, n) for n in ("labeled", "unlabeled", "videos"))
    run = lambda *a: subprocess.run([sys.executable, "-m", *a], check=True, capture_output=True)
    for d in (labeled, unlabeled):  # datasets from before the record checksum: write them again
        try:
            if sources.open_source(d).manifest["schema_versions"]["record_container"] != container.CONTAINER_VERSION:
                shutil.rmtree(d)
        except sources.DatasetError:
            pass
    if not os.path.exists(os.path.join(labeled, "manifest.json")):
        print("generating labeled synthetic clips ...", flush=True)
        run("data_pipelines.make_dataset", "--synthetic", "6", "--output_dir", labeled, "--frames", "12", "--size", f"{H}x{W}", "--offsets", "1,2,4,8")
    if not os.path.exists(os.path.join(unlabeled, "manifest.json")):
        print("generating unlabeled clips from synthetic videos ...", flush=True)
        run("data_pipelines.synthetic", "--out", videos, "--scenes", "6", "--frames", "12", "--size", f"{H}x{W}", "--seed", "100")
        run("data_pipelines.make_dataset", "--inputs", os.path.join(videos, "*", "video.mp4"), "--output_dir", unlabeled, "--frames", "12", "--offsets", "1,2,4,8", "--max_pixels", str(H * W))
    return labeled, unlabeled


class StageTimer:
    """Wraps functions and methods to accumulate their wall time per stage."""

    def __init__(self):
        self.seconds = collections.Counter()

    def wrap(self, owner, name, stage):
        fn = getattr(owner, name)

        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - t

        setattr(owner, name, timed)


def config(labeled, unlabeled, zoom, workers=0, threads=1, verify=True) -> InputConfig:
    return InputConfig(
        sources=((labeled, 1.0), (unlabeled, 1.0)),
        batch_size=1,
        sample=SampleConfig(frames=8, pairs=8, height=H, width=W, max_zoom=zoom),
        num_workers=workers,
        read_threads=threads,
        verify_records=verify,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "flow3r_input_bench"))
    ap.add_argument("--samples", type=int, default=200, help="samples per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--zoom", type=float, default=1.0, help="max random zoom (> 1 adds a resize)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    labeled, unlabeled = make_datasets(args.data)
    cv2.setNumThreads(1)

    timer = StageTimer()
    timer.wrap(records, "decode_record", "decode")
    timer.wrap(records.LabeledClip, "decode_frames", "decode")
    timer.wrap(records.UnlabeledClip, "decode_frames", "decode")
    timer.wrap(records.LabeledClip, "decode_flow", "decode")
    timer.wrap(records.UnlabeledClip, "decode_flow", "decode")
    for name in ("warp_frame", "warp_flow", "warp_depth", "warp_intrinsics", "keep_landing_inside"):
        timer.wrap(sample_mod, name, "transform")
    timer.wrap(container, "verify_checksum", "verify")

    it = iter(build_dataset(config(labeled, unlabeled, args.zoom), 0, 1))
    for _ in range(10):  # warm-up
        next(it)
    timer.seconds.clear()
    walls, cpus = [], []
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(args.rounds):  # the machine's speed drifts: several rounds, median reported
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(args.samples):
            next(it)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    n = args.samples * args.rounds
    # The shard read happens inside Grain's source access: time it apart, on the same
    # records of both sources, and take it out of "other".
    srcs = [sources.open_source(labeled), sources.open_source(unlabeled)]
    t = time.perf_counter()
    for i in range(n):
        src = srcs[i % 2]
        src.records[(i // 2) % len(src)]
    timer.seconds["read"] += time.perf_counter() - t

    print(f"{args.rounds} x {args.samples} samples of 8 frames + 8 pairs at {H}x{W}, labeled/unlabeled mixture, zoom <= {args.zoom}")
    rates = sorted(args.samples / c for c in cpus)
    print(f"\n[1 core] {np.median([args.samples / w for w in walls]):6.1f} samples/s wall, {np.median(rates):6.1f} samples/s per CPU-second (median of "
          f"{args.rounds} rounds: {', '.join(f'{r:.1f}' for r in rates)})  (target >= 40)")
    print(f"  CPU per sample: {(r1.ru_utime - r0.ru_utime) / n * 1000:.1f} ms user + {(r1.ru_stime - r0.ru_stime) / n * 1000:.1f} ms system; "
          f"{(r1.ru_minflt - r0.ru_minflt) / n:.0f} page faults per sample")
    total = sum(walls)
    other = max(0.0, total - sum(timer.seconds.values()))  # the read is estimated apart: can overshoot
    for stage in ("read", "verify", "decode", "transform"):
        print(f"  {stage:<10} {timer.seconds[stage] / n * 1000:7.2f} ms/sample  {100 * timer.seconds[stage] / total:5.1f}%")
    print(f"  {'other':<10} {other / n * 1000:7.2f} ms/sample  {100 * other / total:5.1f}%  (sampling, batching, Grain)")

    # What verification costs: interleaved rounds with and without it, CPU time of each.
    its = {v: iter(build_dataset(config(labeled, unlabeled, args.zoom, verify=v), 0, 1)) for v in (True, False)}
    per_cpu = {True: [], False: []}
    for it in its.values():
        for _ in range(10):
            next(it)
    for _ in range(args.rounds):
        for v, it in its.items():
            c0 = time.process_time()
            for _ in range(args.samples):
                next(it)
            per_cpu[v].append(args.samples / (time.process_time() - c0))
    on, off = np.median(per_cpu[True]), np.median(per_cpu[False])
    print(f"\n[verification] {on:6.1f} samples per CPU-second with the record checksums, {off:6.1f} without: "
          f"{on / off:.3f}x ({100 * (off / on - 1):+.1f}% CPU per sample)")

    if args.workers > 1:
        ds = build_dataset(config(labeled, unlabeled, args.zoom, workers=args.workers), 0, 1)
        it = iter(ds)
        for _ in range(4 * args.workers):
            next(it)
        t0 = time.perf_counter()
        for _ in range(args.samples):
            next(it)
        wall = time.perf_counter() - t0
        print(f"\n[{args.workers} worker processes] {args.samples / wall:6.1f} samples/s, {args.samples / wall / args.workers:6.1f} per worker")


if __name__ == "__main__":
    main()
