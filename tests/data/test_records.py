"""Clip records: round trips of both kinds, lazy decoding, and schema errors naming the field."""

import dataclasses
import zlib

import cv2
import numpy as np
import pytest

from flow3r_jax.data import flow_codec, records
from flow3r_jax.data.records import (
    SCHEMA_VERSION,
    FrameCodecError,
    LabeledClip,
    RecordSchemaError,
    UnlabeledClip,
    decode_jpeg,
    decode_record,
    encode_jpeg,
    encode_record,
    labeled_clip_from_arrays,
)

K, H, W = 5, 40, 56


def _frames(rng, k=K, h=H, w=W):
    low = rng.integers(0, 256, (k, h // 8, w // 8, 3), dtype=np.uint8)  # smooth, like video frames
    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC) for f in low])


def _flows(rng, pairs, h=H, w=W):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    flows, masks = [], []
    for i, j in pairs:
        flows.append(np.stack([0.1 * (j - i) * x + 2.3, -0.05 * y + 1.1 * (j - i)], -1).astype(np.float32))
        masks.append(rng.random((h, w)) < 0.8)
    return np.stack(flows), np.stack(masks)


def _unlabeled(rng, frames=None, **overrides):
    pairs = np.array([[0, 1], [1, 0], [0, 2], [2, 0], [3, 4]], np.int32)
    flows, masks = _flows(rng, pairs)
    fields = dict(
        video_id="yt:abc123",
        frame_times=np.arange(K, dtype=np.float32) / 30,
        frames_jpeg=encode_jpeg(_frames(rng) if frames is None else frames),
        height=H,
        width=W,
        pairs=pairs,
        flows=[flow_codec.encode_flow(f, m) for f, m in zip(flows, masks)],
        tracks_xy=rng.uniform(0, W, (K, 7, 2)).astype(np.float32),
        tracks_visible=rng.random((K, 7)) < 0.6,
        teacher_name="opencv-dis",
        teacher_version="opencv-5.0.0-medium",
        source="gs://bucket/videos/abc123.mp4",
        extra={"fps": 29.97, "num_source_frames": 1234, "license": "cc-by"},
    )
    fields.update(overrides)
    return UnlabeledClip(**fields), flows, masks


def _arrays(rng, with_flow=True):
    """A dict shaped like `data_pipelines.synthetic.generate_clip` output."""
    pairs = np.array([[0, 1], [1, 0], [1, 3]], np.int32)
    flow, covisible = _flows(rng, pairs)
    depth = rng.uniform(0.5, 20, (K, H, W)).astype(np.float32)
    valid = rng.random((K, H, W)) < 0.9
    depth[~valid] = 0
    poses = np.tile(np.eye(4, dtype=np.float32), (K, 1, 1))
    poses[:, :3, 3] = rng.normal(size=(K, 3))
    intrinsics = np.tile(np.array([[50, 0, W / 2], [0, 50, H / 2], [0, 0, 1]], np.float32), (K, 1, 1))
    out = dict(images=_frames(rng), depth=depth, valid=valid, poses=poses, intrinsics=intrinsics, times=np.arange(K) / 30.0)
    if with_flow:
        out.update(pairs=pairs, flow=flow, covisible=covisible, dynamic=rng.random((K, H, W)) < 0.1)
    return out


def _assert_same(a, b):
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert isinstance(y, np.ndarray) and x.dtype == y.dtype and x.shape == y.shape, f.name
            np.testing.assert_array_equal(x, y, err_msg=f.name)
        elif isinstance(x, list):
            assert [bytes(v) for v in x] == y, f.name
        else:
            assert type(x) is type(y) and x == y, f.name


def _assert_jpeg_close(decoded, original):
    diff = decoded.astype(np.float64) - original
    psnr = 10 * np.log10(255**2 / np.mean(diff**2))
    assert decoded.shape == original.shape and decoded.dtype == np.uint8
    assert np.abs(diff).mean() < 3.0 and psnr > 32, (np.abs(diff).mean(), psnr)


def test_unlabeled_round_trip(rng):
    frames = _frames(rng)
    clip, flows, masks = _unlabeled(rng, frames)
    data = encode_record(clip)
    got = decode_record(data)
    assert type(got) is UnlabeledClip
    _assert_same(clip, got)
    assert got.extra == {"fps": 29.97, "num_source_frames": 1234, "license": "cc-by"}
    assert isinstance(got.extra["num_source_frames"], int) and isinstance(got.extra["fps"], float)
    assert got.num_frames == K and got.num_pairs == 5
    _assert_jpeg_close(got.decode_frames(), frames)
    for p in range(5):
        flow, mask = got.decode_flow(p)
        assert np.abs(flow - flows[p]).max() <= flow_codec.MAX_ERROR
        np.testing.assert_array_equal(mask, masks[p])
    assert encode_record(got) == data  # stable: decode then encode gives the same bytes


