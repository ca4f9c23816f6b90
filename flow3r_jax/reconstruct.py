"""`python -m flow3r_jax.reconstruct`: camera poses, intrinsics, depth and a point cloud from a
video or an image folder.

    python -m flow3r_jax.reconstruct --input VIDEO_OR_FOLDER --out DIR
        [--checkpoint CKPT] [--refine] [--frames N] [--steps S] [--method tracks4d]

- By default: camera poses and one focal from sparse structure from motion (`flow3r_jax.sfm`:
  SIFT tracks, a global or incremental start, bundle adjustment) and depth maps triangulated from
  the optical flow of frame pairs up to 3 apart with those cameras (`flow3r_jax.sfm.dense`),
  seconds for a short clip. A camera that only rotates (no parallax: no depth to triangulate) has
  its rotations and focal from the solver's rotation-only route and its depth maps from FlowMap
  below (`--steps` steps). Where the solver refuses the clip (too little texture or parallax; the
  reason is logged and kept in cameras.json's run record), FlowMap gives poses and depth. `--dense flowmap`: FlowMap's depth with the solver's cameras;
  `--sfm off`: FlowMap alone; `--steps 0`: the solver's cameras and sparse points alone.
- Without `--checkpoint` (or with `--refine`), where FlowMap runs: FlowMap's per-scene optimisation
  (`flow3r_jax.flowmap`), started from the shipped pretrained depth-CNN initialisation
  (`--init random` for FlowMap's from-scratch setting, `--init FILE` for another), on frames
  resized to about `--pixels` pixels (both sides multiples of 16, one scale for both axes and a
  centred crop). Flow comes from the CPU teacher (OpenCV DIS, `flow3r_jax.correspondence`), point
  tracks are chained through it (`correspondence.tracks`; if that fails the run has no track loss,
  and the log says so).
- With `--checkpoint`: the feed-forward Flow3r model (`flow3r_jax.models.pretrained`) on frames
  sized by the official rule; `--refine` then runs the per-scene optimisation around the
  model's depth (depth = model depth x exp(CNN output), the CNN's output layer starting at 0).
- With `--method tracks4d`: TracksTo4D (`flow3r_jax.models.tracks4d`) fitted for `--steps` steps
  to the clip's point tracks (from scratch, or from `--tracks4d_init` a trained workdir); depth
  maps are sparse (the track points) and the point cloud is the 3D track points.

Outputs in DIR (`flow3r_jax.export.outputs`): `images/` (the frames used), `cameras.json`
(per frame: image name, 4x4 camera-to-world, fx fy cx cy in pixels of the input images),
`transforms.json` (nerfstudio), `sparse/0` (COLMAP model, images in `images/`), `points.ply`,
`depth/<frame>.npy` and `depth.npz`, `trajectory.png`, `flowmap_history.json`, `summary.json`
(and `PARTIAL` for a stopped run). A reused DIR keeps no file of an earlier run; a DIR holding
files reconstruct did not write is refused.

Every option and the output directory are checked before any frame is read (a bad value ends
the command with exit status 2 and the allowed range). Ctrl-C (SIGINT) or SIGTERM stops the
optimisation within about a second (after the current stretch of steps; during compilation,
when it returns): what exists is written, marked partial, and the command exits with 130 /
143. A signal before the optimisation has run a step writes nothing (and says so); a second
signal exits at once.

`--demo DIR` renders a built-in synthetic video (`data_pipelines.synthetic`), reconstructs it
and scores the result against the exact ground truth (`./run.sh demo`).

`--config configs/flowmap.py[:OPTIONS]` (with `--config.x=y` overrides) gives the defaults
of the options above and the per-scene optimiser's settings (`FlowMapConfig`); an option given
on the command line wins over the config. Options are spelled `--snake_case`; the older
`--kebab-case` spellings are accepted too (`flow3r_jax.cli`).

Code: the methods are `flow3r_jax.reconstruction`'s, stopping on signals `flow3r_jax.stopping`,
the files `flow3r_jax.export`'s; this module checks the options, reads the frames, dispatches and
writes.

Frames: `--frames N` takes N frames evenly spaced over the input (default: all, at most 60),
reading only those (a video's other frames are skipped without being converted). Image folders
are in natural order (frame2.png before frame10.png). At least 3 frames are needed;
unreadable files and folders with mixed image sizes are reported with the offending file
(`flow3r_jax.data.frames.FrameReadError`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time

import numpy as np

from flow3r_jax.reconstruction import (  # noqa: F401 - the command's API: its methods and errors
    DENSE_MODES,
    FOCAL_MODES,
    SFM_MODES,
    Reconstruction,
    ReconstructionError,
    flowmap_size,
    run_feedforward,
    run_flow_depth,
    run_flowmap,
    run_sparse,
    run_tracks4d,
    solve_sparse,
)
from flow3r_jax.stopping import Interrupted, StopRequest

__all__ = ["ReconstructionError", "Interrupted", "StopRequest", "check_options", "read_input_frames", "flowmap_size", "reconstruct", "main"]

log = logging.getLogger("flow3r_jax.reconstruct")

MIN_FRAMES = 3
DEFAULT_MAX_FRAMES = 60
METHODS = ("default", "tracks4d")  # default: FlowMap / the Flow3r checkpoint; tracks4d: TracksTo4D on point tracks
MODEL_SIZES = ("large", "base", "small", "tiny")  # flow3r_jax.models.config.MODEL_SIZES (not imported: it loads JAX)
# Smallest accepted values of the numeric options (no upper limits).
MINIMUM = {"steps": 0, "converge": 0, "demo_steps": 1, "frames": MIN_FRAMES, "pixels": 16 * 16, "ff_pixels": 14 * 14}


# ------------------------------------------------------------------------------- checks


def _at_least(name: str, value, minimum: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        return f"--{name} {value}: must be an integer >= {minimum}"
    return None


def _int_option(name: str):
    """argparse `type` of an integer option with a lower limit (MINIMUM)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer (allowed: an integer >= {MINIMUM[name]})") from None
        if value < MINIMUM[name]:
            raise argparse.ArgumentTypeError(f"{value} is out of range (allowed: an integer >= {MINIMUM[name]})")
        return value

    return parse


