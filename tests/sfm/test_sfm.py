"""Tests of the sparse structure-from-motion solver (`flow3r_jax.sfm`) on exact synthetic scenes.

Conventions (those of the package): world-to-camera rotations Rw (K, 3, 3), camera centres C (K, 3),
Xc = R (X - C), pixel = f Xc[:2] / Xc[2] + (cx, cy); frame 0 is the gauge (R_0 = I, C_0 = 0).
References are independent: the synthetic truth itself, closed forms (fundamental matrices built
from known poses) and scipy's least_squares on a residual written here.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from flow3r_jax.sfm import bundle_adjust
from flow3r_jax.sfm.initial import (
    average_rotations,
    centres_from_epipolar,
    focal_from_fundamentals,
    intrinsics,
    point_depths,
    triangulate,
)
from flow3r_jax.sfm.matching import Features, PairMatches, detect, match_pairs, tracks_from_matches

F_TRUE = 500.0
PRINCIPAL = (320.0, 240.0)
W, H = 640, 480


# ----------------------------------------------------------------------------------------------
# Synthetic scenes
# ----------------------------------------------------------------------------------------------


def rotation_angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    """Angle (degrees) of Ra Rb^T, batched over a leading axis."""
    d = np.einsum("...ij,...kj->...ik", Ra, Rb)
    return np.degrees(np.linalg.norm(Rotation.from_matrix(d).as_rotvec(), axis=-1))


def project(R, C, f, X, principal=PRINCIPAL):
    """Pixels (K, P, 2) and depths (K, P) of every point in every camera, written out per camera."""
    xy, depth = [], []
    for Rk, Ck in zip(R, C):
        Xc = (X - Ck) @ Rk.T
        depth.append(Xc[:, 2])
        xy.append(f * Xc[:, :2] / Xc[:, 2:3] + np.asarray(principal))
    return np.stack(xy), np.stack(depth)


def make_scene(seed: int = 0, frames: int = 7, candidates: int = 260):
    """Cameras on a smooth path (baseline ~0.4), each rotated a few degrees, looking roughly at +z;
    points uniform in a box at depth 3-8, kept where they are in front of and inside every view."""
    rng = np.random.default_rng(seed)
    k = np.arange(frames, dtype=np.float64)
    C = np.stack([0.4 * k, 0.08 * np.sin(0.9 * k), 0.05 * k + 0.03 * np.sin(1.3 * k)], 1)
    C -= C[0]
    rotvec = np.radians(rng.uniform(-4.0, 4.0, (frames, 3)))
    rotvec[:, 1] -= np.radians(2.5) * k / frames  # yaw a little towards the scene as the camera moves right
    rotvec[0] = 0.0
    R = Rotation.from_rotvec(rotvec).as_matrix()
    R[0] = np.eye(3)
    X = rng.uniform([-1.0, -1.3, 3.0], [3.4, 1.3, 8.0], (candidates, 3))
    xy, depth = project(R, C, F_TRUE, X)
    inside = (depth > 0.1) & (xy[..., 0] > 0) & (xy[..., 0] < W) & (xy[..., 1] > 0) & (xy[..., 1] < H)
    X = X[inside.all(0)]
    assert 150 <= len(X) <= 300, len(X)
    return R, C, X


def observations(R, C, f, X):
    """Every point seen in every frame: frame (n,), point (n,), exact xy (n, 2)."""
    xy, _ = project(R, C, f, X)
    K, P = xy.shape[:2]
    frame = np.repeat(np.arange(K), P)
    point = np.tile(np.arange(P), K)
    return frame, point, xy.reshape(-1, 2)


def perturb(R, C, f, X, seed: int = 1, rot_deg=1.0, centre_frac=0.05, focal_frac=0.05, point_frac=0.02):
    """A start away from the truth: frames 1.. rotated by rot_deg about random axes, centres moved by
    centre_frac of the baseline, focal scaled by 1 + focal_frac, points moved by point_frac of their
    distance from camera 0. Frame 0 stays the gauge."""
    rng = np.random.default_rng(seed)
    K = len(R)
    axes = rng.normal(size=(K, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    dR = Rotation.from_rotvec(np.radians(rot_deg) * axes).as_matrix()
    dR[0] = np.eye(3)
    baseline = np.linalg.norm(C[1] - C[0])
    dC = rng.normal(size=C.shape)
    dC *= centre_frac * baseline / np.linalg.norm(dC, axis=1, keepdims=True)
    dC[0] = 0.0
    Xp = X + point_frac * np.linalg.norm(X, axis=1, keepdims=True) * rng.normal(size=X.shape) / np.sqrt(3)
    return dR @ R, C + dC, f * (1 + focal_frac), Xp


def best_scale(C_est, C_true):
    """s minimising |C_est - s C_true| (C_0 = 0 in both: the only gauge left is the scale)."""
    return float(np.sum(C_est * C_true) / np.sum(C_true * C_true))


# ----------------------------------------------------------------------------------------------
# Bundle adjustment
# ----------------------------------------------------------------------------------------------


def test_bundle_adjust_recovers_exact_scene_from_perturbed_start():
    R, C, X = make_scene(0)
    frame, point, xy = observations(R, C, F_TRUE, X)
    R0, C0, f0, X0 = perturb(R, C, F_TRUE, X)
    assert rotation_angle_deg(R0[1:], R[1:]).min() > 0.9  # the start is really off

    ba = bundle_adjust(R0, C0, f0, X0, PRINCIPAL, frame, point, xy, huber_px=1e6, iterations=100)

    assert ba.initial_rms > 1.0
    assert ba.final_rms < 1e-6
    assert np.max(ba.residuals) < 1e-5
    np.testing.assert_array_equal(ba.rotations[0], np.eye(3))
    np.testing.assert_array_equal(ba.centres[0], np.zeros(3))
    assert rotation_angle_deg(ba.rotations, R).max() < 1e-5
    assert abs(ba.focal / F_TRUE - 1) < 1e-6
    s = best_scale(ba.centres, C)
    baseline = np.linalg.norm(C[1])
    assert 0.5 < s < 2.0
    assert np.max(np.linalg.norm(ba.centres - s * C, axis=1)) < 1e-6 * s * baseline
    assert np.max(np.linalg.norm(ba.points - s * X, axis=1)) < 1e-6 * s * np.linalg.norm(X, axis=1).max()


def test_bundle_adjust_recovers_radial_distortion():
    """radial=True: observations through COLMAP's SIMPLE_RADIAL model (normalised coordinates
    scaled by 1 + k1 r^2, written out here) are fitted exactly and k1 comes back."""
    R, C, X = make_scene(3)
    k1_true = -0.08
    frame, point, _ = observations(R, C, F_TRUE, X)
    Xc = np.einsum("nij,nj->ni", R[frame], X[point] - C[frame])
    m = Xc[:, :2] / Xc[:, 2:3]
    xy = F_TRUE * (1 + k1_true * (m[:, 0] ** 2 + m[:, 1] ** 2))[:, None] * m + np.asarray(PRINCIPAL)
    R0, C0, f0, X0 = perturb(R, C, F_TRUE, X, seed=4)

    plain = bundle_adjust(R0, C0, f0, X0, PRINCIPAL, frame, point, xy, huber_px=1e6, iterations=200)
    ba = bundle_adjust(R0, C0, f0, X0, PRINCIPAL, frame, point, xy, huber_px=1e6, iterations=200, radial=True)

    assert ba.final_rms < 1e-6 and plain.final_rms > 0.05, (ba.final_rms, plain.final_rms)
    assert ba.k1 == pytest.approx(k1_true, abs=1e-7) and plain.k1 == 0.0
    assert ba.focal == pytest.approx(F_TRUE, rel=1e-7)
    assert rotation_angle_deg(ba.rotations, R).max() < 1e-5


def test_bundle_adjust_fixed_focal_keeps_it():
    R, C, X = make_scene(0)
    frame, point, xy = observations(R, C, F_TRUE, X)
    R0, C0, _, X0 = perturb(R, C, F_TRUE, X)
    f_given = 1.03 * F_TRUE  # wrong on purpose: refining it would move it

    ba = bundle_adjust(R0, C0, f_given, X0, PRINCIPAL, frame, point, xy, huber_px=1e6, refine_focal=False)

    assert ba.focal == f_given
    assert ba.final_rms < ba.initial_rms
    assert ba.final_rms > 1e-3  # the wrong focal cannot be absorbed exactly


def _scipy_bundle(R0, C0, f0, X0, frame, point, xy):
    """Independent bundle adjustment: scipy's least_squares (MINPACK Levenberg-Marquardt) on
    absolute rotation vectors and centres of frames 1.., log focal and points; frame 0 fixed.
    Jacobian by central differences, grouped by sparsity (each residual depends on one frame and
    one point), so one Jacobian costs 20 residual evaluations."""
    K, P = len(R0), len(X0)
    nr, ncam = 3 * (K - 1), 6 * (K - 1)
    obs = np.arange(len(frame))

    def unpack(x):
        R = np.concatenate([np.eye(3)[None], Rotation.from_rotvec(x[:nr].reshape(-1, 3)).as_matrix()])
        C = np.concatenate([np.zeros((1, 3)), x[nr:ncam].reshape(-1, 3)])
        return R, C, np.exp(x[ncam]), x[ncam + 1 :].reshape(P, 3)

    def residual(x):
        R, C, f, X = unpack(x)
        Xc = np.einsum("nij,nj->ni", R[frame], X[point] - C[frame])
        return (f * Xc[:, :2] / Xc[:, 2:3] + np.asarray(PRINCIPAL) - xy).ravel()

    # column groups: (columns perturbed together, the column each observation's rows depend on)
    moving = frame > 0
    groups = []
    for c in range(3):  # rotation vector component c of every frame, then centre component c
        groups.append((np.arange(K - 1) * 3 + c, np.where(moving, (frame - 1) * 3 + c, -1)))
        groups.append((nr + np.arange(K - 1) * 3 + c, np.where(moving, nr + (frame - 1) * 3 + c, -1)))
    groups.append((np.array([ncam]), np.full(len(frame), ncam)))
    for c in range(3):
        groups.append((ncam + 1 + 3 * np.arange(P) + c, ncam + 1 + 3 * point + c))

    def jacobian(x, h=1e-6):
        J = np.zeros((2 * len(frame), len(x)))
        for cols, col_of_obs in groups:
            d = np.zeros_like(x)
            d[cols] = h
            diff = ((residual(x + d) - residual(x - d)) / (2 * h)).reshape(-1, 2)
            ok = col_of_obs >= 0
            J[2 * obs[ok], col_of_obs[ok]] = diff[ok, 0]
            J[2 * obs[ok] + 1, col_of_obs[ok]] = diff[ok, 1]
        return J

    x0 = np.concatenate([Rotation.from_matrix(R0[1:]).as_rotvec().ravel(), C0[1:].ravel(), [np.log(f0)], X0.ravel()])
    sol = least_squares(residual, x0, jac=jacobian, method="lm", ftol=1e-12, xtol=1e-12, gtol=1e-12)
    return 0.5 * float(np.sum(sol.fun**2)), unpack(sol.x)


def test_bundle_adjust_noisy_reaches_scipy_minimum():
    R, C, X = make_scene(2, frames=6)
    X = X[:80]  # scipy's dense Levenberg-Marquardt is cubic in the unknowns: keep it small
    frame, point, xy = observations(R, C, F_TRUE, X)
    xy = xy + np.random.default_rng(3).normal(0.0, 0.5, xy.shape)
    R0, C0, f0, X0 = perturb(R, C, F_TRUE, X, seed=4, rot_deg=0.5, focal_frac=0.02)

    ba = bundle_adjust(R0, C0, f0, X0, PRINCIPAL, frame, point, xy, huber_px=1e6, iterations=100)
    cost_ba = 0.5 * float(np.sum(ba.residuals**2))
    cost_ref, (R_ref, _, f_ref, _) = _scipy_bundle(R0, C0, f0, X0, frame, point, xy)

    n = len(frame)
    assert ba.final_rms == pytest.approx(np.sqrt(2 * cost_ba / n), rel=1e-9)
    assert abs(cost_ba - cost_ref) / cost_ref < 1e-6
    # Noise of 0.5 px on 2 coordinates: the minimum sits a little below 0.5^2 per coordinate.
    assert 0.15 < np.sqrt(2 * cost_ref / (2 * n)) < 0.5
    # The same minimum, not only the same cost (the focal is the least determined unknown).
    assert rotation_angle_deg(ba.rotations, R_ref).max() < 1e-4
    assert abs(ba.focal / f_ref - 1) < 1e-5


def _with_outliers(xy, fraction, seed):
    rng = np.random.default_rng(seed)
    n = len(xy)
    bad = rng.choice(n, int(round(fraction * n)), replace=False)
    angle = rng.uniform(0, 2 * np.pi, len(bad))
    dist = rng.uniform(30.0, 80.0, len(bad))
    out = xy.copy()
    out[bad] += dist[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    return out, bad


def test_bundle_adjust_huber_resists_outliers():
    R, C, X = make_scene(5)
    frame, point, xy = observations(R, C, F_TRUE, X)
    rng = np.random.default_rng(6)
    xy = xy + rng.normal(0.0, 0.3, xy.shape)
    xy, bad = _with_outliers(xy, 0.05, seed=7)
    R0, C0, f0, X0 = perturb(R, C, F_TRUE, X, seed=8)

    state = (R0, C0, f0, X0)
    for delta in (4.0, 1.0):  # like run_sfm
        ba = bundle_adjust(*state, PRINCIPAL, frame, point, xy, huber_px=delta, iterations=100)
        state = (ba.rotations, ba.centres, ba.focal, ba.points)
    robust_rot = rotation_angle_deg(ba.rotations, R).max()
    robust_focal = abs(ba.focal / F_TRUE - 1)
    # the outliers stand out in the robust fit's residuals, the inliers fit to the noise
    inlier = np.ones(len(frame), bool)
    inlier[bad] = False
    assert np.median(ba.residuals[inlier]) < 0.6
    assert np.min(ba.residuals[bad]) > 15.0

    ls = bundle_adjust(R0, C0, f0, X0, PRINCIPAL, frame, point, xy, huber_px=1e6, iterations=100)
    ls_rot = rotation_angle_deg(ls.rotations, R).max()
    ls_focal = abs(ls.focal / F_TRUE - 1)

    assert robust_rot < 0.1
    assert robust_focal < 0.005
    assert robust_rot < 0.5 * ls_rot
    assert robust_focal < ls_focal


def test_bundle_adjust_rejects_point_behind_camera_at_start():
    R, C, X = make_scene(0)
    frame, point, xy = observations(R, C, F_TRUE, X)
    X_bad = X.copy()
    X_bad[3] = [0.1, 0.2, -2.0]  # behind camera 0 (and every other camera), yet observed
    with pytest.raises(ValueError, match="behind"):
        bundle_adjust(R, C, F_TRUE, X_bad, PRINCIPAL, frame, point, xy)


# ----------------------------------------------------------------------------------------------
# Initial estimate
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Matching and tracks
# ----------------------------------------------------------------------------------------------


def _features(counts, seed=50):
    rng = np.random.default_rng(seed)
    xy = [rng.uniform(0, 100, (n, 2)) for n in counts]
    return Features(xy, [np.zeros((n, 128), np.float32) for n in counts])


def _tracks_as_sets(frame, track, xy):
    out = {}
    for f, t, p in zip(frame, track, xy):
        out.setdefault(int(t), set()).add((int(f), float(p[0]), float(p[1])))
    return sorted(out.values(), key=lambda s: sorted(s))


def test_tracks_from_matches():
    feats = _features([6, 5, 5])
    eye = np.eye(3)
    matches = [
        # chain 0:0 - 1:2 - 2:1 (one track, 3 observations)
        # conflict 0:1 - 1:0 - 2:3 - 0:3 (frame 0 twice: dropped)
        PairMatches(0, 1, np.array([[0, 2], [1, 0]]), eye),
        PairMatches(1, 2, np.array([[2, 1], [0, 3]]), eye),
        PairMatches(0, 2, np.array([[3, 3], [4, 4]]), eye),  # and 0:4 - 2:4, a 2-frame track
    ]
    frame, track, xy = tracks_from_matches(feats, matches)

    assert frame.shape == track.shape == (len(xy),) and xy.shape[1] == 2
    assert track.dtype == np.int64
    T = int(track.max()) + 1
    np.testing.assert_array_equal(np.unique(track), np.arange(T))
    P = feats.xy
    expected = [
        {(0, *P[0][0]), (1, *P[1][2]), (2, *P[2][1])},
        {(0, *P[0][4]), (2, *P[2][4])},
    ]
    assert _tracks_as_sets(frame, track, xy) == sorted(expected, key=lambda s: sorted(s))
    # neither the conflicting keypoints nor the unmatched ones (0:2, 0:5, 1:1, 1:3, 1:4, 2:0, 2:2)
    assert len(frame) == 5


def test_tracks_from_matches_no_matches():
    frame, track, xy = tracks_from_matches(_features([4, 4]), [])
    assert len(frame) == len(track) == len(xy) == 0


def _texture(seed, h=240, w=320):
    rng = np.random.default_rng(seed)
    noise = rng.random((h, w)).astype(np.float32)
    img = cv2.GaussianBlur(noise, (0, 0), 2.0)
    img = (img - img.min()) / (img.max() - img.min())
    gray = np.clip(img * 255, 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, -1)


def test_detect_and_match_pairs_on_warped_texture():
    a = _texture(60)
    h, w = a.shape[:2]
    M = cv2.getRotationMatrix2D((w / 2, h / 2), 4.0, 1.0)  # OpenCV pixel coordinates (centres at integers)
    M[:, 2] += (12.0, 7.0)
    b = cv2.warpAffine(a, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    feats = detect(np.stack([a, b]), max_features=1500)
    assert len(feats.xy) == 2 and all(len(x) > 100 for x in feats.xy)
    assert feats.desc[0].shape[1] == 128 and feats.desc[0].dtype == np.float32
    matches = match_pairs(feats, [(0, 1)])

    assert len(matches) == 1
    m = matches[0]
    assert (m.i, m.j) == (0, 1) and len(m.idx) >= 30
    p0, p1 = feats.xy[0][m.idx[:, 0]], feats.xy[1][m.idx[:, 1]]
    # +0.5 convention: map p - 0.5 with M, add 0.5 back
    mapped = (p0 - 0.5) @ M[:, :2].T + M[:, 2] + 0.5
    err = np.linalg.norm(mapped - p1, axis=1)
    assert np.median(err) < 0.25
    assert np.mean(err < 1.0) > 0.95
    # the pair's fundamental matrix holds on its matches: x_1 within ~1 px of the line F x_0
    h0, h1 = np.c_[p0, np.ones(len(p0))], np.c_[p1, np.ones(len(p1))]
    lines = h0 @ m.F.T
    dist = np.abs(np.sum(h1 * lines, 1)) / np.linalg.norm(lines[:, :2], axis=1)
    assert np.median(dist) < 0.5


@pytest.fixture(scope="module")
def rendered_clip():
    from data_pipelines.synthetic import SceneConfig, generate_clip

    cfg = SceneConfig(height=240, width=320, frames=10, dynamic=False, preset="handheld", kind="room", offsets=(1,), flow_px=(4.0, 8.0))
    return generate_clip(cfg, seed=2)


def test_run_sfm_on_a_rendered_clip(rendered_clip):
    """The whole solver (SIFT tracks -> initial estimate -> bundle adjustment) on a rendered
    handheld clip, against its exact poses and focal."""
    from flow3r_jax.flowmap.metrics import trajectory_errors
    from flow3r_jax.sfm import run_sfm

    clip = rendered_clip
    r = run_sfm(np.asarray(clip["images"]))
    assert r.ok, r.reason
    f_true = float(clip["intrinsics"][0][0, 0])
    assert abs(r.focal - f_true) / f_true < 0.02, (r.focal, f_true)
    assert np.allclose(r.poses[0], np.eye(4))
    err = trajectory_errors(r.poses, np.asarray(clip["poses"], np.float64))
    assert err["rot_err_deg"] < 0.5 and err["ate_rel"] < 0.1, err
    assert r.info["reprojection_px"]["median"] < 0.5


def test_run_sfm_refuses_a_clip_without_texture():
    from flow3r_jax.sfm import run_sfm

    frames = np.full((5, 120, 160, 3), 128, np.uint8)
    r = run_sfm(frames)
    assert not r.ok and r.poses is None and "verified matches" in r.reason
