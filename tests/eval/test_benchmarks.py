"""Benchmark loaders on tiny fixtures written in each dataset's own on-disk format.

For every format: a known 3D point projects to the pixel the raw file's own convention gives
(computed here from the file's definition, not through the loader), depth units round-trip, the
protocol's frame selection picks the documented frames, and broken data raises a
`BenchmarkError` naming the problem. The RealEstate10K / CO3D draws are checked against entries
of π³'s published seq-id-maps (yyfz/Pi3, branch evaluation, datasets/seq-id-maps/*_seed42.json).
"""

from __future__ import annotations

import gzip
import json
import os

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from flow3r_jax.eval.benchmarks import BENCHMARKS, BenchmarkError, load_benchmark
from flow3r_jax.eval.benchmarks import selection
from flow3r_jax.eval.sequence import TASKS

H, W = 8, 10
_PNG = cv2.imencode(".png", np.full((H, W, 3), 127, np.uint8))[1].tobytes()
_JPG = cv2.imencode(".jpg", np.full((H, W, 3), 127, np.uint8))[1].tobytes()


# ----------------------------------------------------------------------------- helpers


def _write(path, data: bytes):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _image(path, h=H, w=W):
    if (h, w) == (H, W):
        _write(path, _JPG if path.endswith(".jpg") else _PNG)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        cv2.imwrite(path, np.full((h, w, 3), 90, np.uint8))


def _depth16(path, values):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, np.asarray(values, np.uint16))


def _text(path, text):
    _write(path, text.encode())


def _c2w(seed):
    rng = np.random.default_rng(seed)
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rng.normal(scale=0.3, size=3)).as_matrix()
    T[:3, 3] = rng.normal(size=3)
    return T


def _point_in_front(c2w, depth=3.0, offset=(0.2, -0.1)):
    """A world point `depth` metres in front of an OpenCV camera (c2w)."""
    return c2w[:3, :3] @ np.array([offset[0], offset[1], depth]) + c2w[:3, 3]


def _project_loaded(seq, i, X):
    """Pixel of world point X through the loaded (OpenCV c2w, K) of frame i."""
    Xc = np.linalg.inv(seq.poses[i]) @ np.append(X, 1.0)
    x = seq.intrinsics[i] @ Xc[:3]
    return x[:2] / x[2]


def _names(seqs):
    return [s.name for s in seqs]


# ----------------------------------------------------------------------------- registry


def test_registry_specs_and_errors(tmp_path):
    assert {"sintel", "bonn", "kitti", "tum", "scannet", "kitti_odometry", "re10k", "co3d", "7scenes-sparse", "7scenes-dense", "nrgbd-sparse", "nrgbd-dense", "generic"} <= set(BENCHMARKS)
    for name, spec in BENCHMARKS.items():
        assert spec.name == name and spec.tasks and set(spec.tasks) <= set(TASKS)
    assert BENCHMARKS["sintel"].dynamic and BENCHMARKS["bonn"].dynamic and not BENCHMARKS["co3d"].dynamic
    with pytest.raises(BenchmarkError, match="unknown benchmark 'nope'"):
        load_benchmark("nope", str(tmp_path), "video_depth")
    with pytest.raises(BenchmarkError, match="no ground truth for task 'pose_angular'"):
        load_benchmark("sintel", str(tmp_path), "pose_angular")
    with pytest.raises(BenchmarkError, match="missing data directory"):
        load_benchmark("sintel", str(tmp_path / "absent"), "video_depth")
    with pytest.raises(BenchmarkError, match="bad options"):
        load_benchmark("sintel", str(tmp_path), "video_depth", colour="red")
    assert issubclass(BenchmarkError, ValueError)


def test_selection_rules(tmp_path):
    assert selection.keyframes(401, 200) == [0, 200, 400]
    assert selection.keyframes(1000, 40)[-1] == 960
    a = selection.random_frame_lists({"a": 30, "short": 3, "b": 12}, 10, 42)
    assert set(a) == {"a", "b"} and a == selection.random_frame_lists({"a": 30, "short": 3, "b": 12}, 10, 42)
    p = str(tmp_path / "lists.json")
    first = selection.resolve_frame_lists({"a": 30, "b": 12}, p, 10, 42)
    assert json.load(open(p)) == first
    json.dump({"a": [5, 4, 3]}, open(p, "w"))
    assert selection.resolve_frame_lists({"a": 30, "b": 12}, p, 10, 42) == {"a": [5, 4, 3]}
    json.dump({"a": [99]}, open(p, "w"))
    with pytest.raises(BenchmarkError, match="has 30 frames but the frame list names"):
        selection.resolve_frame_lists({"a": 30}, p)


# ----------------------------------------------------------------------------- Sintel

_TAG = np.float32(202021.25)


def _write_dpt(path, depth):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(_TAG.tobytes() + np.int32(depth.shape[1]).tobytes() + np.int32(depth.shape[0]).tobytes() + depth.astype("<f4").tobytes())


def _write_cam(path, M, N):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(_TAG.tobytes() + M.astype("<f8").tobytes() + N.astype("<f8").tobytes())


def _sintel(root, seq="alley_2", n=3):
    Ms, Ns, Ds = [], [], []
    for i in range(1, n + 1):
        M = np.array([[688.0 + i, 0, 511.5], [0, 689.0, 217.5], [0, 0, 1]])
        N = np.linalg.inv(_c2w(i))[:3]
        D = np.random.default_rng(i).uniform(0.5, 90.0, (H, W)).astype(np.float32)
        _image(f"{root}/final/{seq}/frame_{i:04d}.png")
        _write_dpt(f"{root}/depth/{seq}/frame_{i:04d}.dpt", D)
        _write_cam(f"{root}/camdata_left/{seq}/frame_{i:04d}.cam", M, N)
        Ms.append(M), Ns.append(N), Ds.append(D)
    return Ms, Ns, Ds


