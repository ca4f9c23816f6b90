"""The F3RC binary container: a prefix, then named and typed fields (schema-agnostic).

A container holds one record of some kind, identified by a kind tag and the schema version of
that kind; the fields carry their own names and type codes, so a reader can parse any record
without knowing its schema. What the kinds, fields and schema versions mean is up to the caller
(`flow3r_jax.data.records` defines the clip records written with this container).

Byte layout (container version 2, little-endian)
------------------------------------------------
    offset  size  field
    0       4     magic b"F3RC"
    4       1     container version = 2 (1: the same without the checksum; still read)
    5       1     kind tag (u8, the caller's)
    6       2     schema version of that kind (u16, the caller's)
    8       2     N, number of fields (u16)
    10      ...   N fields, in the writer's order, each:
                    u8 L, L bytes ASCII field name
                    u8 type, then its payload:
                      0 NONE   (nothing; an absent optional field)
                      1 STR    u32 n, n bytes UTF-8
                      2 INT    i64
                      3 BOOL   u8 0 | 1 (a reader takes any non-zero byte as true)
                      4 BLOBS  u32 count, count x u32 lengths, the blobs back to back
                      5 ARRAY  u8 dtype (1 bool, 2 uint8, 3 int32, 4 float32), u8 encoding,
                               u8 ndim, ndim x u32 dims, u32 n, n bytes data; encodings:
                                 0 raw: C-order little-endian element bytes
                                 1 shuffled zstd: one zstd frame of the byte planes (byte 0
                                   of every element, then byte 1, ...; lossless)
                                 2 bits zstd (bool only): one zstd frame of numpy.packbits
                                   of the C-order flattened array
                               An empty array is always stored raw, whatever encoding is asked.
                      6 DICT   u32 n, n bytes UTF-8 JSON object (keys sorted, no NaN / Inf)
    then (version 2) u32 CRC-32 (zlib / IEEE 802.3 polynomial) of every byte before it, from
    the magic to the end of field N. Nothing follows: trailing bytes are an error.
zstd frames are written at level 3 (`ZSTD_LEVEL`) with pyarrow's zstd codec.

The checksum makes a record verifiable end to end (frames, depth, flow, header alike): readers
check it before parsing, so a flipped byte or a truncation anywhere is `ChecksumError`, never a
silently wrong value. Why CRC-32: it is in the standard library (`zlib.crc32`, ~2.4 GB/s per
core here, about 1 ms for a 2 MB clip record), it detects every error burst up to 32 bits and
every odd number of flipped bits, and the flow codec already uses it; the errors it guards
against are storage and transfer faults, not tampering. Version-1 records (no checksum) are
read as before, unverified (`Prefix.container_version` says which).

API
---
Writing is two steps, so that large blobs are copied once, when the record is joined:

    encode_value(value_type: FieldType, value, encoding=ArrayEncoding.RAW) -> list[bytes]
        One field's type code and payload, as chunks whose concatenation is the encoding.
        `value` None encodes NONE whatever `value_type` is. Values by type: STR str, INT an
        integer in the i64 range, BOOL bool / numpy.bool_, BLOBS a list / tuple of bytes-like
        objects, ARRAY a numpy array of bool, uint8, int32 or float32 (any byte order; `encoding`
        applies to arrays only, BITS_ZSTD to bool arrays only), DICT a JSON-serialisable dict.
    pack_record(kind_tag, schema_version, fields: Iterable[(name, encoded)], container_version=2) -> bytes
        The container of the (name, encode_value(...) output) pairs, in that order. `encoded`
        may also be one bytes-like object. `container_version=1` writes the old layout (tests of
        old datasets).

Reading:

    read_prefix(data) -> Prefix(kind_tag, schema_version, field_count, container_version)
        Checks length, magic and container version only; cheap.
    verify_checksum(data) -> bool
        Checks a version-2 record's CRC-32 (raises `ChecksumError`); False for version 1
        (nothing to check).
    iter_fields(data, check=None, blob_views=False, verify=True) -> iterator of (name, FieldType, value)
        Verifies the checksum (unless `verify=False`: the caller already did), then parses the
        fields in stored order. `check(name, type_code: int)`, if given, is called
        for each field before its payload is decoded (the type code is not yet validated), so
        that a caller can reject an unknown field or an unexpected type without decoding a
        large payload; whatever it raises propagates unchanged. Decoded values: NONE None,
        STR str, INT int, BOOL bool, BLOBS list of bytes, ARRAY a native-order numpy array,
        DICT dict. The trailing-bytes check runs after the last field is yielded.
    unpack_record(data) -> UnpackedRecord(kind_tag, schema_version, fields)
        All of it: `fields` maps each name to (FieldType, value), in stored order; a name
        stored twice is an error.

`data` is bytes or any C-contiguous buffer (bytearray, memoryview, ...). Every malformed input
raises `ContainerError` (a ValueError; `NotAContainerError` when the magic is wrong,
`ChecksumError` when the CRC-32 does not match), whose
message names the field being read, and whose `field` attribute is that name (None outside
the fields).
"""

