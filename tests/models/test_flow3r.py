"""The assembled model: exact parameter counts, shapes, equivariance, dtype policy, errors."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flow3r_jax.models import flow_to_pixels, get_model_config
from flow3r_jax.models.pretrained import abstract_params
from tests.models.conftest import jit_apply, random_model

# The fact list of ../shared/tools/parity/official_keys.json (all 1278 official keys and shapes).
OFFICIAL_KEYS = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "official_keys.json"


def assert_close_scaled(actual, desired, rel):
    """max |actual - desired| <= rel * max(1, max |desired|): for computations that differ only in
    floating-point summation order (batching, frame order, rematerialisation)."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    err = np.abs(actual - desired).max()
    assert err <= rel * max(1.0, np.abs(desired).max()), f"max abs diff {err:.3e}, scale {np.abs(desired).max():.3e}"


def _count(size):
    _, _, shapes = abstract_params(get_model_config(size))
    return sum(int(np.prod(s)) for s in shapes.values())


def test_large_parameter_count_equals_official():
    assert _count("large") == 1_001_053_694


def test_large_parameter_count_per_module_matches_official_manifest():
    official = json.loads(OFFICIAL_KEYS.read_text())["param_count_per_module"]
    _, _, shapes = abstract_params(get_model_config("large"))
    ours = {}
    for path, shape in shapes.items():
        top = "register_token" if path[:2] == ("decoder", "register_token") else path[0]
        ours[top] = ours.get(top, 0) + int(np.prod(shape))
    assert ours == official


def test_smaller_sizes_are_smaller_and_same_structure():
    counts = {s: _count(s) for s in ("tiny", "small", "base", "large")}
    assert counts["tiny"] < counts["small"] < counts["base"] < counts["large"]
    names = {s: {p[0] for p in abstract_params(get_model_config(s))[2]} for s in ("tiny", "large")}
    assert names["tiny"] == names["large"]


def test_output_shapes_and_flow_only_with_pairs(tiny_apply, tiny_inputs):
    images, pairs = tiny_inputs
    out = tiny_apply(images)
    assert set(out) == {"points", "local_points", "conf", "camera_poses"}
    assert out["points"].shape == (1, 3, 56, 70, 3) and out["conf"].shape == (1, 3, 56, 70, 1)
    assert out["camera_poses"].shape == (1, 3, 4, 4)
    out = tiny_apply(images, pairs)
    assert out["flow"].shape == (1, 4, 56, 70, 2)
    assert flow_to_pixels(out["flow"]).shape == (1, 4, 56, 70, 2)
    # Camera poses are rigid; points are the poses applied to the local points; depth positive.
    R = np.asarray(out["camera_poses"][..., :3, :3])
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-5)
    P = np.asarray(out["camera_poses"])
    lp = np.asarray(out["local_points"])
    expected = np.einsum("bnij,bnhwj->bnhwi", P[..., :3, :3], lp) + P[:, :, None, None, :3, 3]
    np.testing.assert_allclose(out["points"], expected, rtol=1e-5, atol=1e-5)  # fp32: points reach ~500 here
    assert np.all(lp[..., 2] > 0)


def test_permutation_equivariance(tiny_apply, tiny_inputs):
    images, pairs = tiny_inputs
    perm = np.array([2, 0, 1])
    inv = np.argsort(perm)
    a = tiny_apply(images, pairs)
    b = tiny_apply(images[:, perm], jnp.asarray(inv)[pairs])  # pair (i, j) -> (inv[i], inv[j])
    for k in ("points", "local_points", "conf", "camera_poses"):
        assert_close_scaled(np.asarray(b[k])[:, inv], a[k], 1e-5)
    assert_close_scaled(b["flow"], a["flow"], 1e-5)
    # ... and not trivially: reordering frames without undoing it changes the outputs.
    assert np.abs(np.asarray(b["camera_poses"]) - np.asarray(a["camera_poses"])).max() > 1e-2


def test_batch_elements_are_independent(tiny_apply, tiny_inputs):
    images, pairs = tiny_inputs
    other = jax.random.uniform(jax.random.PRNGKey(7), images.shape)
    both = tiny_apply(jnp.concatenate([images, other]), jnp.concatenate([pairs, pairs]))
    single = tiny_apply(images, pairs)
    for k in single:
        assert_close_scaled(both[k][:1], single[k], 1e-5)


