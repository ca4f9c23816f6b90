"""What a training config compiles to, without data: the batch shapes (frame-count buckets), the
parameter layout and its shardings, the optimiser, the abstract train state, and the compiled
train step of each shape. Used by the training loop and, with fake devices, by the ahead-of-time
memory plans (`benchmarks/aot_memory.py`): both compile exactly the same program.

Frame-count buckets (`config.data.buckets`): pi^3 and VGGT train on 2-24 frames per sample with
a per-GPU image budget (pi^3's `max_img_per_gpu`: 64 images at 224x224, 24 at 100k-255k pixels).
Under jit each frame count is a static shape, so the frame counts are a few buckets,

    per-device batch = config.data.images_per_device // frames,
    global batch     = per-device batch x (data x fsdp devices),
    flow pairs       = min(config.data.pairs, frames x (frames - 1),
                           max(1, config.data.pairs_per_device // per-device batch)),

each compiled once before the first step and reused (an AOT-compiled step never recompiles; a
batch of another shape is an error). Without buckets there is one shape: `data.frames` frames,
`data.global_batch` samples. The learning-rate schedule counts optimiser steps (one batch, of
whatever bucket, per step, as in pi^3); the cumulative samples and frames are state counters.

pi^3's image budget does not count flow pairs, which the factored flow head decodes at full
resolution: without the `pairs_per_device` cap, six 4-frame clips with 8 pairs each plan to ~2x
the memory of one 24-frame clip with 8 (`benchmarks/aot_memory.py --buckets`).
"""

from __future__ import annotations

import dataclasses
import logging
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from flow3r_jax.data.pipeline import Bucket
from flow3r_jax.data.sample import SampleConfig
from flow3r_jax.models.config import get_model_config
from flow3r_jax.train.mesh import BATCH_AXES
from flow3r_jax.train.optimizer import make_optimizer
from flow3r_jax.train.state import ParamLayout, replicated, trainable_mask
from flow3r_jax.train.step import build_train_step, make_step_fn

__all__ = ["ConfigError", "BatchShape", "TrainPlan", "batch_shapes", "parse_buckets", "model_config", "sample_config"]

log = logging.getLogger("flow3r_jax.train")


