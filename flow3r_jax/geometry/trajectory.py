"""Camera trajectories: chaining relative poses into absolute ones with an associative scan."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["chain_relative_poses", "consecutive_relative_poses"]


def consecutive_relative_poses(poses: Float[Array, "*batch N 4 4"]) -> Float[Array, "*batch N-1 4 4"]:
    """rel[k] = inv(P_k) @ P_{k+1} for camera-to-world poses P (maps camera k+1 into camera k).

    Uses a general matrix inverse so it also holds for similarity transforms.
    """
    return jnp.linalg.inv(poses[..., :-1, :, :]) @ poses[..., 1:, :, :]


def chain_relative_poses(
    relative: Float[Array, "*batch M 4 4"], first: Float[Array, "*batch 4 4"] | None = None
) -> Float[Array, "*batch M+1 4 4"]:
    """Inverse of `consecutive_relative_poses`: P_0 = first (identity by default) and
    P_{k+1} = P_k @ relative[k].

    The prefix products are computed with `jax.lax.associative_scan` (O(log M) depth), which is
    exact up to floating-point reassociation of the matrix products.
    """
    prefix = jax.lax.associative_scan(jnp.matmul, relative, axis=relative.ndim - 3)
    if first is None:
        first = jnp.broadcast_to(jnp.eye(4, dtype=relative.dtype), relative.shape[:-3] + (4, 4))
    else:
        prefix = first[..., None, :, :] @ prefix
    return jnp.concatenate([first[..., None, :, :], prefix], axis=-3)
