"""The reconstruction methods behind `python -m flow3r_jax.reconstruct`, each frames in ->
`Reconstruction` out (poses, intrinsics, depth and colours on a model grid, and where that grid
sits in the input frames):

    run_flow_depth    the sparse solver's cameras (`flow3r_jax.sfm`) and depth maps triangulated
                      from the teacher flow of nearby frame pairs (the default where it succeeds)
    run_sparse        the sparse solver's cameras and points alone (`--steps 0`)
    run_flowmap       FlowMap's per-scene optimisation (`flow3r_jax.flowmap`) on the clip's
                      teacher flow and point tracks (`flow3r_jax.correspondence`), optionally
                      around a given depth (--refine)
    run_feedforward   the Flow3r model of a checkpoint
    run_tracks4d      TracksTo4D fitted to the clip's point tracks

JAX and the models are imported inside the functions, so that the command line checks its
options before anything heavy loads.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import time
from typing import TYPE_CHECKING

import numpy as np

from flow3r_jax.stopping import StopRequest

if TYPE_CHECKING:
    from flow3r_jax.data.frames import ModelGrid

__all__ = ["ReconstructionError", "Reconstruction", "FOCAL_MODES", "SFM_MODES", "DENSE_MODES", "flowmap_size", "solve_sparse", "run_flowmap", "run_flow_depth", "run_sparse", "run_feedforward", "run_tracks4d"]

log = logging.getLogger("flow3r_jax.reconstruct")


class ReconstructionError(ValueError):
    """The input cannot be reconstructed as asked (too few frames, bad options, ...)."""


def flowmap_size(height: int, width: int, pixels: int = 43_200, multiple: int = 16) -> tuple[int, int]:
    """Optimisation size: about `pixels` pixels (FlowMap's default is 180 x 240) with the input's
    aspect ratio, both sides rounded to multiples of 16, never larger than the input."""
    scale = min(1.0, math.sqrt(pixels / (height * width)))
    h = max(multiple, int(round(height * scale / multiple)) * multiple)
    w = max(multiple, int(round(width * scale / multiple)) * multiple)
    return h, w


TEACHER = "opencv-dis-medium"  # the CPU flow teacher of the per-clip methods


def _teacher_flows(frames: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """(P, h, w, 2) flow of each (i, j) of `pairs` by the CPU teacher (OpenCV DIS, medium)."""
    from flow3r_jax.correspondence.teacher import DISTeacher, compute_pair_flows

    return compute_pair_flows(DISTeacher("medium"), frames, pairs).flow


def _consecutive_teacher_flows(frames: np.ndarray):
    K = len(frames)
    pairs = np.array([(i, i + 1) for i in range(K - 1)] + [(i + 1, i) for i in range(K - 1)], np.int32)
    flows = _teacher_flows(frames, pairs)
    return flows[: K - 1], flows[K - 1 :], TEACHER


def _optimisation_frames(frames: np.ndarray, pixels: int):
    """(grid, frames on it, (consecutive forward flows, backward flows, teacher name)) of the
    per-clip methods: about `pixels` pixels, one scale and a centred crop."""
    from flow3r_jax.data.frames import resize_to_grid, uniform_grid

    grid = uniform_grid(frames.shape[1], frames.shape[2], flowmap_size(frames.shape[1], frames.shape[2], pixels))
    small = resize_to_grid(frames, grid)
    return grid, small, _consecutive_teacher_flows(small)


def _tracks(frames, flow_fw, flow_bw):
    from flow3r_jax.correspondence.tracks import compute_tracks

    try:
        tracks = compute_tracks(frames, flows_fw=flow_fw, flows_bw=flow_bw)
    except Exception as err:  # noqa: BLE001 - tracks are optional: report and continue
        log.warning("tracks: compute_tracks failed (%s: %s); running without the track loss", type(err).__name__, err)
        return None
    log.info("tracks: %d tracks over %d frames", tracks.xy.shape[1], tracks.xy.shape[0])
    return tracks


FOCAL_MODES = ("auto", "softmin", "rotation")
SFM_MODES = ("auto", "off")
DENSE_MODES = ("flow", "flowmap")


# The sparse solver's focal standard deviation (track-clustered, `BundleResult.focal_std_robust`)
# above which `reconstruct` warns: on 57 rendered 10-frame clips (benchmarks/sfm_seeds.py) the
# three above 4% were 5-19% off, those below 3% at most 4%.
FOCAL_STD_WARN_PCT = 3.0


def solve_sparse(frames: np.ndarray, focal) -> tuple:
    """(result or None, info): `flow3r_jax.sfm.run_sfm` on the input frames (a given focal held
    fixed; a focal mode string: estimated); None with the reason logged where it refuses the
    clip or cannot run."""
    from flow3r_jax.sfm import run_sfm

    t0 = time.time()
    try:
        result = run_sfm(frames, focal=None if isinstance(focal, str) else float(focal))
    except Exception as err:  # noqa: BLE001 - the sparse solver is an addition: FlowMap's poses remain
        log.warning("sfm: failed (%s: %s); keeping FlowMap's poses", type(err).__name__, err)
        return None, dict(used=False, reason=f"{type(err).__name__}: {err}", seconds=round(time.time() - t0, 2))
    info = dict(result.info, used=result.ok, seconds=round(time.time() - t0, 2))
    if result.ok:
        rp = result.info["reprojection_px"]
        log.info(
            "sfm (%s route): %d frames, %d of %d pairs verified, %d tracks, focal %.1f px +- %.1f%% (%s), reprojection median %.2f px (%.1f s)",
            result.info["route"], len(frames), result.info["pairs_verified"], result.info["pairs_tried"], result.info["tracks"], result.focal,
            result.info.get("focal_std_pct", 0.0), result.info["focal_source"], rp["median"], info["seconds"],
        )
        if result.info.get("focal_std_pct", 0.0) > FOCAL_STD_WARN_PCT:
            log.warning("sfm: this clip determines the focal length poorly (standard deviation %.1f%%); the poses and depth inherit its error. "
                        "If you know the focal length, give it (--focal PIXELS)", result.info["focal_std_pct"])
        return result, info
    log.warning("sfm: not used (%s); keeping FlowMap's poses (%.1f s)", result.reason, info["seconds"])
    return None, info


def _depth_to_sfm(depth: np.ndarray, grid, sfm) -> tuple[np.ndarray, list[float]]:
    """FlowMap's depth maps (K, h, w) rescaled per frame to the sparse points: the median ratio of
    a point's depth in the SfM frame to the map's depth at its keypoint (the overall median for a
    frame with fewer than 5 points)."""
    from flow3r_jax.sfm.initial import point_depths

    Rw = np.transpose(sfm.poses[:, :3, :3], (0, 2, 1))
    z = point_depths(Rw, sfm.poses[:, :3, 3], sfm.points, sfm.frame, sfm.track)
    h, w = depth.shape[1:]
    uv = grid.from_input(sfm.xy)
    col = np.clip(np.floor(uv[:, 0]).astype(int), 0, w - 1)
    row = np.clip(np.floor(uv[:, 1]).astype(int), 0, h - 1)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    d = depth[sfm.frame, row, col]
    ratio = np.where(inside & (d > 0), z / np.maximum(d, 1e-12), np.nan)
    overall = float(np.nanmedian(ratio))
    scales = []
    for k in range(len(depth)):
        r = ratio[(sfm.frame == k) & np.isfinite(ratio)]
        scales.append(float(np.median(r)) if len(r) >= 5 else overall)
    return depth * np.asarray(scales, depth.dtype)[:, None, None], scales


def _known_focal(focal, flow_fw, flow_bw, grid) -> tuple[float | None, dict]:
    """(focal in FlowMap units for `SceneInputs.focal` or None for FlowMap's soft-min, what was
    decided). focal: "softmin" (FlowMap's), "rotation" (the rotation-only estimate,
    `flowmap.selfcal`), "auto" (that estimate where the clip is rotation-dominant, else the
    soft-min) or a number: the focal in pixels of the input frames."""
    h, w = grid.model_size
    if not isinstance(focal, str):
        f = float(focal) * grid.scale / math.sqrt(h * w)
        log.info("focal: given, %.1f px on the input frames (%.4f f_px/sqrt(HW))", float(focal), f)
        return f, dict(mode="given", focal_px_input=float(focal))
    if focal == "softmin":
        return None, dict(mode="softmin")
    from flow3r_jax.flowmap.selfcal import rotation_focal

    t0 = time.time()
    est = rotation_focal(flow_fw, flow_bw)
    info = dict(mode=focal, rotation=est.as_dict(), seconds=round(time.time() - t0, 2))
    use = focal == "rotation" or est.rotational
    if focal == "rotation" and not math.isfinite(est.focal):
        raise ReconstructionError("--focal rotation: no consecutive pair has enough consistent flow to estimate the focal")
    log.info(
        "focal: rotation-only fit %.4f (f_px/sqrt(HW)), residual %.2f px vs median flow %.2f px, contrast %.2f -> %s (%.1f s)",
        est.focal, est.residual_px, est.flow_px, est.contrast,
        "using it" if use else "not rotation-dominant, FlowMap's soft-min", info["seconds"],
    )
    info["used"] = "rotation" if use else "softmin"
    return (est.focal if use else None), info


# --------------------------------------------------------------------------- backends


@dataclasses.dataclass
class Reconstruction:
    """poses (K, 4, 4) camera-to-world (frame 0 = identity); K_model (3, 3) intrinsics on the
    model grid; depth (K, h, w) on the model grid; colors (K, h, w, 3) uint8 on the model grid;
    info: what ran; grid: where the model grid sits in the input frames (one scale and a
    centred crop, `data.frames.ModelGrid`)."""

    poses: np.ndarray
    K_model: np.ndarray
    depth: np.ndarray
    colors: np.ndarray
    info: dict
    grid: ModelGrid


class _StepBar:
    """The optimisation's progress bar: "compiling" until the first report (the first compiled
    call compiles and runs one step), then steps, loss and a rate counted from that moment, so
    the compilation time never enters the rate."""

    def __init__(self, total: int):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc="flowmap (compiling)", unit="step", file=sys.stderr, dynamic_ncols=True)
        self.compiled = False

    def __call__(self, done: int, loss: float) -> None:
        if not self.compiled:
            self.compiled = True
            self.bar.reset()  # the clock restarts now: rates exclude the compilation
            self.bar.initial = self.bar.n = self.bar.last_print_n = done
            self.bar.set_description("flowmap", refresh=False)
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self.bar.refresh()
            return
        self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        if not self.bar.update(done - self.bar.n):
            self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def run_flowmap(
    frames: np.ndarray,
    steps: int = 2000,
    init: str = "pretrained",
    pixels: int = 43_200,
    base_depth=None,
    base_grid=None,
    explicit: bool = False,
    seed: int = 0,
    progress: bool = True,
    flowmap: dict | None = None,
    stop: StopRequest | None = None,
    focal: str | float = "auto",
    sfm: str = "auto",
    sfm_result: tuple | None = None,
) -> Reconstruction:
    """The per-scene optimisation on uint8 frames (K, H, W, 3) (see the module docstring).
    `flowmap`: further `FlowMapConfig` fields (e.g. from `--config configs/flowmap.py`).
    `focal`: how the focal length is found (`_known_focal`: "auto", "softmin", "rotation" or
    pixels of the input frames).
    `sfm`: "auto" (default) first runs the sparse solver (`flow3r_jax.sfm`) on the input frames;
    where it succeeds, its poses and focal are the result (FlowMap then runs with that focal and
    principal point held fixed and supplies the depth maps, rescaled per frame to the sparse
    points); "off": FlowMap's.
    `sfm_result`: the solver's (result or None, info) when the caller ran it already.
    `base_depth` (K, h', w') on `base_grid` (a feed-forward result's): the depth to refine.
    `stop`: asked between the stages (raising Interrupted before the first step) and between
    stretches of steps (ending the run early: `info["partial"]` says where)."""
    import jax

    from flow3r_jax.data.frames import grid_to_input, resize_to_grid
    from flow3r_jax.flowmap import FlowMapConfig, init_params, load_init, make_scene_inputs, optimize_scene
    from flow3r_jax.flowmap.weights import DEFAULT_INIT

    if sfm not in SFM_MODES:
        raise ReconstructionError(f"sfm {sfm!r}: expected one of {', '.join(SFM_MODES)}")
    stop = stop or StopRequest()
    K, H0, W0 = frames.shape[:3]
    timing = {}
    sparse, sfm_info = None, dict(used=False, reason="--sfm off")
    if sfm == "auto" and sfm_result is not None:
        sparse, sfm_info = sfm_result
        timing["sfm"] = sfm_info.get("seconds", 0.0)
    elif sfm == "auto":
        t0 = time.time()
        sparse, sfm_info = solve_sparse(frames, focal)
        timing["sfm"] = time.time() - t0
        stop.check("after the sparse solver, before the optimisation")
    t0 = time.time()
    grid, small, (flow_fw, flow_bw, teacher) = _optimisation_frames(frames, pixels)
    h, w = grid.model_size
    timing["flow"] = time.time() - t0
    log.info("flow: %s on %d pairs at %dx%d (%.1f s)", teacher, 2 * (K - 1), h, w, timing["flow"])
    stop.check("after computing flow, before the optimisation")
    t0 = time.time()
    tracks = _tracks(small, flow_fw, flow_bw)
    timing["tracks"] = time.time() - t0
    stop.check("after computing tracks, before the optimisation")
    t0 = time.time()
    if base_depth is not None:
        on_input = grid_to_input(base_depth, base_grid) if base_grid is not None else _resize_maps(base_depth, (H0, W0))
        base_depth = np.maximum(resize_to_grid(on_input, grid), 1e-3)
    principal = None
    if sparse is not None:  # FlowMap runs with the sparse solver's focal and principal point, held fixed
        f = sparse.focal * grid.scale / math.sqrt(h * w)
        principal = grid.intrinsics_from_input(sparse.intrinsics)[:2, 2]
        known, focal_info = f, dict(mode="sfm", focal_px_input=sparse.focal, principal_px_model=[round(float(v), 3) for v in principal])
        log.info("focal: the sparse solver's, %.1f px on the input frames (%.4f f_px/sqrt(HW)), principal point (%.1f, %.1f) on FlowMap's grid", sparse.focal, f, *principal)
    else:
        known, focal_info = _known_focal(focal, flow_fw, flow_bw, grid)
    inputs = make_scene_inputs(small, flow_fw, flow_bw, tracks=tracks, base_depth=base_depth, focal=known, principal=principal)
    fields = dict(flowmap or {}, steps=steps, progress_every=0)
    if explicit:
        cfg = FlowMapConfig.explicit_depth(**fields)
        params = init_params(cfg, K, (h, w), seed, base_depth=inputs.base_depth)
        init_name = "explicit"
    elif init == "random":
        cfg = FlowMapConfig(**fields)
        params = init_params(cfg, K, (h, w), seed)
        init_name = "random"
    else:
        path = DEFAULT_INIT if init == "pretrained" else init
        state, cfg = load_init(path, FlowMapConfig(**fields))
        if base_depth is not None:  # refine around the given depth: start exactly at it
            head = state["depth_net"]["depth_head"]
            head["kernel"].set_value(head["kernel"].get_value() * 0.0)
            head["bias"].set_value(head["bias"].get_value() * 0.0)
        params = init_params(cfg, K, (h, w), seed, pretrained=state)
        init_name = os.path.relpath(path) if init != "pretrained" else "pretrained (shipped)"
    timing["setup"] = time.time() - t0  # focal estimate, masks, initialisation
    stop.check("before the optimisation")
    bar = _StepBar(steps) if progress else None
    t0 = time.time()
    first = []

    def report(step, loss):
        if not first:
            first.append(time.time() - t0)
            log.debug("flowmap: compiled and ran the first step in %.1f s", first[0])
        if bar is not None:
            bar(step + 1, loss)

    log.info("flowmap: compiling the optimisation (%d frames of %dx%d), then %d steps", K, h, w, steps)
    try:
        result = optimize_scene(inputs, cfg, params, key=seed, progress=report, stop=stop)
        result = jax.device_get(result)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.time() - t0
    timing["compile"] = first[0] if first else 0.0  # compiling and running the first step
    timing["optimise"] = seconds - timing["compile"]
    done = int(result.steps_done)
    info = dict(
        backend="flowmap",
        init=init_name,
        steps=steps,
        size=[h, w],
        teacher=teacher,
        tracks=tracks is not None,
        refine=base_depth is not None,
        seconds=round(seconds, 1),
        compile_seconds=round(first[0], 1) if first else None,
        focal_flowmap_units=float(result.focal),
        focal_init=focal_info,
        timing={k: round(v, 2) for k, v in timing.items()},
        final_loss=float(result.history.loss[-1]),
        history={k: np.asarray(v).tolist() for k, v in result.history._asdict().items() if k != "poses"},
    )
    if result.converged:
        info["converged_at"] = done
        log.info("flowmap: converged after %d of %d steps (%.1f s; the mean loss of the last %d steps within %.2g of the %d before), final loss %.5f, focal %.4f (f_px/sqrt(HW))",
                 done, steps, seconds, cfg.converge_window, cfg.converge_rtol, cfg.converge_window, info["final_loss"], info["focal_flowmap_units"])
    elif done < steps:
        info["partial"] = dict(stopped_by=stop.name, steps_done=done, steps=steps, stage="per-scene optimisation")
        log.warning("flowmap: stopped by %s after %d of %d steps (%.1f s); writing the state reached, marked partial", stop.name, done, steps, seconds)
    else:
        log.info("flowmap: %d steps in %.1f s, final loss %.5f, focal %.4f (f_px/sqrt(HW))", steps, seconds, info["final_loss"], info["focal_flowmap_units"])
    poses, K_model, depth = np.asarray(result.poses, np.float64), np.asarray(result.intrinsics, np.float64), np.asarray(result.depth)
    info["sfm"] = sfm_info
    info["poses_from"] = "flowmap"
    if sparse is not None:
        poses, K_model = sparse.poses, grid.intrinsics_from_input(sparse.intrinsics)
        depth, scales = _depth_to_sfm(depth, grid, sparse)
        info["poses_from"] = "sfm"
        info["sfm"]["depth_scales"] = [round(x, 5) for x in scales]
    return Reconstruction(poses, K_model, depth, small, info, grid)


def run_flow_depth(frames: np.ndarray, sfm_result: tuple, pixels: int = 43_200, gap: int = 3, stop: StopRequest | None = None) -> Reconstruction:
    """The sparse solver's poses and focal with depth maps triangulated from the teacher flow of
    every frame pair up to `gap` frames apart (`flow3r_jax.sfm.dense`; the default of
    `reconstruct` where the solver succeeds): seconds, no per-scene optimisation. Pixels the flow
    does not determine (no pair consistent within 1 px) have depth 0. `sfm_result`: the solver's
    (result, info), result not None."""
    from flow3r_jax.data.frames import resize_to_grid, uniform_grid
    from flow3r_jax.sfm.dense import flow_pairs, triangulate_flow

    stop = stop or StopRequest()
    sparse, sfm_info = sfm_result
    K, H0, W0 = frames.shape[:3]
    timing = dict(sfm=sfm_info.get("seconds", 0.0))
    t0 = time.time()
    grid = uniform_grid(H0, W0, flowmap_size(H0, W0, pixels))
    h, w = grid.model_size
    small = resize_to_grid(frames, grid)
    pairs = flow_pairs(K, gap)
    flows = _teacher_flows(small, pairs)
    timing["flow"] = time.time() - t0
    log.info("flow: %s on %d pairs (up to %d frames apart) at %dx%d (%.1f s)", TEACHER, len(pairs), gap, h, w, timing["flow"])
    stop.check("after computing flow, before triangulating it")
    t0 = time.time()
    K_model = grid.intrinsics_from_input(sparse.intrinsics)
    depth, dense = triangulate_flow(sparse.poses, K_model, flows, pairs)
    timing["triangulate"] = time.time() - t0
    log.info("depth: triangulated from the flow with the solver's cameras, %.1f%% of the pixels known, %.1f consistent pairs per pixel (%.1f s)",
             100 * dense["known_fraction"], dense["mean_pairs_per_pixel"], timing["triangulate"])
    info = dict(backend="sfm+flow", steps=0, size=[h, w], teacher=TEACHER, poses_from="sfm", depth_from="flow triangulation", sfm=sfm_info, dense=dict(dense, gap=gap),
                timing={k: round(v, 2) for k, v in timing.items()})
    return Reconstruction(sparse.poses, K_model, depth, small, info, grid)


def run_sparse(frames: np.ndarray, pixels: int = 43_200, focal: str | float = "auto", stop: StopRequest | None = None) -> Reconstruction:
    """Poses and a sparse point cloud from the sparse solver alone (`reconstruct --steps 0`):
    seconds, no per-scene optimisation. Depth maps on the usual grid hold each frame's observed
    points (0 elsewhere); the cloud is one point per track, coloured from its first observation.
    Raises ReconstructionError where the solver refuses the clip."""
    from flow3r_jax.data.frames import resize_to_grid, uniform_grid
    from flow3r_jax.sfm.initial import point_depths

    stop = stop or StopRequest()
    K, H0, W0 = frames.shape[:3]
    t0 = time.time()
    sparse, sfm_info = solve_sparse(frames, focal)
    seconds = time.time() - t0
    if sparse is None:
        raise ReconstructionError(f"--steps 0 writes the sparse solver's poses alone, and it refused this clip ({sfm_info.get('reason')}); run with --steps N >= 1 for FlowMap's per-scene optimisation")
    stop.check("after the sparse solver")
    grid = uniform_grid(H0, W0, flowmap_size(H0, W0, pixels))
    h, w = grid.model_size
    small = resize_to_grid(frames, grid)
    K_model = grid.intrinsics_from_input(sparse.intrinsics)
    Rw = np.transpose(sparse.poses[:, :3, :3], (0, 2, 1))
    z = point_depths(Rw, sparse.poses[:, :3, 3], sparse.points, sparse.frame, sparse.track)
    uv = grid.from_input(sparse.xy)
    col, row = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    depth = np.zeros((K, h, w), np.float32)
    depth[sparse.frame[inside], row[inside], col[inside]] = z[inside]
    first = np.unique(sparse.track, return_index=True)[1]  # each track's first observation
    px = np.clip(np.floor(sparse.xy[first]).astype(int), 0, [W0 - 1, H0 - 1])
    colors = frames[sparse.frame[first], px[:, 1], px[:, 0]]
    info = dict(backend="sfm", steps=0, size=[h, w], seconds=round(seconds, 1), poses_from="sfm", sfm=sfm_info, timing=dict(sfm=round(seconds, 2)))
    rec = Reconstruction(sparse.poses, K_model, depth, small, info, grid)
    rec.cloud = (sparse.points, colors, (sparse.frame[first], sparse.xy[first], np.arange(len(first))))
    return rec


def _fill_invisible(xy: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Track positions where a track is not visible: its nearest visible position in time (the
    tracker leaves 0 there; TracksTo4D reads every entry with its visibility flag)."""
    T = len(xy)
    out = xy.copy()
    idx = np.where(visible, np.arange(T)[:, None], -1)
    last = np.maximum.accumulate(idx, axis=0)  # latest visible frame at or before t
    nxt = np.where(visible, np.arange(T)[:, None], T)
    nxt = np.minimum.accumulate(nxt[::-1], axis=0)[::-1]  # earliest visible frame at or after t
    src = np.where(last >= 0, last, np.minimum(nxt, T - 1))
    return out[src, np.arange(xy.shape[1])[None]]


def run_tracks4d(
    frames: np.ndarray,
    steps: int = 2000,
    pixels: int = 43_200,
    size: str = "small",
    init: str | None = None,
    max_tracks: int = 256,
    seed: int = 0,
    progress: bool = True,
    stop: StopRequest | None = None,
) -> Reconstruction:
    """TracksTo4D on the clip's point tracks (`flowmap.tracks4d.finetune_tracks4d`): tracks from
    `flow3r_jax.correspondence.tracks` on the frames resized to about `pixels`, up to `max_tracks` of those
    seen in >= 2 frames; intrinsics unknown, so the official approximation (focal (h + w) / 2 and
    the image centre; here the image size stands for the tracks' extent) with the network's focal
    correction (their mean over frames is the one shared K written). From `init` (a launch.train
    workdir of configs/tracks4d.py, same `size`) or from scratch (with the camera warm-up).
    Depth maps are sparse: each frame's visible track points, 0 elsewhere; the point cloud is the
    reconstructed 3D track points of every frame where they are visible."""
    from flow3r_jax.flowmap.tracks4d import finetune_tracks4d
    from flow3r_jax.losses.tracks4d import Tracks4DLossConfig
    from flow3r_jax.models.tracks4d import tracks4d_config

    stop = stop or StopRequest()
    K, H0, W0 = frames.shape[:3]
    t0 = time.time()
    grid, small, (flow_fw, flow_bw, teacher) = _optimisation_frames(frames, pixels)
    h, w = grid.model_size
    tracks = _tracks(small, flow_fw, flow_bw)
    if tracks is None:
        raise ReconstructionError("--method tracks4d needs point tracks (flow3r_jax.correspondence.tracks), which could not be computed")
    keep = np.flatnonzero(tracks.visible.sum(0) >= 2)
    if len(keep) < 8:
        raise ReconstructionError(f"--method tracks4d: only {len(keep)} tracks are seen in 2 frames or more; at least 8 are needed")
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(keep, min(max_tracks, len(keep)), replace=False))
    vis = tracks.visible[:, keep]
    xy = _fill_invisible(tracks.xy[:, keep], vis)
    log.info("tracks4d: %d tracks over %d frames at %dx%d (%s flow, %.1f s)", len(keep), K, h, w, teacher, time.time() - t0)
    stop.check("after computing tracks, before the optimisation")
    Kapprox = np.array([[(h + w) / 2.0, 0, w / 2.0], [0, (h + w) / 2.0, h / 2.0], [0, 0, 1]], np.float32)
    cfg = tracks4d_config(size, predict_focal=True)
    params = None
    if init:
        from flax import nnx

        from flow3r_jax.models.tracks4d import Tracks4D
        from flow3r_jax.train.checkpoint import read_params

        host = read_params(init)
        abstract = nnx.state(nnx.eval_shape(lambda: Tracks4D(cfg, rngs=nnx.Rngs(0))))
        try:
            params = nnx.State.from_flat_path([(p, host["/".join(map(str, p))]) for p, _ in nnx.to_flat_state(abstract)])
        except KeyError as err:
            raise ReconstructionError(f"--tracks4d_init {init}: not a TracksTo4D {size!r} checkpoint (missing {err})") from None
    loss_cfg = Tracks4DLossConfig(warmup_steps=0 if init else min(100, steps // 3))
    t0 = time.time()
    r = finetune_tracks4d(xy, vis, np.broadcast_to(Kapprox, (K, 3, 3)), cfg, steps, loss_cfg, params=params, lr=1e-4 if init else 1e-3, seed=seed, stop=stop)
    seconds = time.time() - t0
    # frame 0 at the origin, as the other backends
    to0 = np.linalg.inv(r.poses[0])
    poses = to0 @ r.poses
    world = r.points @ to0[:3, :3].T + to0[:3, 3]
    K_model = Kapprox.astype(np.float64).copy()
    K_model[0, 0] = K_model[1, 1] = float(np.mean(r.intrinsics[:, 0, 0]))
    depth = np.zeros((K, h, w), np.float32)
    cols = np.clip(xy[..., 0].astype(int), 0, w - 1)
    rows = np.clip(xy[..., 1].astype(int), 0, h - 1)
    f_idx, n_idx = np.nonzero(vis)
    depth[f_idx, rows[f_idx, n_idx], cols[f_idx, n_idx]] = np.maximum(r.depth[f_idx, n_idx], 0.0)
    pts = world[f_idx, n_idx]
    colors = small[f_idx, rows[f_idx, n_idx], cols[f_idx, n_idx]]
    obs_xy = grid.to_input(xy[f_idx, n_idx])
    info = dict(
        backend="tracks4d", init=init or "random", size=[h, w], model=size, steps=steps, tracks=int(len(keep)), teacher=teacher,
        seconds=round(seconds, 1), best_loss=r.best_loss, history={"loss": np.asarray(r.history).tolist()},
    )
    if r.steps_done < steps:
        info["partial"] = dict(stopped_by=stop.name, steps_done=r.steps_done, steps=steps, stage="TracksTo4D fine-tuning")
    rec = Reconstruction(poses, K_model, depth, small, info, grid)
    rec.cloud = (pts, colors, (f_idx, obs_xy, np.arange(len(pts))))
    return rec


def _resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    h, w = size
    return np.stack([cv2.resize(np.asarray(m, np.float32), (w, h), interpolation=cv2.INTER_LINEAR) for m in maps])


def run_feedforward(frames: np.ndarray, checkpoint: str, size: str = "large", max_pixels: int = 255_000) -> Reconstruction:
    """The Flow3r model on frames sized by the official rule (with one scale for both axes and a
    centred crop of the few pixels the rounding to multiples of 14 leaves over, so that pixels
    stay square): poses from its camera head
    (re-expressed with frame 0 at the origin), one shared focal fitted to its local points."""
    import jax.numpy as jnp

    from flow3r_jax.data.frames import official_target_size, resize_to_grid, uniform_grid
    from flow3r_jax.geometry import focal_from_pointmap, relative_pose
    from flow3r_jax.models.inference import Predictor
    from flow3r_jax.models.pretrained import load_pretrained

    K, H0, W0 = frames.shape[:3]
    grid = uniform_grid(H0, W0, official_target_size(H0, W0, max_pixels))
    (h, w), small = grid.model_size, resize_to_grid(frames, grid)
    t0 = time.time()
    model = load_pretrained(checkpoint, size)
    log.info("model: %s loaded (%.1f s); input %d x %dx%d", checkpoint, time.time() - t0, K, h, w)
    t0 = time.time()
    out = Predictor(model)(small.astype(np.float32) / 255.0)  # (N, ...) numpy
    local = np.asarray(out["local_points"])
    conf = 1.0 / (1.0 + np.exp(-np.asarray(out["conf"][..., 0])))
    f = float(np.median(np.asarray(focal_from_pointmap(jnp.asarray(local), jnp.asarray(conf)))))
    cams = jnp.asarray(out["camera_poses"])
    poses = np.asarray(relative_pose(cams[:1], cams), np.float64)
    depth = np.maximum(local[..., 2], 1e-6)
    Km = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]], np.float64)
    info = dict(backend="feedforward", checkpoint=checkpoint, size=[h, w], seconds=round(time.time() - t0, 1), focal_px_model=f)
    return Reconstruction(poses, Km, depth, small, info, grid)