def _focal_option(text: str) -> str | float:
    """argparse `type` of --focal: one of FOCAL_MODES or a positive focal length in pixels."""
    if text in FOCAL_MODES:
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected {', '.join(FOCAL_MODES)} or a focal length in pixels of the input frames") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: a focal length must be a positive number of pixels")
    return value


def check_options(
    input_path: str | None,
    out_dir: str | None,
    checkpoint: str | None = None,
    refine: bool = False,
    frames: int | None = None,
    steps: int = 2000,
    init: str = "pretrained",
    pixels: int = 43_200,
    model_size: str = "large",
    explicit: bool = False,
    ff_pixels: int = 255_000,
    frames_from: str | None = None,
    flowmap: dict | None = None,
) -> None:
    """Checks every option of `reconstruct` and the output directory, reading no frame and
    computing nothing. Raises ReconstructionError (FrameReadError for a missing input) naming
    the option, its value and what is allowed."""
    from flow3r_jax.data.frames import IMAGE_EXTENSIONS, FrameReadError
    from flow3r_jax.export.outdir import OutputDirError, check_output_dir

    if not input_path:
        raise ReconstructionError("--input: a video file or an image folder is needed")
    if not os.path.exists(input_path):
        raise FrameReadError(f"{input_path}: no such file or directory")
    if os.path.isfile(input_path) and input_path.lower().endswith(IMAGE_EXTENSIONS):
        raise ReconstructionError(f"--input {input_path}: a single image; give the folder of the images (or a video)")
    try:
        check_output_dir(out_dir or "")
    except OutputDirError as err:
        raise ReconstructionError(str(err)) from None
    if os.path.isdir(input_path) and os.path.abspath(out_dir) == os.path.abspath(input_path):
        raise ReconstructionError(f"--out {out_dir}: is the input folder; choose another directory")
    optimiser = checkpoint is None or refine
    problems = [
        _at_least("steps", steps, MINIMUM["steps"]),
        None if frames is None else _at_least("frames", frames, MINIMUM["frames"]),
        _at_least("pixels", pixels, MINIMUM["pixels"]),
        _at_least("ff_pixels", ff_pixels, MINIMUM["ff_pixels"]),
    ]
    problems = [p for p in problems if p]
    if problems:
        raise ReconstructionError("; ".join(problems))
    if refine and checkpoint is None:
        raise ReconstructionError("--refine needs --checkpoint (it refines the feed-forward model's depth)")
    if explicit and not optimiser:
        raise ReconstructionError("--explicit_depth applies to the per-scene optimisation: it needs no --checkpoint, or --checkpoint with --refine")
    if checkpoint is not None and not os.path.exists(checkpoint):
        raise ReconstructionError(f"--checkpoint {checkpoint}: no such file or directory")
    if model_size not in MODEL_SIZES:
        raise ReconstructionError(f"--model_size {model_size!r}: expected one of {', '.join(MODEL_SIZES)}")
    if frames_from is not None:
        if frames is not None:
            raise ReconstructionError("--frames and --frames_from exclude each other")
        if not os.path.isfile(frames_from):
            raise ReconstructionError(f"--frames_from {frames_from}: no such file")
    if optimiser and not explicit and init not in ("pretrained", "random") and not os.path.isfile(init):
        raise ReconstructionError(f"--init {init!r}: expected 'pretrained', 'random' or an initialisation .npz file (no such file)")
    if optimiser and flowmap and steps > 0:
        from flow3r_jax.flowmap.config import FlowMapConfig

        try:
            (FlowMapConfig.explicit_depth if explicit else FlowMapConfig)(**dict(flowmap, steps=steps))
        except (TypeError, ValueError) as err:
            raise ReconstructionError(f"--config flowmap settings: {err}") from None


