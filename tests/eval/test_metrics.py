"""Evaluation metrics against independent references: evo (trajectory), closed forms (angular
pose, AUC, point sets, ICP, flow), direct NumPy statements of π³'s depth protocol, and PyTorch's
Adam for the scale & shift fit."""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from flow3r_jax.eval.metrics import (
    DEPTH_PROTOCOLS,
    accuracy_completeness,
    align_depth,
    angular_pose_metrics,
    average_metrics,
    depth_l1_scale,
    depth_median_scale,
    depth_metrics,
    depth_scale_shift_lad,
    estimate_normals,
    flow_error_sums,
    flow_metrics,
    fscore,
    icp_point_to_point,
    pointmap_metrics,
    pose_auc,
    relative_pose_errors,
    resize_depth,
    trajectory_metrics,
    umeyama_sim3,
)


# ---------------------------------------------------------------------------------- helpers


def _poses(R, c):
    T = np.tile(np.eye(4), (len(R), 1, 1))
    T[:, :3, :3], T[:, :3, 3] = R, c
    return T


def _random_trajectory(rng, n):
    R = Rotation.from_rotvec(np.cumsum(rng.normal(0, 0.1, (n, 3)), axis=0)).as_matrix()
    return _poses(R, np.cumsum(rng.normal(0, 0.3, (n, 3)), axis=0))


def _noisy(rng, G, rot_sigma=0.05, trans_sigma=0.1):
    noise = Rotation.from_rotvec(rng.normal(0, rot_sigma, (len(G), 3))).as_matrix()
    return _poses(G[:, :3, :3] @ noise, G[:, :3, 3] + rng.normal(0, trans_sigma, (len(G), 3)))


def _similarity_of_poses(s, R, t, P):
    """World similarity x -> s R x + t applied to camera-to-world poses."""
    return _poses(R @ P[:, :3, :3], s * P[:, :3, 3] @ R.T + t)


# ------------------------------------------------------------------------------- trajectory


