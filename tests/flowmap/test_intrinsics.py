"""FlowMap's soft-min focal on exact data, and its candidate errors against a direct computation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flow3r_jax.flowmap.correspondence import flat_pixel_xy
from flow3r_jax.flowmap.intrinsics import candidate_errors, focal_candidates, intrinsics_from_normalized_focal, softmin_focal
from flow3r_jax.flowmap.poses import pair_correspondences
from flow3r_jax.geometry import project_points, transform_points, unproject_depth, weighted_procrustes

from tests.flowmap.conftest import exact_scene

H, W = 96, 128
CANDIDATES = focal_candidates(0.5, 2.0, 60)


def _clip(focal_norm, seed=1):
    # SceneConfig.focal is f_px / W; FlowMap's unit is f_px / sqrt(H W).
    return exact_scene(height=H, width=W, frames=2, seed=seed, focal=focal_norm * math.sqrt(H * W) / W, preset="orbit", flow_px=(4.0, 8.0))


@pytest.mark.parametrize("k", [10, 29])
def test_softmin_picks_the_true_focal_on_exact_data(k):
    f_true = float(CANDIDATES[k])
    clip = _clip(f_true)
    idx = jax.random.permutation(jax.random.key(0), H * W)[:4096]
    w = jnp.asarray(clip["cov_bw"][0].reshape(-1)[np.asarray(idx)].astype(np.float32))
    focal, probs = jax.jit(softmin_focal)(jnp.asarray(clip["depth"]), jnp.asarray(clip["flow_bw"][0]), w, idx, jnp.asarray(CANDIDATES))
    assert int(jnp.argmax(probs)) == k
    assert abs(float(focal) - f_true) < 2e-3 * f_true


def test_softmin_between_candidates_lands_between_them():
    f_true = 0.5 * float(CANDIDATES[20] + CANDIDATES[21])
    clip = _clip(f_true, seed=2)
    idx = jnp.arange(H * W)
    w = jnp.asarray(clip["cov_bw"][0].reshape(-1).astype(np.float32))
    focal, _ = jax.jit(softmin_focal)(jnp.asarray(clip["depth"]), jnp.asarray(clip["flow_bw"][0]), w, idx, jnp.asarray(CANDIDATES))
    assert CANDIDATES[20] - 1e-4 <= float(focal) <= CANDIDATES[21] + 1e-4


def test_candidate_errors_equal_direct_unprojection():
    """The rescaled-map shortcut equals unprojecting with each candidate K and running the
    Procrustes / reprojection pipeline (FlowMap's formulation)."""
    clip = _clip(1.1, seed=4)
    depth, flow = jnp.asarray(clip["depth"]), jnp.asarray(clip["flow_bw"][:1])
    idx = jax.random.permutation(jax.random.key(1), H * W)[:2000]
    w = jax.random.uniform(jax.random.key(2), (2000,), minval=0.1)
    cands = jnp.asarray(CANDIDATES[::7])
    fast = jax.jit(candidate_errors)(depth, flow[0], w, idx, cands)
    direct = []
    xy = flat_pixel_xy(H, W, idx)
    gt = flow[0].reshape(-1, 2)[idx]

    @jax.jit
    def error(f):
        K = intrinsics_from_normalized_focal(f, H, W)
        later, earlier = pair_correspondences(unproject_depth(depth, K), flow, idx)
        T = weighted_procrustes(later[0], earlier[0], w)
        proj, _ = project_points(transform_points(T, later[0]), K)
        return jnp.sum(jnp.abs((proj - xy - gt) / jnp.asarray([W, H])) * w[:, None])

    direct = [error(f) for f in cands]
    np.testing.assert_allclose(np.asarray(fast), np.asarray(direct), rtol=2e-3, atol=1e-3)


def test_softmin_focal_is_differentiable_in_depth():
    clip = _clip(1.3, seed=5)
    idx = jnp.arange(0, H * W, 3)
    w = jnp.ones(idx.shape)
    g = jax.jit(jax.grad(lambda d: softmin_focal(d, jnp.asarray(clip["flow_bw"][0]), w, idx, jnp.asarray(CANDIDATES))[0]))(jnp.asarray(clip["depth"]))
    assert np.all(np.isfinite(np.asarray(g)))