def test_sintel(tmp_path):
    root = str(tmp_path / "training")
    Ms, Ns, Ds = _sintel(root)
    (s,) = load_benchmark("sintel", root, "video_depth", sequences=["alley_2"])
    assert s.name == "alley_2" and s.frame_ids == ["frame_0001", "frame_0002", "frame_0003"]
    assert s.dynamic and s.max_depth == 70
    for i in range(3):
        X = _point_in_front(np.linalg.inv(np.vstack([Ns[i], [0, 0, 0, 1]])))
        x = Ms[i] @ Ns[i] @ np.append(X, 1.0)  # Sintel: x = M N X
        np.testing.assert_allclose(_project_loaded(s, i, X), x[:2] / x[2], atol=1e-8)
    np.testing.assert_array_equal(s.load_depths(), np.stack(Ds))
    assert s.load_images().shape == (3, H, W, 3)
    (t,) = load_benchmark("sintel", root, "pose_trajectory", sequences=["alley_2"], stride=2)
    assert t.frame_ids == ["frame_0001", "frame_0003"]
    with pytest.raises(BenchmarkError, match="missing sequence.*ambush_4"):
        load_benchmark("sintel", root, "video_depth")  # the protocol's 14 sequences
    os.remove(f"{root}/camdata_left/alley_2/frame_0003.cam")
    with pytest.raises(BenchmarkError, match="frame counts disagree.*images=3.*cameras=2"):
        load_benchmark("sintel", root, "video_depth", sequences=["alley_2"])
    _write(f"{root}/camdata_left/alley_2/frame_0003.cam", b"\0" * 200)
    with pytest.raises(BenchmarkError, match="frame_0003.cam: not a Sintel file"):
        load_benchmark("sintel", root, "video_depth", sequences=["alley_2"])


# ----------------------------------------------------------------------------- Bonn


def _bonn(root, seq="rgbd_bonn_balloon2", n=150, gt_shift=0.004):
    d = f"{root}/{seq}"
    t = 1548266469.0 + np.arange(n) / 30.0
    gt = []
    for i, ti in enumerate(t):
        _image(f"{d}/rgb/{ti:.6f}.png")
        _depth16(f"{d}/depth/{ti + 0.001:.6f}.png", np.full((H, W), 5000 + i, np.uint16) * np.array([[1] * (W - 1) + [0]], np.uint16))
        q = Rotation.from_rotvec([0.01 * i, 0.2, -0.1]).as_quat()  # x y z w
        gt.append(f"{ti + gt_shift:.6f} {0.01 * i} 0.5 {-0.2 + 0.001 * i} {q[0]} {q[1]} {q[2]} {q[3]}")
    _text(f"{d}/groundtruth.txt", "# timestamp tx ty tz qx qy qz qw\n" + "\n".join(gt) + "\n")
    return t


