"""DF-Net cross-task consistency (flow3r_jax.losses.consistency): the loss and its masks against a
NumPy statement of DF-Net's formulas and a closed-form case, zero for a rigid scene with exact
depth and poses and positive on a moving object, the dynamic-region estimate against a synthetic
clip's exact dynamic mask, and a few training steps of the tiny config with the option on."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flow3r_jax.geometry import flow_to_ndc_coords, induced_flow, intrinsics_from_focal, unproject_depth
from flow3r_jax.losses import consistency as C

# ------------------------------------------------------------------------- NumPy statement


def _np_bilinear_border(img, xy):
    """img (H, W, C) sampled at xy (..., 2), pixel centres at +0.5, coordinates clamped."""
    H, W = img.shape[:2]
    x = np.clip(xy[..., 0] - 0.5, 0, W - 1)
    y = np.clip(xy[..., 1] - 0.5, 0, H - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, W - 1), np.minimum(y0 + 1, H - 1)
    wx, wy = (x - x0)[..., None], (y - y0)[..., None]
    return (1 - wx) * (1 - wy) * img[y0, x0] + wx * (1 - wy) * img[y0, x1] + (1 - wx) * wy * img[y1, x0] + wx * wy * img[y1, x1]


def _np_occluded(f, b):
    return np.sum((f + b) ** 2, -1) > 0.01 * (np.sum(f**2, -1) + np.sum(b**2, -1)) + 0.5


def _np_in_range(f):
    H, W = f.shape[:2]
    gx, gy = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    x, y = gx + f[..., 0], gy + f[..., 1]
    return (x >= 0.5) & (x <= W - 0.5) & (y >= 0.5) & (y <= H - 0.5)


def _np_loss(rfw, rbw, rvalid, flow, cov, pairs, pair_valid):
    """DF-Net: per direction sum m |r - f|_1 / (sum m + 1e-3), m both branches' in-range x (1 -
    occlusion); pooled over the batch per slot, 2 x mean over slots with a real pair."""
    B, S, H, W, _ = rfw.shape
    gx, gy = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    grid = np.stack([gx, gy], -1)
    num, den = np.zeros(S), np.zeros(S)
    for b in range(B):
        for s in range(S):
            if not pair_valid[b, s]:
                continue
            r, f = rfw[b, s], flow[b, s]
            m = rvalid[b, s] & _np_in_range(r) & ~_np_occluded(r, _np_bilinear_border(rbw[b, s], grid + r))
            mf = cov[b, s] & _np_in_range(f)
            rev = [t for t in range(S) if pair_valid[b, t] and tuple(pairs[b, t]) == tuple(pairs[b, s][::-1])]
            if rev:
                mf &= ~_np_occluded(f, _np_bilinear_border(flow[b, rev[0]], grid + f))
            m &= mf
            num[s] += np.sum(np.abs(r - f).sum(-1) * m)
            den[s] += m.sum()
    active = pair_valid.any(0)
    return 2 * np.sum((num / (den + 1e-3))[active]) / max(active.sum(), 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_loss_matches_numpy_statement(seed):
    rng = np.random.default_rng(seed)
    B, S, H, W = 2, 4, 6, 7
    pairs = np.array([[[0, 1], [1, 0], [1, 2], [2, 0]], [[2, 1], [0, 2], [1, 2], [0, 0]]], np.int32)
    pair_valid = np.array([[True, True, True, True], [True, True, True, False]])
    rfw = rng.normal(size=(B, S, H, W, 2)) * 1.5
    # backward flows: mostly the inverse (consistent), some pixels far off (occluded)
    rbw = -rfw + rng.normal(size=rfw.shape) * rng.choice([0.05, 3.0], size=(B, S, H, W, 1), p=[0.7, 0.3])
    flow = rfw + rng.normal(size=rfw.shape) * 0.7
    rvalid = rng.random((B, S, H, W)) < 0.9
    cov = rng.random((B, S, H, W)) < 0.8
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    loss_mask, _ = C.consistency_masks(f32(rfw), f32(rbw), jnp.asarray(rvalid), f32(flow), jnp.asarray(cov), jnp.asarray(pairs), jnp.asarray(pair_valid))
    got = C.cross_consistency(f32(rfw), f32(flow), loss_mask, jnp.asarray(pair_valid))
    want = _np_loss(rfw, rbw, rvalid, flow, cov, pairs, pair_valid)
    assert 0 < want
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    # the masks carry no gradient; the loss's gradient is sign(r - f) on masked pixels, over the norm
    g = jax.grad(lambda r: C.cross_consistency(r, f32(flow), loss_mask, jnp.asarray(pair_valid)))(f32(rfw))
    assert np.all(np.isfinite(g)) and np.all(np.asarray(g)[~np.asarray(loss_mask)] == 0)


def test_closed_form_constant_flows():
    """Rigid flow (0.5, 0) everywhere, flow 0, consistent backward rigid flow, no reverse target:
    the last column leaves the range, so L = 2 x (3 H x 0.5) / (3 H + 1e-3) for W = 4."""
    H, W = 3, 4
    r = jnp.zeros((1, 1, H, W, 2)).at[..., 0].set(0.5)
    masks = C.consistency_masks(r, -r, jnp.ones((1, 1, H, W), bool), jnp.zeros_like(r), jnp.ones((1, 1, H, W), bool), jnp.array([[[0, 1]]]), jnp.array([[True]]))
    np.testing.assert_array_equal(np.asarray(masks[0])[0, 0], np.tile([True, True, True, False], (H, 1)))
    got = C.cross_consistency(r, jnp.zeros_like(r), masks[0], jnp.array([[True]]))
    np.testing.assert_allclose(float(got), 2 * (3 * H * 0.5) / (3 * H + 1e-3), rtol=1e-6)
    # in the flow head's NDC units: dx x 2 / (W - 1)
    got = C.cross_consistency(r, jnp.zeros_like(r), masks[0], jnp.array([[True]]), units="ndc")
    np.testing.assert_allclose(float(got), 2 * (3 * H * 0.5 * 2 / (W - 1)) / (3 * H + 1e-3), rtol=1e-6)


def test_occlusion_threshold_is_dfnets():
    f = jnp.array([[10.0, 0.0], [10.0, 0.0]])
    # |f + b|^2 = 2.4025 / 2.56 against 0.01 (|f|^2 + |b|^2) + 0.5 = 2.524 / 2.5256
    b = jnp.array([[-10.0, 1.55], [-10.0, 1.6]])
    np.testing.assert_array_equal(np.asarray(C.fb_occluded(f, b)), [False, True])


# -------------------------------------------------------------- a constructed rigid scene


def _scene(H=24, W=32, N=3, seed=0):
    """Depth (a slanted plane with a box), intrinsics at the image centre and camera-to-world poses
    of a small forward / sideways motion; all directed pairs of consecutive frames."""
    rng = np.random.default_rng(seed)
    u, v = np.meshgrid((np.arange(W) + 0.5) / W, (np.arange(H) + 0.5) / H)
    depth = np.stack([4 + u + 0.5 * v - 1.5 * ((abs(u - 0.5) < 0.2) & (abs(v - 0.5) < 0.2)) for _ in range(N)])
    poses = np.tile(np.eye(4), (N, 1, 1))
    for n in range(N):
        a = 0.03 * n
        poses[n, :3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
        poses[n, :3, 3] = [0.15 * n, 0.02 * n * rng.normal(), 0.1 * n]
    K = np.asarray(intrinsics_from_focal(jnp.full((N,), 0.9 * W), cx=W / 2, cy=H / 2))
    pairs = np.array([[0, 1], [1, 0], [1, 2], [2, 1]], np.int32)
    return depth.astype(np.float32), K.astype(np.float32), poses.astype(np.float32), pairs


def _as_batch(depth, K, poses, pairs, flow, covisible):
    """Model outputs equal to the exact geometry, and a batch whose target is `flow`."""
    f32 = lambda x: jnp.asarray(x, jnp.float32)[None]  # noqa: E731
    out = dict(local_points=unproject_depth(f32(depth), f32(K)), camera_poses=f32(poses), flow=flow_to_ndc_coords(f32(flow)))
    batch = dict(flow_target=flow_to_ndc_coords(f32(flow)), covisible=jnp.asarray(covisible)[None], pairs=jnp.asarray(pairs)[None], pair_valid=jnp.ones((1, len(pairs)), bool))
    return out, batch


@functools.partial(jax.jit, static_argnums=2)
def _loss_and_count(out, batch, source):
    rigid, flow, mask, _ = C.consistency_inputs(out, batch, source)
    return C.cross_consistency(rigid, flow, mask, batch["pair_valid"]), jnp.sum(mask)


def _loss(out, batch, source="target"):
    loss, count = _loss_and_count(out, batch, source)
    return float(loss), int(count)


_dynamic_regions = jax.jit(C.dynamic_regions)


def test_zero_for_a_rigid_scene_and_positive_for_a_moving_object():
    depth, K, poses, pairs = _scene()
    i, j = pairs[:, 0], pairs[:, 1]
    flow, front = map(np.asarray, induced_flow(depth[i], K[i], poses[i], K[j], poses[j]))
    out, batch = _as_batch(depth, K, poses, pairs, flow, front)
    loss, count = _loss(out, batch)
    assert count > 0.5 * flow.size / 2 and loss < 1e-3, (loss, count)  # float32 rounding only
    assert _loss(out, batch, "pred")[0] < 1e-3  # the head's flow in place of the target
    # the same prediction at another global scale: the induced flow does not change
    scaled = dict(out, local_points=3.0 * out["local_points"], camera_poses=out["camera_poses"].at[..., :3, 3].multiply(3.0))
    assert _loss(scaled, batch)[0] < 1e-3
    # an object moving 3 px to the right in the target flow of the forward pairs (the backward
    # pairs are left out: a target moved the same way both ways fails the forward-backward test)
    moving = np.zeros(flow.shape[:-1], bool)
    moving[:, 8:16, 10:20] = True
    moved = np.asarray(flow) + moving[..., None] * np.array([3.0, 0.0])
    fwd = [0, 2]
    out_m, batch_m = _as_batch(depth, K, poses, pairs[fwd], moved[fwd], front[fwd])
    loss_m, _ = _loss(out_m, batch_m)
    assert loss_m > 0.3, loss_m
    moving = moving[fwd]
    dyn, frame_dyn, tested = _dynamic_regions(out_m, batch_m)
    p, r = C.precision_recall(dyn[0], jnp.asarray(moving), tested[0])
    assert float(p) == 1.0 and float(r) == 1.0, (p, r)
    np.testing.assert_array_equal(np.asarray(frame_dyn[0, 0]), moving[0] & np.asarray(tested[0, 0]))


# --------------------------------------------------- a synthetic clip with moving objects


@pytest.fixture(scope="module")
def clip():
    from data_pipelines.synthetic import SceneConfig, generate_clip

    return generate_clip(SceneConfig(height=56, width=56, frames=4, dynamic=True, offsets=(1,), num_dynamic=2), seed=0)


def test_dynamic_mask_recovers_the_moving_objects_of_a_synthetic_clip(clip):
    """Exact depth, poses and flow: the consistency vanishes on static pixels, and the disagreement
    finds the moving objects with precision and recall >= 0.95 over the tested pixels; the test
    covers >= 50% of the covisible moving pixels."""
    out, batch = _as_batch(clip["depth"], clip["intrinsics"], clip["poses"], clip["pairs"], clip["flow"], clip["covisible"])
    gt = jnp.asarray(clip["dynamic"][clip["pairs"][:, 0]])[None]
    assert float(jnp.mean(gt & batch["covisible"])) > 0.01  # the scene has moving objects in view
    rigid, flow, mask, tested = C.consistency_inputs(out, batch)
    err = jnp.sum(jnp.abs(rigid - flow), -1)
    assert float(jnp.max(jnp.where(mask & ~gt, err, 0.0))) < 0.05  # static pixels agree
    assert float(C.cross_consistency(rigid, flow, mask, batch["pair_valid"])) > 0.05  # the objects do not
    dyn, _, tested = _dynamic_regions(out, batch)
    p, r = C.precision_recall(dyn, gt, tested)
    assert float(p) >= 0.95 and float(r) >= 0.95, (p, r)
    assert float(jnp.sum(gt & tested) / jnp.sum(gt & batch["covisible"])) >= 0.5


# ----------------------------------------------------------------------- the loss option


def test_default_config_keeps_the_loss_and_the_option_adds_the_weighted_term():
    from flow3r_jax.losses import LossConfig, flow3r_loss
    from tests.losses import reference as ref

    out, batch = ref.random_batch(np.random.default_rng(0))
    loss = jax.jit(flow3r_loss, static_argnums=2)
    total, terms = loss(out, batch, LossConfig())
    assert "consistency" not in terms and "dynamic_fraction" not in terms
    total_c, terms_c = loss(out, batch, LossConfig(consistency_weight=0.5))
    assert terms_c["consistency"] > 0 and 0 <= terms_c["dynamic_fraction"] <= 1
    np.testing.assert_allclose(float(total_c), float(total) + 0.5 * float(terms_c["consistency"]), rtol=1e-5)
    with pytest.raises(ValueError, match="consistency_flow.*bogus"):
        LossConfig(consistency_flow="bogus")
    with pytest.raises(ValueError, match="no_such_field"):
        LossConfig.from_config({"flow_weight": 0.01, "no_such_field": 1.0})


# Training with the option through launch.train: tests/benchmarks/test_ablation.py trains the
# ablation's `consistency` variant (factored head + this term) and checks the logged term.
