"""Procrustes-from-depth: exact depth + exact flow give the ground-truth poses (no optimisation)."""

import jax.numpy as jnp
import numpy as np

from flow3r_jax.flowmap.poses import poses_from_relative, procrustes_indices, relative_poses
from flow3r_jax.geometry import bilinear_sample, depth_edge, geodesic_angle, pixel_grid, relative_pose, unproject_depth

from tests.flowmap.conftest import exact_scene


def test_procrustes_indices_match_torch_integer_linspace():
    # torch.linspace(0, n - 1, k, dtype=torch.int64) truncates the float steps.
    idx = procrustes_indices(160, 224, 1000)
    n = 160 * 224
    expected = np.array([int(i * (n - 1) / 999) for i in range(1000)])
    assert len(idx) == 1000 and idx[0] == 0 and idx[-1] == n - 1
    assert np.abs(idx - expected).max() <= 1  # float rounding of the step may differ by one
    assert np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(procrustes_indices(8, 8, None), np.arange(64))


def _reliable(clip):
    """Backward-flow pixels of frame i + 1 that are covisible and whose target in frame i is away
    from depth edges (bilinear sampling across an occlusion edge blends two surfaces)."""
    depth = jnp.asarray(clip["depth"])
    edge = np.asarray(depth_edge(depth, rtol=0.05), np.float32)
    F, H, W = depth.shape
    target = np.asarray(pixel_grid(H, W)) + clip["flow_bw"]
    near_edge = np.asarray(bilinear_sample(jnp.asarray(edge[:-1, ..., None]), jnp.asarray(target), padding="border"))[..., 0] > 0
    return clip["cov_bw"] & ~near_edge & ~edge[1:].astype(bool)


def test_procrustes_from_exact_depth_and_flow_recovers_poses():
    clip = exact_scene(height=96, width=128, frames=6, seed=3, flow_px=(3.0, 6.0))
    F, H, W = clip["depth"].shape
    K = jnp.asarray(clip["intrinsics"][0])
    points = unproject_depth(jnp.asarray(clip["depth"]), K)
    idx = jnp.arange(H * W)
    weights = jnp.asarray(_reliable(clip).reshape(F - 1, -1).astype(np.float32))
    rel = relative_poses(points, jnp.asarray(clip["flow_bw"]), weights, idx)
    poses = np.asarray(poses_from_relative(rel))
    gt = np.asarray(relative_pose(jnp.asarray(clip["poses"][:1]), jnp.asarray(clip["poses"])))  # frame 0 = identity
    np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-6)
    rot_err = np.degrees(np.asarray(geodesic_angle(jnp.asarray(poses[:, :3, :3]), jnp.asarray(gt[:, :3, :3]))))
    assert rot_err.max() < 0.02, rot_err
    steps = np.linalg.norm(np.diff(gt[:, :3, 3], axis=0), axis=-1)
    t_err = np.linalg.norm(poses[:, :3, 3] - gt[:, :3, 3], axis=-1)
    # Exact up to the bilinear interpolation of the surface between pixel centres (second order).
    assert t_err.max() < 0.02 * steps.sum(), (t_err, steps)
    # The weights matter: uniform weights include occlusions and do measurably worse.
    rel_u = relative_poses(points, jnp.asarray(clip["flow_bw"]), jnp.ones_like(weights), idx)
    gt_rel = np.asarray(relative_pose(jnp.asarray(clip["poses"][:-1]), jnp.asarray(clip["poses"][1:])))
    err_w = np.linalg.norm(np.asarray(rel)[:, :3, 3] - gt_rel[:, :3, 3], axis=-1).mean()
    err_u = np.linalg.norm(np.asarray(rel_u)[:, :3, 3] - gt_rel[:, :3, 3], axis=-1).mean()
    assert err_w < err_u


def test_procrustes_validity_from_the_flows_alone_removes_the_outliers():
    """`procrustes_validity` needs no ground truth: target inside the frame and forward-backward
    consistent. Where it says valid the exact covisibility agrees, and Procrustes with it
    (exact depth and flow, uniform learned weights as at the start of a run) is far closer to
    the truth than with every pixel."""
    from flow3r_jax.flowmap.inputs import procrustes_validity

    clip = exact_scene(height=96, width=128, frames=6, seed=3, flow_px=(3.0, 6.0))
    F, H, W = clip["depth"].shape
    valid = np.asarray(procrustes_validity(jnp.asarray(clip["flow_fw"]), jnp.asarray(clip["flow_bw"]))) > 0
    assert 0.5 < valid.mean() < 1.0  # the scene has occlusions / out-of-frame motion to remove
    assert (clip["cov_bw"][valid]).mean() > 0.99  # valid pixels are truly covisible
    K = jnp.asarray(clip["intrinsics"][0])
    points = unproject_depth(jnp.asarray(clip["depth"]), K)
    idx = jnp.arange(H * W)
    gt_rel = np.asarray(relative_pose(jnp.asarray(clip["poses"][:-1]), jnp.asarray(clip["poses"][1:])))
    errors = {}
    for name, w in (("valid", valid.astype(np.float32)), ("uniform", np.ones((F - 1, H, W), np.float32))):
        rel = np.asarray(relative_poses(points, jnp.asarray(clip["flow_bw"]), jnp.asarray(w.reshape(F - 1, -1)), idx))
        errors[name] = np.linalg.norm(rel[:, :3, 3] - gt_rel[:, :3, 3], axis=-1).mean() / np.linalg.norm(gt_rel[:, :3, 3], axis=-1).mean()
    assert errors["valid"] < 0.1 and errors["valid"] < 0.3 * errors["uniform"], errors  # measured 0.07 vs 0.35


def test_edge_validity_matches_a_numpy_statement_of_the_four_sample_pixels():
    """0 exactly where the bilinear sample of frame i's point at the backward-flow target reads
    pixels whose depths differ by more than the factor; border-clamped like the sampling."""
    from flow3r_jax.flowmap.poses import edge_validity

    rng = np.random.default_rng(0)
    F, H, W = 3, 12, 16
    depth = np.where(np.arange(W)[None, None, :] < 7, 1.0, 2.5) * (1 + 0.01 * rng.random((F, H, W)))
    flow = rng.uniform(-4, 4, (F - 1, H, W, 2)).astype(np.float32)
    idx = np.array([0, 5, 30, 77, 100, 191], np.int32)
    got = np.asarray(edge_validity(jnp.asarray(depth, jnp.float32), jnp.asarray(flow), jnp.asarray(idx), 0.05))
    ys, xs = np.divmod(idx, W)
    for i in range(F - 1):
        for k, (y, x) in enumerate(zip(ys, xs)):
            px = np.clip(x + flow[i, y, x, 0], 0, W - 1)  # (x + 0.5 + flow) - 0.5
            py = np.clip(y + flow[i, y, x, 1], 0, H - 1)
            x0, y0 = int(np.floor(px)), int(np.floor(py))
            c = depth[i, [y0, y0, min(y0 + 1, H - 1), min(y0 + 1, H - 1)], [x0, min(x0 + 1, W - 1), x0, min(x0 + 1, W - 1)]]
            assert got[i, k] == float(c.max() / c.min() - 1 <= 0.05), (i, k)
    assert 0 < got.mean() < 1  # both cases occur
    flat = np.asarray(edge_validity(jnp.ones((F, H, W)), jnp.asarray(flow), slice(None), 0.05))
    assert flat.shape == (F - 1, H * W) and flat.min() == 1.0
