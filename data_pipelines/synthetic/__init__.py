"""Synthetic scenes with exact ground truth: the project's built-in data.

Procedural 3D scenes (a box-shaped room with walls, floor and ceiling, or open ground under a
sky; textured boxes, panels and spheres; optionally independently moving rigid objects) are
ray cast in JAX along smooth camera paths, giving RGB frames with exact depth, camera-to-world
poses, intrinsics, and for any frame pair exact optical flow (object motion included), an exact
occlusion-aware covisibility mask and a dynamic mask. Nothing is downloaded; a clip is a pure
function of (config, seed).

Conventions are flow3r_jax's (see `flow3r_jax.geometry`): OpenCV camera axes (x right, y down,
z forward), camera-to-world 4x4 poses, pixel centres at +0.5 (top-left pixel centre (0.5, 0.5)),
flow = pixel displacement from frame i's pixel centres to frame j, on i's grid. The world frame
has y pointing down (up is -y), in metres.

API
---
    from data_pipelines.synthetic import SceneConfig, generate_clip, build_scene, render_pair_flow

    cfg = SceneConfig(height=224, width=224, frames=24, dynamic=False,
                      preset="orbit",         # "forward", "pan", "handheld", "random", "mixed"
                      kind="room",            # or "outdoor": ground + sky
                      focal_range=(0.8, 1.6), # focal / image width, drawn per scene (or focal=)
                      flow_px=(1.0, 30.0),    # target mean consecutive-frame flow, px
                      offsets=(1, 2, 4, 8), num_objects=(4, 8), num_dynamic=(1, 3))
    clip = generate_clip(cfg, seed=0)         # dict of numpy arrays:

    images      uint8   (K, H, W, 3)
    depth       float32 (K, H, W)     z-depth in the camera frame, 0 where no surface (sky)
    valid       bool    (K, H, W)     pixel sees a surface
    poses       float32 (K, 4, 4)     camera-to-world (OpenCV axes)
    intrinsics  float32 (K, 3, 3)     principal point (W/2, H/2), fx = fy = focal * W
    times       float32 (K,)          frame times in seconds (k / fps, fps = 30 by default)
    pairs       int32   (P, 2)        every (i, j) with |i - j| in offsets, both directions,
                                      ordered by i then j (offsets >= K give no pair)
    flow        float32 (P, H, W, 2)  exact flow i -> j on i's grid (object motion included;
                                      sky: flow of a point at infinity, never covisible)
    covisible   bool    (P, H, W)     pixel of i is visible in j: valid, lands inside frame j
                                      (x in [0, W], y in [0, H]), in front of camera j, and
                                      the ray from camera j to the point hits nothing closer
    dynamic     bool    (K, H, W)     pixel shows an independently moving object
    seed        int64   ()            the seed
    config      str     ()            SceneConfig as JSON (SceneConfig.from_json reads it)
    scene       str     ()            JSON description: preset, focal, flow target and
                                      estimate, environment, objects and their motion

    scene = build_scene(cfg, seed=0)          # the same scene, rendered on demand (cached)
    frame = scene.render(i)                   # image, depth, valid, dynamic, prim, p_local
    flow, covisible, dynamic_pair = render_pair_flow(scene, i, j)   # any pair, any order
    # dynamic_pair (H, W): pixel of i shows an object that moves between times i and j.

Camera speed: a per-scene target is drawn log-uniformly from `flow_px` and the camera speed set so
that the mean consecutive-frame flow over static surfaces matches it (measured on a sparse grid
of rays); a preset whose whole path gives less flow caps at its full length (see
`scene["estimated_flow_px"]`).

Command line (PNG frames, an .mp4 per scene, gt.npz, a README describing the layout):

    python -m data_pipelines.synthetic --out DIR --scenes N --frames K --size HxW [--dynamic] [--seed S]

Modules: `config` (SceneConfig), `textures` (procedural solid textures), `trajectory` (camera
paths), `scene` (layout, objects, motion), `render` (ray casting, shading), `flow` (exact flow
and covisibility), `clip` (building scenes, rendering clips), `video` (mp4), `writer` (disk
layout), `__main__` (CLI).
"""

from data_pipelines.synthetic.clip import Scene, build_scene, generate_clip, render_pair_flow
from data_pipelines.synthetic.config import KINDS, PRESETS, SceneConfig

__all__ = ["SceneConfig", "Scene", "build_scene", "generate_clip", "render_pair_flow", "PRESETS", "KINDS"]
