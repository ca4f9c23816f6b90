"""`python -m flow3r_jax.reconstruct` on its default path, the sparse solver (`flow3r_jax.sfm`):
its poses, focal and principal point in every output, depth triangulated from the flow with its
cameras (`--dense flow`), FlowMap's depth with them (`--dense flowmap`), `--sfm off`, `--steps 0`
(the solver's points alone), a camera that only rotates and its refusal of a clip without texture."""

import json
import os

import numpy as np
import pytest

from flow3r_jax.reconstruct import main


@pytest.mark.slow
def test_poses_and_focal_from_the_sparse_solver(tmp_path):
    """--sfm auto (default): on a textured 240x320 clip the sparse solver succeeds; the written
    cameras are its poses and focal (against the clip's exact ones). By default (--dense flow) the
    depth maps are triangulated from the flow with those cameras (no FlowMap): against the clip's
    exact depth; --dense flowmap runs FlowMap with the solver's focal held fixed, its depth
    rescaled to the solver's points; --sfm off keeps FlowMap's poses."""
    from PIL import Image

    from data_pipelines.synthetic import SceneConfig, generate_clip
    from flow3r_jax.data.frames import resize_to_grid, uniform_grid
    from flow3r_jax.flowmap.metrics import trajectory_errors

    clip = generate_clip(SceneConfig(height=240, width=320, frames=10, dynamic=False, preset="handheld", kind="room", offsets=(1,), flow_px=(4.0, 8.0)), seed=2)
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, im in enumerate(clip["images"]):
        Image.fromarray(np.asarray(im)).save(folder / f"{k:03d}.png")
    truth = np.asarray(clip["poses"], np.float64)
    f_true = float(clip["intrinsics"][0][0, 0])
    docs = {}
    for mode, extra in (("flow", []), ("flowmap", ["--dense", "flowmap"]), ("off", ["--sfm", "off"])):
        out = str(tmp_path / mode)
        small = [] if mode == "flow" else ["--steps", "2", "--pixels", "3072"]
        assert main(["--input", str(folder), "--out", out, "--no-progress", *small, *extra]) == 0
        with open(os.path.join(out, "cameras.json")) as f:
            docs[mode] = json.load(f)
    for mode in ("flow", "flowmap"):
        doc = docs[mode]
        assert doc["run"]["poses_from"] == "sfm" and doc["run"]["sfm"]["used"]
        err = trajectory_errors(np.stack([fr["camera_to_world"] for fr in doc["frames"]]), truth)
        assert err["rot_err_deg"] < 0.5 and err["ate_rel"] < 0.1, err
        first = doc["frames"][0]
        assert first["fx"] == pytest.approx(first["fy"], rel=1e-9) and abs(first["fx"] - f_true) / f_true < 0.02
        assert (first["cx"], first["cy"]) == pytest.approx((160.0, 120.0), abs=1e-6)
    assert docs["off"]["run"]["poses_from"] == "flowmap" and docs["off"]["run"]["sfm"] == {"used": False, "reason": "--sfm off"}
    # the default: depth from the flow, no FlowMap
    run = docs["flow"]["run"]
    assert run["backend"] == "sfm+flow" and run["depth_from"] == "flow triangulation" and "focal_init" not in run
    assert not os.path.exists(tmp_path / "flow" / "flowmap_history.json")
    depth = np.load(tmp_path / "flow" / "depth.npz")["depth"]
    grid = uniform_grid(240, 320, depth.shape[1:])
    gt = resize_to_grid(np.asarray(clip["depth"], np.float32), grid)
    surface = resize_to_grid(np.asarray(clip["valid"], np.float32), grid) > 0.99
    known = surface & (depth > 0)
    assert known.sum() > 0.95 * surface.sum()
    ratio = depth[known] / gt[known]
    ratio *= 1.0 / np.median(ratio)  # one global scale
    assert np.mean(np.abs(ratio - 1.0)) < 0.06 and np.mean(np.maximum(ratio, 1 / ratio) < 1.25) > 0.95
    # --dense flowmap: FlowMap (2 steps) ran with the solver's focal held fixed
    doc = docs["flowmap"]
    assert doc["run"]["focal_init"]["mode"] == "sfm"
    assert doc["run"]["focal_init"]["focal_px_input"] == pytest.approx(doc["frames"][0]["fx"], rel=1e-6)
    scales = doc["run"]["sfm"]["depth_scales"]
    assert len(scales) == 10 and all(s > 0 for s in scales)
    # --steps 0: the solver's poses and sparse points alone (no FlowMap); the sparse depth maps
    # agree with the cloud: each depth pixel unprojects onto one of the cloud's points
    from flow3r_jax.export.ply import read_ply

    out = str(tmp_path / "sparse")
    assert main(["--input", str(folder), "--out", out, "--steps", "0", "--no-progress"]) == 0
    with open(os.path.join(out, "cameras.json")) as f:
        sparse = json.load(f)
    assert sparse["run"]["backend"] == "sfm" and sparse["run"]["steps"] == 0 and not os.path.exists(os.path.join(out, "flowmap_history.json"))
    err = trajectory_errors(np.stack([fr["camera_to_world"] for fr in sparse["frames"]]), truth)
    assert err["rot_err_deg"] < 0.5 and err["ate_rel"] < 0.1, err
    pts, _ = read_ply(os.path.join(out, "points.ply"))
    assert len(pts) > 100
    d = np.load(os.path.join(out, "depth.npz"))
    k, r, c = np.nonzero(d["depth"][:1])
    xy = (np.stack([c, r], -1) + 0.5 + d["offset"]) / d["scale"]  # grid pixel centres -> input pixels
    fr0 = sparse["frames"][0]
    ray = np.stack([(xy[:, 0] - fr0["cx"]) / fr0["fx"], (xy[:, 1] - fr0["cy"]) / fr0["fy"], np.ones(len(xy))], -1)
    world = ray * d["depth"][0][r, c][:, None]  # frame 0 is the world frame
    nearest = np.min(np.linalg.norm(world[:, None] - pts[None], axis=-1), axis=1)
    assert len(world) > 20 and np.median(nearest / d["depth"][0][r, c]) < 0.01


