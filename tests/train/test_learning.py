"""Learning happens: `tiny` trained through the real loop on synthetic shards lowers the flow error
and the relative rotation error on held-back clips; the trained run loads as a model at once."""

import jax
import numpy as np
import pytest

from configs.flow3r import get_config
from flow3r_jax.train.evaluate import evaluate_batches, heldout_batches
from flow3r_jax.train.loop import train


def _config(data, workdir_sources, stage, steps, **kw):
    c = get_config(f"size=tiny,stage={stage}")
    c.data.sources = workdir_sources
    c.data.global_batch = 4
    c.data.frames = 3
    c.data.pairs = 3
    c.train.steps = steps
    c.log.every = 10
    c.log.progress = False
    c.checkpoint.every = 1000
    c.eval.sources = data["heldout"]
    c.eval.batches = 2
    for k, v in kw.items():
        node, leaf = k.split(".")
        c[node][leaf] = v
    return c


@pytest.mark.slow
def test_stage1_on_unlabeled_then_stage2_lower_flow_and_rotation_error(train_data, tmp_path):
    # Stage 1: flow head only, on unlabeled (teacher-flow) clips alone.
    c1 = _config(train_data, train_data["unlabeled"], stage=1, steps=40)
    held = heldout_batches(c1)
    r1 = train(c1, str(tmp_path / "stage1"))
    assert r1["final_step"] == 40 and not r1["preempted"]
    from flow3r_jax.models.pretrained import load_pretrained

    before = evaluate_batches(_random_model(c1), held)
    after1 = evaluate_batches(load_pretrained(str(tmp_path / "stage1")), held)
    assert after1["flow_epe"] < 0.8 * before["flow_epe"], (before, after1)

    # Stage 2 from the stage-1 checkpoint: everything but the encoder, labeled + unlabeled.
    c2 = _config(train_data, f"{train_data['labeled']}:2,{train_data['unlabeled']}:1", stage=2, steps=80, **{"init.kind": "checkpoint", "init.path": str(tmp_path / "stage1")})
    r2 = train(c2, str(tmp_path / "stage2"))
    assert r2["final_step"] == 80
    model = load_pretrained(str(tmp_path / "stage2" / "checkpoints" / "80"))
    after2 = evaluate_batches(model, held)
    assert after2["flow_epe"] < 0.8 * before["flow_epe"], (before, after2)
    assert after2["rot_err_deg"] < 0.6 * before["rot_err_deg"], (before, after2)
    m = r2["metrics"]
    assert np.isfinite(m["loss/total"]) and m["count/skipped_steps"] == 0 and m["input/skipped_records"] == 0
    assert m["perf/flops_per_step_per_device"] > 0 and m["perf/samples_per_s"] > 0


def _random_model(c):
    from flow3r_jax.models.pretrained import model_from_params
    from flow3r_jax.train.loop import model_config
    from flow3r_jax.train.state import ParamLayout

    layout = ParamLayout.of(model_config(c))
    params = jax.jit(layout.init_fn(c.seed))()
    return model_from_params(layout.cfg, {tuple(k.split("/")): np.asarray(v) for k, v in params.items()})
