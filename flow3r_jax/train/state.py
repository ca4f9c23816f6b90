"""The train state as a pure pytree, created already sharded.

    state = {
        "step": int32 (),
        "params": {name: array},   # trainable parameters (fp32 master weights)
        "frozen": {name: array},   # frozen parameters: no gradient, no optimiser state
        "opt": optax state of "params",
        "counters": {name: int32 for name in step.COUNTERS},  # skipped steps, non-finite terms, samples, frames
    }

Parameter names are the model's NNX paths joined by "/" (`encoder/blocks/attn/qkv/kernel`), the
same keys as `models.pretrained.save_pretrained`. `ParamLayout` maps between these flat dicts and
the NNX model, and from the parameters' logical axis names to mesh shardings (rules from the
config: a logical name maps to the first mesh axis the rules give it; an axis already used in the
same array, or whose size does not divide the dimension, is left replicated).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flow3r_jax.models.config import ModelConfig
from flow3r_jax.models.flow3r import Flow3r

__all__ = ["ParamLayout", "TRAINABLE_CHOICES", "trainable_mask", "replicated"]

log = logging.getLogger(__name__)

TRAINABLE_CHOICES = ("flow_head", "all", "all_but_encoder")


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


@dataclasses.dataclass
class ParamLayout:
    """Names, shapes, logical axes of a model's parameters, and the model's graph definition."""

    cfg: ModelConfig
    graphdef: nnx.GraphDef
    paths: list[tuple]  # NNX paths, in `names` order
    names: list[str]
    shapes: dict[str, tuple[int, ...]]
    logical: dict[str, tuple]
    build: Callable = Flow3r  # (cfg, rngs=...) -> the NNX model (a training method's model)

    @classmethod
    def of(cls, cfg: ModelConfig, build: Callable = Flow3r) -> "ParamLayout":
        model = nnx.eval_shape(lambda: build(cfg, rngs=nnx.Rngs(0)))
        graphdef, state = nnx.split(model)
        paths, names, shapes, logical = [], [], {}, {}
        for path, var in nnx.to_flat_state(state):
            if not isinstance(var, nnx.Param):
                raise TypeError(f"unexpected non-parameter model state at {path}")
            name = "/".join(map(str, path))
            paths.append(tuple(path))
            names.append(name)
            shapes[name] = tuple(var.get_value().shape)
            meta = var.get_metadata()
            axes = meta.get("out_sharding") or meta.get("sharding_names") or ()
            logical[name] = tuple(axes) if axes else (None,) * len(shapes[name])
        return cls(cfg, graphdef, paths, names, shapes, logical, build)

    # ---- model <-> flat dicts ----------------------------------------------------------------
    def model(self, params: dict[str, jax.Array]) -> Flow3r:
        """The NNX model carrying `params` (every name present; works under jit)."""
        missing = [n for n in self.names if n not in params]
        if missing:
            raise KeyError(f"parameters missing: {missing[:5]} ({len(missing)} in all)")
        state = nnx.State.from_flat_path([(p, params[n]) for p, n in zip(self.paths, self.names)])
        return nnx.merge(self.graphdef, state)

    def params_of(self, model: Flow3r) -> dict[str, jax.Array]:
        flat = {"/".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
        return {n: flat[n] for n in self.names}

    def init_fn(self, seed: int):
        """A function () -> {name: array} drawing the model's initial parameters."""
        cfg, build = self.cfg, self.build

        def init():
            return self.params_of(build(cfg, rngs=nnx.Rngs(seed)))

        return init

    # ---- sharding ----------------------------------------------------------------------------
    def spec(self, name: str, mesh: Mesh, rules) -> PartitionSpec:
        rules = [(k, v) for k, v in rules]
        out, used = [], set()
        for dim, logical in zip(self.shapes[name], self.logical[name]):
            axis = next((m for k, m in rules if k == logical), None) if logical else None
            if axis is not None and (axis in used or mesh.shape[axis] == 1 or dim % mesh.shape[axis]):
                axis = None
            if axis is not None:
                used.add(axis)
            out.append(axis)
        return PartitionSpec(*out)

    def shardings(self, mesh: Mesh, rules, names=None) -> dict[str, NamedSharding]:
        return {n: NamedSharding(mesh, self.spec(n, mesh, rules)) for n in (self.names if names is None else names)}

    def abstract(self, mesh: Mesh, rules, names=None) -> dict[str, jax.ShapeDtypeStruct]:
        sh = self.shardings(mesh, rules, names)
        return {n: jax.ShapeDtypeStruct(self.shapes[n], jnp.float32, sharding=sh[n]) for n in sh}

    def init_sharded(self, seed: int, mesh: Mesh, rules) -> dict[str, jax.Array]:
        """Initial parameters created directly in their shardings (no host copy of the model)."""
        return jax.jit(self.init_fn(seed), out_shardings=self.shardings(mesh, rules))()

    def put(self, host_params: dict[str, np.ndarray], mesh: Mesh, rules) -> dict[str, jax.Array]:
        """Host arrays (e.g. a converted checkpoint) -> sharded device arrays, shapes checked."""
        bad = [f"{n}: {np.shape(host_params[n])} vs {self.shapes[n]}" for n in self.names if n in host_params and tuple(np.shape(host_params[n])) != self.shapes[n]]
        if bad:
            raise ValueError(f"parameter shapes do not match the model config: {bad[:5]}")
        sh = self.shardings(mesh, rules)
        return {n: jax.make_array_from_callback(self.shapes[n], sh[n], lambda idx, a=host_params[n]: np.asarray(a[idx], np.float32)) for n in self.names}


def trainable_mask(names: list[str], which: str) -> dict[str, bool]:
    """Which parameters train: "flow_head" (stage 1), "all_but_encoder" (pi^3), or "all"."""
    if which not in TRAINABLE_CHOICES:
        raise ValueError(f"train.trainable must be one of {TRAINABLE_CHOICES}, got {which!r}")
    if which == "all":
        return {n: True for n in names}
    if which == "flow_head":
        return {n: n.startswith("flow_head/") for n in names}
    return {n: not n.startswith("encoder/") for n in names}


_NO_DECAY = re.compile(r"(/bias|/scale|/gamma|token[s]?|pos_embed)$|register")


def decays(name: str) -> bool:
    """Weight decay applies to weight matrices / kernels only: not to norms (scale, bias),
    LayerScale gammas, biases, or position / register / class tokens."""
    return not _NO_DECAY.search(name)