def test_bf16_trunk_keeps_fp32_heads_and_stays_close(tiny_model, tiny_apply, tiny_inputs):
    images, pairs = tiny_inputs
    bf = random_model("tiny", trunk_dtype="bfloat16")  # same seed: same parameters
    a, b = tiny_apply(images, pairs), jit_apply(bf)(images, pairs)
    for k in a:
        assert b[k].dtype == jnp.float32, k
    # bf16 keeps ~3 significant digits in the trunk; the fp32 heads must see nearly the same
    # features: rotations within a few degrees, log-depth (the head's raw output) close on most
    # pixels. Random weights make the trunk's rounding errors larger than trained ones would.
    from flow3r_jax.geometry import geodesic_angle

    assert float(jnp.max(geodesic_angle(a["camera_poses"][..., :3, :3], b["camera_poses"][..., :3, :3]))) < np.deg2rad(3)
    dlogz = np.abs(np.log(np.asarray(b["local_points"][..., 2])) - np.log(np.asarray(a["local_points"][..., 2])))
    assert np.median(dlogz) < 0.02 and np.quantile(dlogz, 0.95) < 0.1


def _value_and_grad(model, images, pairs):
    graphdef, state = nnx.split(model, nnx.Param)

    def loss(state):
        out = nnx.merge(graphdef, state)(images, pairs)
        return jnp.mean(out["local_points"] ** 2) + jnp.mean(out["flow"] ** 2) + jnp.mean(out["camera_poses"]) + jnp.mean(out["conf"])

    return jax.jit(jax.value_and_grad(loss))(state)


@pytest.fixture(scope="module")
def reference_grads(tiny_model, tiny_inputs):
    return _value_and_grad(tiny_model, *tiny_inputs)


def test_gradients_reach_every_parameter(reference_grads):
    _, grads = reference_grads
    flat = nnx.to_flat_state(grads)
    dead = [".".join(map(str, p)) for p, v in flat if not np.any(np.asarray(v.get_value()))]
    assert dead == []
    assert all(np.all(np.isfinite(np.asarray(v.get_value()))) for _, v in flat)


def test_remat_preserves_values_and_gradients(reference_grads, tiny_inputs):
    """Model-level check of the "full" policy (every policy is checked per stack in test_layers)."""
    la, ga = reference_grads
    lb, gb = _value_and_grad(random_model("tiny", remat="full"), *tiny_inputs)
    np.testing.assert_allclose(lb, la, rtol=1e-5)  # fp32: recomputation may fuse the loss sums in another order (seen: 1.1e-6)
    for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
        assert_close_scaled(y, x, 1e-4)


@pytest.mark.parametrize("shape", [(1, 2, 57, 70, 3), (1, 2, 56, 71, 3), (2, 56, 70, 3), (1, 2, 56, 70, 4), (1, 2, 0, 70, 3)])
def test_bad_image_shapes_raise_clear_errors(tiny_model, shape):
    with pytest.raises(ValueError, match="multiples of the patch size|shape \\(B, N, H, W, 3\\)"):
        tiny_model(jnp.zeros(shape))


def test_bad_pairs_raise(tiny_model, tiny_inputs):
    images, _ = tiny_inputs
    with pytest.raises(ValueError, match="pairs must have shape"):
        tiny_model(images, jnp.zeros((1, 3), jnp.int32))


def test_invalid_configs_are_rejected():
    with pytest.raises(ValueError, match="dec_depth"):
        get_model_config("tiny", dec_depth=3)
    with pytest.raises(ValueError, match="unknown model size"):
        get_model_config("huge")
    with pytest.raises(ValueError, match="flow_head"):
        get_model_config("tiny", flow_head="optical")


def test_predictor_matches_module_call_and_accepts_unbatched(tiny_model, tiny_apply, tiny_inputs):
    from flow3r_jax.models import Predictor

    images, pairs = tiny_inputs
    pred = Predictor(tiny_model)
    ref = tiny_apply(images, pairs)
    single = pred(images[0], pairs[0])
    for k in ref:
        assert_close_scaled(single[k], ref[k][0], 1e-5)
    with pytest.raises(ValueError, match="multiples of the patch size"):
        pred(np.zeros((2, 50, 56, 3), np.float32))
