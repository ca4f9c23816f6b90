"""Pinhole cameras: intrinsics, pixel / normalised / NDC coordinates, (un)projection.

Pixel coordinates put the centre of the top-left pixel at (0.5, 0.5); an image of width W spans
x in [0, W]. Intrinsics K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] map camera coordinates
(OpenCV axes) to these pixel coordinates, so a centred principal point is (W/2, H/2).
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

__all__ = [
    "intrinsics_from_focal",
    "intrinsics_from_fov",
    "focal_from_fov",
    "fov_from_focal",
    "pixel_grid",
    "pixel_to_normalized",
    "normalized_to_pixel",
    "pixel_to_ndc",
    "ndc_to_pixel",
    "unproject_depth",
    "project_points",
    "points_to_depth",
    "scale_intrinsics",
    "focal_from_pointmap",
]


def intrinsics_from_focal(
    fx: Float[Array, "*batch"] | float,
    fy: Float[Array, "*batch"] | float | None = None,
    cx: Float[Array, "*batch"] | float = 0.0,
    cy: Float[Array, "*batch"] | float = 0.0,
) -> Float[Array, "*batch 3 3"]:
    """K from focal lengths and principal point, all in pixels (fy defaults to fx)."""
    fy = fx if fy is None else fy
    fx, fy, cx, cy = jnp.broadcast_arrays(*(jnp.asarray(v, jnp.result_type(float)) for v in (fx, fy, cx, cy)))
    zero, one = jnp.zeros_like(fx), jnp.ones_like(fx)
    return jnp.stack(
        [
            jnp.stack([fx, zero, cx], axis=-1),
            jnp.stack([zero, fy, cy], axis=-1),
            jnp.stack([zero, zero, one], axis=-1),
        ],
        axis=-2,
    )


def focal_from_fov(fov: Float[Array, "*batch"] | float, size: int | float) -> Array:
    """Focal length in pixels for a field of view (radians) spanning `size` pixels."""
    return 0.5 * size / jnp.tan(0.5 * jnp.asarray(fov, jnp.result_type(float)))


def fov_from_focal(focal: Float[Array, "*batch"] | float, size: int | float) -> Array:
    """Field of view (radians) spanning `size` pixels for a focal length in pixels."""
    return 2.0 * jnp.arctan(0.5 * size / jnp.asarray(focal, jnp.result_type(float)))


def intrinsics_from_fov(
    fov_x: Float[Array, "*batch"] | float, height: int, width: int, fov_y=None
) -> Float[Array, "*batch 3 3"]:
    """K for a horizontal field of view (radians) with the principal point at the image centre.
    Square pixels unless `fov_y` is given."""
    fx = focal_from_fov(fov_x, width)
    fy = fx if fov_y is None else focal_from_fov(fov_y, height)
    return intrinsics_from_focal(fx, fy, width / 2.0, height / 2.0)


def scale_intrinsics(K: Float[Array, "*batch 3 3"], sx: float, sy: float | None = None) -> Array:
    """Intrinsics after resizing the image by (sx, sy) (new = old * s, in pixel units)."""
    sy = sx if sy is None else sy
    S = jnp.diag(jnp.array([sx, sy, 1.0], dtype=K.dtype))
    return S @ K


def pixel_grid(height: int, width: int, dtype=jnp.float32) -> Float[Array, "height width 2"]:
    """(x, y) pixel-centre coordinates: grid[r, c] = (c + 0.5, r + 0.5)."""
    y, x = jnp.meshgrid(jnp.arange(height, dtype=dtype) + 0.5, jnp.arange(width, dtype=dtype) + 0.5, indexing="ij")
    return jnp.stack([x, y], axis=-1)


def _k_parts(K, ndim_points):
    """fx, fy, cx, cy of K (*batch, 3, 3), broadcastable against points with extra inner dims."""
    extra = ndim_points - 1 - (K.ndim - 2)
    shape = K.shape[:-2] + (1,) * max(extra, 0)
    return (K[..., 0, 0].reshape(shape), K[..., 1, 1].reshape(shape), K[..., 0, 2].reshape(shape), K[..., 1, 2].reshape(shape))


def pixel_to_normalized(xy: Float[Array, "*batch *points 2"], K: Float[Array, "*batch 3 3"]) -> Array:
    """Pixel coordinates -> normalised image coordinates ((x - cx)/fx, (y - cy)/fy).
    K's batch dims are the leading dims of xy (as in `transform_points`)."""
    fx, fy, cx, cy = _k_parts(K, xy.ndim)
    return jnp.stack([(xy[..., 0] - cx) / fx, (xy[..., 1] - cy) / fy], axis=-1)


