"""Clip records: the versioned schemas of the training data and their serialisation.

One ArrayRecord record holds one clip, as the bytes of `encode_record(clip)`:

- `UnlabeledClip` (kind "unlabeled"): K JPEG frames of one video, flow-teacher flows with
  covisibility masks for P frame pairs (each one `flow_codec` blob), optional point tracks,
  and provenance (video id, source, teacher name and version, frame times).
- `LabeledClip` (kind "labeled"): K JPEG or PNG frames with depth, valid mask, intrinsics and
  camera-to-world poses, optionally exact flow + covisibility for P pairs and a dynamic mask.

`decode_record(data)` returns the dataclass without decoding any image or flow: the frames and
flows stay encoded (`frames_jpeg`, `flows`: lists of bytes) so that a reader decodes only what
it samples, with `clip.decode_frames(indices)` and `clip.decode_flow(pair_index)`. Every
other field is decoded to numpy arrays / Python scalars.

Both `encode_record` and `decode_record` validate the clip against its schema and raise
`RecordSchemaError` naming the field and the clip id: a wrong container or schema version, an
unknown kind, a missing, unknown or mis-typed field, inconsistent shapes, NaN / Inf in a float
field, out-of-range pair indices, frames that are not JPEG / PNG, flows of another size.

Conventions are flow3r_jax's (`flow3r_jax.geometry`): OpenCV camera axes, camera-to-world 4x4
poses, intrinsics in pixels with the top-left pixel centre at (0.5, 0.5), flow i -> j on frame
i's grid. Frames are RGB. Times are seconds. Depth is z-depth (0 = invalid), stored losslessly.

Schemas (version 1 of each kind; K frames, P pairs, M tracks, H x W pixels)
------------------------------------------------------------------------------
UnlabeledClip: video_id str, source str (original path / URI), teacher_name str,
teacher_version str, height int, width int, frames_jpeg K x JPEG bytes, frame_times float32 (K,),
pairs int32 (P, 2) (i, j) with i != j in [0, K), flows P x flow_codec bytes (flow i -> j with its
covisibility mask, H x W), tracks_xy float32 (K, M, 2) pixel positions (finite; use any finite
value where not visible), tracks_visible bool (K, M), extra {str: str | int | float}.

LabeledClip: clip_id str, dataset str, frames_format "jpeg" | "png", height int, width int,
frames_jpeg K x image bytes (in `frames_format`), frame_times float32 (K,), intrinsics float32
(K, 3, 3) (last row 0 0 1), poses float32 (K, 4, 4) camera-to-world (last row 0 0 0 1), depth
float32 (K, H, W) >= 0 (lossless), valid bool (K, H, W), high_quality bool (depth good enough
for the normal loss), pairs int32 (P, 2) | None, flows P x flow_codec bytes (exact flow +
covisibility) | None (given together with pairs), dynamic bool (K, H, W) | None, extra.

Serialisation
-------------
A record is an F3RC container (`flow3r_jax.data.container`, whose docstring has the byte
layout) of container version 2 (`CONTAINER_VERSION`; version 1 is still read), kind tag 1 = unlabeled (UnlabeledClip)
or 2 = labeled (LabeledClip), the kind's `SCHEMA_VERSION`, and one field per schema entry
(`FIELDS`), in schema order: str -> STR, int -> INT, bool -> BOOL, blobs -> BLOBS, arrays ->
ARRAY (depth and tracks_xy byte-shuffled + zstd, masks bit-packed + zstd, the small ones raw),
extra -> DICT, and an absent optional field -> NONE.
The container ends with a CRC-32 of the whole record, checked before anything is parsed, so a
damaged record is an error (`container.ChecksumError`, wrapped as `RecordChecksumError`) and never
a silently wrong clip; every flow blob also carries its own CRC-32. Large arrays (depth, masks, tracks) are zstd coded and frames and
flows are already compressed, so write shards with ArrayRecord options
"group_size:1,uncompressed" (the default, zstd:3, would compress them a second time).

The frame codec (`encode_jpeg`, `encode_png`, `decode_jpeg`, `FrameCodecError`) lives in
`flow3r_jax.data.images` and is re-exported here.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import ClassVar, Sequence

import numpy as np

from flow3r_jax.data import container, flow_codec
from flow3r_jax.data.container import CONTAINER_VERSION, MAGIC, ArrayEncoding, FieldType
from flow3r_jax.data.images import IMAGE_MAGIC, FrameCodecError, decode_jpeg, encode_jpeg, encode_png, image_format

__all__ = [
    "RecordSchemaError",
    "RecordChecksumError",
    "FrameCodecError",
    "SCHEMA_VERSION",
    "CONTAINER_VERSION",
    "UnlabeledClip",
    "LabeledClip",
    "encode_record",
    "decode_record",
    "encode_jpeg",
    "encode_png",
    "decode_jpeg",
    "labeled_clip_from_arrays",
]

SCHEMA_VERSION = {"unlabeled": 1, "labeled": 1}
"""Schema version per record kind; bump it on any change of the fields or their meaning."""

_KIND_TAG = {"unlabeled": 1, "labeled": 2}


class RecordSchemaError(ValueError):
    """A clip or record that does not match its schema; the message names the field and clip id."""


class RecordChecksumError(RecordSchemaError):
    """A record whose bytes do not match its checksum: damaged in storage or transfer."""


# ----------------------------------------------------------------------------------------------
# Schemas


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    type: str  # "str" | "int" | "bool" | "blobs" | "array" | "dict"
    dims: tuple = ()  # array: shape symbols / ints; blobs: (count symbol,); int: (symbol it binds,)
    dtype: np.dtype | None = None
    encoding: ArrayEncoding = ArrayEncoding.RAW  # arrays only
    optional: bool = False


_SHUFFLED, _BITS = ArrayEncoding.SHUFFLED_ZSTD, ArrayEncoding.BITS_ZSTD
_F32, _I32, _BOOL = np.dtype(np.float32), np.dtype(np.int32), np.dtype(np.bool_)


class _ClipMethods:
    """Lazy decoding helpers shared by both clip kinds."""

    KIND: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int]
    ID_FIELD: ClassVar[str]

    @property
    def num_frames(self) -> int:
        return len(self.frames_jpeg)

    @property
    def num_pairs(self) -> int:
        return 0 if self.flows is None else len(self.flows)

    def decode_frames(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """uint8 RGB (len(indices), H, W, 3) of the frames at `indices` (all when None)."""
        K = self.num_frames
        idx = list(range(K)) if indices is None else [int(i) for i in np.asarray(indices).reshape(-1)]
        bad = [i for i in idx if not 0 <= i < K]
        if bad:
            raise IndexError(f"{self._who()}: frame indices {bad} out of range for {K} frames")
        if not idx:
            return np.zeros((0, self.height, self.width, 3), np.uint8)
        try:
            frames = decode_jpeg([self.frames_jpeg[i] for i in idx])
        except FrameCodecError as err:
            raise RecordSchemaError(f"{self._who()}: field 'frames_jpeg': {err}") from err
        if frames.shape[1:3] != (self.height, self.width):
            raise RecordSchemaError(
                f"{self._who()}: field 'frames_jpeg' decodes to {frames.shape[1]}x{frames.shape[2]}, "
                f"the record says {self.height}x{self.width}"
            )
        return frames

    def decode_flow(self, pair_index: int, *, crop=None, out=None, mask_out=None) -> tuple[np.ndarray, np.ndarray]:
        """(flow (H, W, 2) float32, covisibility (H, W) bool) of pair `pairs[pair_index]`;
        `crop` / `out` / `mask_out` as in `flow_codec.decode_flow` (a window, written in place)."""
        if self.flows is None:
            raise RecordSchemaError(f"{self._who()}: the clip has no flows")
        if not -self.num_pairs <= pair_index < self.num_pairs:
            raise IndexError(f"{self._who()}: pair index {pair_index} out of range for {self.num_pairs} pairs")
        blob = self.flows[pair_index]
        try:
            shape = flow_codec.flow_shape(blob)
            if shape != (self.height, self.width):
                raise RecordSchemaError(f"{self._who()}: flow {pair_index} is {shape}, the record says {self.height}x{self.width}")
            return flow_codec.decode_flow(blob, crop=crop, out=out, mask_out=mask_out)
        except flow_codec.FlowCodecError as err:
            raise RecordSchemaError(f"{self._who()}: field 'flows'[{pair_index}]: {err}") from err

    def decode_frame(self, index: int) -> np.ndarray:
        """uint8 RGB (H, W, 3) of frame `index` (the one-frame form of `decode_frames`)."""
        return self.decode_frames([index])[0]

    def _who(self) -> str:
        return f"{type(self).__name__} {getattr(self, self.ID_FIELD)!r}"


@dataclasses.dataclass(eq=False)
class UnlabeledClip(_ClipMethods):
    """K frames of one video with flow-teacher flows; see the module docstring for the fields."""

    KIND: ClassVar[str] = "unlabeled"
    SCHEMA_VERSION: ClassVar[int] = SCHEMA_VERSION["unlabeled"]
    ID_FIELD: ClassVar[str] = "video_id"

    video_id: str
    frame_times: np.ndarray  # float32 (K,), seconds
    frames_jpeg: list[bytes]  # K JPEG files, RGB
    height: int
    width: int
    pairs: np.ndarray  # int32 (P, 2)
    flows: list[bytes]  # P flow_codec blobs: flow pairs[p, 0] -> pairs[p, 1] + covisibility
    tracks_xy: np.ndarray  # float32 (K, M, 2), pixels
    tracks_visible: np.ndarray  # bool (K, M)
    teacher_name: str
    teacher_version: str
    source: str
    extra: dict = dataclasses.field(default_factory=dict)

    FIELDS: ClassVar[tuple[_Field, ...]] = (
        _Field("video_id", "str"),
        _Field("source", "str"),
        _Field("teacher_name", "str"),
        _Field("teacher_version", "str"),
        _Field("height", "int", ("H",)),
        _Field("width", "int", ("W",)),
        _Field("frames_jpeg", "blobs", ("K",)),
        _Field("frame_times", "array", ("K",), _F32),
        _Field("pairs", "array", ("P", 2), _I32),
        _Field("flows", "blobs", ("P",)),
        _Field("tracks_xy", "array", ("K", "M", 2), _F32, _SHUFFLED),
        _Field("tracks_visible", "array", ("K", "M"), _BOOL, _BITS),
        _Field("extra", "dict"),
    )


@dataclasses.dataclass(eq=False)
class LabeledClip(_ClipMethods):
    """K frames with ground-truth geometry; see the module docstring for the fields."""

    KIND: ClassVar[str] = "labeled"
    SCHEMA_VERSION: ClassVar[int] = SCHEMA_VERSION["labeled"]
    ID_FIELD: ClassVar[str] = "clip_id"

    clip_id: str
    dataset: str
    frames_jpeg: list[bytes]  # K image files in `frames_format`, RGB
    frame_times: np.ndarray  # float32 (K,)
    height: int
    width: int
    depth: np.ndarray  # float32 (K, H, W), 0 = invalid
    valid: np.ndarray  # bool (K, H, W)
    intrinsics: np.ndarray  # float32 (K, 3, 3)
    poses: np.ndarray  # float32 (K, 4, 4) camera-to-world
    high_quality: bool  # depth is good enough for the normal loss
    frames_format: str = "jpeg"  # "jpeg" or "png"
    pairs: np.ndarray | None = None  # int32 (P, 2)
    flows: list[bytes] | None = None  # P flow_codec blobs (exact flow + covisibility)
    dynamic: np.ndarray | None = None  # bool (K, H, W)
    extra: dict = dataclasses.field(default_factory=dict)

    FIELDS: ClassVar[tuple[_Field, ...]] = (
        _Field("clip_id", "str"),
        _Field("dataset", "str"),
        _Field("frames_format", "str"),
        _Field("height", "int", ("H",)),
        _Field("width", "int", ("W",)),
        _Field("frames_jpeg", "blobs", ("K",)),
        _Field("frame_times", "array", ("K",), _F32),
        _Field("intrinsics", "array", ("K", 3, 3), _F32),
        _Field("poses", "array", ("K", 4, 4), _F32),
        _Field("depth", "array", ("K", "H", "W"), _F32, _SHUFFLED),
        _Field("valid", "array", ("K", "H", "W"), _BOOL, _BITS),
        _Field("high_quality", "bool"),
        _Field("pairs", "array", ("P", 2), _I32, optional=True),
        _Field("flows", "blobs", ("P",), optional=True),
        _Field("dynamic", "array", ("K", "H", "W"), _BOOL, _BITS, optional=True),
        _Field("extra", "dict"),
    )


_CLASSES = {cls.KIND: cls for cls in (UnlabeledClip, LabeledClip)}
_KIND_BY_TAG = {tag: kind for kind, tag in _KIND_TAG.items()}


# ----------------------------------------------------------------------------------------------
# Validation


def _validate(cls, values: dict) -> None:
    """Checks a field dict against the schema of `cls`; raises RecordSchemaError."""
    clip_id = values.get(cls.ID_FIELD)
    who = f"{cls.__name__} {clip_id!r}"

    def fail(name: str, msg: str):
        raise RecordSchemaError(f"{who}: field {name!r}: {msg}")

    names = {f.name for f in cls.FIELDS}
    missing = [n for n in names if n not in values]
    if missing:
        raise RecordSchemaError(f"{who}: missing field(s) {sorted(missing)}")
    unknown = sorted(set(values) - names)
    if unknown:
        raise RecordSchemaError(f"{who}: unknown field(s) {unknown} for {cls.__name__} schema version {cls.SCHEMA_VERSION}")
    dims: dict[str, int] = {}
    for f in cls.FIELDS:
        v = values[f.name]
        if v is None:
            if not f.optional:
                fail(f.name, "is required, got None")
            continue
        if f.type == "str":
            if not isinstance(v, str):
                fail(f.name, f"expected str, got {type(v).__name__}")
        elif f.type == "int":
            if not isinstance(v, numbers.Integral) or isinstance(v, (bool, np.bool_)) or v < 1:
                fail(f.name, f"expected a positive int, got {v!r}")
            dims[f.dims[0]] = int(v)
        elif f.type == "bool":
            if not isinstance(v, (bool, np.bool_)):
                fail(f.name, f"expected bool, got {type(v).__name__}")
        elif f.type == "dict":
            _check_extra(v, lambda msg: fail(f.name, msg))
        elif f.type == "blobs":
            if not isinstance(v, (list, tuple)):
                fail(f.name, f"expected a list of bytes, got {type(v).__name__}")
            bad = [k for k, b in enumerate(v) if not isinstance(b, (bytes, bytearray, memoryview))]
            if bad:
                fail(f.name, f"entry {bad[0]} is a {type(v[bad[0]]).__name__}, expected bytes")
            _bind(dims, f.dims[0], len(v), f.name, fail)
        else:  # array
            if not isinstance(v, np.ndarray) or v.dtype != f.dtype or v.ndim != len(f.dims):
                desc = f"{v.dtype} {v.shape}" if isinstance(v, np.ndarray) else type(v).__name__
                fail(f.name, f"expected {f.dtype} array ({', '.join(map(str, f.dims))}), got {desc}")
            for sym, n in zip(f.dims, v.shape):
                if isinstance(sym, int):
                    if n != sym:
                        fail(f.name, f"has shape {v.shape}, expected ({', '.join(map(str, f.dims))}) with the dimension {sym} fixed")
                else:
                    _bind(dims, sym, n, f.name, fail, v.shape, f.dims)
            if f.dtype == _F32 and not np.isfinite(v).all():
                fail(f.name, f"has {int((~np.isfinite(v)).sum())} NaN / Inf values")
    _check_content(cls, values, dims, fail)


def _bind(dims, sym, n, name, fail, shape=None, symbols=None):
    if sym not in dims:
        dims[sym] = n
    elif dims[sym] != n:
        where = f"has shape {shape}, expected ({', '.join(map(str, symbols))})" if shape is not None else f"has {n} entries, expected {sym}"
        fail(name, f"{where} with {sym} = {dims[sym]} (from the fields before it)")


def _check_extra(v, fail) -> None:
    if not isinstance(v, dict):
        fail(f"expected a dict, got {type(v).__name__}")
    for key, val in v.items():
        if not isinstance(key, str):
            fail(f"key {key!r} is not a str")
        if isinstance(val, (bool, np.bool_)) or not isinstance(val, (str, int, float)):
            fail(f"value of {key!r} must be str, int or float, got {type(val).__name__}")
        if isinstance(val, float) and not math.isfinite(val):
            fail(f"value of {key!r} is {val}")


def _check_content(cls, values: dict, dims: dict, fail) -> None:
    K = dims["K"]
    if K < 1:
        fail("frames_jpeg", "a clip needs at least one frame")
    fmt = values.get("frames_format", "jpeg")
    if fmt not in IMAGE_MAGIC:
        fail("frames_format", f"expected one of {sorted(IMAGE_MAGIC)}, got {fmt!r}")
    for k, b in enumerate(values["frames_jpeg"]):
        if image_format(b) != fmt:
            fail("frames_jpeg", f"frame {k} is not a {fmt.upper()} file (starts with {bytes(b[:4])!r})")
    pairs, flows = values["pairs"], values["flows"]
    if (pairs is None) != (flows is None):
        fail("pairs" if pairs is None else "flows", "pairs and flows must be given together")
    if pairs is not None:
        if pairs.size and (pairs.min() < 0 or pairs.max() >= K):
            fail("pairs", f"frame indices must be in [0, {K}), got range [{pairs.min()}, {pairs.max()}]")
        if np.any(pairs[:, 0] == pairs[:, 1]):
            fail("pairs", f"pair {int(np.argmax(pairs[:, 0] == pairs[:, 1]))} maps a frame to itself")
        size = (dims["H"], dims["W"])
        for p, blob in enumerate(flows):
            try:
                shape = flow_codec.flow_shape(blob)
            except flow_codec.FlowCodecError as err:
                fail("flows", f"entry {p}: {err}")
            if shape != size:
                fail("flows", f"entry {p} is a {shape[0]}x{shape[1]} flow, the clip is {size[0]}x{size[1]}")
    if cls is LabeledClip:
        if values["depth"].size and values["depth"].min() < 0:
            fail("depth", f"negative depth {values['depth'].min()} (0 marks invalid pixels)")
        if not np.allclose(values["poses"][:, 3], [0, 0, 0, 1], rtol=0, atol=1e-6):
            fail("poses", "last row of every pose must be (0, 0, 0, 1)")
        if not np.allclose(values["intrinsics"][:, 2], [0, 0, 1], rtol=0, atol=1e-6):
            fail("intrinsics", "last row of every intrinsics matrix must be (0, 0, 1)")


# ----------------------------------------------------------------------------------------------
# Serialisation

_FIELD_TYPE = {
    "str": FieldType.STR,
    "int": FieldType.INT,
    "bool": FieldType.BOOL,
    "blobs": FieldType.BLOBS,
    "array": FieldType.ARRAY,
    "dict": FieldType.DICT,
}
_T_NONE = FieldType.NONE


def _pack_value(f: _Field, v) -> list[bytes]:
    """The container encoding of value `v` of field `f` (chunks; see `container.encode_value`)."""
    return container.encode_value(_FIELD_TYPE[f.type], v, f.encoding)


def _pack(kind: str, schema_version: int, fields: list[tuple[str, list[bytes]]]) -> bytes:
    """Container bytes of a `kind` record from (name, `_pack_value` output) pairs, unvalidated."""
    return container.pack_record(_KIND_TAG[kind], schema_version, fields)


def encode_record(clip: UnlabeledClip | LabeledClip) -> bytes:
    """Validates `clip` against its schema and serialises it (see the module docstring)."""
    cls = type(clip)
    if cls not in _CLASSES.values():
        raise RecordSchemaError(f"encode_record: expected UnlabeledClip or LabeledClip, got {cls.__name__}")
    values = {f.name: getattr(clip, f.name) for f in cls.FIELDS}
    _validate(cls, values)
    fields = []
    for f in cls.FIELDS:
        try:
            fields.append((f.name, _pack_value(f, values[f.name])))
        except container.ContainerError as err:  # a valid value the layout cannot hold, e.g. an int beyond i64
            raise RecordSchemaError(f"{clip._who()}: field {f.name!r}: {err}") from err
    return _pack(cls.KIND, cls.SCHEMA_VERSION, fields)


def decode_record(data: bytes, *, validate: bool = True, blob_views: bool = False, verify: bool = True) -> UnlabeledClip | LabeledClip:
    """Parses `encode_record` output. Frames and flows stay encoded (lists of bytes); everything
    else is decoded. `validate=False` skips the schema's content checks (shapes, NaN, ranges),
    not the container's (magic, versions, field names and types). `blob_views=True` leaves frames
    and flows as memoryviews into `data` instead of copying them out (the training reader's
    choice: such a clip cannot be pickled). `verify=False` skips the record's checksum, for a
    caller that has just verified it (`flow3r_jax.data.sources`); never skip it otherwise."""
    try:
        prefix = container.read_prefix(data)
        if verify:
            container.verify_checksum(data)
    except container.ChecksumError as err:
        raise RecordChecksumError(f"decode_record: {err}") from err
    except container.NotAContainerError as err:
        raise RecordSchemaError(f"decode_record: not a clip record (magic {err.magic!r}, expected {MAGIC!r})") from err
    except container.ContainerError as err:
        raise RecordSchemaError(f"decode_record: {err}") from err
    if prefix.kind_tag not in _KIND_BY_TAG:
        raise RecordSchemaError(f"decode_record: unknown record kind tag {prefix.kind_tag} (known: {_KIND_BY_TAG})")
    cls = _CLASSES[_KIND_BY_TAG[prefix.kind_tag]]
    if prefix.schema_version != cls.SCHEMA_VERSION:
        raise RecordSchemaError(
            f"decode_record: {cls.KIND} record has schema version {prefix.schema_version}, "
            f"this reader supports version {cls.SCHEMA_VERSION}"
        )
    specs = {f.name: f for f in cls.FIELDS}
    values: dict = {}

    def who() -> str:  # the id is known once its field (the first one) is read
        return f"{cls.__name__} {values.get(cls.ID_FIELD)!r}"

    def check(name: str, t: int) -> None:  # before the payload is decoded
        f = specs.get(name)
        if f is None:
            raise RecordSchemaError(f"{who()}: field {name!r}: unknown field for {cls.__name__} schema version {cls.SCHEMA_VERSION}")
        expected = _FIELD_TYPE[f.type]
        if t != FieldType.NONE and t != expected:
            raise RecordSchemaError(f"{who()}: field {name!r}: stored with type code {t}, the schema needs {int(expected)} ({f.type})")

    try:
        for name, _, value in container.iter_fields(data, check, blob_views, verify=False):
            values[name] = value
    except container.ContainerError as err:
        raise RecordSchemaError(f"{who()}: {err}") from err
    if validate:
        _validate(cls, values)
    else:
        missing = sorted({f.name for f in cls.FIELDS} - set(values))
        if missing:
            raise RecordSchemaError(f"{who()}: missing field(s) {missing}")
    return cls(**values)


# ----------------------------------------------------------------------------------------------
# Converters


def labeled_clip_from_arrays(
    *,
    clip_id: str,
    images,
    depth,
    valid,
    poses,
    intrinsics,
    times,
    dataset: str = "synthetic",
    pairs=None,
    flow=None,
    covisible=None,
    dynamic=None,
    high_quality: bool = True,
    frames_format: str = "jpeg",
    jpeg_quality: int = 95,
    flow_level: int = flow_codec.DEFAULT_LEVEL,
    extra: dict | None = None,
) -> LabeledClip:
    """A LabeledClip from plain arrays (any array-likes, e.g. the dict of
    `data_pipelines.synthetic.generate_clip`, whose key names these arguments follow):

        images uint8 (K, H, W, 3) RGB, depth (K, H, W), valid (K, H, W), poses (K, 4, 4)
        camera-to-world, intrinsics (K, 3, 3), times (K,), and optionally pairs (P, 2) with
        flow (P, H, W, 2) and covisible (P, H, W), dynamic (K, H, W).

    Frames are encoded as `frames_format` ("jpeg" at `jpeg_quality`, or lossless "png"); flows
    with `flow_codec.encode_flow` at zstd level `flow_level`, after
    `flow_codec.zero_unrepresentable_outside_mask`: flow at pixels that are not covisible is
    set to 0 where it is NaN / Inf or beyond the codec's range (the exact flow of points behind
    camera j is ~1e8 px); everywhere else it is stored within 1/32 px. Dtypes are converted
    (float32, bool, int32); the result is validated like `encode_record` would."""
    images = np.asarray(images)
    if frames_format == "jpeg":
        frames = encode_jpeg(images, jpeg_quality)
    elif frames_format == "png":
        frames = encode_png(images)
    else:
        raise RecordSchemaError(f"LabeledClip {clip_id!r}: field 'frames_format': expected 'jpeg' or 'png', got {frames_format!r}")
    flows = None
    if pairs is not None or flow is not None or covisible is not None:
        if pairs is None or flow is None or covisible is None:
            raise RecordSchemaError(f"LabeledClip {clip_id!r}: field 'flows': pairs, flow and covisible must be given together")
        flow = np.asarray(flow, np.float32)
        covisible = np.asarray(covisible).astype(bool, copy=False)
        if len(flow) != len(pairs) or len(covisible) != len(pairs):
            raise RecordSchemaError(
                f"LabeledClip {clip_id!r}: field 'flows': {len(pairs)} pairs but {len(flow)} flows and {len(covisible)} masks"
            )
        try:
            flows = []
            for f, m in zip(flow, covisible):
                f, _ = flow_codec.zero_unrepresentable_outside_mask(f, m)
                flows.append(flow_codec.encode_flow(f, m, level=flow_level))
        except flow_codec.FlowCodecError as err:
            raise RecordSchemaError(f"LabeledClip {clip_id!r}: field 'flows': {err}") from err
        pairs = np.asarray(pairs).astype(np.int32).reshape(-1, 2)
    clip = LabeledClip(
        clip_id=clip_id,
        dataset=dataset,
        frames_jpeg=frames,
        frames_format=frames_format,
        frame_times=np.asarray(times, np.float32),
        height=int(images.shape[1]),
        width=int(images.shape[2]),
        depth=np.asarray(depth, np.float32),
        valid=np.asarray(valid).astype(bool, copy=False),
        intrinsics=np.asarray(intrinsics, np.float32),
        poses=np.asarray(poses, np.float32),
        high_quality=bool(high_quality),
        pairs=pairs,
        flows=flows,
        dynamic=None if dynamic is None else np.asarray(dynamic).astype(bool, copy=False),
        extra=dict(extra or {}),
    )
    _validate(LabeledClip, {f.name: getattr(clip, f.name) for f in LabeledClip.FIELDS})
    return clip
