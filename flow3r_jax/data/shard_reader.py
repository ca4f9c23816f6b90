"""A direct random-access reader for the ArrayRecord shards `data_pipelines` writes.

Why: ArrayRecord's reader returns a record after copying it about five times (Riegeli's block
reassembly, chunk decoding, string appends, the Python bytes object); for the multi-MB clip
records of this project that cost ~3 ms per sample, an eighth of the whole input pipeline.
Our shards are written with "group_size:1,uncompressed" (`data_pipelines.shards`), so every
record is the plain value section of one Riegeli simple chunk: this reader finds those byte
ranges once per shard and then reads a record with one `preadv` straight into a fresh buffer
(one copy, by the kernel), stepping over the 24-byte Riegeli block headers that interrupt it
every 64 KiB.

Layout used (Riegeli/records file format specification, google/riegeli
doc/riegeli_records_file_format.md): 64 KiB blocks, each starting with a 24-byte block header;
chunks of a 40-byte header (header hash, data size, data hash, chunk type (1 byte) + record
count (7 bytes), decoded data size; little-endian) followed by the data and padding up to
max(AddWithOverhead(begin, 40 + data_size), RoundUpToPossibleChunkBoundary(begin + records)).
A simple chunk ('r') holds: compression type (0 = none), varint64 size of the sizes section,
the record sizes as varint64s, then the record values. ArrayRecord writes one such chunk per
record group, then footer chunks after the data; the first `num_records` single-record chunks
are the records in order.

What it checks: every data chunk is a simple, uncompressed, single-record chunk whose sizes
agree with its header, and the walk ends inside the file; anything else (another writer's
options, a truncated file) makes `open_shard_index` raise `ShardLayoutError`, and the caller
falls back to ArrayRecord's own reader. What it does not check: Riegeli's HighwayHash of each
chunk (no Python implementation ships here). The payloads keep their own integrity checks: each
flow blob carries a CRC-32, JPEG and zstd decoders reject damaged data, and the record
container validates every length and shape; `verify_against_arrayrecord` compares a shard byte
for byte with the official reader (used by the tests and available for audits).
"""

from __future__ import annotations

import os
import struct

import numpy as np

__all__ = ["ShardLayoutError", "ShardIndex", "open_shard_index", "DirectShardSource", "verify_against_arrayrecord"]

BLOCK = 1 << 16
BLOCK_HEADER = 24
USABLE = BLOCK - BLOCK_HEADER
CHUNK_HEADER = 40
_HEADER = struct.Struct("<QQQQQ")  # header hash, data size, data hash, type | records << 8, decoded size
_IOV_MAX = 1000  # stay under the kernel's IOV_MAX (1024) per preadv call


class ShardLayoutError(ValueError):
    """The shard is not laid out as one uncompressed record per simple chunk."""


def _overhead_blocks(pos: int, size: int) -> int:
    return (size + (pos + USABLE - 1) % BLOCK) // USABLE


def _add_with_overhead(pos: int, size: int) -> int:
    return pos + size + _overhead_blocks(pos, size) * BLOCK_HEADER


def _round_up_to_chunk_boundary(pos: int) -> int:
    remaining = BLOCK - 1 - (pos + BLOCK - 1) % BLOCK
    return pos + max(0, remaining - (USABLE - 1))


def _read_logical(fd: int, pos: int, size: int) -> bytes:
    """`size` payload bytes starting at file position `pos`, block headers stepped over."""
    out = bytearray()
    while len(out) < size:
        if pos % BLOCK == 0:
            pos += BLOCK_HEADER
        n = min(size - len(out), BLOCK - pos % BLOCK)
        piece = os.pread(fd, n, pos)
        if len(piece) != n:
            raise ShardLayoutError(f"unexpected end of file at byte {pos + len(piece)}")
        out += piece
        pos += n
    return bytes(out)


