"""TracksTo4D losses: hand-computed cases, zero reprojection at the truth of tracks built from
known bases, coefficients and cameras, and which parameters each term trains."""

import jax
import jax.numpy as jnp
import numpy as np

from flow3r_jax.geometry.rotations import axis_angle_to_matrix
from flow3r_jax.losses.tracks4d import Tracks4DLossConfig, camera_warmup_loss, tracks4d_loss
from flow3r_jax.losses.tracks4d import tracks4d_terms as _eager_terms

tracks4d_terms = jax.jit(_eager_terms)  # one compile per shape instead of many eager ops


def _constructed(T=5, N=7, K=3, seed=0):
    """Outputs of a known low-rank scene and the exact tracks it makes (all visible)."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(1, N, 3, K)) * np.array([1.0, 0.3, 0.3])[None, None, None, :K]
    coeffs = np.concatenate([np.ones((1, T, 1)), rng.normal(size=(1, T, K - 1))], -1)
    R = np.asarray(axis_angle_to_matrix(jnp.asarray(rng.normal(size=(1, T, 3)) * 0.1)))
    centre = np.stack([rng.normal(size=(1, T)) * 0.2, rng.normal(size=(1, T)) * 0.2, np.full((1, T), -8.0)], -1)
    focal = 1.0 + 0.05 * rng.normal(size=(1, T))
    X = np.einsum("btk,bnck->btnc", coeffs, basis)
    cam = np.einsum("btji,btnj->btni", R, X - centre[:, :, None])
    tracks = focal[..., None, None] * cam[..., :2] / cam[..., 2:]
    out = {k: jnp.asarray(v, jnp.float32) for k, v in dict(rotation=R, centre=centre, focal=focal, coeffs=coeffs, basis=basis, motion=np.full((1, N), 0.5)).items()}
    return out, jnp.asarray(tracks, jnp.float32), X, cam


def test_exact_low_rank_scene_has_zero_dynamic_reprojection():
    out, tracks, X, cam = _constructed()
    vis = jnp.ones(tracks.shape[:-1], bool)
    t = tracks4d_terms(out, tracks, vis)
    assert float(t["dynamic"]) < 1e-5 and float(t["depth"]) == 0.0
    # static part: residual of B_0 alone; with a truly static scene (c_k = 0, k >= 1) it is exact
    out_static = dict(out, coeffs=out["coeffs"].at[..., 1:].set(0.0))
    X0 = np.broadcast_to(np.asarray(out["basis"])[:, None, :, :, 0], X.shape)
    cam0 = np.einsum("btji,btnj->btni", np.asarray(out["rotation"]), X0 - np.asarray(out["centre"])[:, :, None])
    tracks0 = jnp.asarray(np.asarray(out["focal"])[..., None, None] * cam0[..., :2] / cam0[..., 2:], jnp.float32)
    t0 = tracks4d_terms(out_static, tracks0, vis)
    np.testing.assert_allclose(float(t0["static"]), np.log(0.5), atol=1e-5)  # log(NR + 0 / NR)
    assert float(t0["dynamic"]) < 1e-5
    # the gradient at the truth is finite (zero-safe sqrt)
    g = jax.grad(lambda b: tracks4d_terms(dict(out, basis=b), tracks, vis)["dynamic"])(out["basis"])
    assert np.all(np.isfinite(np.asarray(g)))


def test_hand_computed_terms():
    # one frame, two tracks; identity camera at the origin; focal 1
    basis = jnp.array([[[[0.0, 1.0], [0.0, 0.0], [2.0, 0.0]], [[1.0, 0.0], [0.0, 0.0], [-1.0, 0.0]]]])  # (1, 2, 3, 2)
    out = {
        "rotation": jnp.eye(3)[None, None],
        "centre": jnp.zeros((1, 1, 3)),
        "focal": jnp.ones((1, 1)),
        "coeffs": jnp.array([[[1.0, 0.5]]]),
        "basis": basis,
        "motion": jnp.array([[2.0, 0.5]]),
    }
    tracks = jnp.array([[[[0.0, 0.0], [0.0, 0.0]]]])
    vis = jnp.array([[[True, True]]])
    t = tracks4d_terms(out, tracks, vis)
    # track 0: static point (0,0,2) -> (0,0), r_s = 0; full point (0.5,0,2) -> (0.25,0), r = 0.25
    # track 1: static = full = (1,0,-1): depth -1 clamps to 0.01 -> (100, 0): r_s = r = 100
    np.testing.assert_allclose(float(t["static"]), (np.log(2.0) + np.log(0.5 + 100.0**2 / 0.5)) / 2, rtol=1e-5)
    np.testing.assert_allclose(float(t["dynamic"]), (0.25 + 100.0) / 2, rtol=1e-5)
    np.testing.assert_allclose(float(t["depth"]), 1.0, rtol=1e-6)
    np.testing.assert_allclose(float(t["sparsity"]), (1.0 / 2.0 + 0.0) / (2 * 3), rtol=1e-6)  # |B[...,1:]/NR| mean over 2x3
    # invisible entries drop out of every reprojection term and of the depth term
    t2 = tracks4d_terms(out, tracks, jnp.array([[[True, False]]]))
    np.testing.assert_allclose(float(t2["dynamic"]), 0.25, rtol=1e-5)
    assert float(t2["depth"]) == 0.0
    total, _ = tracks4d_loss(out, {"tracks": tracks, "visible": vis}, Tracks4DLossConfig(clip=1e9))
    want = float(t["static"]) + 50 * float(t["dynamic"]) + float(t["depth"]) + 1e-3 * float(t["sparsity"])
    np.testing.assert_allclose(float(total), want, rtol=1e-5)
    clipped, _ = tracks4d_loss(out, {"tracks": tracks, "visible": vis})
    assert float(clipped) == 100.0


def test_dynamic_term_does_not_train_cameras_or_static_part():
    out, tracks, _, _ = _constructed(seed=1)
    tracks = tracks + 0.05
    vis = jnp.ones(tracks.shape[:-1], bool)
    g = jax.grad(lambda o: tracks4d_terms(o, tracks, vis)["dynamic"])(out)
    assert float(jnp.abs(g["rotation"]).max()) == 0.0 and float(jnp.abs(g["centre"]).max()) == 0.0
    assert float(jnp.abs(g["basis"][..., 0]).max()) == 0.0 and float(jnp.abs(g["basis"][..., 1:]).max()) > 0
    gs = jax.grad(lambda o: tracks4d_terms(o, tracks, vis)["static"])(out)
    assert float(jnp.abs(gs["centre"]).max()) > 0 and float(jnp.abs(gs["motion"]).max()) > 0


def test_warmup_loss_and_switch():
    out, tracks, _, _ = _constructed()
    out = dict(out, rotation=jnp.broadcast_to(jnp.eye(3), out["rotation"].shape), centre=jnp.broadcast_to(jnp.array([0.0, 1.0, -15.0]), out["centre"].shape))
    np.testing.assert_allclose(float(camera_warmup_loss(out)), 1.0 / 100.0, rtol=1e-6)
    batch = {"tracks": tracks, "visible": jnp.ones(tracks.shape[:-1], bool)}
    cfg = Tracks4DLossConfig(warmup_steps=3)
    assert float(tracks4d_loss(out, batch, cfg, step=2)[0]) == float(camera_warmup_loss(out))
    assert float(tracks4d_loss(out, batch, cfg, step=3)[0]) != float(camera_warmup_loss(out))