from __future__ import annotations

import enum
import json
import math
import numbers
import struct
import zlib
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import cv2
import numpy as np
import pyarrow

__all__ = [
    "MAGIC",
    "CONTAINER_VERSION",
    "ZSTD_LEVEL",
    "ContainerError",
    "NotAContainerError",
    "ChecksumError",
    "READABLE_VERSIONS",
    "FieldType",
    "ArrayEncoding",
    "ARRAY_DTYPES",
    "Prefix",
    "UnpackedRecord",
    "encode_value",
    "pack_record",
    "read_prefix",
    "verify_checksum",
    "iter_fields",
    "unpack_record",
]

MAGIC = b"F3RC"
CONTAINER_VERSION = 2
READABLE_VERSIONS = (1, 2)
_CRC = struct.Struct("<I")
ZSTD_LEVEL = 3


class ContainerError(ValueError):
    """Data that is not a well-formed container, or a value the container cannot hold."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class NotAContainerError(ContainerError):
    """Data that does not start with the container magic; `magic` holds its first 4 bytes."""

    def __init__(self, message: str, magic: bytes):
        super().__init__(message)
        self.magic = magic


class ChecksumError(ContainerError):
    """A version-2 record whose bytes do not match its CRC-32 (corrupted or truncated)."""


class FieldType(enum.IntEnum):
    NONE = 0
    STR = 1
    INT = 2
    BOOL = 3
    BLOBS = 4
    ARRAY = 5
    DICT = 6


class ArrayEncoding(enum.IntEnum):
    RAW = 0
    SHUFFLED_ZSTD = 1
    BITS_ZSTD = 2


ARRAY_DTYPES = {np.dtype(np.bool_): 1, np.dtype(np.uint8): 2, np.dtype(np.int32): 3, np.dtype(np.float32): 4}
"""numpy dtype -> its ARRAY dtype code."""

_CODE_DTYPE = {code: dt for dt, code in ARRAY_DTYPES.items()}
_PREFIX = struct.Struct("<4sBBHH")
_BOOL = np.dtype(np.bool_)


class Prefix(NamedTuple):
    kind_tag: int
    schema_version: int
    field_count: int
    container_version: int = CONTAINER_VERSION


class UnpackedRecord(NamedTuple):
    kind_tag: int
    schema_version: int
    fields: dict[str, tuple[FieldType, Any]]


_zstd_codec = None


def _zstd() -> pyarrow.Codec:
    global _zstd_codec
    if _zstd_codec is None:
        _zstd_codec = pyarrow.Codec("zstd", compression_level=ZSTD_LEVEL)
    return _zstd_codec


# ----------------------------------------------------------------------------------------------
# Writing


def encode_value(value_type: FieldType, value, encoding: ArrayEncoding = ArrayEncoding.RAW) -> list[bytes]:
    """One field's type code + payload as chunks to concatenate (see the module docstring)."""
    v = value
    if v is None:
        return [bytes([FieldType.NONE])]
    try:
        t = FieldType(value_type)
    except ValueError:
        raise ContainerError(f"unknown field type {value_type!r}") from None

    def bad(what: str):
        raise ContainerError(f"{t.name} value must be {what}, got {type(v).__name__}")

    if t == FieldType.NONE:
        bad("None")
    if t == FieldType.STR:
        if not isinstance(v, str):
            bad("a str")
        b = v.encode("utf-8")
        return [struct.pack("<BI", t, len(b)), b]
    if t == FieldType.INT:
        if not isinstance(v, numbers.Integral) or isinstance(v, (bool, np.bool_)):
            bad("an int")
        if not -(2**63) <= int(v) < 2**63:
            raise ContainerError(f"INT value {v} is out of the i64 range")
        return [struct.pack("<Bq", t, int(v))]
    if t == FieldType.BOOL:
        if not isinstance(v, (bool, np.bool_)):
            bad("a bool")
        return [struct.pack("<BB", t, int(bool(v)))]
    if t == FieldType.DICT:
        if not isinstance(v, dict):
            bad("a dict")
        try:
            b = json.dumps(v, allow_nan=False, sort_keys=True).encode("utf-8")
        except (TypeError, ValueError) as err:
            raise ContainerError(f"DICT value is not JSON-serialisable: {err}") from err
        return [struct.pack("<BI", t, len(b)), b]
    if t == FieldType.BLOBS:
        if not isinstance(v, (list, tuple)) or not all(isinstance(b, (bytes, bytearray, memoryview)) for b in v):
            bad("a list of bytes")
        blobs = [bytes(b) for b in v]
        if any(len(b) >= 2**32 for b in blobs):
            raise ContainerError("BLOBS value has a blob of 4 GiB or more")
        lengths = np.array([len(b) for b in blobs], "<u4")
        return [struct.pack("<BI", t, len(blobs)), lengths.tobytes(), *blobs]
    if not isinstance(v, np.ndarray):
        bad("a numpy array")
    return _encode_array(v, encoding)


