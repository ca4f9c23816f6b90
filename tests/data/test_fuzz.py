"""Fuzzing the readers of stored data with random truncations and byte flips (hypothesis): the
record container, the flow codec's decoder, and a dataset's shards read through the shard index.
The only allowed outcomes are the correct value or the documented error: never another
exception, a crash, a hang (each example runs under an alarm) or a silently wrong value."""

import contextlib
import json
import os
import signal

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordWriter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flow3r_jax.data import container, flow_codec, records
from flow3r_jax.data.sources import DatasetError, open_source

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@contextlib.contextmanager
def _no_hang(seconds=10):
    def stop(*_):
        raise AssertionError(f"no answer within {seconds} s (a hang)")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# A mutation: byte flips (position as a fraction of the length, xor mask) and an optional cut.
MUTATION = st.tuples(
    st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), max_size=3),
    st.one_of(st.none(), st.floats(0, 1, exclude_max=True)),
)


def _mutate(data: bytes, mutation) -> bytes:
    flips, cut = mutation
    out = bytearray(data)
    for where, mask in flips:
        out[int(where * len(out))] ^= mask
    if cut is not None:
        del out[int(cut * len(out)) :]
    return bytes(out)


def _record(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    fields = [
        ("s", container.encode_value(container.FieldType.STR, "clip-%d" % seed)),
        ("i", container.encode_value(container.FieldType.INT, int(rng.integers(-(2**40), 2**40)))),
        ("b", container.encode_value(container.FieldType.BLOBS, [rng.bytes(int(n)) for n in rng.integers(0, 300, 3)])),
        ("d", container.encode_value(container.FieldType.DICT, {"k": int(seed)})),
        ("f", container.encode_value(container.FieldType.ARRAY, rng.random((9, 7)).astype(np.float32), container.ArrayEncoding.SHUFFLED_ZSTD)),
        ("m", container.encode_value(container.FieldType.ARRAY, rng.random((40, 33)) < 0.3, container.ArrayEncoding.BITS_ZSTD)),
        ("r", container.encode_value(container.FieldType.ARRAY, rng.integers(-5, 5, (4, 5)).astype(np.int32))),
    ]
    return container.pack_record(3, 1, fields)


def _same(a: container.UnpackedRecord, b: container.UnpackedRecord) -> bool:
    if (a.kind_tag, a.schema_version, list(a.fields)) != (b.kind_tag, b.schema_version, list(b.fields)):
        return False
    for (ta, va), (tb, vb) in zip(a.fields.values(), b.fields.values()):
        if ta != tb or (not np.array_equal(va, vb) if isinstance(va, np.ndarray) else va != vb):
            return False
    return True


@FUZZ
@given(seed=st.integers(0, 2**16), mutation=MUTATION)
def test_container(seed, mutation):
    data = _record(seed)
    bad = _mutate(data, mutation)
    want = container.unpack_record(data)
    with _no_hang():
        try:
            got = container.unpack_record(bad)
        except container.ContainerError:
            return
    assert bad == data and _same(got, want), "a damaged record was decoded"


@FUZZ
@given(seed=st.integers(0, 2**16), mutation=MUTATION)
def test_flow_codec(seed, mutation):
    rng = np.random.default_rng(seed)
    H, W = int(rng.integers(1, 24)), int(rng.integers(1, 24))
    flow = (np.cumsum(rng.normal(0, 2, (H, W, 2)), axis=1) + rng.normal(0, 40, (H, W, 2)) * (rng.random((H, W, 1)) < 0.05)).astype(np.float32)
    mask = rng.random((H, W)) < 0.8
    data = flow_codec.encode_flow(flow, mask)
    want_flow, want_mask = flow_codec.decode_flow(data)
    bad = _mutate(data, mutation)
    with _no_hang():
        try:
            got_flow, got_mask = flow_codec.decode_flow(bad)
        except flow_codec.FlowCodecError:
            return
    assert np.array_equal(got_flow, want_flow) and np.array_equal(got_mask, want_mask), "a damaged flow was decoded"


@pytest.fixture(scope="module")
def shard_dataset(tmp_path_factory):
    """A dataset directory (manifest + one shard written as data_pipelines writes them) of 12
    container records of 0.1-150 KB, so records cross 64 KiB Riegeli blocks."""
    root = tmp_path_factory.mktemp("fuzz_ds")
    recs = []
    for k in range(12):
        rng = np.random.default_rng(k)
        size = int(rng.integers(100, 150_000))
        recs.append(container.pack_record(1, 1, [("x", container.encode_value(container.FieldType.BLOBS, [rng.bytes(size)]))]))
    shard = root / "shard-00000-of-00001.array_record"
    w = ArrayRecordWriter(str(shard), "group_size:1,uncompressed")
    for r in recs:
        w.write(r)
    w.close()
    manifest = {
        "manifest_version": 1,
        "kind": "unlabeled",
        "name": "fuzz",
        "schema_versions": {"record_schema": {"unlabeled": records.SCHEMA_VERSION["unlabeled"]}, "record_container": 2, "flow_codec": 2},
        "shards": [{"file": shard.name, "records": len(recs)}],
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root, shard.read_bytes(), recs


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(mutation=MUTATION, direct=st.booleans())
def test_shards_through_the_index(shard_dataset, mutation, direct, tmp_path_factory):
    root, original, recs = shard_dataset
    ds = tmp_path_factory.mktemp("mutated")
    (ds / "manifest.json").write_text((root / "manifest.json").read_text())
    shard = ds / "shard-00000-of-00001.array_record"
    shard.write_bytes(_mutate(original, mutation))
    with _no_hang(30):
        try:
            src = open_source(str(ds), direct=direct)
        except DatasetError:
            return
        for k in range(len(recs)):
            try:
                got = bytes(src[k])
            except DatasetError:  # CorruptRecordError names the shard and the record
                continue
            assert got == recs[k], f"record {k} of a damaged shard was returned with wrong bytes"
