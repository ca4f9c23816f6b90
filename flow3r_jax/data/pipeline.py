"""The training input pipeline on Grain: sources -> per-process shard -> shuffle / repeat ->
weighted mixture -> sample (decode, resize / crop, colour) -> per-process batches -> global arrays.

    cfg = InputConfig(sources=(("/data/synthetic", 1.0), ("/data/videos", 3.0)), batch_size=4,
                      sample=SampleConfig(frames=8, pairs=8, height=378, width=518))
    ds = build_dataset(cfg)                  # after distributed.initialize()
    it = iter(ds)
    host_batch = next(it)                    # dict of NumPy arrays, leading dim batch_size
    batch = to_global_batch(host_batch, mesh)  # jax.Arrays sharded over ("data", "fsdp")
    state = it.get_state()                   # -> the training checkpoint; it.set_state(state)

Determinism: every element's random choices come from Grain's per-index generator (seeded by
`InputConfig.seed`), so the stream is a pure function of (config, process index, count), and a
restored iterator continues exactly where the saved one stopped.

Sharding across processes: each process reads the records `process_index::process_count` of
every source (disjoint, together complete), created after `jax.distributed.initialize`.
"""

from __future__ import annotations

import dataclasses
import functools

import grain
import jax
import numpy as np

from flow3r_jax.data.sample import SampleConfig, make_sample, sample_spec
from flow3r_jax.data.sources import DatasetError, open_source

__all__ = ["InputConfig", "build_dataset", "to_global_batch", "batch_spec"]


@dataclasses.dataclass(frozen=True)
class InputConfig:
    sources: tuple[tuple[str, float], ...]  # (dataset directory, mixture weight)
    batch_size: int = 1  # per process
    sample: SampleConfig = SampleConfig()
    seed: int = 0
    shuffle: bool = True
    num_workers: int = 0  # Grain worker processes (0: decode in the main process)
    prefetch: int = 2  # per-worker buffer of batches
    # Threads decoding samples inside each process, and how many decoded samples they may hold
    # ahead. A 8-frame 378x518 sample is ~25 MB: Grain's defaults (16 threads, 500 samples)
    # would hold ~12 GB per process.
    read_threads: int = 2
    read_buffer: int = 8

    def __post_init__(self):
        if not self.sources:
            raise ValueError("InputConfig: at least one source is needed")
        if any(w <= 0 for _, w in self.sources):
            raise ValueError(f"InputConfig: mixture weights must be positive, got {[w for _, w in self.sources]}")
        if self.batch_size < 1:
            raise ValueError(f"InputConfig: batch_size must be >= 1, got {self.batch_size}")


class _Sample(grain.transforms.RandomMap):
    """(source index, record bytes) -> sample dict (picklable for worker processes)."""

    def __init__(self, cfg: SampleConfig):
        self.cfg = cfg

    def random_map(self, element, rng: np.random.Generator):
        source, record = element
        return make_sample(record, self.cfg, rng, source)


def _tag(source: int, record: bytes):
    return source, record


def _ensure_absl_flags_parsed() -> None:
    """Grain's worker processes read absl flags; programs that are not absl apps (argparse,
    pytest, notebooks) never parse them, so take their defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def build_dataset(cfg: InputConfig, process_index: int | None = None, process_count: int | None = None) -> grain.IterDataset:
    """An infinite, checkpointable dataset of per-process batches (dicts of NumPy arrays)."""
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    parts, weights = [], []
    for k, (path, weight) in enumerate(cfg.sources):
        src = open_source(path)
        ds = grain.MapDataset.source(src.records)[process_index::process_count]
        if len(ds) == 0:
            raise DatasetError(f"dataset {path}: {len(src)} records cannot feed {process_count} processes (process {process_index} gets none)")
        if cfg.shuffle:
            ds = ds.shuffle(seed=cfg.seed * 1_000_003 + k)
        ds = ds.repeat().map(functools.partial(_tag, k))
        parts.append(ds)
        weights.append(weight)
    ds = grain.MapDataset.mix(parts, weights) if len(parts) > 1 else parts[0]
    ds = ds.random_map(_Sample(cfg.sample), seed=cfg.seed * 7919 + process_index)
    read = grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=cfg.read_buffer)
    ds = ds.to_iter_dataset(read_options=read).batch(cfg.batch_size, drop_remainder=True)
    if cfg.num_workers > 0:
        _ensure_absl_flags_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.num_workers, per_worker_buffer_size=cfg.prefetch))
    return ds


def batch_spec(cfg: InputConfig, global_batch: int) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes of a global batch (for ahead-of-time compilation of train steps)."""
    return {k: jax.ShapeDtypeStruct((global_batch,) + shape, dtype) for k, (shape, dtype) in sample_spec(cfg.sample).items()}


def to_global_batch(host_batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh, axes=("data", "fsdp")) -> dict[str, jax.Array]:
    """Assembles every process's batch into global arrays sharded on their leading dimension over
    `axes` (`jax.make_array_from_process_local_data`: no host copy crosses processes)."""
    from jax.sharding import NamedSharding, PartitionSpec

    out = {}
    for k, v in host_batch.items():
        sharding = NamedSharding(mesh, PartitionSpec(axes, *([None] * (v.ndim - 1))))
        out[k] = jax.make_array_from_process_local_data(sharding, v)
    return out