def test_jpeg_frames_within_tolerance(rng):
    frames = _frames(rng)
    _assert_jpeg_close(decode_jpeg(encode_jpeg(frames)), frames)
    np.testing.assert_array_equal(decode_jpeg(records.encode_png(frames)), frames)


def test_unlabeled_without_tracks(rng):
    clip, _, _ = _unlabeled(rng, tracks_xy=np.zeros((K, 0, 2), np.float32), tracks_visible=np.zeros((K, 0), bool), extra={})
    got = decode_record(encode_record(clip))
    assert got.tracks_xy.shape == (K, 0, 2) and got.tracks_visible.shape == (K, 0) and got.extra == {}


@pytest.mark.parametrize("frames_format", ["jpeg", "png"])
def test_labeled_round_trip_from_arrays(rng, frames_format):
    arrays = _arrays(rng)
    clip = labeled_clip_from_arrays(clip_id="scene-7", frames_format=frames_format, extra={"seed": 7}, **arrays)
    got = decode_record(encode_record(clip))
    assert type(got) is LabeledClip
    _assert_same(clip, got)
    assert got.dataset == "synthetic" and got.high_quality is True and got.frames_format == frames_format
    np.testing.assert_array_equal(got.depth, arrays["depth"])  # depth is lossless
    np.testing.assert_array_equal(got.valid, arrays["valid"])
    np.testing.assert_array_equal(got.dynamic, arrays["dynamic"])
    np.testing.assert_array_equal(got.poses, arrays["poses"])
    np.testing.assert_array_equal(got.frame_times, arrays["times"].astype(np.float32))
    frames = got.decode_frames([4, 0])
    if frames_format == "png":
        np.testing.assert_array_equal(frames, arrays["images"][[4, 0]])
    else:
        _assert_jpeg_close(frames, arrays["images"][[4, 0]])
    for p in range(len(arrays["pairs"])):
        flow, mask = got.decode_flow(p)
        assert np.abs(flow - arrays["flow"][p]).max() <= flow_codec.MAX_ERROR
        np.testing.assert_array_equal(mask, arrays["covisible"][p])


def test_converter_zeroes_only_meaningless_flow_outside_covisibility(rng):
    arrays = _arrays(rng)
    flow, covisible = arrays["flow"].copy(), arrays["covisible"].copy()
    covisible[1, 5, :4] = False
    flow[1, 5, :4] = 2.7e8  # e.g. exact flow of a point behind camera j
    clip = labeled_clip_from_arrays(clip_id="behind", **{**arrays, "flow": flow, "covisible": covisible})
    got, mask = decode_record(encode_record(clip)).decode_flow(1)
    np.testing.assert_array_equal(mask, covisible[1])
    np.testing.assert_array_equal(got[5, :4], 0)
    keep = np.ones(mask.shape, bool)
    keep[5, :4] = False
    assert np.abs(got[keep] - flow[1][keep]).max() <= flow_codec.MAX_ERROR
    covisible[1, 5, 0] = True  # a covisible pixel out of range is an error, not zeroed
    with pytest.raises(RecordSchemaError, match="'behind': field 'flows': .*beyond the representable range"):
        labeled_clip_from_arrays(clip_id="behind", **{**arrays, "flow": flow, "covisible": covisible})


def test_labeled_without_optional_fields(rng):
    clip = labeled_clip_from_arrays(clip_id="static", dataset="scannet", high_quality=False, **_arrays(rng, with_flow=False))
    got = decode_record(encode_record(clip))
    _assert_same(clip, got)
    assert got.pairs is None and got.flows is None and got.dynamic is None and got.num_pairs == 0
    with pytest.raises(RecordSchemaError, match="'static'.*no flows"):
        got.decode_flow(0)


