"""The initial estimate (`flow3r_jax.sfm.initial`) on exact data: focal from fundamental matrices
built from known poses, rotation averaging, camera centres, triangulation.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from flow3r_jax.sfm.initial import average_rotations, centres_from_epipolar, focal_from_fundamentals, intrinsics, point_depths, triangulate
from tests.sfm.scenes import F_TRUE, PRINCIPAL, W, rotation_angle_deg, project, make_scene, observations, best_scale


def _skew(t):
    return np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])


def _generic_cameras(seed, count):
    """Cameras with generic (non-fixating) poses: rotations up to ~15 degrees about random axes,
    centres spread over a unit box, all looking at points at depth 4-9."""
    rng = np.random.default_rng(seed)
    R = Rotation.from_rotvec(np.radians(rng.uniform(-15, 15, (count, 3)))).as_matrix()
    C = rng.uniform(-1.0, 1.0, (count, 3)) * [1.0, 0.6, 0.5]
    R[0], C[0] = np.eye(3), 0.0
    return R, C


@pytest.mark.parametrize("f", [400.0, 900.0])
def test_focal_from_fundamentals_exact(f):
    R, C = _generic_cameras(10, 6)
    Km = intrinsics(f, PRINCIPAL)
    Kinv = np.linalg.inv(Km)
    rng = np.random.default_rng(11)
    X = rng.uniform([-2, -1.5, 4], [2, 1.5, 9], (50, 3))
    xy, depth = project(R, C, f, X)
    assert (depth > 0).all()
    hom = np.concatenate([xy, np.ones(xy.shape[:2] + (1,))], -1)
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6)][:10]
    Fs = []
    for i, j in pairs:
        Rij = R[j] @ R[i].T  # Xc_j = Rij Xc_i + t
        t = R[j] @ (C[i] - C[j])
        F = Kinv.T @ _skew(t) @ Rij @ Kinv
        F /= np.linalg.norm(F)
        # set-up check: the epipolar constraint on the projections, normalised by the line length
        lines = hom[i] @ F.T  # F x_i
        algebraic = np.abs(np.sum(hom[j] * lines, 1)) / np.linalg.norm(lines[:, :2], axis=1)
        assert algebraic.max() < 1e-9  # pixels from the epipolar line
        Fs.append(F)

    focal, ok, costs = focal_from_fundamentals(Fs, PRINCIPAL, float(W))
    assert ok
    assert abs(focal / f - 1) < 1e-3
    assert costs.shape == (241,)


def _random_rotations(seed, count, max_deg=40.0):
    rng = np.random.default_rng(seed)
    R = Rotation.from_rotvec(np.radians(rng.uniform(-max_deg, max_deg, (count, 3)))).as_matrix()
    R[0] = np.eye(3)
    return R


def _pairs_connected(seed, count, extra):
    """A chain over a random permutation (connected) plus `extra` random further pairs, i < j."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(count)
    pairs = {tuple(sorted((int(a), int(b)))) for a, b in zip(order[:-1], order[1:])}
    while len(pairs) < count - 1 + extra:
        a, b = rng.choice(count, 2, replace=False)
        pairs.add(tuple(sorted((int(a), int(b)))))
    return sorted(pairs)


def _rel_rotations(R, pairs, seed):
    rng = np.random.default_rng(seed)
    return {(i, j): (R[j] @ R[i].T, np.zeros((int(rng.integers(30, 200)), 2), np.int64)) for i, j in pairs}


def test_average_rotations_exact():
    R = _random_rotations(20, 8)
    rel = _rel_rotations(R, _pairs_connected(21, 8, extra=9), seed=22)
    Rw, kept = average_rotations(8, rel)
    assert rotation_angle_deg(np.stack(Rw), R).max() < 1e-6
    assert kept.shape == (len(rel),) and kept.all()


