"""Every byte of training data verified: a damaged record anywhere (header, frames, depth, flow)
is an error naming the shard file and the record, for both shard readers; truncated shards are
named; the bad-record policy of the input pipeline (raise / skip and count / abort); datasets
written before the checksum stay readable."""

import json
import logging
import os
import shutil

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from flow3r_jax.data import container
from flow3r_jax.data.pipeline import InputConfig, build_dataset
from flow3r_jax.data.records import decode_record
from flow3r_jax.data.sample import SampleConfig
from flow3r_jax.data.shard_reader import open_shard_index
from flow3r_jax.data.sources import CorruptRecordError, DatasetError, open_source

SAMPLE = SampleConfig(frames=8, pairs=2, height=56, width=84, train=False)  # all 8 frames, no random crop: a record gives one sample


def _shard(ds) -> str:
    return next(os.path.join(ds, n) for n in sorted(os.listdir(ds)) if ".array_record" in n)


def _records(shard):
    r = ArrayRecordReader(str(shard), "readahead_buffer_size:0")
    out = [r.read([k])[0] for k in range(r.num_records())]
    r.close()
    return out


def _rewrite(shard, records):
    os.remove(shard)
    w = ArrayRecordWriter(str(shard), "group_size:1,uncompressed")
    for r in records:
        w.write(r)
    w.close()


def _copy(datasets, kind, tmp_path, name="copy"):
    ds = tmp_path / name
    shutil.copytree(datasets[kind], ds)
    return str(ds)


def _field_offsets(record: bytes) -> dict[str, int]:
    """A byte inside each part of a record: its header, a JPEG frame, the depth, a flow blob."""
    clip = decode_record(record)
    out = {"header": 6, "frame": record.index(bytes(clip.frames_jpeg[1])) + 300}
    if getattr(clip, "depth", None) is not None:
        enc = b"".join(container.encode_value(container.FieldType.ARRAY, clip.depth, container.ArrayEncoding.SHUFFLED_ZSTD))
        out["depth"] = record.index(enc[-64:]) + 10  # inside the depth's zstd frame
    if clip.flows:
        out["flow"] = record.index(bytes(clip.flows[0])) + 25  # past the flow codec's header
    out["checksum"] = len(record) - 2
    return out


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "arrayrecord"])
def test_a_flipped_byte_anywhere_in_a_record_names_shard_and_record(datasets, tmp_path, direct):
    ds = _copy(datasets, "labeled", tmp_path)
    shard = _shard(ds)
    originals = _records(shard)
    k = 2
    offsets = _field_offsets(originals[k])
    assert set(offsets) >= {"header", "frame", "depth", "flow", "checksum"}
    for part, at in offsets.items():
        bad = bytearray(originals[k])
        bad[at] ^= 0x10
        _rewrite(shard, originals[:k] + [bytes(bad)] + originals[k + 1 :])
        src = open_source(ds, direct=direct)
        assert [bytes(src[i]) for i in (0, 1, 3)] == [originals[i] for i in (0, 1, 3)]
        with pytest.raises(CorruptRecordError, match=rf"shard {shard}: record {k}: checksum mismatch") as info:
            src[k]
        assert (info.value.shard, info.value.record) == (shard, k), part