class ConfigError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class BatchShape:
    """A static global batch shape of the train step."""

    frames: int
    pairs: int
    global_batch: int
    weight: float = 1.0

    @property
    def images(self) -> int:
        return self.frames * self.global_batch

    def input_bucket(self, process_count: int) -> Bucket:
        return Bucket(self.frames, self.pairs, self.global_batch // process_count, self.weight)


def model_config(c: ml_collections.ConfigDict):
    return get_model_config(c.model.size, flow_head=c.model.flow_head, trunk_dtype=c.model.trunk_dtype, remat=c.model.remat, attention_chunk=int(c.model.get("attention_chunk", 0)))


def sample_config(c: ml_collections.ConfigDict) -> SampleConfig:
    return SampleConfig(frames=c.data.frames, pairs=c.data.pairs, height=c.data.height, width=c.data.width, frame_mode=c.data.frame_mode, max_zoom=c.data.max_zoom, colour=c.data.colour)


def parse_buckets(text: str) -> tuple[tuple[int, float], ...]:
    """'2,4:2,8' -> ((2, 1.0), (4, 2.0), (8, 1.0)): frame counts with optional draw weights."""
    out = []
    for item in filter(None, (s.strip() for s in str(text).split(","))):
        frames, _, weight = item.partition(":")
        try:
            f, w = int(frames), float(weight or 1.0)
        except ValueError:
            raise ConfigError(f"config.data.buckets: {item!r} is not FRAMES or FRAMES:WEIGHT (e.g. '2,4,8:2,24')") from None
        if f < 1 or not w > 0:
            raise ConfigError(f"config.data.buckets: {item!r} needs frames >= 1 and a positive weight")
        out.append((f, w))
    if len({f for f, _ in out}) != len(out):
        raise ConfigError(f"config.data.buckets: frame counts repeat in {text!r}")
    return tuple(sorted(out))


def batch_shapes(c: ml_collections.ConfigDict, batch_shards: int, process_count: int = 1) -> list[BatchShape]:
    """The step's batch shapes for `batch_shards` = data x fsdp devices; checks divisibility by the
    batch axes, the processes and the micro-batches (ConfigError naming the field)."""
    m = int(c.train.microbatches)
    buckets = parse_buckets(c.data.buckets)
    if buckets:
        budget = int(c.data.images_per_device)
        if budget < 1:
            raise ConfigError("config.data.buckets needs config.data.images_per_device >= 1 (pi^3's max_img_per_gpu: images per device and step)")
        shapes = []
        for frames, weight in buckets:
            per_device = budget // frames
            if per_device < 1:
                raise ConfigError(f"config.data.buckets: {frames} frames exceed config.data.images_per_device={budget}")
            pairs = min(int(c.data.pairs), frames * (frames - 1))
            pair_budget = int(c.data.get("pairs_per_device", 0))
            if pair_budget > 0:  # flow pairs are decoded at full resolution: cap them per device too
                pairs = min(pairs, max(1, pair_budget // per_device))
            shapes.append(BatchShape(frames, pairs, per_device * batch_shards, weight))
    else:
        shapes = [BatchShape(int(c.data.frames), int(c.data.pairs), int(c.data.global_batch))]
    for s in shapes:
        gb, where = s.global_batch, f"the {s.frames}-frame bucket's global batch" if buckets else "config.data.global_batch"
        if gb < 1 or gb % batch_shards:
            raise ConfigError(f"{where}={gb} is not divisible by the batch axes data x fsdp = {batch_shards}")
        if gb % process_count:
            raise ConfigError(f"{where}={gb} is not divisible by the {process_count} processes")
        if m < 1 or (gb // batch_shards) % m:
            raise ConfigError(f"config.train.microbatches={m} must divide the per-device batch {gb // batch_shards} ({where})")
    return shapes


@dataclasses.dataclass
class CompiledStep:
    shape: BatchShape
    compiled: object  # jax.stages.Compiled
    seconds: float
    flops: float  # XLA's cost analysis, per device program
    memory: object  # compiled.memory_analysis() (None where the backend gives none)


class TrainPlan:
    """Everything about a training config that does not need data (see the module docstring)."""

    def __init__(self, c: ml_collections.ConfigDict, mesh):
        from flow3r_jax.train.method import get_method

        self.config, self.mesh = c, mesh
        self.method = get_method(c)  # the model family: model, batches, loss (train/method.py)
        self.rules = tuple(tuple(r) for r in c.mesh.rules)
        self.shapes = self.method.batch_shapes(mesh.shape["data"] * mesh.shape["fsdp"], jax.process_count())
        self.model_config = self.method.model_config()
        self.sample = sample_config(c) if self.method.name == "flow3r" else None
        layout = self.layout = ParamLayout.of(self.model_config, build=self.method.build)
        mask = trainable_mask(layout.names, c.train.trainable)
        self.train_names = [n for n in layout.names if mask[n]]
        self.frozen_names = [n for n in layout.names if not mask[n]]
        if not self.train_names:
            raise ConfigError(f"config.train.trainable={c.train.trainable!r} leaves nothing to train for {self.method.describe()}")
        self.tx, self.schedule = make_optimizer(c.train, self.train_names)
        self.param_shardings = param_sh = layout.shardings(mesh, self.rules)
        abstract_params = layout.abstract(mesh, self.rules, self.train_names)
        abstract_opt = jax.eval_shape(self.tx.init, abstract_params)
        self.opt_shardings = opt_sh = _opt_shardings(abstract_opt, param_sh, layout.shapes, mesh)
        repl = replicated(mesh)
        self.loss_config = self.method.loss_config()
        self.step_method = self.method.step_method(self.loss_config)
        counters = self.counters = self.step_method.counters
        self.state_shardings = {
            "step": repl,
            "params": {n: param_sh[n] for n in self.train_names},
            "frozen": {n: param_sh[n] for n in self.frozen_names},
            "opt": opt_sh,
            "counters": {k: repl for k in counters},
        }
        self.abstract_state = {
            "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=repl),
            "params": abstract_params,
            "frozen": layout.abstract(mesh, self.rules, self.frozen_names),
            "opt": jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_opt, opt_sh),
            "counters": {k: jax.ShapeDtypeStruct((), jnp.int32, sharding=repl) for k in counters},
        }
        self._step_fn = make_step_fn(layout, self.tx, self.schedule, self.loss_config, float(c.train.clip_loss), int(c.train.microbatches), mesh, self.step_method)

    @property
    def param_count(self) -> tuple[int, int]:
        """(all parameters, trainable parameters)."""
        n = lambda names: sum(int(np.prod(self.layout.shapes[k])) for k in names)  # noqa: E731
        return n(self.layout.names), n(self.train_names)

    def initial_state(self, params: dict) -> dict:
        """A fresh train state (step 0) around sharded initial parameters."""
        repl = replicated(self.mesh)
        trainable = {n: params[n] for n in self.train_names}
        return {
            "step": jax.device_put(jnp.int32(0), repl),
            "params": trainable,
            "frozen": {n: params[n] for n in self.frozen_names},
            "opt": jax.jit(self.tx.init, out_shardings=self.opt_shardings)(trainable),
            "counters": {k: jax.device_put(jnp.int32(0), repl) for k in self.counters},
        }

    def abstract_batch(self, shape: BatchShape) -> dict[str, jax.ShapeDtypeStruct]:
        spec = self.method.batch_spec(shape)
        return {k: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=NamedSharding(self.mesh, PartitionSpec(BATCH_AXES, *([None] * (len(s.shape) - 1))))) for k, s in spec.items()}

    def lower(self, shape: BatchShape):
        batch = self.abstract_batch(shape)
        jitted = build_train_step(self._step_fn, self.state_shardings, {k: v.sharding for k, v in batch.items()}, self.mesh)
        with jax.sharding.set_mesh(self.mesh):  # activations keep the batch split (layers.shard_batch)
            return jitted.lower(self.abstract_state, batch)

    def compile(self, shape: BatchShape) -> CompiledStep:
        t0 = time.perf_counter()
        compiled = self.lower(shape).compile()
        seconds = time.perf_counter() - t0
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        try:
            memory = compiled.memory_analysis()
        except Exception:  # noqa: BLE001 - some backends give none
            memory = None
        return CompiledStep(shape, compiled, seconds, float((cost or {}).get("flops", float("nan"))), memory)


def _opt_shardings(abstract_opt, param_sh: dict, shapes: dict, mesh):
    """Each optimiser leaf that belongs to a parameter (Adam moments) gets its sharding."""
    repl = replicated(mesh)

    def pick(path, leaf):
        for k in reversed(path):
            name = getattr(k, "key", None)
            if isinstance(name, str) and name in param_sh and tuple(leaf.shape) == tuple(shapes[name]):
                return param_sh[name]
        return repl

    return jax.tree_util.tree_map_with_path(pick, abstract_opt)
