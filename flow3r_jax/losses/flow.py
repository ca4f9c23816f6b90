"""Flow loss (the official `FlowLoss`): generalised Charbonnier of the end-point error in NDC.

r = |pred - target|_2 with both in the official NDC convention (absolute position in frame j),
rho(r) = (|a - 2| / a) (((r / c)^2 / |a - 2| + 1)^(a / 2) - 1), a = 0.5, c = 0.24 (UFM), averaged
over every covisible pixel of every real pair in the batch (pooled; 0 when there is none).
Labeled and flow-only samples alike contribute. rho depends on r^2 only, so the gradient is
finite at r = 0: the loss is computed from r^2, without a square root.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from flow3r_jax.losses.point import masked_mean

__all__ = ["charbonnier", "charbonnier_squared", "flow_loss"]


def charbonnier(r: Float[Array, "*shape"], alpha: float = 0.5, c: float = 0.24) -> Float[Array, "*shape"]:
    """Barron's general robust loss rho(r; alpha, c) for alpha not in {0, 2}; rho(0) = 0.
    Written as expm1((alpha / 2) log1p(.)), which is the same function without the float32
    cancellation of (1 + tiny)^(alpha / 2) - 1 at small r."""
    return charbonnier_squared(r * r, alpha, c)


def charbonnier_squared(r2: Float[Array, "*shape"], alpha: float = 0.5, c: float = 0.24) -> Float[Array, "*shape"]:
    """`charbonnier` as a function of r^2 (no square root: finite gradient at r = 0)."""
    b = abs(alpha - 2.0)
    return (b / alpha) * jnp.expm1((alpha / 2.0) * jnp.log1p(r2 / (c * c * b)))


def flow_loss(
    pred: Float[Array, "*batch S H W 2"],
    target: Float[Array, "*batch S H W 2"],
    valid: Bool[Array, "*batch S H W"],
    alpha: float = 0.5,
    c: float = 0.24,
) -> Float[Array, ""]:
    """Mean of charbonnier(|pred - target|) over the valid (covisible, real-pair) pixels."""
    diff = jnp.where(valid[..., None], pred - target, 0.0)
    return masked_mean(charbonnier_squared(jnp.sum(diff * diff, axis=-1), alpha, c), valid)
