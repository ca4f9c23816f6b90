"""Per-clip TracksTo4D fitting (flow3r_jax/flowmap/tracks4d.py): from scratch on a constructed
low-rank dynamic clip the loss decreases after the camera warm-up, the best parameters are kept,
and the outputs have the documented shapes."""

import numpy as np

from tests.train.test_tracks4d import _write_clips


def test_finetune_fits_one_clip(tmp_path):
    import pytest

    from flow3r_jax.flowmap.tracks4d import finetune_tracks4d
    from flow3r_jax.losses.tracks4d import Tracks4DLossConfig
    from flow3r_jax.models.tracks4d import tracks4d_config

    K = _write_clips(str(tmp_path), n=1, T=6, N=16)
    z = np.load(tmp_path / "clip_0000.npz")
    r = finetune_tracks4d(z["tracks"], z["visible"], z["intrinsics"], tracks4d_config("tiny"), steps=60, loss_cfg=Tracks4DLossConfig(warmup_steps=10), lr=3e-3)
    assert r.steps_done == 60 and r.poses.shape == (6, 4, 4) and r.points.shape == (6, 16, 3)
    h = r.history[10:]
    assert np.isfinite(r.best_loss) and r.best_loss <= h[0] and np.mean(h[-5:]) < h[0]
    np.testing.assert_allclose(r.intrinsics[0], K, atol=1e-5)  # focal not predicted
    with pytest.raises(ValueError, match="tracks"):
        finetune_tracks4d(z["tracks"][0], z["visible"], z["intrinsics"])
