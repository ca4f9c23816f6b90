"""Flow codec: one optical flow (H, W, 2) float32 and its covisibility mask (H, W) bool <-> bytes.

Shared by the offline writers (`data_pipelines/`) and the training-time reader, so that the
datasets' flow supervision is stored in one place, in one format:

    data = encode_flow(flow, mask)          # bytes
    flow, mask = decode_flow(data)          # (H, W, 2) float32, (H, W) bool

Flow follows flow3r_jax's convention (`flow3r_jax.geometry`): (dx, dy) displacement in pixels
from frame i's pixel centres to frame j, on frame i's grid. The mask is usually the
forward-backward covisibility of the pair.

Guarantees (format version 2; version 1 is still read)
------------------------------------------------------
- **Every pixel, masked or not**: each component is quantised to the nearest multiple of 1/16 px
  (`q = rint(16 * flow)`, ties to even) and decoded as exactly `q / 16` in float32, so
  |decoded - flow| <= 1/32 px per component everywhere. Flows already on the 1/16 grid (e.g.
  decoded ones) round-trip bit-exactly; re-encoding is idempotent.
- **The mask round-trips exactly.**
- **Range**: every component must satisfy |flow| <= `MAX_ABS_FLOW` = 32767.9375 px
  (= (2^19 - 1) / 16). Larger values, NaN and Inf raise `FlowCodecError`; nothing is clipped.
  Flows with meaningless huge values on non-covisible pixels (exact flow of points behind the
  second camera) can opt in to `zero_unrepresentable_outside_mask` before encoding.
- **Integrity**: a CRC-32 covers the whole blob; corrupt, truncated, padded or unknown-version
  data raises `FlowCodecError`, never returns wrong values silently.
- **Size**: ~0.4-0.5 bytes per pixel (mask included) on DIS teacher flows of the synthetic
  scenes, ~0.1-0.3 on their exact flows; the issue's target is <= 2 (see
  `benchmarks/flow_codec.py`). Spatially uncorrelated noise costs more (~2 bytes per pixel at
  sigma = 2 px, ~3.5 at sigma = 40 px) and still decodes within the bound.

How it compresses
-----------------
1. The quantised components are stacked into one (2H, W) integer image: the H rows of dx, then
   the H rows of dy.
2. Each value x is predicted from its left (a), upper (b) and upper-left (c) neighbours with the
   planar predictor a + b - c (zero outside the image): residual r = x - a - b + c. For smooth
   flow, r is the mixed second difference and is mostly 0 or +-1. The inverse is a 2D prefix
   sum (an integral image), which the decoder computes in C with `cv2.integral` in float32: all
   partial sums are multiples of 1/16 below 2^21, so float32 holds them exactly.
3. Residuals are zigzag mapped (0, -1, 1, -2, 2, ... -> 0, 1, 2, 3, 4, ...). Each code is stored
   as a 4-bit nibble, two per byte: codes below 15 as themselves, larger ones as 15 plus one
   byte in a list of big codes (under 1% of the codes on teacher flows). A big code below 255
   is that byte; larger ones store 255 and go to an exception list (flat index, exact
   residual), which holds the few pixels on large motion boundaries.
4. Mask bits, nibbles, big codes and exceptions are entropy coded as one zstd frame (RFC 8878,
   through `pyarrow`, a pinned base dependency; any zstd implementation can read it).

Why nibbles: zstd's time follows its input size, and most codes need 2 bits. Version 1 stored
one byte per code; on DIS teacher flows at 224 x 224, version 2 halves the bytes zstd reads
(its time per pair drops from ~0.30 to ~0.15 ms at level 1) and is ~15% smaller; the dataset
pipeline's encode per pair went from ~0.50 ms (version 1, level 3) to ~0.38 ms (version 2,
level 1, no larger than level 3 here).

Decoding is a zstd call, a 256-entry table lookup from each byte to its two codes (`cv2.LUT`),
the big codes written at the nibbles of 15, a 256-entry table lookup (`cv2.LUT`, code ->
residual / 16 in float32), the exception fix-up, `cv2.integral` and a numpy interleave of dx and
dy: no per-pixel Python; ~190-240 Mpixel/s per core on the reference machine (shared 2-core AMD
EPYC, the other core busy; `benchmarks/flow_codec.py`), as fast as version 1 side by side. OpenCV may use several threads; call `cv2.setNumThreads(1)`
in input-pipeline worker processes.

Byte layout (version 2, little-endian)
--------------------------------------
    offset  size  field
    0       1     format version = 2
    1       2     H, height (u16, >= 1)
    3       2     W, width (u16, >= 1)
    5       4     E, number of exceptions (u32)
    9       4     N, number of big codes (u32)
    13      4     Z, length of the zstd frame in bytes (u32)
    17      4     CRC-32 (zlib.crc32) of bytes [0, 17) followed by the zstd frame
    21      Z     one zstd frame; decompressed (ceil(H W / 8) + H W + N + 8 E bytes) it is:
                    mask   ceil(H W / 8) bytes  numpy.packbits of the (H, W) mask, row-major,
                                                first pixel in the most significant bit
                    codes  H W bytes            the 2 H W zigzag codes of the residuals of the
                                                (2H, W) image, row-major, two per byte (the
                                                first in the high nibble), each min(code, 15)
                    big    N bytes              min(code, 255) of every code >= 15, in order
                                                (255 = exception)
                    gaps   4 E bytes            exception positions: u32 gaps between successive
                                                flat indices into the (2H, W) image (the first
                                                gap is the first index), as 4 byte planes
                                                (byte 0 of every gap, then byte 1, 2, 3)
                    values 4 E bytes            u32 zigzag codes of the exact residuals (units of
                                                1/16 px) at those positions, as 4 byte planes

Version 1 (datasets written before the nibbles) has no N field (the CRC at offset 13 covers
bytes [0, 13), the zstd frame starts at 17) and stores every code as one byte,
min(code, 255), with no big-code list: `codes` is 2 H W bytes, then gaps and values as above.
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

import cv2
import numpy as np
import pyarrow

__all__ = [
    "FlowCodecError",
    "encode_flow",
    "decode_flow",
    "flow_shape",
    "zero_unrepresentable_outside_mask",
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "QUANT_STEP",
    "MAX_ERROR",
    "MAX_ABS_FLOW",
    "DEFAULT_LEVEL",
]

FORMAT_VERSION = 2
"""The version byte written by `encode_flow`."""

READABLE_VERSIONS = (1, 2)
"""The versions `decode_flow` reads."""

_STEPS_PER_PX = 16
QUANT_STEP = 1.0 / _STEPS_PER_PX
"""Quantisation grid of the stored flow, in pixels (1/16)."""

MAX_ERROR = QUANT_STEP / 2
"""Guaranteed bound on |decoded - flow| per component on every pixel, in pixels (1/32)."""

MAX_ABS_FLOW = (2**19 - 1) / _STEPS_PER_PX
"""Largest representable |flow| component in pixels (32767.9375); larger values raise."""

DEFAULT_LEVEL = 9
"""zstd level of `encode_flow`: ~10-30 Mpixel/s encoding, 7-25% smaller than level 3 (which
encodes at ~60-90 Mpixel/s) and as fast or faster to decode. The decoder does not depend on it."""

_HEADERS = {1: struct.Struct("<BHHII"), 2: struct.Struct("<BHHIII")}  # version, H, W, E, [N,] Z
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEADERS[FORMAT_VERSION].size + _CRC.size  # 21 (version 1: 17)
_MAX_DIM = 0xFFFF
_ESCAPE = 255  # also in _codec_kernels (numba), which readers do not import
_NIBBLE_ESCAPE = 15


class FlowCodecError(ValueError):
    """Flow or mask that cannot be encoded as asked, or bytes that are not a valid encoded flow."""


def _decode_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32)
    residual = (codes >> 1) ^ -(codes & 1)  # inverse zigzag
    residual[_ESCAPE] = 0  # filled from the exception list
    return (residual * QUANT_STEP).astype(np.float32)


_DECODE_TABLE = _decode_table()
# byte -> its two nibbles as one native u16 whose first byte in memory is the high nibble
_NIBBLE_PAIRS = np.stack([np.arange(256) >> 4, np.arange(256) & 15], axis=1).astype(np.uint8).view(np.uint16).reshape(256)
_CODECS: dict[int, pyarrow.Codec] = {}


def _zstd(level: int) -> pyarrow.Codec:
    codec = _CODECS.get(level)
    if codec is None:
        codec = _CODECS[level] = pyarrow.Codec("zstd", compression_level=level)
    return codec


def _check_inputs(flow, mask) -> tuple[int, int]:
    """Validates the inputs; returns H, W."""
    if not isinstance(flow, np.ndarray) or flow.dtype != np.float32 or flow.ndim != 3 or flow.shape[-1] != 2:
        desc = f"{flow.dtype} {flow.shape}" if isinstance(flow, np.ndarray) else type(flow).__name__
        raise FlowCodecError(f"encode_flow: flow must be a float32 numpy array (H, W, 2), got {desc}")
    H, W = flow.shape[:2]
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (H, W):
        desc = f"{mask.dtype} {mask.shape}" if isinstance(mask, np.ndarray) else type(mask).__name__
        raise FlowCodecError(f"encode_flow: mask must be a bool numpy array of shape {(H, W)} (the flow's H, W), got {desc}")
    if not (1 <= H <= _MAX_DIM and 1 <= W <= _MAX_DIM) or 2 * H * W > 0xFFFFFFFF:
        raise FlowCodecError(f"encode_flow: image size {H}x{W} unsupported (need 1 <= H, W <= {_MAX_DIM} and 2 H W < 2^32)")
    return H, W


def _raise_range_error(flow: np.ndarray):
    """Names the first NaN / Inf, or else the largest value beyond MAX_ABS_FLOW, of a flow that failed the encoder's range check."""
    finite = np.isfinite(flow)
    if not finite.all():
        bad = np.argwhere(~finite)
        y, x, c = (int(v) for v in bad[0])
        raise FlowCodecError(f"encode_flow: flow has {len(bad)} non-finite values (first at row {y}, column {x}, component {c}: {flow[y, x, c]})")
    magnitude = np.abs(flow)
    y, x, c = np.unravel_index(int(np.argmax(magnitude)), flow.shape)
    raise FlowCodecError(
        f"encode_flow: flow value {flow[y, x, c]} at row {y}, column {x}, component {c} is beyond the representable "
        f"range |flow| <= {MAX_ABS_FLOW} px ({int((magnitude > MAX_ABS_FLOW).sum())} values out of range)"
    )


