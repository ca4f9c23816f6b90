"""Writing reconstructions: `cameras.json`, a nerfstudio `transforms.json` and a COLMAP sparse
model (binary or text), plus a reader of the same COLMAP files (for round-trip tests and tools
without pycolmap).

Conventions: poses are flow3r_jax camera-to-world 4x4 matrices with OpenCV axes; COLMAP stores
world-to-camera rotations as unit quaternions (w, x, y, z) and translations, with the same
camera axes. COLMAP's pixel coordinates put the centre of the top-left pixel at (0.5, 0.5), as
flow3r_jax does, so principal points and 2D observations transfer unchanged.

COLMAP model (`sparse/0`, written as COLMAP 3.x's cameras / images / points3D files, which
current COLMAP and pycolmap read, adding a trivial rig per camera): one PINHOLE camera shared by
all images; each image lists its 2D observations of the exported 3D points; each 3D point has a
track of length one (the frame its depth came from), colour and zero error.

nerfstudio (`transforms.json`): camera-to-world matrices with OpenGL camera axes (x right, y up,
z back), i.e. ours times diag(1, -1, -1, 1) (`opencv_to_opengl`); the world frame is ours, as it
is (nerfstudio's data parser re-orients and re-centres it by default). Intrinsics are the
PINHOLE camera's, written as nerfstudio's "OPENCV" model with zero distortion; nerfstudio also
puts pixel centres at +0.5, so cx, cy transfer unchanged.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

__all__ = ["CameraModel", "write_cameras_json", "write_transforms_json", "opencv_to_opengl", "write_colmap_model", "read_colmap_model", "ColmapModel"]

_PINHOLE = 1  # COLMAP camera model ids
_SIMPLE_PINHOLE = 0
_MODEL_PARAMS = {_SIMPLE_PINHOLE: 3, _PINHOLE: 4, 2: 4, 3: 5, 4: 8, 5: 8, 6: 12, 7: 5, 8: 4, 9: 5, 10: 12}
_MODEL_NAMES = {_SIMPLE_PINHOLE: "SIMPLE_PINHOLE", _PINHOLE: "PINHOLE"}
_INVALID_POINT3D = 2**64 - 1


class CameraModel(dict):
    """A pinhole camera in pixels of the images it describes: width, height, fx, fy, cx, cy."""


def _rot_to_quat(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z), w >= 0, of a rotation matrix (float64, Shepperd's method)."""
    R = np.asarray(R, np.float64)
    t = np.trace(R)
    if t > 0:
        s = 2.0 * np.sqrt(1.0 + t)
        q = np.array([0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s])
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(max(1.0 + R[i, i] - R[j, j] - R[k, k], 1e-300))
        q = np.empty(4)
        q[0] = (R[k, j] - R[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (R[j, i] + R[i, j]) / s
        q[1 + k] = (R[k, i] + R[i, k]) / s
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def _quat_to_rot(q) -> np.ndarray:
    w, x, y, z = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def _world_to_camera(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c2w = np.asarray(c2w, np.float64)
    R = c2w[:3, :3].T
    # Re-orthonormalise (float32 inputs): the nearest rotation.
    U, _, Vt = np.linalg.svd(R)
    R = U @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))]) @ Vt
    return R, -R @ c2w[:3, 3]


def write_cameras_json(path: str, names: list[str], poses: np.ndarray, camera: CameraModel, extra: dict | None = None) -> None:
    """cameras.json: per frame the image name, the 4x4 camera-to-world pose and fx fy cx cy in
    pixels of the input images, plus the image size and the conventions."""
    poses = np.asarray(poses, np.float64)
    if len(names) != len(poses):
        raise ValueError(f"write_cameras_json: {len(names)} names but {len(poses)} poses")
    doc = {
        "conventions": "camera_to_world 4x4, OpenCV camera axes (x right, y down, z forward); intrinsics in pixels of the "
        "input images with the centre of the top-left pixel at (0.5, 0.5); frame 0 at the origin; arbitrary global scale",
        "width": int(camera["width"]),
        "height": int(camera["height"]),
        "frames": [
            {
                "image_name": str(n),
                "camera_to_world": [[float(v) for v in row] for row in T],
                "fx": float(camera["fx"]),
                "fy": float(camera["fy"]),
                "cx": float(camera["cx"]),
                "cy": float(camera["cy"]),
            }
            for n, T in zip(names, poses)
        ],
    }
    if extra:
        doc.update(extra)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)


def opencv_to_opengl(c2w: np.ndarray) -> np.ndarray:
    """Camera-to-world (..., 4, 4) with OpenCV camera axes -> the same cameras with OpenGL axes
    (x right, y up, z back): the camera's y and z columns change sign."""
    return np.asarray(c2w, np.float64) @ np.diag([1.0, -1.0, -1.0, 1.0])