def test_an_off_centre_principal_point_reaches_every_output(tmp_path):
    """A rendered clip cropped 24 rows and 16 columns off centre (principal point 8 and 12 px from
    the crop's centre) through the defaults: the solver's test keeps the refined principal point,
    cameras.json, the COLMAP model and transforms.json carry it (within 3 px of the truth, fx = fy),
    the exported points project with those intrinsics onto the pixels they were seen at, and the
    depth triangulated with them matches the clip's exact depth."""
    from PIL import Image

    from data_pipelines.synthetic import SceneConfig, generate_clip
    from flow3r_jax.data.frames import resize_to_grid, uniform_grid
    from flow3r_jax.export.formats import read_colmap_model

    clip = generate_clip(SceneConfig(height=240, width=320, frames=10, dynamic=False, preset="handheld", kind="room", offsets=(1,), flow_px=(4.0, 8.0)), seed=2)
    K = np.asarray(clip["intrinsics"])[0]
    true_c = np.array([K[0, 2] - 16.0, K[1, 2] - 24.0])  # input pixels, top-left pixel centre at (0.5, 0.5)
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, im in enumerate(clip["images"]):
        Image.fromarray(np.asarray(im)[24:, 16:]).save(folder / f"{k:03d}.png")
    out = str(tmp_path / "out")
    assert main(["--input", str(folder), "--out", out, "--no-progress"]) == 0
    with open(os.path.join(out, "cameras.json")) as f:
        doc = json.load(f)
    assert (doc["height"], doc["width"]) == (216, 304)
    assert doc["run"]["sfm"]["principal_test"]["kept"], doc["run"]["sfm"]["principal_test"]
    first = doc["frames"][0]
    assert first["fx"] == pytest.approx(first["fy"], rel=1e-9)
    assert np.all(np.abs(np.array([first["cx"], first["cy"]]) - true_c) < 3.0), (first["cx"], first["cy"], true_c)
    assert all((fr["cx"], fr["cy"]) == (first["cx"], first["cy"]) for fr in doc["frames"])
    with open(os.path.join(out, "transforms.json")) as f:
        tr = json.load(f)
    assert (tr["fl_x"], tr["fl_y"], tr["cx"], tr["cy"]) == (first["fx"], first["fy"], first["cx"], first["cy"])
    model = read_colmap_model(os.path.join(out, "sparse", "0"))
    (_, w, h, params), = model["cameras"].values()
    np.testing.assert_allclose(params, [first["fx"], first["fy"], first["cx"], first["cy"]], rtol=1e-6)
    Kx = np.array([[first["fx"], 0, first["cx"]], [0, first["fy"], first["cy"]], [0, 0, 1]])
    d = np.load(os.path.join(out, "depth.npz"))
    depth = d["depth"]
    errors, depth_err = [], []
    for name, _, c2w, xy, pids in model["images"].values():
        k = int(os.path.splitext(name)[0])
        for (x, y), pid in list(zip(xy, pids))[:100]:
            Xc = (np.linalg.inv(c2w) @ np.append(model["points3D"][int(pid)][0], 1.0))[:3]
            errors.append(np.linalg.norm((Kx @ Xc)[:2] / Xc[2] - (x, y)))
            col, row = np.floor(np.array([x, y]) * d["scale"] - d["offset"]).astype(int)  # input pixels -> grid cell
            depth_err.append(abs(depth[k, row, col] / Xc[2] - 1.0))
    # the points are the depth maps unprojected with these intrinsics: they project back onto the
    # pixels they came from, at the depth of their cell
    assert len(errors) > 100 and np.median(errors) < 0.5, np.median(errors)
    assert np.median(depth_err) < 1e-3, np.median(depth_err)
    grid = uniform_grid(216, 304, depth.shape[1:])
    gt = resize_to_grid(np.asarray(clip["depth"], np.float32)[:, 24:, 16:], grid)
    surface = resize_to_grid(np.asarray(clip["valid"], np.float32)[:, 24:, 16:], grid) > 0.99
    known = surface & (depth > 0)
    assert known.sum() > 0.95 * surface.sum()
    ratio = depth[known] / gt[known]
    ratio *= 1.0 / np.median(ratio)
    assert np.mean(np.abs(ratio - 1.0)) < 0.06, np.mean(np.abs(ratio - 1.0))


