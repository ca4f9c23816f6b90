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

Frame-count buckets (`InputConfig.buckets`, pi^3 / VGGT's 2-24 frames per sample with a per-device
image budget): every batch has one bucket's frame count, flow pairs and batch size, so the train
step sees a few static shapes. The bucket of batch `i` is drawn from `(seed, i)` alone, the same on
every process; batch `i` takes the next `batch_size` records of this process's mixture stream
(`BucketBatches`: its start is the running sum of the earlier batches' sizes, kept in blocks, so
any batch is found in O(1) amortised and a restored iterator continues exactly).

Bad records (`InputConfig.bad_records`): every record is verified when read (its checksum,
`sources.CheckedRecords`). "raise" (the default) stops the input with `CorruptRecordError`, which
names the shard file and the record's index in it. "skip" takes the next record of the source in
its place (deterministically, so restores stay exact), logs the error, and counts it: each batch
carries `skipped_records` (per sample, host-side only: `to_global_batch` leaves it out; the
trainer logs the running total as `input/skipped_records`). Skipping aborts with `DatasetError`
once a process has skipped more than max(`max_bad_records`, `max_bad_fraction` x the records it
has read): a damaged disk is worth stopping for.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading

import grain
import jax
import numpy as np

from flow3r_jax.data.memory import keep_freed_memory
from flow3r_jax.data.sample import SampleConfig, make_sample, sample_spec
from flow3r_jax.data.sources import CheckedRecords, CorruptRecordError, DatasetError, open_source

__all__ = [
    "InputConfig",
    "Bucket",
    "EpochShuffle",
    "BucketBatches",
    "BadRecordPolicy",
    "HOST_ONLY_KEYS",
    "build_dataset",
    "to_global_batch",
    "batch_spec",
    "bucket_sample_config",
]

HOST_ONLY_KEYS = ("skipped_records",)
"""Batch fields for the host (input accounting), not for the device."""

BAD_RECORD_POLICIES = ("raise", "skip")
_MAX_CONSECUTIVE_BAD = 64


@dataclasses.dataclass(frozen=True)
class Bucket:
    """One static batch shape: `frames` per sample, `pairs` flow pairs per sample, `batch_size`
    samples per process, drawn with probability proportional to `weight`."""

    frames: int
    pairs: int
    batch_size: int
    weight: float = 1.0


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
    # Reuse freed memory instead of page-faulting ~27 MB per sample anew (glibc mallopt, process
    # wide, in this process and in Grain's workers; see `flow3r_jax.data.memory`).
    keep_freed_memory: bool = True
    direct_reader: bool = True  # sources.open_source(direct=): read shards without ArrayRecord's copies
    # Frame-count buckets: () = one shape (sample.frames, sample.pairs, batch_size). Otherwise
    # every batch is one bucket's shape (its frames / pairs replace the sample config's) and
    # `batch_size` is not used.
    buckets: tuple[Bucket, ...] = ()
    # A record that fails verification: "raise" stops the input, "skip" takes the next record and
    # counts it (see the module docstring); skipping aborts above max(max_bad_records,
    # max_bad_fraction x records read) per process.
    bad_records: str = "raise"
    verify_records: bool = True  # False skips the checksums (to measure what they cost)
    max_bad_fraction: float = 0.001
    max_bad_records: int = 10

    def __post_init__(self):
        if self.bad_records not in BAD_RECORD_POLICIES:
            raise ValueError(f"InputConfig: bad_records must be one of {BAD_RECORD_POLICIES}, got {self.bad_records!r}")
        if not 0.0 <= self.max_bad_fraction <= 1.0 or self.max_bad_records < 0:
            raise ValueError(f"InputConfig: max_bad_fraction must be in [0, 1] and max_bad_records >= 0, got {self.max_bad_fraction}, {self.max_bad_records}")
        if not self.sources:
            raise ValueError("InputConfig: at least one source is needed")
        if any(w <= 0 for _, w in self.sources):
            raise ValueError(f"InputConfig: mixture weights must be positive, got {[w for _, w in self.sources]}")
        if self.batch_size < 1:
            raise ValueError(f"InputConfig: batch_size must be >= 1, got {self.batch_size}")
        for b in self.buckets:
            if b.frames < 1 or b.pairs < 0 or b.batch_size < 1 or not b.weight > 0:
                raise ValueError(f"InputConfig: bucket {b} needs frames >= 1, pairs >= 0, batch_size >= 1 and a positive weight")
        if len({b.frames for b in self.buckets}) != len(self.buckets):
            raise ValueError(f"InputConfig: bucket frame counts must differ, got {[b.frames for b in self.buckets]}")


def bucket_sample_config(sample: SampleConfig, bucket: Bucket) -> SampleConfig:
    return dataclasses.replace(sample, frames=bucket.frames, pairs=bucket.pairs)


