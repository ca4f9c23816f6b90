"""On-disk layout of rendered clips: PNG frames, an MP4 video, ground truth in .npz, a README.

    DIR/README.md                     conventions and array layouts (`DATASET_README`)
    DIR/scene_0000/images/00000.png   RGB frames
    DIR/scene_0000/video.mp4          the same frames as an MPEG-4 video at the clip's fps
    DIR/scene_0000/gt.npz             every array of `generate_clip` except "images"
    DIR/scene_0000/scene.json         the scene description (also in gt.npz["scene"])
"""

from __future__ import annotations

import json
import os
import pathlib

import cv2
import numpy as np

from data_pipelines.synthetic.video import write_video

__all__ = ["write_clip", "write_readme", "load_gt", "DATASET_README", "GT_KEYS"]

GT_KEYS = ("depth", "valid", "poses", "intrinsics", "times", "pairs", "flow", "covisible", "dynamic", "seed", "config", "scene")

DATASET_README = """\
# Synthetic scenes (flow3r_jax)

Rendered by `python -m data_pipelines.synthetic` (ray-cast procedural scenes with exact ground
truth). Regenerate any scene from its `seed` and `config` (both stored in `gt.npz`).

## Layout

    scene_XXXX/images/00000.png   RGB frames, 8-bit
    scene_XXXX/video.mp4          the same frames as an MPEG-4 Part 2 ('mp4v') video at `fps`
                                  (odd sizes are padded by one replicated row / column)
    scene_XXXX/gt.npz             ground truth (below); load with numpy.load (no pickle)
    scene_XXXX/scene.json         scene description: preset, focal, flow target, objects

## Conventions

- Camera axes: OpenCV (x right, y down, z forward). World frame: y down (up is -y), metres.
- Poses: camera-to-world 4x4 [[R, t], [0, 1]]; t is the camera centre.
- Pixels: (x, y) = (column, row), the centre of the top-left pixel at (0.5, 0.5).
  Intrinsics K map camera coordinates to these pixels; principal point (W/2, H/2).
- Depth: z in the camera frame (not ray length); 0 where the pixel sees no surface (sky).
- Flow (i -> j): displacement in pixels from each pixel centre of frame i to where the surface
  point it sees lies in frame j, on frame i's grid, (dx, dy). Exact, including object motion.
  Sky pixels hold the flow of a point at infinity (rotation only) and are never covisible.

## gt.npz arrays (K frames, P pairs, H x W pixels)

| key | dtype, shape | meaning |
|---|---|---|
| depth | float32 (K, H, W) | z-depth, 0 where no surface |
| valid | bool (K, H, W) | pixel sees a surface |
| poses | float32 (K, 4, 4) | camera-to-world |
| intrinsics | float32 (K, 3, 3) | K per frame |
| times | float32 (K,) | frame times, seconds |
| pairs | int32 (P, 2) | (i, j) with abs(i - j) in the offsets, both directions |
| flow | float32 (P, H, W, 2) | exact flow i -> j on i's grid |
| covisible | bool (P, H, W) | pixel of i visible in j: valid, lands inside j in front of the camera, not occluded (exact ray test) |
| dynamic | bool (K, H, W) | pixel shows an independently moving object |
| seed | int64 () | scene seed |
| config | str () | SceneConfig as JSON |
| scene | str () | scene description as JSON |
"""


def write_readme(out_dir: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(out_dir) / "README.md"
    path.write_text(DATASET_README)
    return path


def write_clip(scene_dir: str | os.PathLike, clip: dict, fps: float, video: bool = True, compress: bool = False) -> pathlib.Path:
    """Writes one clip (a `generate_clip` dict) into `scene_dir` (created if needed)."""
    scene_dir = pathlib.Path(scene_dir)
    images_dir = scene_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(clip["images"]):
        path = images_dir / f"{k:05d}.png"
        if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"write_clip: OpenCV could not write {path}")
    if video:
        write_video(scene_dir / "video.mp4", clip["images"], fps)
    save = np.savez_compressed if compress else np.savez
    save(scene_dir / "gt.npz", **{k: clip[k] for k in GT_KEYS})
    (scene_dir / "scene.json").write_text(json.dumps(json.loads(str(clip["scene"])), indent=1))
    return scene_dir


def load_gt(scene_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """The ground-truth arrays of a written scene (strings as 0-d str arrays)."""
    with np.load(pathlib.Path(scene_dir) / "gt.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
