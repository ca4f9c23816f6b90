"""Dataset directories written by `data_pipelines` (ArrayRecord shards + `manifest.json`) as
random-access sources of encoded clip records.

The manifest is the contract between writer and reader: its `manifest_version`, the record
`kind` (labeled / unlabeled), `schema_versions` (record schema per kind, container, flow codec)
and the shard list with record counts. `open_source` checks all of it against this library's
versions and that every shard file exists, and raises `DatasetError` naming the directory and
the problem, so a stale or half-copied dataset fails at start-up rather than mid-training.

Records are read with `shard_reader.DirectShardSource` (one kernel copy per record instead of
ArrayRecord's five; identical bytes) when the shards have the layout `data_pipelines` writes,
else with ArrayRecord's reader (`direct=False` forces the latter).

Every record is verified when it is read (`CheckedRecords`): its container's CRC-32 (record
container version 2, `flow3r_jax.data.container`) must match, so a byte damaged anywhere in a
record, or a record cut short, is `CorruptRecordError` naming the dataset, the shard file and the
record's index in that shard, before any of it is decoded. Datasets written before the checksum
existed (container version 1) are read unverified, with a warning at open.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import grain

import numpy as np

from flow3r_jax.data import container, flow_codec, records
from flow3r_jax.data.shard_reader import DirectShardSource, ShardLayoutError

__all__ = ["DatasetError", "CorruptRecordError", "CheckedRecords", "ClipSource", "open_source", "MANIFEST_VERSION"]

MANIFEST_VERSION = 1


class DatasetError(ValueError):
    """A dataset directory cannot be read as a clip dataset; the message names it."""


class CorruptRecordError(DatasetError):
    """A record that cannot be read or fails its checksum; `shard` and `record` (its index in that
    shard) say which."""

    def __init__(self, message: str, shard: str, record: int):
        super().__init__(message)
        self.shard, self.record = shard, record


class CheckedRecords:
    """Random access to the records of a dataset's shards (index -> bytes-like), each verified
    when read (`verify`: the record container's checksum; version-1 records have none)."""

    def __init__(self, dataset: str, records, files: list[str], counts: list[int], verify: bool = True):
        self.dataset, self.records, self.files, self.verify = dataset, records, list(files), verify
        self.offsets = np.cumsum([0] + list(counts))

    def __len__(self) -> int:
        return len(self.records)

    def locate(self, index: int) -> tuple[str, int]:
        """(shard file, index of the record in it) of record `index`."""
        s = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.files[s], int(index) - int(self.offsets[s])

    def __getitem__(self, index: int):
        try:
            data = self.records[index]
        except IndexError:
            raise
        except (OSError, RuntimeError, ValueError) as err:  # a short read, Riegeli's own errors
            shard, k = self.locate(index)
            raise CorruptRecordError(f"dataset {self.dataset}: shard {shard}: record {k} cannot be read: {err}", shard, k) from err
        if self.verify:
            try:
                container.verify_checksum(data)
            except container.ContainerError as err:
                shard, k = self.locate(index)
                raise CorruptRecordError(f"dataset {self.dataset}: shard {shard}: record {k}: {err}", shard, k) from err
        return data

    def __repr__(self) -> str:
        return f"CheckedRecords({self.records!r}, verify={self.verify})"


@dataclasses.dataclass
class ClipSource:
    """Encoded clip records of one dataset directory (index -> bytes)."""

    path: str
    name: str
    kind: str  # "labeled" | "unlabeled"
    manifest: dict
    records: CheckedRecords  # over a grain.sources.ArrayRecordDataSource or a DirectShardSource

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> bytes:
        return self.records[index]


def _fail(path: str, msg: str):
    raise DatasetError(f"dataset {path}: {msg}")


def _num_records(dataset: str, shard: str) -> int:
    from array_record.python.array_record_module import ArrayRecordReader

    try:  # Riegeli's errors do not name the file
        reader = ArrayRecordReader(shard, "readahead_buffer_size:0")
        try:
            return reader.num_records()
        finally:
            reader.close()
    except (OSError, RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        size = os.path.getsize(shard)
        _fail(dataset, f"shard {shard} ({size} bytes) cannot be opened, truncated or not an ArrayRecord file ({first})")


def open_source(path: str, direct: bool = True) -> ClipSource:
    manifest_path = os.path.join(path, "manifest.json")
    if not os.path.isdir(path):
        _fail(path, "no such directory")
    if not os.path.exists(manifest_path):
        _fail(path, "no manifest.json (not a data_pipelines output directory, or the run did not finish)")
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
    except json.JSONDecodeError as err:
        _fail(path, f"manifest.json is not valid JSON ({err})")
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        _fail(path, f"manifest version {manifest.get('manifest_version')!r}, this reader supports {MANIFEST_VERSION}")
    kind = manifest.get("kind")
    if kind not in records.SCHEMA_VERSION:
        _fail(path, f"unknown record kind {kind!r}")
    versions = manifest.get("schema_versions", {})
    want = {  # the versions this reader reads
        "record_schema": (records.SCHEMA_VERSION[kind],),
        "record_container": container.READABLE_VERSIONS,
        "flow_codec": flow_codec.READABLE_VERSIONS,
    }
    have = {
        "record_schema": versions.get("record_schema", {}).get(kind),
        "record_container": versions.get("record_container"),
        "flow_codec": versions.get("flow_codec"),
    }
    stale = {k: (have[k], want[k]) for k in want if have[k] not in want[k]}
    if stale:
        _fail(
            path,
            "schema version mismatch (dataset, reader): "
            + ", ".join(f"{k} {a} vs {' or '.join(map(str, b))}" for k, (a, b) in stale.items())
            + "; rewrite the dataset with this version of data_pipelines",
        )
    shards = manifest.get("shards") or []
    files = [os.path.join(path, s["file"]) for s in shards if s.get("records", 0) > 0]
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        _fail(path, f"missing shard file(s): {missing[:5]}")
    if not files:
        _fail(path, "contains no records")
    counts = [_num_records(path, f) for f in files]
    expected = sum(s["records"] for s in shards)
    if sum(counts) != expected:
        _fail(path, f"shards hold {sum(counts)} records, the manifest says {expected} (truncated or replaced shard?)")
    source = None
    if direct:
        try:
            source = DirectShardSource(files, counts)
        except ShardLayoutError as err:
            logging.getLogger(__name__).warning("dataset %s: reading with ArrayRecord's reader (%s)", path, err)
    if source is None:
        source = grain.sources.ArrayRecordDataSource(files)
    verified = have["record_container"] >= 2
    if not verified:
        logging.getLogger(__name__).warning(
            "dataset %s: written with record container version %s, which has no checksums: its records are not verified "
            "(rewrite it with this version of data_pipelines to verify every record)", path, have["record_container"],
        )
    checked = CheckedRecords(path, source, files, counts, verify=verified)
    return ClipSource(path, manifest.get("name", os.path.basename(path)), kind, manifest, checked)
