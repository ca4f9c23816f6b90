"""The per-input functions every runner (local, multiprocessing, Beam) calls.

`process_video(path, cfg)` turns one video file or image folder into one encoded
`UnlabeledClip` record:

    read + sample K frames (ingest)  ->  teacher flow on every pair (i, j), |i - j| in offsets,
    both directions  ->  covisibility (forward-backward check; AND teacher confidence >=
    min_confidence when the teacher gives one)  ->  point tracks (chained consecutive flows)
    ->  JPEG frames + codec-encoded flow/mask per pair  ->  record bytes

It never raises for a bad input: the result carries either the record or a failure
{input, stage, error_type, message}, stage one of read / teacher / covisibility / tracks /
encode (render / encode for synthetic scenes). A bad *configuration* is not an input's failure:
`PipelineConfig` refuses out-of-range values, `check_teacher(cfg)` an unknown teacher, a
`teacher_module` that cannot be imported or teacher arguments the teacher does not take, each
with `ConfigError` naming the command-line option and what it allows; a runner calls both before
touching any input, and `process_video` raises `ConfigError` (instead of recording a failure of
every input) if the teacher still cannot be built. `process_synthetic_scene(scene_cfg, seed)` renders a synthetic scene and encodes it as a
`LabeledClip` (exact depth, poses, intrinsics, flow and covisibility).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
import tempfile
import threading
import time
import traceback

import numpy as np

from data_pipelines.covisibility import ALPHA, BETA, covisibility_masks
from flow3r_jax.correspondence.teacher import check_teacher_args, compute_pair_flows, get_teacher
from data_pipelines.ingest import SAMPLING, IngestConfig, sample_clip
from flow3r_jax.correspondence.tracks import compute_tracks

__all__ = ["ConfigError", "check_range", "check_teacher", "PipelineConfig", "ProcessResult", "make_pairs", "process_video", "process_synthetic_scene", "failure"]

STAGES = ("read", "teacher", "covisibility", "tracks", "encode")


class ConfigError(ValueError):
    """A setting is invalid: the message names the command-line option and what it allows.

    Raised before any input is read; never recorded as a failure of an input."""


def check_range(option: str, value, lo=None, hi=None, integer: bool = True, lo_open: bool = False):
    """`value` if it is an integer (a number if not `integer`) within [lo, hi] (lo excluded when
    `lo_open`; None: unbounded), else ConfigError naming `option` ("--jpeg_quality") and the range."""
    if integer:
        kind, ok = "an integer", isinstance(value, int) and not isinstance(value, bool)
    else:
        kind, ok = "a number", isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if lo is not None and hi is not None:
        allowed = f"{kind} in {lo}..{hi}"
    elif lo is not None:
        allowed = f"{kind} {'>' if lo_open else '>='} {lo}"
    elif hi is not None:
        allowed = f"{kind} <= {hi}"
    else:
        allowed = kind
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value <= hi
    if not ok:
        raise ConfigError(f"{option} must be {allowed}, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything that determines a record (stored in the manifest; a resumed run must match)."""

    frames: int = 24
    offsets: tuple[int, ...] = (1, 2, 4, 8)
    max_pixels: int = 255_000
    sampling: str = "uniform"
    max_seconds: float | None = None
    teacher: str = "dis"
    teacher_module: str | None = None  # imported first in every process (it registers the teacher)
    teacher_kwargs: tuple[tuple[str, object], ...] = ()  # (name, value) pairs for get_teacher
    teacher_batch: int = 8
    alpha: float = ALPHA
    beta: float = BETA
    min_confidence: float = 0.5
    track_stride: int = 8
    reseed_tracks: bool = True
    jpeg_quality: int = 95
    flow_level: int = 1  # zstd level of the flow codec (level 3: ~25% slower to encode, no smaller on teacher flows; the default 9: several times slower)

    def __post_init__(self):
        """Checks every field; ConfigError names the command-line option of the bad one."""
        try:
            object.__setattr__(self, "offsets", tuple(int(o) for o in self.offsets))
            object.__setattr__(self, "teacher_kwargs", tuple((str(k), v) for k, v in dict(self.teacher_kwargs).items()))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"--offsets / --teacher_arg: malformed value ({err})") from None
        check_range("--frames", self.frames, 2)
        if not self.offsets or min(self.offsets) < 1:
            raise ConfigError(f"--offsets must be positive integers, got {','.join(map(str, self.offsets)) or 'none'}")
        if all(o >= self.frames for o in self.offsets):
            raise ConfigError(f"--offsets: every offset {self.offsets} is >= --frames {self.frames}, so a clip has no pairs; use offsets in 1..{self.frames - 1}")
        check_range("--max_pixels", self.max_pixels, 1)
        if self.sampling not in SAMPLING:
            raise ConfigError(f"--sampling must be one of {', '.join(SAMPLING)}, got {self.sampling!r}")
        if self.max_seconds is not None:
            check_range("--max_seconds", self.max_seconds, 0, integer=False, lo_open=True)
        if not isinstance(self.teacher, str) or not self.teacher:
            raise ConfigError(f"--teacher must name a registered flow teacher, got {self.teacher!r}")
        check_range("--teacher_batch", self.teacher_batch, 1)
        check_range("PipelineConfig.alpha", self.alpha, 0, integer=False)
        check_range("PipelineConfig.beta", self.beta, 0, integer=False)
        check_range("PipelineConfig.min_confidence", self.min_confidence, 0, 1, integer=False)
        check_range("--track_stride", self.track_stride, 1)
        check_range("--jpeg_quality", self.jpeg_quality, 1, 100)
        check_range("--flow_level", self.flow_level, 1, 22)
        self.ingest()  # validates the ingest fields

    def ingest(self) -> IngestConfig:
        return IngestConfig(frames=self.frames, sampling=self.sampling, max_pixels=self.max_pixels, max_seconds=self.max_seconds)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["offsets"] = list(self.offsets)
        d["teacher_kwargs"] = dict(self.teacher_kwargs)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PipelineConfig":
        d = dict(d)
        d["offsets"] = tuple(d.get("offsets", cls.offsets))
        d["teacher_kwargs"] = tuple(dict(d.get("teacher_kwargs", {})).items())
        return cls(**d)


