"""The train step: sharded == single device, frozen parameters, skipped non-finite steps, clipping,
micro-batches, optimiser groups and the schedule."""

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flow3r_jax.losses import LossConfig
from flow3r_jax.models import get_model_config
from flow3r_jax.train.optimizer import make_optimizer, one_cycle_schedule
from flow3r_jax.train.state import ParamLayout, decays, trainable_mask
from flow3r_jax.train.step import COUNTERS
from tests.train.conftest import ROOT, env

from configs.flow3r import get_config


def _host_batch(data, batch=4, frames=3, pairs=3, size=56, seed=0):
    from flow3r_jax.data.pipeline import InputConfig, build_dataset
    from flow3r_jax.data.sample import SampleConfig

    cfg = InputConfig(sources=((data["labeled"], 1.0), (data["unlabeled"], 1.0)), batch_size=batch, seed=seed, sample=SampleConfig(frames=frames, pairs=pairs, height=size, width=size), keep_freed_memory=False)
    return next(iter(build_dataset(cfg, 0, 1)))


def _tc(**kw):
    c = get_config("size=tiny").train
    c.unlock()
    c.update(kw)
    return c


def sharded_vs_single(data_dir_json: str, out_path: str) -> None:
    """Runs in a subprocess with 8 fake devices: loss, gradients and one full step on a
    (data=2, fsdp=4) mesh against the same on one device."""
    from flow3r_jax.data.pipeline import to_global_batch
    from flow3r_jax.data.targets import prepare_batch
    from flow3r_jax.train.mesh import make_mesh
    from flow3r_jax.train.step import loss_and_grads

    data = json.loads(data_dir_json)
    host = _host_batch(data, batch=8)
    layout = ParamLayout.of(get_model_config("tiny"))
    rules = tuple(tuple(r) for r in get_config("size=tiny").mesh.rules)
    names = layout.names
    results = {}
    for label, mesh in (("single", make_mesh((1, 1, 1), jax.devices()[:1])), ("sharded", make_mesh((2, 4, 1)))):
        params = layout.init_sharded(0, mesh, rules)
        batch = to_global_batch(host, mesh)
        loss_grads = jax.jit(lambda p, b: loss_and_grads(layout, LossConfig(), p, {}, prepare_batch(b)))
        grads, terms = loss_grads(params, batch)
        sharded_some = any(len(p.sharding.device_set) > 1 and not p.sharding.is_fully_replicated for p in params.values())
        results[label] = dict(
            grads={k: np.asarray(v) for k, v in grads.items()},
            terms={k: float(v) for k, v in terms.items()},
            sharded_some=sharded_some,
        )
    a, b = results["single"], results["sharded"]
    report = {
        "sharded_some": b["sharded_some"],
        "term_diff": max(abs(a["terms"][k] - b["terms"][k]) / max(1.0, abs(a["terms"][k])) for k in a["terms"]),
        # largest gradient difference relative to the largest gradient entry, and in L2
        "grad_diff": max(float(np.max(np.abs(a["grads"][k] - b["grads"][k]))) for k in a["grads"]) / max(float(np.max(np.abs(g))) for g in a["grads"].values()),
        "grad_l2": float(np.sqrt(sum(np.sum((a["grads"][k] - b["grads"][k]) ** 2) for k in a["grads"])) / np.sqrt(sum(np.sum(g**2) for g in a["grads"].values()))),
        "total": a["terms"]["total"],
    }
    with open(out_path, "w") as f:
        json.dump(report, f)


@pytest.mark.slow
def test_sharded_step_equals_single_device(train_data, tmp_path):
    out = tmp_path / "report.json"
    code = f"import tests.train.test_step as t; t.sharded_vs_single({json.dumps(json.dumps(train_data))}, {str(out)!r})"
    # Rarely, a collective of the 8 fake CPU devices never completes (every thread asleep, seen
    # in some suite runs on 2 cores; the same program finishes in ~20-30 s otherwise). Such a run
    # is stopped after 150 s and started again, at most 3 times in all.
    for attempt in range(3):
        try:
            proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env(xla_flags="--xla_force_host_platform_device_count=8"), capture_output=True, text=True, timeout=150)
            break
        except subprocess.TimeoutExpired:
            if attempt == 2:
                raise
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["sharded_some"], "no parameter was actually sharded over fsdp"
    assert math.isfinite(r["total"]) and r["total"] > 0
    assert r["term_diff"] < 1e-5, r
    assert r["grad_diff"] < 1e-5, r
    assert r["grad_l2"] < 1e-5, r


