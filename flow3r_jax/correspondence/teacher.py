"""Flow teachers: the offline models that produce the flow supervision stored in the datasets.

A teacher is any object with `name`, `version` and
`__call__(src, dst) -> TeacherOutput`, where src and dst are uint8 RGB batches (B, H, W, 3) of
equal shape and the output flow (B, H, W, 2) float32 is the displacement in pixels from each
pixel of src to its position in dst (flow3r_jax's convention; displacements do not depend on
where pixel centres are put). `confidence` (B, H, W) in [0, 1] is optional.

The default, `DISTeacher`, runs OpenCV's DIS optical flow on the CPU. A learned teacher (UFM,
RAFT, SEA-RAFT, ...) plugs in by implementing the same call with user-supplied weights (loading
them is the teacher's business; nothing is downloaded here) and registering a factory:

    from flow3r_jax.correspondence.teacher import register_teacher
    register_teacher("raft", lambda weights, **kw: MyRaftTeacher(weights, **kw))
    teacher = get_teacher("raft", weights="/path/to/raft-things.pth")

`check_teacher_args(name, **kwargs)` refuses an unknown name or arguments the factory does not
take without building the teacher (so a run can check its configuration before touching any
input, even when building the teacher means loading weights); a factory can register a cheap
`check` of its argument values too (DIS checks its preset).

Teachers are batched so that accelerator-backed ones can fill a device; DIS simply loops.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable, Protocol

import cv2
import numpy as np

__all__ = ["TeacherOutput", "FlowTeacher", "DISTeacher", "TeacherError", "register_teacher", "get_teacher", "check_teacher_args", "compute_pair_flows"]


class TeacherError(RuntimeError):
    """A teacher failed or returned something malformed; the message names the input."""


@dataclasses.dataclass
class TeacherOutput:
    flow: np.ndarray  # (B, H, W, 2) float32, pixels
    confidence: np.ndarray | None = None  # (B, H, W) float32 in [0, 1]


class FlowTeacher(Protocol):
    name: str
    version: str

    def __call__(self, src: np.ndarray, dst: np.ndarray) -> TeacherOutput: ...


def _check_batch(src: np.ndarray, dst: np.ndarray) -> None:
    for name, a in (("src", src), ("dst", dst)):
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"flow teacher: {name} must be uint8 (B, H, W, 3), got {a.dtype} {a.shape}")
    if src.shape != dst.shape:
        raise ValueError(f"flow teacher: src {src.shape} and dst {dst.shape} differ in shape")


_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


class DISTeacher:
    """OpenCV DIS optical flow (Kroeger et al. 2016) on grayscale frames, CPU only."""

    name = "opencv-dis"

    def __init__(self, preset: str = "medium"):
        if preset not in _DIS_PRESETS:
            raise ValueError(f"DISTeacher: unknown preset {preset!r}; choose one of {sorted(_DIS_PRESETS)}")
        self.preset = preset
        self.version = f"opencv-{cv2.__version__}-{preset}"
        self._dis = None
        self._finest = None

    def __getstate__(self):  # picklable for multiprocessing / Beam workers
        return {"preset": self.preset, "version": self.version, "_dis": None, "_finest": None}

    def __call__(self, src: np.ndarray, dst: np.ndarray) -> TeacherOutput:
        _check_batch(src, dst)
        if self._dis is None:
            self._dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[self.preset])
            self._finest = self._dis.getFinestScale()
        out = np.empty(src.shape[:3] + (2,), np.float32)
        for b in range(src.shape[0]):
            g0 = cv2.cvtColor(src[b], cv2.COLOR_RGB2GRAY)
            g1 = cv2.cvtColor(dst[b], cv2.COLOR_RGB2GRAY)
            # OpenCV lowers the object's finest scale for a small image and keeps it lowered:
            # reset it, so a flow never depends on what this object computed before.
            self._dis.setFinestScale(self._finest)
            out[b] = self._dis.calc(g0, g1, None)
        return TeacherOutput(out)


_REGISTRY: dict[str, Callable[..., FlowTeacher]] = {"dis": DISTeacher}
_CHECKS: dict[str, Callable[..., object]] = {"dis": DISTeacher}  # building DIS is cheap: it is its own check


def register_teacher(name: str, factory: Callable[..., FlowTeacher], check: Callable[..., object] | None = None) -> None:
    """Makes `get_teacher(name, **kwargs)` build a teacher with `factory(**kwargs)`.

    `check(**kwargs)`, if given, must raise ValueError for argument values the factory would
    refuse, cheaply (no weights loaded); `check_teacher_args` calls it."""
    _REGISTRY[name] = factory
    if check is None:
        _CHECKS.pop(name, None)
    else:
        _CHECKS[name] = check


def _unknown(name: str) -> ValueError:
    return ValueError(f"unknown flow teacher {name!r}; registered: {sorted(_REGISTRY)} (see register_teacher)")


def get_teacher(name: str = "dis", **kwargs) -> FlowTeacher:
    if name not in _REGISTRY:
        raise _unknown(name)
    return _REGISTRY[name](**kwargs)


def check_teacher_args(name: str, **kwargs) -> None:
    """Raises ValueError when `get_teacher(name, **kwargs)` would be refused for its name or its
    arguments: an unregistered name, an argument the factory does not take or a required one
    missing (from the factory's signature), or a value its registered `check` refuses."""
    if name not in _REGISTRY:
        raise _unknown(name)
    factory = _REGISTRY[name]
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check here
        sig = None
    if sig is not None:
        try:
            sig.bind(**kwargs)
        except TypeError as err:
            takes = [p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
            raise ValueError(f"flow teacher {name!r} does not accept the arguments {kwargs}: {err} (it takes {takes})") from None
    check = _CHECKS.get(name)
    if check is not None:
        check(**kwargs)


def compute_pair_flows(teacher: FlowTeacher, frames: np.ndarray, pairs: np.ndarray, batch_size: int = 8, out: np.ndarray | None = None) -> TeacherOutput:
    """Flow for each (i, j) of `pairs` (P, 2) between frames (K, H, W, 3) uint8, in batches.

    `out`, a float32 (P, H, W, 2) array, receives the flows when given (a worker reuses one
    buffer across videos instead of faulting in hundreds of MB of fresh pages per clip).
    Raises TeacherError naming the pair batch on any teacher exception or malformed output
    (wrong shape, non-finite values)."""
    pairs = np.asarray(pairs)
    P = len(pairs)
    H, W = frames.shape[1:3]
    if out is None:
        flows = np.empty((P, H, W, 2), np.float32)
    elif out.dtype != np.float32 or out.shape != (P, H, W, 2):
        raise ValueError(f"compute_pair_flows: out must be float32 {(P, H, W, 2)}, got {out.dtype} {out.shape}")
    else:
        flows = out
    conf = None
    for start in range(0, P, batch_size):
        chunk = pairs[start : start + batch_size]
        try:
            res = teacher(frames[chunk[:, 0]], frames[chunk[:, 1]])
        except Exception as err:
            raise TeacherError(f"teacher {teacher.name} failed on pairs {chunk.tolist()}: {type(err).__name__}: {err}") from err
        f = np.asarray(res.flow)
        if f.shape != (len(chunk), H, W, 2):
            raise TeacherError(f"teacher {teacher.name} returned flow of shape {f.shape} for pairs {chunk.tolist()}, expected {(len(chunk), H, W, 2)}")
        if not np.all(np.isfinite(f)):
            raise TeacherError(f"teacher {teacher.name} returned non-finite flow for pairs {chunk.tolist()}")
        flows[start : start + len(chunk)] = f
        if res.confidence is not None:
            if conf is None:
                conf = np.ones((P, H, W), np.float32)
            conf[start : start + len(chunk)] = res.confidence
    return TeacherOutput(flows, conf)