@dataclasses.dataclass
class ProcessResult:
    input: str
    key: str  # video / clip id, the record's identity in the dataset
    record: bytes | None = None
    failure: dict | None = None  # {input, stage, error_type, message}
    timings: dict = dataclasses.field(default_factory=dict)  # seconds per stage
    info: dict = dataclasses.field(default_factory=dict)  # frames, height, width, pairs, tracks

    @property
    def ok(self) -> bool:
        return self.record is not None


def failure(input_path: str, stage: str, err: BaseException) -> dict:
    """The manifest's failure entry: which input, at which stage, what error."""
    return {"input": str(input_path), "stage": stage, "error_type": type(err).__name__, "message": str(err) or repr(err)}


def make_pairs(frames: int, offsets) -> np.ndarray:
    """int32 (P, 2): every (i, j) with |i - j| in offsets, both directions, ordered by i then j
    (the synthetic generator's order)."""
    offs = set(int(o) for o in offsets)
    return np.array([(i, j) for i in range(frames) for j in range(frames) if abs(i - j) in offs], np.int32).reshape(-1, 2)


_TEACHERS: dict = {}


def _import_teacher_module(cfg: PipelineConfig) -> None:
    if cfg.teacher_module:
        try:
            importlib.import_module(cfg.teacher_module)
        except Exception as err:  # noqa: BLE001 - ImportError, or whatever the module raised
            raise ConfigError(f"--teacher_module: cannot import {cfg.teacher_module!r}: {type(err).__name__}: {err}") from err


def check_teacher(cfg: PipelineConfig) -> None:
    """Checks the teacher settings without building the teacher (a learned one would load its
    weights): imports `teacher_module`, then `correspondence.teacher.check_teacher_args`. ConfigError
    names the option to fix: --teacher, --teacher_module or --teacher_arg."""
    _import_teacher_module(cfg)
    kwargs = dict(cfg.teacher_kwargs)
    try:
        check_teacher_args(cfg.teacher, **kwargs)
    except ValueError as err:
        if "unknown flow teacher" in str(err):
            hint = (f"--teacher_module {cfg.teacher_module!r} did not register it" if cfg.teacher_module
                    else "a teacher of your own needs --teacher_module MODULE (a module that calls register_teacher)")
            raise ConfigError(f"--teacher: {err}; {hint}") from None
        raise ConfigError(f"--teacher_arg: {err}") from None


def _teacher(cfg: PipelineConfig):
    key = (cfg.teacher_module, cfg.teacher, json.dumps(dict(cfg.teacher_kwargs), sort_keys=True, default=str))
    if key not in _TEACHERS:  # one per process: learned teachers load weights once
        check_teacher(cfg)
        try:
            _TEACHERS[key] = get_teacher(cfg.teacher, **dict(cfg.teacher_kwargs))
        except Exception as err:  # noqa: BLE001 - no input could be processed: a setting is wrong
            raise ConfigError(f"--teacher {cfg.teacher!r} with --teacher_arg {dict(cfg.teacher_kwargs)}: the teacher cannot be built: {type(err).__name__}: {err}") from err
    return _TEACHERS[key]


