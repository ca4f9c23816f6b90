"""Rotations: quaternions, axis-angle, 6D / 9D parameterisations, geodesic angle.

Quaternions are scalar-first `(w, x, y, z)` (COLMAP's order; scipy's `as_quat()` is scalar-last).
`matrix_to_quaternion` returns the representative with w >= 0. All functions are batched over
leading dimensions and safe under `jit`, `vmap` and `grad` (no NaN gradients at the identity or at
180 degrees).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from flow3r_jax.geometry.linalg import polar_rotation, safe_norm, skew, vee

__all__ = [
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "rotation_6d_to_matrix",
    "matrix_to_rotation_6d",
    "rotation_9d_to_matrix",
    "geodesic_angle",
    "random_rotation",
]


def quaternion_to_matrix(q: Float[Array, "*batch 4"]) -> Float[Array, "*batch 3 3"]:
    """Unit quaternion (w, x, y, z) -> rotation matrix. The input is normalised first."""
    q = q / safe_norm(q, axis=-1, keepdims=True)
    w, x, y, z = jnp.moveaxis(q, -1, 0)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


def matrix_to_quaternion(R: Float[Array, "*batch 3 3"]) -> Float[Array, "*batch 4"]:
    """Rotation matrix -> unit quaternion (w, x, y, z) with w >= 0.

    Shepperd's method: of the four algebraically equivalent formulas (one per quaternion component
    taken as the pivot), use the one with the largest pivot, which is always well conditioned.
    """
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    # 4 * component^2 for w, x, y, z.
    sq = jnp.stack(
        [
            1 + m00 + m11 + m22,
            1 + m00 - m11 - m22,
            1 - m00 + m11 - m22,
            1 - m00 - m11 + m22,
        ],
        axis=-1,
    )
    # Candidate quaternions, each scaled by 4 * pivot (rows: pivot w, x, y, z).
    cands = jnp.stack(
        [
            jnp.stack([sq[..., 0], m21 - m12, m02 - m20, m10 - m01], axis=-1),
            jnp.stack([m21 - m12, sq[..., 1], m10 + m01, m02 + m20], axis=-1),
            jnp.stack([m02 - m20, m10 + m01, sq[..., 2], m12 + m21], axis=-1),
            jnp.stack([m10 - m01, m02 + m20, m12 + m21, sq[..., 3]], axis=-1),
        ],
        axis=-2,
    )
    best = jnp.argmax(sq, axis=-1)
    q = jnp.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
    q = q / safe_norm(q, axis=-1, keepdims=True)
    return jnp.where(q[..., :1] < 0, -q, q)


def axis_angle_to_matrix(v: Float[Array, "*batch 3"]) -> Float[Array, "*batch 3 3"]:
    """Exponential map so(3) -> SO(3) (Rodrigues), with Taylor expansions near zero angle."""
    theta2 = jnp.sum(v * v, axis=-1)[..., None, None]
    small = theta2 < 1e-8
    safe_t2 = jnp.where(small, 1.0, theta2)
    safe_t = jnp.sqrt(safe_t2)
    a = jnp.where(small, 1.0 - theta2 / 6.0, jnp.sin(safe_t) / safe_t)
    b = jnp.where(small, 0.5 - theta2 / 24.0, (1.0 - jnp.cos(safe_t)) / safe_t2)
    K = skew(v)
    eye = jnp.eye(3, dtype=v.dtype)
    return eye + a * K + b * (K @ K)


def matrix_to_axis_angle(R: Float[Array, "*batch 3 3"]) -> Float[Array, "*batch 3"]:
    """Logarithm map SO(3) -> so(3), angle in [0, pi].

    Three regimes, blended with `where` so every branch stays finite: the generic formula
    (axis * angle from the antisymmetric part), its Taylor expansion near 0, and near pi an axis
    read from the symmetric part `(R + R^T)/2 - cos(theta) I = (1 - cos theta) a a^T`.
    """
    anti = vee(R - jnp.swapaxes(R, -1, -2)) * 0.5  # sin(theta) * axis
    sin_t = safe_norm(anti, axis=-1)
    cos_t = (jnp.trace(R, axis1=-2, axis2=-1) - 1.0) * 0.5
    theta = jnp.arctan2(sin_t, cos_t)

    # Generic and small-angle: axis*theta = anti * theta / sin(theta).
    small = sin_t < 1e-4
    safe_sin = jnp.where(small, 1.0, sin_t)
    factor = jnp.where(small, 1.0 + theta**2 / 6.0, theta / safe_sin)
    generic = anti * factor[..., None]

    # Near pi: axis from the column of B = (R + R^T)/2 - cos(theta) I with the largest diagonal.
    eye = jnp.eye(3, dtype=R.dtype)
    B = 0.5 * (R + jnp.swapaxes(R, -1, -2)) - cos_t[..., None, None] * eye
    col = jnp.argmax(jnp.diagonal(B, axis1=-2, axis2=-1), axis=-1)
    axis = jnp.take_along_axis(B, col[..., None, None], axis=-1)[..., 0]
    norm = safe_norm(axis, axis=-1, keepdims=True)
    axis = axis / jnp.where(norm > 1e-12, norm, 1.0)  # B = 0 at the identity (branch unused)
    # Orientation from sin(theta) * axis where it is informative.
    sign = jnp.where(jnp.sum(axis * anti, axis=-1, keepdims=True) < 0, -1.0, 1.0)
    near_pi = axis * sign * theta[..., None]

    use_pi = (cos_t < 0.0) & (sin_t < 1e-2)
    return jnp.where(use_pi[..., None], near_pi, generic)


def _normalize(v, eps=1e-12):
    return v / jnp.maximum(safe_norm(v, axis=-1, keepdims=True), eps)


def rotation_6d_to_matrix(d6: Float[Array, "*batch 6"]) -> Float[Array, "*batch 3 3"]:
    """Zhou et al. (2019) continuous 6D representation -> rotation, by Gram-Schmidt.

    The 6 numbers are the first two *rows* of the matrix (PyTorch3D's convention): row 0 is
    normalise(a1), row 1 is a2 made orthogonal to row 0 and normalised, row 2 their cross product.
    """
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = _normalize(a1)
    b2 = _normalize(a2 - jnp.sum(b1 * a2, axis=-1, keepdims=True) * b1)
    b3 = jnp.cross(b1, b2)
    return jnp.stack([b1, b2, b3], axis=-2)


def matrix_to_rotation_6d(R: Float[Array, "*batch 3 3"]) -> Float[Array, "*batch 6"]:
    """Inverse of `rotation_6d_to_matrix` on rotations: the first two rows, concatenated."""
    return jnp.concatenate([R[..., 0, :], R[..., 1, :]], axis=-1)


def rotation_9d_to_matrix(m: Float[Array, "*batch 9"]) -> Float[Array, "*batch 3 3"]:
    """The official Flow3r / pi^3 camera head's 9D -> SO(3) rule.

    The 9 values form a row-major 3x3 matrix M; each row is L2-normalised (eps 1e-12, as
    `torch.nn.functional.normalize`), then projected to SO(3): with M^T = U S V^T,
    R = V diag(1, 1, det(V U^T)) U^T, which is the rotation closest to M in Frobenius norm,
    i.e. `polar_rotation(M)`. The gradient is the stable polar-decomposition derivative.
    """
    M = m.reshape(m.shape[:-1] + (3, 3))
    M = _normalize(M, eps=1e-12)
    return polar_rotation(M)


def geodesic_angle(
    R1: Float[Array, "*batch 3 3"], R2: Float[Array, "*batch 3 3"] | None = None
) -> Float[Array, "*batch"]:
    """Rotation angle (radians, in [0, pi]) of R1^T R2, or of R1 alone when R2 is None.

    Computed as atan2(|vee(A - A^T)|/2, (tr A - 1)/2), accurate at both ends of the range unlike
    arccos of the trace, and with a finite (zero) gradient at exactly zero angle.
    """
    A = R1 if R2 is None else jnp.swapaxes(R1, -1, -2) @ R2
    sin_t = safe_norm(vee(A - jnp.swapaxes(A, -1, -2)) * 0.5, axis=-1)
    cos_t = (jnp.trace(A, axis1=-2, axis2=-1) - 1.0) * 0.5
    return jnp.arctan2(sin_t, cos_t)


def random_rotation(key: jax.Array, shape: tuple[int, ...] = (), dtype=jnp.float32) -> Array:
    """Rotations uniformly distributed on SO(3) (Haar), from normalised Gaussian quaternions."""
    q = jax.random.normal(key, shape + (4,), dtype=dtype)
    return quaternion_to_matrix(q)