# ------------------------------------------------------------------------------- input


def read_frame_list(list_path: str) -> list[str]:
    """The frames named by a list file: a JSON list, or one entry per line (blank lines and
    `#` comments skipped). Entries are image file names of a folder (with or without their
    extension) or frame indices of a video."""
    if not os.path.isfile(list_path):
        raise ReconstructionError(f"--frames_from {list_path}: no such file")
    with open(list_path) as f:
        text = f.read()
    if text.lstrip().startswith("["):
        try:
            entries = [str(e) for e in json.loads(text)]
        except json.JSONDecodeError as e:
            raise ReconstructionError(f"--frames_from {list_path}: not a valid JSON list ({e})") from e
    else:
        entries = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
        entries = [e for e in entries if e]
    if len(entries) != len(set(entries)):
        raise ReconstructionError(f"--frames_from {list_path}: frames listed twice")
    return entries


def _select_listed(path: str, list_path: str):
    """Frames of `path` named by the list file `list_path`, in the list's order."""
    from flow3r_jax.data.frames import list_images, read_frames, read_image

    entries = read_frame_list(list_path)
    if os.path.isdir(path):
        files = list_images(path)
        by_name = {os.path.basename(f): f for f in files}
        by_name.update({os.path.splitext(os.path.basename(f))[0]: f for f in files})
        missing = [e for e in entries if os.path.basename(e) not in by_name]
        if missing:
            raise ReconstructionError(f"--frames_from {list_path}: {len(missing)} listed frame(s) not in {path}: {missing[:5]}")
        chosen = [by_name[os.path.basename(e)] for e in entries]
        images = [read_image(f) for f in chosen]
        if len({im.shape for im in images}) > 1:
            raise ReconstructionError(f"{path}: the listed frames have different sizes")
        return np.stack(images), [os.path.basename(f) for f in chosen]
    bad = [e for e in entries if not e.isdigit()]
    if bad:
        raise ReconstructionError(f"--frames_from {list_path}: a video's frames are listed by index, got {bad[:5]}")
    indices = [int(e) for e in entries]
    images, _, _ = read_frames(path, indices=indices)
    if len(images) != len(indices):
        raise ReconstructionError(f"--frames_from {list_path}: {path} has no frame(s) {sorted(set(indices))[len(images):][:5]}")
    order = {i: k for k, i in enumerate(sorted(set(indices)))}  # read_frames returns them sorted
    return images[[order[i] for i in indices]], [_video_frame_name(i) for i in indices]


def _video_frame_name(index: int) -> str:
    """The name of a video's frame: the file `reconstruct` writes it to in OUT/images."""
    return f"frame_{index:05d}.png"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _log_kept(path: str, kept: list[int], count: int) -> None:
    """Logs which frames were kept, e.g. "kept 20 of 300 frames: every 15th"."""
    if len(kept) == count:
        return
    gaps = np.diff(kept) if len(kept) > 1 else np.array([count])
    every = f"every {_ordinal(int(gaps[0]))}" if np.all(gaps == gaps[0]) else f"one in {float(np.mean(gaps)):.1f} on average"
    log.info("input: kept %d of %d frames: %s (%s)", len(kept), count, every, path)


