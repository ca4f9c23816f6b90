"""Training methods: what the trainer needs to know about a model family, chosen by
`config.method` ("flow3r" when absent; "tracks4d").

A method supplies the model config and constructor, the static batch shapes and the abstract
global batch (for ahead-of-time compilation), the input pipeline, and the `StepMethod` of the train
step (prepare the batch, call the model, the loss). Sharding, the optimiser, checkpointing,
metrics and the loop are shared (`plan.py`, `step.py`, `loop.py`).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from flow3r_jax.train.step import StepMethod, flow3r_method

__all__ = ["METHODS", "get_method", "Flow3rTraining", "Tracks4DTraining"]


class Flow3rTraining:
    """The factored-flow model on labeled clips and videos with flow (configs/flow3r.py)."""

    name = "flow3r"
    log_term = "flow"

    def __init__(self, c: ml_collections.ConfigDict):
        self.c = c

    def model_config(self):
        from flow3r_jax.train.plan import model_config

        return model_config(self.c)

    @property
    def build(self):
        from flow3r_jax.models.flow3r import Flow3r

        return Flow3r

    def describe(self) -> str:
        return f"{self.c.model.size} ({self.c.model.flow_head} flow head)"

    def batch_shapes(self, batch_shards: int, process_count: int):
        from flow3r_jax.train.plan import batch_shapes

        return batch_shapes(self.c, batch_shards, process_count)

    def batch_spec(self, shape) -> dict[str, jax.ShapeDtypeStruct]:
        from flow3r_jax.data.pipeline import batch_spec
        from flow3r_jax.train.plan import sample_config

        return batch_spec(dataclasses.replace(sample_config(self.c), frames=shape.frames, pairs=shape.pairs), shape.global_batch)

    def loss_config(self):
        from flow3r_jax.losses import LossConfig

        return LossConfig.from_config(self.c.loss)

    def step_method(self, loss_config) -> StepMethod:
        return flow3r_method(loss_config)

    def input_config(self, shapes):
        from flow3r_jax.train.loop import _input_config

        return _input_config(self.c, shapes)

    def dataset(self, input_config):
        from flow3r_jax.data.pipeline import build_dataset

        return build_dataset(input_config)

    @staticmethod
    def host_shape(host_batch) -> tuple[int, int]:
        return tuple(host_batch["images"].shape[:2])

    def model_from_params(self, mcfg, host: dict):
        from flow3r_jax.models.pretrained import model_from_params

        return model_from_params(mcfg, {tuple(k.split("/")): v for k, v in host.items()})


class Tracks4DTraining:
    """TracksTo4D on point-track clips (configs/tracks4d.py): one batch shape, data.frames frames
    x data.tracks tracks x data.global_batch clips, `losses.tracks4d` as the loss."""

    name = "tracks4d"
    log_term = "dynamic"

    def __init__(self, c: ml_collections.ConfigDict):
        self.c = c

    def model_config(self):
        from flow3r_jax.models.tracks4d import tracks4d_config

        m = self.c.model
        return tracks4d_config(m.size, predict_focal=bool(m.predict_focal), remat=m.remat)

    @property
    def build(self):
        from flow3r_jax.models.tracks4d import Tracks4D

        return Tracks4D

    def describe(self) -> str:
        return f"TracksTo4D {self.c.model.size}"

    def batch_shapes(self, batch_shards: int, process_count: int):
        from flow3r_jax.train.plan import BatchShape, ConfigError

        gb, m = int(self.c.data.global_batch), int(self.c.train.microbatches)
        if gb < 1 or gb % batch_shards or gb % process_count:
            raise ConfigError(f"config.data.global_batch={gb} is not divisible by the batch axes data x fsdp = {batch_shards} and the {process_count} processes")
        if m < 1 or (gb // batch_shards) % m:
            raise ConfigError(f"config.train.microbatches={m} must divide the per-device batch {gb // batch_shards}")
        return [BatchShape(int(self.c.data.frames), 0, gb)]

    def batch_spec(self, shape) -> dict[str, jax.ShapeDtypeStruct]:
        from flow3r_jax.data.tracks4d import track_batch_spec

        return track_batch_spec(shape.global_batch, shape.frames, int(self.c.data.tracks))

    def loss_config(self):
        from flow3r_jax.losses.tracks4d import Tracks4DLossConfig

        lc = self.c.loss
        return Tracks4DLossConfig(dynamic_weight=lc.dynamic_weight, sparsity_weight=lc.sparsity_weight, depth_weight=lc.depth_weight, clip=lc.clip, warmup_steps=int(lc.warmup_steps))

    def step_method(self, cfg) -> StepMethod:
        from flow3r_jax.losses.tracks4d import tracks4d_loss

        names = ("static", "dynamic", "depth", "sparsity")

        def loss(model, mb, step):
            total, terms = tracks4d_loss(model(mb["tracks"], mb["visible"]), mb, cfg, step)
            terms.update({f"nonfinite/{k}": (~jnp.isfinite(terms[k])).astype(jnp.float32) for k in names})
            return total, terms

        return StepMethod(lambda b: b, loss, names, lambda b: tuple(b["tracks"].shape[:2]))

    def input_config(self, shapes):
        from flow3r_jax.data.sources import DatasetError
        from flow3r_jax.train.loop import parse_sources
        from flow3r_jax.train.plan import ConfigError

        dirs = [p for p, _ in parse_sources(self.c.data.sources)]
        if not dirs:
            raise ConfigError("config.data.sources is empty: give track clip directories (python -m data_pipelines.synthetic_tracks --out DIR)")
        for d in dirs:
            if not os.path.isdir(d):
                raise DatasetError(f"dataset directory not found: {d} (config.data.sources)")
        return dict(directories=dirs, frames=shapes[0].frames, tracks=int(self.c.data.tracks), batch_size=shapes[0].global_batch // jax.process_count(), seed=int(self.c.data.seed))

    def dataset(self, input_config):
        from flow3r_jax.data.tracks4d import build_track_dataset

        return build_track_dataset(**input_config)

    @staticmethod
    def host_shape(host_batch) -> tuple[int, int]:
        return tuple(host_batch["tracks"].shape[:2])

    def model_from_params(self, mcfg, host: dict):
        from flow3r_jax.train.state import ParamLayout

        layout = ParamLayout.of(mcfg, build=self.build)
        return layout.model({k: np.asarray(v) for k, v in host.items()})


METHODS = {"flow3r": Flow3rTraining, "tracks4d": Tracks4DTraining}


def get_method(c: ml_collections.ConfigDict):
    name = c.get("method", "flow3r")
    if name not in METHODS:
        from flow3r_jax.train.plan import ConfigError

        raise ConfigError(f"config.method={name!r}: choose one of {sorted(METHODS)}")
    return METHODS[name](c)