def test_a_flip_inside_a_jpeg_frame_was_silent_before_the_checksum(datasets):
    """The case that motivated the checksum: the JPEG decoder accepts a damaged frame."""
    from flow3r_jax.data.images import decode_jpeg

    record = _records(_shard(datasets["labeled"]))[0]
    clip = decode_record(record)
    frame = bytearray(clip.frames_jpeg[1])
    frame[len(frame) // 2] ^= 0x10
    damaged = decode_jpeg([bytes(frame)])  # no error from the codec ...
    assert damaged.shape == decode_jpeg([bytes(clip.frames_jpeg[1])]).shape
    bad = record.replace(bytes(clip.frames_jpeg[1]), bytes(frame))
    with pytest.raises(container.ChecksumError):  # ... but the record refuses it
        container.verify_checksum(bad)


def test_truncated_shard_names_the_file(datasets, tmp_path):
    ds = _copy(datasets, "labeled", tmp_path)
    shard = _shard(ds)
    data = open(shard, "rb").read()
    with open(shard, "wb") as f:
        f.write(data[: len(data) // 2])
    for direct in (True, False):
        with pytest.raises(DatasetError, match=rf"dataset {ds}: shard {shard} \(\d+ bytes\) cannot be opened, truncated"):
            open_source(ds, direct=direct)


def _batches(ds, n, **kw):
    cfg = InputConfig(sources=((ds, 1.0),), batch_size=1, sample=SAMPLE, shuffle=False, read_threads=1, **kw)
    it = iter(build_dataset(cfg, 0, 1))
    return [next(it) for _ in range(n)]


def _damage(ds, which):
    shard = _shard(ds)
    records = _records(shard)
    for k in which:
        bad = bytearray(records[k])
        bad[len(bad) // 2] ^= 0xFF
        records[k] = bytes(bad)
    _rewrite(shard, records)
    return shard, len(records)


def test_bad_record_policy_raise_skip_and_abort(datasets, tmp_path):
    ds = _copy(datasets, "labeled", tmp_path)
    clean = _batches(ds, 4)
    assert [int(b["skipped_records"][0]) for b in clean] == [0, 0, 0, 0]
    shard, n = _damage(ds, [1])
    # raise (the default): the error reaches the caller with the shard and the record
    with pytest.raises(CorruptRecordError, match=rf"shard {shard}: record 1: checksum mismatch"):
        _batches(ds, 3)
    # skip: record 1 is replaced by record 2 (the next), counted on that sample; the rest unchanged
    got = _batches(ds, 4, bad_records="skip", max_bad_records=5)
    assert [int(b["skipped_records"][0]) for b in got] == [0, 1, 0, 0]
    np.testing.assert_array_equal(got[1]["images"], clean[2]["images"])
    np.testing.assert_array_equal(got[2]["images"], clean[2]["images"])
    np.testing.assert_array_equal(got[3]["images"], clean[3]["images"])
    # abort: more bad records than max(max_bad_records, fraction x read)
    _damage(ds, [0, 2])
    with pytest.raises(DatasetError, match=r"3 of \d+ records read in this process were bad, more than max\(max_bad_records=2"):
        _batches(ds, 2 * n, bad_records="skip", max_bad_records=2)
    with pytest.raises(ValueError, match="bad_records must be one of"):
        InputConfig(sources=((ds, 1.0),), bad_records="ignore")


def test_version_1_datasets_stay_readable_unverified(datasets, tmp_path, caplog):
    """A dataset written before the checksum (record container version 1) is read as before, with
    a warning that it is not verified."""
    ds = _copy(datasets, "labeled", tmp_path)
    shard = _shard(ds)
    originals = _records(shard)
    v1 = []
    for r in originals:
        rec = container.unpack_record(r)
        fields = [(name, container.encode_value(t, v)) for name, (t, v) in rec.fields.items()]
        v1.append(container.pack_record(rec.kind_tag, rec.schema_version, fields, container_version=1))
    assert all(a[:4] == b[:4] and a[4] == 1 for a, b in zip(v1, originals))
    _rewrite(shard, v1)
    manifest = json.load(open(os.path.join(ds, "manifest.json")))
    manifest["schema_versions"]["record_container"] = 1
    json.dump(manifest, open(os.path.join(ds, "manifest.json"), "w"))
    with caplog.at_level(logging.WARNING, logger="flow3r_jax.data.sources"):
        src = open_source(ds)
    assert "record container version 1, which has no checksums" in caplog.text
    assert not src.records.verify
    for a, b in zip((decode_record(bytes(src[k])) for k in range(len(src))), (decode_record(r) for r in originals)):
        assert a.clip_id == b.clip_id and np.array_equal(a.depth, b.depth) and a.frames_jpeg == b.frames_jpeg
    assert _batches(ds, 2)[0]["images"].shape == (1, 8, 56, 84, 3)


def test_the_shard_index_of_a_shard_with_a_damaged_record_is_unchanged(datasets, tmp_path):
    """Damage inside a record's value changes no chunk header: the index still finds every record
    (and the record's checksum is what catches the damage)."""
    ds = _copy(datasets, "unlabeled", tmp_path)
    shard = _shard(ds)
    n = len(_records(shard))
    before = open_shard_index(shard, n)
    _damage(ds, [0])
    after = open_shard_index(shard, n)
    assert np.array_equal(before.starts, after.starts) and np.array_equal(before.sizes, after.sizes)