def _varint(buf: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(buf) or shift > 63:
            raise ShardLayoutError("bad varint in a chunk")
        b = buf[at]
        value |= (b & 0x7F) << shift
        at += 1
        if b < 0x80:
            return value, at
        shift += 7


class ShardIndex:
    """File positions of the records of one shard: record k is `sizes[k]` payload bytes
    starting at file position `starts[k]` (block headers inside the range are not payload)."""

    def __init__(self, path: str, starts: np.ndarray, sizes: np.ndarray):
        self.path, self.starts, self.sizes = path, starts, sizes

    def __len__(self) -> int:
        return len(self.starts)

    def read(self, fd: int, k: int) -> bytearray:
        """Record k as a fresh bytearray, read with preadv (block headers go to a scratch buffer)."""
        pos, size = int(self.starts[k]), int(self.sizes[k])
        out = bytearray(size)
        view = memoryview(out)
        junk = bytearray(BLOCK_HEADER)
        iov, done, file_pos, batch_start = [], 0, pos, pos
        while done < size:
            if file_pos % BLOCK == 0:
                iov.append(junk)
                file_pos += BLOCK_HEADER
            n = min(size - done, BLOCK - file_pos % BLOCK)
            iov.append(view[done : done + n])
            done += n
            file_pos += n
            if len(iov) >= _IOV_MAX or done == size:
                want = sum(len(v) for v in iov)
                got = os.preadv(fd, iov, batch_start)
                if got != want:
                    raise OSError(f"{self.path}: short read of record {k} ({got} of {want} bytes at {batch_start})")
                iov, batch_start = [], file_pos
        return out


def open_shard_index(path: str, num_records: int) -> ShardIndex:
    """Walks the chunk headers of an ArrayRecord shard written with "group_size:1,uncompressed"
    and returns where its first `num_records` records lie; raises `ShardLayoutError` otherwise."""
    path = os.fspath(path)
    starts = np.empty(num_records, np.int64)
    sizes = np.empty(num_records, np.int64)
    fd = os.open(path, os.O_RDONLY)
    try:
        file_size = os.fstat(fd).st_size
        pos, k = 0, 0
        while k < num_records:
            if pos + BLOCK_HEADER + CHUNK_HEADER > file_size:
                raise ShardLayoutError(f"{path}: the chunks end after {k} of {num_records} records (truncated?)")
            _, data_size, _, type_records, decoded = _HEADER.unpack(_read_logical(fd, pos, CHUNK_HEADER))
            chunk_type, records = type_records & 0xFF, type_records >> 8
            data_begin = _add_with_overhead(pos, CHUNK_HEADER)
            end = max(_add_with_overhead(pos, CHUNK_HEADER + data_size), _round_up_to_chunk_boundary(pos + records))
            if end > file_size:
                raise ShardLayoutError(f"{path}: chunk at byte {pos} runs past the end of the file (truncated?)")
            if chunk_type == ord("r") and records > 0:
                if records != 1:
                    raise ShardLayoutError(f"{path}: chunk at byte {pos} holds {records} records (group_size is not 1)")
                # Compression byte, varint size of the sizes section, the sizes (one varint).
                head = _read_logical(fd, data_begin, min(data_size, 1 + 10 + 10))
                if head[0] != 0:
                    raise ShardLayoutError(f"{path}: chunk at byte {pos} is compressed (type {head[0]:#x}); not an 'uncompressed' shard")
                sizes_size, at = _varint(head, 1)
                size, after = _varint(head, at)
                if after - at != sizes_size or size != decoded or at + sizes_size + size != data_size:
                    raise ShardLayoutError(f"{path}: chunk at byte {pos} has inconsistent sizes")
                offset = at + sizes_size  # payload bytes before the value
                starts[k] = _add_with_overhead(data_begin, offset)  # past a block header it lands on
                sizes[k] = size
                k += 1
            elif chunk_type not in (ord("s"), ord("m"), ord("p")):
                raise ShardLayoutError(f"{path}: unexpected chunk type {chunk_type:#x} at byte {pos}")
            pos = end
    finally:
        os.close(fd)
    return ShardIndex(path, starts, sizes)


class DirectShardSource:
    """Random access over the records of several shards (index -> bytearray), read with
    `ShardIndex.read`. Picklable: file descriptors are opened lazily in each process."""

    def __init__(self, paths: list[str], counts: list[int]):
        self.paths = [os.fspath(p) for p in paths]
        self.indexes = [open_shard_index(p, n) for p, n in zip(self.paths, counts)]
        self.offsets = np.cumsum([0] + [len(i) for i in self.indexes])
        self._fds: dict[int, int] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _fd(self, s: int) -> int:
        if self._pid != os.getpid():  # forked: the parent's descriptors share file offsets; reopen
            self._fds, self._pid = {}, os.getpid()
        fd = self._fds.get(s)
        if fd is None:  # two threads may race here: keep the first descriptor, close the other
            fresh = os.open(self.paths[s], os.O_RDONLY)
            fd = self._fds.setdefault(s, fresh)
            if fd != fresh:
                os.close(fresh)
        return fd

    def __getitem__(self, index: int) -> bytearray:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} out of range [0, {len(self)})")
        s = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.indexes[s].read(self._fd(s), index - int(self.offsets[s]))

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fds"] = {}
        return state

    def __del__(self):
        for fd in getattr(self, "_fds", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass

    def __repr__(self) -> str:
        return f"DirectShardSource({len(self.paths)} shards, {len(self)} records)"


def verify_against_arrayrecord(path: str) -> int:
    """Reads every record of a shard with this reader and with ArrayRecord's, raises
    `ShardLayoutError` on the first difference; returns the record count."""
    from array_record.python.array_record_module import ArrayRecordReader

    reader = ArrayRecordReader(os.fspath(path), "readahead_buffer_size:0")
    try:
        n = reader.num_records()
        src = DirectShardSource([path], [n])
        for k in range(n):
            if bytes(src[k]) != reader.read([k])[0]:
                raise ShardLayoutError(f"{path}: record {k} differs from ArrayRecord's reader")
    finally:
        reader.close()
    return n
