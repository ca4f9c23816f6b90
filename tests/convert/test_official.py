"""The official <-> ours converter: the plan against official_keys.json, value round trips,
layout transforms against the torch semantics they encode, and error reporting."""

import json
import pathlib
import zlib

import numpy as np
import pytest

from flow3r_jax.convert.official import BUFFERS, ConversionError, conversion_plan, convert_state_dict, export_state_dict, official_shape
from flow3r_jax.models import get_model_config
from flow3r_jax.models.pretrained import abstract_params

# The fact list of ../shared/tools/parity/official_keys.json (all 1278 official keys and shapes).
OFFICIAL_KEYS = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "official_keys.json"


class LazyRandomStateDict(dict):
    """{key: shape} that materialises deterministic random values only when a key is read, so a
    1B-parameter state dict never exists in memory at once."""

    def __init__(self, shapes):
        super().__init__(shapes)

    def shape(self, key):
        return tuple(super().__getitem__(key))

    def value(self, key):
        rng = np.random.default_rng(zlib.crc32(key.encode()))
        return rng.standard_normal(self.shape(key), dtype=np.float32)

    def __getitem__(self, key):
        if key in BUFFERS:
            return BUFFERS[key]
        return self.value(key)


@pytest.fixture(scope="module")
def official():
    return {k: tuple(v["shape"]) for k, v in json.loads(OFFICIAL_KEYS.read_text())["state_dict"].items()}


@pytest.fixture(scope="module")
def large_shapes():
    return abstract_params(get_model_config("large"))[2]


def test_plan_covers_every_official_key_with_its_shape(official, large_shapes):
    slots = conversion_plan(large_shapes)
    planned = {s.key: official_shape(s) for s in slots}
    assert len(official) == 1278
    assert set(planned) | set(BUFFERS) == set(official)
    assert {k: v for k, v in official.items() if k not in BUFFERS} == planned


@pytest.mark.slow
def test_large_round_trip_with_random_values(official, large_shapes):
    """official -> ours -> official reproduces every tensor exactly (values generated lazily)."""
    sd = LazyRandomStateDict(official)
    params, report = convert_state_dict(sd, large_shapes)
    assert report.loaded == 1276 and not report.left_at_init
    # Spot-check layouts against their torch meaning on ours: a Linear kernel is weight.T.
    np.testing.assert_array_equal(params[("decoder", "pairs", "global_", "attn", "qkv", "kernel")][17], sd.value("decoder.35.attn.qkv.weight").T)
    np.testing.assert_array_equal(params[("flow_head", "mlp", "2", "kernel")], sd.value("flow_head.mlp.4.weight").T)
    seen = 0
    for key, value in export_state_dict(params, large_shapes):
        np.testing.assert_array_equal(value, sd.value(key), err_msg=key)
        seen += 1
    assert seen == 1276


@pytest.fixture(scope="module")
def tiny_shapes():
    return abstract_params(get_model_config("tiny"))[2]


def _tiny_state_dict(tiny_shapes, seed=0):
    rng = np.random.default_rng(seed)
    params = {p: rng.standard_normal(s).astype(np.float32) for p, s in tiny_shapes.items()}
    return params, dict(export_state_dict(params, tiny_shapes))


def test_tiny_round_trip_is_exact(tiny_shapes):
    params, sd = _tiny_state_dict(tiny_shapes)
    sd.update(BUFFERS)
    back, report = convert_state_dict(sd, tiny_shapes)
    assert report.loaded == len(sd) - 2
    for p in tiny_shapes:
        np.testing.assert_array_equal(back[p], params[p])


def test_layouts_follow_torch_semantics(tiny_shapes):
    """Each transform reproduces what the torch layer computes, checked numerically."""
    params, sd = _tiny_state_dict(tiny_shapes)
    rng = np.random.default_rng(1)
    # Linear: torch y = x W^T + b; ours y = x K + b.
    W = sd["point_decoder.projects.weight"]
    x = rng.standard_normal((4, W.shape[1])).astype(np.float32)
    np.testing.assert_allclose(x @ params[("point_decoder", "projects", "kernel")], x @ W.T, rtol=1e-5, atol=1e-5)
    # Patch conv: torch out[o] = sum_{c,dy,dx} W[o,c,dy,dx] img[c,dy,dx]; ours flattens (dy,dx,c).
    Wp = sd["encoder.patch_embed.proj.weight"]
    patch = rng.standard_normal((14, 14, 3)).astype(np.float32)
    np.testing.assert_allclose(patch.reshape(-1) @ params[("encoder", "patch_embed", "kernel")], np.einsum("ocyx,yxc->o", Wp, patch), rtol=1e-4, atol=1e-4)
    # Conv: torch weight (out, in, kh, kw) -> (kh, kw, in, out).
    Wc = sd["flow_head.scratch.layer1_rn.weight"]
    np.testing.assert_array_equal(params[("flow_head", "dpt", "layer_rn", "0", "kernel")], Wc.transpose(2, 3, 1, 0))
    # Stacked decoder blocks alternate: official 2i -> pairs.frame[i], 2i+1 -> pairs.global_[i].
    np.testing.assert_array_equal(params[("decoder", "pairs", "global_", "norm1", "scale")][0], sd["decoder.1.norm1.weight"])
    np.testing.assert_array_equal(params[("decoder", "pairs", "frame", "attn", "q_norm", "bias")][0], sd["decoder.0.attn.q_norm.bias"])


def test_errors_list_every_problem(tiny_shapes):
    _, sd = _tiny_state_dict(tiny_shapes)
    bad = dict(sd)
    del bad["encoder.blocks.1.mlp.fc2.bias"]
    del bad["flow_head.norm.weight"]
    bad["decoder.0.attn.proj.weight"] = np.zeros((3, 3), np.float32)
    bad["some_other_model.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ConversionError) as info:
        convert_state_dict(bad, tiny_shapes, source="ckpt.bin")
    msg = str(info.value)
    for needle in ("ckpt.bin", "encoder.blocks.1.mlp.fc2.bias", "flow_head.norm.weight", "decoder.0.attn.proj.weight", "(3, 3)", "some_other_model.weight"):
        assert needle in msg, needle
    bad_buffer = dict(sd, image_mean=np.zeros((1, 3, 1, 1), np.float32))
    with pytest.raises(ConversionError, match="normalisation buffers"):
        convert_state_dict(bad_buffer, tiny_shapes)


def test_optional_parts_are_left_at_init_and_reported(tiny_shapes):
    _, sd = _tiny_state_dict(tiny_shapes)
    no_flow = {k: v for k, v in sd.items() if not k.startswith("flow_head.")}
    with pytest.raises(ConversionError, match="missing"):
        convert_state_dict(no_flow, tiny_shapes)
    params, report = convert_state_dict(no_flow, tiny_shapes, optional_prefixes=("flow_head.",))
    assert all(params[p] is None for p in tiny_shapes if p[0] == "flow_head")
    assert all(params[p] is not None for p in tiny_shapes if p[0] != "flow_head")
    assert report.left_at_init and all(k.startswith("flow_head.") for k in report.left_at_init)
    # A stacked parameter cannot be half-filled.
    partial = {k: v for k, v in sd.items() if k != "encoder.blocks.1.norm1.weight"}
    with pytest.raises(ConversionError, match="not all layers"):
        convert_state_dict(partial, tiny_shapes, optional_prefixes=("encoder.blocks.1.",))
