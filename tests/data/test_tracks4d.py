"""Track batches for TracksTo4D: normalisation, windows and track choice; a Grain iterator that
restores; and the exact tracks of the synthetic writer (data_pipelines.synthetic_tracks)."""

import os

import numpy as np
import pytest

from flow3r_jax.data.sources import DatasetError
from flow3r_jax.data.tracks4d import build_track_dataset, normalise_tracks, sample_tracks


def _clip(T=5, N=9, seed=0):
    rng = np.random.default_rng(seed)
    K = np.array([[40.0, 0, 16], [0, 50.0, 12], [0, 0, 1]], np.float32)
    vis = rng.random((T, N)) > 0.3
    vis[:, 0] = False
    vis[0, 0] = True  # track 0 seen once only: never drawn
    return {"tracks": rng.uniform(0, 32, (T, N, 2)).astype(np.float32), "visible": vis, "intrinsics": np.broadcast_to(K, (T, 3, 3)).copy()}


def test_normalise_is_inverse_intrinsics():
    c = _clip()
    u = normalise_tracks(c["tracks"], c["intrinsics"])
    K = c["intrinsics"][0]
    h = np.concatenate([c["tracks"], np.ones(c["tracks"].shape[:-1] + (1,))], -1) @ np.linalg.inv(K).T
    np.testing.assert_allclose(u, h[..., :2], atol=1e-5)


def test_sample_window_and_tracks():
    c = _clip()
    s = sample_tracks(c, 3, 6, np.random.default_rng(1))
    assert s["tracks"].shape == (3, 6, 2) and s["visible"].shape == (3, 6)
    assert np.all(s["visible"].sum(0) >= 2)
    with pytest.raises(DatasetError, match="frames"):
        sample_tracks(c, 9, 6, np.random.default_rng(1))


def test_dataset_batches_and_restores(tmp_path):
    for i in range(3):
        np.savez(tmp_path / f"clip_{i:04d}.npz", **_clip(seed=i))
    it = iter(build_track_dataset([str(tmp_path)], 4, 5, 2, seed=3))
    next(it)
    state = it.get_state()
    b = next(it)
    assert b["tracks"].shape == (2, 4, 5, 2) and b["visible"].dtype == bool
    it2 = iter(build_track_dataset([str(tmp_path)], 4, 5, 2, seed=3))
    it2.set_state(state)
    np.testing.assert_array_equal(next(it2)["tracks"], b["tracks"])
    with pytest.raises(DatasetError, match="not found"):
        build_track_dataset([str(tmp_path / "none")], 4, 5, 2)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(DatasetError, match="no clip_"):
        build_track_dataset([str(tmp_path / "empty")], 4, 5, 2)


def test_synthetic_tracks_are_exact_projections():
    from data_pipelines.synthetic_tracks import clip_tracks

    c = clip_tracks(11, frames=4, tracks=16, size=(32, 32))
    K, P = c["intrinsics"], c["poses"]
    cam = np.einsum("tij,tnj->tni", np.linalg.inv(P)[:, :3, :3], c["points"]) + np.linalg.inv(P)[:, None, :3, 3]
    np.testing.assert_allclose(cam[..., 2], c["depth"], rtol=1e-4, atol=1e-4)
    v = c["visible"]
    xy = cam[..., :2] / cam[..., 2:] * K[:, None, [0, 1], [0, 1]] + K[:, None, :2, 2]
    np.testing.assert_allclose(xy[v], c["tracks"][v], atol=1e-3)
    assert np.all(c["depth"][v] > 0) and np.all(v.sum(0) >= 2)
    assert np.all((c["tracks"][v] >= 0) & (c["tracks"][v] <= 32))
    # static tracks do not move in the world; tracks on moving objects may
    static = ~c["dynamic"]
    np.testing.assert_allclose(c["points"][:, static], np.broadcast_to(c["points"][:1, static], c["points"][:, static].shape), atol=1e-4)