class BadRecordPolicy:
    """A source's verified records as (record, records skipped before it), applying
    `InputConfig.bad_records` (see the module docstring). Picklable: each worker process counts
    its own reads."""

    def __init__(self, records: CheckedRecords, policy: str, max_fraction: float, max_count: int):
        self.records, self.policy, self.max_fraction, self.max_count = records, policy, max_fraction, max_count
        self.read = self.bad = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        n = len(self.records)
        skipped, last = 0, None
        for attempt in range(min(n, _MAX_CONSECUTIVE_BAD)):
            try:
                data = self.records[(int(index) + attempt) % n]
            except CorruptRecordError as err:
                if self.policy == "raise":
                    raise
                skipped, last = skipped + 1, err
                self._count_bad(err)
                continue
            with self._lock:
                self.read += 1
            return data, skipped
        raise DatasetError(f"dataset {self.records.dataset}: {skipped} records in a row from record {index} are bad; the last: {last}")

    def _count_bad(self, err: CorruptRecordError) -> None:
        with self._lock:
            self.bad += 1
            bad, seen = self.bad, self.bad + self.read
        logging.getLogger(__name__).warning("skipped a bad record (%d of %d read so far in this process): %s", bad, seen, err)
        if bad > max(self.max_count, self.max_fraction * seen):
            raise DatasetError(
                f"dataset {self.records.dataset}: {bad} of {seen} records read in this process were bad, more than "
                f"max(max_bad_records={self.max_count}, max_bad_fraction={self.max_fraction} x {seen}); stopping. The last: {err}"
            ) from err

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


class _Sample(grain.transforms.RandomMap):
    """(source index, (record bytes, skipped)) -> sample dict (picklable for worker processes)."""

    def __init__(self, cfg: SampleConfig):
        self.cfg = cfg

    def random_map(self, element, rng: np.random.Generator):
        source, (record, skipped) = element
        return _sample(record, skipped, self.cfg, rng, source)


def _sample(record, skipped: int, cfg: SampleConfig, rng: np.random.Generator, source: int) -> dict[str, np.ndarray]:
    out = make_sample(record, cfg, rng, source, verify=False)  # CheckedRecords verified it
    out["skipped_records"] = np.int32(skipped)
    return out


def _batch(samples) -> dict[str, np.ndarray]:
    """Stacks sample dicts along a new leading axis; a batch of one is a view (no 25 MB copy)."""
    if len(samples) == 1:
        return {k: v[None] for k, v in samples[0].items()}
    return {k: np.stack([s[k] for s in samples]) for k in samples[0]}


class EpochShuffle(grain.MapDataset):
    """A different permutation of the parent's records in every epoch (index // len): element
    `index` is a pure function of (seed, index), so iterators restore exactly.

    Grain's `MapDataset.shuffle` computes each position with a stateless index shuffle whose cost
    grows as the dataset shrinks (~30 ms / len per element on the reference machine: 5 ms for a
    6-clip source, 0.6 ms for 50 clips; 4 us from ~10^4 on), which a mixture with a small
    high-quality labeled source pays on every sample. Here each epoch's permutation is drawn once
    (NumPy, seeded by (seed, epoch)) and the last two are kept: O(1) per element, 8 bytes per
    record of memory."""

    def __init__(self, parent: grain.MapDataset, seed: int):
        super().__init__(parent)
        self._seed = int(seed)
        self._perms: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._parent)

    def __str__(self) -> str:
        return f"EpochShuffle(seed={self._seed})"

    def permutation(self, epoch: int) -> np.ndarray:
        perm = self._perms.get(epoch)
        if perm is None:
            perm = np.random.default_rng([self._seed, epoch]).permutation(len(self._parent))
            if len(self._perms) >= 2:  # reader threads may race here; at worst one is drawn twice
                self._perms.pop(min(self._perms), None)
            self._perms[epoch] = perm
        return perm

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        n = len(self._parent)
        epoch, i = divmod(int(index), n)
        return self._parent[int(self.permutation(epoch)[i]) + epoch * n]

    def __getstate__(self):  # worker processes draw their own (identical) permutations
        state = self.__dict__.copy()
        state["_perms"] = {}
        return state


