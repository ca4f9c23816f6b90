"""Cameras: intrinsics, coordinate conversions and (un)projection round trips."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from flow3r_jax import geometry as g
from tests.geometry.helpers import intrinsics


def test_intrinsics_from_focal_and_fov():
    K = np.asarray(g.intrinsics_from_focal(100.0, 120.0, 32.0, 24.0))
    np.testing.assert_allclose(K, intrinsics(100, 120, 32, 24))
    # 90 degree horizontal FOV on a 64-wide image: f = 32. Principal point at the centre.
    K = np.asarray(g.intrinsics_from_fov(np.pi / 2, 48, 64))
    np.testing.assert_allclose(K, intrinsics(32, 32, 32, 24), atol=1e-5)
    # A point on the edge of the field of view projects to the image border x = W.
    xy, _ = g.project_points(jnp.asarray([1.0, 0.0, 1.0]), jnp.asarray(K))
    np.testing.assert_allclose(xy, [64.0, 24.0], atol=1e-4)
    np.testing.assert_allclose(g.fov_from_focal(g.focal_from_fov(0.7, 100), 100), 0.7, atol=1e-6)
    Ks = np.asarray(g.intrinsics_from_focal(jnp.asarray([10.0, 20.0]), cx=jnp.asarray([1.0, 2.0]), cy=3.0))
    assert Ks.shape == (2, 3, 3) and Ks[1, 0, 0] == 20 and Ks[1, 1, 1] == 20 and Ks[1, 0, 2] == 2


def test_pixel_grid_centres():
    grid = np.asarray(g.pixel_grid(3, 4))
    assert grid.shape == (3, 4, 2)
    np.testing.assert_array_equal(grid[0, 0], [0.5, 0.5])
    np.testing.assert_array_equal(grid[2, 3], [3.5, 2.5])


def test_normalized_round_trip(rng):
    K = jnp.asarray(intrinsics(200, 180, 60, 40))
    xy = jnp.asarray(rng.uniform(0, 100, size=(5, 2)))
    uv = g.pixel_to_normalized(xy, K)
    np.testing.assert_allclose(uv, np.stack([(xy[:, 0] - 60) / 200, (xy[:, 1] - 40) / 180], -1), atol=1e-6)
    np.testing.assert_allclose(g.normalized_to_pixel(uv, K), xy, atol=1e-4)


def test_ndc_matches_official_formula_and_round_trips(rng):
    H, W = 14, 28
    xy = jnp.asarray(rng.uniform(0, 28, size=(9, 2)))
    ndc = np.asarray(g.pixel_to_ndc(xy, H, W))
    # Official: integer-centred pixel index p, x_ndc = 1 - 2 p/(W-1).
    p = np.asarray(xy) - 0.5
    np.testing.assert_allclose(ndc, np.stack([1 - 2 * p[:, 0] / (W - 1), 1 - 2 * p[:, 1] / (H - 1)], -1), atol=1e-6)
    np.testing.assert_allclose(g.ndc_to_pixel(jnp.asarray(ndc), H, W), xy, atol=1e-5)
    # First / last pixel centres at +1 / -1; +x is left, +y is up.
    np.testing.assert_allclose(g.pixel_to_ndc(jnp.asarray([[0.5, 0.5], [W - 0.5, H - 0.5]]), H, W), [[1, 1], [-1, -1]], atol=1e-6)


@given(st.integers(0, 10_000), st.sampled_from([(2, 3), (7, 5), (16, 17)]))  # few shapes: few compiles
def test_project_unproject_is_pixel_grid(seed, hw):
    H, W = hw
    rng = np.random.default_rng(seed)
    K = jnp.asarray(intrinsics(rng.uniform(20, 200), rng.uniform(20, 200), rng.uniform(0, W), rng.uniform(0, H)))
    depth = jnp.asarray(rng.uniform(0.1, 50.0, size=(H, W)), jnp.float32)
    pts = g.unproject_depth(depth, K)
    np.testing.assert_allclose(g.points_to_depth(pts), depth, rtol=1e-6)
    xy, valid = g.project_points(pts, K)
    assert np.all(valid)
    np.testing.assert_allclose(xy, g.pixel_grid(H, W), atol=2e-4)


def test_unproject_matches_explicit_inverse_intrinsics(rng):
    K = intrinsics(150, 160, 30, 20)
    depth = rng.uniform(1, 5, size=(2, 6, 7))
    pts = np.asarray(g.unproject_depth(jnp.asarray(depth), jnp.asarray(np.stack([K, 2 * K * [[1], [1], [0.5]]]))))
    Ks = [K, 2 * K * [[1], [1], [0.5]]]
    for b in range(2):
        for r in range(6):
            for c in range(7):
                ray = np.linalg.inv(Ks[b]) @ np.array([c + 0.5, r + 0.5, 1.0])
                np.testing.assert_allclose(pts[b, r, c], ray * depth[b, r, c], rtol=1e-5)


def test_project_guards_points_behind_camera():
    K = jnp.asarray(intrinsics(100, 100, 50, 50))
    pts = jnp.asarray([[0.1, 0.2, 2.0], [0.1, 0.2, 0.0], [0.1, 0.2, -1.0]])
    xy, valid = g.project_points(pts, K)
    np.testing.assert_array_equal(valid, [True, False, False])
    assert np.all(np.isfinite(xy))
    grad = jax.grad(lambda p: jnp.sum(g.project_points(p, K)[0]))(pts)
    assert np.all(np.isfinite(grad))


def test_scale_intrinsics_is_resize_consistent():
    K = jnp.asarray(intrinsics(100, 90, 32, 24))
    K2 = np.asarray(g.scale_intrinsics(K, 0.5, 2.0))
    # A 3D point's pixel coordinates scale exactly like the image.
    X = jnp.asarray([0.3, -0.2, 2.0])
    xy, _ = g.project_points(X, K)
    xy2, _ = g.project_points(X, jnp.asarray(K2))
    np.testing.assert_allclose(xy2, np.asarray(xy) * [0.5, 2.0], atol=1e-5)


def test_focal_from_pointmap_is_exact_and_weighted(rng):
    H, W = 12, 16
    K = g.intrinsics_from_focal(37.5, cx=W / 2, cy=H / 2)
    pts = g.unproject_depth(jnp.asarray(rng.uniform(1, 5, size=(2, H, W))), jnp.stack([K, K]))
    np.testing.assert_allclose(g.focal_from_pointmap(pts), [37.5, 37.5], rtol=1e-5)
    # Corrupt a region and give it zero weight: still exact.
    bad = np.asarray(pts).copy()
    bad[:, :4, :4, :2] *= 3.0
    w = np.ones((2, H, W), np.float32)
    w[:, :4, :4] = 0
    np.testing.assert_allclose(g.focal_from_pointmap(jnp.asarray(bad), jnp.asarray(w)), [37.5, 37.5], rtol=1e-5)
    assert abs(float(g.focal_from_pointmap(jnp.asarray(bad))[0]) - 37.5) > 1.0
