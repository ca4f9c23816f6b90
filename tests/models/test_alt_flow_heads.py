"""The ablation flow heads: the projective head against geometry-kernel flow; the tracking head."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flow3r_jax import geometry as g
from flow3r_jax.models import flow_to_pixels, get_model_config
from flow3r_jax.models.alt_flow_heads import ProjectiveFlowHead, TrackingFlowHead
from tests.models.conftest import jit_apply, random_model


def test_projective_head_reproduces_induced_flow(rng):
    """A hand-made pointmap (depth unprojected with a centred pinhole) and two poses: the head's
    flow equals geometry.induced_flow with the true intrinsics."""
    H, W, f = 28, 42, 33.0
    K = g.intrinsics_from_focal(f, cx=W / 2, cy=H / 2)
    depth = jnp.asarray(rng.uniform(2.0, 4.0, size=(2, H, W)), jnp.float32)
    local = g.unproject_depth(depth, jnp.stack([K, K]))
    poses = jnp.stack([jnp.eye(4), g.make_transform(g.axis_angle_to_matrix(jnp.asarray([0.02, -0.05, 0.01])), jnp.asarray([0.2, -0.1, 0.05]))])
    pairs = jnp.asarray([[[0, 1], [1, 0], [1, 1]]], jnp.int32)
    head = ProjectiveFlowHead(get_model_config("tiny"))
    flow = flow_to_pixels(head(local[None], poses[None], pairs))[0]
    for s, (i, j) in enumerate([(0, 1), (1, 0), (1, 1)]):
        expected, valid = g.induced_flow(depth[i], K, poses[i], K, poses[j])
        assert bool(jnp.all(valid))
        np.testing.assert_allclose(flow[s], expected, atol=2e-3)
    np.testing.assert_allclose(flow[2], 0.0, atol=2e-3)


def test_projective_model_has_no_flow_parameters(tiny_inputs):
    model = random_model("tiny", flow_head="projective")
    assert len(jax.tree.leaves(nnx.state(model.flow_head, nnx.Param))) == 0
    images, pairs = tiny_inputs
    out = jit_apply(model)(images, pairs)
    assert out["flow"].shape == (1, 4, 56, 70, 2) and np.all(np.isfinite(out["flow"]))


def test_tracking_head_starts_from_soft_argmax_matches(tiny_inputs):
    """Frames 0 and 1 carry identical features: every patch matches itself (the residual layer
    starts at zero), so 0 -> 0, 1 -> 1 and 0 -> 1 are all ~identity."""
    cfg = get_model_config("tiny")
    with nnx.use_eager_sharding(False):
        head = TrackingFlowHead(cfg, rngs=nnx.Rngs(0))
    h, w, D, R = 4, 5, cfg.head_dim, cfg.dec_registers
    feats = jnp.broadcast_to(jax.random.normal(jax.random.PRNGKey(0), (1, R + h * w, D)), (2, R + h * w, D))
    levels = [feats] * 4
    pairs = jnp.asarray([[[0, 0], [1, 1], [0, 1]]], jnp.int32)
    flow = flow_to_pixels(head(levels, levels, pairs, R, (h * 14, w * 14)))
    assert flow.shape == (1, 3, h * 14, w * 14, 2)
    # Every pixel's match stays inside its own patch (|flow| < half a patch), typically at ~0.
    mag = np.linalg.norm(np.asarray(flow[0, :2]), axis=-1)
    assert mag.max() < 7.0 and np.median(mag) < 0.5  # soft-argmax keeps ~1% mass elsewhere
    # Frame 0 -> frame 1 (same features) is the same identity matching.
    np.testing.assert_allclose(flow[0, 2], flow[0, 0], atol=1e-4)


def test_tracking_model_trains(tiny_inputs):
    model = random_model("tiny", flow_head="tracking")
    images, pairs = tiny_inputs
    graphdef, state = nnx.split(model, nnx.Param)

    def loss(state):
        return jnp.mean(nnx.merge(graphdef, state)(images, pairs)["flow"] ** 2)

    grads = jax.jit(jax.grad(loss))(state)
    flow_grads = [np.abs(np.asarray(x)).max() for x in jax.tree.leaves(grads["flow_head"])]
    assert all(np.isfinite(flow_grads)) and max(flow_grads) > 0
