"""Intrinsics of the per-scene optimisation: one shared pinhole camera with the principal point
at the image centre, its focal length found by FlowMap's soft-min over candidates.

Focal unit: FlowMap's, f_norm = f_px / sqrt(H W) (official `intrinsics/common.py` multiplies
the candidates by sqrt(h w)); it does not depend on the aspect ratio. Candidates: 60 values
evenly spaced on [0.5, 2.0].

Soft-min (official `intrinsics_softmin.py`), every step of stage 1: for each candidate focal,
unproject the depth of frames 0 and 1, fit the Procrustes pose of pair (0, 1) on a fresh random
set of 8192 pixels of frame 1 (weighted by the correspondence weights), reproject those pixels
into frame 0 and sum the weighted L1 error of the induced backward flow against the given flow
in FlowMap's normalised units (dx / W, dy / H, no aspect correction). The focal is the average
of the candidates weighted by softmin(10 (error - min error)); it is differentiable in the
depth and the weights, as in FlowMap.

The unprojected point of pixel (x, y) at depth z for focal f is ((x - cx) z / f, (y - cy) z / f,
z), linear in the map m = ((x - cx) z, (y - cy) z, z); so frame 0's bilinearly sampled surface
is sampled once as m and rescaled per candidate, instead of unprojecting 60 full depth maps;
likewise the Procrustes moments (means, cross-covariance) are computed once from m and rescaled
per candidate, so only the final reprojection touches every pixel per candidate.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from flow3r_jax.flowmap.correspondence import flat_pixel_xy
from flow3r_jax.geometry import bilinear_sample, intrinsics_from_focal, pixel_grid, project_points, rigid_from_moments, transform_points, weighted_moments

__all__ = [
    "focal_candidates",
    "intrinsics_from_normalized_focal",
    "normalized_focal",
    "softmin_focal",
    "candidate_errors",
]


def focal_candidates(focal_min: float = 0.5, focal_max: float = 2.0, num: int = 60) -> np.ndarray:
    """The candidate focal lengths (FlowMap units), float32 like torch.linspace."""
    return np.linspace(focal_min, focal_max, num, dtype=np.float64).astype(np.float32)


def intrinsics_from_normalized_focal(focal: Float[Array, "*b"] | float, height: int, width: int) -> Float[Array, "*b 3 3"]:
    """K in pixels for a focal in FlowMap units, square pixels, principal point (W/2, H/2)."""
    f_px = jnp.asarray(focal, jnp.float32) * math.sqrt(height * width)
    return intrinsics_from_focal(f_px, f_px, width / 2.0, height / 2.0)


def normalized_focal(f_px, height: int, width: int):
    """Focal in pixels -> FlowMap units."""
    return f_px / math.sqrt(height * width)


def candidate_errors(
    depth01: Float[Array, "2 H W"],
    flow_bw0: Float[Array, "H W 2"],
    weights: Float[Array, " P"],
    idx: Int[Array, " P"],
    candidates: Float[Array, " N"],
) -> Float[Array, " N"]:
    """Weighted L1 backward-flow error of pair (0, 1) for each candidate focal (FlowMap units).

    `idx` are flattened pixel indices of frame 1 and `weights` their correspondence weights."""
    H, W = depth01.shape[-2:]
    centre = jnp.asarray([W / 2.0, H / 2.0], jnp.float32)
    xy = flat_pixel_xy(H, W, idx)  # (P, 2) pixel centres in frame 1
    gt = flow_bw0.reshape(-1, 2)[idx]  # (P, 2)
    z1 = depth01[1].reshape(-1)[idx]
    m0 = jnp.concatenate([(pixel_grid(H, W) - centre) * depth01[0][..., None], depth01[0][..., None]], axis=-1)
    s0 = bilinear_sample(m0, xy + gt, padding="border")  # (P, 3): frame 0's surface at the flow target
    f_px = candidates * math.sqrt(H * W)  # (N,)
    m1 = jnp.concatenate([(xy - centre) * z1[:, None], z1[:, None]], axis=-1)  # (P, 3)
    # For focal f both point sets are D m with D = diag(1/f, 1/f, 1), so their weighted moments
    # are D mu and D cov D: one pass over the pixels, then a 3x3 Procrustes per candidate
    # (the same fit as `weighted_procrustes` on the rescaled points, without 60 passes).
    mu1, mu0, cov = weighted_moments(m1, s0, weights)
    d = jnp.stack([1.0 / f_px, 1.0 / f_px, jnp.ones_like(f_px)], axis=-1)  # (N, 3)
    T = rigid_from_moments(d * mu1, d * mu0, cov * d[:, :, None] * d[:, None, :])  # (N, 4, 4): camera 1 -> camera 0
    later = m1[None] * d[:, None, :]  # (N, P, 3)
    K = intrinsics_from_focal(f_px, f_px, W / 2.0, H / 2.0)
    proj, _ = project_points(transform_points(T, later), K)  # (N, P, 2)
    delta = (proj - xy) - gt
    scale = jnp.asarray([1.0 / W, 1.0 / H], jnp.float32)
    return jnp.sum(jnp.abs(delta * scale) * weights[:, None], axis=(-2, -1))


def softmin_focal(
    depth01: Float[Array, "2 H W"],
    flow_bw0: Float[Array, "H W 2"],
    weights: Float[Array, " P"],
    idx: Int[Array, " P"],
    candidates: Float[Array, " N"],
    temperature: float = 10.0,
) -> tuple[Float[Array, ""], Float[Array, " N"]]:
    """(focal, candidate probabilities): the softmin(temperature (e - min e)) average of the
    candidates (FlowMap units). See the module docstring."""
    errors = candidate_errors(depth01, flow_bw0, weights, idx, candidates)
    probs = jax.nn.softmax(-temperature * (errors - jnp.min(errors)))
    return jnp.sum(probs * candidates), probs