_BUFFERS = threading.local()


def _buffer(name: str, shape: tuple, dtype) -> np.ndarray:
    """This thread's reusable work array `name` of `shape` (reallocated when the shape changes).

    A clip's flows are hundreds of MB (162 pairs at 378x672: 330 MB); allocating them per video
    faults in fresh pages every time: on the reference VM, whose host reclaims freed guest memory,
    first-touching 330 MB took 0.04-0.8 s, up to an eighth of the teacher's time for the clip.
    The arrays never leave `process_video` (the record holds encoded bytes), so one per worker
    thread is safe."""
    cached = getattr(_BUFFERS, name, None)
    if cached is None or cached.shape != tuple(shape) or cached.dtype != np.dtype(dtype):
        setattr(_BUFFERS, name, None)  # drop the old one before allocating the new one
        cached = np.empty(shape, dtype)
        setattr(_BUFFERS, name, cached)
    return cached


def _local_copy(path: str):
    """A local path for `path` (a copy in a temp dir for remote URIs such as gs://), and the temp dir."""
    if "://" not in path:
        return path, None
    from etils import epath

    tmp = tempfile.mkdtemp(prefix="flow3r_in_")
    src = epath.Path(path)
    dst = os.path.join(tmp, src.name)
    if src.is_dir():  # an image folder: copy its files
        os.makedirs(dst)
        for f in src.iterdir():
            if not f.is_dir():
                with f.open("rb") as a, open(os.path.join(dst, f.name), "wb") as b:
                    shutil.copyfileobj(a, b)
    else:
        with src.open("rb") as f, open(dst, "wb") as g:
            shutil.copyfileobj(f, g)
    return dst, tmp


class _Stage:
    """Times a stage and records it as the failing one if it raises."""

    def __init__(self, timings: dict, state: dict, name: str, timing_name: str | None = None):
        self.timings, self.state, self.name, self.timing_name = timings, state, name, timing_name or name

    def __enter__(self):
        self.state["stage"] = self.name
        self.t0 = time.perf_counter()

    def __exit__(self, *exc):
        self.timings[self.timing_name] = self.timings.get(self.timing_name, 0.0) + time.perf_counter() - self.t0
        return False


def _encode_unlabeled(records, flow_codec, clip, flows, covisible, pairs, tracks, teacher, key, source, cfg, timings) -> bytes:
    t0 = time.perf_counter()
    jpegs = records.encode_jpeg(clip.frames, cfg.jpeg_quality)
    t1 = time.perf_counter()
    blobs = [flow_codec.encode_flow(flows[p], covisible[p], level=cfg.flow_level) for p in range(len(pairs))]
    t2 = time.perf_counter()
    timings["encode_jpeg"], timings["encode_flow"] = t1 - t0, t2 - t1
    rec = records.UnlabeledClip(
        video_id=key,
        frame_times=np.asarray(clip.times, np.float32),
        frames_jpeg=jpegs,
        height=int(clip.frames.shape[1]),
        width=int(clip.frames.shape[2]),
        pairs=np.asarray(pairs, np.int32),
        flows=blobs,
        tracks_xy=tracks.xy,
        tracks_visible=tracks.visible,
        teacher_name=str(teacher.name),
        teacher_version=str(teacher.version),
        source=str(source),
        extra={  # flat str / int / float values (the schema's rule); lists as JSON strings
            "source_frame_indices": json.dumps([int(i) for i in clip.indices]),
            "source_height": int(clip.source_size[0]),
            "source_width": int(clip.source_size[1]),
            "num_source_frames": int(clip.num_source_frames),
            "sampling": cfg.sampling,
            "covisibility": "forward-backward consistency (flow3r_jax.geometry.forward_backward_mask)",
            "fb_alpha": float(cfg.alpha),
            "fb_beta": float(cfg.beta),
            "min_confidence": float(cfg.min_confidence),
            "track_grid_stride": int(cfg.track_stride),
            "track_reseed": int(cfg.reseed_tracks),
        },
    )
    return records.encode_record(rec)