def _encode_array(a: np.ndarray, encoding: ArrayEncoding) -> list[bytes]:
    code = ARRAY_DTYPES.get(a.dtype.newbyteorder("="))
    if code is None:
        raise ContainerError(f"ARRAY dtype {a.dtype} is not one of {[str(d) for d in ARRAY_DTYPES]}")
    try:
        encoding = ArrayEncoding(encoding)
    except ValueError:
        raise ContainerError(f"unknown array encoding {encoding!r}") from None
    if encoding == ArrayEncoding.BITS_ZSTD and a.dtype != _BOOL:
        raise ContainerError(f"the BITS_ZSTD encoding needs a bool array, got {a.dtype}")
    if a.ndim > 255 or any(n >= 2**32 for n in a.shape):
        raise ContainerError(f"ARRAY shape {a.shape} does not fit the layout (ndim <= 255, dims < 2**32)")
    a = np.ascontiguousarray(a).reshape(a.shape)  # ascontiguousarray makes 0-d arrays 1-d
    if a.size == 0:
        encoding = ArrayEncoding.RAW
    le = a.astype(a.dtype.newbyteorder("<"), copy=False)
    if encoding == ArrayEncoding.RAW:
        data = le.tobytes()
    elif encoding == ArrayEncoding.SHUFFLED_ZSTD:
        planes = le.reshape(-1).view(np.uint8).reshape(-1, a.itemsize).T
        data = _zstd().compress(np.ascontiguousarray(planes).tobytes(), asbytes=True)
    else:
        data = _zstd().compress(np.packbits(a.reshape(-1)).tobytes(), asbytes=True)
    if len(data) >= 2**32:
        raise ContainerError(f"ARRAY data of {len(data)} bytes does not fit a u32 length")
    head = struct.pack(f"<BBBB{a.ndim}I", FieldType.ARRAY, code, encoding, a.ndim, *a.shape)
    return [head, struct.pack("<I", len(data)), data]