class BucketBatches(grain.MapDataset):
    """Element `i` is batch `i` of a bucketed stream: a dict of stacked samples whose shape is
    that of bucket `bucket_of(i)`, made from records `start(i) .. start(i) + batch_size - 1` of
    the parent (an infinite MapDataset of (source, record) pairs).

    `bucket_of(i)` depends on (seed, i) only, so every process draws the same bucket for the same
    global batch. `start(i)` is the sum of the earlier batches' sizes: computed per block of
    `BLOCK` batches (one vectorised draw each) and cached, so sequential reads and restores cost
    O(1) amortised. Each sample's random choices come from (seed, stream, record position): the
    stream is a pure function of the config and the process."""

    BLOCK = 1024

    def __init__(self, parent: grain.MapDataset, sample: SampleConfig, buckets: tuple[Bucket, ...], seed: int, stream: int):
        super().__init__(parent)
        self._sample = sample
        self._configs = [bucket_sample_config(sample, b) for b in buckets]
        self._sizes = np.array([b.batch_size for b in buckets], np.int64)
        w = np.array([b.weight for b in buckets], np.float64)
        self._p = w / w.sum()
        self._seed, self._stream = int(seed), int(stream)
        self._blocks: dict[int, np.ndarray] = {}  # block -> bucket index of each of its batches
        self._block_start = [0]  # first record position of block k (grown on demand)
        self._lock = threading.Lock()  # Grain's reader threads grow _block_start concurrently

    def __len__(self) -> int:
        return len(self._parent)  # the parent repeats forever; so does this

    def __str__(self) -> str:
        return f"BucketBatches(frames={[c.frames for c in self._configs]}, seed={self._seed})"

    def _block(self, k: int) -> np.ndarray:
        b = self._blocks.get(k)
        if b is None:
            b = np.random.default_rng([self._seed, 0xB0C4E7, k]).choice(len(self._sizes), size=self.BLOCK, p=self._p)
            if len(self._blocks) > 4:
                self._blocks.pop(min(self._blocks), None)
            self._blocks[k] = b
        return b

    def bucket_of(self, index: int) -> int:
        """The bucket of batch `index` (the same on every process)."""
        return int(self._block(index // self.BLOCK)[index % self.BLOCK])

    def start(self, index: int) -> int:
        """Position in the parent stream of batch `index`'s first record."""
        k, r = divmod(int(index), self.BLOCK)
        if len(self._block_start) <= k:
            with self._lock:
                while len(self._block_start) <= k:
                    j = len(self._block_start) - 1
                    self._block_start.append(self._block_start[j] + int(self._sizes[self._block(j)].sum()))
        return self._block_start[k] + int(self._sizes[self._block(k)[:r]].sum())

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        b = self.bucket_of(index)
        first = self.start(index)
        samples = []
        for pos in range(first, first + int(self._sizes[b])):
            source, (record, skipped) = self._parent[pos]
            rng = np.random.default_rng([self._seed, self._stream, pos])
            samples.append(_sample(record, skipped, self._configs[b], rng, source))
        return _batch(samples)

    def __getstate__(self):  # worker processes rebuild the caches
        state = self.__dict__.copy()
        state["_blocks"], state["_block_start"] = {}, [0]
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _init_worker(keep_memory: bool, worker_index: int, worker_count: int) -> None:
    if keep_memory:
        keep_freed_memory()


def _tag(source: int, element):
    return source, element


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
    if cfg.keep_freed_memory:
        keep_freed_memory()  # before Grain starts its reader threads (one arena for all of them)
    parts, weights = [], []
    for k, (path, weight) in enumerate(cfg.sources):
        src = open_source(path, direct=cfg.direct_reader)
        src.records.verify = src.records.verify and cfg.verify_records
        guarded = BadRecordPolicy(src.records, cfg.bad_records, cfg.max_bad_fraction, cfg.max_bad_records)
        ds = grain.MapDataset.source(guarded)[process_index::process_count]
        if len(ds) == 0:
            raise DatasetError(f"dataset {path}: {len(src)} records cannot feed {process_count} processes (process {process_index} gets none)")
        if cfg.shuffle:
            ds = EpochShuffle(ds, seed=cfg.seed * 1_000_003 + k)
        ds = ds.repeat().map(functools.partial(_tag, k))
        parts.append(ds)
        weights.append(weight)
    ds = grain.MapDataset.mix(parts, weights) if len(parts) > 1 else parts[0]
    read = grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=cfg.read_buffer)
    if cfg.buckets:  # whole batches are the elements: each has its bucket's shape
        ds = BucketBatches(ds, cfg.sample, cfg.buckets, seed=cfg.seed, stream=process_index).to_iter_dataset(read_options=read)
    else:
        ds = ds.random_map(_Sample(cfg.sample), seed=cfg.seed * 7919 + process_index)
        ds = ds.to_iter_dataset(read_options=read).batch(cfg.batch_size, drop_remainder=True, batch_fn=_batch)
    if cfg.num_workers > 0:
        _ensure_absl_flags_parsed()
        ds = ds.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=cfg.num_workers, per_worker_buffer_size=cfg.prefetch),
            worker_init_fn=functools.partial(_init_worker, cfg.keep_freed_memory),
        )
    return ds


def batch_spec(cfg: InputConfig | SampleConfig, global_batch: int) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes of a global batch (for ahead-of-time compilation of train steps); give a bucket's
    sample config (`bucket_sample_config`) for a bucketed input."""
    sample = cfg.sample if isinstance(cfg, InputConfig) else cfg
    return {k: jax.ShapeDtypeStruct((global_batch,) + shape, dtype) for k, (shape, dtype) in sample_spec(sample).items()}


def to_global_batch(host_batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh, axes=("data", "fsdp")) -> dict[str, jax.Array]:
    """Assembles every process's batch into global arrays sharded on their leading dimension over
    `axes` (`jax.make_array_from_process_local_data`: no host copy crosses processes); the
    host-only fields (`HOST_ONLY_KEYS`) stay behind."""
    from jax.sharding import NamedSharding, PartitionSpec

    out = {}
    for k, v in host_batch.items():
        if k in HOST_ONLY_KEYS:
            continue
        sharding = NamedSharding(mesh, PartitionSpec(axes, *([None] * (v.ndim - 1))))
        out[k] = jax.make_array_from_process_local_data(sharding, v)
    return out