def write_transforms_json(
    path: str,
    file_paths: list[str],
    poses: np.ndarray,
    camera: CameraModel,
    depth_paths: list[str] | None = None,
    extra: dict | None = None,
) -> None:
    """nerfstudio's `transforms.json`: shared intrinsics (fl_x fl_y cx cy w h, camera_model
    OPENCV with zero distortion) and per frame the image `file_path` (relative to the file's
    folder), the OpenGL-axes camera-to-world `transform_matrix` and, when given,
    `depth_file_path`."""
    poses = opencv_to_opengl(poses)
    if len(file_paths) != len(poses) or (depth_paths is not None and len(depth_paths) != len(poses)):
        raise ValueError(f"write_transforms_json: {len(file_paths)} images, {len(poses)} poses, {None if depth_paths is None else len(depth_paths)} depth maps")
    frames = []
    for k, (fp, T) in enumerate(zip(file_paths, poses)):
        frame = {"file_path": str(fp), "transform_matrix": [[float(v) for v in row] for row in T]}
        if depth_paths is not None:
            frame["depth_file_path"] = str(depth_paths[k])
        frames.append(frame)
    doc = {
        "camera_model": "OPENCV",
        "fl_x": float(camera["fx"]),
        "fl_y": float(camera["fy"]),
        "cx": float(camera["cx"]),
        "cy": float(camera["cy"]),
        "w": int(camera["width"]),
        "h": int(camera["height"]),
        "k1": 0.0,
        "k2": 0.0,
        "p1": 0.0,
        "p2": 0.0,
        "frames": frames,
    }
    if extra:
        doc.update(extra)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)


def write_colmap_model(
    directory: str,
    names: list[str],
    poses: np.ndarray,
    camera: CameraModel,
    points: np.ndarray | None = None,
    colors: np.ndarray | None = None,
    observations: tuple[np.ndarray, np.ndarray] | None = None,
    binary: bool = True,
) -> None:
    """Writes cameras, images and points3D (.bin or .txt) into `directory`.

    points (P, 3) world coordinates, colors (P, 3) uint8; observations (image index (P,), xy
    (P, 2) in input-image pixels): where each point was seen (its track of length one)."""
    os.makedirs(directory, exist_ok=True)
    poses = np.asarray(poses, np.float64)
    n_img = len(names)
    if len(poses) != n_img:
        raise ValueError(f"write_colmap_model: {n_img} names but {len(poses)} poses")
    points = np.zeros((0, 3)) if points is None else np.asarray(points, np.float64)
    P = len(points)
    colors = np.zeros((P, 3), np.uint8) if colors is None else np.asarray(colors, np.uint8)
    if observations is None:
        obs_img, obs_xy = np.zeros(0, np.int64), np.zeros((0, 2))
        if P:
            raise ValueError("write_colmap_model: points need observations (image index, xy)")
    else:
        obs_img, obs_xy = np.asarray(observations[0], np.int64), np.asarray(observations[1], np.float64)
    # Per image: its observations in point order, so point2D_idx is the rank within the image.
    per_image = [np.nonzero(obs_img == i)[0] for i in range(n_img)]
    point2d_idx = np.zeros(P, np.int64)
    for ids in per_image:
        point2d_idx[ids] = np.arange(len(ids))
    cam_params = [camera["fx"], camera["fy"], camera["cx"], camera["cy"]]
    W, H = int(camera["width"]), int(camera["height"])
    extrinsics = [_world_to_camera(T) for T in poses]
    if binary:
        with open(os.path.join(directory, "cameras.bin"), "wb") as f:
            f.write(struct.pack("<Q", 1))
            f.write(struct.pack("<IiQQ", 1, _PINHOLE, W, H))
            f.write(struct.pack("<4d", *cam_params))
        with open(os.path.join(directory, "images.bin"), "wb") as f:
            f.write(struct.pack("<Q", n_img))
            for i, (name, (R, t)) in enumerate(zip(names, extrinsics)):
                f.write(struct.pack("<I4d3dI", i + 1, *_rot_to_quat(R), *t, 1))
                f.write(name.encode("utf-8") + b"\x00")
                ids = per_image[i]
                f.write(struct.pack("<Q", len(ids)))
                if len(ids):
                    rec = np.zeros(len(ids), dtype=[("x", "<f8"), ("y", "<f8"), ("id", "<u8")])
                    rec["x"], rec["y"], rec["id"] = obs_xy[ids, 0], obs_xy[ids, 1], ids + 1
                    f.write(rec.tobytes())
        with open(os.path.join(directory, "points3D.bin"), "wb") as f:
            f.write(struct.pack("<Q", P))
            if P:
                rec = np.zeros(
                    P,
                    dtype=[("id", "<u8"), ("xyz", "<f8", 3), ("rgb", "u1", 3), ("err", "<f8"), ("len", "<u8"), ("img", "<u4"), ("idx", "<u4")],
                )
                rec["id"] = np.arange(1, P + 1)
                rec["xyz"], rec["rgb"], rec["len"] = points, colors, 1
                rec["img"], rec["idx"] = obs_img + 1, point2d_idx
                f.write(rec.tobytes())
        return
    with open(os.path.join(directory, "cameras.txt"), "w") as f:
        f.write("# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n")
        f.write(f"1 PINHOLE {W} {H} " + " ".join(repr(float(v)) for v in cam_params) + "\n")
    with open(os.path.join(directory, "images.txt"), "w") as f:
        f.write("# IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n#   POINTS2D[] as (X, Y, POINT3D_ID)\n")
        for i, (name, (R, t)) in enumerate(zip(names, extrinsics)):
            f.write(" ".join([str(i + 1), *(repr(float(v)) for v in _rot_to_quat(R)), *(repr(float(v)) for v in t), "1", name]) + "\n")
            f.write(" ".join(f"{float(obs_xy[k, 0])!r} {float(obs_xy[k, 1])!r} {k + 1}" for k in per_image[i]) + "\n")
    with open(os.path.join(directory, "points3D.txt"), "w") as f:
        f.write("# POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n")
        for k in range(P):
            x, y, z = (float(v) for v in points[k])
            r, g, b = (int(v) for v in colors[k])
            f.write(f"{k + 1} {x!r} {y!r} {z!r} {r} {g} {b} 0 {int(obs_img[k]) + 1} {int(point2d_idx[k])}\n")


