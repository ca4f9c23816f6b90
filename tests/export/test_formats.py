"""COLMAP export round trips (own reader and pycolmap), PLY round trip, cameras.json, init files."""

import json

import numpy as np
import pytest
from flax import nnx
from scipy.spatial.transform import Rotation

from flow3r_jax.flowmap import FlowMapConfig, load_init, save_init
from flow3r_jax.export.formats import CameraModel, read_colmap_model, write_cameras_json, write_colmap_model
from flow3r_jax.flowmap.optimize import init_params
from flow3r_jax.export.ply import read_ply, write_ply
from flow3r_jax.flowmap.weights import DEFAULT_INIT, InitError, read_init_config


def _model(n=5, P=40, seed=0):
    rng = np.random.default_rng(seed)
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, :3, :3] = Rotation.random(n, random_state=seed).as_matrix()
    poses[:, :3, 3] = rng.normal(size=(n, 3))
    cam = CameraModel(width=320, height=240, fx=301.5, fy=305.25, cx=160.0, cy=120.0)
    pts = rng.normal(size=(P, 3))
    cols = rng.integers(0, 256, (P, 3)).astype(np.uint8)
    obs = (rng.integers(0, n, P), rng.uniform(0, 240, (P, 2)))
    return [f"frame_{i:03d}.png" for i in range(n)], poses, cam, pts, cols, obs


@pytest.mark.parametrize("binary", [True, False])
def test_colmap_round_trip_own_reader(tmp_path, binary):
    names, poses, cam, pts, cols, (img, xy) = _model()
    write_colmap_model(str(tmp_path), names, poses, cam, pts, cols, (img, xy), binary=binary)
    m = read_colmap_model(str(tmp_path))
    assert list(m["cameras"]) == [1]
    model, w, h, params = m["cameras"][1]
    assert (model, w, h) == (1, 320, 240)
    np.testing.assert_allclose(params, [301.5, 305.25, 160.0, 120.0])
    for i, name in enumerate(names):
        got_name, cid, c2w, obs_xy, ids = m["images"][i + 1]
        assert got_name == name and cid == 1
        np.testing.assert_allclose(c2w, poses[i], atol=1e-9)
        np.testing.assert_allclose(obs_xy, xy[img == i], atol=1e-9)
        np.testing.assert_array_equal(ids, np.nonzero(img == i)[0] + 1)
    for k in range(len(pts)):
        xyz, rgb, track = m["points3D"][k + 1]
        np.testing.assert_allclose(xyz, pts[k], atol=1e-9)
        np.testing.assert_array_equal(rgb, cols[k])
        image_id, p2d = track[0]
        assert image_id == img[k] + 1
        np.testing.assert_allclose(m["images"][image_id][3][p2d], xy[k])


@pytest.mark.parametrize("binary", [True, False])
def test_colmap_model_reads_back_in_pycolmap(tmp_path, binary):
    pycolmap = pytest.importorskip("pycolmap")
    names, poses, cam, pts, cols, obs = _model()
    write_colmap_model(str(tmp_path), names, poses, cam, pts, cols, obs, binary=binary)
    rec = pycolmap.Reconstruction(str(tmp_path))
    assert rec.num_images() == len(names) and rec.num_points3D() == len(pts)
    (camera,) = rec.cameras.values()
    np.testing.assert_allclose(camera.params, [301.5, 305.25, 160.0, 120.0])
    assert (camera.width, camera.height) == (320, 240)
    for image in rec.images.values():
        i = names.index(image.name)
        c2w = np.linalg.inv(np.vstack([image.cam_from_world().matrix(), [0, 0, 0, 1]]))
        np.testing.assert_allclose(c2w, poses[i], atol=1e-9)
    for pid, point in rec.points3D.items():
        np.testing.assert_allclose(point.xyz, pts[pid - 1], atol=1e-9)
        np.testing.assert_array_equal(point.color, cols[pid - 1])


def test_cameras_json(tmp_path):
    names, poses, cam, *_ = _model(n=3)
    path = tmp_path / "cameras.json"
    write_cameras_json(str(path), names, poses, cam, {"run": {"steps": 7}})
    doc = json.loads(path.read_text())
    assert (doc["width"], doc["height"], doc["run"]["steps"]) == (320, 240, 7)
    assert [f["image_name"] for f in doc["frames"]] == names
    np.testing.assert_allclose([f["camera_to_world"] for f in doc["frames"]], poses)
    assert all((f["fx"], f["fy"], f["cx"], f["cy"]) == (301.5, 305.25, 160.0, 120.0) for f in doc["frames"])


