"""Official PyTorch Flow3r / pi^3 / DINOv2 state dicts <-> our parameters.

The plan is derived from our own (abstract) parameter tree: every parameter slot, including
each layer of a stacked block, names the official key that fills it and the layout change:

- `linear`: torch Linear weight (out, in) -> kernel (in, out);
- `conv`: torch Conv2d weight (out, in, kh, kw) -> kernel (kh, kw, in, out);
- `patch`: the 14x14 patch conv (D, 3, 14, 14) -> matmul kernel (14*14*3, D) in (dy, dx, c) order;
- `copy`: same layout (biases, LayerNorm, LayerScale, tokens, ConvTranspose (in, out, k, k)).

Conversion checks every key and shape first, failing listing *all* unexpected, missing and
mis-shaped keys at once, then reads the input mapping key by key in the file's order
(`readers.read_into`; values may be lazy / memory-mapped) straight into each parameter's one
preallocated array (a stacked parameter's layers are written into their slices, never
`np.stack`ed), transposing per slice. Parts may
be declared optional (a pi^3 checkpoint has no flow head; a DINOv2 one only has the encoder): the
slots they would fill keep their initial values and are listed in the report.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np

from flow3r_jax.convert.readers import file_order, key_shape, read_into

__all__ = [
    "ConversionError",
    "ConversionReport",
    "Slot",
    "conversion_plan",
    "convert_state_dict",
    "export_state_dict",
    "official_shape",
    "BUFFERS",
]

# Buffers of the official model that are not parameters: checked, not loaded.
BUFFERS = {
    "image_mean": np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1),
    "image_std": np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1),
}


class ConversionError(ValueError):
    """A checkpoint does not match the model: lists every offending key."""


@dataclasses.dataclass(frozen=True)
class Slot:
    """One official tensor <-> our parameter `path` (at `index` of a stacked parameter)."""

    key: str
    path: tuple[str, ...]
    index: int | None
    transform: str
    our_shape: tuple[int, ...]  # shape of one slot (without the stacked axis)


@dataclasses.dataclass
class ConversionReport:
    loaded: int = 0
    left_at_init: list[str] = dataclasses.field(default_factory=list)
    ignored: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        lines = [f"loaded {self.loaded} tensors"]
        if self.left_at_init:
            lines.append(f"{len(self.left_at_init)} left at their initial values (absent from the checkpoint), e.g. {self.left_at_init[:3]}")
        if self.ignored:
            lines.append(f"ignored {len(self.ignored)} tensors not used by this model: {self.ignored[:5]}")
        return "; ".join(lines)


# --- naming ---------------------------------------------------------------------------------

_LEAF_RENAMES = {"scale": "weight", "kernel": "weight"}


def _official_leaf_path(parts: list[str]) -> list[str]:
    """Our module path -> official module path (stack indices inserted by the caller)."""
    s = ".".join(parts)
    rules = [
        (r"^decoder\.register_token$", "register_token"),
        (r"^encoder\.patch_embed\.(kernel|bias)$", r"encoder.patch_embed.proj.\1"),
        (r"^camera_head\.more_mlps\.1\.", "camera_head.more_mlps.2."),
        (r"^flow_head\.mlp\.(\d)\.", lambda m: f"flow_head.mlp.{2 * int(m.group(1))}."),  # Sequential with ReLUs
        (r"^flow_head\.dpt\.(projects|resize_layers)\.", r"flow_head.\1."),
        (r"^flow_head\.dpt\.layer_rn\.(\d)\.", lambda m: f"flow_head.scratch.layer{int(m.group(1)) + 1}_rn."),
        (r"^flow_head\.dpt\.refinenet\.(\d)\.", lambda m: f"flow_head.scratch.refinenet{int(m.group(1)) + 1}."),
        (r"^flow_head\.dpt\.output_conv1\.", "flow_head.scratch.output_conv1."),
        (r"^flow_head\.dpt\.output_conv2a\.", "flow_head.scratch.output_conv2.0."),
        (r"^flow_head\.dpt\.output_conv2b\.", "flow_head.scratch.output_conv2.2."),
    ]
    for pattern, repl in rules:  # at most one rule matches a path
        s = re.sub(pattern, repl, s)
    head, _, leaf = s.rpartition(".")
    if leaf in _LEAF_RENAMES:
        s = f"{head}.{_LEAF_RENAMES[leaf]}"
    return s.split(".")


def _transform_for(path: tuple[str, ...], shape: tuple[int, ...]) -> str:
    name = ".".join(path)
    if path[-1] != "kernel":
        return "copy"
    if name == "encoder.patch_embed.kernel":
        return "patch"
    if ".resize_layers.0." in name or ".resize_layers.1." in name:
        return "copy"  # ConvTranspose keeps torch's (in, out, k, k)
    return {2: "linear", 4: "conv"}[len(shape)]


def _stack_layout(path: tuple[str, ...]) -> tuple[int, str] | None:
    """(position of the stacked module in the path, kind) for stacked parameters."""
    name = ".".join(path)
    if name.startswith("encoder.blocks."):
        return 1, "enc"
    if name.startswith("decoder.pairs."):
        return 1, "dec"
    m = re.match(r"^(point|conf|camera)_decoder\.blocks\.", name)
    if m:
        return 1, "head"
    return None


def conversion_plan(abstract_params: Mapping[tuple[str, ...], tuple[int, ...]]) -> list[Slot]:
    """Slots for every parameter of a model, from {path: shape} of its (abstract) parameters."""
    slots = []
    for path, shape in abstract_params.items():
        layout = _stack_layout(path)
        if layout is None:
            key = ".".join(_official_leaf_path(list(path)))
            slots.append(Slot(key, path, None, _transform_for(path, shape), tuple(shape)))
            continue
        pos, kind = layout
        n, one = shape[0], tuple(shape[1:])
        for i in range(n):
            parts = list(path)
            if kind == "dec":  # decoder.pairs.{frame|global_}.X -> decoder.{2i|2i+1}.X
                idx = 2 * i + (0 if parts[2] == "frame" else 1)
                parts = ["decoder", str(idx)] + parts[3:]
            else:  # X.blocks.Y -> X.blocks.{i}.Y
                parts = parts[: pos + 1] + [str(i)] + parts[pos + 1 :]
            key = ".".join(_official_leaf_path(parts))
            slots.append(Slot(key, path, i, _transform_for(path, one), one))
    keys = [s.key for s in slots]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise AssertionError(f"conversion plan maps several parameters to the same official key: {dup[:10]}")
    return slots


# --- layouts --------------------------------------------------------------------------------


def official_shape(slot: Slot) -> tuple[int, ...]:
    s = slot.our_shape
    if slot.transform == "linear":
        return (s[1], s[0])
    if slot.transform == "conv":
        return (s[3], s[2], s[0], s[1])
    if slot.transform == "patch":
        p = int(round((s[0] / 3) ** 0.5))
        return (s[1], 3, p, p)
    return s


def _to_ours(slot: Slot, value: np.ndarray) -> np.ndarray:
    if slot.transform == "linear":
        return value.T
    if slot.transform == "conv":
        return value.transpose(2, 3, 1, 0)
    if slot.transform == "patch":
        return value.transpose(2, 3, 1, 0).reshape(slot.our_shape)
    return value


def _transpose2d_into(dst: np.ndarray, src: np.ndarray, rows: int = 8) -> None:
    """dst[...] = src.T for 2-D arrays, a few source rows at a time: the strided writes then
    touch a few cache lines per destination row (about 4x NumPy's plain transposed copy)."""
    for i in range(0, src.shape[0], rows):
        np.copyto(dst[:, i : i + rows], src[i : i + rows].T)


def _fill(slot: Slot, dst: np.ndarray, state_dict: Mapping, scratch: dict) -> None:
    """dst[...] = _to_ours(slot, state_dict[slot.key]) as float32, reading the key once."""
    if slot.transform == "copy":
        read_into(state_dict, slot.key, dst)
        return
    shape = official_shape(slot)
    n = int(np.prod(shape))
    if scratch.get("buf") is None or scratch["buf"].size < n:
        scratch["buf"] = np.empty(n, np.float32)
    src = scratch["buf"][:n].reshape(shape)
    read_into(state_dict, slot.key, src)
    if slot.transform == "linear":
        _transpose2d_into(dst, src)
    else:
        np.copyto(dst, _to_ours(slot, src))


def _to_official(slot: Slot, value: np.ndarray) -> np.ndarray:
    if slot.transform == "linear":
        return value.T
    if slot.transform == "conv":
        return value.transpose(3, 2, 0, 1)
    if slot.transform == "patch":
        D = slot.our_shape[1]
        p = int(round((slot.our_shape[0] / 3) ** 0.5))
        return value.reshape(p, p, 3, D).transpose(3, 2, 0, 1)
    return value


# --- conversion -----------------------------------------------------------------------------


def convert_state_dict(
    state_dict: Mapping[str, object],
    abstract_params: Mapping[tuple[str, ...], tuple[int, ...]],
    *,
    optional_prefixes: Iterable[str] = (),
    ignore_keys: Iterable[str] = (),
    source: str = "checkpoint",
    allocate: Callable[[tuple[int, ...]], np.ndarray] | None = None,
    on_filled: Callable[[tuple[str, ...], np.ndarray], object] | None = None,
    threads: int = 1,
) -> tuple[dict[tuple[str, ...], np.ndarray | None], ConversionReport]:
    """Fills our parameters from an official-format mapping (values read one key at a time).

    Returns ({path: float32 array, or None where an optional part was absent}, report). Keys
    starting with one of `optional_prefixes` may be absent; `ignore_keys` may be present and are
    skipped (e.g. DINOv2's unused `mask_token`). Raises ConversionError listing every
    unexpected, missing or mis-shaped key, before any tensor is read.

    Each parameter is one array from `allocate(shape)` (default `np.empty`, float32 C order)
    that the tensors are read into, in the file's order; as soon as all of a parameter's tensors
    are in, `on_filled(path, array)` (if given) is called and its result replaces the array in
    the returned dict, so a caller can move each parameter to its device and drop the host copy
    while the rest is read. `threads` > 1 reads that many tensors at once (each into its own
    slice; the mapping's reads must be thread-safe, as `readers`' are).
    """
    slots = conversion_plan(abstract_params)
    by_key = {slot.key: slot for slot in slots}
    optional = tuple(optional_prefixes)
    ignore = set(ignore_keys)
    report = ConversionReport()

    unexpected, misshaped, bad_buffers = [], [], []
    present = set()
    for key in state_dict.keys():
        if key in BUFFERS or key in ignore:
            if key in BUFFERS:
                val = np.asarray(state_dict[key], np.float32)
                if val.shape != BUFFERS[key].shape or not np.allclose(val, BUFFERS[key], atol=1e-6):
                    bad_buffers.append(f"{key}: expected {BUFFERS[key].ravel().tolist()}, got {val.ravel().tolist()}")
            else:
                report.ignored.append(key)
            continue
        if key not in by_key:
            unexpected.append(key)
            continue
        present.add(key)
        shape = key_shape(state_dict, key)
        want = official_shape(by_key[key])
        if shape != want:
            misshaped.append(f"{key}: checkpoint {shape} vs model {want}")
    missing = [s.key for s in slots if s.key not in present and not s.key.startswith(optional)]
    problems = []
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) not used by the model: {unexpected[:20]}")
    if missing:
        problems.append(f"{len(missing)} missing key(s): {missing[:20]}")
    if misshaped:
        problems.append(f"{len(misshaped)} mis-shaped key(s): {misshaped[:20]}")
    if bad_buffers:
        problems.append(f"normalisation buffers differ from ImageNet's: {bad_buffers}")
    if problems:
        raise ConversionError(f"{source}: does not match the model: " + "; ".join(problems))
    # A stacked parameter is usable only if all its layers came from the checkpoint.
    absent = {s.path for s in slots if s.key not in present}
    partial = {s.path for s in slots if s.index is not None and s.key in present} & absent
    if partial:
        raise ConversionError(f"{source}: some but not all layers present for {sorted('.'.join(p) for p in partial)[:10]}")

    report.left_at_init = [s.key for s in slots if s.key not in present]
    allocate = allocate or (lambda shape: np.empty(shape, np.float32))
    out: dict[tuple[str, ...], np.ndarray | None] = {path: None for path in abstract_params}
    remaining = {}  # path -> tensors still to read
    for slot in slots:
        if slot.key in present:
            remaining[slot.path] = remaining.get(slot.path, 0) + 1
    local = threading.local()  # one scratch buffer per reading thread

    def fill(slot, dst):
        if not hasattr(local, "scratch"):
            local.scratch = {}
        _fill(slot, dst, state_dict, local.scratch)

    order = [by_key[k] for k in file_order(state_dict, [s.key for s in slots if s.key in present])]
    pending: collections.deque = collections.deque()

    def finish():
        slot, array, done = pending.popleft()
        done.result()
        report.loaded += 1
        remaining[slot.path] -= 1
        if remaining[slot.path] == 0 and on_filled is not None:
            out[slot.path] = on_filled(slot.path, array)

    with ThreadPoolExecutor(max(1, threads)) as pool:
        for slot in order:
            if out[slot.path] is None:
                out[slot.path] = allocate(tuple(abstract_params[slot.path]))
            array = out[slot.path]
            pending.append((slot, array, pool.submit(fill, slot, array if slot.index is None else array[slot.index])))
            while len(pending) > 2 * max(1, threads):
                finish()
        while pending:
            finish()
    return out, report


def export_state_dict(
    params: Mapping[tuple[str, ...], np.ndarray], abstract_params: Mapping[tuple[str, ...], tuple[int, ...]] | None = None
) -> Iterator[tuple[str, np.ndarray]]:
    """Our parameters -> (official key, array in torch layout), one tensor at a time."""
    if abstract_params is None:
        abstract_params = {p: tuple(v.shape) for p, v in params.items()}
    for slot in conversion_plan(abstract_params):
        value = np.asarray(params[slot.path])
        if slot.index is not None:
            value = value[slot.index]
        yield slot.key, np.ascontiguousarray(_to_official(slot, value))
