"""Configuration mistakes fail before any long work, with a message naming the problem."""

import os
import subprocess
import sys

import pytest

from configs.flow3r import get_config
from flow3r_jax.data.sources import DatasetError
from flow3r_jax.train.checkpoint import CheckpointError
from flow3r_jax.train.loop import ConfigError, parse_sources, train
from tests.train.conftest import ROOT, env


def _cfg(data, **kw):
    c = get_config("size=tiny")
    c.data.sources = f"{data['labeled']}:1,{data['unlabeled']}:1"
    for k, v in kw.items():
        node, leaf = k.split(".")
        c[node][leaf] = v
    return c


def test_mesh_that_does_not_divide_the_devices(train_data, tmp_path):
    with pytest.raises(ValueError, match="need 3 devices, have 1"):
        train(_cfg(train_data, **{"mesh.data": 3}), str(tmp_path))


def test_batch_not_divisible_by_the_batch_axes_or_microbatches(train_data, tmp_path):
    with pytest.raises(ConfigError, match="global_batch=0"):
        train(_cfg(train_data, **{"data.global_batch": 0}), str(tmp_path))
    with pytest.raises(ConfigError, match="microbatches=3 must divide the per-device batch 8"):
        train(_cfg(train_data, **{"train.microbatches": 3}), str(tmp_path))


def test_missing_dataset_directory_and_empty_sources(train_data, tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="nowhere"):
        train(_cfg(train_data, **{"data.sources": f"{train_data['labeled']}:1,{missing}:2"}), str(tmp_path / "w"))
    with pytest.raises(ConfigError, match="data.sources is empty"):
        train(_cfg(train_data, **{"data.sources": ""}), str(tmp_path / "w"))


def test_missing_init_checkpoint_and_bad_options(train_data, tmp_path):
    with pytest.raises(CheckpointError, match="nothing_here"):
        train(_cfg(train_data, **{"init.kind": "checkpoint", "init.path": str(tmp_path / "nothing_here")}), str(tmp_path / "w"))
    with pytest.raises(ConfigError, match="needs config.init.path"):
        train(_cfg(train_data, **{"init.kind": "pretrained"}), str(tmp_path / "w"))
    with pytest.raises(ValueError, match="trainable must be one of"):
        train(_cfg(train_data, **{"train.trainable": "decoder"}), str(tmp_path / "w"))
    with pytest.raises(ConfigError, match="module:function"):
        train(_cfg(train_data, **{"eval.fn": "no_colon"}), str(tmp_path / "w"))
    with pytest.raises(ValueError, match="unknown config option 'sise'"):
        get_config("sise=tiny")
    with pytest.raises(ValueError, match="choose one of"):
        get_config("size=huge")


def test_parse_sources():
    assert parse_sources("/a:1,/b/c:2.5, /d") == (("/a", 1.0), ("/b/c", 2.5), ("/d", 1.0))
    assert parse_sources("C:/x") == (("C:/x", 1.0),)


def test_unknown_config_key_on_the_command_line(tmp_path):
    cmd = [sys.executable, "-m", "launch.train", "--config", os.path.join(ROOT, "configs", "flow3r.py") + ":size=tiny", "--workdir", str(tmp_path), "--config.train.learning_rate=1"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "learning_rate" in proc.stderr
    assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))
