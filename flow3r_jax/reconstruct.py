"""`python -m flow3r_jax.reconstruct`: camera poses, intrinsics and a point cloud from a video or
an image folder.

    python -m flow3r_jax.reconstruct --input VIDEO_OR_FOLDER --out DIR
        [--checkpoint CKPT] [--refine] [--frames N] [--steps S]

- Without `--checkpoint` (or with `--refine`): FlowMap's per-scene optimisation
  (`flow3r_jax.flowmap`), started from the shipped pretrained depth-CNN initialisation
  (`--init random` for FlowMap's from-scratch setting, `--init FILE` for another), on frames
  resized to about `--pixels` pixels (both sides multiples of 16). Flow comes from the data
  pipeline's CPU teacher (OpenCV DIS); point tracks from `data_pipelines.tracks` when that
  module is available (otherwise the run has no track loss, and the log says so).
- With `--checkpoint`: the feed-forward Flow3r model (`flow3r_jax.models.pretrained`) on frames
  sized by the official rule; `--refine` then runs the per-scene optimisation around the
  model's depth (depth = model depth x exp(CNN output), the CNN's output layer starting at 0).

Outputs in DIR: `cameras.json` (per frame: image name, 4x4 camera-to-world, fx fy cx cy in
pixels of the input images), `sparse/0` (COLMAP model: cameras, images, points3D, binary),
`points.ply` (coloured point cloud), `trajectory.png`, `flowmap_history.json` (optimiser runs).

`--demo DIR` renders a built-in synthetic video (`data_pipelines.synthetic`), reconstructs it
and scores the result against the exact ground truth (`./run.sh demo`).

`--config configs/flowmap.py[:OPTIONS]` (with `--config.x=y` overrides) gives the defaults
of the options above and the per-scene optimiser's settings (`FlowMapConfig`); an option given
on the command line wins over the config.

Frames: `--frames N` takes N frames evenly spaced over the input (default: all, at most 60).
At least 3 frames are needed; unreadable files and folders with mixed image sizes are reported
with the offending file (`flow3r_jax.data.frames.FrameReadError`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import time

import numpy as np

__all__ = ["ReconstructionError", "read_input_frames", "flowmap_size", "reconstruct", "main"]

log = logging.getLogger("flow3r_jax.reconstruct")

MIN_FRAMES = 3
DEFAULT_MAX_FRAMES = 60


class ReconstructionError(ValueError):
    """The input cannot be reconstructed as asked (too few frames, bad options, ...)."""


# ------------------------------------------------------------------------------- input


def read_frame_list(list_path: str) -> list[str]:
    """The frames named by a list file: a JSON list, or one entry per line (blank lines and
    `#` comments skipped). Entries are image file names of a folder (with or without their
    extension) or frame indices of a video."""
    if not os.path.isfile(list_path):
        raise ReconstructionError(f"--frames-from {list_path}: no such file")
    with open(list_path) as f:
        text = f.read()
    if text.lstrip().startswith("["):
        try:
            entries = [str(e) for e in json.loads(text)]
        except json.JSONDecodeError as e:
            raise ReconstructionError(f"--frames-from {list_path}: not a valid JSON list ({e})") from e
    else:
        entries = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
        entries = [e for e in entries if e]
    if len(entries) != len(set(entries)):
        raise ReconstructionError(f"--frames-from {list_path}: frames listed twice")
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
            raise ReconstructionError(f"--frames-from {list_path}: {len(missing)} listed frame(s) not in {path}: {missing[:5]}")
        chosen = [by_name[os.path.basename(e)] for e in entries]
        images = [read_image(f) for f in chosen]
        if len({im.shape for im in images}) > 1:
            raise ReconstructionError(f"{path}: the listed frames have different sizes")
        return np.stack(images), [os.path.basename(f) for f in chosen]
    bad = [e for e in entries if not e.isdigit()]
    if bad:
        raise ReconstructionError(f"--frames-from {list_path}: a video's frames are listed by index, got {bad[:5]}")
    indices = [int(e) for e in entries]
    images, _, _ = read_frames(path, indices=indices)
    if len(images) != len(indices):
        raise ReconstructionError(f"--frames-from {list_path}: {path} has no frame(s) {sorted(set(indices))[len(images):][:5]}")
    return images, [f"frame_{i:05d}" for i in indices]


def read_input_frames(path: str, frames: int | None = None, frames_from: str | None = None) -> tuple[np.ndarray, list[str]]:
    """uint8 frames (K, H, W, 3) and their names from a video or image folder: the frames named
    in the list file `frames_from`, or K evenly spaced frames when `frames` is given (default:
    all, at most 60). Raises FrameReadError (unreadable file, mixed sizes, missing path) or
    ReconstructionError (fewer than 3 frames, a listed frame that does not exist)."""
    from flow3r_jax.data.frames import FrameReadError, probe_video, read_frames, read_image_folder

    if frames is not None and frames < MIN_FRAMES:
        raise ReconstructionError(f"--frames {frames}: at least {MIN_FRAMES} frames are needed")
    if frames_from is not None:
        if frames is not None:
            raise ReconstructionError("--frames and --frames-from exclude each other")
        if not os.path.exists(path):
            raise FrameReadError(f"{path}: no such file or directory")
        images, names = _select_listed(path, frames_from)
        if len(images) < MIN_FRAMES:
            raise ReconstructionError(f"--frames-from {frames_from}: {len(images)} frame(s) listed, at least {MIN_FRAMES} are needed")
        return images, names
    want = frames if frames is not None else DEFAULT_MAX_FRAMES
    if os.path.isdir(path):
        images, _, names = read_image_folder(path)
        if len(images) > want:
            keep = np.unique(np.round(np.linspace(0, len(images) - 1, want)).astype(int))
            images, names = images[keep], [names[k] for k in keep]
    elif os.path.isfile(path):
        try:
            count = probe_video(path).num_frames
        except FrameReadError:
            raise
        if count > want:
            indices = np.unique(np.round(np.linspace(0, count - 1, want)).astype(int))
            try:
                images, _, names = read_frames(path, indices=indices.tolist())
            except FrameReadError:  # the container's frame count may overstate the stream
                images, _, names = read_frames(path)
                keep = np.unique(np.round(np.linspace(0, len(images) - 1, want)).astype(int))
                images, names = images[keep], [names[k] for k in keep]
            else:
                names = [f"frame_{i:05d}" for i in indices]
        else:
            images, _, names = read_frames(path)
    else:
        raise FrameReadError(f"{path}: no such file or directory")
    if len(images) < MIN_FRAMES:
        raise ReconstructionError(f"{path}: {len(images)} frame(s) read, at least {MIN_FRAMES} are needed")
    return images, list(names)


def flowmap_size(height: int, width: int, pixels: int = 43_200, multiple: int = 16) -> tuple[int, int]:
    """Optimisation size: about `pixels` pixels (FlowMap's default is 180 x 240) with the input's
    aspect ratio, both sides rounded to multiples of 16, never larger than the input."""
    scale = min(1.0, math.sqrt(pixels / (height * width)))
    h = max(multiple, int(round(height * scale / multiple)) * multiple)
    w = max(multiple, int(round(width * scale / multiple)) * multiple)
    return h, w


def _consecutive_teacher_flows(frames: np.ndarray):
    from data_pipelines.flow_teacher import DISTeacher, compute_pair_flows  # the data pipeline's CPU teacher

    K = len(frames)
    pairs = np.array([(i, i + 1) for i in range(K - 1)] + [(i + 1, i) for i in range(K - 1)], np.int32)
    flows = compute_pair_flows(DISTeacher("medium"), frames, pairs).flow
    return flows[: K - 1], flows[K - 1 :], "opencv-dis-medium"


def _tracks(frames, flow_fw, flow_bw):
    try:
        from data_pipelines.tracks import compute_tracks
    except ImportError:
        log.info("tracks: data_pipelines.tracks is not available; running without the track loss")
        return None
    try:
        tracks = compute_tracks(frames, flows_fw=flow_fw, flows_bw=flow_bw)
    except Exception as err:  # noqa: BLE001 - tracks are optional: report and continue
        log.warning("tracks: compute_tracks failed (%s: %s); running without the track loss", type(err).__name__, err)
        return None
    log.info("tracks: %d tracks over %d frames", tracks.xy.shape[1], tracks.xy.shape[0])
    return tracks


# --------------------------------------------------------------------------- backends


@dataclasses.dataclass
class Reconstruction:
    """poses (K, 4, 4) camera-to-world (frame 0 = identity); K_model (3, 3) intrinsics on the
    model grid; depth (K, h, w) on the model grid; colors (K, h, w, 3) uint8 on the model grid;
    info: what ran."""

    poses: np.ndarray
    K_model: np.ndarray
    depth: np.ndarray
    colors: np.ndarray
    info: dict


def run_flowmap(frames: np.ndarray, steps: int = 2000, init: str = "pretrained", pixels: int = 43_200, base_depth=None, explicit: bool = False, seed: int = 0, progress: bool = True, flowmap: dict | None = None) -> Reconstruction:
    """The per-scene optimisation on uint8 frames (K, H, W, 3) (see the module docstring).
    `flowmap`: further `FlowMapConfig` fields (e.g. from `--config configs/flowmap.py`)."""
    import jax

    from flow3r_jax.data.frames import resize_frames
    from flow3r_jax.flowmap import FlowMapConfig, init_params, load_init, make_scene_inputs, optimize_scene
    from flow3r_jax.flowmap.weights import DEFAULT_INIT

    K, H0, W0 = frames.shape[:3]
    h, w = flowmap_size(H0, W0, pixels)
    small = resize_frames(frames, (h, w))
    t0 = time.time()
    flow_fw, flow_bw, teacher = _consecutive_teacher_flows(small)
    log.info("flow: %s on %d pairs at %dx%d (%.1f s)", teacher, 2 * (K - 1), h, w, time.time() - t0)
    tracks = _tracks(small, flow_fw, flow_bw)
    if base_depth is not None:
        base_depth = np.maximum(_resize_maps(base_depth, (h, w)), 1e-3)
    inputs = make_scene_inputs(small, flow_fw, flow_bw, tracks=tracks, base_depth=base_depth)
    progress_every = 10 if progress else 0
    fields = dict(flowmap or {}, steps=steps, progress_every=progress_every)
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
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc="flowmap", unit="step", file=sys.stderr, dynamic_ncols=True)

    def report(step, loss):
        if bar is not None:
            bar.n = step + 1
            bar.set_postfix(loss=f"{loss:.4f}")
            bar.refresh()

    t0 = time.time()
    result = optimize_scene(inputs, cfg, params, key=seed, progress=report)
    result = jax.device_get(result)
    if bar is not None:
        bar.close()
    seconds = time.time() - t0
    info = dict(
        backend="flowmap",
        init=init_name,
        steps=steps,
        size=[h, w],
        teacher=teacher,
        tracks=tracks is not None,
        refine=base_depth is not None,
        seconds=round(seconds, 1),
        focal_flowmap_units=float(result.focal),
        final_loss=float(result.history.loss[-1]),
        history={k: np.asarray(v).tolist() for k, v in result.history._asdict().items() if k != "poses"},
    )
    log.info("flowmap: %d steps in %.1f s, final loss %.5f, focal %.4f (f_px/sqrt(HW))", steps, seconds, info["final_loss"], info["focal_flowmap_units"])
    return Reconstruction(np.asarray(result.poses, np.float64), np.asarray(result.intrinsics, np.float64), np.asarray(result.depth), small, info)


def _resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    h, w = size
    return np.stack([cv2.resize(np.asarray(m, np.float32), (w, h), interpolation=cv2.INTER_LINEAR) for m in maps])


def run_feedforward(frames: np.ndarray, checkpoint: str, size: str = "large", max_pixels: int = 255_000) -> Reconstruction:
    """The Flow3r model on frames sized by the official rule: poses from its camera head
    (re-expressed with frame 0 at the origin), one shared focal fitted to its local points."""
    import jax.numpy as jnp

    from flow3r_jax.data.frames import official_target_size, resize_frames
    from flow3r_jax.geometry import focal_from_pointmap, relative_pose
    from flow3r_jax.models.inference import Predictor
    from flow3r_jax.models.pretrained import load_pretrained

    K, H0, W0 = frames.shape[:3]
    h, w = official_target_size(H0, W0, max_pixels)
    small = resize_frames(frames, (h, w))
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
    return Reconstruction(poses, Km, depth, small, info)


# ----------------------------------------------------------------------------- outputs


def _camera_for_input(K_model: np.ndarray, model_size, input_size):
    from flow3r_jax.flowmap.export import CameraModel

    (h, w), (H0, W0) = model_size, input_size
    sx, sy = W0 / w, H0 / h
    return CameraModel(width=W0, height=H0, fx=K_model[0, 0] * sx, fy=K_model[1, 1] * sy, cx=K_model[0, 2] * sx, cy=K_model[1, 2] * sy)


def _point_cloud(rec: Reconstruction, input_size, stride: int = 2, max_colmap_points: int = 50_000, seed: int = 0):
    """World points of every `stride`-th pixel of every frame (depth edges dropped), their
    colours, and their observations in input-image pixels."""
    import jax.numpy as jnp

    from flow3r_jax.geometry import depth_edge, pixel_grid, transform_points, unproject_depth

    K, h, w = rec.depth.shape
    depth = jnp.asarray(rec.depth, jnp.float32)
    cam = unproject_depth(depth, jnp.asarray(rec.K_model, jnp.float32))
    world = np.asarray(transform_points(jnp.asarray(rec.poses, jnp.float32), cam))
    keep = ~np.asarray(depth_edge(depth, rtol=0.05)) & (np.asarray(depth) > 0)
    sel = np.zeros_like(keep)
    sel[:, stride // 2 :: stride, stride // 2 :: stride] = True
    keep &= sel
    frame, rows, cols = np.nonzero(keep)
    pts = world[frame, rows, cols]
    colors = rec.colors[frame, rows, cols]
    H0, W0 = input_size
    xy = np.asarray(pixel_grid(h, w))[rows, cols] * np.array([W0 / w, H0 / h])
    ok = np.all(np.isfinite(pts), axis=-1)
    pts, colors, frame, xy = pts[ok], colors[ok], frame[ok], xy[ok]
    sub = np.arange(len(pts))
    if len(sub) > max_colmap_points:
        sub = np.sort(np.random.default_rng(seed).choice(len(pts), max_colmap_points, replace=False))
    return pts, colors, (frame[sub], xy[sub], sub)


def write_outputs(out_dir: str, names: list[str], input_size, rec: Reconstruction, reference_poses=None) -> dict[str, str]:
    """Writes cameras.json, sparse/0, points.ply, trajectory.png (and the optimiser history)."""
    from flow3r_jax.flowmap.export import write_cameras_json, write_colmap_model
    from flow3r_jax.flowmap.ply import write_ply

    os.makedirs(out_dir, exist_ok=True)
    model_size = rec.depth.shape[1:3]
    camera = _camera_for_input(rec.K_model, model_size, input_size)
    paths = {}
    extra = {k: v for k, v in rec.info.items() if k != "history"}
    paths["cameras"] = os.path.join(out_dir, "cameras.json")
    write_cameras_json(paths["cameras"], names, rec.poses, camera, {"run": extra})
    pts, colors, (obs_img, obs_xy, sub) = _point_cloud(rec, input_size)
    paths["colmap"] = os.path.join(out_dir, "sparse", "0")
    write_colmap_model(paths["colmap"], names, rec.poses, camera, pts[sub], colors[sub], (obs_img, obs_xy))
    paths["ply"] = os.path.join(out_dir, "points.ply")
    write_ply(paths["ply"], pts, colors)
    # Per-frame depth for scoring (launch.eval --predictions): z-depth on the model grid, the
    # intrinsics of that grid, the frame names and the input size.
    paths["depth"] = os.path.join(out_dir, "depth.npz")
    np.savez_compressed(paths["depth"], depth=np.asarray(rec.depth, np.float32), K=np.asarray(rec.K_model, np.float64), names=np.asarray(names), input_size=np.asarray(input_size))
    if "history" in rec.info:
        paths["history"] = os.path.join(out_dir, "flowmap_history.json")
        with open(paths["history"], "w") as f:
            json.dump(rec.info["history"], f)
    try:
        from flow3r_jax.flowmap.plot import plot_trajectory

        paths["plot"] = os.path.join(out_dir, "trajectory.png")
        plot_trajectory(paths["plot"], rec.poses, reference_poses, title=f"{rec.info['backend']}: {len(names)} frames")
    except ImportError:
        log.warning("matplotlib is not installed (pip install flow3r_jax[viz]); no trajectory plot")
    return paths


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
) -> dict:
    """The command as a function: returns the written paths and the run summary. `flowmap`:
    further `FlowMapConfig` fields of the per-scene optimisation."""
    if refine and checkpoint is None:
        raise ReconstructionError("--refine needs --checkpoint (it refines the feed-forward model's depth)")
    images, names = read_input_frames(input_path, frames, frames_from)
    H0, W0 = images.shape[1:3]
    log.info("input: %s, %d frames of %dx%d", input_path, len(images), H0, W0)
    if checkpoint is not None:
        rec = run_feedforward(images, checkpoint, model_size, ff_pixels)
        if refine:
            ff = rec
            rec = run_flowmap(images, steps, init, pixels, base_depth=ff.depth, explicit=explicit, progress=progress, flowmap=flowmap)
            rec.info["feedforward"] = ff.info
    else:
        rec = run_flowmap(images, steps, init, pixels, explicit=explicit, progress=progress, flowmap=flowmap)
    paths = write_outputs(out_dir, names, (H0, W0), rec, reference_poses)
    return dict(paths=paths, info={k: v for k, v in rec.info.items() if k != "history"}, poses=rec.poses, K_model=rec.K_model, input_size=(H0, W0))


# -------------------------------------------------------------------------------- demo


def run_demo(out_dir: str, steps: int = 1000, frames: int = 16, init: str = "pretrained", explicit: bool = False, progress: bool = True) -> dict:
    """Renders a synthetic room video, reconstructs it (per-scene optimiser, initialisation
    `init`, `steps` steps) and prints the errors against the exact ground truth."""
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
    result = reconstruct(video, os.path.join(out_dir, "reconstruction"), steps=steps, init=init, explicit=explicit, progress=progress, reference_poses=clip["poses"])
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m flow3r_jax.reconstruct", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", help="video file or image folder")
    p.add_argument("--out", help="output directory")
    p.add_argument("--checkpoint", default=None, help="Flow3r checkpoint (official .bin / .safetensors, a save_pretrained directory, or a launch.train workdir or step directory): run the feed-forward model")
    p.add_argument("--model-size", default="large", help="model size of a state-dict checkpoint (default large)")
    p.add_argument("--refine", action="store_true", help="with --checkpoint: refine with the per-scene optimiser")
    p.add_argument("--frames", type=int, default=None, help=f"use N evenly spaced frames (default: all, at most {DEFAULT_MAX_FRAMES})")
    p.add_argument("--frames-from", default=None, metavar="LIST", help="use the frames named in LIST (one per line or a JSON list: image file names of a folder, or frame indices of a video), e.g. the frame list launch.eval saved")
    p.add_argument("--steps", type=int, default=2000, help="optimisation steps (default 2000, FlowMap's)")
    p.add_argument("--init", default="pretrained", help="'pretrained' (shipped, default), 'random', or an initialisation .npz")
    p.add_argument("--explicit-depth", action="store_true", help="per-pixel depth (FlowMap's ablation) instead of the CNN")
    p.add_argument("--pixels", type=int, default=43_200, help="optimisation image area (default 43200 = 180x240)")
    p.add_argument("--ff-pixels", type=int, default=255_000, help="feed-forward model input area (official rule, default 255000)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--demo", metavar="DIR", default=None, help="reconstruct a built-in synthetic video into DIR")
    p.add_argument("--demo-steps", type=int, default=1000, help="optimisation steps of --demo (default 1000)")
    p.add_argument("--config", metavar="FILE[:OPTIONS]", help="defaults of these options and the optimiser's settings from an ml_collections config (configs/flowmap.py), with --config.x=y overrides")
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
    if args.demo is not None:
        # The demo takes --init, --explicit-depth and --no-progress; refuse what it would ignore.
        ignored = ("input", "out", "checkpoint", "refine", "frames", "frames_from", "steps", "pixels", "ff_pixels", "model_size")
        unused = ["--" + d.replace("_", "-") for d in ignored if getattr(args, d) != p.get_default(d)]
        if unused:
            p.error(f"--demo renders its own 16-frame video and takes --demo-steps, --init, --explicit-depth and --no-progress; it does not take {', '.join(unused)}")
        run_demo(args.demo, args.demo_steps, init=args.init, explicit=args.explicit_depth, progress=not args.no_progress)
        return 0
    if not args.input or not args.out:
        p.error("--input and --out are required (or --demo DIR)")
    from flow3r_jax.data.frames import FrameReadError

    try:
        result = reconstruct(
            args.input, args.out, args.checkpoint, args.refine, args.frames, args.steps, args.init, args.pixels,
            args.model_size, args.explicit_depth, not args.no_progress, ff_pixels=args.ff_pixels, frames_from=args.frames_from, flowmap=flowmap,
        )
    except (FrameReadError, ReconstructionError) as err:
        print(f"reconstruct: error: {err}", file=sys.stderr)
        return 2
    print("reconstruct: wrote")
    for k, v in result["paths"].items():
        print(f"  {k:8s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
