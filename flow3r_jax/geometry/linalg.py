"""Small linear-algebra building blocks shared by the geometry modules.

`polar_rotation` is the one place where a 3x3 SVD is differentiated. JAX's generic SVD derivative
divides by s_i^2 - s_j^2 and is NaN as soon as two singular values coincide (an isotropic point
cloud, the identity, any symmetric configuration). The rotation factor of the polar decomposition
has a derivative that only divides by s_i + s_j, which vanishes only when the rotation itself is
not unique; we implement it as a custom JVP, so forward and reverse mode are both finite.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["safe_norm", "skew", "vee", "det3", "polar_rotation"]


def safe_norm(x: Array, axis: int = -1, keepdims: bool = False) -> Array:
    """Euclidean norm whose gradient at exactly zero is 0 instead of NaN."""
    sq = jnp.sum(x * x, axis=axis, keepdims=keepdims)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def skew(v: Float[Array, "*batch 3"]) -> Float[Array, "*batch 3 3"]:
    """Cross-product matrix: skew(v) @ u == cross(v, u)."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    zero = jnp.zeros_like(x)
    return jnp.stack(
        [
            jnp.stack([zero, -z, y], axis=-1),
            jnp.stack([z, zero, -x], axis=-1),
            jnp.stack([-y, x, zero], axis=-1),
        ],
        axis=-2,
    )


def vee(S: Float[Array, "*batch 3 3"]) -> Float[Array, "*batch 3"]:
    """Inverse of `skew` on antisymmetric matrices."""
    return jnp.stack([S[..., 2, 1], S[..., 0, 2], S[..., 1, 0]], axis=-1)


def det3(A: Float[Array, "*batch 3 3"]) -> Float[Array, "*batch"]:
    """Determinant of 3x3 matrices as a triple product (cheaper than an LU per matrix)."""
    return jnp.sum(A[..., 0, :] * jnp.cross(A[..., 1, :], A[..., 2, :]), axis=-1)


def _signed_svd(M):
    """SVD with the last singular pair's sign flipped when needed so that U' V^T is a rotation."""
    U, S, Vt = jnp.linalg.svd(M, full_matrices=False)
    d = jnp.where(det3(U) * det3(Vt) < 0, -1.0, 1.0).astype(M.dtype)
    flip = jnp.stack([jnp.ones_like(d), jnp.ones_like(d), d], axis=-1)
    U = U * flip[..., None, :]
    S = S * flip
    return U, S, Vt


@jax.custom_jvp
def polar_rotation(M: Float[Array, "*batch 3 3"]) -> Float[Array, "*batch 3 3"]:
    """The rotation closest to M in Frobenius norm: argmax_{R in SO(3)} tr(R^T M).

    With M = U S V^T, R = U diag(1, 1, det(U V^T)) V^T (reflections fixed by flipping the
    smallest singular direction). Differentiable everywhere the answer is unique.
    """
    U, _, Vt = _signed_svd(M)
    return U @ Vt


@polar_rotation.defjvp
def _polar_rotation_jvp(primals, tangents):
    (M,), (dM,) = primals, tangents
    U, S, Vt = _signed_svd(M)
    R = U @ Vt
    # M = U S' V^T with S' signed. Writing M = R P (P symmetric), R^T dR = V B V^T with
    # B antisymmetric, B_ij = (X_ij - X_ji) / (s'_i + s'_j), X = U^T dM V; then dR = U B V^T.
    X = jnp.swapaxes(U, -1, -2) @ dM @ jnp.swapaxes(Vt, -1, -2)
    den = S[..., :, None] + S[..., None, :]
    tiny = 1e-9 * jnp.max(jnp.abs(S), axis=-1)[..., None, None] + jnp.finfo(M.dtype).tiny
    den = jnp.where(jnp.abs(den) < tiny, jnp.where(den < 0, -tiny, tiny), den)
    B = (X - jnp.swapaxes(X, -1, -2)) / den
    return R, U @ B @ Vt
