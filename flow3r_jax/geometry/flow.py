"""Optical flow: pose-induced flow, coordinates, consistency masks, NDC targets, colour images.

Flow is the displacement in pixels from a pixel centre of frame i to its position in frame j,
laid out on frame i's grid as (..., H, W, 2) with (dx, dy). The official Flow3r flow target is
instead the absolute position in frame j in NDC; `flow_to_ndc_coords` / `ndc_coords_to_flow`
are the only conversions between the two.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from flow3r_jax.geometry.camera import ndc_to_pixel, pixel_grid, pixel_to_ndc, project_points, unproject_depth
from flow3r_jax.geometry.sampling import bilinear_sample, nearest_sample
from flow3r_jax.geometry.transforms import relative_pose, transform_points

__all__ = [
    "flow_to_coords",
    "coords_to_flow",
    "flow_to_ndc_coords",
    "ndc_coords_to_flow",
    "flow_from_camera_points",
    "induced_flow",
    "forward_backward_mask",
    "fb_occluded",
    "gt_flow_with_depth_check",
    "flow_to_color",
]


def flow_to_coords(flow: Float[Array, "*batch H W 2"]) -> Float[Array, "*batch H W 2"]:
    """Displacement -> absolute target position (pixel centre + flow)."""
    H, W = flow.shape[-3:-1]
    return pixel_grid(H, W, flow.dtype) + flow


def coords_to_flow(coords: Float[Array, "*batch H W 2"]) -> Float[Array, "*batch H W 2"]:
    """Absolute target position -> displacement."""
    H, W = coords.shape[-3:-1]
    return coords - pixel_grid(H, W, coords.dtype)


def flow_to_ndc_coords(flow: Float[Array, "*batch H W 2"]) -> Float[Array, "*batch H W 2"]:
    """Pixel flow -> the official target: absolute position in frame j, official NDC."""
    H, W = flow.shape[-3:-1]
    return pixel_to_ndc(flow_to_coords(flow), H, W)


def ndc_coords_to_flow(ndc: Float[Array, "*batch H W 2"]) -> Float[Array, "*batch H W 2"]:
    """The official model's raw flow output (absolute NDC position in j) -> pixel flow."""
    H, W = ndc.shape[-3:-1]
    return coords_to_flow(ndc_to_pixel(ndc, H, W))


def flow_from_camera_points(
    points_in_j: Float[Array, "*batch H W 3"], K_j: Float[Array, "*batch 3 3"]
) -> tuple[Float[Array, "*batch H W 2"], Bool[Array, "*batch H W"]]:
    """Flow of frame i's pixels given their 3D points expressed in camera j's frame.
    Returns (flow, valid) where valid means in front of camera j."""
    xy, valid = project_points(points_in_j, K_j)
    return coords_to_flow(xy), valid


def induced_flow(
    depth_i: Float[Array, "*batch H W"],
    K_i: Float[Array, "*batch 3 3"],
    pose_i: Float[Array, "*batch 4 4"],
    K_j: Float[Array, "*batch 3 3"],
    pose_j: Float[Array, "*batch 4 4"],
) -> tuple[Float[Array, "*batch H W 2"], Bool[Array, "*batch H W"]]:
    """Flow i -> j induced by a static scene with depth_i seen by camera-to-world poses i, j.
    Valid where depth_i > 0 and the point lands in front of camera j (it may leave the image)."""
    points = unproject_depth(depth_i, K_i)
    flow, valid = flow_from_camera_points(transform_points(relative_pose(pose_j, pose_i), points), K_j)
    return flow, valid & (depth_i > 0)


def _inside(xy, H, W):
    return (xy[..., 0] >= 0) & (xy[..., 0] <= W) & (xy[..., 1] >= 0) & (xy[..., 1] <= H)


def fb_occluded(
    flow_fw: Float[Array, "*batch H W 2"], back: Float[Array, "*batch H W 2"], alpha: float = 0.01, beta: float = 0.5
) -> Bool[Array, "*batch H W"]:
    """The forward-backward test alone: |f + b|^2 > alpha (|f|^2 + |b|^2) + beta, with `back` the
    backward flow already sampled at x + f (UnFlow's and DF-Net's occlusion test)."""
    err = jnp.sum((flow_fw + back) ** 2, axis=-1)
    return err > alpha * (jnp.sum(flow_fw**2, axis=-1) + jnp.sum(back**2, axis=-1)) + beta


