"""load_pretrained / save_pretrained on tiny models: every accepted kind, and clear errors."""

import logging

import jax
import numpy as np
import pytest

from flow3r_jax.convert.official import BUFFERS, ConversionError, conversion_plan, export_state_dict
from flow3r_jax.convert.readers import CheckpointFormatError
from flow3r_jax.models.pretrained import _write_safetensors, abstract_params, detect_checkpoint_kind, load_pretrained, save_pretrained
from tests.models.conftest import jit_apply, random_params


@pytest.fixture(scope="module")
def tiny(tiny_model, tiny_apply, tiny_inputs):
    images, pairs = tiny_inputs
    return tiny_model, tiny_apply(images, pairs)


def _official_file(tmp_path, params, shapes, drop=(), rename=None, name="flow3r.safetensors"):
    sd = {k: v for k, v in export_state_dict(params, shapes) if not (drop and k.startswith(drop))}
    sd.update(BUFFERS)
    if rename:
        sd = {rename(k): v for k, v in sd.items() if rename(k) is not None}
    path = tmp_path / name
    _write_safetensors(str(path), sd)
    return path


def test_save_and_load_our_format(tmp_path, tiny, tiny_inputs):
    model, out = tiny
    save_pretrained(model, str(tmp_path / "ckpt"))
    loaded = load_pretrained(str(tmp_path / "ckpt"))
    assert loaded.cfg == model.cfg
    again = jit_apply(loaded)(*tiny_inputs)
    for k in out:
        np.testing.assert_array_equal(again[k], out[k])


def test_load_official_format_gives_identical_outputs(tmp_path, tiny, tiny_inputs):
    model, out = tiny
    cfg = model.cfg
    params = random_params(cfg)  # the params tiny_model was built from
    path = _official_file(tmp_path, params, abstract_params(cfg)[2])
    assert detect_checkpoint_kind(__import__("flow3r_jax.convert.readers", fromlist=["x"]).open_checkpoint(str(path))) == "flow3r"
    loaded, report = load_pretrained(str(path), "tiny", return_report=True)
    assert report.loaded == len(conversion_plan(abstract_params(cfg)[2])) and not report.left_at_init
    again = jit_apply(loaded)(*tiny_inputs)
    for k in out:
        np.testing.assert_array_equal(again[k], out[k])


def test_pi3_checkpoint_leaves_flow_head_at_init_and_reports(tmp_path, tiny, caplog):
    model, _ = tiny
    params = random_params(model.cfg)
    path = _official_file(tmp_path, params, abstract_params(model.cfg)[2], drop=("flow_head.",), name="model.safetensors")
    with caplog.at_level(logging.WARNING):
        loaded, report = load_pretrained(str(path), "tiny", return_report=True)
    assert report.left_at_init and all(k.startswith("flow_head.") for k in report.left_at_init)
    assert "keep their initialisation" in caplog.text
    enc = np.asarray(loaded.encoder.blocks.attn.qkv.kernel[...])
    np.testing.assert_array_equal(enc, params[("encoder", "blocks", "attn", "qkv", "kernel")])
    fh = np.asarray(loaded.flow_head.mlp[0].kernel[...])
    assert not np.allclose(fh, params[("flow_head", "mlp", "0", "kernel")]) and np.all(np.isfinite(fh))


def test_dinov2_checkpoint_initialises_only_the_encoder(tmp_path, tiny):
    model, _ = tiny
    params = random_params(model.cfg)
    shapes = abstract_params(model.cfg)[2]
    sd = {k[len("encoder."):]: v for k, v in export_state_dict(params, shapes) if k.startswith("encoder.")}
    sd["mask_token"] = np.zeros((1, model.cfg.enc_dim), np.float32)
    path = tmp_path / "dinov2_vits14_reg.safetensors"
    _write_safetensors(str(path), sd)
    loaded, report = load_pretrained(str(path), "tiny", return_report=True)
    assert report.ignored == ["encoder.mask_token"]
    np.testing.assert_array_equal(np.asarray(loaded.encoder.pos_embed[...]), params[("encoder", "pos_embed")])
    assert all(not k.startswith("encoder.") for k in report.left_at_init)


def test_missing_and_foreign_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        load_pretrained(str(tmp_path / "nope.bin"), "tiny")
    foreign = tmp_path / "resnet.safetensors"
    _write_safetensors(str(foreign), {"conv1.weight": np.zeros((8, 3, 7, 7), np.float32), "fc.weight": np.zeros((10, 8), np.float32)})
    with pytest.raises(ValueError, match="unrecognised checkpoint"):
        load_pretrained(str(foreign), "tiny")
    garbage = tmp_path / "flow3r.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(CheckpointFormatError, match="flow3r.safetensors"):
        load_pretrained(str(garbage), "tiny")
    empty_dir = tmp_path / "run"
    empty_dir.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(str(empty_dir))


def test_wrong_size_for_checkpoint_lists_mismatches(tmp_path, tiny):
    model, _ = tiny
    path = _official_file(tmp_path, random_params(model.cfg), abstract_params(model.cfg)[2])
    with pytest.raises(ConversionError, match="mis-shaped"):
        load_pretrained(str(path), "small")
