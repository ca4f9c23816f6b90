"""Bundle adjustment (`flow3r_jax.sfm.bundle`) on exact synthetic scenes: exact recovery from a
perturbed start, k1, a fixed focal, the minimum scipy's least_squares reaches on a residual
written here, Huber against outliers.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from flow3r_jax.sfm import bundle_adjust
from tests.sfm.scenes import F_TRUE, PRINCIPAL, rotation_angle_deg, make_scene, observations, perturb, best_scale


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
    one point), so one Jacobian costs 20 residual evaluations. Returns the final cost, the unpacked
    solution, its Jacobian and its residuals."""
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
    return 0.5 * float(np.sum(sol.fun**2)), unpack(sol.x), jacobian(sol.x), sol.fun


@pytest.mark.parametrize("schur", ["dense", "sparse"])
def test_bundle_adjust_noisy_reaches_scipy_minimum(schur, monkeypatch):
    """Both forms of the camera-point block (dense below `DENSE_HCP_ENTRIES` entries, sparse
    above) reach scipy's minimum and its standard deviations."""
    from flow3r_jax.sfm import bundle

    monkeypatch.setattr(bundle, "DENSE_HCP_ENTRIES", 10**9 if schur == "dense" else 0)
    R, C, X = make_scene(2, frames=6)
    X = X[:80]  # scipy's dense Levenberg-Marquardt is cubic in the unknowns: keep it small
    frame, point, xy = observations(R, C, F_TRUE, X)
    xy = xy + np.random.default_rng(3).normal(0.0, 0.5, xy.shape)
    R0, C0, f0, X0 = perturb(R, C, F_TRUE, X, seed=4, rot_deg=0.5, focal_frac=0.02)

    ba = bundle_adjust(R0, C0, f0, X0, PRINCIPAL, frame, point, xy, huber_px=1e6, iterations=100)
    cost_ba = 0.5 * float(np.sum(ba.residuals**2))
    cost_ref, (R_ref, _, f_ref, _), J, res = _scipy_bundle(R0, C0, f0, X0, frame, point, xy)

    n = len(frame)
    assert ba.final_rms == pytest.approx(np.sqrt(2 * cost_ba / n), rel=1e-9)
    assert abs(cost_ba - cost_ref) / cost_ref < 1e-6
    # Noise of 0.5 px on 2 coordinates: the minimum sits a little below 0.5^2 per coordinate.
    assert 0.15 < np.sqrt(2 * cost_ref / (2 * n)) < 0.5
    # The same minimum, not only the same cost (the focal is the least determined unknown).
    assert rotation_angle_deg(ba.rotations, R_ref).max() < 1e-4
    assert abs(ba.focal / f_ref - 1) < 1e-5
    # The focal's marginal standard deviation (of log f): sigma^2 [(J^T J)^-1]_ff from the
    # reference's central-difference Jacobian (its column 6 (K - 1) is log f), the free scale
    # fixed by dropping the column of C_1's x (a gauge choice: the focal's marginal does not
    # depend on it); dof = 2n - unknowns.
    col = 6 * (len(R) - 1)
    keep = np.arange(J.shape[1]) != 3 * (len(R) - 1)
    sigma2 = 2 * cost_ref / (2 * n - J.shape[1])
    std_ref = np.sqrt(sigma2 * np.linalg.inv(J[:, keep].T @ J[:, keep])[col - 1, col - 1])
    assert 1e-4 < std_ref < 0.1
    assert ba.focal_std == pytest.approx(std_ref, rel=0.02), (ba.focal_std, std_ref)
    # The track-clustered sandwich (J^T J)^-1 (sum over tracks of g_t g_t^T) (J^T J)^-1, g_t the
    # gradient J_t^T r_t of track t's residuals, from the same Jacobian and the reference's
    # residuals; scaled by (2n - 3P) / (2n - 3P - camera unknowns).
    Jk = J[:, keep]
    g = np.zeros((len(X0), Jk.shape[1]))
    np.add.at(g, point, (Jk.reshape(n, 2, -1) * res.reshape(n, 2, 1)).sum(1))
    bread = np.linalg.inv(Jk.T @ Jk)
    cov = bread @ (g.T @ g) @ bread
    cams = 6 * (len(R) - 1) + 1
    reduced = 2 * n - 3 * len(X0)
    robust_ref = np.sqrt(cov[col - 1, col - 1] * reduced / (reduced - cams))
    assert ba.focal_std_robust == pytest.approx(robust_ref, rel=0.02), (ba.focal_std_robust, robust_ref)
    assert 0.7 < ba.focal_std_robust / ba.focal_std < 1.4  # equal noise on every observation: both estimate the same spread


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