def forward_backward_mask(
    flow_fw: Float[Array, "*batch H W 2"],
    flow_bw: Float[Array, "*batch H W 2"],
    alpha: float = 0.01,
    beta: float = 0.5,
) -> Bool[Array, "*batch H W"]:
    """Forward-backward consistency (Sundaram et al. 2010) on frame i's grid.

    `flow_fw` is i -> j on i's grid, `flow_bw` is j -> i on j's grid (same size). A pixel is
    consistent when its target lies inside frame j and
    |f + b(x + f)|^2 <= alpha (|f|^2 + |b(x + f)|^2) + beta (b sampled bilinearly; `fb_occluded`).
    """
    H, W = flow_fw.shape[-3:-1]
    target = flow_to_coords(flow_fw)
    back = bilinear_sample(flow_bw, target, padding="border")
    return ~fb_occluded(flow_fw, back, alpha, beta) & _inside(target, H, W)


def gt_flow_with_depth_check(
    depth_i: Float[Array, "*batch H W"],
    K_i: Float[Array, "*batch 3 3"],
    pose_i: Float[Array, "*batch 4 4"],
    depth_j: Float[Array, "*batch H W"],
    K_j: Float[Array, "*batch 3 3"],
    pose_j: Float[Array, "*batch 4 4"],
    rtol: float = 0.05,
) -> tuple[Float[Array, "*batch H W 2"], Bool[Array, "*batch H W"]]:
    """Ground-truth flow i -> j of a static scene and its covisibility mask.

    A pixel is covisible when it has valid depth, lands inside frame j in front of the camera,
    and its depth in camera j agrees within `rtol` (5%) relative with depth_j at the pixel it
    lands in (nearest lookup, so depth is never blended across occlusion edges).
    """
    H, W = depth_i.shape[-2:]
    points = unproject_depth(depth_i, K_i)
    points_j = transform_points(relative_pose(pose_j, pose_i), points)
    flow, valid = flow_from_camera_points(points_j, K_j)
    target = flow_to_coords(flow)
    seen = nearest_sample(depth_j[..., None], target)[..., 0]
    agree = jnp.abs(points_j[..., 2] - seen) <= rtol * seen
    return flow, valid & (depth_i > 0) & (seen > 0) & agree & _inside(target, H, W)


def _color_wheel() -> np.ndarray:
    """The Middlebury flow colour wheel (Baker et al. 2011): 55 hues, RGB in [0, 1]."""
    segments = [  # (length, start colour, end colour) around the hue circle
        (15, (1, 0, 0), (1, 1, 0)),  # red -> yellow
        (6, (1, 1, 0), (0, 1, 0)),  # yellow -> green
        (4, (0, 1, 0), (0, 1, 1)),  # green -> cyan
        (11, (0, 1, 1), (0, 0, 1)),  # cyan -> blue
        (13, (0, 0, 1), (1, 0, 1)),  # blue -> magenta
        (6, (1, 0, 1), (1, 0, 0)),  # magenta -> red
    ]
    rows = []
    for n, a, b in segments:
        t = np.floor(255.0 * np.arange(n) / n) / 255.0
        rows.append(np.asarray(a)[None] + t[:, None] * (np.asarray(b) - np.asarray(a))[None])
    return np.concatenate(rows, axis=0)


def flow_to_color(flow: Float[Array, "*batch H W 2"], max_flow: float | None = None) -> Float[Array, "*batch H W 3"]:
    """Flow -> RGB in [0, 1] with the Middlebury colour wheel: hue = direction, saturation =
    magnitude / max_flow (per image maximum by default); beyond max_flow colours are darkened."""
    wheel = jnp.asarray(_color_wheel(), flow.dtype)
    n = wheel.shape[0]
    u, v = flow[..., 0], flow[..., 1]
    mag = jnp.sqrt(u * u + v * v)
    if max_flow is None:
        max_flow = jnp.max(mag, axis=(-2, -1), keepdims=True)
    rad = mag / jnp.maximum(max_flow, 1e-8)
    angle = jnp.arctan2(-v, -u) / jnp.pi  # in [-1, 1]
    fk = (angle + 1.0) * 0.5 * (n - 1)
    k0 = jnp.floor(fk).astype(jnp.int32)
    k1 = (k0 + 1) % n
    f = (fk - k0)[..., None]
    col = (1.0 - f) * wheel[k0] + f * wheel[k1]
    inside = (rad <= 1.0)[..., None]
    return jnp.where(inside, 1.0 - rad[..., None] * (1.0 - col), col * 0.75)
