"""The TracksTo4D option through the shared trainer: `launch.train` with configs/tracks4d.py
(tiny) on small clips of a known low-rank dynamic scene (exact tracks in the reader's file
format): the loss decreases, a checkpoint and the metrics are written."""

import json
import os

import numpy as np
import pytest

from tests.train.conftest import ROOT, losses, run_train


def _write_clips(d, n=2, T=6, N=24, seed=0):
    """Small exact-track clips of a known low-rank dynamic scene (the reader's file format)."""
    rng = np.random.default_rng(seed)
    os.makedirs(d, exist_ok=True)
    K = np.array([[50.0, 0, 32], [0, 50.0, 32], [0, 0, 1]], np.float32)
    for c in range(n):
        X = rng.uniform(-1, 1, (N, 3))
        X[:, 2] += 6.0
        moving = np.arange(N) < N // 4
        t = np.arange(T)[:, None, None]
        pts = X[None] + (moving[None, :, None] * 0.05 * t * np.array([1.0, 0.5, 0.0]))
        cam_x = 0.05 * np.arange(T)
        cam = pts - np.stack([cam_x, 0 * cam_x, 0 * cam_x], -1)[:, None]
        xy = cam[..., :2] / cam[..., 2:] * 50.0 + 32.0
        np.savez(os.path.join(d, f"clip_{c:04d}.npz"), tracks=xy.astype(np.float32), visible=np.ones((T, N), bool), intrinsics=np.broadcast_to(K, (T, 3, 3)))
    return K


@pytest.mark.slow
def test_tracks4d_trains_through_launch_train(tmp_path):


    data, work = str(tmp_path / "data"), str(tmp_path / "work")
    _write_clips(data)
    overrides = {"data.sources": data, "data.frames": 6, "data.tracks": 24, "data.global_batch": 2, "train.steps": 40, "loss.warmup_steps": 5, "log.every": 1, "checkpoint.every": 40, "log.progress": False}
    args = ["--config", os.path.join(ROOT, "configs", "tracks4d.py") + ":size=tiny", "--workdir", work] + [f"--config.{k}={v}" for k, v in overrides.items()]
    proc = run_train(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loss = losses(work)
    after = [loss[s] for s in sorted(loss) if s > 5]
    assert len(after) == 35 and all(np.isfinite(after))
    assert np.mean(after[-5:]) < 0.7 * np.mean(after[:3]), after
    assert os.path.isdir(os.path.join(work, "checkpoints", "40"))
    assert json.load(open(os.path.join(work, "model_config.json")))["width"] == 32
    assert "TracksTo4D tiny" in proc.stderr


def test_config_options_and_method_choice():
    from configs.tracks4d import get_config
    from flow3r_jax.train.method import Tracks4DTraining, get_method
    from flow3r_jax.train.plan import ConfigError

    c = get_config("size=small,focal=1")
    assert c.method == "tracks4d" and c.model.predict_focal and c.train.lr == 1e-4
    m = get_method(c)
    assert isinstance(m, Tracks4DTraining) and m.model_config().predict_focal
    assert m.batch_shapes(1, 1)[0].frames == c.data.frames
    with pytest.raises(ValueError, match="size"):
        get_config("size=huge")
    c.method = "nope"
    with pytest.raises(ConfigError, match="method"):
        get_method(c)
    c.method, c.data.global_batch = "tracks4d", 3
    with pytest.raises(ConfigError, match="global_batch"):
        get_method(c).batch_shapes(2, 1)