def read_input_frames(path: str, frames: int | None = None, frames_from: str | None = None) -> tuple[np.ndarray, list[str]]:
    """uint8 frames (K, H, W, 3) and their names from a video or image folder: the frames named
    in the list file `frames_from`, or K evenly spaced frames when `frames` is given (default:
    all, at most 60). Only the kept frames are read (a folder opens only their files; a video
    grabs the others without converting them), and the log says which were kept. A folder's
    frames are named by their files (natural order), a video's `frame_NNNNN.png` by decode
    index. Raises FrameReadError (unreadable file, mixed sizes, missing path) or
    ReconstructionError (fewer than 3 frames, a listed frame that does not exist)."""
    from flow3r_jax.data.frames import FrameReadError, count_video_frames, even_indices, list_images, probe_video, read_image_folder, read_video

    if frames is not None and frames < MIN_FRAMES:
        raise ReconstructionError(f"--frames {frames}: at least {MIN_FRAMES} frames are needed")
    if frames_from is not None:
        if frames is not None:
            raise ReconstructionError("--frames and --frames_from exclude each other")
        if not os.path.exists(path):
            raise FrameReadError(f"{path}: no such file or directory")
        images, names = _select_listed(path, frames_from)
        if len(images) < MIN_FRAMES:
            raise ReconstructionError(f"--frames_from {frames_from}: {len(images)} frame(s) listed, at least {MIN_FRAMES} are needed")
        return images, names
    want = frames if frames is not None else DEFAULT_MAX_FRAMES
    if os.path.isdir(path):
        count = len(list_images(path))
        kept = even_indices(count, want)
        images, _, names = read_image_folder(path, indices=kept) if count else read_image_folder(path)
    elif os.path.isfile(path):
        claimed = probe_video(path).num_frames
        count = claimed if claimed > 0 else count_video_frames(path)
        kept = even_indices(count, want)
        try:
            # One more than wanted when all are wanted: a container that understates its length
            # shows itself without the whole video being held.
            images, _ = read_video(path, indices=kept) if count > want else read_video(path, max_frames=want + 1)
        except FrameReadError:
            if count <= want:
                raise
            images = None  # the container overstates its length
        if images is None or len(images) > want:
            count = count_video_frames(path)
            kept = even_indices(count, want)
            images, _ = read_video(path, indices=kept)
        kept = kept[: len(images)]
        names = [_video_frame_name(i) for i in kept]
    else:
        raise FrameReadError(f"{path}: no such file or directory")
    _log_kept(path, kept, count)
    if len(images) < MIN_FRAMES:
        raise ReconstructionError(f"{path}: {len(images)} frame(s) read, at least {MIN_FRAMES} are needed")
    return images, list(names)


