"""The flow codec's encoder loop, compiled with numba (imported by `encode_flow` on first use, so
that readers, which only decode, never load numba).

One pass per component plane turns the flow into the format's uint8 codes: quantise
(q = rint(16 flow), ties to even), planar prediction residual r = x - up - left + up-left over the
(2H, W) image of dx rows then dy rows (zero outside the image), zigzag, saturate at 255 (the
escape). It replaces nine NumPy / OpenCV passes with temporaries and gives the same bytes
(`tests/data/test_flow_codec.py` checks it against a NumPy statement of the same formula).
"""

from __future__ import annotations

import numba
import numpy as np

ESCAPE = 255


_ROUND = np.float32(1.5 * 2**23)
"""(v + 1.5 2^23) - 1.5 2^23 rounds a float32 |v| <= 2^22 to the nearest integer, ties to even (the
sum lies where float32's spacing is 1), exactly like rint but in plain arithmetic that the
compiler vectorises. The codec's |16 flow| <= 2^19 - 1 is well inside."""


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _q(flow, c, y, x):  # pragma: no cover - compiled
    """q = rint(16 flow[y, x, c]): the product is exact, the rounding ties to even."""
    return np.int32((flow[y, x, c] * np.float32(16.0) + _ROUND) - _ROUND)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def zigzag_codes(flow, codes):  # pragma: no cover - compiled; tested through encode_flow
    """flow (H, W, 2) float32, |flow| <= (2^19 - 1) / 16; codes (2 H W,) uint8, filled.
    Returns the number of escapes (codes equal to 255)."""
    H, W = flow.shape[0], flow.shape[1]
    up = np.zeros(W, np.int32)  # the row above (zeros above the first row)
    row = np.empty(W, np.int32)
    vertical = np.empty(W, np.int32)
    escapes = 0
    for c in range(2):
        for y in range(H):
            for x in range(W):
                row[x] = _q(flow, c, y, x)
                vertical[x] = row[x] - up[x]
            base = (c * H + y) * W
            # residual = vertical - its left neighbour (zero left of the image); |r| < 2^22
            r = vertical[0]
            z = (r << 1) ^ (r >> 31)
            codes[base] = min(z, ESCAPE)
            escapes += z >= ESCAPE
            for x in range(1, W):
                r = vertical[x] - vertical[x - 1]
                z = (r << 1) ^ (r >> 31)
                codes[base + x] = min(z, ESCAPE)
                escapes += z >= ESCAPE
            up, row = row, up
    return escapes


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
