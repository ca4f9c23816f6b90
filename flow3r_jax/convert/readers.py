"""Lazy, read-only views of checkpoint files as {key: numpy array} mappings.

- `.safetensors`: parsed here with NumPy (an 8-byte little-endian header size, a JSON header of
  dtype / shape / byte offsets, then the raw buffer), memory-mapped, so a 4 GB checkpoint costs
  no copy until a tensor is converted, and needs neither torch nor the safetensors package.
- `.bin` / `.pt` / `.pth` (torch.save'd state dicts): `torch.load(weights_only=True, mmap=True)`;
  needs the `[convert]` extra.

Common wrappers are unwrapped: a {"model": state_dict} / {"state_dict": ...} container and a
"module." prefix on every key (DDP).
"""

from __future__ import annotations

import json
import os
import struct
from typing import Iterator, Mapping

import numpy as np

__all__ = ["open_checkpoint", "SafetensorsFile", "RenamedKeys", "CheckpointFormatError", "key_shape"]


class CheckpointFormatError(ValueError):
    """A checkpoint file is missing, of an unknown kind, or corrupt."""


_ST_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def _bfloat16():
    import ml_dtypes  # a JAX dependency

    return ml_dtypes.bfloat16


class SafetensorsFile(Mapping[str, np.ndarray]):
    """Memory-mapped safetensors file; values are read-only NumPy views."""

    def __init__(self, path: str):
        self.path = path
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                if n <= 0 or 8 + n > size:
                    raise CheckpointFormatError(f"{path}: corrupt safetensors header (header size {n}, file size {size})")
                header = json.loads(f.read(n))
        except (struct.error, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointFormatError(f"{path}: not a safetensors file ({err})") from err
        header.pop("__metadata__", None)
        self._entries = header
        self._offset = 8 + n
        self._size = size
        self._mmap = None
        for key, entry in header.items():
            begin, end = entry["data_offsets"]
            if self._offset + end > size:
                raise CheckpointFormatError(f"{path}: tensor {key!r} extends past the end of the file (truncated download?)")

    def _buffer(self):
        if self._mmap is None:
            self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r")
        return self._mmap

    def __getitem__(self, key: str) -> np.ndarray:
        entry = self._entries[key]
        dtype = _bfloat16() if entry["dtype"] == "BF16" else _ST_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise CheckpointFormatError(f"{self.path}: tensor {key!r} has unsupported dtype {entry['dtype']}")
        begin, end = entry["data_offsets"]
        raw = self._buffer()[self._offset + begin : self._offset + end]
        return raw.view(dtype).reshape(entry["shape"])

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._entries[key]["shape"])

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class _TorchStateDict(Mapping[str, np.ndarray]):
    def __init__(self, tensors: Mapping):
        self._t = tensors

    def __getitem__(self, key):
        t = self._t[key]
        return t.detach().float().numpy() if t.is_floating_point() else t.detach().numpy()

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._t[key].shape)

    def __iter__(self):
        return iter(self._t)

    def __len__(self):
        return len(self._t)


class RenamedKeys(Mapping[str, np.ndarray]):
    """A lazy view of `mapping` with keys renamed by `prefix + key[len(strip):]`."""

    def __init__(self, mapping: Mapping[str, np.ndarray], *, strip: str = "", prefix: str = ""):
        self._m = mapping
        self._map = {prefix + k[len(strip) :]: k for k in mapping if k.startswith(strip)}

    def __getitem__(self, key):
        return self._m[self._map[key]]

    def shape(self, key: str) -> tuple[int, ...]:
        return key_shape(self._m, self._map[key])

    def __iter__(self):
        return iter(self._map)

    def __len__(self):
        return len(self._map)


def key_shape(mapping: Mapping, key: str) -> tuple[int, ...]:
    """Shape of mapping[key] without converting it when the mapping can tell (lazy readers)."""
    shape = getattr(mapping, "shape", None)
    if callable(shape):
        return tuple(shape(key))
    return tuple(np.shape(mapping[key]))


def _unwrap(mapping: Mapping) -> Mapping:
    keys = list(mapping.keys())
    if keys and all(k.startswith("module.") for k in keys):
        return RenamedKeys(mapping, strip="module.")
    return mapping


def open_checkpoint(path: str) -> Mapping[str, np.ndarray]:
    """A lazy {official key: array} view of a .safetensors or torch .bin/.pt/.pth file."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise CheckpointFormatError(f"{path}: is a directory; expected a .safetensors or .bin file")
    lower = path.lower()
    if lower.endswith(".safetensors"):
        return _unwrap(SafetensorsFile(path))
    if lower.endswith((".bin", ".pt", ".pth")):
        try:
            import torch
        except ImportError as err:
            raise ImportError(
                f"{path}: reading PyTorch .bin checkpoints needs torch; install the [convert] extra "
                "(pip install -e '.[convert]', torch==2.13.0 CPU) or convert it to .safetensors"
            ) from err
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # torch raises many kinds for corrupt files
            raise CheckpointFormatError(f"{path}: could not be read by torch.load ({type(err).__name__}: {err})") from err
        for wrapper in ("model", "state_dict", "module"):
            if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
                obj = obj[wrapper]
        if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
            raise CheckpointFormatError(f"{path}: does not contain a state dict of tensors")
        return _unwrap(_TorchStateDict(obj))
    raise CheckpointFormatError(f"{path}: unknown checkpoint format (expected .safetensors, .bin, .pt or .pth)")