def test_ply_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(100, 3)).astype(np.float32)
    cols = rng.integers(0, 256, (100, 3)).astype(np.uint8)
    write_ply(str(tmp_path / "p.ply"), pts, cols)
    p, c = read_ply(str(tmp_path / "p.ply"))
    np.testing.assert_array_equal(p, pts)
    np.testing.assert_array_equal(c, cols)


def test_init_file_round_trip_and_mismatch(tmp_path):
    cfg = FlowMapConfig(cnn_widths=(8, 16, 16), feature_dim=8, corr_hidden=(8,))
    params = init_params(cfg, 3, (16, 16), 0)
    path = str(tmp_path / "init.npz")
    save_init(path, params, cfg, {"note": "test"})
    state, cfg2 = load_init(path)
    assert cfg2.cnn_widths == (8, 16, 16) and cfg2.feature_dim == 8 and cfg2.corr_hidden == (8,)
    for (k1, a), (k2, b) in zip(sorted(nnx.to_flat_state(state)), sorted(nnx.to_flat_state(params))):
        assert k1 == k2
        np.testing.assert_array_equal(a.get_value(), b.get_value())
    assert read_init_config(path)["info"] == {"note": "test"}
    with np.load(path) as d:
        broken = {k: d[k] for k in d.files if not k.startswith("corr")}
    np.savez(str(tmp_path / "broken.npz"), **broken)
    with pytest.raises(InitError, match="missing"):
        load_init(str(tmp_path / "broken.npz"))
    with pytest.raises(InitError, match="no such"):
        load_init(str(tmp_path / "nope.npz"))


def test_shipped_initialisation_loads():
    state, cfg = load_init(DEFAULT_INIT)
    info = read_init_config(DEFAULT_INIT)["info"]
    assert cfg.depth == "cnn" and info.get("recipe") == "flow3r_jax.flowmap.pretrain"
    n = sum(v.get_value().size for _, v in nnx.to_flat_state(state))
    assert n < 2_000_000  # a few MB at most


def test_transforms_json_is_nerfstudio_convention(tmp_path):
    """transforms.json: nerfstudio's keys, and camera-to-world matrices with OpenGL camera axes:
    the camera's x axis, -y and -z (x right, y up, z back), the position unchanged."""
    from flow3r_jax.export.formats import write_transforms_json

    names, poses, cam, *_ = _model(n=3)
    path = tmp_path / "transforms.json"
    write_transforms_json(str(path), [f"images/{n}" for n in names], poses, cam, [f"depth/{k}.npy" for k in range(3)])
    doc = json.loads(path.read_text())
    assert (doc["camera_model"], doc["w"], doc["h"]) == ("OPENCV", 320, 240)
    assert (doc["fl_x"], doc["fl_y"], doc["cx"], doc["cy"]) == (301.5, 305.25, 160.0, 120.0)
    assert all(doc[k] == 0.0 for k in ("k1", "k2", "p1", "p2"))
    for k, (fr, T) in enumerate(zip(doc["frames"], poses)):
        G = np.asarray(fr["transform_matrix"])
        np.testing.assert_allclose(G[:3, 0], T[:3, 0])
        np.testing.assert_allclose(G[:3, 1], -T[:3, 1])
        np.testing.assert_allclose(G[:3, 2], -T[:3, 2])
        np.testing.assert_allclose(G[:3, 3], T[:3, 3])
        np.testing.assert_allclose(G[3], [0, 0, 0, 1])
        assert fr["file_path"] == f"images/{names[k]}" and fr["depth_file_path"] == f"depth/{k}.npy"
    # A point in front of an OpenCV camera (z > 0) is behind the OpenGL one's view axis (-z).
    X = poses[0][:3, :3] @ np.array([0.1, 0.2, 2.0]) + poses[0][:3, 3]
    G = np.asarray(doc["frames"][0]["transform_matrix"])
    cam_gl = np.linalg.inv(G) @ np.append(X, 1.0)
    assert cam_gl[2] < 0 and cam_gl[1] < 0  # in front (-z) and below centre (y up; OpenCV y=0.2 is down)