@pytest.mark.slow
def test_flowmap_depth_uses_the_solvers_principal_point(tmp_path):
    """--dense flowmap on the clip cropped off centre: FlowMap's per-scene optimisation runs with
    the solver's focal and principal point (on its own grid: the exported cx, cy mapped there),
    so the depth it supplies was computed with the camera the outputs carry."""
    from PIL import Image

    from data_pipelines.synthetic import SceneConfig, generate_clip

    clip = generate_clip(SceneConfig(height=240, width=320, frames=10, dynamic=False, preset="handheld", kind="room", offsets=(1,), flow_px=(4.0, 8.0)), seed=2)
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, im in enumerate(clip["images"]):
        Image.fromarray(np.asarray(im)[24:, 16:]).save(folder / f"{k:03d}.png")
    out = str(tmp_path / "out")
    assert main(["--input", str(folder), "--out", out, "--no-progress", "--dense", "flowmap", "--steps", "2", "--pixels", "3072"]) == 0
    with open(os.path.join(out, "cameras.json")) as f:
        doc = json.load(f)
    assert doc["run"]["poses_from"] == "sfm" and doc["run"]["sfm"]["principal_test"]["kept"]
    first = doc["frames"][0]
    d = np.load(os.path.join(out, "depth.npz"))
    on_grid = np.array([first["cx"], first["cy"]]) * d["scale"] - d["offset"]
    used = doc["run"]["focal_init"]["principal_px_model"]
    np.testing.assert_allclose(used, on_grid, atol=1e-2)
    h, w = d["depth"].shape[1:]
    assert np.abs(on_grid - (w / 2, h / 2)).max() > 1.0  # off the grid's centre: the check has teeth