def test_bundle_adjust_recovers_an_off_centre_principal_point():
    """refine_principal=True: observations through a principal point 9 px right of and 6 px above
    the one the adjustment starts from are explained exactly (noise-free), the principal point
    recovered to 1e-5 px; without it the same start leaves a residual."""
    R, C, X = make_scene(0)
    true_c = (PRINCIPAL[0] + 9.0, PRINCIPAL[1] - 6.0)
    frame, point, xy = observations(R, C, F_TRUE, X)
    xy = xy + (np.asarray(true_c) - np.asarray(PRINCIPAL))  # the same projections about true_c
    R0, C0, f0, X0 = perturb(R, C, F_TRUE, X, rot_deg=0.3, focal_frac=0.02)

    ba = bundle_adjust(R0, C0, f0, X0, PRINCIPAL, frame, point, xy, huber_px=1e6, iterations=200, refine_principal=True)
    assert ba.final_rms < 1e-6, ba.final_rms
    np.testing.assert_allclose(ba.principal, true_c, atol=1e-5)
    assert rotation_angle_deg(ba.rotations, R).max() < 1e-5
    assert abs(ba.focal / F_TRUE - 1) < 1e-6
    fixed = bundle_adjust(R0, C0, f0, X0, PRINCIPAL, frame, point, xy, huber_px=1e6, iterations=200)
    assert fixed.principal == PRINCIPAL and fixed.final_rms > 0.05


def test_bundle_adjust_principal_std_matches_its_monte_carlo_spread():
    """The principal point's marginal standard deviations (from the Schur complement at the
    solution) agree with the spread of the estimates over 40 draws of 0.5 px noise, within the
    sampling error of 40 draws."""
    R, C, X = make_scene(2, frames=6)
    X = X[:80]
    frame, point, xy0 = observations(R, C, F_TRUE, X)
    rng = np.random.default_rng(7)
    est, std = [], []
    for _ in range(40):
        xy = xy0 + rng.normal(0.0, 0.5, xy0.shape)
        ba = bundle_adjust(R, C, F_TRUE, X, PRINCIPAL, frame, point, xy, huber_px=1e6, iterations=100, refine_principal=True)
        est.append(ba.principal)
        std.append(ba.principal_std)
    spread, predicted = np.std(est, axis=0, ddof=1), np.mean(std, axis=0)
    assert np.all(predicted > 0.05), predicted
    assert np.all(np.abs(np.mean(est, axis=0) - PRINCIPAL) < 4 * predicted / np.sqrt(40))  # unbiased
    np.testing.assert_allclose(spread / predicted, 1.0, atol=0.3)


def test_bundle_adjust_robust_focal_std_follows_unequal_noise():
    """Noise that grows towards the image border (0.05 px at the centre, 1.05 px in the corners),
    where the observations that determine the focal sit: over 60 draws the spread of log f
    matches the track-clustered sandwich (`focal_std_robust`) within the sampling error of 60
    draws, while the standard deviation that assumes equal noise everywhere (`focal_std`) comes
    out 1.16-1.6x too small (measured over ten draws of the noise and two scenes)."""
    R, C, X = make_scene(2, frames=6)
    X = X[:80]
    frame, point, xy0 = observations(R, C, F_TRUE, X)
    radius = np.linalg.norm(xy0 - np.asarray(PRINCIPAL), axis=1)
    sigma = 0.05 + (radius / radius.max()) ** 2
    rng = np.random.default_rng(7)
    est, model, robust = [], [], []
    for _ in range(60):
        xy = xy0 + rng.normal(0.0, 1.0, xy0.shape) * sigma[:, None]
        ba = bundle_adjust(R, C, F_TRUE, X, PRINCIPAL, frame, point, xy, huber_px=1e6, iterations=100)
        est.append(np.log(ba.focal))
        model.append(ba.focal_std)
        robust.append(ba.focal_std_robust)
    spread = np.std(est, ddof=1)
    assert abs(spread / np.mean(robust) - 1.0) < 0.2, (spread, np.mean(robust))
    assert spread / np.mean(model) > 1.1, (spread, np.mean(model))