def pack_record(
    kind_tag: int, schema_version: int, fields: Iterable[tuple[str, Sequence[bytes] | bytes]], container_version: int = CONTAINER_VERSION
) -> bytes:
    """The container of (name, encoded value) pairs (see the module docstring)."""
    fields = list(fields)
    if container_version not in READABLE_VERSIONS:
        raise ContainerError(f"container version {container_version}: this writer knows {READABLE_VERSIONS}")
    if not 0 <= kind_tag < 256 or not 0 <= schema_version < 2**16 or len(fields) >= 2**16:
        raise ContainerError(
            f"kind tag {kind_tag} (u8), schema version {schema_version} (u16) or field count {len(fields)} (u16) out of range"
        )
    parts = [_PREFIX.pack(MAGIC, container_version, kind_tag, schema_version, len(fields))]
    for name, encoded in fields:
        try:
            b = name.encode("ascii")
        except UnicodeEncodeError:
            raise ContainerError(f"field name {name!r} is not ASCII", field=name) from None
        if len(b) > 255:
            raise ContainerError(f"field name {name!r} is longer than 255 bytes", field=name)
        parts.append(bytes([len(b)]) + b)
        if isinstance(encoded, (bytes, bytearray, memoryview)):
            parts.append(encoded)
        else:
            parts.extend(encoded)
    if container_version >= 2:
        crc = 0
        for part in parts:  # incrementally: the large blobs are not joined twice
            crc = zlib.crc32(part, crc)
        parts.append(_CRC.pack(crc))
    return b"".join(parts)


# ----------------------------------------------------------------------------------------------
# Reading


def _as_view(data) -> memoryview:
    return memoryview(data) if isinstance(data, bytes) else memoryview(data).cast("B")


def read_prefix(data) -> Prefix:
    """The prefix of a container; checks its length, magic and container version."""
    view = _as_view(data)
    if len(view) < _PREFIX.size:
        raise ContainerError(f"truncated record: {len(view)} bytes")
    magic, container, tag, schema_version, n_fields = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise NotAContainerError(f"not an F3RC container (magic {magic!r}, expected {MAGIC!r})", magic)
    if container not in READABLE_VERSIONS:
        raise ContainerError(f"container version {container}, this reader knows versions {READABLE_VERSIONS}")
    if container >= 2 and len(view) < _PREFIX.size + _CRC.size:
        raise ChecksumError(f"truncated record: {len(view)} bytes")
    return Prefix(tag, schema_version, n_fields, container)


def verify_checksum(data) -> bool:
    """Checks a version-2 record's CRC-32 (`ChecksumError` if it does not match); returns False
    for a version-1 record, which has none."""
    view = _as_view(data)
    if read_prefix(view).container_version < 2:
        return False
    body = len(view) - _CRC.size
    (stored,) = _CRC.unpack_from(view, body)
    computed = zlib.crc32(view[:body])
    if computed != stored:
        raise ChecksumError(f"checksum mismatch (stored CRC-32 {stored:#010x}, computed {computed:#010x} over {body} bytes): the record is corrupt or truncated")
    return True


def iter_fields(
    data, check: Callable[[str, int], None] | None = None, blob_views: bool = False, verify: bool = True
) -> Iterator[tuple[str, FieldType, Any]]:
    """(name, type, value) of every field in stored order (see the module docstring).
    `blob_views=True` gives BLOBS entries as read-only memoryviews into `data` (no copies; they
    keep `data` alive and cannot be pickled) instead of bytes. `verify=False` skips the checksum
    (for a caller that has just verified it)."""
    view = _as_view(data)
    src = data if isinstance(data, bytes) else bytes(view)
    prefix = read_prefix(view)
    if verify:
        verify_checksum(view)
    if prefix.container_version >= 2:
        view = view[: len(view) - _CRC.size]  # parse the fields only
    n_fields = prefix.field_count
    off = _PREFIX.size
    name = "<header>"
    for _ in range(n_fields):
        try:
            length = view[off]
            name = bytes(view[off + 1 : off + 1 + length]).decode("ascii")
            off += 1 + length
            t = view[off]
            off += 1
        except (IndexError, UnicodeDecodeError) as err:
            raise ContainerError(f"corrupt or truncated record near field {name!r}: {err}", field=name) from err
        if check is not None:
            check(name, t)
        try:
            if t not in FieldType._value2member_map_:
                raise ContainerError(f"field {name!r}: unknown type code {t}", field=name)
            value, off = _decode_value(FieldType(t), view, src, off, name, blob_views)
        except ContainerError:
            raise
        except (struct.error, IndexError, ValueError, UnicodeDecodeError) as err:
            raise ContainerError(f"corrupt or truncated record near field {name!r}: {err}", field=name) from err
        yield name, FieldType(t), value
    if off != len(view):
        raise ContainerError(f"{len(view) - off} trailing bytes after the last field")