def normalized_to_pixel(uv: Float[Array, "*batch *points 2"], K: Float[Array, "*batch 3 3"]) -> Array:
    """Inverse of `pixel_to_normalized`."""
    fx, fy, cx, cy = _k_parts(K, uv.ndim)
    return jnp.stack([uv[..., 0] * fx + cx, uv[..., 1] * fy + cy], axis=-1)


def pixel_to_ndc(xy: Float[Array, "*batch 2"], height: int, width: int) -> Float[Array, "*batch 2"]:
    """Our pixel coordinates -> the official Flow3r NDC convention (PyTorch3D style).

    The official code indexes pixel centres by integers p = xy - 0.5 and uses
    x_ndc = 1 - 2 p_x / (W - 1), y_ndc = 1 - 2 p_y / (H - 1): +x left, +y up, the centres of
    the first and last pixels at +1 and -1.
    """
    sx = 2.0 / max(width - 1, 1)
    sy = 2.0 / max(height - 1, 1)
    return jnp.stack([1.0 - (xy[..., 0] - 0.5) * sx, 1.0 - (xy[..., 1] - 0.5) * sy], axis=-1)


def ndc_to_pixel(ndc: Float[Array, "*batch 2"], height: int, width: int) -> Float[Array, "*batch 2"]:
    """Inverse of `pixel_to_ndc`."""
    hx = max(width - 1, 1) / 2.0
    hy = max(height - 1, 1) / 2.0
    return jnp.stack([(1.0 - ndc[..., 0]) * hx + 0.5, (1.0 - ndc[..., 1]) * hy + 0.5], axis=-1)


def unproject_depth(depth: Float[Array, "*batch H W"], K: Float[Array, "*batch 3 3"]) -> Float[Array, "*batch H W 3"]:
    """Depth map (z along the optical axis) -> points in camera coordinates at pixel centres."""
    H, W = depth.shape[-2:]
    uv = pixel_to_normalized(jnp.broadcast_to(pixel_grid(H, W, depth.dtype), depth.shape + (2,)), K)
    return jnp.concatenate([uv, jnp.ones_like(uv[..., :1])], axis=-1) * depth[..., None]


def project_points(
    points: Float[Array, "*batch *points 3"], K: Float[Array, "*batch 3 3"], min_depth: float = 1e-6
) -> tuple[Float[Array, "*batch *points 2"], Bool[Array, "*batch *points"]]:
    """Camera-frame points -> pixel coordinates and a validity mask (z > min_depth).

    Points at or behind the camera are divided by `min_depth` instead of z so the result and its
    gradient stay finite; they are flagged invalid and their pixel values are meaningless.
    """
    z = points[..., 2]
    valid = z > min_depth
    z_safe = jnp.where(valid, z, min_depth)
    uv = points[..., :2] / z_safe[..., None]
    return normalized_to_pixel(uv, K), valid


def points_to_depth(points: Float[Array, "*batch H W 3"]) -> Float[Array, "*batch H W"]:
    """Local (camera-frame) pointmap -> depth map: the z coordinate."""
    return points[..., 2]


def focal_from_pointmap(
    points: Float[Array, "*batch H W 3"], weights: Float[Array, "*batch H W"] | None = None, eps: float = 1e-6
) -> Float[Array, "*batch"]:
    """Shared focal length (pixels) of a camera-frame pointmap, principal point at the image centre.

    Weighted least squares argmin_f sum_p w_p |(x_p - c) - f (X/Z, Y/Z)_p|^2 over pixels with
    Z > eps, in closed form; exact for a pointmap unprojected with such intrinsics.
    """
    H, W = points.shape[-3:-1]
    z = points[..., 2]
    w = (z > eps).astype(points.dtype) if weights is None else weights * (z > eps)
    uv = points[..., :2] / jnp.where(z > eps, z, 1.0)[..., None]
    d = pixel_grid(H, W, points.dtype) - jnp.asarray([W / 2.0, H / 2.0], points.dtype)
    num = jnp.sum(w[..., None] * d * uv, axis=(-3, -2, -1))
    den = jnp.sum(w[..., None] * uv * uv, axis=(-3, -2, -1))
    return num / jnp.maximum(den, eps)
