"""Normals of analytic surfaces; depth edges against a numpy sliding window."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flow3r_jax import geometry as g
from tests.geometry.helpers import intrinsics


def _plane_pointmap(normal, offset, H=8, W=10):
    """Pointmap of the plane n . X = offset seen by a pinhole camera at the origin."""
    K = intrinsics(12, 12, W / 2, H / 2)
    rays = np.asarray(g.unproject_depth(jnp.ones((H, W)), jnp.asarray(K)))
    depth = offset / (rays @ normal)
    return rays * depth[..., None]


@pytest.mark.parametrize("normal", [(0, 0, -1), (0.3, -0.2, -1), (-0.5, 0.4, -0.8)])
def test_quad_normals_of_a_plane(normal):
    n = np.asarray(normal, float)
    n /= np.linalg.norm(n)
    pts = _plane_pointmap(n, -5.0)  # plane in front of the camera, facing it
    normals = np.asarray(g.quad_normals(jnp.asarray(pts)))
    assert normals.shape == (7, 9, 4, 3)
    unit = normals / np.linalg.norm(normals, axis=-1, keepdims=True)
    np.testing.assert_allclose(unit, np.broadcast_to(n, unit.shape), atol=1e-6)


def test_quad_normals_of_a_sphere_point_outwards_from_the_camera_side():
    # Points on a sphere of radius 2 centred at (0, 0, 5), front cap seen from the origin.
    H, W = 9, 9
    K = intrinsics(20, 20, 4.5, 4.5)
    rays = np.asarray(g.unproject_depth(jnp.ones((H, W)), jnp.asarray(K)))
    d = rays / np.linalg.norm(rays, axis=-1, keepdims=True)
    c = np.array([0, 0, 5.0])
    b = d @ c
    t = b - np.sqrt(b**2 - (c @ c - 4.0))
    pts = d * t[..., None]
    normals = np.asarray(g.quad_normals(jnp.asarray(pts)))
    quad_centre = 0.25 * (pts[:-1, :-1] + pts[:-1, 1:] + pts[1:, :-1] + pts[1:, 1:])
    outward = quad_centre - c
    outward /= np.linalg.norm(outward, axis=-1, keepdims=True)
    unit = normals / np.linalg.norm(normals, axis=-1, keepdims=True)
    cos = np.einsum("hwkc,hwc->hwk", unit, outward)
    assert cos.min() > 0.99


def test_quad_normal_mask():
    mask = np.ones((3, 3), bool)
    mask[1, 1] = False
    m = np.asarray(g.quad_normal_mask(jnp.asarray(mask)))
    # Every quad touches the centre pixel; in each, exactly the triangle excluding it survives.
    assert m.shape == (2, 2, 4)
    assert m.sum() == 4
    # Quad (0, 0): the centre is its rd corner -> only the triangle excluding rd (index 2).
    np.testing.assert_array_equal(m[0, 0], [False, False, True, False])


def _depth_edge_reference(depth, rtol, k=3):
    H, W = depth.shape
    out = np.zeros((H, W), bool)
    r = k // 2
    for i in range(H):
        for j in range(W):
            win = depth[max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1]
            out[i, j] = (win.max() - win.min()) / depth[i, j] > rtol
    return out


def test_depth_edge_matches_sliding_window(rng):
    depth = rng.uniform(1, 1.02, size=(12, 15))
    depth[:, 7:] += 1.0
    depth[3, 3] = 3.0
    out = np.asarray(g.depth_edge(jnp.asarray(depth), rtol=0.03))
    np.testing.assert_array_equal(out, _depth_edge_reference(depth, 0.03))
    assert out[:, 6:8].all() and not out[:, :2].any()
    batched = np.asarray(jax.jit(lambda d: g.depth_edge(d, rtol=0.03))(jnp.stack([jnp.asarray(depth)] * 2)))
    np.testing.assert_array_equal(batched[1], out)
