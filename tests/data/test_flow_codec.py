"""Flow codec: error bound and exact mask on every kind of flow, sizes on teacher flows, errors."""

import struct
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from flow3r_jax.data.flow_codec import (
    FORMAT_VERSION,
    HEADER_SIZE,
    MAX_ABS_FLOW,
    MAX_ERROR,
    FlowCodecError,
    decode_flow,
    encode_flow,
    flow_shape,
    zero_unrepresentable_outside_mask,
)


def _check_round_trip(flow, mask, **kw):
    data = encode_flow(flow, mask, **kw)
    got, got_mask = decode_flow(data)
    assert got.dtype == np.float32 and got.shape == flow.shape and got.flags.c_contiguous and got.flags.writeable
    assert got_mask.dtype == np.bool_ and got_mask.shape == mask.shape
    np.testing.assert_array_equal(got_mask, mask)
    err = np.abs(got.astype(np.float64) - flow.astype(np.float64))
    assert err.max() <= MAX_ERROR, err.max()
    # Stronger: the decoded value is exactly the nearest point of the 1/16 grid.
    np.testing.assert_array_equal(got, np.rint(flow.astype(np.float64) * 16) / 16)
    return data, got


def _smooth(rng, H, W, scale):
    low = rng.normal(size=(max(2, H // 8), max(2, W // 8), 2)).astype(np.float32)
    return (cv2.resize(low, (W, H), interpolation=cv2.INTER_CUBIC) * scale).astype(np.float32).reshape(H, W, 2)


def _layers(rng, H, W):
    """Two motion layers: an affine background and a moving rectangle, with the occluded band
    (background pixels the rectangle covers in the other frame) masked out."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32) + 0.5
    flow = np.stack([0.03 * x - 0.02 * y + 3.2, 0.01 * x + 0.04 * y - 1.7], -1)
    fg = (slice(H // 4, 3 * H // 4), slice(W // 5, W // 2))
    flow[fg] = (-61.37, 23.11)
    mask = np.ones((H, W), bool)
    mask[H // 4 : 3 * H // 4, W // 5 - 8 : W // 5] = False
    noise = rng.normal(scale=0.3, size=flow.shape)
    return (flow + noise).astype(np.float32), mask


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (5, 3), (1, 9), (9, 1), (48, 64), (61, 37)])
def test_round_trip_smooth_flows_of_any_size(rng, shape):
    H, W = shape
    flow = _smooth(rng, H, W, 25.0) + rng.normal(scale=0.05, size=(H, W, 2)).astype(np.float32)
    _check_round_trip(flow, rng.random((H, W)) < 0.7)


def test_round_trip_motion_boundaries_and_occlusion(rng):
    flow, mask = _layers(rng, 96, 128)
    data, _ = _check_round_trip(flow, mask)
    assert len(data) < 2 * flow.shape[0] * flow.shape[1]


def test_round_trip_large_and_extreme_flows(rng):
    H, W = 40, 50
    flow = rng.uniform(-MAX_ABS_FLOW, MAX_ABS_FLOW, size=(H, W, 2)).astype(np.float32)
    flow[0, 0] = (MAX_ABS_FLOW, -MAX_ABS_FLOW)
    _check_round_trip(flow, rng.random((H, W)) < 0.5)
    # Checkerboard of +-max: the largest possible prediction residuals (4 x max), all exceptions.
    checker = np.where((np.add.outer(np.arange(H), np.arange(W)) % 2)[..., None] == 0, MAX_ABS_FLOW, -MAX_ABS_FLOW)
    _check_round_trip(np.broadcast_to(checker, (H, W, 2)).astype(np.float32), np.ones((H, W), bool))


def _reference_codes(flow):
    """The zigzag codes (2 H W,) int64 of the format's statement, in NumPy (int64)."""
    q = np.rint(16.0 * flow.astype(np.float64)).astype(np.int64)  # ties to even
    image = np.concatenate((q[..., 0], q[..., 1]), axis=0)  # (2H, W): dx rows, then dy rows
    pad = np.pad(image, ((1, 0), (1, 0)))  # zero outside the image
    residual = pad[1:, 1:] - pad[:-1, 1:] - pad[1:, :-1] + pad[:-1, :-1]
    return ((residual << 1) ^ (residual >> 63)).ravel()


def _planes(a):
    return np.ascontiguousarray(a.astype("<u4").view(np.uint8).reshape(-1, 4).T).tobytes()


def _exceptions(zigzag):
    index = np.flatnonzero(zigzag >= 255)
    return _planes(np.diff(index, prepend=0)) + _planes(zigzag[index])


def _reference_payload(flow, mask):
    """The zstd payload format 2 prescribes, straight from its statement."""
    zigzag = _reference_codes(flow)
    nibbles = np.minimum(zigzag, 15).astype(np.uint8)
    packed = (nibbles[0::2] << 4) | nibbles[1::2]
    big = np.minimum(zigzag[zigzag >= 15], 255).astype(np.uint8)
    return np.packbits(mask).tobytes() + packed.tobytes() + big.tobytes() + _exceptions(zigzag)


def _version1_blob(flow, mask):
    """A complete format-1 blob (what datasets written before format 2 hold), from its statement."""
    import pyarrow

    zigzag = _reference_codes(flow)
    payload = np.packbits(mask).tobytes() + np.minimum(zigzag, 255).astype(np.uint8).tobytes() + _exceptions(zigzag)
    frame = pyarrow.Codec("zstd", compression_level=3).compress(payload, asbytes=True)
    H, W = mask.shape
    header = struct.pack("<BHHII", 1, H, W, int(np.sum(zigzag >= 255)), len(frame))
    return header + struct.pack("<I", zlib.crc32(frame, zlib.crc32(header))) + frame


@pytest.mark.parametrize("kind", ["smooth", "boundaries", "noise", "extreme", "ties"])
def test_encoder_payload_equals_the_format_statement(rng, kind):
    """The compiled encoder loop against the format's formula evaluated in NumPy: the zstd payload
    (mask bits, codes, exception gaps and values) must be byte-identical."""
    import pyarrow

    H, W = 23, 31
    if kind == "smooth":
        flow = _smooth(rng, H, W, 15.0)
    elif kind == "boundaries":
        flow = _smooth(rng, H, W, 3.0)
        flow[:, W // 2 :] += np.float32(300.0)  # a motion boundary: large residuals, exceptions
        flow[H // 3, :, 1] = -2000.0
    elif kind == "noise":
        flow = rng.normal(scale=40.0, size=(H, W, 2)).astype(np.float32)
    elif kind == "extreme":
        checker = np.where((np.add.outer(np.arange(H), np.arange(W)) % 2) == 0, MAX_ABS_FLOW, -MAX_ABS_FLOW)
        flow = np.stack([checker, -checker], -1).astype(np.float32)  # residuals of 4 x max: all exceptions
    else:
        flow = ((rng.integers(-64, 64, size=(H, W, 2)) + 0.5) / 16).astype(np.float32)  # every value a tie
    mask = rng.random((H, W)) < 0.5
    data = encode_flow(flow, mask, level=1)
    assert data[0] == FORMAT_VERSION == 2
    payload = pyarrow.Codec("zstd").decompress(data[HEADER_SIZE:], decompressed_size=len(_reference_payload(flow, mask)), asbytes=True)
    assert payload == _reference_payload(flow, mask)
    _check_round_trip(flow, mask)
    # Datasets written in format 1 decode to the same flow and mask.
    old = _version1_blob(flow, mask)
    new_flow, new_mask = decode_flow(data)
    old_flow, old_mask = decode_flow(old)
    np.testing.assert_array_equal(old_flow, new_flow)
    np.testing.assert_array_equal(old_mask, new_mask)
    assert flow_shape(old) == (H, W)
    with pytest.raises(FlowCodecError, match="truncated"):
        decode_flow(old[:-1])


def test_round_trip_noise_flow(rng):
    """Spatially uncorrelated flow (worst case for the predictor) still round-trips."""
    flow = rng.normal(scale=40.0, size=(33, 47, 2)).astype(np.float32)
    _check_round_trip(flow, rng.random((33, 47)) < 0.5)


@pytest.mark.parametrize("fill", [False, True])
def test_all_and_none_masked(rng, fill):
    flow = _smooth(rng, 24, 31, 5.0)
    _check_round_trip(flow, np.full((24, 31), fill))


def test_grid_values_are_exact_and_reencoding_is_stable(rng):
    flow = np.rint(_smooth(rng, 30, 40, 50.0) * 16).astype(np.float32) / 16
    mask = rng.random((30, 40)) < 0.5
    data = encode_flow(flow, mask)
    got, _ = decode_flow(data)
    np.testing.assert_array_equal(got, flow)
    assert encode_flow(got, mask) == data


def test_levels_and_bytes_like_inputs(rng):
    flow, mask = _layers(rng, 32, 48)
    fast, best = encode_flow(flow, mask, level=1), encode_flow(flow, mask, level=19)
    a, b = decode_flow(fast), decode_flow(bytearray(best))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(decode_flow(memoryview(fast))[1], mask)
    assert flow_shape(best) == (32, 48)


@pytest.mark.parametrize("crop", [None, (0, 0, 30, 41), (3, 5, 20, 30), (29, 40, 1, 1), (0, 7, 30, 1)])
def test_decode_window_into_given_arrays_equals_slicing_the_full_decode(rng, crop):
    flow, mask = _layers(rng, 30, 41)
    data = encode_flow(flow, mask)
    full, full_mask = decode_flow(data)
    y0, x0, h, w = (0, 0, 30, 41) if crop is None else crop
    # Into slot 1 of a stacked buffer (as the training sample builder does), pre-filled with junk.
    stack, masks = np.full((3, h, w, 2), 7.0, np.float32), np.ones((3, h, w), bool)
    slot, mask_slot = stack[1], masks[1]
    got, got_mask = decode_flow(data, crop=crop, out=slot, mask_out=mask_slot)
    assert got is slot and got_mask is mask_slot
    np.testing.assert_array_equal(stack[1], full[y0 : y0 + h, x0 : x0 + w])
    np.testing.assert_array_equal(masks[1], full_mask[y0 : y0 + h, x0 : x0 + w])
    assert (stack[[0, 2]] == 7.0).all() and masks[[0, 2]].all()  # neighbours untouched
    # Without out arrays: new ones of the window's shape.
    a, b = decode_flow(data, crop=crop)
    np.testing.assert_array_equal(a, full[y0 : y0 + h, x0 : x0 + w])
    np.testing.assert_array_equal(b, full_mask[y0 : y0 + h, x0 : x0 + w])


def test_decode_window_errors(rng):
    data = encode_flow(*_layers(rng, 10, 12))
    with pytest.raises(ValueError, match="does not fit the 10x12 flow"):
        decode_flow(data, crop=(5, 0, 6, 12))
    with pytest.raises(ValueError, match="does not fit"):
        decode_flow(data, crop=(0, -1, 4, 4))
    with pytest.raises(ValueError, match="out must be a writable float32 array of shape \\(4, 4, 2\\)"):
        decode_flow(data, crop=(0, 0, 4, 4), out=np.zeros((4, 4, 2), np.float64))
    with pytest.raises(ValueError, match="mask_out must be"):
        decode_flow(data, mask_out=np.zeros((10, 12), np.uint8))


def test_ties_round_to_even_within_bound():
    flow = np.array([[[1 / 32, -3 / 32], [5 / 32, 0.0]]], np.float32)
    got, _ = decode_flow(encode_flow(flow, np.ones((1, 2), bool)))
    np.testing.assert_array_equal(got, [[[0.0, -0.125], [0.125, 0.0]]])


@given(
    st.integers(1, 9).flatmap(
        lambda h: st.integers(1, 9).flatmap(
            lambda w: st.tuples(
                hnp.arrays(np.float32, (h, w, 2), elements=st.floats(-MAX_ABS_FLOW, MAX_ABS_FLOW, width=32)),
                hnp.arrays(np.bool_, (h, w)),
            )
        )
    )
)
def test_property_error_bound_and_exact_mask(flow_and_mask):
    flow, mask = flow_and_mask
    _check_round_trip(flow, mask)


@given(hnp.arrays(np.float32, (6, 7, 2), elements=st.floats(-300, 300, width=32)), st.integers(0, 2**32 - 1))
def test_property_smooth_plus_arbitrary(noise, seed):
    flow = _smooth(np.random.default_rng(seed), 6, 7, 100.0) + noise
    _check_round_trip(flow.astype(np.float32), np.random.default_rng(seed).random((6, 7)) < 0.5)


# --- errors -----------------------------------------------------------------------------------


def _good(rng):
    return _smooth(rng, 8, 10, 3.0), np.ones((8, 10), bool)


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda f, m: (f.astype(np.float64), m), "float32"),
        (lambda f, m: (f.astype(np.float16), m), "float32"),
        (lambda f, m: (f[..., :1], m), r"\(H, W, 2\)"),
        (lambda f, m: (f[None], m), r"\(H, W, 2\)"),
        (lambda f, m: (f.tolist(), m), "list"),
        (lambda f, m: (f, m.astype(np.uint8)), "bool"),
        (lambda f, m: (f, m[:, :-1]), r"\(8, 10\)"),
        (lambda f, m: (f[:0], m[:0]), "unsupported"),
    ],
)
def test_encode_rejects_bad_input(rng, bad, match):
    with pytest.raises(FlowCodecError, match=match):
        encode_flow(*bad(*_good(rng)))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_encode_rejects_non_finite(rng, value):
    flow, mask = _good(rng)
    flow[3, 4, 1] = value
    with pytest.raises(FlowCodecError, match=r"non-finite.*row 3, column 4, component 1"):
        encode_flow(flow, mask)


def test_encode_rejects_out_of_range_instead_of_clipping(rng):
    flow, mask = _good(rng)
    flow[2, 5, 0] = np.nextafter(np.float32(MAX_ABS_FLOW), np.float32(np.inf))
    with pytest.raises(FlowCodecError, match=r"row 2, column 5.*beyond the representable range"):
        encode_flow(flow, mask)
    flow[2, 5, 0] = -1e6
    with pytest.raises(FlowCodecError, match="beyond the representable range"):
        encode_flow(flow, mask)


def test_zero_unrepresentable_outside_mask_is_explicit_and_local(rng):
    flow, mask = _good(rng)
    mask[0, :3] = False
    flow[0, 0, 0], flow[0, 1, 1] = 3.6e8, np.nan  # outside the mask: replaced by (0, 0)
    original = flow.copy()
    fixed, count = zero_unrepresentable_outside_mask(flow, mask)
    assert count == 2
    np.testing.assert_array_equal(original, flow)  # input untouched
    np.testing.assert_array_equal(fixed[0, :2], 0)
    np.testing.assert_array_equal(fixed[0, 2:], flow[0, 2:])
    np.testing.assert_array_equal(fixed[1:], flow[1:])
    _check_round_trip(fixed, mask)
    assert zero_unrepresentable_outside_mask(fixed, mask)[1] == 0
    flow[4, 4, 0] = 1e6  # inside the mask: left alone, so encoding still refuses it
    with pytest.raises(FlowCodecError, match="row 4, column 4"):
        encode_flow(zero_unrepresentable_outside_mask(flow, mask)[0], mask)


def test_decode_rejects_corrupt_truncated_and_unknown_data(rng):
    data = encode_flow(*_layers(rng, 20, 30))
    with pytest.raises(FlowCodecError, match="truncated"):
        decode_flow(data[:-1])
    with pytest.raises(FlowCodecError, match="truncated"):
        decode_flow(data[: HEADER_SIZE - 3])
    with pytest.raises(FlowCodecError, match="truncated"):
        decode_flow(b"")
    with pytest.raises(FlowCodecError, match="trailing"):
        decode_flow(data + b"\0")
    with pytest.raises(FlowCodecError, match="unknown flow codec version 7"):
        decode_flow(bytes([7]) + data[1:])
    with pytest.raises(FlowCodecError, match="expected bytes"):
        decode_flow(12345)
    for pos in (1, 4, 6, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 5, len(data) // 2, len(data) - 1):
        bad = bytearray(data)
        bad[pos] ^= 0x5A
        with pytest.raises(FlowCodecError, match="corrupt|truncated|trailing"):
            decode_flow(bytes(bad))
    # A payload whose nibbles of 15 disagree with the header's big-code count, under a valid CRC
    # (only a broken writer makes one): refused, not decoded with the big codes shifted.
    import pyarrow

    flow = _smooth(rng, 20, 30, 3.0)
    flow[:, 15:] += np.float32(5.0)  # a motion boundary: codes >= 15
    mask = np.ones((20, 30), bool)
    payload = bytearray(_reference_payload(flow, mask))
    (n_big,) = struct.unpack_from("<I", encode_flow(flow, mask), 9)
    first = next(k for k in range(75, 75 + 600) if payload[k] >> 4 == 15)  # after the 75 mask bytes
    payload[first] &= 0x0F  # one escaped code fewer, same length
    frame = pyarrow.Codec("zstd").compress(bytes(payload), asbytes=True)
    header = struct.pack("<BHHIII", 2, 20, 30, 0, n_big, len(frame))
    forged = header + struct.pack("<I", zlib.crc32(frame, zlib.crc32(header))) + frame
    with pytest.raises(FlowCodecError, match=f"corrupt data: {n_big - 1} escaped codes, the header announces {n_big}"):
        decode_flow(forged)
    # A zero-sized image in the header is rejected before anything else.
    with pytest.raises(FlowCodecError, match="image size 0x30"):
        decode_flow(bytes([FORMAT_VERSION]) + struct.pack("<H", 0) + data[3:])


# --- real teacher flows -------------------------------------------------------------------------


def test_dis_teacher_flows_fit_two_bytes_per_pixel():
    import jax.numpy as jnp

    from flow3r_jax.correspondence.teacher import DISTeacher, compute_pair_flows
    from data_pipelines.synthetic import SceneConfig, generate_clip
    from flow3r_jax.geometry import forward_backward_mask

    cfg = SceneConfig(height=64, width=96, frames=6, offsets=(1, 2), dynamic=True, kind="room", preset="orbit")
    clip = generate_clip(cfg, seed=3)
    pairs = clip["pairs"]
    flows = compute_pair_flows(DISTeacher(), clip["images"], pairs).flow
    index = {tuple(p): k for k, p in enumerate(pairs.tolist())}
    backward = flows[[index[(j, i)] for i, j in pairs.tolist()]]
    masks = np.asarray(forward_backward_mask(jnp.asarray(flows), jnp.asarray(backward), alpha=0.01, beta=0.5))
    total = 0
    for flow, mask in zip(flows, masks):
        data, _ = _check_round_trip(flow, mask)
        total += len(data)
    bytes_per_pixel = total / flows[..., 0].size
    assert bytes_per_pixel <= 2.0, bytes_per_pixel
    # And the exact flows of the same clip.
    for flow, mask in zip(clip["flow"], clip["covisible"]):
        _check_round_trip(flow, mask)
