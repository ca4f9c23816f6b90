"""ArrayRecord shards: atomic writing, reading, and a reader over a whole dataset directory.

A shard holds encoded records (`flow3r_jax.data.records.encode_record` bytes, one per clip,
opaque to ArrayRecord) with `group_size:1` (one record per chunk: random access reads exactly
one record) and no ArrayRecord compression: JPEG frames and codec flows are compressed already
and the record format zstd-codes its large arrays (ArrayRecord's zstd:3 on a 24-frame 224x224
clip gave the same file size, at 3x the write time). Shard files follow TFDS's naming,

    {name}-train.array_record-{index:05d}-of-{num_shards:05d}

so the directory is also a TFDS dataset (see `tfds_builder`). A shard is written to a temporary
file next to its destination and renamed into place, so a reader (or a resumed run) never sees a
partial shard. Remote destinations (gs://..., via etils.epath) are written locally first and
copied; an object store makes the upload appear at once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid

from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

__all__ = [
    "SHARD_OPTIONS",
    "SPLIT",
    "shard_filename",
    "atomic_write_bytes",
    "write_shard",
    "read_shard",
    "shard_length",
    "ShardedRecords",
    "open_dataset",
]

SHARD_OPTIONS = "group_size:1,uncompressed"
SPLIT = "train"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_READ_OPTIONS = "readahead_buffer_size:0,max_parallelism:0"  # random access


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise ValueError(f"dataset name must be snake_case ([a-z][a-z0-9_]*, a TFDS name), got {name!r}")
    return name


def shard_filename(name: str, index: int, num_shards: int) -> str:
    return f"{check_name(name)}-{SPLIT}.array_record-{index:05d}-of-{num_shards:05d}"


def _is_remote(path: str) -> bool:
    return "://" in str(path)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes `data` to `path` so that the file appears complete or not at all."""
    path = os.fspath(path)
    if _is_remote(path):
        from etils import epath

        epath.Path(path).write_bytes(data)  # object stores publish an object when its upload ends
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_shard(path: str, records, options: str = SHARD_OPTIONS) -> int:
    """Writes the records (an iterable of bytes) as one ArrayRecord file at `path`, atomically.
    Returns the file size in bytes."""
    path = os.fspath(path)
    remote = _is_remote(path)
    tmp_dir = tempfile.mkdtemp(prefix="flow3r_shard_") if remote else None
    tmp = os.path.join(tmp_dir, "shard") if remote else f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        writer = ArrayRecordWriter(tmp, options)
        try:
            for rec in records:
                writer.write(bytes(rec))
        finally:
            writer.close()
        size = os.path.getsize(tmp)
        if remote:
            from etils import epath

            with open(tmp, "rb") as f, epath.Path(path).open("wb") as g:
                shutil.copyfileobj(f, g)
        else:
            os.replace(tmp, path)
        return size
    finally:
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)


def shard_length(path: str) -> int:
    reader = ArrayRecordReader(os.fspath(path), _READ_OPTIONS)
    try:
        return int(reader.num_records())
    finally:
        reader.close()


def read_shard(path: str) -> list[bytes]:
    """Every record of one shard, in order."""
    reader = ArrayRecordReader(os.fspath(path))
    try:
        n = reader.num_records()
        return list(reader.read_all()) if n else []
    finally:
        reader.close()


class ShardedRecords:
    """Random access over the records of a dataset directory (the shards its manifest lists).

    `records[i]` is the decoded record (`decode_record`) or, with `decode=False`, its bytes;
    `len(records)` is the manifest's written count. Shard readers open lazily."""

    def __init__(self, output_dir: str, decode: bool = True):
        self.output_dir = os.fspath(output_dir)
        manifest_path = os.path.join(self.output_dir, "manifest.json")
        if not os.path.isfile(manifest_path):
            raise FileNotFoundError(f"{self.output_dir}: no manifest.json (not a finished dataset directory)")
        with open(manifest_path) as f:
            self.manifest = json.load(f)
        self.decode = decode
        self._files = [os.path.join(self.output_dir, s["file"]) for s in self.manifest["shards"]]
        self._starts = [0]
        for s in self.manifest["shards"]:
            self._starts.append(self._starts[-1] + int(s["records"]))
        self._readers: dict[int, ArrayRecordReader] = {}

    def __len__(self) -> int:
        return self._starts[-1]

    def _locate(self, index: int) -> tuple[int, int]:
        import bisect

        if not -len(self) <= index < len(self):
            raise IndexError(f"record {index} out of range [0, {len(self)})")
        index %= len(self)
        s = bisect.bisect_right(self._starts, index) - 1
        return s, index - self._starts[s]

    def raw(self, index: int) -> bytes:
        s, i = self._locate(index)
        if s not in self._readers:
            self._readers[s] = ArrayRecordReader(self._files[s], _READ_OPTIONS)
        return self._readers[s].read([i])[0]

    def __getitem__(self, index: int):
        data = self.raw(int(index))
        if not self.decode:
            return data
        from flow3r_jax.data.records import decode_record

        return decode_record(data)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def close(self) -> None:
        for r in self._readers.values():
            r.close()
        self._readers.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_dataset(output_dir: str, decode: bool = True) -> ShardedRecords:
    """The records of a finished dataset directory (see `ShardedRecords`)."""
    return ShardedRecords(output_dir, decode=decode)
