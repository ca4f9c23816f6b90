"""`python -m flow3r_jax.convert`: an official checkpoint (a fake one, the tiny model's random
parameters written under the official key names and layouts) -> a model directory that
`load_pretrained` reads back with exactly the parameters the fake was made from; clear errors
naming the file for bad input."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from flow3r_jax.convert.__main__ import main
from flow3r_jax.convert.official import BUFFERS, export_state_dict
from flow3r_jax.models import get_model_config
from flow3r_jax.models.pretrained import _write_safetensors, abstract_params, load_pretrained
from tests.models.conftest import random_params

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny():
    cfg = get_model_config("tiny")
    shapes = abstract_params(cfg)[2]
    params = random_params(cfg, seed=3)
    official = dict(export_state_dict(params, shapes))  # official keys, torch layouts
    official.update(BUFFERS)
    return params, shapes, official


def _safetensors(path, tensors):
    _write_safetensors(str(path), tensors)
    return str(path)


def _assert_params_equal(directory, params):
    model = load_pretrained(str(directory))
    from flax import nnx

    flat = {tuple(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert set(flat) == set(params)
    for p, v in params.items():
        np.testing.assert_array_equal(flat[p], v, err_msg="/".join(p))
    return model


@pytest.mark.slow
@pytest.mark.torch
def test_converts_an_official_bin_end_to_end(tmp_path, tiny):
    """The real entry point in a subprocess, on a torch.save'd flow3r.bin, with the forward check."""
    torch = pytest.importorskip("torch")
    params, shapes, official = tiny
    src = tmp_path / "flow3r.bin"
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in official.items()}, src)
    out = tmp_path / "converted"
    run = subprocess.run([sys.executable, "-m", "flow3r_jax.convert", "--input", str(src), "--output", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    text = run.stdout
    n_tensors = len(official) - len(BUFFERS)
    n_params = sum(int(np.prod(s)) for s in shapes.values())
    assert f"official Flow3r state dict, {len(official)} tensors; model size 'tiny' (detected from its shapes)" in text, text
    assert f"mapped:     {n_tensors} tensors -> {len(shapes)} parameter arrays, {n_params:,} parameters" in text, text
    assert "image_mean, image_std equal ImageNet mean / std" in text
    assert "unused:     0 tensors" in text and "missing:    0 parameter tensors" in text
    assert f"{len(shapes)}/{len(shapes)} parameter arrays bit-identical" in text and f"{n_tensors}/{n_tensors} tensors exported back" in text
    assert "flow          (1, 2, 112, 154, 2) in [" in text and "NON-FINITE" not in text, text
    assert "parity with the official PyTorch model: not run" in text
    # Independent check: the directory holds exactly the parameters the fake was made from.
    model = _assert_params_equal(out, params)
    assert model.cfg == get_model_config("tiny")
    record = json.loads((out / "conversion.json").read_text())
    assert record["kind"] == "flow3r" and record["size"] == "tiny" and record["tensors_loaded"] == n_tensors
    # A second run refuses to overwrite, unless asked.
    again = subprocess.run([sys.executable, "-m", "flow3r_jax.convert", "--input", str(src), "--output", str(out), "--skip_forward"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and f"{out}: already holds a model" in again.stderr and "--overwrite" in again.stderr


@pytest.mark.slow  # the flow head's initialisation compiles the whole model's init
def test_pi3_safetensors_reports_the_flow_head_as_missing(tmp_path, tiny, capsys):
    params, shapes, official = tiny
    src = _safetensors(tmp_path / "model.safetensors", {k: v for k, v in official.items() if not k.startswith("flow_head.")})
    out = tmp_path / "pi3"
    assert main(["--input", src, "--output", str(out), "--skip_forward"]) == 0
    text = capsys.readouterr().out
    n_flow = sum(1 for k in official if k.startswith("flow_head."))
    assert "pi^3 state dict (no flow head)" in text and "model size 'tiny'" in text, text
    assert f"missing:    {n_flow} parameter tensors absent from the file keep their initial values" in text, text
    model = load_pretrained(str(out))
    np.testing.assert_array_equal(np.asarray(model.encoder.pos_embed[...]), params[("encoder", "pos_embed")])


def test_missing_input_file_is_named(tmp_path, capsys):
    missing = tmp_path / "nope" / "flow3r.bin"
    assert main(["--input", str(missing), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"error: checkpoint not found: {missing}" in err, err
    assert not (tmp_path / "o").exists()


def test_wrong_format_is_named(tmp_path, capsys):
    text_file = tmp_path / "flow3r.safetensors"
    text_file.write_text("this is not a checkpoint at all, just text")
    other = tmp_path / "flow3r.npz"
    other.write_bytes(b"PK")
    for path, needle in ((text_file, "corrupt safetensors header"), (other, "unknown checkpoint format"), (tmp_path, "is a directory")):
        assert main(["--input", str(path), "--output", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert f"error: {path}: " in err and needle in err, err


def test_foreign_checkpoint_is_named(tmp_path, capsys):
    src = _safetensors(tmp_path / "resnet.safetensors", {"conv1.weight": np.zeros((8, 3, 7, 7), np.float32), "fc.weight": np.zeros((10, 8), np.float32)})
    assert main(["--input", src, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"error: {src}: unrecognised checkpoint" in err, err


def test_wrong_model_size_is_named_with_the_detected_one(tmp_path, tiny, capsys):
    _, _, official = tiny
    src = _safetensors(tmp_path / "flow3r.safetensors", official)
    assert main(["--input", src, "--output", str(tmp_path / "o"), "--size", "small", "--skip_forward"]) == 2
    err = capsys.readouterr().err
    assert f"error: {src}: does not match the model" in err and "mis-shaped" in err, err
    assert "its shapes are those of size 'tiny'; omit --size to detect it" in err, err
    # A checkpoint of no known size (a widened encoder) under auto detection.
    odd = dict(official, **{"encoder.patch_embed.proj.weight": np.zeros((96, 3, 14, 14), np.float32)})
    src2 = _safetensors(tmp_path / "odd.safetensors", odd)
    assert main(["--input", src2, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"error: {src2}: no model size has {{'enc_dim': 96" in err, err


def test_official_repo_that_is_not_a_checkout_fails_before_converting(tmp_path, tiny, capsys):
    _, _, official = tiny
    src = _safetensors(tmp_path / "flow3r.safetensors", official)
    assert main(["--input", src, "--output", str(tmp_path / "o"), "--official_repo", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"error: {tmp_path}: not a checkout of Kidrauh/flow3r" in err, err
    assert not os.path.exists(tmp_path / "o")