@pytest.fixture(scope="module")
def small_step(train_data):
    """A tiny model's layout, a host batch and a helper to run one step under a trainable mask."""
    from flow3r_jax.train.step import make_step_fn

    layout = ParamLayout.of(get_model_config("tiny"))
    host = _host_batch(train_data, batch=2, frames=2, pairs=2)
    params = jax.jit(layout.init_fn(0))()

    def run(trainable="all", clip_loss=1e9, microbatches=1, batch=None, **tc):
        mask = trainable_mask(layout.names, trainable)
        train = {n: params[n] for n in layout.names if mask[n]}
        frozen = {n: params[n] for n in layout.names if not mask[n]}
        tx, sched = make_optimizer(_tc(steps=10, **tc), list(train))
        state = {"step": jnp.int32(0), "params": train, "frozen": frozen, "opt": tx.init(train), "counters": {k: jnp.int32(0) for k in COUNTERS}}
        b = {k: jnp.asarray(v) for k, v in (batch or host).items()}
        new, metrics = jax.jit(make_step_fn(layout, tx, sched, LossConfig(), clip_loss, microbatches))(state, b)
        return state, new, metrics

    return layout, host, params, run


@pytest.mark.slow
def test_stage1_trains_only_the_flow_head_and_frozen_parameters_stay_bit_identical(small_step):
    layout, host, params, run = small_step
    state, new, metrics = run("flow_head")
    assert set(new["params"]) == {n for n in layout.names if n.startswith("flow_head/")}
    assert not any(n.startswith("flow_head/") for n in new["frozen"])
    for n, v in new["frozen"].items():  # bit-identical
        assert np.array_equal(np.asarray(v), np.asarray(params[n])), n
    # No optimiser state for frozen parameters: every Adam moment leaf belongs to a trainable one.
    moment_keys = {getattr(p[-1], "key", None) for p, _ in jax.tree_util.tree_leaves_with_path(new["opt"]) if len(p) and getattr(p[-1], "key", None)}
    assert moment_keys and moment_keys <= set(new["params"])
    changed = [n for n in new["params"] if not np.array_equal(np.asarray(new["params"][n]), np.asarray(params[n]))]
    assert len(changed) > len(new["params"]) // 2
    assert float(metrics["train/step_skipped"]) == 0.0


@pytest.mark.slow
def test_non_finite_gradients_skip_the_step_and_large_losses_are_clipped(small_step):
    layout, host, params, run = small_step
    # Loss clipping (pi^3 clip_loss): a total above the threshold gives no gradient; with zero
    # gradients AdamW still applies weight decay only, so biases (no decay) stay unchanged.
    state, new, metrics = run("all", clip_loss=1e-6)
    assert float(metrics["train/loss_clipped"]) == 1.0 and float(metrics["train/grad_norm"]) == 0.0
    bias = [n for n in new["params"] if n.endswith("/bias")]
    assert all(np.array_equal(np.asarray(new["params"][n]), np.asarray(params[n])) for n in bias)

    # Exploding gradients (a finite loss whose gradient norm overflows float32): the whole step
    # is skipped, the state is unchanged, the counter goes up.
    from flow3r_jax.train.step import make_step_fn

    tx, sched = make_optimizer(_tc(steps=10), layout.names)
    st = {"step": jnp.int32(0), "params": params, "frozen": {}, "opt": tx.init(params), "counters": {k: jnp.int32(0) for k in COUNTERS}}
    bad = {k: jnp.asarray(v) for k, v in host.items()}
    bad["flow"] = jnp.full_like(bad["flow"], jnp.nan)  # a NaN flow target: that term is zeroed and counted
    new, metrics = jax.jit(make_step_fn(layout, tx, sched, LossConfig(point_weight=1e30), float("inf"), 1))(st, bad)
    assert float(metrics["count/nonfinite/flow"]) == 1.0 and float(metrics["loss/flow"]) == 0.0
    assert math.isfinite(float(metrics["loss/total"])) and not math.isfinite(float(metrics["train/grad_norm"]))
    assert float(metrics["train/step_skipped"]) == 1.0 and int(new["counters"]["skipped_steps"]) == 1
    assert int(new["step"]) == 1
    for n in layout.names:
        assert np.array_equal(np.asarray(new["params"][n]), np.asarray(params[n])), n


