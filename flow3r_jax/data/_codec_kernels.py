"""The flow codec's encoder loop, compiled with numba (imported by `encode_flow` on first use, so
that readers, which only decode, never load numba).

One pass over the flow turns it into the format's codes: range check, quantise (q = rint(16 flow),
ties to even), planar prediction residual r = x - up - left + up-left over the (2H, W) image of dx
rows then dy rows (zero outside the image), zigzag. It replaces a dozen NumPy / OpenCV passes with
temporaries and gives the same bytes
(`tests/data/test_flow_codec.py` checks it against a NumPy statement of the same formula), and
packs them two per byte with the big codes and exception positions on the side (format 2).
"""

from __future__ import annotations

import numba
import numpy as np

ESCAPE = 255
NIBBLE_ESCAPE = 15  # format 2: a nibble of 15 means "the code is in the byte list"


_ROUND = np.float32(1.5 * 2**23)
"""(v + 1.5 2^23) - 1.5 2^23 rounds a float32 |v| <= 2^22 to the nearest integer, ties to even (the
sum lies where float32's spacing is 1), exactly like rint but in plain arithmetic that the
compiler vectorises. The codec's |16 flow| <= 2^19 - 1 is well inside."""


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _rint16(v):  # pragma: no cover - compiled
    """rint(16 v) of a float32 v as int32: the product is exact, the rounding ties to even."""
    return np.int32((v * np.float32(16.0) + _ROUND) - _ROUND)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _q(flow, c, y, x):  # pragma: no cover - compiled
    """q = rint(16 flow[y, x, c])."""
    return _rint16(flow[y, x, c])


@numba.njit(cache=True, nogil=True, error_model="numpy")
def encode_codes(flow, max_abs, packed, big, index, counts):  # pragma: no cover - compiled; tested through encode_flow
    """flow (H, W, 2) float32 -> format 2's code stream, in one pass over the flow.

    packed (H W,) uint8: the 2 H W codes two per byte (the first in the high nibble), each
    min(code, 15); big (2 H W,) uint8: min(code, 255) of the codes >= 15, in order; index
    (2 H W,) int64: the flat positions of the codes >= 255 (the exceptions). counts (2,) int64
    receives [number of big codes, number of exceptions]. Returns False if some |flow| > max_abs
    or is NaN (the outputs are then meaningless; the caller reports the value).

    Each row goes through branch-free loops that the compiler vectorises (quantise, residual,
    zigzag, nibble, pack); only rows holding a code >= 15 get a scalar pass for the big codes."""
    H, W = flow.shape[0], flow.shape[1]
    up = np.zeros(W, np.int32)  # the row above (zeros above the first row)
    row = np.empty(W, np.int32)
    vertical = np.empty(W, np.int32)
    z = np.empty(W, np.int32)
    nib = np.empty(W + 1, np.uint8)  # [carried code of the previous row,] this row's nibbles
    n_big = n_exc = 0
    bad = 0
    carry = False  # odd W: a row's last nibble waits for the next row's first
    byte = 0
    for c in range(2):
        for y in range(H):
            for x in range(W):
                v = flow[y, x, c]
                bad += not (abs(v) <= max_abs)  # also NaN
                row[x] = _rint16(v)
                vertical[x] = row[x] - up[x]
            # residual = vertical - its left neighbour (zero left of the image), zigzagged
            r = vertical[0]
            z[0] = (r << 1) ^ (r >> 31)
            for x in range(1, W):
                r = vertical[x] - vertical[x - 1]
                z[x] = (r << 1) ^ (r >> 31)
            large = 0
            o = 1 if carry else 0
            for x in range(W):
                large += z[x] >= NIBBLE_ESCAPE
                nib[o + x] = min(z[x], NIBBLE_ESCAPE)
            if large:  # rare: the row's big codes and exceptions, in order
                base = (c * H + y) * W
                for x in range(W):
                    if z[x] >= NIBBLE_ESCAPE:
                        if z[x] >= ESCAPE:
                            index[n_exc] = base + x
                            n_exc += 1
                        big[n_big] = min(z[x], ESCAPE)
                        n_big += 1
            n = o + W
            for k in range(n // 2):
                packed[byte + k] = (nib[2 * k] << 4) | nib[2 * k + 1]
            byte += n // 2
            carry = n % 2 == 1
            if carry:
                nib[0] = nib[n - 1]
            up, row = row, up
    counts[0], counts[1] = n_big, n_exc
    return bad == 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def escape_values(flow, index, values):  # pragma: no cover - compiled; tested through encode_flow
    """The exact zigzag codes (uint32) at the flat (2H, W) positions `index` (int64) into `values`."""
    H, W = flow.shape[0], flow.shape[1]
    for k in range(index.shape[0]):
        i = index[k]
        r_img, x = i // W, i % W
        c, y = r_img // H, r_img % H
        v = np.int64(_q(flow, c, y, x))
        if x > 0:
            v -= _q(flow, c, y, x - 1)
        if r_img > 0:
            uc, uy = (r_img - 1) // H, (r_img - 1) % H
            v -= _q(flow, uc, uy, x)
            if x > 0:
                v += _q(flow, uc, uy, x - 1)
        values[k] = np.uint32((v << 1) ^ (v >> 63))
    return values

