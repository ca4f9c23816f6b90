"""Recreate the small real-video benchmark set under /work/data/real_clips from git mirrors.

Usage::

    python benchmarks/real_clips_prepare.py --mirror-root /work/.mirror --out /work/data/real_clips

Each clip is a folder ``<out>/<clip>/`` with ``images/`` (time order = natural file-name order),
ground truth as ``groundtruth.txt`` (TUM trajectory, camera-to-world, OpenCV camera axes,
quaternion scalar-last, image stems are the timestamps) or ``cameras.json`` (the format read by
``flow3r_jax.eval.benchmarks.generic.read_cameras_json``: per frame ``image_name``,
``camera_to_world`` 4x4 OpenCV axes and ``fx fy cx cy`` in pixels with the centre of the top-left
pixel at (0.5, 0.5)), and ``clip.json`` (kind, source, dataset, licence, intrinsics in pixels of the
stored images with the top-left pixel centre at (0, 0), motion statistics, notes).

Where the clips come from (the data itself is NOT in this repository):

``tum_fr3_long_office`` -- kind ``handheld_translating``
    Images: 17 colour frames (640x480 PNG, ~1 s apart) of the TUM RGB-D sequence
    ``rgbd_dataset_freiburg3_long_office_household``, shipped as demo data in
    github.com/magicleap/SuperGluePretrainedNetwork @ ddcf11f42e7e0732a0c4607648f9448ea8d73590,
    path ``assets/freiburg_sequence/<timestamp>.png``.
    Ground truth: the sequence's official motion-capture trajectory ``groundtruth.txt`` shipped in
    github.com/yanmin-wu/EAO-SLAM @ 126e5eb36f44cf970e2e25e02e9c8d0660896f55, path
    ``data/groundtruth.txt`` (header ``file: 'rgbd_dataset_freiburg3_long_office_household.bag'``).
    Dataset: TUM RGB-D benchmark (Sturm et al., IROS 2012), licence CC BY 4.0 (the TUM page states
    "Creative Commons 4.0 Attribution License"; older pages say CC BY 3.0).  The hosting repositories'
    own code licences (SuperGlue: academic non-commercial; EAO-SLAM: GPL) do not change the dataset
    licence but note them when redistributing.
    Only 16 frames are usable (the first image, 1341847980.722988, is 67 ms before the first
    ground-truth sample and is dropped), below the 20-frame target: the repository has no more.

``fox`` -- kind ``object_ring``
    github.com/NVlabs/instant-ngp @ abe236ee00cf90cfca6e36e65c00435d5b21f50a, path
    ``data/nerf/fox/`` (``images/*.jpg`` 1080x1920 portrait frames of a phone video walking part of a
    ring around a fox figurine, ``transforms.json`` with COLMAP poses converted by instant-ngp's
    colmap2nerf: OpenGL camera axes, world re-oriented/re-centred/re-scaled).  50 of the 67 frames
    listed in transforms.json have their image in the repository; all 50 are used.  Reference poses
    are a COLMAP reconstruction, not an independent measurement.  Licence: the fox data is
    distributed with instant-ngp under the NVIDIA Source Code License (non-commercial research use).

Not found (see the report that came with this script): a rotation-dominant clip (TUM fr1_rpy /
fr1_360 / fr2_rpy) and a forward-driving clip (KITTI odometry / raw with poses) with images in a
public repository reachable from here.  Dead ends checked on a second search (the snapshot store
omits files of 4 MiB and more):

- luigifreda/pyslam ``data/videos/kitti00/video.mp4`` and ``kitti06/video*.mp4``: blobs over 4 MiB, absent
  (only the KITTI 00/06 ground truth and times.txt are there; ``test/data/kitti06-*.png`` are 6 scattered frames).
- MOLAorg/mola_test_datasets ``datasets/kitti/kitti_{00,12}_extract.rawlog``: over 4 MiB, absent.
- Youngkl0726/SLAM-AP_Demo (``Demo00/image_0/*.png``, KITTI 00 frames): snapshot 3.9 GB, over the limit.
- anlee798/python_note ``00/image_0``: 17 frames of 1280x720 RGB, not KITTI.
- MIT-SPARK/Kimera-VIO ``tests/data/MicroEurocDataset``: 95 cam0 frames of EuRoC V1_01_easy
  (1403715273.26-277.96 s) but ``state_groundtruth_estimate0/data.csv`` is absent (>4 MiB); the ground truth
  in rpng/open_vins ``ov_data/euroc_mav/V1_01_easy.txt`` shows the MAV standing still over that window
  (path 1.7 cm, rotation 0.2 deg), so it is no usable clip.

How to get the sources: with the agent tool ``fetch github:magicleap/SuperGluePretrainedNetwork``,
``fetch github:yanmin-wu/EAO-SLAM``, ``fetch github:NVlabs/instant-ngp`` (they land in
``/work/.mirror/<owner>+<name>/repo``, bare git directories); or as a user
``git clone https://github.com/<owner>/<name> <mirror-root>/<owner>+<name>/repo`` (a normal clone
works: ``.git`` is found).  Files are read with ``git show <commit>:<path>`` at the pinned commits.

Only numpy, scipy, Pillow and the standard library (plus the ``git`` executable) are used.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
from scipy.spatial.transform import Rotation, Slerp

MAX_WIDTH = 640

# --------------------------------------------------------------------------------------------
# Clip table.  repo: GitHub owner/name; commit: pinned commit; paths inside the repo.
# frames: how frames are selected; poses: how poses are converted.
# --------------------------------------------------------------------------------------------
CLIPS = [
    {
        "name": "tum_fr3_long_office",
        "kind": "handheld_translating",
        "format": "tum",
        "images": {
            "repo": "magicleap/SuperGluePretrainedNetwork",
            "commit": "ddcf11f42e7e0732a0c4607648f9448ea8d73590",
            "dir": "assets/freiburg_sequence",
        },
        "groundtruth": {
            "repo": "yanmin-wu/EAO-SLAM",
            "commit": "126e5eb36f44cf970e2e25e02e9c8d0660896f55",
            "path": "data/groundtruth.txt",
        },
        # every image whose timestamp lies within the ground truth (bracketing samples <= 20 ms away)
        "frames": "all images with ground truth at most 20 ms away on both sides (drops the first)",
        # TUM freiburg3 colour camera (ROS/OpenCV calibration, pixel centre (0,0)); fr3 images are
        # already undistorted by the sensor driver per the TUM documentation
        "intrinsics": (535.4, 539.2, 320.1, 247.6),
        "poses": "TUM ground truth is already camera-to-world of the colour camera's optical frame "
        "(OpenCV axes), quaternion scalar-last; interpolated (linear / slerp) to the image timestamps",
        "dataset": "TUM RGB-D benchmark, rgbd_dataset_freiburg3_long_office_household (Sturm et al., IROS 2012)",
        "licence": "TUM RGB-D: Creative Commons Attribution 4.0 (CC BY 4.0); hosted in SuperGlue (academic "
        "non-commercial code licence) and EAO-SLAM (GPL-3.0) repositories",
    },
    {
        "name": "fox",
        "kind": "object_ring",
        "format": "cameras_json",
        "images": {
            "repo": "NVlabs/instant-ngp",
            "commit": "abe236ee00cf90cfca6e36e65c00435d5b21f50a",
            "dir": "data/nerf/fox/images",
        },
        "groundtruth": {
            "repo": "NVlabs/instant-ngp",
            "commit": "abe236ee00cf90cfca6e36e65c00435d5b21f50a",
            "path": "data/nerf/fox/transforms.json",
        },
        "frames": "every transforms.json frame whose image is in the repository (50 of 67), numeric order",
        "intrinsics": None,  # from transforms.json (fl_x, fl_y, cx, cy; COLMAP pixel-centre (0.5, 0.5))
        "poses": "transform_matrix is camera-to-world with OpenGL camera axes (x right, y up, z back) in "
        "colmap2nerf's re-oriented world -> right-multiplied by diag(1, -1, -1, 1) for OpenCV axes",
        "dataset": "instant-ngp 'fox' capture (NVIDIA), COLMAP poses via colmap2nerf",
        "licence": "NVIDIA Source Code License for instant-ngp (non-commercial research use)",
    },
]


class PrepareError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------
# git access
# --------------------------------------------------------------------------------------------
def find_git_dir(mirror_root: str, repo: str) -> str:
    owner, name = repo.split("/")
    candidates = [
        os.path.join(mirror_root, f"{owner}+{name}", "repo"),
        os.path.join(mirror_root, f"{owner}+{name}", "repo", ".git"),
        os.path.join(mirror_root, f"{owner}+{name}"),
        os.path.join(mirror_root, f"{owner}+{name}", ".git"),
        os.path.join(mirror_root, owner, name, ".git"),
        os.path.join(mirror_root, name, ".git"),
    ]
    for c in candidates:
        if os.path.isdir(c) and os.path.isfile(os.path.join(c, "HEAD")) and os.path.isdir(os.path.join(c, "objects")):
            return c
    raise PrepareError(
        f"mirror of github:{repo} not found under {mirror_root} (looked for {candidates[0]} and clones). "
        f"Get it with the agent tool `fetch github:{repo}`, or "
        f"`git clone https://github.com/{repo} {candidates[0]}`."
    )


def git_bytes(git_dir: str, commit: str, path: str) -> bytes:
    r = subprocess.run(["git", "--git-dir", git_dir, "show", f"{commit}:{path}"], capture_output=True)
    if r.returncode != 0:
        msg = r.stderr.decode(errors="replace").strip()
        raise PrepareError(f"{git_dir}: cannot read {commit[:12]}:{path} ({msg}); the mirror may lack that commit "
                           "(fetch the full history or re-fetch the repository)")
    if r.stdout.startswith(b"version https://git-lfs"):
        raise PrepareError(f"{git_dir}: {path} is a Git LFS pointer, not the file itself")
    return r.stdout


def git_ls(git_dir: str, commit: str, directory: str) -> list[str]:
    r = subprocess.run(["git", "--git-dir", git_dir, "ls-tree", "--name-only", f"{commit}:{directory}"], capture_output=True)
    if r.returncode != 0:
        raise PrepareError(f"{git_dir}: cannot list {commit[:12]}:{directory} ({r.stderr.decode(errors='replace').strip()})")
    return [n for n in r.stdout.decode().splitlines() if n]


# --------------------------------------------------------------------------------------------
# geometry helpers
# --------------------------------------------------------------------------------------------
def quat_to_rot(q) -> np.ndarray:
    """(qx, qy, qz, qw) -> 3x3 (scipy's scalar-last convention, TUM's)."""
    return Rotation.from_quat(np.asarray(q, np.float64)).as_matrix()


def slerp(q0, q1, a: float) -> np.ndarray:
    """Spherical interpolation between two scalar-last quaternions at a in [0, 1]."""
    return Slerp([0.0, 1.0], Rotation.from_quat([q0, q1]))([a]).as_quat()[0]


def rot_angle_deg(R: np.ndarray) -> float:
    return math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(R) - 1.0) / 2.0))))


def motion_stats(c2w: np.ndarray) -> dict:
    """Path length vs. spread of the camera centres, and rotation (degrees)."""
    c = c2w[:, :3, 3]
    steps = np.linalg.norm(np.diff(c, axis=0), axis=1)
    radius = float(np.max(np.linalg.norm(c - c.mean(0), axis=1)))
    rel = [rot_angle_deg(c2w[i, :3, :3].T @ c2w[i + 1, :3, :3]) for i in range(len(c2w) - 1)]
    from_first = [rot_angle_deg(c2w[0, :3, :3].T @ T[:3, :3]) for T in c2w]
    # viewing-direction spread: angle of each optical axis to the mean optical axis
    z = c2w[:, :3, 2]
    zm = z.mean(0) / np.linalg.norm(z.mean(0))
    return {
        "frames": int(len(c2w)),
        "path_length": float(steps.sum()),
        "trajectory_radius": radius,
        "path_over_radius": float(steps.sum() / radius) if radius > 0 else None,
        "end_to_end": float(np.linalg.norm(c[-1] - c[0])),
        "rotation_total_deg": float(np.sum(rel)),
        "rotation_max_from_first_deg": float(np.max(from_first)),
        "optical_axis_spread_deg": float(np.max(np.degrees(np.arccos(np.clip(z @ zm, -1, 1))))),
        "units": "metres for TUM/KITTI; arbitrary (COLMAP) for object_ring clips",
    }


def natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def store_image(data: bytes, dst: str) -> tuple[int, int, float, float]:
    """Write the image (resized to <= MAX_WIDTH wide, one scale per axis from the rounded size);
    returns (w, h, sx, sy).  Unresized images are copied byte for byte."""
    im = Image.open(io.BytesIO(data))
    im.load()
    w0, h0 = im.size
    if w0 <= MAX_WIDTH:
        with open(dst, "wb") as f:
            f.write(data)
        return w0, h0, 1.0, 1.0
    w, h = MAX_WIDTH, int(round(h0 * MAX_WIDTH / w0))
    if im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    im = im.resize((w, h), Image.LANCZOS)
    if dst.lower().endswith((".jpg", ".jpeg")):
        im.save(dst, quality=95)
    else:
        im.save(dst)
    return w, h, w / w0, h / h0


# --------------------------------------------------------------------------------------------
# clip builders
# --------------------------------------------------------------------------------------------
def read_tum(text: str) -> tuple[np.ndarray, np.ndarray]:
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        v = line.replace(",", " ").split()
        if len(v) != 8:
            raise PrepareError(f"bad TUM line: {line!r}")
        rows.append([float(x) for x in v])
    a = np.array(rows, np.float64)
    order = np.argsort(a[:, 0])
    return a[order, 0], a[order, 1:]


def build_tum(clip: dict, mirror_root: str, out_dir: str) -> dict:
    img, gt = clip["images"], clip["groundtruth"]
    img_git, gt_git = find_git_dir(mirror_root, img["repo"]), find_git_dir(mirror_root, gt["repo"])
    t_gt, p_gt = read_tum(git_bytes(gt_git, gt["commit"], gt["path"]).decode())
    names = sorted((n for n in git_ls(img_git, img["commit"], img["dir"]) if n.lower().endswith((".png", ".jpg"))), key=natural_key)
    os.makedirs(os.path.join(out_dir, "images"))
    lines, poses, dropped, size = [], [], [], None
    for n in names:
        stem = os.path.splitext(n)[0]
        t = float(stem)
        k = int(np.searchsorted(t_gt, t))
        if k == 0 or k >= len(t_gt) or t - t_gt[k - 1] > 0.02 or t_gt[k] - t > 0.02:
            dropped.append(stem)
            continue
        a = (t - t_gt[k - 1]) / (t_gt[k] - t_gt[k - 1])
        tr = (1 - a) * p_gt[k - 1, :3] + a * p_gt[k, :3]
        q = slerp(p_gt[k - 1, 3:], p_gt[k, 3:], a)
        w, h, sx, sy = store_image(git_bytes(img_git, img["commit"], f"{img['dir']}/{n}"), os.path.join(out_dir, "images", n))
        if (sx, sy) != (1.0, 1.0):
            raise PrepareError(f"{clip['name']}: TUM frames are expected to be 640 px wide, got {w}")
        size = size or (w, h)
        lines.append(f"{stem} " + " ".join(f"{v:.6f}" for v in (*tr, *q)))
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = quat_to_rot(q), tr
        poses.append(T)
    if len(lines) < 2:
        raise PrepareError(f"{clip['name']}: fewer than 2 frames have ground truth")
    with open(os.path.join(out_dir, "groundtruth.txt"), "w") as f:
        f.write(f"# {clip['dataset']}\n# camera-to-world, OpenCV camera axes, interpolated to the image timestamps\n")
        f.write("# timestamp tx ty tz qx qy qz qw\n" + "\n".join(lines) + "\n")
    notes = (
        f"{len(lines)} frames ~1 s apart (the SuperGlue demo subsampled the 30 Hz stream); dropped without "
        f"ground truth: {dropped}. Asus Xtion PRO LIVE colour camera (fr3; rolling shutter, auto exposure); fr3 images come "
        "undistorted from the sensor (TUM lists distortion 0 for fr3). Ground-truth poses interpolated from the "
        "100 Hz motion-capture trajectory; TUM reports ~1 cm / 0.5 deg mocap accuracy and small "
        "image/mocap time offsets."
    )
    return {"poses": np.stack(poses), "size": size, "intrinsics": list(clip["intrinsics"]), "notes": notes,
            "sources": [f"{img['repo']}@{img['commit']}:{img['dir']}", f"{gt['repo']}@{gt['commit']}:{gt['path']}"]}


def build_nerf_transforms(clip: dict, mirror_root: str, out_dir: str) -> dict:
    img, gt = clip["images"], clip["groundtruth"]
    img_git, gt_git = find_git_dir(mirror_root, img["repo"]), find_git_dir(mirror_root, gt["repo"])
    doc = json.loads(git_bytes(gt_git, gt["commit"], gt["path"]))
    present = set(git_ls(img_git, img["commit"], img["dir"]))
    frames = [fr for fr in doc["frames"] if os.path.basename(fr["file_path"]) in present]
    frames.sort(key=lambda fr: natural_key(os.path.basename(fr["file_path"])))
    if not frames:
        raise PrepareError(f"{clip['name']}: no frame of {gt['path']} has its image in {img['dir']}")
    os.makedirs(os.path.join(out_dir, "images"))
    gl_to_cv = np.diag([1.0, -1.0, -1.0, 1.0])
    out_frames, poses, size, scale = [], [], None, None
    for fr in frames:
        n = os.path.basename(fr["file_path"])
        w, h, sx, sy = store_image(git_bytes(img_git, img["commit"], f"{img['dir']}/{n}"), os.path.join(out_dir, "images", n))
        if size is None:
            size, scale = (w, h), (sx, sy)
        elif (w, h) != size:
            raise PrepareError(f"{clip['name']}: image {n} has size {w}x{h}, others {size}")
        T = np.asarray(fr["transform_matrix"], np.float64) @ gl_to_cv
        if abs(np.linalg.det(T[:3, :3]) - 1.0) > 1e-3:
            raise PrepareError(f"{clip['name']}: frame {n} rotation is not proper (det {np.linalg.det(T[:3, :3]):.4f})")
        poses.append(T)
        out_frames.append((n, T))
    sx, sy = scale
    # colmap2nerf copies COLMAP's principal point, whose top-left pixel centre is (0.5, 0.5): a resize
    # by (sx, sy) scales those coordinates directly
    fx, fy, cx, cy = doc["fl_x"] * sx, doc["fl_y"] * sy, doc["cx"] * sx, doc["cy"] * sy
    cams = {
        "conventions": "camera_to_world / transform_matrix: 4x4 camera-to-world, OpenCV camera axes (x right, y down, "
        "z forward); fx fy cx cy in pixels of the stored images with the centre of the top-left pixel at (0.5, 0.5); "
        "world frame and scale are instant-ngp colmap2nerf's (arbitrary)",
        "width": size[0],
        "height": size[1],
        "distortion_opencv_unscaled": {k: doc.get(k, 0.0) for k in ("k1", "k2", "p1", "p2")},
        "frames": [
            {
                "image_name": n,
                "file_path": f"images/{n}",
                "camera_to_world": T.tolist(),
                "transform_matrix": T.tolist(),
                "fx": fx, "fy": fy, "cx": cx, "cy": cy, "w": size[0], "h": size[1],
            }
            for n, T in out_frames
        ],
    }
    with open(os.path.join(out_dir, "cameras.json"), "w") as f:
        json.dump(cams, f, indent=1)
    notes = (
        f"{len(out_frames)} of {len(doc['frames'])} transforms.json frames have images in the repository; frames are "
        "ffmpeg-extracted (Lavc) from a handheld phone video, portrait, resized from "
        f"{int(doc['w'])}x{int(doc['h'])} to {size[0]}x{size[1]} (sx={sx:.6f}, sy={sy:.6f}). Reference poses are COLMAP's "
        f"(not independent ground truth). Lens distortion is NOT removed (OpenCV k1={doc.get('k1')}, k2={doc.get('k2')}, "
        f"p1={doc.get('p1')}, p2={doc.get('p2')}); likely rolling shutter and some motion blur (instant-ngp keeps a "
        "'sharpness' score per frame)."
    )
    return {"poses": np.stack(poses), "size": size, "intrinsics": [fx, fy, cx - 0.5, cy - 0.5], "notes": notes,
            "sources": [f"{img['repo']}@{img['commit']}:{os.path.dirname(img['dir'])}"]}


BUILDERS = {"tum": build_tum, "cameras_json": build_nerf_transforms}


def prepare(mirror_root: str, out_root: str, only: list[str] | None = None) -> list[dict]:
    os.makedirs(out_root, exist_ok=True)
    summaries, errors = [], []
    for clip in CLIPS:
        if only and clip["name"] not in only:
            continue
        out_dir = os.path.join(out_root, clip["name"])
        tmp = out_dir + ".part"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        try:
            res = BUILDERS[clip["format"]](clip, mirror_root, tmp)
        except PrepareError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            errors.append(f"{clip['name']}: {e}")
            continue
        stats = motion_stats(res["poses"])
        meta = {
            "kind": clip["kind"],
            "source": "; ".join(res["sources"]),
            "dataset": clip["dataset"],
            "licence": clip["licence"],
            "intrinsics": res["intrinsics"],
            "intrinsics_convention": "fx, fy, cx, cy in pixels of the stored images, top-left pixel centre at (0, 0)",
            "resolution": list(res["size"]),
            "frames": stats["frames"],
            "frame_selection": clip["frames"],
            "pose_conversion": clip["poses"],
            "ground_truth_file": "groundtruth.txt" if clip["format"] == "tum" else "cameras.json",
            "motion": stats,
            "notes": res["notes"],
        }
        with open(os.path.join(tmp, "clip.json"), "w") as f:
            json.dump(meta, f, indent=1)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.rename(tmp, out_dir)
        summaries.append({"name": clip["name"], **meta})
        m = stats
        print(f"{clip['name']:<24} {clip['kind']:<22} {m['frames']:>3} frames {res['size'][0]}x{res['size'][1]}  "
              f"path {m['path_length']:.3f} radius {m['trajectory_radius']:.3f} (ratio {m['path_over_radius']:.2f})  "
              f"rot total {m['rotation_total_deg']:.1f} deg, max from first {m['rotation_max_from_first_deg']:.1f} deg")
    if errors:
        raise PrepareError("some clips could not be made:\n  " + "\n  ".join(errors))
    return summaries


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mirror-root", default="/work/.mirror", help="folder holding <owner>+<name>/repo git directories")
    ap.add_argument("--out", default="/work/data/real_clips", help="output folder (one sub-folder per clip)")
    ap.add_argument("--clips", nargs="*", help="only these clip names")
    args = ap.parse_args(argv)
    try:
        prepare(args.mirror_root, args.out, args.clips)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
