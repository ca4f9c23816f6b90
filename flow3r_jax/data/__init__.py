"""flow3r_jax.data: the record schemas and flow codec shared with `data_pipelines/` (writers),
and the training-time input (see README.md for what lands here).

Modules:
  flow_codec  optical flow + covisibility mask <-> compact bytes (`encode_flow`, `decode_flow`)
  records     versioned clip records (`UnlabeledClip`, `LabeledClip`, `encode_record`,
              `decode_record`); re-exports the frame codec below
  images      frame image codec: RGB frames <-> JPEG / PNG files (`encode_jpeg`, `encode_png`,
              `decode_images` alias `decode_jpeg`)
  container   the schema-agnostic binary container of records (byte layout, typed values)
  frames      reading frames from videos and image folders

The names below are imported lazily (on first attribute access), so `import flow3r_jax.data`
stays cheap and pulls in neither OpenCV nor pyarrow.
"""

import importlib

_EXPORTS = {
    "flow_codec": ("FlowCodecError", "encode_flow", "decode_flow", "flow_shape", "zero_unrepresentable_outside_mask"),
    "records": (
        "RecordSchemaError",
        "RecordChecksumError",
        "SCHEMA_VERSION",
        "UnlabeledClip",
        "LabeledClip",
        "encode_record",
        "decode_record",
        "labeled_clip_from_arrays",
    ),
    "images": ("FrameCodecError", "encode_jpeg", "encode_png", "decode_jpeg", "decode_images"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
