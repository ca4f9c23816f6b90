"""Saving and loading the depth-CNN + correspondence-MLP initialisation (FlowMap's pretrained
start), as a small `.npz` file: one float32 array per parameter, named by its path in the
`FlowMapModel` state ("depth_net/stem/kernel", ...), plus `__config__`, a JSON record of the
architecture fields of `FlowMapConfig` and of how the weights were made.

The default initialisation ships with the package: `flow3r_jax/flowmap/assets/
pretrained_init.npz` (made by `python -m flow3r_jax.flowmap.pretrain`, see the README).
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from flax import nnx

from flow3r_jax.flowmap.config import FlowMapConfig

__all__ = ["DEFAULT_INIT", "ARCH_FIELDS", "save_init", "load_init", "read_init_config", "InitError"]

DEFAULT_INIT = os.path.join(os.path.dirname(__file__), "assets", "pretrained_init.npz")
ARCH_FIELDS = ("cnn_widths", "feature_dim", "corr_hidden", "weight_clip")


class InitError(ValueError):
    """An initialisation file that is missing, malformed or does not match the config."""


def save_init(path: str, params: nnx.State, cfg: FlowMapConfig, info: dict | None = None) -> None:
    """Writes a CNN-mode model state and its architecture to `path` (.npz, no pickle)."""
    if cfg.depth != "cnn":
        raise InitError("save_init: only the CNN depth mode has a reusable initialisation")
    flat = {"/".join(map(str, k)): np.asarray(v.get_value(), np.float32) for k, v in nnx.to_flat_state(params)}
    meta = {f: getattr(cfg, f) for f in ARCH_FIELDS}
    meta["info"] = info or {}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, __config__=np.array(json.dumps(meta)), **flat)
    os.replace(tmp, path)


def read_init_config(path: str = DEFAULT_INIT) -> dict:
    """The architecture record of an initialisation file."""
    if not os.path.isfile(path):
        raise InitError(f"{path}: no such initialisation file")
    with np.load(path, allow_pickle=False) as data:
        if "__config__" not in data:
            raise InitError(f"{path}: not a FlowMap initialisation (no __config__ record)")
        return json.loads(str(data["__config__"]))


def load_init(path: str = DEFAULT_INIT, cfg: FlowMapConfig | None = None) -> tuple[nnx.State, FlowMapConfig]:
    """(state, config): the stored parameters as a `FlowMapModel` state, and `cfg` (default
    `FlowMapConfig()`) with the file's architecture fields. Every parameter must be present
    with the right shape; extra arrays are an error too."""
    from flow3r_jax.flowmap.optimize import abstract_model  # (avoids an import cycle)

    meta = read_init_config(path)
    cfg = (cfg or FlowMapConfig()).replace(**{f: tuple(meta[f]) if isinstance(meta[f], list) else meta[f] for f in ARCH_FIELDS if f in meta})
    if cfg.depth != "cnn":
        raise InitError(f"{path}: a pretrained initialisation needs depth='cnn', config has {cfg.depth!r}")
    _, abstract = abstract_model(cfg, 2, (16, 16))  # the CNN's parameters do not depend on F, H, W
    flat = nnx.to_flat_state(abstract)
    with np.load(path, allow_pickle=False) as data:
        stored = {k: data[k] for k in data.files if k != "__config__"}
    wanted = {"/".join(map(str, k)): v for k, v in flat}
    missing = sorted(set(wanted) - set(stored))
    extra = sorted(set(stored) - set(wanted))
    bad = [f"{k}: file {stored[k].shape} vs model {wanted[k].get_value().shape}" for k in wanted if k in stored and stored[k].shape != wanted[k].get_value().shape]
    if missing or extra or bad:
        raise InitError(f"{path}: does not match the model: missing {missing[:5]}, unexpected {extra[:5]}, shapes {bad[:5]}")
    for k, var in flat:
        var.set_value(jax.numpy.asarray(stored["/".join(map(str, k))]))
    return nnx.from_flat_state(flat), cfg