def _to_planes(a: np.ndarray) -> bytes:
    """(E,) u32 -> its 4 byte planes, byte 0 of every entry first."""
    return np.ascontiguousarray(a.view(np.uint8).reshape(-1, 4).T).tobytes()


def _from_planes(raw, offset: int, count: int) -> np.ndarray:
    planes = np.frombuffer(raw, np.uint8, 4 * count, offset).reshape(4, count)
    return np.ascontiguousarray(planes.T).view("<u4").reshape(count).astype(np.int64)


def encode_flow(flow: np.ndarray, mask: np.ndarray, *, level: int = DEFAULT_LEVEL) -> bytes:
    """Encodes flow (H, W, 2) float32 and mask (H, W) bool; see the module docstring for the format.

    `level` is the zstd compression level (1-22); the output is readable whatever the level.
    Raises FlowCodecError for a wrong type, dtype or shape, NaN / Inf, or |flow| > MAX_ABS_FLOW.
    """
    from flow3r_jax.data import _codec_kernels  # numba: loaded by writers only

    H, W = _check_inputs(flow, mask)
    flow = np.ascontiguousarray(flow)
    packed, big, index, counts = np.empty(H * W, np.uint8), np.empty(2 * H * W, np.uint8), np.empty(2 * H * W, np.int64), np.empty(2, np.int64)
    if not _codec_kernels.encode_codes(flow, np.float32(MAX_ABS_FLOW), packed, big, index, counts):
        _raise_range_error(flow)
    n_big, n_exceptions = int(counts[0]), int(counts[1])
    index = index[:n_exceptions]
    gaps = np.diff(index, prepend=0).astype("<u4")
    values = _codec_kernels.escape_values(flow, index, np.empty(n_exceptions, "<u4"))
    raw = b"".join((np.packbits(mask).tobytes(), packed.data, big[:n_big].data, _to_planes(gaps), _to_planes(values)))
    try:
        frame = _zstd(level).compress(raw, asbytes=True)
    except (OSError, ValueError, TypeError) as err:
        raise FlowCodecError(f"encode_flow: zstd compression at level {level!r} failed: {err}") from err
    header = _HEADERS[FORMAT_VERSION].pack(FORMAT_VERSION, H, W, n_exceptions, n_big, len(frame))
    crc = zlib.crc32(frame, zlib.crc32(header))
    return header + _CRC.pack(crc) + frame