@pytest.mark.slow
def test_micro_batches_average_to_the_full_batch_gradient(small_step):
    """Two micro-batches of one sample each: the mean of per-sample gradients, computed here by
    running each sample alone."""
    from flow3r_jax.data.targets import prepare_batch
    from flow3r_jax.train.step import loss_and_grads

    layout, host, params, run = small_step
    b = prepare_batch({k: jnp.asarray(v) for k, v in host.items()})
    f = jax.jit(lambda p, b, m: loss_and_grads(layout, LossConfig(), p, {}, b, microbatches=m), static_argnums=2)
    g2, t2 = f(params, b, 2)
    singles = [f(params, jax.tree.map(lambda x: x[i : i + 1], b), 1) for i in range(2)]
    for n in ("flow_head/mlp/0/kernel", "decoder/pairs/frame/attn/qkv/kernel", "camera_head/fc_t/kernel"):
        ref = 0.5 * (np.asarray(singles[0][0][n]) + np.asarray(singles[1][0][n]))
        np.testing.assert_allclose(np.asarray(g2[n]), ref, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(float(t2["total"]), 0.5 * (float(singles[0][1]["total"]) + float(singles[1][1]["total"])), rtol=1e-5)


def test_one_cycle_schedule_matches_pytorch_onecycle_formula():
    """PyTorch OneCycleLR(anneal_strategy='cos', three_phase=False), written out."""

    def torch_lr(step, total, peak, pct, div, final_div):
        init, minimum = peak / div, peak / div / final_div
        end1 = float(pct * total) - 1
        phases = [(end1, init, peak), (total - 1, peak, minimum)]
        start = 0.0
        for end, a, b in phases:
            if step <= end or end == phases[-1][0]:
                pctg = (step - start) / (end - start)
                return b + (a - b) / 2 * (math.cos(math.pi * pctg) + 1)
            start = end

    for pct in (0.0, 0.3):
        sched = one_cycle_schedule(5e-5, 100, pct, 1000.0, 100.0)
        for s in (0, 1, 10, 29, 30, 31, 50, 99):
            ref = torch_lr(s, 100, 5e-5, pct, 1000.0, 100.0)
            assert abs(float(sched(s)) - ref) <= 1e-5 * 5e-5, (pct, s)  # float32
    assert float(one_cycle_schedule(1.0, 10)(9)) == pytest.approx(1e-5)


def test_optimizer_groups_decay_and_encoder_lr():
    """One AdamW update from zero moments: update = -lr * (sign-like Adam step + wd * p) with the
    encoder at 0.1 x lr and no decay on biases / norms / tokens."""
    names = ["encoder/blocks/mlp/fc1/kernel", "encoder/cls_token", "decoder/pairs/frame/norm1/scale", "flow_head/mlp/0/kernel", "flow_head/mlp/0/bias"]
    assert [decays(n) for n in names] == [True, False, False, True, False]
    tc = _tc(steps=4, lr=0.1, warmup_frac=0.0, weight_decay=0.5, clip_grad=1e9)
    tx, sched = make_optimizer(tc, names)
    params = {n: jnp.full((2, 2), 2.0) for n in names}
    grads = {n: jnp.full((2, 2), 3.0) for n in names}
    upd, _ = tx.update(grads, tx.init(params), params)
    lr = float(sched(0))
    for n in names:
        scale = 0.1 if n.startswith("encoder/") else 1.0
        adam = 3.0 / (3.0 + tc.eps)  # first step: m_hat / (sqrt(v_hat) + eps)
        expect = -lr * scale * (adam + (0.5 * 2.0 if decays(n) else 0.0))
        np.testing.assert_allclose(np.asarray(upd[n]), expect, rtol=1e-5, err_msg=n)
    # global-norm clipping at clip_grad
    tx2, _ = make_optimizer(_tc(steps=4, lr=0.1, weight_decay=0.0, clip_grad=1.0, b1=0.0, b2=0.0, eps=1e-30), ["flow_head/a/kernel"])
    g = {"flow_head/a/kernel": jnp.asarray([3.0, 4.0])}
    clipped = optax.clip_by_global_norm(1.0).update(g, optax.clip_by_global_norm(1.0).init(g))[0]
    np.testing.assert_allclose(np.asarray(clipped["flow_head/a/kernel"]), [0.6, 0.8], rtol=1e-6)
    assert tx2 is not None