def test_average_rotations_drops_corrupted_pair():
    R = _random_rotations(23, 8)
    pairs = _pairs_connected(24, 8, extra=10)
    rel = _rel_rotations(R, pairs, seed=25)
    # corrupt a pair of median weight by a 30-degree rotation (a wrong relative pose). Not the
    # heaviest: the initial spanning tree takes the heaviest pairs on trust, and a 30-degree error
    # there is not recovered (every pair across the tree's cut is then dropped instead).
    worst = sorted(rel, key=lambda k: len(rel[k][1]))[len(rel) // 2]
    Rij, idx = rel[worst]
    rel[worst] = (Rotation.from_rotvec(np.radians(30.0) * np.array([0.6, 0.0, 0.8])).as_matrix() @ Rij, idx)

    Rw, kept = average_rotations(8, rel)
    assert rotation_angle_deg(np.stack(Rw), R).max() < 0.01
    expected = np.array([k != worst for k in rel])
    np.testing.assert_array_equal(kept, expected)


def test_average_rotations_survives_a_wrong_pair_with_the_most_inliers():
    """The heaviest pair, 3 frames apart, is wrong by 30 degrees: the max-inlier tree takes it on
    trust, the tree of the nearest frames does not, and the start keeping more pairs wins."""
    R = _random_rotations(26, 8, max_deg=20.0)
    pairs = sorted({(k, k + 1) for k in range(7)} | {(k, k + 2) for k in range(6)} | {(1, 4)})
    rel = _rel_rotations(R, pairs, seed=27)
    Rij, _ = rel[(1, 4)]
    rel[(1, 4)] = (Rotation.from_rotvec(np.radians(30.0) * np.array([0.0, 0.6, 0.8])).as_matrix() @ Rij, np.zeros((500, 2), np.int64))

    Rw, kept = average_rotations(8, rel)
    assert rotation_angle_deg(np.stack(Rw), R).max() < 0.01
    np.testing.assert_array_equal(kept, np.array([k != (1, 4) for k in rel]))


def test_average_rotations_unconnected_frame_is_none():
    R = _random_rotations(26, 6)
    rel = _rel_rotations(R, _pairs_connected(27, 5, extra=3), seed=28)  # frame 5 in no pair
    Rw, kept = average_rotations(6, rel)
    assert Rw[5] is None
    assert all(Rk is not None for Rk in Rw[:5])
    assert rotation_angle_deg(np.stack(Rw[:5]), R[:5]).max() < 1e-6  # the spanning tree alone, exact
    assert not kept.any()


def test_centres_from_epipolar_exact():
    R, C, X = make_scene(30)
    K, P = len(R), len(X)
    xy, _ = project(R, C, F_TRUE, X)
    features_xy = list(xy)  # keypoint index = point index in every frame
    rng = np.random.default_rng(31)
    rel = {}
    for i, j in _pairs_connected(32, K, extra=6):
        idx = np.sort(rng.choice(P, 60, replace=False))
        rel[(i, j)] = (R[j] @ R[i].T, np.stack([idx, idx], 1))

    C_est = centres_from_epipolar(R, intrinsics(F_TRUE, PRINCIPAL), features_xy, rel)

    assert C_est.shape == (K, 3)
    np.testing.assert_array_equal(C_est[0], 0.0)
    assert np.linalg.norm(C_est) == pytest.approx(1.0, rel=1e-9)
    s = best_scale(C_est, C)  # sign included
    assert abs(s) > 0
    assert np.linalg.norm(C_est - s * C) < 1e-8 * np.linalg.norm(s * C)


def test_triangulate_and_point_depths_exact():
    R, C, X = make_scene(40)
    frame, point, xy = observations(R, C, F_TRUE, X)
    # each point seen in a random subset of 2..K frames, to exercise partial tracks
    rng = np.random.default_rng(41)
    K, P = len(R), len(X)
    seen = rng.random((K, P)).argsort(0) < rng.integers(2, K + 1, P)  # (K, P), column p has 2..K True
    keep = seen[frame, point]
    assert not keep.all()
    frame, point, xy = frame[keep], point[keep], xy[keep]

    X_est = triangulate(R, C, intrinsics(F_TRUE, PRINCIPAL), frame, point, xy)
    assert X_est.shape == X.shape
    assert np.max(np.abs(X_est - X)) < 1e-8

    depth = point_depths(R, C, X_est, frame, point)
    _, depth_all = project(R, C, F_TRUE, X)
    np.testing.assert_allclose(depth, depth_all[frame, point], rtol=1e-9)
    assert (depth > 2.0).all()


def test_rotation_averaging_jacobian_equals_finite_differences():
    """The analytic Jacobian of the weighted pair residuals Log(R_ij R_i R_j^T) w_ij that rotation
    averaging hands to least_squares, against scipy's central differences: frame rotations up to
    93 degrees with pair residuals up to 177, and within the small-angle series (rotation vectors
    of 1e-6 rad; also the residuals', with R_ij near the identity)."""
    from scipy.optimize._numdiff import approx_derivative

    from flow3r_jax.sfm.initial import _pair_residuals

    rng = np.random.default_rng(0)
    K = 6
    p = np.array([(i, j) for i in range(K) for j in range(K) if i != j])
    wk = rng.uniform(1.0, 3.0, len(p))
    for scale, pair_scale in ((1.0, 0.5), (1e-6, 0.5), (1e-6, 1e-7)):
        Rk = Rotation.from_rotvec(rng.normal(size=(len(p), 3)) * pair_scale).as_matrix()
        x = rng.normal(size=3 * (K - 1)) * scale
        J = _pair_residuals(x, p, Rk, wk, jacobian=True)
        J_fd = approx_derivative(lambda v: _pair_residuals(v, p, Rk, wk), x, method="3-point")
        assert J.shape == J_fd.shape == (3 * len(p), 3 * (K - 1))
        np.testing.assert_allclose(J, J_fd, atol=1e-7 * np.abs(J_fd).max())
