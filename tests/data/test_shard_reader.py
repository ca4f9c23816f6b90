"""The direct shard reader against ArrayRecord's own reader: same bytes for every record, at
every block-boundary position, and a clean refusal (then fallback) for other layouts."""

import os
import pickle
import shutil
import threading

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from flow3r_jax.data.shard_reader import BLOCK, DirectShardSource, ShardLayoutError, open_shard_index, verify_against_arrayrecord
from flow3r_jax.data.sources import open_source


def _write(path, records, options="group_size:1,uncompressed"):
    w = ArrayRecordWriter(str(path), options)
    for r in records:
        w.write(r)
    w.close()


def _official(path):
    r = ArrayRecordReader(str(path), "readahead_buffer_size:0")
    out = [r.read([k])[0] for k in range(r.num_records())]
    r.close()
    return out


def _random_records(seed, n):
    """Sizes from 0 bytes to several blocks, including sizes around one block, so records start
    and end at and next to 64 KiB block boundaries."""
    rng = np.random.default_rng(seed)
    sizes = list(rng.integers(0, 3 * BLOCK, n)) + [0, 1, BLOCK - 24, BLOCK - 23, BLOCK, BLOCK + 1, 5 * BLOCK + 17]
    rng.shuffle(sizes)
    return [rng.integers(0, 256, int(s), dtype=np.uint8).tobytes() for s in sizes]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_bytes_as_arrayrecord_at_every_boundary(tmp_path, seed):
    records = _random_records(seed, 120)
    path = tmp_path / "x.array_record"
    _write(path, records)
    src = DirectShardSource([str(path)], [len(records)])
    got = [bytes(src[k]) for k in range(len(records))]
    assert got == records == _official(path)
    # Most records are interrupted by one or more block headers (the case that needs care).
    idx = open_shard_index(str(path), len(records))
    crossing = (idx.starts // BLOCK) != ((idx.starts + idx.sizes) // BLOCK)
    assert crossing.sum() > len(records) // 2
    assert (idx.sizes == np.array([len(r) for r in records])).all()


def test_many_tiny_records(tmp_path):
    """Thousands of small chunks: chunk headers interrupted by block headers."""
    rng = np.random.default_rng(3)
    records = [rng.integers(0, 256, int(s), dtype=np.uint8).tobytes() for s in rng.integers(0, 40, 5000)]
    path = tmp_path / "tiny.array_record"
    _write(path, records)
    src = DirectShardSource([str(path)], [len(records)])
    assert [bytes(src[k]) for k in range(len(records))] == records


def test_dataset_shards_and_open_source(datasets):
    """The shards data_pipelines writes: verified record by record, and open_source uses the
    direct reader for them with the same bytes as ArrayRecord's reader."""
    for kind in ("labeled", "unlabeled"):
        direct, official = open_source(datasets[kind]), open_source(datasets[kind], direct=False)
        assert isinstance(direct.records.records, DirectShardSource) and direct.records.verify
        assert len(direct) == len(official)
        assert all(bytes(direct[k]) == official[k] for k in range(len(direct)))
        for name in os.listdir(datasets[kind]):
            if ".array_record" in name:
                assert verify_against_arrayrecord(os.path.join(datasets[kind], name)) > 0


def test_other_layouts_are_refused_and_open_source_falls_back(tmp_path, datasets):
    records = _random_records(4, 10)
    for options, match in (("group_size:1", "compressed"), ("group_size:4,uncompressed", "holds 4 records")):
        path = tmp_path / f"{options.replace(':', '_').replace(',', '_')}.array_record"
        _write(path, records, options)
        with pytest.raises(ShardLayoutError, match=match):
            open_shard_index(str(path), len(records))
    # A dataset whose shard was rewritten with zstd chunks: open_source falls back, same records.
    ds = tmp_path / "zstd"
    shutil.copytree(datasets["labeled"], ds)
    shard = next(os.path.join(ds, n) for n in os.listdir(ds) if ".array_record" in n)
    originals = _official(shard)
    os.remove(shard)
    _write(shard, originals, "group_size:1")
    src = open_source(str(ds))
    assert not isinstance(src.records.records, DirectShardSource)
    assert [src[k] for k in range(len(src))] == originals


def test_truncated_shard(tmp_path):
    records = _random_records(5, 20)
    path = tmp_path / "t.array_record"
    _write(path, records)
    data = path.read_bytes()
    (tmp_path / "cut.array_record").write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardLayoutError, match="truncated"):
        open_shard_index(str(tmp_path / "cut.array_record"), len(records))


def test_pickle_threads_and_errors(tmp_path):
    records = _random_records(6, 40)
    paths = [tmp_path / "a.array_record", tmp_path / "b.array_record"]
    _write(paths[0], records[:25])
    _write(paths[1], records[25:])
    src = DirectShardSource([str(p) for p in paths], [25, len(records) - 25])
    assert len(src) == len(records)
    src[0]  # opens a descriptor, which must not travel with the pickle
    clone = pickle.loads(pickle.dumps(src))
    assert clone._fds == {}
    out = {}

    def read(ks):
        for k in ks:
            out[k] = bytes(clone[k])

    threads = [threading.Thread(target=read, args=(range(t, len(records), 4),)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [out[k] for k in range(len(records))] == records
    with pytest.raises(IndexError):
        src[len(records)]


def test_grain_worker_process_reads_the_same(datasets):
    """The direct source travels to a Grain worker process (pickled, descriptors reopened there)
    and yields the same batches as the in-process pipeline."""
    from flow3r_jax.data.pipeline import InputConfig, build_dataset
    from flow3r_jax.data.sample import SampleConfig

    def take(workers):
        cfg = InputConfig(
            sources=((datasets["labeled"], 1.0), (datasets["unlabeled"], 1.0)), batch_size=2, sample=SampleConfig(frames=4, pairs=4, height=56, width=84), num_workers=workers
        )
        it = iter(build_dataset(cfg, 0, 1))
        return [next(it) for _ in range(3)]

    worker, local = take(1), take(0)
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(worker, local) for k in a)


def test_record_count_mismatch_names_the_dataset(datasets, tmp_path):
    """A shard replaced by one with another record count fails at open, for both readers."""
    import json

    from flow3r_jax.data.sources import DatasetError

    ds = tmp_path / "replaced"
    shutil.copytree(datasets["labeled"], ds)
    shard = next(os.path.join(ds, n) for n in os.listdir(ds) if ".array_record" in n)
    records = _official(shard)
    os.remove(shard)
    _write(shard, records[:-1])
    for direct in (True, False):
        with pytest.raises(DatasetError, match=f"{ds}.*shards hold {len(records) - 1} records, the manifest says {len(records)}"):
            open_source(str(ds), direct=direct)
    assert json.loads((ds / "manifest.json").read_text())["counts"]["written"] == len(records)