def zero_unrepresentable_outside_mask(flow: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Sets to (0, 0) the pixels OUTSIDE `mask` whose flow is NaN / Inf or beyond MAX_ABS_FLOW.

    Such values carry no supervision (e.g. exact flow of points behind camera j, which
    `flow3r_jax.geometry.project_points` divides by a tiny depth and marks invalid) but would
    make `encode_flow` raise. Pixels inside the mask are never changed (`encode_flow` still
    rejects them). Returns (flow, number of pixels replaced); the input is not modified (it is
    returned as is when nothing needs replacing). An explicit opt-in: the codec never does this.
    """
    flow, mask = np.asarray(flow), np.asarray(mask)
    bad = ~(np.isfinite(flow) & (np.abs(flow) <= MAX_ABS_FLOW)).all(axis=-1) & ~mask
    count = int(bad.sum())
    if count:
        flow = flow.copy()
        flow[bad] = 0
    return flow, count


class _Header(NamedTuple):
    version: int
    H: int
    W: int
    E: int  # exceptions
    N: int  # big codes (version 2; 0 for version 1)
    Z: int  # zstd frame bytes
    size: int  # header bytes, CRC included


def _parse_header(view: memoryview) -> _Header:
    if len(view) < 1:
        raise FlowCodecError("decode_flow: truncated data: 0 bytes")
    version = view[0]
    if version not in READABLE_VERSIONS:
        raise FlowCodecError(f"decode_flow: unknown flow codec version {version} (this reader knows versions {', '.join(map(str, READABLE_VERSIONS))})")
    fields = _HEADERS[version]
    size = fields.size + _CRC.size
    if len(view) < size:
        raise FlowCodecError(f"decode_flow: truncated data: {len(view)} bytes, shorter than the {size}-byte header of version {version}")
    if version == 1:
        _, H, W, E, Z = fields.unpack_from(view)
        N = 0
    else:
        _, H, W, E, N, Z = fields.unpack_from(view)
    if H == 0 or W == 0:
        raise FlowCodecError(f"decode_flow: corrupt header: image size {H}x{W}")
    return _Header(version, H, W, E, N, Z, size)


def _as_view(data) -> memoryview:
    try:
        view = memoryview(data)
    except TypeError:
        raise FlowCodecError(f"decode_flow: expected bytes, got {type(data).__name__}") from None
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def flow_shape(data: bytes) -> tuple[int, int]:
    """(H, W) of an encoded flow, read from its header only (no decompression, no CRC check)."""
    header = _parse_header(_as_view(data))
    return header.H, header.W


def decode_flow(data: bytes, *, crop: tuple[int, int, int, int] | None = None, out: np.ndarray | None = None, mask_out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decodes `encode_flow` output (any bytes-like object) into flow (H, W, 2) float32 and mask
    (H, W) bool, both new writable arrays. Raises FlowCodecError for truncated, padded, corrupt
    or unknown-version data.

    `crop=(y0, x0, h, w)` returns only that window ((h, w, 2) and (h, w)); `out` / `mask_out`
    receive the result instead of new arrays (any writable float32 / bool arrays of that shape,
    e.g. one slot of a sample's stacked flows: the decoder writes each value once, no copies)."""
    view = _as_view(data)
    header = _parse_header(view)
    H, W, E, N, Z = header.H, header.W, header.E, header.N, header.Z
    y0, x0, h, w = (0, 0, H, W) if crop is None else (int(v) for v in crop)
    if not (0 <= y0 and 0 <= x0 and h >= 1 and w >= 1 and y0 + h <= H and x0 + w <= W):
        raise ValueError(f"decode_flow: crop {crop} (y0, x0, h, w) does not fit the {H}x{W} flow")
    for arr, name, dtype, shape in ((out, "out", np.float32, (h, w, 2)), (mask_out, "mask_out", np.bool_, (h, w))):
        if arr is not None and (not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.shape != shape or not arr.flags.writeable):
            desc = f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
            raise ValueError(f"decode_flow: {name} must be a writable {np.dtype(dtype)} array of shape {shape}, got {desc}")
    if len(view) != header.size + Z:
        what = "truncated" if len(view) < header.size + Z else "trailing bytes after the"
        raise FlowCodecError(f"decode_flow: {what} data: {len(view)} bytes, the header announces {header.size + Z} ({H}x{W} flow)")
    crc_at = header.size - _CRC.size
    (crc,) = _CRC.unpack_from(view, crc_at)
    frame = view[header.size :]
    if zlib.crc32(frame, zlib.crc32(view[:crc_at])) != crc:
        raise FlowCodecError(f"decode_flow: corrupt data: CRC-32 mismatch ({H}x{W} flow, {len(view)} bytes)")
    n_mask, n_codes = (H * W + 7) // 8, 2 * H * W
    n_stored = n_codes if header.version == 1 else H * W + N  # code bytes (version 2: nibbles + big codes)
    try:
        raw = _zstd(DEFAULT_LEVEL).decompress(frame, decompressed_size=n_mask + n_stored + 8 * E)
    except (OSError, ValueError) as err:  # only reachable if the writer itself was broken
        raise FlowCodecError(f"decode_flow: corrupt zstd frame ({H}x{W} flow): {err}") from err
    buf = np.frombuffer(raw, np.uint8)
    full_mask = np.unpackbits(buf[:n_mask], count=H * W).view(np.bool_).reshape(H, W)
    if header.version == 1:
        codes = buf[n_mask : n_mask + n_codes]
    else:
        codes = cv2.LUT(buf[n_mask : n_mask + H * W].reshape(H, W), _NIBBLE_PAIRS).reshape(-1).view(np.uint8)
        if N:
            at = np.flatnonzero(codes == _NIBBLE_ESCAPE)
            if len(at) != N:
                raise FlowCodecError(f"decode_flow: corrupt data: {len(at)} escaped codes, the header announces {N} ({H}x{W} flow)")
            codes[at] = buf[n_mask + H * W : n_mask + H * W + N]
    residual = cv2.LUT(codes.reshape(2 * H, W), _DECODE_TABLE)
    if E:
        index = np.cumsum(_from_planes(raw, n_mask + n_stored, E))
        if index[-1] >= n_codes:
            raise FlowCodecError(f"decode_flow: corrupt exception index {int(index[-1])} >= {n_codes} ({H}x{W} flow)")
        zigzag = _from_planes(raw, n_mask + n_stored + 4 * E, E)
        value = (zigzag >> 1) ^ -(zigzag & 1)
        residual.reshape(-1)[index] = value.astype(np.float32) * np.float32(QUANT_STEP)
    total = cv2.integral(residual, sdepth=cv2.CV_32F)  # (2H + 1, W + 1), exact (see above)
    flow = np.empty((h, w, 2), np.float32) if out is None else out
    rows, cols = slice(1 + y0, 1 + y0 + h), slice(1 + x0, 1 + x0 + w)
    flow[..., 0] = total[rows, cols]  # numpy interleave: cv2.merge is slower on these views
    flow[..., 1] = total[H + rows.start : H + rows.stop, cols]
    if crop is None and mask_out is None:
        return flow, full_mask
    mask = np.empty((h, w), np.bool_) if mask_out is None else mask_out
    mask[...] = full_mask[y0 : y0 + h, x0 : x0 + w]
    return flow, mask