def test_labeled_from_synthetic_generate_clip():
    from data_pipelines.synthetic import SceneConfig, generate_clip

    # Same config as the codec test, so the rendering kernels compile once per test session.
    clip = generate_clip(SceneConfig(height=64, width=96, frames=6, offsets=(1, 2), dynamic=True, kind="room", preset="orbit"), seed=3)
    keys = ("images", "depth", "valid", "poses", "intrinsics", "times", "pairs", "flow", "covisible", "dynamic")
    record = labeled_clip_from_arrays(clip_id="synthetic-3", frames_format="png", **{k: clip[k] for k in keys})
    got = decode_record(encode_record(record))
    np.testing.assert_array_equal(got.depth, clip["depth"])
    np.testing.assert_array_equal(got.decode_frames(), clip["images"])
    for p in (0, len(clip["pairs"]) - 1):
        flow, mask = got.decode_flow(p)
        assert np.abs(flow - clip["flow"][p]).max() <= flow_codec.MAX_ERROR
        np.testing.assert_array_equal(mask, clip["covisible"][p])


def test_blob_views_read_the_same_without_copies(rng):
    clip, _, _ = _unlabeled(rng)
    data = encode_record(clip)
    copied, viewed = decode_record(data), decode_record(data, blob_views=True)
    assert all(isinstance(b, memoryview) and b.readonly for b in viewed.frames_jpeg + viewed.flows)
    assert [bytes(b) for b in viewed.frames_jpeg + viewed.flows] == copied.frames_jpeg + copied.flows
    np.testing.assert_array_equal(viewed.decode_frames([1, 3]), copied.decode_frames([1, 3]))
    for a, b in zip(viewed.decode_flow(2), copied.decode_flow(2)):
        np.testing.assert_array_equal(a, b)
    assert encode_record(viewed) == data  # views re-encode to the same record


def test_decoding_is_lazy(rng, monkeypatch):
    clip, _, _ = _unlabeled(rng)
    data = encode_record(clip)
    calls = {"imdecode": 0, "flow": 0}
    imdecode, decode_flow = cv2.imdecode, flow_codec.decode_flow

    def counting_imdecode(*args):
        calls["imdecode"] += 1
        return imdecode(*args)

    def counting_decode_flow(*args, **kwargs):
        calls["flow"] += 1
        return decode_flow(*args, **kwargs)

    monkeypatch.setattr(cv2, "imdecode", counting_imdecode)
    monkeypatch.setattr(flow_codec, "decode_flow", counting_decode_flow)
    got = decode_record(data)
    assert calls == {"imdecode": 0, "flow": 0}
    assert all(isinstance(b, bytes) for b in got.frames_jpeg + got.flows)
    assert got.decode_frames([3]).shape == (1, H, W, 3) and calls["imdecode"] == 1
    got.decode_flow(2)
    assert calls["flow"] == 1


# --- errors -----------------------------------------------------------------------------------


def _reseal(data: bytes) -> bytes:
    body = data[:-4]
    return body + zlib.crc32(body).to_bytes(4, "little")