class ColmapModel(dict):
    """cameras {id: (model_id, width, height, params)}, images {id: (name, camera_id,
    camera_to_world 4x4, xy (n, 2), point3D ids (n,))}, points3D {id: (xyz, rgb, track
    [(image_id, point2d_idx), ...])}."""


def read_colmap_model(directory: str) -> ColmapModel:
    """Reads cameras / images / points3D (.bin preferred, else .txt) written by COLMAP or by
    `write_colmap_model`."""
    binary = os.path.isfile(os.path.join(directory, "cameras.bin"))
    if not binary and not os.path.isfile(os.path.join(directory, "cameras.txt")):
        raise FileNotFoundError(f"{directory}: no cameras.bin or cameras.txt")
    cameras, images, points = {}, {}, {}

    def pose(q, t):
        R = _quat_to_rot(q)
        T = np.eye(4)
        T[:3, :3] = R.T
        T[:3, 3] = -R.T @ np.asarray(t)
        return T

    if binary:
        with open(os.path.join(directory, "cameras.bin"), "rb") as f:
            for _ in range(struct.unpack("<Q", f.read(8))[0]):
                cid, model, w, h = struct.unpack("<IiQQ", f.read(24))
                n = _MODEL_PARAMS[model]
                cameras[cid] = (model, w, h, np.array(struct.unpack(f"<{n}d", f.read(8 * n))))
        with open(os.path.join(directory, "images.bin"), "rb") as f:
            for _ in range(struct.unpack("<Q", f.read(8))[0]):
                iid, qw, qx, qy, qz, tx, ty, tz, cid = struct.unpack("<I4d3dI", f.read(64))
                name = b""
                while (c := f.read(1)) != b"\x00":
                    name += c
                n = struct.unpack("<Q", f.read(8))[0]
                rec = np.frombuffer(f.read(24 * n), dtype=[("x", "<f8"), ("y", "<f8"), ("id", "<u8")])
                images[iid] = (name.decode("utf-8"), cid, pose((qw, qx, qy, qz), (tx, ty, tz)), np.stack([rec["x"], rec["y"]], -1), rec["id"].copy())
        with open(os.path.join(directory, "points3D.bin"), "rb") as f:
            for _ in range(struct.unpack("<Q", f.read(8))[0]):
                pid, x, y, z, r, g, b, _err, n = struct.unpack("<Q3d3BdQ", f.read(43 + 8))
                track = np.frombuffer(f.read(8 * n), dtype="<u4").reshape(n, 2)
                points[pid] = (np.array([x, y, z]), np.array([r, g, b], np.uint8), [tuple(map(int, e)) for e in track])
    else:
        names = {"SIMPLE_PINHOLE": 0, "PINHOLE": 1}
        for line in _data_lines(os.path.join(directory, "cameras.txt")):
            v = line.split()
            cameras[int(v[0])] = (names[v[1]], int(v[2]), int(v[3]), np.array([float(x) for x in v[4:]]))
        lines = _data_lines(os.path.join(directory, "images.txt"), keep_empty=True)
        for head, obs in zip(lines[0::2], lines[1::2]):
            v = head.split()
            o = np.array([float(x) for x in obs.split()]).reshape(-1, 3)
            images[int(v[0])] = (v[9], int(v[8]), pose([float(x) for x in v[1:5]], [float(x) for x in v[5:8]]), o[:, :2], o[:, 2].astype(np.uint64))
        for line in _data_lines(os.path.join(directory, "points3D.txt")):
            v = line.split()
            tr = [int(x) for x in v[8:]]
            points[int(v[0])] = (np.array([float(x) for x in v[1:4]]), np.array([int(x) for x in v[4:7]], np.uint8), list(zip(tr[0::2], tr[1::2])))
    return ColmapModel(cameras=cameras, images=images, points3D=points)


def _data_lines(path, keep_empty=False):
    with open(path) as f:
        lines = [ln.rstrip("\n") for ln in f if not ln.startswith("#")]
    return lines if keep_empty else [ln for ln in lines if ln.strip()]
