"""The F3RC container: round trips of every value type, the byte layout, and malformed input."""

import struct
import zlib

import numpy as np
import pytest

from flow3r_jax.data.container import (
    ARRAY_DTYPES,
    CONTAINER_VERSION,
    MAGIC,
    ArrayEncoding,
    ChecksumError,
    ContainerError,
    FieldType,
    NotAContainerError,
    encode_value,
    iter_fields,
    pack_record,
    read_prefix,
    unpack_record,
    verify_checksum,
)

ENCODINGS = list(ArrayEncoding)


def _pack(fields, kind_tag=7, schema_version=300):
    """fields: (name, FieldType, value[, encoding])."""
    return pack_record(kind_tag, schema_version, [(name, encode_value(*rest)) for name, *rest in fields])


def _reseal(data: bytes) -> bytes:
    """`data` (an edited version-2 container) with its CRC-32 recomputed: tests of the parser's own
    checks behind the checksum."""
    body = data[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def _arrays(rng):
    out = []
    for dtype in ARRAY_DTYPES:
        for shape in [(), (0,), (3, 0, 2), (5,), (4, 3, 2)]:
            if dtype == np.bool_:
                a = np.asarray(rng.random(shape) < 0.4)
            else:
                a = np.asarray(rng.normal(size=shape) * 1000).astype(dtype)
            for enc in ENCODINGS:
                if enc != ArrayEncoding.BITS_ZSTD or dtype == np.bool_:
                    out.append((a, enc))
    return out


def _assert_equal(got, want):
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype and got.shape == want.shape
        assert got.flags.c_contiguous and got.dtype.isnative
        np.testing.assert_array_equal(got, want)
    else:
        assert type(got) is type(want) and got == want


def test_round_trip_of_every_value_type(rng):
    scalars = [
        ("none", FieldType.STR, None, FieldType.NONE),
        ("s", FieldType.STR, "héllo ✓", FieldType.STR),
        ("empty", FieldType.STR, "", FieldType.STR),
        ("i", FieldType.INT, -(2**63), FieldType.INT),
        ("j", FieldType.INT, np.int64(2**63 - 1), FieldType.INT),
        ("t", FieldType.BOOL, True, FieldType.BOOL),
        ("f", FieldType.BOOL, np.bool_(False), FieldType.BOOL),
        ("blobs", FieldType.BLOBS, [b"abc", bytearray(b""), memoryview(b"\0\1\2")], FieldType.BLOBS),
        ("no_blobs", FieldType.BLOBS, [], FieldType.BLOBS),
        ("d", FieldType.DICT, {"b": 1, "a": "x", "c": 2.5}, FieldType.DICT),
    ]
    arrays = [(f"a{n}", FieldType.ARRAY, a, enc) for n, (a, enc) in enumerate(_arrays(rng))]
    data = pack_record(7, 300, [(n, encode_value(t, v)) for n, t, v, _ in scalars] + [(n, encode_value(t, a, e)) for n, t, a, e in arrays])
    assert read_prefix(data) == (7, 300, len(scalars) + len(arrays), 2)
    record = unpack_record(data)
    assert (record.kind_tag, record.schema_version) == (7, 300)
    assert list(record.fields) == [s[0] for s in scalars] + [a[0] for a in arrays]  # stored order
    want = {
        "none": None,
        "s": "héllo ✓",
        "empty": "",
        "i": -(2**63),
        "j": 2**63 - 1,
        "t": True,
        "f": False,
        "blobs": [b"abc", b"", b"\0\1\2"],
        "no_blobs": [],
        "d": {"a": "x", "b": 1, "c": 2.5},
    }
    for name, _, _, stored_type in scalars:
        t, value = record.fields[name]
        assert t is stored_type
        _assert_equal(value, want[name])
    for name, _, a, _ in arrays:
        t, value = record.fields[name]
        assert t is FieldType.ARRAY
        _assert_equal(value, a)
    # Buffers other than bytes decode the same.
    for buffer in (bytearray(data), memoryview(bytearray(data))):
        again = unpack_record(buffer)
        assert list(again.fields) == list(record.fields)
        assert again.fields["blobs"] == record.fields["blobs"] and all(type(b) is bytes for b in again.fields["blobs"][1])
        np.testing.assert_array_equal(again.fields["a7"][1], record.fields["a7"][1])


def test_byte_layout(rng):
    data = _pack([("s", FieldType.STR, "ab"), ("i", FieldType.INT, -2), ("b", FieldType.BOOL, True), ("x", FieldType.STR, None)])
    assert (
        MAGIC
        + bytes([CONTAINER_VERSION, 7])
        + struct.pack("<HH", 300, 4)
        + b"\x01s" + b"\x01" + struct.pack("<I", 2) + b"ab"
        + b"\x01i" + b"\x02" + struct.pack("<q", -2)
        + b"\x01b" + b"\x03\x01"
        + b"\x01x" + b"\x00"
    ) == data[:-4]  # fmt: skip
    assert data[-4:] == struct.pack("<I", zlib.crc32(data[:-4]))
    blobs = b"".join(encode_value(FieldType.BLOBS, [b"xy", b"z"]))
    assert blobs == b"\x04" + struct.pack("<III", 2, 2, 1) + b"xyz"
    raw = b"".join(encode_value(FieldType.ARRAY, np.array([[1, -2]], np.int32)))
    assert raw == bytes([5, 3, 0, 2]) + struct.pack("<II", 1, 2) + struct.pack("<I", 8) + struct.pack("<ii", 1, -2)
    big_endian = np.array([[1, -2]], ">i4")  # stored little-endian, decoded native
    assert b"".join(encode_value(FieldType.ARRAY, big_endian)) == raw
    # An empty array is stored raw whatever the encoding asked for.
    empty = encode_value(FieldType.ARRAY, np.zeros((2, 0), np.float32), ArrayEncoding.SHUFFLED_ZSTD)
    assert b"".join(empty) == bytes([5, 4, 0, 2]) + struct.pack("<III", 2, 0, 0)
    # The dict is JSON with sorted keys; a single bytes object is accepted as an encoded value.
    d = pack_record(1, 1, [("d", b"".join(encode_value(FieldType.DICT, {"b": 1, "a": 2})))])
    assert d[:-4].endswith(b'{"a": 2, "b": 1}')


def test_compressed_arrays_are_smaller():
    mask = np.zeros((64, 64), bool)
    mask[10:30] = True
    depth = np.full((64, 64), 3.25, np.float32)
    bits = b"".join(encode_value(FieldType.ARRAY, mask, ArrayEncoding.BITS_ZSTD))
    shuffled = b"".join(encode_value(FieldType.ARRAY, depth, ArrayEncoding.SHUFFLED_ZSTD))
    assert len(bits) < 64 * 64 // 8 and len(shuffled) < 200


def test_iter_fields_check_runs_before_decoding():
    data = _pack([("a", FieldType.INT, 1), ("b", FieldType.ARRAY, np.zeros(9, np.float32), ArrayEncoding.SHUFFLED_ZSTD)])
    seen = []

    class Stop(Exception):
        pass

    def check(name, t):
        seen.append((name, t))
        if name == "b":
            raise Stop

    fields = iter_fields(data, check)
    assert next(fields) == ("a", FieldType.INT, 1)
    with pytest.raises(Stop):  # propagated unchanged, not wrapped
        next(fields)
    assert seen == [("a", 2), ("b", 5)]


def test_bad_prefix():
    data = _pack([("s", FieldType.STR, "x")])
    with pytest.raises(ContainerError, match="truncated record: 9 bytes"):
        read_prefix(data[:9])
    with pytest.raises(NotAContainerError, match=r"not an F3RC container \(magic b'PK\\x03\\x04'") as info:
        unpack_record(b"PK\x03\x04" + data[4:])
    assert info.value.magic == b"PK\x03\x04" and isinstance(info.value, ContainerError) and isinstance(info.value, ValueError)
    with pytest.raises(ContainerError, match=r"container version 3, this reader knows versions \(1, 2\)"):
        unpack_record(data[:4] + b"\x03" + data[5:])


def test_truncated_and_corrupt_data_raise_container_error(rng):
    fields = [("s", FieldType.STR, "text"), ("d", FieldType.DICT, {"k": [1]}), ("b", FieldType.BLOBS, [b"12345", b"678"])]
    fields += [(f"a{n}", FieldType.ARRAY, a, enc) for n, (a, enc) in enumerate(_arrays(rng)[::3])]
    data = _pack(fields)
    for cut in range(len(data)):
        with pytest.raises(ContainerError):
            unpack_record(data[:cut])
    with pytest.raises(ContainerError, match="3 trailing bytes after the last field") as info:
        unpack_record(_reseal(data[:-4] + b"xyz" + data[-4:]))
    assert info.value.field is None
    # A flipped type code, an unknown dtype code, corrupt zstd data: errors name the field.
    one = _pack([("m", FieldType.ARRAY, rng.random((40, 40)) < 0.5, ArrayEncoding.BITS_ZSTD)])
    type_at = 10 + 2
    with pytest.raises(ContainerError, match="field 'm': unknown type code 9") as info:
        unpack_record(_reseal(one[:type_at] + b"\x09" + one[type_at + 1 :]))
    assert info.value.field == "m"
    with pytest.raises(ContainerError, match="field 'm': unknown array dtype code 8"):
        unpack_record(_reseal(one[: type_at + 1] + b"\x08" + one[type_at + 2 :]))
    with pytest.raises(ContainerError, match="field 'm': corrupt zstd data"):
        unpack_record(_reseal(one[:28] + bytes(4) + one[32:]))  # the zstd frame starts at 28
    with pytest.raises(ContainerError, match="field 'm': bit-packed array of dtype uint8"):
        unpack_record(_reseal(one[: type_at + 1] + b"\x02" + one[type_at + 2 :]))
    with pytest.raises(ContainerError, match="near field 'd'"):  # invalid JSON
        unpack_record(_reseal(data.replace(b'{"k": [1]}', b'{"k": [1}}')))
    with pytest.raises(ContainerError, match="field 'd': DICT value is a JSON list"):
        unpack_record(_reseal(data.replace(b'{"k": [1]}', b'[1, 2, 34]')))
    with pytest.raises(ContainerError, match="field 'x': stored twice"):
        unpack_record(_pack([("x", FieldType.INT, 1), ("x", FieldType.INT, 2)]))
    assert [v for _, _, v in iter_fields(_pack([("x", FieldType.INT, 1), ("x", FieldType.INT, 2)]))] == [1, 2]


@pytest.mark.parametrize(
    "args, match",
    [
        ((FieldType.STR, b"bytes"), "STR value must be a str"),
        ((FieldType.INT, True), "INT value must be an int"),
        ((FieldType.INT, 2**63), "out of the i64 range"),
        ((FieldType.BOOL, 1), "BOOL value must be a bool"),
        ((FieldType.BLOBS, [b"a", "b"]), "BLOBS value must be a list of bytes"),
        ((FieldType.DICT, {"x": float("nan")}), "not JSON-serialisable"),
        ((FieldType.DICT, {"x": object()}), "not JSON-serialisable"),
        ((FieldType.ARRAY, [1, 2]), "ARRAY value must be a numpy array"),
        ((FieldType.ARRAY, np.zeros(3, np.float64)), "ARRAY dtype float64"),
        ((FieldType.ARRAY, np.zeros(3, np.uint8), ArrayEncoding.BITS_ZSTD), "needs a bool array"),
        ((FieldType.ARRAY, np.zeros(3, np.uint8), 5), "unknown array encoding 5"),
        ((FieldType.NONE, 3), "NONE value must be None"),
        ((17, 3), "unknown field type 17"),
    ],
)
def test_unencodable_values(args, match):
    with pytest.raises(ContainerError, match=match):
        encode_value(*args)


def test_unpackable_records():
    with pytest.raises(ContainerError, match="not ASCII"):
        pack_record(1, 1, [("é", encode_value(FieldType.INT, 1))])
    with pytest.raises(ContainerError, match="longer than 255 bytes"):
        pack_record(1, 1, [("x" * 256, encode_value(FieldType.INT, 1))])
    with pytest.raises(ContainerError, match="out of range"):
        pack_record(256, 1, [])
    with pytest.raises(ContainerError, match="out of range"):
        pack_record(1, 2**16, [])


def test_every_flipped_byte_and_truncation_is_a_checksum_error(rng):
    """Version 2: a record damaged anywhere (header, names, payloads, the CRC itself) is refused
    before parsing; CRC-32 (zlib, checked here against the independent binascii.crc32)."""
    import binascii

    fields = [("s", FieldType.STR, "text"), ("b", FieldType.BLOBS, [b"12345", b"678"])]
    fields += [(f"a{n}", FieldType.ARRAY, a, enc) for n, (a, enc) in enumerate(_arrays(rng)[::4])]
    data = _pack(fields)
    assert read_prefix(data).container_version == CONTAINER_VERSION == 2
    assert struct.unpack("<I", data[-4:])[0] == binascii.crc32(data[:-4]) and verify_checksum(data)
    for at in range(len(data)):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(data)
            bad[at] ^= flip
            try:
                unpack_record(bytes(bad))
            except ChecksumError as err:
                assert "checksum mismatch" in str(err)
            except ContainerError as err:  # the prefix itself (magic, version) is checked first
                assert at < 5, (at, err)
            else:
                raise AssertionError(f"flipping byte {at} with {flip:#x} went unnoticed")
    for cut in range(10, len(data)):  # (shorter than the prefix: "truncated record", a ContainerError)
        with pytest.raises(ChecksumError):
            unpack_record(data[:cut])


def test_version_1_records_are_still_read_unverified(rng):
    fields = [("s", FieldType.STR, "x"), ("a", FieldType.ARRAY, rng.random((3, 4)).astype(np.float32), ArrayEncoding.SHUFFLED_ZSTD)]
    v1 = pack_record(7, 300, [(n, encode_value(*rest)) for n, *rest in fields], container_version=1)
    v2 = _pack(fields)
    assert v1 == v2[:4] + b"\x01" + v2[5:-4]  # the same bytes, without the checksum
    assert read_prefix(v1).container_version == 1 and verify_checksum(v1) is False
    got, want = unpack_record(v1).fields, unpack_record(v2).fields
    assert got["s"] == want["s"] and np.array_equal(got["a"][1], want["a"][1])
