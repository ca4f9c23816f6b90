"""Official checkpoint file -> a flow3r_jax model directory, with the checks the converter prints.

`convert_checkpoint(input, output)` reads an official Flow3r state dict (`flow3r.bin`, or the
same as `.safetensors`), a pi^3 `model.safetensors` (no flow head) or a DINOv2-reg encoder,
converts it (`convert.official`), writes `output/` in the format `load_pretrained` and every
`--checkpoint` option read (`config.json` + `params.safetensors`, plus `conversion.json`, this
conversion's record) and checks the round trip:

1. the written directory loads back (`load_pretrained(output)`) with the same configuration and
   every parameter array bit-identical to the converted model's (compared by digest, so the 1B
   parameter model is not held twice);
2. the loaded parameters, exported back to the official layout, equal every tensor of the input
   checkpoint exactly.

The model size is read from the checkpoint's shapes unless given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Mapping

import numpy as np

from flow3r_jax.convert.official import BUFFERS, ConversionError, ConversionReport, export_state_dict
from flow3r_jax.convert.readers import CheckpointFormatError, RenamedKeys, key_shape, open_checkpoint, release

__all__ = ["ConvertResult", "convert_checkpoint", "detect_size", "KIND_NAMES"]

KIND_NAMES = {
    "flow3r": "official Flow3r state dict",
    "pi3": "pi^3 state dict (no flow head)",
    "dinov2": "DINOv2-reg encoder (encoder only)",
}


@dataclasses.dataclass
class ConvertResult:
    input: str
    output: str
    kind: str
    size: str
    size_detected: bool
    tensors_in_file: int
    report: ConversionReport
    buffers_checked: list[str]
    param_arrays: int
    parameters: int
    files: dict[str, int]  # written file -> bytes
    roundtrip_arrays: int  # arrays that loaded back bit-identical
    roundtrip_official: int  # input tensors equal to the loaded model's re-exported ones

    def summary_lines(self) -> list[str]:
        r = self.report
        how = "detected from its shapes" if self.size_detected else "as given by --size"
        lines = [
            f"input:      {self.input}",
            f"            {KIND_NAMES[self.kind]}, {self.tensors_in_file} tensors; model size {self.size!r} ({how})",
            f"mapped:     {r.loaded} tensors -> {self.param_arrays} parameter arrays, {self.parameters:,} parameters",
            f"buffers:    {', '.join(self.buffers_checked) + ' equal ImageNet mean / std' if self.buffers_checked else 'none in the file'}",
            f"unused:     {len(r.ignored)} tensors of the file not used by the model" + (f": {r.ignored[:10]}" if r.ignored else ""),
            f"missing:    {len(r.left_at_init)} parameter tensors absent from the file keep their initial values (seed 0)"
            + (f", e.g. {r.left_at_init[:5]}" if r.left_at_init else ""),
            f"wrote:      {self.output}/ " + ", ".join(f"{name} ({_human(n)})" for name, n in self.files.items()),
            f"round trip: {self.output} loads back into Flow3r(size={self.size!r}); {self.roundtrip_arrays}/{self.param_arrays} "
            f"parameter arrays bit-identical to the converted ones; {self.roundtrip_official}/{r.loaded} tensors exported back "
            "to the official layout equal the input's",
        ]
        return lines


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _depth(keys, prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in keys if (m := pat.match(k))})


def detect_size(state_dict: Mapping, kind: str, source: str = "checkpoint") -> str:
    """The MODEL_SIZES name whose encoder (and decoder) widths and depths the checkpoint has."""
    from flow3r_jax.models.config import MODEL_SIZES

    keys = list(state_dict.keys())
    try:
        found = {"enc_dim": key_shape(state_dict, "encoder.patch_embed.proj.weight")[0], "enc_depth": _depth(keys, "encoder.blocks.")}
        if kind != "dinov2":
            found.update(dec_dim=key_shape(state_dict, "decoder.0.norm1.weight")[0], dec_depth=_depth(keys, "decoder."))
    except KeyError as err:
        raise ConversionError(f"{source}: cannot tell the model size, {err} is missing") from None
    for name, cfg in MODEL_SIZES.items():
        if all(getattr(cfg, field) == value for field, value in found.items()):
            return name
    sizes = {name: {f: getattr(cfg, f) for f in found} for name, cfg in MODEL_SIZES.items()}
    raise ConversionError(f"{source}: no model size has {found}; the sizes are {sizes}")


def _digest(a) -> str:
    a = np.ascontiguousarray(np.asarray(a, np.float32))
    return hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest() + str(a.shape)


def _flat_params(model) -> dict[tuple[str, ...], object]:
    from flax import nnx

    return {tuple(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


class _HostParams(Mapping):
    """{path: numpy array} view of a model's parameters, converting one path at a time (the
    exporter walks the parameters path by path; the last one is kept)."""

    def __init__(self, flat):
        self._flat, self._last = flat, (None, None)

    def __getitem__(self, path):
        if self._last[0] != path:
            self._last = (path, np.asarray(self._flat[path], np.float32))
        return self._last[1]

    def __iter__(self):
        return iter(self._flat)

    def __len__(self):
        return len(self._flat)


def convert_checkpoint(input_path: str, output_dir: str, size: str | None = None, overwrite: bool = False) -> ConvertResult:
    """Converts `input_path` into the model directory `output_dir` and checks the round trip.

    Raises FileNotFoundError / CheckpointFormatError / ConversionError (all naming the file) for a
    missing, unreadable, foreign or mis-sized checkpoint, FileExistsError when `output_dir`
    already holds a model and `overwrite` is False.
    """
    from flow3r_jax.models.pretrained import abstract_params, detect_checkpoint_kind, load_pretrained, save_pretrained

    if os.path.isdir(input_path):
        raise CheckpointFormatError(f"{input_path}: is a directory; expected an official checkpoint file (.bin, .pt, .pth or .safetensors)")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise FileExistsError(f"{output_dir}: exists and is not a directory")
    existing = [f for f in ("config.json", "params.safetensors") if os.path.exists(os.path.join(output_dir, f))]
    if existing and not overwrite:
        raise FileExistsError(f"{output_dir}: already holds a model ({', '.join(existing)}); pass --overwrite to replace it")
    if os.path.abspath(output_dir) == os.path.abspath(os.path.dirname(input_path)) and os.path.basename(input_path) == "params.safetensors":
        raise FileExistsError(f"{output_dir}: would overwrite the input {input_path}")

    sd = open_checkpoint(input_path)  # FileNotFoundError / CheckpointFormatError name the file
    try:
        kind = detect_checkpoint_kind(sd.keys())
    except ValueError as err:
        raise ConversionError(f"{input_path}: {err}") from None
    view = RenamedKeys(sd, prefix="encoder.") if kind == "dinov2" else sd
    detected = detect_size(view, kind, input_path) if size in (None, "auto") else None
    size = detected or size
    try:
        model, report = load_pretrained(input_path, size, return_report=True)
    except ConversionError as err:
        if detected is None:
            try:
                hint = f" (its shapes are those of size {detect_size(view, kind, input_path)!r}; omit --size to detect it)"
            except ConversionError:
                hint = ""
            raise ConversionError(f"{err}{hint}") from None
        raise
    cfg = model.cfg
    flat = _flat_params(model)
    digests = {p: _digest(v) for p, v in flat.items()}
    shapes = abstract_params(cfg)[2]
    parameters = int(sum(np.prod(s) for s in shapes.values()))

    save_pretrained(model, output_dir)
    del model, flat
    record = {
        "input": os.path.abspath(input_path),
        "kind": kind,
        "size": size,
        "tensors_loaded": report.loaded,
        "left_at_init": report.left_at_init,
        "ignored": report.ignored,
    }
    with open(os.path.join(output_dir, "conversion.json"), "w") as f:
        json.dump(record, f, indent=2)

    loaded = load_pretrained(output_dir)
    if loaded.cfg != cfg:
        raise AssertionError(f"{output_dir}: config.json reads back as {loaded.cfg}, not {cfg}")
    flat = _flat_params(loaded)
    same = [p for p in shapes if _digest(flat[p]) == digests[p]]
    if len(same) != len(shapes):
        bad = sorted("/".join(p) for p in set(shapes) - set(same))
        raise AssertionError(f"{output_dir}: {len(bad)} parameter arrays differ from the converted model after loading: {bad[:10]}")
    equal, differ = 0, []
    for key, value in export_state_dict(_HostParams(flat), shapes):
        if key in view:
            if np.array_equal(value, np.asarray(view[key], np.float32)):
                equal += 1
            else:
                differ.append(key)
            release(view, key)  # the compared tensor's file pages leave the process
    if differ or equal != report.loaded:
        raise AssertionError(f"{output_dir}: {len(differ)} tensors exported from the loaded model differ from {input_path}: {differ[:10]}")
    files = {name: os.path.getsize(os.path.join(output_dir, name)) for name in ("config.json", "params.safetensors", "conversion.json")}
    return ConvertResult(
        input=input_path,
        output=output_dir,
        kind=kind,
        size=size,
        size_detected=detected is not None,
        tensors_in_file=len(sd),
        report=report,
        buffers_checked=[k for k in BUFFERS if k in view],
        param_arrays=len(shapes),
        parameters=parameters,
        files=files,
        roundtrip_arrays=len(same),
        roundtrip_official=equal,
    )