def test_trajectory_exact_similarity_has_zero_error(rng):
    G = _random_trajectory(rng, 25)
    R = Rotation.random(random_state=7).as_matrix()
    P = _similarity_of_poses(3.7, R, np.array([1.0, -2.0, 0.5]), G)
    m = trajectory_metrics(P, G)
    assert m["ate"] < 1e-9 and m["rpe_trans"] < 1e-9 and m["rpe_rot"] < 1e-6
    np.testing.assert_allclose(m["scale"], 1 / 3.7, rtol=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_trajectory_against_evo(seed):
    from evo.core.metrics import PoseRelation, Unit
    from evo.core.trajectory import PoseTrajectory3D
    import evo.main_ape as main_ape
    import evo.main_rpe as main_rpe

    rng = np.random.default_rng(seed)
    n = 24
    G = _random_trajectory(rng, n)
    P = _similarity_of_poses(0.4 + seed, Rotation.random(random_state=seed).as_matrix(), rng.normal(size=3), _noisy(rng, G))
    ts = np.arange(n, dtype=float)
    ref = PoseTrajectory3D(poses_se3=list(G), timestamps=ts)
    est = PoseTrajectory3D(poses_se3=list(P), timestamps=ts)
    # π³'s relpose/evo_utils.py: eval_metrics, call for call.
    ate = main_ape.ape(copy.deepcopy(ref), copy.deepcopy(est), pose_relation=PoseRelation.translation_part, align=True, correct_scale=True)
    kw = dict(align=True, correct_scale=True, delta=1, delta_unit=Unit.frames, rel_delta_tol=0.01, all_pairs=True)
    rot = main_rpe.rpe(copy.deepcopy(ref), copy.deepcopy(est), pose_relation=PoseRelation.rotation_angle_deg, **kw)
    trans = main_rpe.rpe(copy.deepcopy(ref), copy.deepcopy(est), pose_relation=PoseRelation.translation_part, **kw)

    m = trajectory_metrics(P, G)
    np.testing.assert_allclose(m["ate"], ate.stats["rmse"], rtol=1e-9)
    np.testing.assert_allclose(m["rpe_trans"], trans.stats["rmse"], rtol=1e-9)
    np.testing.assert_allclose(m["rpe_rot"], rot.stats["rmse"], rtol=1e-9)
    assert m["ate"] > 0.01 and m["rpe_rot"] > 0.5  # the noise is visible


def test_trajectory_rejects_mismatched_shapes(rng):
    G = _random_trajectory(rng, 5)
    with pytest.raises(ValueError, match="gt_poses"):
        trajectory_metrics(G[:4], G)


# ---------------------------------------------------------------------------- angular pose


def _cameras_on_circle(n):
    """Cameras on a circle looking at the origin (OpenCV axes: z forward, y down)."""
    R, c = [], []
    for a in np.linspace(0, 1.5 * np.pi, n):
        centre = np.array([3 * np.cos(a), 0.3 * np.sin(3 * a), 3 * np.sin(a)])
        z = -centre / np.linalg.norm(centre)
        x = np.cross(np.array([0.0, -1.0, 0.0]), z)
        x /= np.linalg.norm(x)
        R.append(np.stack([x, np.cross(z, x), z], axis=1))
        c.append(centre)
    return _poses(np.array(R), np.array(c))


def test_known_rotation_offset_gives_known_rra_rta_auc():
    n = 10
    G = _cameras_on_circle(n)
    P = G.copy()
    theta = 10.5
    # Camera 0 rotated about its own optical axis; its centre (so every relative translation
    # T_j inv(T_0) = inv(c2w_j) c2w_0 with 0 < j) is unchanged.
    P[0, :3, :3] = G[0, :3, :3] @ Rotation.from_euler("z", theta, degrees=True).as_matrix()
    r, t = relative_pose_errors(P, G)
    pairs = n * (n - 1) // 2
    assert r.shape == t.shape == (pairs,)
    i, _ = np.triu_indices(n, 1)
    np.testing.assert_allclose(r[i == 0], theta, atol=1e-6)
    assert np.all(r[i != 0] < 1e-4) and np.all(t < 1e-4)

    m = angular_pose_metrics(r, t)
    f = (n - 1) / pairs  # the fraction of pairs off by theta
    assert m["rra@5"] == pytest.approx(100 * (1 - f))
    assert m["rra@15"] == m["rra@30"] == m["rta@5"] == 100.0
    # AUC@30 = mean over k = 1..30 of the fraction with max error < k: (1 - f) for k <= 10, 1 after.
    assert m["auc@30"] == pytest.approx(100 * (10 * (1 - f) + 20) / 30)
    assert m["auc@5"] == pytest.approx(100 * (1 - f))
    assert m["pairs"] == pairs


def test_translation_direction_error_is_an_undirected_angle():
    R = np.stack([np.eye(3)] * 2)
    G = _poses(R, np.array([[0.0, 0, 0], [1.0, 0, 0]]))
    for a, expected in [(20.0, 20.0), (120.0, 60.0), (180.0, 0.0)]:
        c1 = np.array([np.cos(np.radians(a)), np.sin(np.radians(a)), 0.0]) * 2.0
        P = _poses(R, np.array([[0.0, 0, 0], c1]))
        r, t = relative_pose_errors(P, G)
        np.testing.assert_allclose(t, [expected], atol=1e-5)
        assert r[0] < 1e-5


def test_relative_pose_errors_ignore_the_world_frame_and_scale(rng):
    G = _cameras_on_circle(6)
    P = _noisy(rng, G, 0.1, 0.3)
    r0, t0 = relative_pose_errors(P, G)
    P2 = _similarity_of_poses(2.5, Rotation.random(random_state=3).as_matrix(), rng.normal(size=3), P)
    r1, t1 = relative_pose_errors(P2, G)
    np.testing.assert_allclose(r1, r0, atol=1e-6)
    np.testing.assert_allclose(t1, t0, atol=1e-6)
    assert r0.max() > 1.0  # the noise is visible


def test_auc_hand_computed():
    # max errors 0.5, 2.5, 4.0, 5.0, 40 with unit bins up to 5 (the last bin [4, 5] closed):
    # fraction counted at k = 1..5 is 1/5, 1/5, 2/5, 2/5, 4/5, whose mean is 0.4.
    rot = np.array([0.5, 2.5, 1.0, 5.0, 40.0])
    trans = np.array([0.2, 0.1, 4.0, 0.0, 0.0])
    assert pose_auc(rot, trans, max_threshold=5) == pytest.approx(0.4)
    assert angular_pose_metrics(rot, trans, thresholds=(5,))["auc@5"] == pytest.approx(40.0)


# ------------------------------------------------------------------------------------ depth


def _depth_case(rng, n=3, h=9, w=11):
    gt = rng.uniform(0.5, 80.0, (n, h, w))
    gt[rng.random(gt.shape) < 0.15] = 0.0  # invalid
    pred = 0.5 * np.where(gt > 0, gt, 10.0) * rng.uniform(0.8, 1.25, gt.shape) + 0.3
    return pred, gt


def _reference_metrics(p, g):
    """The metric formulas of π³'s depth_evaluation, written out."""
    d = p - g
    pc = np.maximum(p, 1e-5)
    r = np.maximum(pc / g, g / pc)
    return {
        "abs_rel": np.mean(np.abs(d) / g),
        "sq_rel": np.mean(d**2 / g),
        "rmse": np.sqrt(np.mean(d**2)),
        "log_rmse": np.sqrt(np.mean((np.log(pc) - np.log(g)) ** 2)),
        "delta<1.25": np.mean(r < 1.25),
        "delta<1.25^2": np.mean(r < 1.5625),
        "delta<1.25^3": np.mean(r < 1.953125),
    }


def _reference_adam_lad(p, g, s, t, lr=1e-4, max_iters=1000, tol=1e-6):
    """torch.optim.Adam's update rule on sum |s p + t - g|, written out in NumPy."""
    x, m, v, prev = np.array([s, t]), np.zeros(2), np.zeros(2), None
    for k in range(1, max_iters + 1):
        res = x[0] * p + x[1] - g
        loss = np.abs(res).sum()
        grad = np.array([np.sum(np.sign(res) * p), np.sum(np.sign(res))])
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        x = x - lr * (m / (1 - 0.9**k)) / (np.sqrt(v / (1 - 0.999**k)) + 1e-8)
        if prev is not None and abs(prev - loss) < tol:
            break
        prev = loss
    return x


@pytest.mark.parametrize("align", ["none", "median", "l1_scale", "lstsq", "scale_shift"])
def test_depth_metrics_match_numpy_formulas(rng, align):
    pred, gt = _depth_case(rng)
    valid = (gt > 0) & (gt < 70)
    p, g = pred[valid], gt[valid]
    if align == "median":
        lower_median = lambda x: np.sort(x)[(x.size - 1) // 2]  # noqa: E731  (torch.median)
        p = lower_median(g) / lower_median(p) * p
    elif align == "l1_scale":
        s = g.mean() / p.mean()
        for _ in range(10):
            wgt = 1 / (np.abs(s * p - g) + 1e-8)
            s = np.sum(wgt * p * g) / np.sum(wgt * p * p)
        p = s * p
    elif align == "lstsq":
        s, t = np.polyfit(p, g, 1)
        p = s * p + t
    elif align == "scale_shift":
        s0 = np.sort(g)[(g.size - 1) // 2] / np.sort(p)[(p.size - 1) // 2]
        s, t = _reference_adam_lad(p, g, s0, 0.0)
        p = s * p + t
    p = np.minimum(p, 70.0)  # Sintel's post_clip_max

    m = depth_metrics(pred, gt, align=align, **DEPTH_PROTOCOLS["sintel"])
    assert m["valid_pixels"] == valid.sum()
    for k, v in _reference_metrics(p, g).items():
        np.testing.assert_allclose(m[k], v, rtol=1e-9, err_msg=k)


@pytest.mark.torch
def test_scale_shift_matches_torch_adam(rng):
    torch = pytest.importorskip("torch")
    p = rng.uniform(1, 10, 3000)
    g = 1.3 * p + 0.05 + rng.normal(0, 0.05, p.size)
    g[rng.random(p.size) < 0.1] += 15.0
    s0 = depth_median_scale(p, g)
    # π³'s utils/depth.py: absolute_value_scaling2, in float64.
    P, G = torch.tensor(p), torch.tensor(g)
    s = torch.tensor([s0], dtype=P.dtype, requires_grad=True)
    t = torch.tensor([0.0], dtype=P.dtype, requires_grad=True)
    opt = torch.optim.Adam([s, t], lr=1e-4)
    prev = None
    for _ in range(1000):
        opt.zero_grad()
        loss = torch.sum(torch.abs(s * P + t - G))
        loss.backward()
        opt.step()
        if prev is not None and torch.abs(prev - loss) < 1e-6:
            break
        prev = loss.item()
    np.testing.assert_allclose(depth_scale_shift_lad(p, g), (s.item(), t.item()), rtol=1e-9, atol=1e-12)


def test_scale_shift_recovers_a_known_fit_despite_outliers(rng):
    p = rng.uniform(1, 10, 4000)
    out = rng.random(p.size) < 0.1
    # π³'s settings (median start, Adam lr 1e-4, 1000 steps) reach a nearby optimum ...
    g = 1.3 * p + 0.05
    g[out] += rng.choice([-1, 1], out.sum()) * rng.uniform(2, 5, out.sum())
    np.testing.assert_allclose(depth_scale_shift_lad(p, g), (1.3, 0.05), atol=2e-3)
    # ... and, given room to travel, the minimiser of the absolute deviation, which ignores the
    # 10% of gross outliers (least squares does not).
    g = 0.7 * p + 0.8
    g[out] += 30.0
    np.testing.assert_allclose(depth_scale_shift_lad(p, g, lr=1e-3, max_iters=5000), (0.7, 0.8), atol=2e-3)
    s_ls, t_ls = np.polyfit(p, g, 1)
    assert abs(t_ls - 0.8) > 1.0


def test_l1_scale_and_median_scale_recover_a_scale(rng):
    p = rng.uniform(1, 10, 501)
    g = 2.0 * p
    g[:40] *= 3.0  # outliers
    assert depth_l1_scale(p, g) == pytest.approx(2.0, abs=1e-6)
    assert depth_median_scale(p, g) == pytest.approx(np.median(g) / np.median(p))  # odd count: exact median


def test_eval_mask_restricts_scoring_but_not_alignment(rng):
    pred, gt = _depth_case(rng)
    keep = rng.random(gt.shape) < 0.5
    m = depth_metrics(pred, gt, align="lstsq", eval_mask=keep)
    valid = gt > 0
    s, t = np.polyfit(pred[valid], gt[valid], 1)
    sel = valid & keep
    ref = _reference_metrics(s * pred[sel] + t, gt[sel])
    np.testing.assert_allclose(m["abs_rel"], ref["abs_rel"], rtol=1e-9)
    assert m["valid_pixels"] == sel.sum()


def test_align_depth_applies_the_fitted_alignment_to_every_pixel(rng):
    pred, gt = _depth_case(rng)
    valid = gt > 0
    s, t = np.polyfit(pred[valid], gt[valid], 1)
    np.testing.assert_allclose(align_depth(pred, gt, align="lstsq"), s * pred + t, rtol=1e-9)
    s_med = depth_median_scale(pred[valid & (gt < 70)], gt[valid & (gt < 70)])
    np.testing.assert_allclose(align_depth(pred, gt, max_depth=70.0), s_med * pred, rtol=1e-12)
    np.testing.assert_array_equal(align_depth(pred, np.zeros_like(gt)), pred)


def test_pixel_weighted_average_equals_pooling(rng):
    pred, gt = _depth_case(rng, n=4)
    per_frame = [depth_metrics(pred[k], gt[k], align="none") for k in range(4)]
    pooled = depth_metrics(pred, gt, align="none")
    avg = average_metrics(per_frame, weight_key="valid_pixels")
    for k in ("abs_rel", "sq_rel", "delta<1.25", "delta<1.25^2"):
        np.testing.assert_allclose(avg[k], pooled[k], rtol=1e-12)
    assert avg["valid_pixels"] == pooled["valid_pixels"]
    assert average_metrics([{"ate": 1.0}, {"ate": 3.0}])["ate"] == 2.0


def test_depth_edge_cases():
    gt = np.zeros((4, 5))
    m = depth_metrics(np.ones((4, 5)), gt, align="median")
    assert m["valid_pixels"] == 0 and m["abs_rel"] == 0.0
    with pytest.raises(ValueError, match="resize"):
        depth_metrics(np.ones((4, 6)), gt)
    with pytest.raises(ValueError, match="align"):
        depth_metrics(np.ones((4, 5)), gt + 1, align="bogus")
    assert resize_depth(np.full((6, 8), 3.0, np.float32), (12, 16)).shape == (12, 16)
    np.testing.assert_allclose(resize_depth(np.full((2, 6, 8), 3.0, np.float32), (3, 4)), 3.0, rtol=1e-6)


# --------------------------------------------------------------------------------- pointmap


def _grid_plane(n=20, h=0.1):
    x, y = np.meshgrid(np.arange(n) * h, np.arange(n) * h)
    return np.stack([x, y, np.zeros_like(x)], axis=-1).reshape(-1, 3)


def test_accuracy_completeness_on_offset_grids():
    h, d = 0.1, 0.03
    gt = _grid_plane(h=h)
    R = Rotation.random(random_state=5).as_matrix()
    # Half a grid step along x and d along the normal: every nearest neighbour is at
    # sqrt((h/2)^2 + d^2), in both directions, and the planes are parallel (NC = 1).
    pred = (gt + [h / 2, 0.0, d]) @ R.T
    gt = gt @ R.T
    m = accuracy_completeness(pred, gt, estimate_normals(pred), estimate_normals(gt))
    expected = np.hypot(h / 2, d)
    for k in ("acc", "acc_med", "comp", "comp_med", "chamfer"):
        np.testing.assert_allclose(m[k], expected, rtol=1e-9, err_msg=k)
    for k in ("nc", "nc_med", "nc1", "nc2"):
        np.testing.assert_allclose(m[k], 1.0, atol=1e-9, err_msg=k)


def test_normals_of_a_plane_and_normal_consistency_of_a_tilt():
    gt = _grid_plane()
    n = estimate_normals(gt)
    np.testing.assert_allclose(np.abs(n[:, 2]), 1.0, atol=1e-12)
    alpha = np.radians(25.0)
    centre = gt.mean(axis=0)
    pred = (gt - centre) @ Rotation.from_euler("x", alpha).as_matrix().T + centre
    m = accuracy_completeness(pred, gt, estimate_normals(pred), n)
    for k in ("nc1", "nc2", "nc", "nc_med"):
        np.testing.assert_allclose(m[k], np.cos(alpha), atol=1e-9, err_msg=k)


def test_fscore_closed_form(rng):
    gt = _grid_plane()
    far = rng.uniform(5, 6, (100, 3))
    p, r, f = fscore(np.concatenate([gt + [0, 0, 0.01], far]), gt, tau=0.05)
    p_ref = len(gt) / (len(gt) + 100)
    assert (p, r) == (pytest.approx(p_ref), 1.0)
    assert f == pytest.approx(2 * p_ref / (p_ref + 1))
    assert fscore(gt + [0, 0, 0.06], gt, tau=0.05) == (0.0, 0.0, 0.0)


def test_icp_recovers_a_small_rigid_motion(rng):
    target = rng.uniform(-1, 1, (800, 3))
    axis = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(np.radians(3.0) * axis).as_matrix()
    T[:3, 3] = [0.02, -0.01, 0.015]
    source = (target - T[:3, 3]) @ T[:3, :3]  # T^-1 applied: T maps source onto target
    T_est, fitness, rmse = icp_point_to_point(source, target, threshold=0.1)
    np.testing.assert_allclose(T_est, T, atol=1e-9)
    assert fitness == 1.0 and rmse < 1e-9


def test_umeyama_and_full_pointmap_protocol_on_a_similar_copy():
    H = W = 16
    u, v = np.meshgrid(np.linspace(-1, 1, W), np.linspace(-1, 1, H))
    z = 2 + 0.3 * np.sin(2 * u) * np.cos(3 * v)
    gt = np.stack([u * z, v * z, z], axis=-1)[None].repeat(2, axis=0)
    gt[1] += [0.1, 0.0, 0.05]
    R = Rotation.random(random_state=3).as_matrix()
    pred = 1.7 * gt @ R.T + [0.3, -2.0, 1.0]
    S = umeyama_sim3(pred.reshape(-1, 3), gt.reshape(-1, 3))
    np.testing.assert_allclose(S[:3, :3], R.T / 1.7, atol=1e-12)

    mask = np.ones(gt.shape[:-1], bool)
    mask[0, :3] = False
    pred[0, :3] = 1e3  # garbage on invalid pixels must not matter
    m = pointmap_metrics(pred, gt, mask)
    for k in ("acc", "comp", "acc_med", "comp_med", "chamfer", "mse"):
        assert m[k] < 1e-9, k
    for k in ("nc", "nc_med", "fscore@0.05", "icp_fitness"):
        np.testing.assert_allclose(m[k], 1.0, atol=1e-9, err_msg=k)


# ------------------------------------------------------------------------------------- flow


def test_flow_metrics_hand_case():
    gt = np.zeros((2, 2, 2, 2))
    pred = np.zeros_like(gt)
    pred[0] = [[[0.5, 0.0], [3.0, 4.0]], [[0.0, 2.0], [10.0, 0.0]]]  # EPE 0.5, 5, 2, 10
    pred[1] = [[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]  # EPE 1, 0, 0, 0
    valid = np.ones((2, 2, 2), bool)
    valid[0, 1, 1] = False  # drop the EPE-10 pixel
    m = flow_metrics(pred, gt, valid)
    # Per-pair means then the mean over pairs: pair 0 -> 7.5 / 3, pair 1 -> 1 / 4.
    assert m["epe"] == pytest.approx((7.5 / 3 + 0.25) / 2)
    assert m["<1px"] == pytest.approx(100 * (1 / 3 + 3 / 4) / 2)
    assert m["<3px"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert m["<5px"] == pytest.approx(100 * (2 / 3 + 1) / 2)  # 5 px is not < 5
    assert m["pairs"] == 2 and m["count"] == 7
    m1 = flow_metrics(pred[0], gt[0])
    assert m1["epe"] == pytest.approx(17.5 / 4) and m1["<5px"] == 50.0
    valid[1] = False  # a pair with no valid pixel is left out
    assert flow_metrics(pred, gt, valid)["pairs"] == 1

    count, epe_sum, below = jax.jit(flow_error_sums)(jnp.asarray(pred), jnp.asarray(gt), jnp.asarray(valid))
    np.testing.assert_allclose(count, [3, 0])
    np.testing.assert_allclose(epe_sum, [7.5, 0.0], rtol=1e-6)
    np.testing.assert_allclose(below, [[1, 2, 2], [0, 0, 0]])
