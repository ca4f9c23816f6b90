"""Lazy, read-only views of checkpoint files as {key: numpy array} mappings.

- `.safetensors`: parsed here with NumPy (an 8-byte little-endian header size, a JSON header of
  dtype / shape / byte offsets, then the raw buffer), memory-mapped, so a 4 GB checkpoint costs
  no copy until a tensor is converted, and needs neither torch nor the safetensors package.
- `.bin` / `.pt` / `.pth` (torch.save'd state dicts): `torch.load(weights_only=True, mmap=True)`;
  needs the `[convert]` extra.

Common wrappers are unwrapped: a {"model": state_dict} / {"state_dict": ...} container and a
"module." prefix on every key (DDP).

Bulk loading goes through `read_into(mapping, key, out)` in `file_order(mapping)`: a safetensors
tensor is read with `preadv` straight into the caller's buffer (no mapping, so nothing of the file
stays in the process), a torch tensor is copied out of its memory-mapped storage, whose pages are
then dropped from the process (`madvise(MADV_DONTNEED)` on the checkpoint's own read-only file
mapping), so loading a 4 GB checkpoint never holds the file in the process's memory beside the
parameters it fills.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import struct
import sys
from typing import Iterator, Mapping

import numpy as np

__all__ = ["open_checkpoint", "SafetensorsFile", "RenamedKeys", "CheckpointFormatError", "key_shape", "read_into", "file_order", "release"]


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

    def offset(self, key: str) -> int:
        """Byte offset of the tensor in the file (`file_order` reads in this order)."""
        return self._offset + self._entries[key]["data_offsets"][0]

    def read_into(self, key: str, out: np.ndarray) -> None:
        """Reads the tensor into `out` (its shape, any float / same-kind dtype) with `preadv`:
        straight into `out` when it is C-contiguous of the stored dtype, else through one
        temporary of the stored dtype."""
        entry = self._entries[key]
        dtype = _bfloat16() if entry["dtype"] == "BF16" else _ST_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise CheckpointFormatError(f"{self.path}: tensor {key!r} has unsupported dtype {entry['dtype']}")
        if tuple(out.shape) != tuple(entry["shape"]):
            raise ValueError(f"{self.path}: tensor {key!r} has shape {tuple(entry['shape'])}, not {out.shape}")
        begin, end = entry["data_offsets"]
        direct = out.dtype == dtype and out.flags.c_contiguous and out.flags.writeable
        buf = out if direct else np.empty(entry["shape"], dtype)
        if buf.nbytes != end - begin:
            raise CheckpointFormatError(f"{self.path}: tensor {key!r} holds {end - begin} bytes, not the {buf.nbytes} of its shape and dtype")
        view, pos = memoryview(buf.reshape(-1).view(np.uint8)), self._offset + begin
        fd = os.open(self.path, os.O_RDONLY)
        try:
            while len(view):
                n = os.preadv(fd, [view], pos)
                if n <= 0:
                    raise CheckpointFormatError(f"{self.path}: unexpected end of file in tensor {key!r}")
                view, pos = view[n:], pos + n
        finally:
            os.close(fd)
        if not direct:
            np.copyto(out, buf, casting="unsafe")

    def release(self, key: str) -> None:
        """Drops the pages `self[key]` mapped into the process (re-read from the file if used again)."""
        if self._mmap is not None:
            begin, end = self._entries[key]["data_offsets"]
            _drop_pages(self._mmap.ctypes.data, self._offset + begin, self._offset + end, self._mmap.ctypes.data, len(self._mmap))

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class _TorchStateDict(Mapping[str, np.ndarray]):
    def __init__(self, tensors: Mapping, path: str | None = None):
        self._t = tensors
        self._path = path
        self._file_maps = None  # [(start, end)] of the checkpoint's read-only mappings

    def __getitem__(self, key):
        t = self._t[key]
        return t.detach().float().numpy() if t.is_floating_point() else t.detach().numpy()

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._t[key].shape)

    def offset(self, key: str) -> int:
        """Address of the tensor's data: the storages of a memory-mapped torch file follow the file's order."""
        return self._t[key].data_ptr()

    def read_into(self, key: str, out: np.ndarray) -> None:
        np.copyto(out, self[key], casting="unsafe")
        self.release(key)

    def release(self, key: str) -> None:
        """Drops the tensor's pages from the process, only where they lie in a private mapping of
        the checkpoint file itself (torch.load(mmap=True) maps it copy-on-write): they are re-read
        from the file if the tensor is used again (so an in-place change to a loaded tensor would
        be undone; this reader's tensors are only read). Anything else (e.g. tensors torch read
        into memory) is left alone."""
        if self._path is None:
            return
        if self._file_maps is None:
            self._file_maps = _file_mappings(self._path)
        t = self._t[key]
        begin = t.data_ptr()
        end = begin + t.numel() * t.element_size()
        for start, stop in self._file_maps:
            if start <= begin and end <= stop:
                _drop_pages(0, begin, end, start, stop - start)
                return

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

    def offset(self, key: str) -> int:
        offset = getattr(self._m, "offset", None)
        return offset(self._map[key]) if callable(offset) else 0

    def read_into(self, key: str, out: np.ndarray) -> None:
        read_into(self._m, self._map[key], out)

    def release(self, key: str) -> None:
        release(self._m, self._map[key])

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


def read_into(mapping: Mapping, key: str, out: np.ndarray) -> None:
    """Copies mapping[key] into `out` (same shape; cast like `np.asarray(value, out.dtype)`),
    reading it from the file without keeping its pages in the process where the reader can."""
    reader = getattr(mapping, "read_into", None)
    if callable(reader):
        reader(key, out)
    else:
        np.copyto(out, np.asarray(mapping[key]), casting="unsafe")


def release(mapping: Mapping, key: str) -> None:
    """Drops the memory-mapped pages mapping[key] brought into the process (no-op for other mappings)."""
    drop = getattr(mapping, "release", None)
    if callable(drop):
        drop(key)


def file_order(mapping: Mapping, keys=None) -> list[str]:
    """`keys` (default: all) in the order their data lie in the file, for sequential reads."""
    keys = list(mapping.keys() if keys is None else keys)
    offset = getattr(mapping, "offset", None)
    if not callable(offset):
        return keys
    return sorted(keys, key=offset)


_PAGE = mmap.PAGESIZE
_MADV_DONTNEED = 4  # Linux


def _drop_pages(base: int, begin: int, end: int, map_start: int, map_len: int) -> None:
    """madvise(MADV_DONTNEED) on the whole pages of [base + begin, base + end) inside the mapping
    [map_start, map_start + map_len) (Linux; a no-op elsewhere). Only for clean, private file
    mappings: there it drops the pages from the process, and they are re-read from the file."""
    if not sys.platform.startswith("linux"):
        return
    lo = max(base + begin, map_start)
    hi = min(base + end, map_start + map_len)
    lo = -(-lo // _PAGE) * _PAGE
    hi = hi // _PAGE * _PAGE
    if hi > lo:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), ctypes.c_int(_MADV_DONTNEED))


def _file_mappings(path: str) -> list[tuple[int, int]]:
    """[(start, end)] of this process's private mappings of `path` (Linux /proc)."""
    real = os.path.realpath(path)
    out = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].strip() == real and parts[1][0] == "r" and parts[1][3] == "p":
                    start, stop = (int(x, 16) for x in parts[0].split("-"))
                    out.append((start, stop))
    except OSError:
        return []
    return out


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
        return _unwrap(_TorchStateDict(obj, path))
    raise CheckpointFormatError(f"{path}: unknown checkpoint format (expected .safetensors, .bin, .pt or .pth)")
