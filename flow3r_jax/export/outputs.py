"""The files `reconstruct` writes for one reconstruction, for the tools people use next.

    OUT/images/<name>          the frames used: a folder's own files (copied as they are), or
                               a video's frames as lossless PNG (frame_00012.png = decode index 12)
    OUT/cameras.json           per frame: image name, 4x4 camera-to-world (OpenCV axes), fx fy cx cy
    OUT/transforms.json        nerfstudio: OpenGL camera axes, fl_x fl_y cx cy w h, OPENCV model
    OUT/sparse/0/              COLMAP model (binary); image names resolve in OUT/images
    OUT/points.ply             coloured point cloud
    OUT/depth/<stem>.npy       per frame: z-depth, float32 (h, w) on the optimisation grid, in the
                               units of the camera positions (the reconstruction's own scale)
    OUT/depth.npz              every depth map at once, with the grid's intrinsics (launch.eval)
                               and where the grid sits in the input frames: x_grid = scale *
                               x_input - offset (one scale for both axes and a centred crop)
    OUT/flowmap_history.json   per-step losses and focal of the per-scene optimisation
    OUT/trajectory.png         the camera path (needs matplotlib)
    OUT/summary.json           the run: status "complete" or "partial", steps done, the files
    OUT/PARTIAL                only when the run was stopped early: at which step, and why

Everything is written into a staging folder first and then replaces the previous run's files
(`export.outdir`), so a reused directory holds no stale file of another run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np

from flow3r_jax.export import outdir

__all__ = ["camera_for_input", "point_cloud", "write_outputs", "DEPTH_FORMAT"]

log = logging.getLogger("flow3r_jax.reconstruct")

DEPTH_FORMAT = "float32 .npy, z-depth along the camera's optical axis in the reconstruction's units (those of the camera positions), on the optimisation grid (h x w): the image scaled by one factor for both axes and cropped about its centre to h x w (depth.npz holds scale and offset: x_grid = scale * x_image - offset)"


def camera_for_input(K_model: np.ndarray, grid):
    """The pinhole camera in pixels of the input images, from intrinsics on the model grid
    (`grid`: a `data.frames.ModelGrid`, one scale and a crop, so fx = fy stays so)."""
    from flow3r_jax.export.formats import CameraModel

    H0, W0 = grid.input_size
    K = grid.intrinsics_to_input(K_model)
    return CameraModel(width=W0, height=H0, fx=float(K[0, 0]), fy=float(K[1, 1]), cx=float(K[0, 2]), cy=float(K[1, 2]))


def point_cloud(rec, stride: int = 2, max_colmap_points: int = 50_000, seed: int = 0):
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
    xy = rec.grid.to_input(np.asarray(pixel_grid(h, w))[rows, cols])
    ok = np.all(np.isfinite(pts), axis=-1)
    pts, colors, frame, xy = pts[ok], colors[ok], frame[ok], xy[ok]
    sub = np.arange(len(pts))
    if len(sub) > max_colmap_points:
        sub = np.sort(np.random.default_rng(seed).choice(len(pts), max_colmap_points, replace=False))
    return pts, colors, (frame[sub], xy[sub], sub)


def _depth_names(names: list[str]) -> list[str]:
    stems = [os.path.splitext(n)[0] for n in names]
    return [f"{s}.npy" for s in stems] if len(set(stems)) == len(stems) else [f"{n}.npy" for n in names]


def _write_frames(folder: str, names: list[str], images: np.ndarray, sources: list[str] | None) -> None:
    import cv2

    os.makedirs(folder)
    for k, name in enumerate(names):
        dst = os.path.join(folder, name)
        if sources is not None:
            shutil.copyfile(sources[k], dst)
        elif not cv2.imwrite(dst, cv2.cvtColor(images[k], cv2.COLOR_RGB2BGR)):
            raise OSError(f"{dst}: could not be written")


def write_outputs(
    out_dir: str,
    names: list[str],
    images: np.ndarray,
    rec,
    reference_poses=None,
    sources: list[str] | None = None,
    summary: dict | None = None,
) -> dict[str, str]:
    """Writes the files of the module docstring for `rec` (poses, K_model, depth, colors, info;
    `info["partial"]` marks a stopped run) and returns their paths. `images` (K, H, W, 3) uint8
    are the input frames named `names`; `sources` their files (a folder's input: copied as
    they are) or None (written as PNG, so `names` must end in .png). `summary`: more fields
    for summary.json."""
    from flow3r_jax.export.formats import write_cameras_json, write_colmap_model, write_transforms_json
    from flow3r_jax.export.ply import write_ply

    input_size = tuple(images.shape[1:3])
    if tuple(rec.grid.input_size) != input_size or tuple(rec.grid.model_size) != tuple(rec.depth.shape[1:3]):
        raise ValueError(f"write_outputs: the reconstruction's grid {rec.grid} does not match its {input_size} input frames and {rec.depth.shape[1:3]} depth")
    camera = camera_for_input(rec.K_model, rec.grid)
    stage = outdir.staging_dir(out_dir)
    rel = {}
    at = lambda key, path: os.path.join(stage, rel.setdefault(key, path))  # noqa: E731
    run = {k: v for k, v in rec.info.items() if k != "history"}
    partial = rec.info.get("partial")

    _write_frames(at("images", "images"), names, images, sources)
    write_cameras_json(at("cameras", "cameras.json"), names, rec.poses, camera, {"run": run})
    depth_files = [f"depth/{d}" for d in _depth_names(names)]
    os.makedirs(at("depth_maps", "depth"))
    for k, d in enumerate(depth_files):
        np.save(os.path.join(stage, d), np.asarray(rec.depth[k], np.float32))
    write_transforms_json(
        at("transforms", "transforms.json"), [f"images/{n}" for n in names], rec.poses, camera, depth_files,
        {"depth_format": DEPTH_FORMAT, "depth_unit_scale_factor": 1.0},
    )
    # a backend with its own points (TracksTo4D: the 3D track points) gives them as `rec.cloud`
    cloud = getattr(rec, "cloud", None)
    pts, colors, (obs_img, obs_xy, sub) = cloud if cloud is not None else point_cloud(rec)
    write_colmap_model(at("colmap", "sparse/0"), names, rec.poses, camera, pts[sub], colors[sub], (obs_img, obs_xy))
    write_ply(at("ply", "points.ply"), pts, colors)
    # Per-frame depth for scoring (launch.eval --predictions): z-depth on the model grid, the
    # intrinsics of that grid, the frame names and the input size.
    np.savez_compressed(at("depth", "depth.npz"), depth=np.asarray(rec.depth, np.float32), K=np.asarray(rec.K_model, np.float64), names=np.asarray(names), input_size=np.asarray(input_size),
                        scale=np.float64(rec.grid.scale), offset=np.asarray(rec.grid.offset, np.float64))
    if "history" in rec.info:
        with open(at("history", "flowmap_history.json"), "w") as f:
            json.dump(rec.info["history"], f)
    try:
        from flow3r_jax.flowmap.plot import plot_trajectory

        title = f"{rec.info['backend']}: {len(names)} frames" + (f" (partial: {partial['steps_done']} of {partial['steps']} steps)" if partial else "")
        plot_trajectory(at("plot", "trajectory.png"), rec.poses, reference_poses, title=title)
    except ImportError:
        rel.pop("plot", None)
        log.warning("matplotlib is not installed (pip install flow3r_jax[viz]); no trajectory plot")
    if partial:
        with open(at("partial", "PARTIAL"), "w") as f:
            f.write(
                f"This reconstruction is partial: {partial['stopped_by']} stopped it after {partial['steps_done']} of "
                f"{partial['steps']} optimisation steps ({partial['stage']}). The files hold the state reached then.\n"
            )
    doc = dict(
        status="partial" if partial else "complete",
        stopped_by=partial["stopped_by"] if partial else None,
        steps_done=partial["steps_done"] if partial else run.get("converged_at", run.get("steps")),
        converged=run.get("converged_at") is not None,
        steps=run.get("steps"),
        backend=run.get("backend"),
        frames=list(names),
        image_size=[int(input_size[0]), int(input_size[1])],
        depth_grid=[int(rec.grid.model_size[0]), int(rec.grid.model_size[1])],
        depth_grid_scale=float(rec.grid.scale),
        depth_grid_offset=[float(v) for v in rec.grid.offset],
        depth_format=DEPTH_FORMAT,
        **(summary or {}),
    )
    outdir.commit(out_dir, stage, doc)
    paths = {key: os.path.join(out_dir, r) for key, r in rel.items()}
    paths["summary"] = os.path.join(out_dir, outdir.MANIFEST)
    return paths