def reconstruct(
    input_path: str,
    out_dir: str,
    checkpoint: str | None = None,
    refine: bool = False,
    frames: int | None = None,
    steps: int = 2000,
    init: str = "pretrained",
    pixels: int = 43_200,
    model_size: str = "large",
    explicit: bool = False,
    progress: bool = True,
    reference_poses=None,
    ff_pixels: int = 255_000,
    frames_from: str | None = None,
    flowmap: dict | None = None,
    stop: StopRequest | None = None,
    method: str = "default",
    tracks4d_size: str = "small",
    tracks4d_init: str | None = None,
    focal: str | float = "auto",
    sfm: str = "auto",
    dense: str = "flow",
) -> dict:
    """The command as a function: checks the options and `out_dir` (`check_options`), reads the
    frames, reconstructs and writes the outputs (`export.outputs.write_outputs`). Returns the
    written paths and the run summary (`info["partial"]` when `stop` ended the optimisation
    early). `flowmap`: further `FlowMapConfig` fields of the per-scene optimisation; `focal`: how
    it finds the focal length (one of FOCAL_MODES or pixels, `reconstruction.run_flowmap`); `sfm`:
    "auto" (poses and focal from the sparse solver where it succeeds) or "off" (one of SFM_MODES);
    `dense`: where the solver succeeds, the depth maps triangulated from the flow ("flow",
    `reconstruction.run_flow_depth`) or FlowMap's ("flowmap", `--steps` steps). Raises
    Interrupted when `stop` is set before anything worth writing exists (nothing is written)."""
    from flow3r_jax.export.outputs import write_outputs

    check_options(input_path, out_dir, checkpoint, refine, frames, steps, init, pixels, model_size, explicit, ff_pixels, frames_from, flowmap)
    if method not in METHODS:
        raise ReconstructionError(f"--method {method!r}: expected one of {', '.join(METHODS)}")
    if isinstance(focal, str):
        try:
            focal = _focal_option(focal)  # a mode, or a number written as text
        except argparse.ArgumentTypeError as err:
            raise ReconstructionError(f"focal {err}") from None
    if not isinstance(focal, str) and not (isinstance(focal, (int, float)) and math.isfinite(focal) and focal > 0):
        raise ReconstructionError(f"focal {focal!r}: expected one of {', '.join(FOCAL_MODES)} or a positive focal length in pixels")
    if sfm not in SFM_MODES:
        raise ReconstructionError(f"--sfm {sfm!r}: expected one of {', '.join(SFM_MODES)}")
    if dense not in DENSE_MODES:
        raise ReconstructionError(f"--dense {dense!r}: expected one of {', '.join(DENSE_MODES)}")
    if steps == 0 and (method != "default" or checkpoint is not None or sfm != "auto" or explicit or dense != "flow"):
        raise ReconstructionError("--steps 0 writes the sparse solver's poses and points alone: it takes no --checkpoint, --method tracks4d, --sfm off, --dense flowmap or --explicit_depth")
    if method == "tracks4d" and (checkpoint is not None or explicit or flowmap):
        raise ReconstructionError("--method tracks4d takes no --checkpoint, --refine, --explicit_depth or flowmap --config (use --tracks4d_init WORKDIR for trained weights)")
    if tracks4d_init is not None and not os.path.exists(tracks4d_init):
        raise ReconstructionError(f"--tracks4d_init {tracks4d_init}: no such file or directory")
    from flow3r_jax.jit_cache import COUNTER

    stop = stop or StopRequest()
    cache0 = COUNTER.snapshot()
    t_read = time.time()
    images, names = read_input_frames(input_path, frames, frames_from)
    t_read = time.time() - t_read
    H0, W0 = images.shape[1:3]
    log.info("input: %s, %d frames of %dx%d", input_path, len(images), H0, W0)
    stop.check("after reading the frames")
    if method == "tracks4d":
        rec = run_tracks4d(images, steps, pixels, tracks4d_size, tracks4d_init, progress=progress, stop=stop)
    elif checkpoint is not None:
        rec = run_feedforward(images, checkpoint, model_size, ff_pixels)
        if refine:
            ff = rec
            if stop():
                rec.info["partial"] = dict(stopped_by=stop.name, steps_done=0, steps=steps, stage="before --refine: the feed-forward result, unrefined")
                log.warning("reconstruct: stopped by %s before --refine; writing the feed-forward result, marked partial", stop.name)
            else:
                rec = run_flowmap(images, steps, init, pixels, base_depth=ff.depth, base_grid=ff.grid, explicit=explicit, progress=progress, flowmap=flowmap, stop=stop, focal=focal, sfm=sfm)
                rec.info["feedforward"] = ff.info
    elif steps == 0:
        rec = run_sparse(images, pixels, focal, stop=stop)
    else:
        rec, solved = None, None
        if sfm == "auto" and dense == "flow" and not explicit:  # the solver's cameras, the flow's depth
            solved = solve_sparse(images, focal)
            stop.check("after the sparse solver")
            if solved[0] is not None and solved[0].info.get("route") == "rotation":
                # A camera that only rotates: no baseline to triangulate the flow from.
                log.info("reconstruct: the camera only rotates, so depth is not observable; FlowMap's per-scene optimisation gives the depth maps (%d steps) with the solver's cameras", steps)
            elif solved[0] is not None:
                rec = run_flow_depth(images, solved, pixels, stop=stop)
            else:
                log.info("reconstruct: FlowMap's per-scene optimisation for the poses and the depth (%d steps)", steps)
        if rec is None:
            rec = run_flowmap(images, steps, init, pixels, explicit=explicit, progress=progress, flowmap=flowmap, stop=stop, focal=focal, sfm=sfm, sfm_result=solved)
    cache = rec.info["compilation_cache"] = COUNTER.since(cache0)
    if cache["dir"]:
        log.info("compilation cache %s: %d programs loaded, %d compiled and stored", cache["dir"], cache["loaded"], cache["stored"])
    sources = [os.path.join(input_path, n) for n in names] if os.path.isdir(input_path) else None
    summary = dict(input=os.path.abspath(input_path), checkpoint=checkpoint)
    timing = rec.info.setdefault("timing", {})
    timing["read"] = round(t_read, 2)
    t_export = time.time()
    paths = write_outputs(out_dir, names, images, rec, reference_poses, sources=sources, summary=summary)
    timing["export"] = round(time.time() - t_export, 2)  # in the returned record only (the files are written by then)
    return dict(paths=paths, info={k: v for k, v in rec.info.items() if k != "history"}, poses=rec.poses, K_model=rec.K_model, input_size=(H0, W0))


# -------------------------------------------------------------------------------- demo