def process_video(path: str, cfg: PipelineConfig = PipelineConfig(), key: str | None = None, teacher=None) -> ProcessResult:
    """One video file or image folder -> ProcessResult with the encoded UnlabeledClip or a failure.

    `key` is the video id stored in the record (default: the path); `teacher` overrides the
    config's (built once per process otherwise). Raises ConfigError (and records nothing) when
    the config's teacher cannot be built: that is no input's fault."""
    path = os.fspath(path)
    key = path if key is None else key
    teacher = teacher if teacher is not None else _teacher(cfg)
    timings: dict[str, float] = {}
    state = {"stage": "read"}
    tmp = None
    try:
        from flow3r_jax.data import flow_codec, records

        with _Stage(timings, state, "read", "fetch"):
            local, tmp = _local_copy(path)
        state["stage"] = "read"
        clip = sample_clip(local, cfg.ingest())
        timings.update(clip.timings)
        pairs = make_pairs(cfg.frames, cfg.offsets)
        P, (H, W) = len(pairs), clip.frames.shape[1:3]
        with _Stage(timings, state, "teacher"):
            out = compute_pair_flows(teacher, clip.frames, pairs, batch_size=cfg.teacher_batch, out=_buffer("flows", (P, H, W, 2), np.float32))
        with _Stage(timings, state, "covisibility"):
            covisible = covisibility_masks(out.flow, pairs, cfg.alpha, cfg.beta, out=_buffer("covisible", (P, H, W), np.bool_))
            if out.confidence is not None:
                covisible &= out.confidence >= cfg.min_confidence
        with _Stage(timings, state, "tracks"):
            row = {(int(i), int(j)): n for n, (i, j) in enumerate(pairs)}
            K = cfg.frames
            if all((k, k + 1) in row for k in range(K - 1)):
                fw = [out.flow[row[(k, k + 1)]] for k in range(K - 1)]  # views, not copies
                bw = [out.flow[row[(k + 1, k)]] for k in range(K - 1)]
                tracks = compute_tracks(clip.frames, fw, bw, grid_stride=cfg.track_stride, reseed=cfg.reseed_tracks, alpha=cfg.alpha, beta=cfg.beta)
            else:  # offset 1 not in the pair set: the tracker asks the teacher itself
                tracks = compute_tracks(clip.frames, teacher=teacher, grid_stride=cfg.track_stride, reseed=cfg.reseed_tracks, alpha=cfg.alpha, beta=cfg.beta)
        with _Stage(timings, state, "encode"):
            record = _encode_unlabeled(records, flow_codec, clip, out.flow, covisible, pairs, tracks, teacher, key, path, cfg, timings)
        info = {
            "teacher": {"name": str(teacher.name), "version": str(teacher.version)},
            "frames": int(cfg.frames), "height": int(clip.frames.shape[1]), "width": int(clip.frames.shape[2]),
            "pairs": int(len(pairs)), "tracks": int(tracks.num_tracks), "covisible": float(np.mean(covisible)),
        }
        return ProcessResult(path, key, record=record, timings=timings, info=info)
    except Exception as err:  # noqa: BLE001 - every failure becomes a manifest entry
        stage = state["stage"] if state["stage"] in STAGES else "read"
        res = ProcessResult(path, key, failure=failure(path, stage, err), timings=timings)
        res.info["traceback"] = traceback.format_exc(limit=6)
        return res
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def process_synthetic_scene(scene_cfg, seed: int, jpeg_quality: int = 95, flow_level: int = PipelineConfig.flow_level, dataset: str = "synthetic") -> ProcessResult:
    """Renders synthetic scene `seed` of `scene_cfg` (a SceneConfig) and encodes it as a
    LabeledClip with its exact flow and covisibility for every pair of the config's offsets."""
    key = f"{dataset}/seed_{int(seed):08d}"
    timings: dict[str, float] = {}
    state = {"stage": "render"}
    try:
        from data_pipelines.synthetic import generate_clip
        from flow3r_jax.data import records

        with _Stage(timings, state, "render"):
            clip = generate_clip(scene_cfg, int(seed))
        with _Stage(timings, state, "encode"):
            record = records.encode_record(
                records.labeled_clip_from_arrays(
                    clip_id=key,
                    dataset=dataset,
                    images=clip["images"],
                    times=clip["times"],
                    depth=clip["depth"],
                    valid=clip["valid"],
                    intrinsics=clip["intrinsics"],
                    poses=clip["poses"],
                    pairs=clip["pairs"],
                    flow=clip["flow"],
                    covisible=clip["covisible"],
                    dynamic=clip["dynamic"],
                    high_quality=True,
                    jpeg_quality=jpeg_quality,
                    flow_level=flow_level,
                    extra={"seed": int(seed), "scene_config": str(clip["config"]), "scene": str(clip["scene"])},
                )
            )
        K, H, W = clip["images"].shape[:3]
        return ProcessResult(key, key, record=record, timings=timings, info={"frames": K, "height": H, "width": W, "pairs": len(clip["pairs"])})
    except Exception as err:  # noqa: BLE001
        return ProcessResult(key, key, failure=failure(key, state["stage"], err), timings=timings)
