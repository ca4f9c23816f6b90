"""`SceneConfig`: every knob of a synthetic clip, validated with errors that name the field.

A config is static per clip (image size, frame count, offsets, object counts), so all clips of
one config share array shapes and the compiled JAX kernels. Everything random (room size, focal
length, target flow, textures, trajectory) is drawn per scene from the seed.
"""

from __future__ import annotations

import dataclasses
import json
import numbers

__all__ = ["SceneConfig", "PRESETS", "KINDS"]

PRESETS = ("orbit", "forward", "pan", "handheld", "random", "mixed")
"""Camera trajectory presets; "mixed" draws one of the other five per seed."""

KINDS = ("room", "outdoor")
"""Scene kinds: a closed box-shaped room (camera inside) or open ground under a sky."""


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _range(name: str, value, lo: float, integer: bool = False) -> tuple:
    """A (min, max) range (or a single number, meaning min = max), checked to be >= lo."""
    ok = _is_int if integer else _is_real
    if ok(value):
        value = (value, value)
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(ok(v) for v in value)):
        kind = "integers" if integer else "numbers"
        raise ValueError(f"SceneConfig.{name}: expected a number or a (min, max) pair of {kind}, got {value!r}")
    a, b = value
    if not (lo <= a <= b):
        raise ValueError(f"SceneConfig.{name}: need {lo} <= min <= max, got {tuple(value)!r}")
    return (int(a), int(b)) if integer else (float(a), float(b))


@dataclasses.dataclass(frozen=True)
class SceneConfig:
    """Configuration of one synthetic clip (see the package docstring for the outputs).

    Attributes:
      height, width: image size in pixels.
      frames: number of frames K (>= 2), at `fps` frames per second.
      dynamic: add `num_dynamic` independently moving rigid objects.
      preset: camera trajectory, one of `PRESETS`.
      kind: "room" or "outdoor" (open ground and sky; sky pixels have depth 0, valid False).
      focal_range: (min, max) focal length / image width, drawn uniformly per scene.
      focal: fixed focal length / image width (overrides `focal_range`).
      flow_px: (min, max) target mean magnitude of consecutive-frame flow in pixels over static
        surfaces; a target is drawn log-uniformly per scene and the camera speed set from it.
      offsets: frame offsets |i - j| of the flow pairs (both directions). Offsets >= frames
        contribute no pair; at least one must be < frames.
      num_objects: boxes and spheres in the scene (static ones), int or (min, max).
      num_dynamic: moving objects when `dynamic` (int or (min, max)), added to `num_objects`.
        Both are drawn per scene and placed by rejection sampling (clear of the camera and of
        each other); an object that finds no room after many tries is dropped, so a crowded
        scene may hold fewer (the scene description lists what was placed).
      fps: frame rate, sets `times` and the (world-unit) speed of moving objects.
      supersample: colour rays per pixel side (1 = one ray at the pixel centre; 2 = 2x2 rays
        averaged: anti-aliased edges, and texture detail kept down to the sub-pixel scale then
        box-filtered, like rendering larger and downsampling; 4x the shading cost). Depth and
        flow always use the centre ray.
      flat_prob: probability that a surface gets a flat, untextured colour (0 = always textured).
      texture_scale: multiplies the spatial frequency of all textures (> 1: finer detail).
    """

    height: int = 224
    width: int = 224
    frames: int = 24
    dynamic: bool = False
    preset: str = "random"
    kind: str = "room"
    focal_range: tuple[float, float] = (0.8, 1.6)
    focal: float | None = None
    flow_px: tuple[float, float] = (1.0, 30.0)
    offsets: tuple[int, ...] = (1, 2, 4, 8)
    num_objects: int | tuple[int, int] = (4, 8)
    num_dynamic: int | tuple[int, int] = (1, 3)
    fps: float = 30.0
    supersample: int = 1
    flat_prob: float = 0.0
    texture_scale: float = 1.0

    def __post_init__(self):
        for name in ("height", "width"):
            v = getattr(self, name)
            if not _is_int(v) or v <= 0:
                raise ValueError(f"SceneConfig.{name}: must be a positive integer, got {v!r}")
        if not _is_int(self.frames) or self.frames < 2:
            raise ValueError(f"SceneConfig.frames: must be an integer >= 2, got {self.frames!r}")
        if not isinstance(self.dynamic, bool):
            raise ValueError(f"SceneConfig.dynamic: must be a bool, got {self.dynamic!r}")
        if self.preset not in PRESETS:
            raise ValueError(f"SceneConfig.preset: unknown preset {self.preset!r}, expected one of {PRESETS}")
        if self.kind not in KINDS:
            raise ValueError(f"SceneConfig.kind: unknown kind {self.kind!r}, expected one of {KINDS}")
        object.__setattr__(self, "focal_range", _range("focal_range", self.focal_range, 1e-3))
        if self.focal is not None and (not _is_real(self.focal) or self.focal <= 0):
            raise ValueError(f"SceneConfig.focal: must be a positive number or None, got {self.focal!r}")
        if self.focal is not None:
            object.__setattr__(self, "focal", float(self.focal))
        object.__setattr__(self, "flow_px", _range("flow_px", self.flow_px, 1e-3))
        offsets = self.offsets
        if _is_int(offsets):
            offsets = (offsets,)
        if not (isinstance(offsets, (tuple, list)) and offsets and all(_is_int(o) and o > 0 for o in offsets)):
            raise ValueError(f"SceneConfig.offsets: must be a non-empty sequence of positive integers, got {self.offsets!r}")
        if len(set(offsets)) != len(offsets):
            raise ValueError(f"SceneConfig.offsets: duplicate offsets in {self.offsets!r}")
        if min(offsets) >= self.frames:
            raise ValueError(f"SceneConfig.offsets: every offset in {tuple(offsets)!r} is >= frames={self.frames}, so there is no pair")
        object.__setattr__(self, "offsets", tuple(int(o) for o in offsets))
        object.__setattr__(self, "num_objects", _range("num_objects", self.num_objects, 0, integer=True))
        object.__setattr__(self, "num_dynamic", _range("num_dynamic", self.num_dynamic, 0, integer=True))
        if not _is_real(self.fps) or self.fps <= 0:
            raise ValueError(f"SceneConfig.fps: must be a positive number, got {self.fps!r}")
        object.__setattr__(self, "fps", float(self.fps))
        if not _is_int(self.supersample) or not 1 <= self.supersample <= 4:
            raise ValueError(f"SceneConfig.supersample: must be an integer in [1, 4], got {self.supersample!r}")
        if not _is_real(self.flat_prob) or not 0.0 <= self.flat_prob <= 1.0:
            raise ValueError(f"SceneConfig.flat_prob: must be in [0, 1], got {self.flat_prob!r}")
        if not _is_real(self.texture_scale) or self.texture_scale <= 0:
            raise ValueError(f"SceneConfig.texture_scale: must be a positive number, got {self.texture_scale!r}")

    @property
    def max_objects(self) -> int:
        """Static number of object slots (static + dynamic); unused slots are disabled."""
        return self.num_objects[1] + (self.num_dynamic[1] if self.dynamic else 0)

    def pairs(self) -> list[tuple[int, int]]:
        """All (i, j) with |i - j| in offsets, i != j, ordered by i then by j."""
        K = self.frames
        return [(i, j) for i in range(K) for j in range(K) if i != j and abs(i - j) in self.offsets]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SceneConfig":
        d = json.loads(text)
        for key in ("focal_range", "flow_px", "offsets", "num_objects", "num_dynamic"):
            if isinstance(d.get(key), list):
                d[key] = tuple(d[key])
        return cls(**d)