def run_demo(out_dir: str, steps: int = 1000, frames: int = 16, init: str = "pretrained", explicit: bool = False, progress: bool = True, stop: StopRequest | None = None, dense: str = "flow") -> dict:
    """Renders a synthetic room video, reconstructs it (`reconstruct`'s defaults: the sparse
    solver's cameras and the flow's depth; with dense="flowmap" or `explicit`, FlowMap's
    per-scene optimiser from initialisation `init` for `steps` steps) and prints the errors
    against the exact ground truth."""
    from data_pipelines.synthetic import SceneConfig, generate_clip
    from data_pipelines.synthetic.video import write_video

    from flow3r_jax.flowmap.metrics import focal_error, trajectory_errors

    os.makedirs(out_dir, exist_ok=True)
    cfg = SceneConfig(height=160, width=224, frames=frames, dynamic=False, preset="orbit", kind="room", offsets=(1,), flow_px=(4.0, 8.0))
    t0 = time.time()
    clip = generate_clip(cfg, seed=7)
    video = os.path.join(out_dir, "synthetic_room.mp4")
    write_video(video, clip["images"], 30.0)
    print(f"demo: rendered a synthetic room ({frames} frames, 160x224) to {video} in {time.time() - t0:.1f} s")
    result = reconstruct(video, os.path.join(out_dir, "reconstruction"), steps=steps, init=init, explicit=explicit, progress=progress, reference_poses=clip["poses"], stop=stop, dense=dense)
    err = trajectory_errors(result["poses"], clip["poses"])
    with open(result["paths"]["cameras"]) as f:
        f_est = json.load(f)["frames"][0]["fx"]  # pixels of the input video (160x224)
    f_gt = float(clip["intrinsics"][0, 0, 0])
    summary = dict(
        ate_rel=round(err["ate_rel"], 4),
        rot_err_deg=round(err["rot_err_deg"], 3),
        focal_px=round(float(f_est), 2),
        focal_px_gt=round(f_gt, 2),
        focal_err=round(focal_error(f_est, f_gt), 4),
        seconds=result["info"].get("seconds"),
        poses_from=result["info"].get("poses_from"),
        depth_from=result["info"].get("depth_from", "flowmap"),
    )
    print("demo: " + json.dumps(summary))
    print("demo: outputs:")
    for k, v in result["paths"].items():
        print(f"  {k:8s} {v}")
    return summary


def _split_config_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the config's arguments: `--config[=]FILE[:OPTIONS]`, `--config.x[=]y`; the rest)."""
    config_args, rest = [], []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--config" or (a.startswith("--config.") and "=" not in a):
            config_args.append(f"{a}={argv[i + 1]}" if i + 1 < len(argv) else a)
            i += 2
            continue
        (config_args if a.startswith(("--config=", "--config.")) else rest).append(a)
        i += 1
    return config_args, rest


def _read_config(config_args: list[str]) -> tuple[dict, dict]:
    """(argparse defaults, FlowMapConfig fields) from a configs/flowmap.py-style config file,
    parsed with ml_collections' own `--config` flag so that overrides behave as in launch.train."""
    from absl import flags
    from ml_collections import config_flags

    argv = ["reconstruct", *config_args]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "configs/flowmap.py[:OPTIONS]", flag_values=fv, lock_config=True, sys_argv=argv)
    fv(argv)
    c = fv.config
    if c is None:
        raise ReconstructionError("--config.x=y overrides need --config FILE")
    if c.depth not in ("cnn", "explicit"):
        raise ReconstructionError(f"config depth={c.depth!r}: expected 'cnn' or 'explicit'")
    defaults = dict(
        input=c.input or None, out=c.out or None, checkpoint=c.checkpoint or None, model_size=c.model_size, refine=bool(c.refine),
        frames=c.frames or None, frames_from=c.frames_from or None, steps=int(c.steps), init=c.init, explicit_depth=c.depth == "explicit",
        pixels=int(c.pixels), ff_pixels=int(c.ff_pixels), no_progress=not c.progress,
    )
    fields = c.flowmap.to_dict()
    if fields.get("focal_regression_after") == 0:  # the config's spelling of None
        fields["focal_regression_after"] = None
    return defaults, fields


