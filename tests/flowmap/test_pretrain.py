"""FlowMap pretraining (`flow3r_jax.flowmap.pretrain`): batch sampling, the scale-invariant
depth term, and that a short run with it moves the depth CNN toward the true depth shape."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flow3r_jax.flowmap import FlowMapConfig, init_params
from flow3r_jax.flowmap.model import FlowMapModel
from flow3r_jax.flowmap.pretrain import ClipPool, PretrainConfig, pretrain, sample_batch, scale_invariant_depth_loss

from .conftest import exact_scene


def test_scale_invariant_depth_loss_matches_numpy():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 5.0, (3, 6, 7)).astype(np.float32)
    e = rng.normal(0.0, 0.2, gt.shape).astype(np.float32)
    gt[0, 0, :3] = 0.0  # unknown pixels: ignored whatever the prediction says there
    gt[1, 2, 2] = np.nan
    pred = gt * np.exp(e) * np.array([2.0, 0.3, 7.0], np.float32)[:, None, None]  # a per-frame scale is free
    pred = np.where(np.isfinite(pred) & (gt > 0), pred, 123.0)
    ref = []
    for f in range(3):
        known = np.isfinite(gt[f]) & (gt[f] > 0)
        r = e[f][known]
        ref.append(np.mean(np.abs(r - r.mean())))
    got = float(scale_invariant_depth_loss(jnp.asarray(pred), jnp.asarray(gt)))
    np.testing.assert_allclose(got, np.mean(ref), rtol=1e-4)
    assert float(scale_invariant_depth_loss(jnp.asarray(gt * 4.0), jnp.asarray(gt))) == pytest.approx(0.0, abs=1e-6)
    assert float(scale_invariant_depth_loss(jnp.ones((2, 4, 4)), jnp.zeros((2, 4, 4)))) == 0.0  # nothing known


def _coded_pool(N=3, K=5, H=8, W=10):
    """A pool whose every value says where it came from: red = 10 clip + frame, green = column;
    depth = 1 + red + green / 100; forward flow (frame + 1, clip), backward flow -(frame + 1, clip)."""
    clip = np.arange(N)[:, None, None, None]
    frame = np.arange(K)[None, :, None, None]
    col = np.arange(W)[None, None, None, :]
    red = np.broadcast_to(10 * clip + frame, (N, K, H, W)).astype(np.float32)
    green = np.broadcast_to(col, (N, K, H, W)).astype(np.float32)
    images = np.stack([red, green, np.zeros_like(red)], -1).astype(np.uint8)
    depth = (1.0 + red + green / 100.0).astype(np.float16)
    f = np.broadcast_to(np.stack(np.broadcast_arrays(frame[:, : K - 1] + 1.0, clip + 0.0), -1), (N, K - 1, H, W, 2)).astype(np.float16)
    return ClipPool(images, f, -f, np.arange(N, dtype=np.float32) + 1.0, depth)


def test_sample_batch_transforms_images_flow_and_depth_together():
    pool = _coded_pool()
    inputs, depth = sample_batch(pool, jax.random.key(3), 64, 3, known_focal=True, with_depth=True)
    img = np.asarray(inputs.images) * 255.0
    red, green = np.rint(img[..., 0]), np.rint(img[..., 1])
    np.testing.assert_allclose(np.asarray(depth), 1.0 + red + green / 100.0, rtol=2e-3)  # same frames, same flip
    c = red[:, 0, 0, 0] // 10
    np.testing.assert_array_equal(np.asarray(inputs.focal), c + 1.0)
    frames = red[:, :, 0, 0] - 10 * c[:, None]
    step = np.diff(frames, axis=1)
    assert set(np.unique(step)) <= {-1.0, 1.0} and {-1.0, 1.0} <= set(np.unique(step[:, 0]))  # both directions drawn
    flipped = green[:, 0, 0, 0] == 9
    assert flipped.any() and (~flipped).any()
    fw = np.asarray(inputs.flow_fw)[:, :, 0, 0]  # (B, 2, 2)
    for b in range(len(fw)):
        # pair (t, t + 1) reads the stored pair starting at the earlier stored frame lo: its
        # forward flow (lo + 1, c), or its backward flow -(lo + 1, c) when the clip runs
        # backwards; a left-right flip negates x
        lo = np.minimum(frames[b, :-1], frames[b, 1:])
        sign_t = 1.0 if step[b, 0] > 0 else -1.0
        sign_x = -1.0 if flipped[b] else 1.0
        np.testing.assert_allclose(fw[b, :, 0], sign_t * sign_x * (lo + 1.0))
        np.testing.assert_allclose(fw[b, :, 1], sign_t * c[b])
    with pytest.raises(ValueError, match="depth"):
        sample_batch(pool._replace(depth=None), jax.random.key(0), 2, 3, with_depth=True)


@pytest.mark.slow
def test_depth_supervised_pretraining_learns_the_depth_shape():
    clips = [exact_scene(height=32, width=48, frames=4, seed=s, preset="orbit") for s in (1, 2)]
    pool = ClipPool(
        np.stack([c["images"] for c in clips]),
        np.stack([c["flow_fw"] for c in clips]).astype(np.float16),
        np.stack([c["flow_bw"] for c in clips]).astype(np.float16),
        np.asarray([c["intrinsics"][0, 0, 0] / np.sqrt(32 * 48) for c in clips], np.float32),
        np.stack([np.where(c["valid"], c["depth"], 0.0) for c in clips]).astype(np.float16),
    )
    fm = FlowMapConfig(cnn_widths=(8, 16, 16), feature_dim=8, corr_hidden=(8,), procrustes_points=200, softmin_points=512, focal_regression_after=None)
    params0 = init_params(fm, 4, (32, 48), 0)

    def depth_error(params):
        graphdef, _ = nnx.split(FlowMapModel(fm, 4, (32, 48), rngs=nnx.Rngs(0)))
        model = nnx.merge(graphdef, params)
        errs = [scale_invariant_depth_loss(model.depth(jnp.asarray(c["images"], jnp.float32) / 255.0)[0], jnp.asarray(pool.depth[i], jnp.float32)) for i, c in enumerate(clips)]
        return float(np.mean(errs))

    def run(weight):
        cfg = PretrainConfig(steps=60, batch=2, frames=4, lr=3e-3, lr_final=3e-3, warmup=1, chunk=30, depth_weight=weight, flowmap=fm)
        params, hist = pretrain(pool, cfg, jax.tree.map(jnp.asarray, params0))
        assert len(hist["loss"]) == 60 and np.all(np.isfinite(hist["loss"]))
        return depth_error(params), np.asarray(hist["flow_loss"])

    e0 = depth_error(params0)
    e_self, flow_self = run(0.0)
    e_sup, _ = run(300.0)
    # FlowMap's self-supervised recipe lowers its flow loss; the depth term teaches the shape
    assert flow_self[-10:].mean() < 0.8 * flow_self[:10].mean()
    assert e_sup < 0.5 * e0 and e_sup < 0.5 * e_self, (e0, e_self, e_sup)
    with pytest.raises(ValueError, match="true depth"):
        pretrain(pool._replace(depth=None), PretrainConfig(steps=1, batch=1, frames=4, depth_weight=1.0, flowmap=fm))
