"""flow3r_loss end to end: every term against the official statement, closed forms, degenerate
batches, and the zeroing of non-finite terms. All calls share one shape, so each jitted function
compiles once."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flow3r_jax.losses import LossConfig, flow3r_loss
from tests.losses import reference as ref

GEOMETRY = ("point", "normal", "conf", "camera", "camera_trans", "camera_rot")
TERMS = GEOMETRY + ("flow", "total")

loss_fn = jax.jit(flow3r_loss, static_argnums=2)  # for non-default configs
_value_and_grad = jax.jit(jax.value_and_grad(lambda out, batch: flow3r_loss(out, batch), has_aux=True))


def loss_and_grads(out, batch):
    """(total, terms, gradients w.r.t. the outputs) with the default config; the gradients are
    checked to be finite."""
    (total, terms), g = _value_and_grad(out, batch)
    for k, v in g.items():
        assert np.all(np.isfinite(v)), k
    return total, terms, g


@pytest.mark.parametrize("seed", [0, 1])
def test_all_terms_match_official(seed):
    out, batch = ref.random_batch(np.random.default_rng(seed))
    total, terms, _ = loss_and_grads(out, batch)
    want = ref.official_terms(out, batch)
    assert want["normal"] > 0 and want["camera"] > 0
    for k in TERMS:
        np.testing.assert_allclose(terms[k], want[k], rtol=1e-5, err_msg=k)
    np.testing.assert_allclose(total, want["total"], rtol=1e-5)
    np.testing.assert_allclose(terms["scale"], want["scale"][batch["labeled"]].mean(), rtol=1e-5)
    for k in ("point", "normal", "conf", "camera", "flow"):
        assert terms[f"nonfinite/{k}"] == 0.0
    assert all(v.dtype == jnp.float32 and v.shape == () for v in terms.values())


def test_sky_hook_adds_bce_on_invalid_sky_pixels(rng):
    out, batch = ref.random_batch(rng)
    sky = rng.random(batch["valid"].shape) < 0.3
    _, terms = loss_fn(out, batch, LossConfig(), sky)
    np.testing.assert_allclose(terms["conf"], ref.official_terms(out, batch, sky)["conf"], rtol=1e-5)


def test_config_switches_and_weights(rng):
    out, batch = ref.random_batch(rng)
    cfg = LossConfig(normals=False, train_conf=False, flow_weight=1.0, camera_weight=0.5)
    total, terms = loss_fn(out, batch, cfg)
    assert terms["normal"] == 0.0 and terms["conf"] == 0.0
    np.testing.assert_allclose(total, terms["point"] + 0.5 * terms["camera"] + terms["flow"], rtol=1e-6)


def _similar_prediction(rng):
    """All samples labeled; the prediction is the GT up to a per-sample scale and world frame."""
    out, batch = ref.random_batch(rng, labeled=(True, True, True))
    s = rng.uniform(0.3, 3, size=3)
    gt_local = ref.unproject(batch["depth"].astype(np.float64), batch["intrinsics"].astype(np.float64))
    local = np.where(batch["valid"][..., None], gt_local * s[:, None, None, None, None], out["local_points"])
    poses = batch["poses"].astype(np.float64)
    poses[..., :3, 3] *= s[:, None, None]
    poses = np.stack([ref._rigid(rng, 1, 3.0)[0] for _ in range(3)])[:, None] @ poses
    out.update(local_points=np.float32(local), camera_poses=np.float32(poses))
    return out, batch


def test_similarity_of_the_gt_gives_zero_point_and_camera_loss(rng):
    out, batch = _similar_prediction(rng)
    _, terms, _ = loss_and_grads(out, batch)
    assert terms["point"] < 1e-5 and terms["camera"] < 1e-5 and terms["camera_rot"] < 1e-5
    assert terms["point"] >= 0.0


def test_unlabeled_or_invalid_batch_gives_zero_geometry_terms_with_finite_gradients(rng):
    for labeled, valid in [(False, True), (True, False)]:
        out, batch = ref.random_batch(rng)
        batch["labeled"][:] = labeled
        batch["valid"] &= valid
        _, terms, g = loss_and_grads(out, batch)
        for k in GEOMETRY:
            assert terms[k] == 0.0, (labeled, valid, k)
            assert terms.get(f"nonfinite/{k}", 0.0) == 0.0
        assert terms["flow"] > 0.0
        for k in ("local_points", "camera_poses", "conf"):
            np.testing.assert_array_equal(g[k], 0.0)


def test_no_covisible_pixel_gives_zero_flow_term_with_finite_gradients(rng):
    out, batch = ref.random_batch(rng)
    batch["covisible"][:] = False
    _, terms, g = loss_and_grads(out, batch)
    assert terms["flow"] == 0.0 and terms["nonfinite/flow"] == 0.0
    np.testing.assert_array_equal(g["flow"], 0.0)


def test_nan_terms_are_zeroed_counted_and_have_zero_gradients(rng):
    out, batch = ref.random_batch(rng)
    _, clean, _ = loss_and_grads(out, batch)
    b, s, y, x = np.argwhere(batch["covisible"])[0]
    out["flow"][b, s, y, x, 0] = np.nan
    total, terms, g = loss_and_grads(out, batch)
    assert terms["flow"] == 0.0 and terms["nonfinite/flow"] == 1.0
    np.testing.assert_allclose(total, clean["total"] - 0.01 * clean["flow"], rtol=1e-5)
    np.testing.assert_array_equal(g["flow"], 0.0)
    assert np.any(g["local_points"] != 0.0)  # the geometry terms still train

    b, n, y, x = np.argwhere(batch["valid"])[0]  # a NaN point poisons every term that uses points
    out["local_points"][b, n, y, x, 2] = np.nan
    total, terms, g = loss_and_grads(out, batch)
    for k in ("point", "normal", "camera", "flow"):
        assert terms[f"nonfinite/{k}"] == 1.0 and terms[k] == 0.0, k
    assert terms["nonfinite/conf"] == 0.0 and terms["conf"] > 0.0  # its target is a comparison
    np.testing.assert_allclose(total, 0.05 * terms["conf"], rtol=1e-6)
    for k in ("local_points", "camera_poses", "flow"):
        np.testing.assert_array_equal(g[k], 0.0)
    assert np.any(g["conf"] != 0.0)


def test_invalid_pixels_never_matter(rng):
    out, batch = ref.random_batch(rng)
    _, clean, clean_g = loss_and_grads(out, batch)
    out["local_points"][~batch["valid"]] = np.nan
    _, terms, g = loss_and_grads(out, batch)
    for k in TERMS:
        np.testing.assert_allclose(terms[k], clean[k], rtol=1e-6, err_msg=k)
    np.testing.assert_allclose(g["local_points"], clean_g["local_points"], rtol=1e-6, atol=1e-12)


@pytest.mark.slow
def test_runs_under_jit_with_the_batch_sharded():
    """One sample per device of a 3-device CPU mesh: same value as the NumPy statement, finite
    gradients that keep the batch sharding."""
    script = textwrap.dedent(
        """
        import numpy as np, jax
        from jax.sharding import NamedSharding, PartitionSpec as P
        from flow3r_jax.losses import flow3r_loss
        from tests.losses import reference as ref
        out, batch = ref.random_batch(np.random.default_rng(0))
        mesh = jax.make_mesh((3,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
        shard = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
        o, b = jax.tree.map(shard, out), jax.tree.map(shard, batch)
        (total, _), g = jax.jit(jax.value_and_grad(lambda o, b: flow3r_loss(o, b), has_aux=True))(o, b)
        np.testing.assert_allclose(total, ref.official_terms(out, batch)["total"], rtol=1e-5)
        assert all(np.all(np.isfinite(v)) for v in g.values())
        assert g["local_points"].sharding.spec == P("data")
        print("ok")
        """
    )
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=3", PYTHONPATH=str(root), JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