def test_bonn(tmp_path):
    root = str(tmp_path / "rgbd_bonn_dataset")
    t = _bonn(root)
    (s,) = load_benchmark("bonn", root, "video_depth", sequences=["rgbd_bonn_balloon2"])
    assert len(s) == 110 and s.frame_ids[0] == f"{t[30]:.6f}" and s.frame_ids[-1] == f"{t[139]:.6f}"  # sorted [30:140]
    assert s.max_depth == 70 and s.dynamic
    np.testing.assert_allclose(s.timestamps, t[30:140], atol=1e-6)
    d = s.select([0]).load_depths()[0]
    np.testing.assert_allclose(d[:, : W - 1], (5000 + 30) / 5000.0, rtol=1e-6)  # 16-bit / 5000
    assert np.all(d[:, W - 1] == 0)
    # The dataset page's correction: camera = T_ros * T_gt * T_ros * T_m (T_m's rotation made orthonormal).
    T_ros = np.array([[-1.0, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    T_m = np.array([[1.0157, 0.1828, -0.2389, 0.0113], [0.0009, -0.8431, -0.6413, -0.0098], [-0.3009, 0.6147, -0.8085, 0.0111], [0, 0, 0, 1]])
    U, _, Vt = np.linalg.svd(T_m[:3, :3])
    T_m[:3, :3] = U @ Vt
    i = 40
    T_gt = np.eye(4)
    T_gt[:3, :3] = Rotation.from_rotvec([0.01 * i, 0.2, -0.1]).as_matrix()
    T_gt[:3, 3] = [0.01 * i, 0.5, -0.2 + 0.001 * i]
    cam = T_ros @ T_gt @ T_ros @ T_m
    np.testing.assert_allclose(s.poses[i - 30], cam, atol=1e-9)
    X = _point_in_front(cam)
    Xc = np.linalg.inv(cam) @ np.append(X, 1)
    fx, fy, cx, cy = 542.822841, 542.576870, 315.593520, 237.756098  # published Bonn intrinsics
    np.testing.assert_allclose(_project_loaded(s, i - 30, X), [fx * Xc[0] / Xc[2] + cx, fy * Xc[1] / Xc[2] + cy], atol=1e-8)
    (raw,) = load_benchmark("bonn", root, "mono_depth", sequences=["rgbd_bonn_balloon2"], pose_frame="marker")
    np.testing.assert_allclose(raw.poses[i - 30], T_gt, atol=1e-9)
    with pytest.raises(BenchmarkError, match="missing sequence.*rgbd_bonn_crowd2"):
        load_benchmark("bonn", root, "video_depth")


def test_bonn_errors(tmp_path):
    root = str(tmp_path / "b")
    _bonn(root, gt_shift=1000.0)
    with pytest.raises(BenchmarkError, match="groundtruth.txt: 110 frame timestamp.*no ground truth within 0.02 s"):
        load_benchmark("bonn", root, "video_depth", sequences=["rgbd_bonn_balloon2"])
    depth_dir = f"{root}/rgbd_bonn_balloon2/depth"
    os.remove(os.path.join(depth_dir, sorted(os.listdir(depth_dir))[0]))
    with pytest.raises(BenchmarkError, match="frame counts disagree .images=150, depths=149."):
        load_benchmark("bonn", root, "video_depth", sequences=["rgbd_bonn_balloon2"])


# ----------------------------------------------------------------------------- TUM


def _tum(root, seq="rgbd_dataset_freiburg3_walking_xyz", n=300, no_gt=range(10, 15), gt_offset=0.005):
    d = f"{root}/{seq}"
    t = 1341846313.0 + np.arange(n) / 30.0
    rgb, dep, gt = [], [], []
    for i, ti in enumerate(t):
        _image(f"{d}/rgb/{ti:.6f}.png")
        rgb.append(f"{ti:.6f} rgb/{ti:.6f}.png")
        if i < 4:  # only the depth maps the test reads
            _depth16(f"{d}/depth/{ti + 0.002:.6f}.png", np.full((H, W), 2500 + i, np.uint16))
        dep.append(f"{ti + 0.002:.6f} depth/{ti + 0.002:.6f}.png")
        if i not in no_gt:
            q = Rotation.from_rotvec([0.1, 0.002 * i, 0.3]).as_quat()
            gt.append(f"{ti + gt_offset:.4f} {0.01 * i} -0.3 1.2 {q[0]} {q[1]} {q[2]} {q[3]}")
    _text(f"{d}/rgb.txt", "# color images\n# file: 'x.bag'\n# timestamp filename\n" + "\n".join(rgb) + "\n")
    _text(f"{d}/depth.txt", "# depth maps\n" + "\n".join(dep) + "\n")
    _text(f"{d}/groundtruth.txt", "# ground truth trajectory\n# timestamp tx ty tz qx qy qz qw\n" + "\n".join(gt) + "\n")
    return t


def test_tum(tmp_path):
    root = str(tmp_path / "tum")
    seq = "rgbd_dataset_freiburg3_walking_xyz"
    t = _tum(root)
    (s,) = load_benchmark("tum", root, "pose_trajectory", sequences=[seq])
    expected = [i for i in range(300) if not 10 <= i < 15][::3][:90]  # associated, then [::3][:90]
    assert len(s) == 90 and s.frame_ids == [f"{t[i]:.6f}" for i in expected]
    i = expected[7]
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(Rotation.from_rotvec([0.1, 0.002 * i, 0.3]).as_quat()).as_matrix()
    T[:3, 3] = [0.01 * i, -0.3, 1.2]
    np.testing.assert_allclose(s.poses[7], T, atol=1e-9)
    X = _point_in_front(T)
    Xc = np.linalg.inv(T) @ np.append(X, 1)
    fx, fy, cx, cy = 535.4, 539.2, 320.1, 247.6  # TUM fr3
    np.testing.assert_allclose(_project_loaded(s, 7, X), [fx * Xc[0] / Xc[2] + cx, fy * Xc[1] / Xc[2] + cy], atol=1e-8)
    np.testing.assert_allclose(s.select([0, 1]).load_depths()[:, 0, 0], [2500 / 5000.0, 2503 / 5000.0], rtol=1e-6)
    with pytest.raises(BenchmarkError, match="missing sequence.*sitting_halfsphere"):
        load_benchmark("tum", root, "pose_trajectory")


def test_tum_no_ground_truth_within_tolerance(tmp_path):
    root = str(tmp_path / "tum")
    _tum(root, n=20, gt_offset=5.0)
    with pytest.raises(BenchmarkError, match="groundtruth.txt: no rgb.txt timestamp has ground truth within 0.02 s"):
        load_benchmark("tum", root, "pose_trajectory", sequences=["rgbd_dataset_freiburg3_walking_xyz"])


# ----------------------------------------------------------------------------- KITTI depth


def test_kitti_depth_gathered_and_raw_layouts(tmp_path):
    root = str(tmp_path / "kitti")
    g = f"{root}/depth_selection/val_selection_cropped"
    for k in range(3):
        _image(f"{g}/image_gathered/2011_09_26_drive_0002_sync_02/{k + 5:010d}.png")
        _depth16(f"{g}/groundtruth_depth_gathered/2011_09_26_drive_0002_sync_02/{k + 5:010d}.png", np.array([[0, 256 * 12.5 + 64] + [300] * (W - 2)] * H))
    (s,) = load_benchmark("kitti", root, "video_depth")
    assert s.name == "2011_09_26_drive_0002_sync_02" and s.frame_ids == ["0000000005", "0000000006", "0000000007"]
    assert s.max_depth is None and s.intrinsics is None
    d = s.load_depths()
    assert d[0, 0, 0] == 0 and d[0, 0, 1] == pytest.approx(12.75) and d[0, 0, 2] == pytest.approx(300 / 256)  # /256
    _image(f"{g}/image_gathered/2011_09_26_drive_0002_sync_02/0000000099.png")
    with pytest.raises(BenchmarkError, match="frame counts disagree .images=4, depths=3."):
        load_benchmark("kitti", root, "video_depth")

    raw = str(tmp_path / "kitti_raw")
    drive = "2011_09_26_drive_0005_sync"
    for k in range(115):
        depth_file = f"{raw}/val/{drive}/proj_depth/groundtruth/image_02/{k + 5:010d}.png"
        if k < 3:  # only the depth maps the test reads hold pixels
            _depth16(depth_file, np.full((2, 2), 512))
        else:
            _write(depth_file, b"")
        _image(f"{raw}/2011_09_26/{drive}/image_02/data/{k + 5:010d}.png")
    P2 = np.array([[721.5377, 0, 609.5593, 44.85728], [0, 721.5377, 172.854, 0.2163791], [0, 0, 1, 0.002745884]])
    _text(f"{raw}/2011_09_26/calib_cam_to_cam.txt", "calib_time: 09-Jan-2012 13:57:47\nP_rect_02: " + " ".join(map(str, P2.ravel())) + "\n")
    (r,) = load_benchmark("kitti", raw, "mono_depth")
    assert len(r) == 110 and r.frame_ids[0] == "0000000005" and r.frame_ids[-1] == f"{114:010d}"  # first 110 sorted
    np.testing.assert_allclose(r.intrinsics[0], P2[:, :3])
    os.remove(f"{raw}/2011_09_26/{drive}/image_02/data/{7:010d}.png")
    with pytest.raises(BenchmarkError, match="0000000007.png: missing image for depth map"):
        load_benchmark("kitti", raw, "video_depth")


def test_kitti_depth_official_flat_layout(tmp_path):
    root = str(tmp_path / "val_selection_cropped")
    K = np.array([[721.5, 0, 596.5], [0, 721.5, 149.8], [0, 0, 1]])
    for f in (5, 6):
        stem = f"2011_09_26_drive_0002_sync_image_{f:010d}_image_02"
        _image(f"{root}/image/{stem}.png")
        _depth16(f"{root}/groundtruth_depth/2011_09_26_drive_0002_sync_groundtruth_depth_{f:010d}_image_02.png", np.full((H, W), 1024))
        _text(f"{root}/intrinsics/{stem}.txt", " ".join(map(str, K.ravel())))
    (s,) = load_benchmark("kitti", root, "video_depth")
    assert s.name == "2011_09_26_drive_0002_sync_02" and s.frame_ids == [f"{5:010d}", f"{6:010d}"]
    np.testing.assert_allclose(s.intrinsics[1], K)
    np.testing.assert_allclose(s.load_depths(), 4.0)


# ----------------------------------------------------------------------------- KITTI odometry


def test_kitti_odometry_cam2(tmp_path):
    root = str(tmp_path / "dataset")
    K = np.array([[718.856, 0, 607.1928], [0, 718.856, 185.2157], [0, 0, 1]])
    P0 = np.hstack([K, np.zeros((3, 1))])
    P2 = np.hstack([K, K @ np.array([[0.0597], [-0.0003], [0.0027]])])
    _text(f"{root}/sequences/00/calib.txt", "".join(f"P{k}: " + " ".join(map(str, P.ravel())) + "\n" for k, P in enumerate([P0, P0, P2, P2])))
    poses0 = [_c2w(10 + k) for k in range(4)]
    _text(f"{root}/poses/00.txt", "".join(" ".join(map(str, T[:3].ravel())) + "\n" for T in poses0))
    for k in range(4):
        _image(f"{root}/sequences/00/image_2/{k:06d}.png")
    (s,) = load_benchmark("kitti_odometry", root, "pose_trajectory")
    assert s.frame_ids == ["000000", "000001", "000002", "000003"]
    for k in (0, 3):
        X = _point_in_front(poses0[k], depth=8.0)
        x = P2 @ np.append((np.linalg.inv(poses0[k]) @ np.append(X, 1))[:3], 1.0)  # P2 acts on cam0 coordinates
        np.testing.assert_allclose(_project_loaded(s, k, X), x[:2] / x[2], atol=1e-6)
    (t,) = load_benchmark("kitti_odometry", root, "pose_trajectory", stride=2)
    assert t.frame_ids == ["000000", "000002"]
    os.remove(f"{root}/sequences/00/image_2/000003.png")
    with pytest.raises(BenchmarkError, match="frame counts disagree .images=3, poses=4."):
        load_benchmark("kitti_odometry", root, "pose_trajectory")


# ----------------------------------------------------------------------------- ScanNet


def _scannet(root, seq="scene0707_00", n=12, bad_pose_at=None):
    d = f"{root}/{seq}"
    Kc = np.array([[20.0, 0, 9.5], [0, 20.0, 7.5], [0, 0, 1]])  # colour 16x20
    Kd = np.array([[10.0, 0, 4.5], [0, 10.0, 3.5], [0, 0, 1]])  # depth 8x10: colour pixel (2r, 2c) -> depth (r, c)
    _text(f"{d}/intrinsic/intrinsic_color.txt", "\n".join(" ".join(f"{v:f}" for v in r) for r in np.pad(Kc, ((0, 1), (0, 1)))) + "\n")
    _text(f"{d}/intrinsic/intrinsic_depth.txt", "\n".join(" ".join(f"{v:f}" for v in r) for r in np.pad(Kd, ((0, 1), (0, 1)))) + "\n")
    for i in range(n):
        _image(f"{d}/color/{i}.jpg", 16, 20)
        dep = np.full((8, 10), 1000 + i, np.uint16)
        dep[2, 3] = 4321
        _depth16(f"{d}/depth/{i}.png", dep)
        T = _c2w(100 + i)
        if bad_pose_at == i:
            T[:] = -np.inf
        _text(f"{d}/pose/{i}.txt", "\n".join(" ".join(f"{v:.9f}" for v in r) for r in T) + "\n")
    return Kc


def test_scannet(tmp_path):
    root = str(tmp_path / "scannetv2")
    Kc = _scannet(root)
    (s,) = load_benchmark("scannet", root, "pose_trajectory", sequences=["scene0707_00"])
    assert s.frame_ids == ["0", "3", "6", "9"]  # sorted by integer name, [:90*3:3]
    (s2,) = load_benchmark("scannet", root, "pose_trajectory", sequences=["scene0707_00"], num_frames=3, stride=4)
    assert s2.frame_ids == ["0", "4", "8"]
    T = _c2w(109)
    X = _point_in_front(T)
    Xc = np.linalg.inv(T) @ np.append(X, 1)
    x = Kc @ Xc[:3]
    np.testing.assert_allclose(_project_loaded(s, 3, X), x[:2] / x[2], atol=1e-6)
    d = s.select([1]).load_depths()[0]
    assert d.shape == (16, 20)  # resampled onto the colour grid
    assert d[4, 6] == pytest.approx(4.321) and d[0, 0] == pytest.approx(1.003)  # /1000, depth (2,3) -> colour (4,6)
    with pytest.raises(BenchmarkError, match="missing sequence.*scene0708_00"):
        load_benchmark("scannet", root, "pose_trajectory")
    _scannet(root, "scene0708_00", n=7, bad_pose_at=3)
    with pytest.warns(UserWarning, match="non-finite ground-truth pose"):
        seqs = load_benchmark("scannet", root, "pose_trajectory", sequences=["scene0707_00", "scene0708_00"])
    assert _names(seqs) == ["scene0707_00"]
    os.remove(f"{root}/scene0707_00/pose/11.txt")
    with pytest.raises(BenchmarkError, match="frame counts disagree .images=12, depths=12, poses=11."):
        load_benchmark("scannet", root, "pose_trajectory", sequences=["scene0707_00"])


# ----------------------------------------------------------------------------- RealEstate10K

# π³ datasets/seq-id-maps/Re10K_relpose_seq-id-map_seed42.json, first two entries (sequences with
# 279 and 237 camera lines).
RE10K_SEQ1 = ("000c3ab189999a83", 279, [30, 126, 199, 142, 254, 237, 97, 206, 258, 144])
RE10K_SEQ2 = ("000db54a47bd43fe", 237, [99, 6, 233, 223, 58, 185, 75, 104, 180, 122])


def _re10k(root, seq, n, by_timestamp=False):
    lines = ["https://www.youtube.com/watch?v=xyz"]
    for i in range(n):
        stamp = 50_000_000 + 33_367 * i
        w2c = np.linalg.inv(_c2w(i))[:3]
        lines.append(f"{stamp} 0.{500 + i % 7} 0.8{i % 5} 0.49 0.51 0 0 " + " ".join(f"{v:.10f}" for v in w2c.ravel()))
        _image(f"{root}/{seq}/images/{stamp if by_timestamp else f'{i:04d}'}.png")
    _text(f"{root}/metadata/test/{seq}.txt", "\n".join(lines) + "\n")


def test_re10k_seeded_selection_matches_pi3(tmp_path):
    root = str(tmp_path / "re10k")
    _re10k(root, RE10K_SEQ1[0], RE10K_SEQ1[1])
    _re10k(root, "000c5short", 6)  # sorts between the two; < 10 frames: skipped without a draw
    _re10k(root, RE10K_SEQ2[0], RE10K_SEQ2[1], by_timestamp=True)
    lists = str(tmp_path / "out" / "re10k_frames.json")
    seqs = load_benchmark("re10k", root, "pose_angular", frame_lists=lists)
    assert _names(seqs) == [RE10K_SEQ1[0], RE10K_SEQ2[0]]
    assert [s.frame_ids for s in seqs] == [[str(50_000_000 + 33_367 * i) for i in ids] for ids in (RE10K_SEQ1[2], RE10K_SEQ2[2])]
    assert json.load(open(lists)) == {RE10K_SEQ1[0]: RE10K_SEQ1[2], RE10K_SEQ2[0]: RE10K_SEQ2[2]}
    # Raw convention: w2c from the file, intrinsics normalised by the image size, continuous coordinates.
    s, i = seqs[0], RE10K_SEQ1[2][3]
    c2w = _c2w(i)
    X = _point_in_front(c2w)
    Xc = (np.linalg.inv(c2w) @ np.append(X, 1))[:3]
    fx, fy = float(f"0.{500 + i % 7}") * W, float(f"0.8{i % 5}") * H
    u, v = fx * Xc[0] / Xc[2] + 0.49 * W, fy * Xc[1] / Xc[2] + 0.51 * H  # origin at the image corner
    np.testing.assert_allclose(_project_loaded(s, 3, X), [u - 0.5, v - 0.5], atol=1e-6)
    # The saved lists are reused (and win over the seed).
    json.dump({RE10K_SEQ1[0]: [1, 2, 3]}, open(lists, "w"))
    (again,) = load_benchmark("re10k", root, "pose_angular", frame_lists=lists)
    assert again.frame_ids == [str(50_000_000 + 33_367 * i) for i in (1, 2, 3)]
    os.remove(f"{root}/{RE10K_SEQ1[0]}/images/0100.png")
    with pytest.raises(BenchmarkError, match="278 frames on disk for 279 camera lines"):
        load_benchmark("re10k", root, "pose_angular", sequences=[RE10K_SEQ1[0]])
    with pytest.raises(BenchmarkError, match="missing sequence.*nothere"):
        load_benchmark("re10k", root, "pose_angular", sequences=["nothere"])


# ----------------------------------------------------------------------------- CO3Dv2

# π³ datasets/seq-id-maps/CO3Dv2_relpose_seq-id-map_seed42.json, first entry (202 frames).
CO3D_SEQ1 = ("110_13051_23361", 202, [95, 15, 30, 159, 186, 115, 69, 172, 161, 45])


def _co3d_frame(category, seq, k, size=(H, W)):
    rng = np.random.default_rng(k)
    return {
        "filepath": f"{category}/{seq}/images/frame{k + 1:06d}.jpg",
        "R": Rotation.from_rotvec(rng.normal(scale=0.5, size=3)).as_matrix().tolist(),
        "T": rng.normal(size=3).tolist(),
        "focal_length": [1.8 + 0.01 * k, 1.9],
        "principal_point": [0.05, -0.03],
        "bbox": [0, 0, size[1], size[0]],
    }


def _pytorch3d_pixel(fr, X, hw):
    """PyTorch3D: X_cam = X R + T (row vector), NDC x = f X/Z + p with +X left, +Y up; isotropic
    NDC -> screen (image corner at 0): u = W/2 - x_ndc s, s = min(H, W)/2; then pixel centres at
    integers: -1/2."""
    Xc = np.asarray(X) @ np.array(fr["R"]) + np.array(fr["T"])
    xn = fr["focal_length"][0] * Xc[0] / Xc[2] + fr["principal_point"][0]
    yn = fr["focal_length"][1] * Xc[1] / Xc[2] + fr["principal_point"][1]
    s = min(hw) / 2.0
    return np.array([hw[1] / 2.0 - xn * s - 0.5, hw[0] / 2.0 - yn * s - 0.5])


def test_co3d_preprocessed_annotations(tmp_path):
    root = str(tmp_path / "co3d" / "data")
    ann = {
        "short_seq": [_co3d_frame("apple", "short_seq", k) for k in range(40)],  # < 50 frames: dropped
        "bad_seq": [_co3d_frame("apple", "bad_seq", k) for k in range(60)],  # a huge translation: dropped
        CO3D_SEQ1[0]: [_co3d_frame("apple", CO3D_SEQ1[0], k) for k in range(CO3D_SEQ1[1])],
    }
    ann["bad_seq"][5]["T"] = [1e6, 0, 0]
    os.makedirs(tmp_path / "co3d" / "co3d_v2_annotations")
    with gzip.open(tmp_path / "co3d" / "co3d_v2_annotations" / "apple_test.jgz", "wt") as f:
        json.dump(ann, f)
    for k in range(CO3D_SEQ1[1]):
        _image(f"{root}/apple/{CO3D_SEQ1[0]}/images/frame{k + 1:06d}.jpg")
    lists = str(tmp_path / "frames.json")
    (s,) = load_benchmark("co3d", root, "pose_angular", categories=["apple"], frame_lists=lists)
    assert s.name == CO3D_SEQ1[0] and s.frame_ids == [f"frame{k + 1:06d}" for k in CO3D_SEQ1[2]]
    assert json.load(open(lists)) == {CO3D_SEQ1[0]: CO3D_SEQ1[2]}
    for j, k in enumerate(CO3D_SEQ1[2][:3]):
        fr = ann[CO3D_SEQ1[0]][k]
        c = np.linalg.inv(np.array(fr["R"]).T) @ -np.array(fr["T"])  # camera centre: X R + T = 0
        X = c + 3.0 * np.array(fr["R"])[:, 2] + 0.1 * np.array(fr["R"])[:, 0]  # in front (+Z column of R)
        np.testing.assert_allclose(_project_loaded(s, j, X), _pytorch3d_pixel(fr, X, (H, W)), atol=1e-8)
    with pytest.raises(BenchmarkError, match="missing sequence.*short_seq"):
        load_benchmark("co3d", root, "pose_angular", categories=["apple"], sequences=["short_seq"])
    with pytest.raises(BenchmarkError, match="banana_test.jgz: missing annotation file"):
        load_benchmark("co3d", root, "pose_angular", categories=["banana"])


def test_co3d_raw_annotations(tmp_path):
    root = str(tmp_path / "co3d")
    cat, good, low = "hotdog", "600_1_2", "600_3_4"
    frames, test = [], []
    for seq in (good, low):
        for k in range(12):
            fr = _co3d_frame(cat, seq, k, size=(12, 16))
            frames.append(
                {
                    "sequence_name": seq,
                    "frame_number": k,
                    "frame_timestamp": k / 30,
                    "image": {"path": fr["filepath"], "size": [12, 16]},
                    "viewpoint": {k2: fr[k2] for k2 in ("R", "T", "focal_length", "principal_point")} | {"intrinsics_format": "ndc_isotropic"},
                }
            )
            test.append([seq, k, fr["filepath"]])
            _image(f"{root}/{fr['filepath']}", 12, 16)
            mask = np.zeros((12, 16), np.uint8)
            if k != 4:  # frame 4's mask is empty: dropped, as relpose++'s preprocessing does
                mask[3:6, 4:9] = 255
            os.makedirs(os.path.dirname(f"{root}/{fr['filepath']}".replace("images", "masks")), exist_ok=True)
            cv2.imwrite(f"{root}/{fr['filepath']}".replace("images", "masks").replace(".jpg", ".png"), mask)
    with gzip.open(f"{root}/{cat}/frame_annotations.jgz", "wt") as f:
        json.dump(frames, f)
    with gzip.open(f"{root}/{cat}/sequence_annotations.jgz", "wt") as f:
        json.dump([{"sequence_name": good, "viewpoint_quality_score": 0.9}, {"sequence_name": low, "viewpoint_quality_score": 0.2}], f)
    _text(f"{root}/{cat}/set_lists/set_lists_fewview_dev.json", json.dumps({"train": [], "test": test}))
    (s,) = load_benchmark("co3d", root, "pose_angular", categories=[cat], min_num_images=5, num_frames=11)
    assert s.name == good and sorted(s.frame_ids) == sorted(f"frame{k + 1:06d}" for k in range(12) if k != 4)
    j = s.frame_ids.index("frame000003")
    fr = _co3d_frame(cat, good, 2, size=(12, 16))
    c = np.linalg.inv(np.array(fr["R"]).T) @ -np.array(fr["T"])
    X = c + 2.0 * np.array(fr["R"])[:, 2] - 0.2 * np.array(fr["R"])[:, 1]
    np.testing.assert_allclose(_project_loaded(s, j, X), _pytorch3d_pixel(fr, X, (12, 16)), atol=1e-8)


# ----------------------------------------------------------------------------- 7-Scenes


def _seven_scenes(root, n=401):
    _text(f"{root}/chess/TestSplit.txt", "sequence3\n")
    d = f"{root}/chess/seq-03"
    eye = "\n".join(" ".join(map(str, r)) for r in np.eye(4)) + "\n"
    dep = cv2.imencode(".png", np.array([[1500, 65535, 12000, 0] + [800] * (W - 4)] * H, np.uint16))[1].tobytes()
    for i in range(n):
        _image(f"{d}/frame-{i:06d}.color.png")
        _write(f"{d}/frame-{i:06d}.depth.proj.png", dep)
        T = _c2w(i) if i % 200 == 0 else np.eye(4)
        _text(f"{d}/frame-{i:06d}.pose.txt", "\n".join(" ".join(f"{v:.9e}" for v in r) for r in T) + "\n" if i % 200 == 0 else eye)


def test_seven_scenes(tmp_path):
    root = str(tmp_path / "7scenes")
    _seven_scenes(root)
    (s,) = load_benchmark("7scenes-sparse", root, "pointmap")
    assert s.name == "chess/seq-03" and s.frame_ids == ["frame-000000", "frame-000200", "frame-000400"]
    (dense,) = load_benchmark("7scenes-dense", root, "pointmap")
    assert dense.frame_ids == [f"frame-{i:06d}" for i in range(0, 401, 40)]
    T = _c2w(200)
    X = _point_in_front(T)
    Xc = np.linalg.inv(T) @ np.append(X, 1)
    np.testing.assert_allclose(_project_loaded(s, 1, X), [525 * Xc[0] / Xc[2] + 320, 525 * Xc[1] / Xc[2] + 240], atol=1e-6)
    d = s.load_depths()[0, 0]
    np.testing.assert_allclose(d[:5], [1.5, 0, 0, 0, 0.8], rtol=1e-6)  # mm; 65535, > 10 m and 0 invalid
    _text(f"{root}/chess/TestSplit.txt", "sequence3\nsequence5\n")
    with pytest.raises(BenchmarkError, match="missing sequence dir.*chess/seq-05"):
        load_benchmark("7scenes-sparse", root, "pointmap")
    os.remove(f"{root}/chess/seq-03/frame-000400.pose.txt")
    with pytest.raises(BenchmarkError, match="frame counts disagree .images=401, depths=401, poses=400."):
        load_benchmark("7scenes-sparse", root, "pointmap", sequences=["chess/seq-03"])


# ----------------------------------------------------------------------------- NRGBD


def test_nrgbd(tmp_path):
    root = str(tmp_path / "nrgbd")
    d = f"{root}/kitchen"
    n = 501
    dep = cv2.imencode(".png", np.full((H, W), 2345, np.uint16))[1].tobytes()
    poses_gl = []
    for i in range(n):
        _image(f"{d}/images/img{i}.png")
        _write(f"{d}/depth/depth{i}.png", dep)
        poses_gl.append(_c2w(i) if i % 100 == 0 else np.eye(4))
    _text(f"{d}/poses.txt", "".join(" ".join(f"{v:.9f}" for v in r) + "\n" for T in poses_gl for r in T))
    (s,) = load_benchmark("nrgbd-sparse", root, "pointmap")
    assert s.name == "kitchen" and s.frame_ids == ["0", "500"]
    (dense,) = load_benchmark("nrgbd-dense", root, "pointmap")
    assert dense.frame_ids == [str(i) for i in range(0, 501, 100)]
    # OpenGL camera: looks down -z, y up. Pixel u = f x / (-z) + cx, v = f (-y) / (-z) + cy.
    T = poses_gl[500]
    X = T[:3, :3] @ np.array([0.3, 0.1, -4.0]) + T[:3, 3]
    x, y, z = (np.linalg.inv(T) @ np.append(X, 1))[:3]
    f = 554.2562584220408
    np.testing.assert_allclose(_project_loaded(s, 1, X), [f * x / -z + 320, f * -y / -z + 240], atol=1e-6)
    np.testing.assert_allclose(s.load_depths(), 2.345, rtol=1e-6)
    with open(f"{d}/poses.txt", "a") as fh:
        fh.write("1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    with pytest.raises(BenchmarkError, match="frame counts disagree .images=501, depths=501, poses=502."):
        load_benchmark("nrgbd-sparse", root, "pointmap")


# ----------------------------------------------------------------------------- generic


def test_generic_cameras_json_and_colmap(tmp_path):
    from flow3r_jax.export.formats import CameraModel, write_cameras_json, write_colmap_model

    names = [f"f{i:02d}.png" for i in range(5)]
    poses = np.stack([_c2w(200 + i) for i in range(5)])
    cam = CameraModel(width=W, height=H, fx=12.0, fy=13.0, cx=5.0, cy=4.0)  # (0.5, 0.5) pixel-centre convention
    for kind in ("json", "colmap"):
        d = str(tmp_path / kind / "scene")
        for n in names:
            _image(f"{d}/images/{n}")
        if kind == "json":
            write_cameras_json(f"{d}/cameras.json", names, poses, cam)
        else:
            write_colmap_model(f"{d}/sparse/0", names, poses, cam)
        (s,) = load_benchmark("generic", str(tmp_path / kind), "pose_trajectory")
        assert s.name == "scene" and s.frame_ids == [n[:-4] for n in names]
        X = _point_in_front(poses[2])
        Xc = (np.linalg.inv(poses[2]) @ np.append(X, 1))[:3]
        u, v = 12.0 * Xc[0] / Xc[2] + 5.0, 13.0 * Xc[1] / Xc[2] + 4.0
        np.testing.assert_allclose(_project_loaded(s, 2, X), [u - 0.5, v - 0.5], atol=1e-6)
    _image(str(tmp_path / "json" / "scene" / "images" / "f99.png"))
    with pytest.raises(BenchmarkError, match="frame counts disagree .images=6 .*ground-truth cameras=5.*f99.png"):
        load_benchmark("generic", str(tmp_path / "json"), "pose_trajectory")
    with pytest.raises(BenchmarkError, match="needs ground-truth depth"):
        load_benchmark("generic", str(tmp_path / "colmap"), "video_depth")
    lists = str(tmp_path / "g.json")
    (a,) = load_benchmark("generic", str(tmp_path / "colmap"), "pose_angular", num_frames=3, frame_lists=lists)
    (b,) = load_benchmark("generic", str(tmp_path / "colmap"), "pose_angular", frame_lists=lists)
    assert len(a) == 3 and a.frame_ids == b.frame_ids


def test_generic_tum_trajectory_and_depth(tmp_path):
    d = str(tmp_path / "seq")
    t = 100.0 + np.arange(4) / 10.0
    lines = []
    for i, ti in enumerate(t):
        _image(f"{d}/images/{ti:.3f}.png")
        os.makedirs(f"{d}/depth", exist_ok=True)
        np.save(f"{d}/depth/{ti:.3f}.npy", np.full((H, W), 1.25 * (i + 1), np.float32))
        q = Rotation.from_rotvec([0.0, 0.1 * i, 0.0]).as_quat()
        lines.append(f"{ti + 0.003} {i} 0 0 {q[0]} {q[1]} {q[2]} {q[3]}")
    _text(f"{d}/groundtruth.txt", "\n".join(lines) + "\n")
    (s,) = load_benchmark("generic", d, "video_depth", intrinsics=(20.0, 20.0, 4.5, 3.5))
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec([0.0, 0.2, 0.0]).as_matrix()
    T[:3, 3] = [2, 0, 0]
    np.testing.assert_allclose(s.poses[2], T, atol=1e-9)
    np.testing.assert_allclose(s.load_depths()[:, 0, 0], [1.25, 2.5, 3.75, 5.0])
    _image(f"{d}/images/{105.0:.3f}.png")
    with pytest.raises(BenchmarkError, match="groundtruth.txt: 1 frame timestamp.*no ground truth within 0.02 s.*first: 105.000000"):
        load_benchmark("generic", d, "pose_trajectory")


def test_nyu_pairs_images_with_depth_by_name(tmp_path):
    root = tmp_path / "nyu" / "val"
    depth = np.random.default_rng(0).uniform(0.5, 9.0, (H, W)).astype(np.float32)
    depth[0, 0] = np.nan
    for name in ("00001", "00002"):
        _write(str(root / "nyu_images" / f"{name}.png"), _PNG)
        os.makedirs(root / "nyu_depths", exist_ok=True)
        np.save(root / "nyu_depths" / f"{name}.npy", depth * int(name))
    seqs = load_benchmark("nyu-v2", str(tmp_path / "nyu"), "mono_depth")
    assert [s.frame_ids for s in seqs] == [["00001"], ["00002"]] and seqs[0].intrinsics is None  # not 640x480
    d = seqs[1].load_depths()[0]
    assert d[0, 0] == 0.0 and np.allclose(d[1:], 2 * depth[1:])
    os.remove(root / "nyu_depths" / "00002.npy")
    with pytest.raises(BenchmarkError, match=r"frame counts disagree \(images=2, depths=1\)"):
        load_benchmark("nyu-v2", str(tmp_path / "nyu"), "mono_depth")