def unpack_record(data, verify: bool = True) -> UnpackedRecord:
    """The whole container: its kind tag, schema version and {name: (type, value)}."""
    prefix = read_prefix(data)
    fields: dict[str, tuple[FieldType, Any]] = {}
    for name, t, value in iter_fields(data, verify=verify):
        if name in fields:
            raise ContainerError(f"field {name!r}: stored twice", field=name)
        fields[name] = (t, value)
    return UnpackedRecord(prefix.kind_tag, prefix.schema_version, fields)


def _decode_value(t: FieldType, view: memoryview, src: bytes, off: int, name: str, blob_views: bool = False) -> tuple[Any, int]:
    """The value of type `t` whose payload starts at `off`, and the offset after it."""

    def fail(msg: str):
        raise ContainerError(f"field {name!r}: {msg}", field=name)

    if t == FieldType.NONE:
        return None, off
    if t in (FieldType.STR, FieldType.DICT):
        (n,) = struct.unpack_from("<I", view, off)
        if off + 4 + n > len(view):
            fail("truncated")
        text = bytes(view[off + 4 : off + 4 + n]).decode("utf-8")
        value = text if t == FieldType.STR else json.loads(text)
        if t == FieldType.DICT and not isinstance(value, dict):
            fail(f"DICT value is a JSON {type(value).__name__}, not an object")
        return value, off + 4 + n
    if t == FieldType.INT:
        (value,) = struct.unpack_from("<q", view, off)
        return value, off + 8
    if t == FieldType.BOOL:
        return bool(view[off]), off + 1
    if t == FieldType.BLOBS:
        (count,) = struct.unpack_from("<I", view, off)
        lengths = np.frombuffer(view, "<u4", count, off + 4).astype(np.int64)
        start = off + 4 + 4 * count
        ends = start + np.cumsum(lengths)
        if count and ends[-1] > len(view):
            fail("truncated blobs")
        store = view.toreadonly() if blob_views else src
        blobs = [store[a:b] for a, b in zip((start, *ends[:-1].tolist()), ends.tolist())]
        return blobs, int(ends[-1]) if count else start
    return _decode_array(view, off, fail)


def _decode_array(view: memoryview, off: int, fail) -> tuple[np.ndarray, int]:
    code, encoding, ndim = struct.unpack_from("<BBB", view, off)
    off += 3
    shape = struct.unpack_from(f"<{ndim}I", view, off)
    off += 4 * ndim
    (n,) = struct.unpack_from("<I", view, off)
    off += 4
    if code not in _CODE_DTYPE or encoding not in ArrayEncoding._value2member_map_:
        fail(f"unknown array dtype code {code} or encoding {encoding}")
    if off + n > len(view):
        fail("truncated array data")
    dtype = _CODE_DTYPE[code]
    count = math.prod(shape)
    data = view[off : off + n]
    try:
        if encoding == ArrayEncoding.RAW:
            if n != count * dtype.itemsize:
                fail(f"raw array of shape {shape} needs {count * dtype.itemsize} bytes, has {n}")
            arr = np.frombuffer(data, dtype.newbyteorder("<"), count).astype(dtype).reshape(shape)
        elif encoding == ArrayEncoding.SHUFFLED_ZSTD:
            raw = _zstd().decompress(data, decompressed_size=count * dtype.itemsize)
            planes = np.frombuffer(raw, np.uint8).reshape(dtype.itemsize, count, 1)
            merged = cv2.merge(list(planes)) if dtype.itemsize > 1 else planes[0].copy()
            arr = merged.reshape(-1).view(dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(shape)
        else:
            if dtype != _BOOL:
                fail(f"bit-packed array of dtype {dtype}")
            raw = _zstd().decompress(data, decompressed_size=(count + 7) // 8)
            arr = np.unpackbits(np.frombuffer(raw, np.uint8), count=count).view(np.bool_).reshape(shape)
    except OSError as err:
        fail(f"corrupt zstd data: {err}")
    return arr, off + n
