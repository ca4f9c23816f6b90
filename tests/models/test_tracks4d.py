"""TracksTo4D model: shapes, the fixed static coefficient, permutation equivariance over tracks,
and the pure helpers against NumPy references."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flow3r_jax.models.tracks4d import Tracks4D, Tracks4DConfig, circular_conv1d, fourier_encode, points_at, project, time_encoding, tracks4d_config

CFG = Tracks4DConfig(width=32, heads=2, head_dim=16, mlp=64, blocks=2, basis=4, pe_freqs=3, conv_kernel=5, predict_focal=True)


@pytest.fixture(scope="module")
def model():
    m = nnx.jit(lambda: Tracks4D(CFG, rngs=nnx.Rngs(0)))()
    fwd = nnx.jit(lambda mod, t, v: mod(t, v))
    return lambda t, v: fwd(m, t, v)


def _inputs(T=6, N=10, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(2, T, N, 2)) * 0.3, jnp.float32), jnp.asarray(rng.random((2, T, N)) > 0.2)


def test_shapes_and_static_coefficient(model):
    tracks, vis = _inputs()
    out = model(tracks, vis)
    assert out["rotation"].shape == (2, 6, 3, 3) and out["centre"].shape == (2, 6, 3)
    assert out["coeffs"].shape == (2, 6, 4) and out["basis"].shape == (2, 10, 3, 4)
    assert out["motion"].shape == (2, 10) and out["focal"].shape == (2, 6)
    np.testing.assert_array_equal(np.asarray(out["coeffs"][..., 0]), 1.0)
    assert np.all(np.asarray(out["motion"]) > 0)
    R = np.asarray(out["rotation"])
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-5)


def test_permuting_tracks_permutes_point_outputs_and_keeps_cameras(model):
    tracks, vis = _inputs(seed=1)
    perm = np.random.default_rng(3).permutation(tracks.shape[2])
    a = model(tracks, vis)
    b = model(tracks[:, :, perm], vis[:, :, perm])
    for k in ("rotation", "centre", "coeffs", "focal"):
        np.testing.assert_allclose(np.asarray(b[k]), np.asarray(a[k]), atol=2e-5, err_msg=k)
    for k in ("basis", "motion"):
        np.testing.assert_allclose(np.asarray(b[k]), np.asarray(a[k])[:, perm], atol=2e-5, err_msg=k)


def test_time_is_not_permutation_invariant(model):
    tracks, vis = _inputs(seed=2)
    a = model(tracks, vis)
    b = model(tracks[:, ::-1], vis[:, ::-1])
    assert not np.allclose(np.asarray(b["centre"])[:, ::-1], np.asarray(a["centre"]), atol=1e-4)


def test_fourier_encode_reference():
    v = np.array([[0.3, -0.2, 1.0]], np.float32)
    got = np.asarray(fourier_encode(jnp.asarray(v), 2))
    s = [np.pi, 2 * np.pi]
    want = np.concatenate([v[0], np.sin(s[0] * v[0]), np.cos(s[0] * v[0]), np.sin(s[1] * v[0]), np.cos(s[1] * v[0])])
    np.testing.assert_allclose(got[0], want, atol=1e-6)


def test_time_encoding_reference():
    pe = np.asarray(time_encoding(5, 8))
    omega = 1.0 / 10000.0 ** (np.arange(4) / 3.0)
    n = np.arange(5)[:, None] * omega
    np.testing.assert_allclose(pe, np.concatenate([np.sin(n), np.cos(n)], 1), atol=1e-6)


@pytest.mark.parametrize("T", [7, 2])
def test_circular_conv_reference(T):
    rng = np.random.default_rng(0)
    x, w, b = rng.normal(size=(1, T, 3)), rng.normal(size=(5, 3, 2)), rng.normal(size=2)
    want = np.zeros((1, T, 2))
    for t in range(T):
        for j in range(5):
            want[0, t] += x[0, (t + j - 2) % T] @ w[j]
    got = circular_conv1d(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32))
    np.testing.assert_allclose(np.asarray(got), want + b, atol=1e-5)


def test_points_and_projection_reference():
    rng = np.random.default_rng(1)
    c, B = rng.normal(size=(3, 2)), rng.normal(size=(4, 3, 2))
    X = np.asarray(points_at(jnp.asarray(c), jnp.asarray(B)))
    np.testing.assert_allclose(X[1, 2], B[2] @ c[1], atol=1e-6)
    R = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    R *= np.linalg.det(R)
    centre = rng.normal(size=3)
    pts = centre + R @ np.array([0.2, -0.1, 3.0])  # a point at camera coordinates (0.2, -0.1, 3)
    uv, z = project(jnp.asarray(pts[None, None]), jnp.asarray(R[None]), jnp.asarray(centre[None]), 2.0)
    np.testing.assert_allclose(np.asarray(uv)[0, 0], [2 * 0.2 / 3, -2 * 0.1 / 3], atol=1e-5)
    np.testing.assert_allclose(float(z[0, 0]), 3.0, atol=1e-5)


def test_released_config_and_errors():
    c = tracks4d_config("base")
    assert (c.width, c.heads, c.head_dim, c.mlp, c.blocks, c.basis, c.conv_kernel) == (256, 16, 64, 2048, 3, 12, 31)
    m = nnx.eval_shape(lambda: Tracks4D(c, rngs=nnx.Rngs(0)))
    qkv = m.blocks.time.block.attn.qkv.kernel
    assert qkv.shape == (3, 256, 3 * 16 * 64)  # stacked over the 3 blocks
    with pytest.raises(ValueError, match="size"):
        tracks4d_config("huge")
    with pytest.raises(ValueError, match="conv_kernel"):
        Tracks4DConfig(conv_kernel=4)
