"""Frame-count buckets through the real trainer: two buckets train in one run with exactly two
compilations of the train step (compiled before the first step, never again), every step's batch
has one bucket's shape, and the sample / frame counters add up what was trained on."""

import json
import os

import jax
import pytest

from configs.flow3r import get_config
from flow3r_jax.train.loop import ConfigError, train
from flow3r_jax.train.plan import batch_shapes

pytestmark = pytest.mark.slow


def _cfg(data, steps, **kw):
    c = get_config("size=tiny,buckets=pi3")  # buckets "2,4", 8 images per device
    c.data.sources = f"{data['labeled']}:1,{data['unlabeled']}:1"
    c.train.steps = steps
    c.log.every = 1
    c.checkpoint.every = 100
    for k, v in kw.items():
        node, leaf = k.split(".")
        c[node][leaf] = v
    return c


def test_two_buckets_train_with_exactly_two_step_compilations(train_data, tmp_path):
    compiles = []

    def listener(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration" and "step_fn" in str(kw.get("fun_name", "")):
            compiles.append(kw["fun_name"])

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        result = train(_cfg(train_data, steps=8), str(tmp_path))
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert len(compiles) == 2, compiles
    assert sorted(result["compiled_shapes"]) == [(2, 4), (4, 2)]  # (frames, global batch): 8 // frames

    records = [json.loads(line) for line in open(os.path.join(tmp_path, "metrics.jsonl"))]
    steps = {r["step"]: r for r in records if "train/batch_frames" in r}
    assert sorted(steps) == list(range(1, 9))
    shapes = [(int(r["train/batch_frames"]), int(r["train/batch_samples"])) for _, r in sorted(steps.items())]
    assert set(shapes) == {(2, 4), (4, 2)}, shapes  # 8 steps of a fair draw: both buckets (p = 1 - 2^-7)
    last = steps[8]
    assert last["count/samples"] == sum(b for _, b in shapes)
    assert last["count/frames"] == sum(f * b for f, b in shapes)
    assert all(abs(r["loss/total"]) < 1e3 for r in steps.values())


def test_bucket_shapes_follow_the_image_budget_and_are_checked():
    c = get_config("size=tiny")
    c.data.buckets, c.data.images_per_device, c.data.pairs = "2,3:2,8", 8, 4
    shapes = batch_shapes(c, batch_shards=2)
    assert [(s.frames, s.pairs, s.global_batch, s.weight) for s in shapes] == [(2, 2, 8, 1.0), (3, 4, 4, 2.0), (8, 4, 2, 1.0)]
    c.data.pairs_per_device = 4  # flow pairs per device over the bucket's clips (at least 1 per clip)
    shapes = batch_shapes(c, batch_shards=2)
    assert [(s.frames, s.pairs, s.global_batch) for s in shapes] == [(2, 1, 8), (3, 2, 4), (8, 4, 2)]
    c.data.pairs_per_device = 0
    c.data.buckets = "2,16"
    with pytest.raises(ConfigError, match="16 frames exceed config.data.images_per_device=8"):
        batch_shapes(c, batch_shards=1)
    c.data.buckets, c.train.microbatches = "2,4", 4
    with pytest.raises(ConfigError, match="microbatches=4 must divide the per-device batch 2"):
        batch_shapes(c, batch_shards=1)
    c.data.buckets, c.train.microbatches = "2,x", 1
    with pytest.raises(ConfigError, match="FRAMES or FRAMES:WEIGHT"):
        batch_shapes(c, batch_shards=1)
    c.data.buckets = "2,4"
    with pytest.raises(ConfigError, match="not divisible by the 3 processes"):
        batch_shapes(c, batch_shards=1, process_count=3)
