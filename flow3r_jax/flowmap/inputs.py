"""`SceneInputs`: what the per-scene optimisation consumes, validated at the boundary.

Conventions are flow3r_jax's (`flow3r_jax.geometry`): pixel centres at +0.5, flow as pixel
displacement on the source frame's grid. For F frames of H x W pixels:

    images        float32 (F, H, W, 3)   RGB in [0, 1]
    flow_fw       float32 (F-1, H, W, 2) flow i -> i + 1 on frame i's grid
    flow_bw       float32 (F-1, H, W, 2) flow i + 1 -> i on frame i + 1's grid
    mask_fw       float32 (F-1, H, W)    weight of each forward flow vector in the flow loss
    mask_bw       float32 (F-1, H, W)    same for the backward flow (frame i + 1's grid)
    track_xy      float32 (F, M, 2)      point tracks: pixel position in each frame (optional)
    track_visible bool    (F, M)         track visible in that frame (optional)
    base_depth    float32 (F, H, W)      depth to refine around, e.g. Flow3r's (optional)
    focal         float32 ()             known focal in FlowMap units f_px / sqrt(H W) (optional;
                                         replaces the soft-min and the free focal)
    valid_bw      float32 (F-1, H, W)    1 where the backward flow i + 1 -> i is usable for
                                         Procrustes: it lands inside frame i and passes the
                                         forward-backward check (`procrustes_validity`;
                                         computed from the flows when None)

Optional fields are None (an empty pytree), so a `SceneInputs` with or without them is a valid
`jax.vmap` / `jax.jit` argument; `stack_scenes` stacks several scenes of one shape for vmap.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flow3r_jax.flowmap.losses import photometric_mask

__all__ = ["SceneInputs", "make_scene_inputs", "procrustes_validity", "consecutive_flows", "stack_scenes", "InputError"]


class InputError(ValueError):
    """Scene inputs with inconsistent shapes or values; the message names the field."""


class SceneInputs(NamedTuple):
    images: jax.Array
    flow_fw: jax.Array
    flow_bw: jax.Array
    mask_fw: jax.Array
    mask_bw: jax.Array
    track_xy: jax.Array | None = None
    track_visible: jax.Array | None = None
    base_depth: jax.Array | None = None
    focal: jax.Array | None = None
    valid_bw: jax.Array | None = None
    principal: jax.Array | None = None  # (2,) pixels (+0.5 convention); None: the image centre

    @property
    def num_frames(self) -> int:
        return self.images.shape[-4]

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.images.shape[-3:-1])

    @property
    def has_tracks(self) -> bool:
        return self.track_xy is not None and self.track_xy.shape[-2] > 0


def procrustes_validity(flow_fw: jax.Array, flow_bw: jax.Array) -> jax.Array:
    """(F-1, H, W) float32: 1 where frame i + 1's backward flow lands inside frame i and agrees
    with the forward flow there (`geometry.forward_backward_mask`, alpha 0.01, beta 0.5 px^2).

    Procrustes takes frame i's surface at the backward-flow target; where the target leaves the
    image (border padding) or is occluded (the surface there is another one) that point is an
    outlier, and with the correspondence weights still uniform at the start such outliers bias
    every pose. On the held-back synthetic scenes with exact depth, flow and focal, masking them
    takes the Procrustes trajectory error from 1.6-15% of the extent to 0.2-2%."""
    from flow3r_jax.geometry import forward_backward_mask

    return forward_backward_mask(flow_bw, flow_fw).astype(jnp.float32)


def _check(name, a, shape, dtype=np.float32):
    a = np.asarray(a)
    if a.shape != tuple(shape):
        raise InputError(f"SceneInputs.{name}: expected shape {tuple(shape)}, got {a.shape}")
    if dtype is not bool and not np.all(np.isfinite(a)):
        raise InputError(f"SceneInputs.{name}: contains non-finite values")
    return jnp.asarray(a.astype(dtype))


def make_scene_inputs(
    images,
    flow_fw,
    flow_bw,
    masks="photometric",
    tracks=None,
    base_depth=None,
    focal=None,
    principal=None,
) -> SceneInputs:
    """Validates and assembles one scene.

    images: (F, H, W, 3) float in [0, 1] or uint8. flow_fw / flow_bw: consecutive flows (see the
    module docstring). masks: "photometric" (FlowMap's colour-consistency weights, default),
    None (all ones), or a (mask_fw, mask_bw) pair of (F-1, H, W) arrays (bool or float).
    tracks: None or (xy (F, M, 2), visible (F, M)), e.g. `flow3r_jax.correspondence.tracks.Tracks`.
    focal: a known focal length in FlowMap units (f_px / sqrt(H W)), or None to estimate it.
    principal: a known principal point (cx, cy) in pixels of these frames (+0.5 convention; the
    sparse solver's where it moved it off centre), with a known focal only; None: (W/2, H/2).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"SceneInputs.images: expected (F, H, W, 3), got {images.shape}")
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    F, H, W, _ = images.shape
    if F < 2:
        raise InputError(f"SceneInputs.images: need at least 2 frames, got {F}")
    images = _check("images", images, (F, H, W, 3))
    flow_fw = _check("flow_fw", flow_fw, (F - 1, H, W, 2))
    flow_bw = _check("flow_bw", flow_bw, (F - 1, H, W, 2))
    if isinstance(masks, str):
        if masks != "photometric":
            raise InputError(f"make_scene_inputs: masks must be 'photometric', None or a pair of arrays, got {masks!r}")
        mask_fw = photometric_mask(images, flow_fw)
        mask_bw = photometric_mask(images, flow_bw, backward=True)
    elif masks is None:
        mask_fw = mask_bw = jnp.ones((F - 1, H, W), jnp.float32)
    else:
        mask_fw, mask_bw = (_check(n, m, (F - 1, H, W)) for n, m in zip(("mask_fw", "mask_bw"), masks))
    track_xy = track_visible = None
    if tracks is not None:
        xy, vis = (tracks.xy, tracks.visible) if hasattr(tracks, "xy") else tracks
        xy = np.asarray(xy)
        if xy.ndim != 3 or xy.shape[0] != F or xy.shape[-1] != 2:
            raise InputError(f"SceneInputs.track_xy: expected (F={F}, M, 2), got {xy.shape}")
        track_xy = _check("track_xy", xy, xy.shape)
        track_visible = _check("track_visible", vis, xy.shape[:2], bool)
    if base_depth is not None:
        base_depth = _check("base_depth", base_depth, (F, H, W))
        if not bool(jnp.all(base_depth > 0)):
            raise InputError("SceneInputs.base_depth: must be positive everywhere")
    if focal is not None:
        focal = float(focal)
        if not (math.isfinite(focal) and focal > 0):
            raise InputError(f"SceneInputs.focal: must be positive, got {focal!r}")
        focal = jnp.asarray(focal, jnp.float32)
    if principal is not None:
        principal = np.asarray(principal, np.float64)
        if focal is None:
            raise InputError("SceneInputs.principal: a known principal point needs a known focal (FlowMap's focal search assumes the centre)")
        if principal.shape != (2,) or not np.all(np.isfinite(principal)) or not (0 <= principal[0] <= W and 0 <= principal[1] <= H):
            raise InputError(f"SceneInputs.principal: expected (cx, cy) inside the {W}x{H} frame, got {principal.tolist()}")
        principal = jnp.asarray(principal, jnp.float32)
    valid_bw = procrustes_validity(flow_fw, flow_bw)
    return SceneInputs(images, flow_fw, flow_bw, mask_fw, mask_bw, track_xy, track_visible, base_depth, focal, valid_bw, principal)


def consecutive_flows(pairs: np.ndarray, flows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flow_fw, flow_bw) from flows of listed pairs (P, 2) (e.g. a synthetic clip's `pairs` /
    `flow`); raises InputError naming the first missing consecutive pair."""
    pairs = np.asarray(pairs)
    index = {(int(i), int(j)): k for k, (i, j) in enumerate(pairs)}
    F = int(pairs.max()) + 1
    fw, bw = [], []
    for i in range(F - 1):
        for a, b, out in ((i, i + 1, fw), (i + 1, i, bw)):
            if (a, b) not in index:
                raise InputError(f"consecutive_flows: no flow for pair ({a}, {b})")
            out.append(flows[index[(a, b)]])
    return np.stack(fw), np.stack(bw)


def stack_scenes(scenes: list[SceneInputs]) -> SceneInputs:
    """Stacks scenes of identical shapes (and the same optional fields) for `jax.vmap`. Scenes
    with different numbers of tracks are padded to the largest with invisible tracks, which
    every loss ignores (the track loss counts visible pairs only)."""
    if not scenes:
        raise InputError("stack_scenes: no scenes")
    if all(s.has_tracks for s in scenes):
        M = max(s.track_xy.shape[-2] for s in scenes)
        scenes = [
            s._replace(
                track_xy=jnp.pad(s.track_xy, ((0, 0), (0, M - s.track_xy.shape[-2]), (0, 0))),
                track_visible=jnp.pad(s.track_visible, ((0, 0), (0, M - s.track_visible.shape[-1]))),
            )
            for s in scenes
        ]
    first = jax.tree.structure(scenes[0])
    for k, s in enumerate(scenes[1:], 1):
        if jax.tree.structure(s) != first or any(a.shape != b.shape for a, b in zip(jax.tree.leaves(s), jax.tree.leaves(scenes[0]))):
            raise InputError(f"stack_scenes: scene {k} differs in shape or optional fields from scene 0")
    return jax.tree.map(lambda *xs: jnp.stack(xs), *scenes)