def test_steps_0_on_a_clip_the_solver_refuses(tmp_path, capsys):
    """--steps 0 has no FlowMap to fall back on: a clip without texture is refused with the
    solver's reason and nothing is written."""
    from PIL import Image

    folder = tmp_path / "flat"
    folder.mkdir()
    for k in range(4):
        Image.fromarray(np.full((96, 128, 3), 100 + k, np.uint8)).save(folder / f"{k}.png")
    out = tmp_path / "out"
    assert main(["--input", str(folder), "--out", str(out), "--steps", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "refused this clip" in err and "verified matches" in err and "--steps N >= 1" in err
    assert not out.exists() or not any(out.iterdir())


def test_a_poorly_determined_focal_is_reported(caplog):
    """A 5-frame 96x128 handheld clip of small motion determines its focal poorly: the solver's
    answer comes with its standard deviation (track-clustered: 5.6% here, its error 13.5%, the
    same with and without the suite's XLA flags), and `reconstruct`'s sparse step warns and
    points to --focal."""
    import logging

    from data_pipelines.synthetic import SceneConfig, generate_clip
    from flow3r_jax.reconstruction import FOCAL_STD_WARN_PCT, solve_sparse

    clip = generate_clip(SceneConfig(height=96, width=128, frames=5, dynamic=False, preset="handheld", kind="room", offsets=(1,), flow_px=(3.0, 5.0)), seed=2)
    f_true = float(clip["intrinsics"][0][0, 0])
    with caplog.at_level(logging.WARNING, logger="flow3r_jax"):
        result, info = solve_sparse(np.asarray(clip["images"]), "auto")
    assert result is not None and info["used"], info.get("reason")
    assert info["focal_std_pct"] > FOCAL_STD_WARN_PCT
    assert abs(result.focal / f_true - 1) > 0.01 * info["focal_std_pct"]  # the error is real, not only the spread
    assert any("determines the focal length poorly" in r.getMessage() and "--focal" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_a_camera_that_only_rotates(tmp_path):
    """A clip whose camera only rotates (a rendered pan, its centre held): the solver's
    rotation-only route gives the poses and focal (every camera centre the same; relative
    rotations and focal against the clip's exact ones), and FlowMap (2 steps, the solver's focal
    held) the depth maps, as no baseline triangulates the flow; --steps 0 writes the same cameras
    with the points as directions at a median depth of 1."""
    import dataclasses

    from PIL import Image

    from data_pipelines.synthetic.clip import build_scene
    from data_pipelines.synthetic.config import SceneConfig
    from flow3r_jax.eval.metrics.pose_angular import relative_pose_errors

    H, W = 120, 160
    scene = build_scene(SceneConfig(height=H, width=W, frames=6, preset="pan", focal=0.8, flow_px=(5.0, 7.0), offsets=(1,)), 1)
    poses = scene.poses.copy()
    poses[:, :3, 3] = poses[0, :3, 3]
    scene = dataclasses.replace(scene, poses=poses, _frames={})
    folder = tmp_path / "pan"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(scene.render(i)["image"]).save(folder / f"{i:02d}.png")
    out = str(tmp_path / "out")
    assert main(["--input", str(folder), "--out", out, "--no-progress", "--steps", "2", "--pixels", str(H * W)]) == 0
    with open(os.path.join(out, "cameras.json")) as f:
        doc = json.load(f)
    run = doc["run"]
    assert run["poses_from"] == "sfm" and run["sfm"]["route"] == "rotation" and run["backend"] == "flowmap"
    assert run["focal_init"]["mode"] == "sfm"
    c2w = np.stack([fr["camera_to_world"] for fr in doc["frames"]])
    np.testing.assert_allclose(c2w[:, :3, 3], c2w[:1, :3, 3].repeat(6, 0), atol=1e-12)
    assert relative_pose_errors(c2w, poses)[0].max() < 0.1
    f_true = float(scene.intrinsics[0, 0])
    assert doc["frames"][0]["fx"] == pytest.approx(doc["frames"][0]["fy"], rel=1e-9) and abs(doc["frames"][0]["fx"] / f_true - 1) < 0.015
    depth = np.load(os.path.join(out, "depth.npz"))["depth"]
    assert np.isfinite(depth).all() and (depth > 0).mean() > 0.99
    # --steps 0: the solver's cameras alone (the same), its points as directions at a median depth of 1
    out0 = str(tmp_path / "sparse")
    assert main(["--input", str(folder), "--out", out0, "--no-progress", "--steps", "0"]) == 0
    with open(os.path.join(out0, "cameras.json")) as f:
        sparse = json.load(f)
    assert sparse["run"]["backend"] == "sfm" and sparse["run"]["sfm"]["route"] == "rotation"
    np.testing.assert_allclose(np.stack([fr["camera_to_world"] for fr in sparse["frames"]]), c2w, atol=1e-9)
    d0 = np.load(os.path.join(out0, "depth.npz"))["depth"]
    assert np.median(d0[d0 > 0]) == pytest.approx(1.0, rel=0.05)
