"""Camera loss over all ordered pairs against the official statement, and its closed form."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial.transform import Rotation

from flow3r_jax.losses import camera_loss, huber
from tests.losses import reference as ref

f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731


def test_huber_formula():
    x = jnp.array([-0.3, -0.1, -0.05, 0.0, 0.02, 0.1, 2.0])
    np.testing.assert_allclose(huber(x, 0.1), ref.huber(np.asarray(x, np.float64), 0.1), rtol=1e-6)


def test_camera_loss_matches_official(rng):
    B, N = 3, 3
    gt = np.stack([ref._rigid(rng, N) for _ in range(B)])
    pred = gt.copy()
    wobble = Rotation.from_rotvec(rng.normal(size=(B * N, 3)) * 0.3).as_matrix().reshape(B, N, 3, 3)
    pred[..., :3, :3] = pred[..., :3, :3] @ wobble
    pred[..., :3, 3] += rng.normal(size=(B, N, 3)) * rng.choice([0.01, 0.5], size=(B, N, 3))
    scale = rng.uniform(0.5, 2, size=B)
    keep = np.array([True, False, True])
    got = jax.jit(camera_loss)(f32(pred), f32(gt), f32(scale), keep)
    np.testing.assert_allclose(got, ref.camera_loss(pred, gt, scale, keep), rtol=1e-5)


def test_similarity_of_the_gt_gives_zero(rng):
    B, N = 2, 3
    gt = np.stack([ref._rigid(rng, N) for _ in range(B)])
    s = rng.uniform(0.3, 3, size=B)
    pred = gt.copy()
    pred[..., :3, 3] *= s[:, None, None]
    pred = np.stack([ref._rigid(rng, 1, 2.0)[0] for _ in range(B)])[:, None] @ pred  # another world frame
    total, trans, rot = jax.jit(camera_loss)(f32(pred), f32(gt), f32(1 / s), np.ones(B, bool))
    assert total < 1e-5 and trans < 1e-7 and rot < 1e-5


def test_no_selected_sample_and_single_frame_give_zero_with_finite_gradients(rng):
    poses = jnp.asarray(np.stack([ref._rigid(rng, 3) for _ in range(2)]), jnp.float32)
    f = jax.jit(jax.value_and_grad(lambda p, sel: camera_loss(p, poses[:, : p.shape[1]], jnp.ones(2), sel)[0]))
    value, g = f(poses, np.zeros(2, bool))
    assert value == 0.0 and np.all(g == 0.0)
    value, g = f(poses[:, :1], np.ones(2, bool))
    assert value == 0.0 and np.all(np.isfinite(g))