def build_parser():
    """The command line (`flow3r_jax.cli` style: --snake_case, --kebab-case aliases)."""
    from flow3r_jax.cli import ArgumentParser

    p = ArgumentParser(module="flow3r_jax.reconstruct", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", help="video file or image folder (natural order: frame2.png before frame10.png)")
    p.add_argument("--out", help="output directory: new, empty, or one an earlier reconstruct wrote (its files are replaced)")
    p.add_argument("--checkpoint", default=None, help="Flow3r checkpoint (official .bin / .safetensors, a save_pretrained directory, or a launch.train workdir or step directory): run the feed-forward model")
    p.add_argument("--model_size", default="large", choices=MODEL_SIZES, help="model size of a state-dict checkpoint (default large)")
    p.add_argument("--refine", action="store_true", help="with --checkpoint: refine with the per-scene optimiser")
    p.add_argument("--frames", type=_int_option("frames"), default=None, metavar="N", help=f"use N >= {MIN_FRAMES} evenly spaced frames, reading only those (default: all, at most {DEFAULT_MAX_FRAMES})")
    p.add_argument("--frames_from", default=None, metavar="LIST", help="use the frames named in LIST (one per line or a JSON list: image file names of a folder, or frame indices of a video), e.g. the frame list launch.eval saved")
    p.add_argument("--steps", type=_int_option("steps"), default=2000, help="FlowMap's optimisation steps where it runs (--sfm off, --dense flowmap, or a clip the sparse solver refuses; default 2000, FlowMap's); 0: the sparse solver's poses and points alone, in seconds (no dense depth)")
    p.add_argument("--init", default="pretrained", help="'pretrained' (shipped, default), 'random', or an initialisation .npz")
    p.add_argument("--explicit_depth", action="store_true", help="per-pixel depth (FlowMap's ablation) instead of the CNN")
    p.add_argument("--converge", type=_int_option("converge"), default=0, metavar="W", help="end the optimisation once its loss has levelled off: the mean of the last W steps within 0.5%% of the W before (after the free-focal switch); 0 (default): all --steps")
    p.add_argument("--focal", type=_focal_option, default="auto", metavar="MODE|PX", help="focal length: a known focal in pixels of the input frames (held fixed by the sparse solver and FlowMap), or, for FlowMap when the sparse solver supplies none (--sfm off, or it refused the clip): auto (default: from the flow's rotation where the camera mostly rotates, else FlowMap's soft-min), softmin (FlowMap's), rotation (always the rotation-only fit)")
    p.add_argument("--sfm", default="auto", choices=SFM_MODES, help="auto (default): camera poses and focal from sparse structure from motion (SIFT tracks, a global or incremental start, bundle adjustment; seconds) where it succeeds, FlowMap's otherwise. off: FlowMap's poses, focal and depth")
    p.add_argument("--dense", default="flow", choices=DENSE_MODES, help="depth maps where the sparse solver succeeds: flow (default: triangulated from the optical flow of frame pairs up to 3 apart with the solver's cameras, in seconds; 0 where the flow does not determine it) or flowmap (FlowMap's per-scene optimisation, --steps steps, the solver's focal and principal point held fixed). Where the solver refuses the clip, FlowMap gives poses and depth either way")
    p.add_argument("--pixels", type=_int_option("pixels"), default=43_200, help=f"optimisation image area, >= {MINIMUM['pixels']} (default 43200 = 180x240)")
    p.add_argument("--ff_pixels", type=_int_option("ff_pixels"), default=255_000, help=f"feed-forward model input area, >= {MINIMUM['ff_pixels']} (official rule, default 255000)")
    p.add_argument("--method", default="default", choices=METHODS, help="default: FlowMap's optimisation or the --checkpoint model; tracks4d: TracksTo4D fitted to the clip's point tracks (--steps steps)")
    p.add_argument("--tracks4d_size", default="small", choices=("tiny", "small", "base"), help="TracksTo4D network size (base: the released one)")
    p.add_argument("--tracks4d_init", default=None, metavar="WORKDIR", help="a launch.train workdir of configs/tracks4d.py to fine-tune from (default: from scratch)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.add_argument("--jit_cache", default=None, metavar="DIR|off", help="keep compiled programs in DIR so that a later run of the same shapes skips compilation (default $FLOW3R_JIT_CACHE, $JAX_COMPILATION_CACHE_DIR or ~/.cache/flow3r_jax/jit; off: none)")
    p.add_argument("--demo", metavar="DIR", default=None, help="reconstruct a built-in synthetic video into DIR")
    p.add_argument("--demo_steps", type=_int_option("demo_steps"), default=1000, help="FlowMap's optimisation steps in --demo where it runs (the sparse solver refuses the demo's orbit; also --dense flowmap, --explicit_depth), >= 1 (default 1000)")
    p.add_argument("--config", metavar="FILE[:OPTIONS]", help="defaults of these options and the optimiser's settings from an ml_collections config (configs/flowmap.py), with --config.x=y overrides")
    return p


def main(argv=None) -> int:
    """The command line; returns the exit status: 0, 2 (bad options or input; argparse exits
    with 2 itself for malformed options), 130 / 143 (stopped by SIGINT / SIGTERM)."""
    p = build_parser()
    config_args, argv = _split_config_args(list(sys.argv[1:] if argv is None else argv))
    flowmap = None
    if config_args:
        try:
            defaults, flowmap = _read_config(config_args)
        except Exception as err:  # noqa: BLE001 - absl / ml_collections raise several kinds; all are usage errors
            p.error(f"--config: {err}")
        p.set_defaults(**defaults)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from flow3r_jax import jit_cache

    try:
        jit_cache.enable(args.jit_cache if args.jit_cache is not None else jit_cache.default_dir())
    except OSError as err:
        print(f"reconstruct: error: --jit_cache: {err}", file=sys.stderr)
        return 2
    stop = StopRequest()
    if args.demo is not None:
        # The demo takes --dense, --demo_steps, --init, --explicit_depth and --no_progress; refuse what it would ignore.
        ignored = ("input", "out", "checkpoint", "refine", "frames", "frames_from", "steps", "pixels", "ff_pixels", "model_size", "focal", "sfm")
        unused = ["--" + d for d in ignored if getattr(args, d) != p.get_default(d)]
        if unused:
            p.error(f"--demo renders its own 16-frame video and takes --dense, --demo_steps, --init, --explicit_depth and --no_progress; it does not take {', '.join(unused)}")
        with stop.installed():
            try:
                run_demo(args.demo, args.demo_steps, init=args.init, explicit=args.explicit_depth, progress=not args.no_progress, stop=stop, dense=args.dense)
            except Interrupted as err:
                print(f"reconstruct: {err}: nothing was written", file=sys.stderr)
        return 128 + stop.signum if stop() else 0
    if not args.input or not args.out:
        p.error("--input and --out are required (or --demo DIR)")
    if args.converge:
        if args.method == "tracks4d" or (args.checkpoint and not args.refine):
            p.error("--converge ends FlowMap's per-scene optimisation early; this run has none (--method tracks4d, or --checkpoint without --refine)")
        flowmap = {**(flowmap or {}), "converge_window": args.converge}
    if args.dense != "flow" and (args.method == "tracks4d" or args.checkpoint or args.sfm == "off"):
        p.error("--dense chooses the depth of the sparse solver's run; this run has none (--method tracks4d, --checkpoint or --sfm off)")
    if args.sfm != "auto" and (args.method == "tracks4d" or (args.checkpoint and not args.refine)):
        p.error("--sfm applies with FlowMap's per-scene optimisation; this run has none (--method tracks4d, or --checkpoint without --refine)")
    if args.focal != "auto" and (args.method == "tracks4d" or (args.checkpoint and not args.refine)):
        p.error("--focal sets the focal of FlowMap's per-scene optimisation; this run has none (--method tracks4d, or --checkpoint without --refine)")
    from flow3r_jax.data.frames import FrameReadError

    with stop.installed():
        try:
            result = reconstruct(
                args.input, args.out, args.checkpoint, args.refine, args.frames, args.steps, args.init, args.pixels,
                args.model_size, args.explicit_depth, not args.no_progress, ff_pixels=args.ff_pixels, frames_from=args.frames_from, flowmap=flowmap, stop=stop,
                method=args.method, tracks4d_size=args.tracks4d_size, tracks4d_init=args.tracks4d_init, focal=args.focal, sfm=args.sfm, dense=args.dense,
            )
        except (FrameReadError, ReconstructionError) as err:
            print(f"reconstruct: error: {err}", file=sys.stderr)
            return 2
        except Interrupted as err:
            print(f"reconstruct: {err}: nothing was written ({args.out} is as it was)", file=sys.stderr)
            return 128 + err.signum
    partial = result["info"].get("partial")
    if partial:
        print(f"reconstruct: stopped by {partial['stopped_by']} after {partial['steps_done']} of {partial['steps']} steps: wrote the state reached, marked partial (PARTIAL, summary.json)")
    elif stop():
        print(f"reconstruct: {stop.name} arrived after the work was done: the outputs are complete")
    print("reconstruct: wrote")
    for k, v in result["paths"].items():
        print(f"  {k:10s} {v}")
    return 128 + stop.signum if stop() else 0


if __name__ == "__main__":
    sys.exit(main())
