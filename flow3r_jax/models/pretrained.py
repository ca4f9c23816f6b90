"""Loading and saving model weights.

`load_pretrained(path, size="large")` accepts
- the official Flow3r state dict (`flow3r.bin`, torch; needs the `[convert]` extra) or the same
  as `.safetensors`;
- a pi^3 `model.safetensors` (no flow head: it keeps its initial values, and the report says so);
- a DINOv2-reg ViT checkpoint (initialises the encoder only);
- a directory written by `save_pretrained` (`config.json` + `params.safetensors`);
- a training run of `launch.train`: its workdir (the latest checkpoint), its `checkpoints/`
  directory or one step directory (`WORKDIR/checkpoints/<step>`); the model configuration comes
  from the run's `model_config.json`.

The model is first built abstractly (`nnx.eval_shape`); only parameters absent from the
checkpoint are initialised (by a jitted init whose other outputs XLA drops), so loading the 1B
parameter model does not first draw 1B random numbers. Weights are read in the file's order
straight into one (64-byte aligned) host array per parameter, a stacked parameter's layers into
its slices, and each parameter goes to the device as soon as it is complete: on CPU
`jax.device_put` adopts that array without a copy, elsewhere the host array is dropped once
copied. Nothing of the file stays mapped in the process, so the peak memory is about the model's
bytes (see `benchmarks/checkpoint_load.py`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import mmap
import os
from concurrent.futures import ThreadPoolExecutor
import struct

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flow3r_jax.convert.official import ConversionReport, convert_state_dict
from flow3r_jax.convert.readers import RenamedKeys, SafetensorsFile, file_order, open_checkpoint
from flow3r_jax.models.config import ModelConfig, get_model_config
from flow3r_jax.models.flow3r import Flow3r

__all__ = ["load_pretrained", "save_pretrained", "detect_checkpoint_kind", "abstract_params", "model_from_params"]

log = logging.getLogger(__name__)

READ_THREADS = 2  # tensors read at once: I/O, page faults and transposes of one overlap the others

_TOP_LEVEL = ("encoder.", "decoder.", "register_token", "point_decoder.", "conf_decoder.", "camera_decoder.", "point_head.", "conf_head.", "camera_head.", "flow_head.")


def detect_checkpoint_kind(keys) -> str:
    """'flow3r' | 'pi3' | 'dinov2' from the key names of an official-format state dict."""
    keys = list(keys)
    if any(k.startswith("flow_head.") for k in keys):
        return "flow3r"
    if any(k.startswith("point_decoder.") for k in keys):
        return "pi3"
    if any(k.startswith("blocks.") for k in keys) and any(k.startswith("patch_embed.") for k in keys):
        return "dinov2"
    raise ValueError(f"unrecognised checkpoint: keys look like {keys[:5]} (expected Flow3r, pi^3 or DINOv2 names)")


def abstract_params(cfg: ModelConfig) -> tuple[nnx.GraphDef, nnx.State, dict[tuple[str, ...], tuple[int, ...]]]:
    """(graphdef, abstract state, {path: shape} of the parameters) without allocating weights."""
    model = nnx.eval_shape(lambda: Flow3r(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    shapes = {tuple(map(str, p)): tuple(v.get_value().shape) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    return graphdef, state, shapes


def model_from_params(cfg: ModelConfig, params: dict[tuple[str, ...], np.ndarray | None], seed: int = 0) -> Flow3r:
    """A model whose parameters are `params` (None entries get their usual initialisation)."""
    return _assemble(cfg, abstract_params(cfg), params, seed)


def _assemble(cfg: ModelConfig, abstract, params: dict[tuple[str, ...], object], seed: int = 0) -> Flow3r:
    """The model from (graphdef, abstract state, shapes) and {path: array or None}. NumPy arrays
    are copied (`jnp.asarray`: the caller keeps its arrays); JAX arrays are used as they are."""
    graphdef, state, _ = abstract
    missing = [p for p, v in params.items() if v is None]
    init_values = {}
    if missing:

        @jax.jit
        def init():
            full = nnx.state(Flow3r(cfg, rngs=nnx.Rngs(seed)), nnx.Param)
            flat = {tuple(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(full)}
            return {"/".join(p): flat[p] for p in missing}

        init_values = {tuple(k.split("/")): v for k, v in init().items()}
    flat = nnx.to_flat_state(state)
    for path, var in flat:
        key = tuple(map(str, path))
        value = params.get(key)
        var.set_value(jnp.asarray(value) if value is not None else init_values[key])
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def _aligned_empty(shape: tuple[int, ...], dtype=np.float32, align: int = 64) -> np.ndarray:
    """An uninitialised C-order array whose data start on an `align`-byte boundary: XLA's CPU
    client adopts such a buffer in `jax.device_put` instead of copying it. Large ones are their
    own anonymous mapping (page-aligned, freed with the last reference; unlike NumPy's, not
    madvised for huge pages, whose synchronous compaction made first touches several times
    slower on the machines measured)."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if nbytes >= 1 << 20:
        return np.frombuffer(mmap.mmap(-1, nbytes), dtype).reshape(shape)
    raw = np.empty(nbytes + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def _to_device(path, host: np.ndarray) -> jax.Array:
    """A parameter array this module allocated and nobody else holds -> the default device
    (aliased on CPU, copied elsewhere; the caller drops `host`)."""
    return jax.device_put(host)


def _read_config(directory: str, name: str = "config.json") -> ModelConfig:
    with open(os.path.join(directory, name)) as f:
        fields = json.load(f)
    fields["dpt_out_channels"] = tuple(fields["dpt_out_channels"])
    return ModelConfig(**fields)


def load_pretrained(path: str, size: str = "large", *, return_report: bool = False, **config_overrides):
    """Builds a Flow3r model from a checkpoint (see the module docstring for accepted kinds)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "params.safetensors")):
        return _load_training_checkpoint(path, return_report, config_overrides)
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"{path}: a flow3r_jax model directory needs config.json and params.safetensors")
        cfg = _read_config(path).replace(**config_overrides)
        weights = SafetensorsFile(os.path.join(path, "params.safetensors"))
        abstract = abstract_params(cfg)
        shapes = abstract[2]
        problems = [k for k in map("/".join, shapes) if k not in weights] + [
            f"{k}: file {weights.shape(k)} vs model {shapes[tuple(k.split('/'))]}" for k in weights if tuple(k.split("/")) in shapes and weights.shape(k) != shapes[tuple(k.split("/"))]
        ]
        if problems:
            raise ValueError(f"{path}: parameters do not match config.json: {problems[:10]}")

        def read(key):
            host = _aligned_empty(shapes[tuple(key.split("/"))])
            weights.read_into(key, host)  # as float32, whatever the file stores
            return host

        params = {}
        with ThreadPoolExecutor(READ_THREADS) as pool:  # reads (and first touches) overlap
            for key, host in zip(order := file_order(weights, map("/".join, shapes)), pool.map(read, order)):
                p = tuple(key.split("/"))
                params[p] = _to_device(p, host)
                del host
        report = ConversionReport(loaded=len(params))
    else:
        cfg = get_model_config(size, **config_overrides)
        sd = open_checkpoint(path)
        kind = detect_checkpoint_kind(sd.keys())
        optional, ignore = (), ()
        if kind == "pi3":
            optional = ("flow_head.",)
        elif kind == "dinov2":
            sd = RenamedKeys(sd, prefix="encoder.")
            optional = tuple(p for p in _TOP_LEVEL if p != "encoder.")
            ignore = ("encoder.mask_token",)
        if cfg.flow_head != "factored":  # the official flow head cannot fill another head type
            optional = tuple(set(optional) | {"flow_head."})
            ignore = tuple(ignore) + tuple(k for k in sd.keys() if k.startswith("flow_head."))
        abstract = abstract_params(cfg)
        params, report = convert_state_dict(
            sd, abstract[2], optional_prefixes=optional, ignore_keys=ignore, source=path, allocate=_aligned_empty, on_filled=_to_device, threads=READ_THREADS
        )
        log.info("loaded %s checkpoint %s: %s", kind, path, report.summary())
        if report.left_at_init:
            log.warning("%s: %d parameter tensors not in the %s checkpoint keep their initialisation (e.g. %s)", path, len(report.left_at_init), kind, report.left_at_init[:2])
    model = _assemble(cfg, abstract, params)
    del params
    return (model, report) if return_report else model


def _load_training_checkpoint(path: str, return_report: bool, config_overrides: dict):
    """A trainer workdir / checkpoints dir / step dir -> model (see the module docstring)."""
    from flow3r_jax.train.checkpoint import CheckpointError, find_step_dir, read_params

    try:
        step_dir = find_step_dir(path)
    except CheckpointError as e:
        raise FileNotFoundError(f"{path}: neither a save_pretrained directory (config.json + params.safetensors) nor a training run with checkpoints ({e})") from None
    workdir = os.path.dirname(os.path.dirname(os.path.abspath(step_dir)))
    if not os.path.exists(os.path.join(workdir, "config.json")) or not os.path.exists(os.path.join(workdir, "model_config.json")):
        raise FileNotFoundError(f"{step_dir}: the training run's model_config.json is missing in {workdir}")
    cfg = _read_config(workdir, "model_config.json").replace(**config_overrides)
    host = read_params(step_dir)
    _, _, shapes = abstract_params(cfg)
    problems = [k for k in map("/".join, shapes) if k not in host] + [f"{k}: checkpoint {host[k].shape} vs model {shapes[tuple(k.split('/'))]}" for k in host if tuple(k.split("/")) in shapes and tuple(host[k].shape) != shapes[tuple(k.split("/"))]]
    if problems:
        raise ValueError(f"{step_dir}: parameters do not match model_config.json: {problems[:10]}")
    model = model_from_params(cfg, {tuple(k.split("/")): v for k, v in host.items()})
    log.info("loaded training checkpoint %s", step_dir)
    return (model, ConversionReport(loaded=len(host))) if return_report else model


def _write_safetensors(path: str, tensors: dict[str, np.ndarray]) -> None:
    header, offset = {}, 0
    for key, arr in tensors.items():
        header[key] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # keep the data 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for arr in tensors.values():
            f.write(np.ascontiguousarray(arr, np.float32).tobytes())
    os.replace(tmp, path)


def save_pretrained(model: Flow3r, directory: str) -> None:
    """Writes `config.json` and `params.safetensors` (keys: our parameter paths joined by '/')."""
    os.makedirs(directory, exist_ok=True)
    tensors = {"/".join(map(str, p)): np.asarray(v.get_value(), np.float32) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    _write_safetensors(os.path.join(directory, "params.safetensors"), tensors)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(model.cfg), f, indent=2)