def test_bundle_adjust_std_ignores_a_point_against_a_camera():
    """A point 2e-6 in front of camera 5's centre (seen by frames 4 and 5, 0.5 px off in both),
    whose Jacobians are ~1e6 times the others', left in the Schur complement leaves the covariance
    to rounding (here 13% low; on a rendered clip a focal standard deviation of 0.004% for a focal
    34% off). The standard deviations come out as those of the adjustment without that point's
    3x3 block: within 10% of a run on the scene without the point."""
    from tests.sfm.scenes import project

    R, C, X = make_scene(2, frames=6)
    X = X[:80]
    frame, point, xy = observations(R, C, F_TRUE, X)
    xy = xy + np.random.default_rng(3).normal(0.0, 0.5, xy.shape)
    ref = bundle_adjust(R, C, F_TRUE, X, PRINCIPAL, frame, point, xy, huber_px=1e6, iterations=100, refine_principal=True)

    near = C[5] + R[5].T @ np.array([4e-7, -2e-7, 2e-6])
    uv, depth = project(R[4:], C[4:], F_TRUE, near[None])
    assert np.all(depth > 0)
    X2 = np.concatenate([X, near[None]])
    frame2 = np.concatenate([frame, [4, 5]])
    point2 = np.concatenate([point, [len(X), len(X)]])
    xy2 = np.concatenate([xy, uv.reshape(2, 2) + (0.4, -0.3)])
    ba = bundle_adjust(R, C, F_TRUE, X2, PRINCIPAL, frame2, point2, xy2, huber_px=1e6, iterations=100, refine_principal=True)
    for name in ("focal_std", "focal_std_robust"):
        assert getattr(ba, name) == pytest.approx(getattr(ref, name), rel=0.1), (name, getattr(ba, name), getattr(ref, name))
    np.testing.assert_allclose(ba.principal_std, ref.principal_std, rtol=0.1)
    np.testing.assert_allclose(ba.principal_std_robust, ref.principal_std_robust, rtol=0.1)


def test_outliers_leave_after_the_adjustment_and_the_focal_is_no_longer_pulled(monkeypatch):
    """`run_sfm`'s adjustment step (`_adjust_and_check`): observations further than
    OUTLIER_RATIO (3) x the median residual from the adjusted model leave and the adjustment runs
    again. 8% of the observations here are moved 1-3 px outwards from the image centre (what
    Huber weights at 1 px still let pull the focal long); they leave (and few inliers with them),
    the focal error shrinks, and the fit's reported figures still count every observation."""
    import flow3r_jax.sfm as sfm

    R, C, X = make_scene(5)
    frame, point, xy = observations(R, C, F_TRUE, X)
    rng = np.random.default_rng(11)
    xy = xy + rng.normal(0.0, 0.2, xy.shape)
    bad = rng.choice(len(xy), int(0.08 * len(xy)), replace=False)
    out = xy[bad] - np.asarray(PRINCIPAL)
    xy[bad] += rng.uniform(1.0, 3.0, (len(bad), 1)) * out / np.linalg.norm(out, axis=1, keepdims=True)
    R0, C0, f0, X0 = perturb(R, C, F_TRUE, X, seed=8)
    size = (2 * PRINCIPAL[0], 2 * PRINCIPAL[1])

    def solve():
        info = dict(timing={})
        res = sfm._adjust_and_check(R0, C0, f0, X0, frame, point, xy, PRINCIPAL, size, True, (4.0, 1.0), 100, False, (1.5, 3.0), 0.9, info, float("inf"))
        return res, info

    kept, info = solve()
    monkeypatch.setattr(sfm, "OUTLIER_RATIO", 1e9)
    every, info_every = solve()
    assert kept.ok and every.ok and info_every["outliers"]["dropped"] == 0
    dropped = info["outliers"]["dropped"]
    assert 0.8 * len(bad) <= dropped <= len(bad) + 0.02 * (len(xy) - len(bad)), (dropped, len(bad))
    assert len(kept.frame) == len(xy) - dropped and info["observations"] == len(kept.frame)
    err_kept, err_every = abs(kept.focal / F_TRUE - 1), abs(every.focal / F_TRUE - 1)
    assert err_kept < 0.5 * err_every, (err_kept, err_every)
    # the reported fit counts the outliers too, at their residuals before they left
    # (measured: all 102 outliers left and no inlier, focal 0.013% off instead of 0.50%; half the
    # outliers sit beyond 2 px, so a count without them would say 100% within 2 px)
    within = info["reprojection_px"]["within_2px"]
    assert within <= 0.99 and abs(within - info_every["reprojection_px"]["within_2px"]) < 0.01