def test_schema_version_mismatch_and_bad_headers(rng):
    data = encode_record(_unlabeled(rng)[0])
    newer = _reseal(data[:6] + (SCHEMA_VERSION["unlabeled"] + 1).to_bytes(2, "little") + data[8:])
    with pytest.raises(RecordSchemaError, match="unlabeled record has schema version 2, this reader supports version 1"):
        decode_record(newer)
    with pytest.raises(RecordSchemaError, match="unknown record kind tag 9"):
        decode_record(_reseal(data[:5] + bytes([9]) + data[6:]))
    with pytest.raises(RecordSchemaError, match="container version 3"):
        decode_record(data[:4] + bytes([3]) + data[5:])
    with pytest.raises(RecordSchemaError, match="not a clip record"):
        decode_record(b"PK\x03\x04" + data[4:])
    for cut in (3, 20, len(data) // 2, len(data) - 1):
        with pytest.raises(RecordSchemaError):
            decode_record(data[:cut])
    with pytest.raises(RecordSchemaError, match="trailing"):
        decode_record(_reseal(data[:-4] + b"\0" + data[-4:]))


def _pack_fields(clip, drop=(), replace=None):
    """Container bytes of `clip` with fields dropped or replaced, bypassing validation."""
    values = {f.name: getattr(clip, f.name) for f in clip.FIELDS}
    values.update(replace or {})
    fields = [(f.name, records._pack_value(f, values[f.name])) for f in clip.FIELDS if f.name not in drop]
    return records._pack(clip.KIND, clip.SCHEMA_VERSION, fields)


def test_missing_and_unknown_fields(rng):
    clip = _unlabeled(rng)[0]
    with pytest.raises(RecordSchemaError, match=r"UnlabeledClip 'yt:abc123': missing field\(s\) \['tracks_xy'\]"):
        decode_record(_pack_fields(clip, drop=("tracks_xy",)))
    extra_field = records._pack(clip.KIND, clip.SCHEMA_VERSION, [("bogus", [bytes([records._T_NONE])])])
    with pytest.raises(RecordSchemaError, match="'bogus': unknown field"):
        decode_record(extra_field)


def test_nan_in_labels_names_field_and_clip(rng):
    arrays = _arrays(rng)
    clip = labeled_clip_from_arrays(clip_id="scene-nan", **arrays)
    depth = clip.depth.copy()
    depth[2, 3, 4] = np.nan
    with pytest.raises(RecordSchemaError, match=r"LabeledClip 'scene-nan': field 'depth': has 1 NaN / Inf"):
        encode_record(dataclasses.replace(clip, depth=depth))
    poses = clip.poses.copy()
    poses[1, 0, 3] = np.inf
    with pytest.raises(RecordSchemaError, match=r"'scene-nan': field 'poses': has 1 NaN / Inf"):
        decode_record(_pack_fields(clip, replace={"poses": poses}))  # caught on read too
    with pytest.raises(RecordSchemaError, match=r"'scene-nan': field 'depth'"):
        labeled_clip_from_arrays(clip_id="scene-nan", **{**arrays, "depth": depth})
    with pytest.raises(RecordSchemaError, match=r"field 'extra': value of 'x' is nan"):
        encode_record(dataclasses.replace(clip, extra={"x": float("nan")}))


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("frame_times", np.arange(K, dtype=np.float64), r"'frame_times': expected float32 array \(K\), got float64"),
        ("frame_times", np.arange(K + 1, dtype=np.float32), r"'frame_times': has shape \(6,\), expected \(K\) with K = 5"),
        ("height", "40", "'height': expected a positive int"),
        ("height", H + 1, r"'flows': entry 0 is a 40x56 flow, the clip is 41x56"),
        ("pairs", np.array([[0, 5]], np.int32), r"'flows': has 5 entries, expected P with P = 1"),
        ("tracks_visible", np.zeros((K, 3), bool), r"'tracks_visible': has shape \(5, 3\), expected \(K, M\) with M = 7"),
        ("frames_jpeg", [b"\x89PNG\r\n\x1a\n...."] * K, "'frames_jpeg': frame 0 is not a JPEG file"),
        ("video_id", None, "'video_id': is required"),
        ("extra", {"nested": {"a": 1}}, "'extra': value of 'nested' must be str, int or float"),
        ("flows", [b"\x07" + b"\0" * 20] * 5, "'flows': entry 0: .*unknown flow codec version 7"),
    ],
)
def test_mistyped_fields_are_rejected(rng, field, value, match):
    clip = _unlabeled(rng)[0]
    with pytest.raises(RecordSchemaError, match=match):
        encode_record(dataclasses.replace(clip, **{field: value}))


def test_pair_indices_checked(rng):
    clip = _unlabeled(rng)[0]
    pairs = clip.pairs.copy()
    pairs[1] = (4, 5)
    with pytest.raises(RecordSchemaError, match=r"'pairs': frame indices must be in \[0, 5\)"):
        encode_record(dataclasses.replace(clip, pairs=pairs))
    pairs[1] = (2, 2)
    with pytest.raises(RecordSchemaError, match="'pairs': pair 1 maps a frame to itself"):
        encode_record(dataclasses.replace(clip, pairs=pairs))


def test_frame_helpers_errors(rng):
    with pytest.raises(FrameCodecError, match=r"uint8 RGB \(K, H, W, 3\)"):
        encode_jpeg(np.zeros((2, 8, 8, 3), np.float32))
    a, b = encode_jpeg(_frames(rng, k=1)), encode_jpeg(_frames(rng, k=1, h=32))
    with pytest.raises(FrameCodecError, match="frame 1 has shape"):
        decode_jpeg(a + b)
    with pytest.raises(FrameCodecError, match="frame 0 .* not a decodable image"):
        decode_jpeg([b"\xff\xd8\xff garbage"])
    clip = _unlabeled(rng)[0]
    with pytest.raises(IndexError, match="frame indices"):
        clip.decode_frames([K])


def test_package_exports_are_lazy():
    import subprocess
    import sys

    code = (
        "import sys, flow3r_jax.data as d; "
        "assert 'cv2' not in sys.modules and 'pyarrow' not in sys.modules, 'heavy import'; "
        "assert d.decode_record is d.records.decode_record and d.encode_flow is d.flow_codec.encode_flow; "
        "assert 'LabeledClip' in dir(d)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
