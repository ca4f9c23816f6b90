"""The optimal scale S* of the point loss: the official `prepare_ROE` + MoGe `align_points_scale`.

Per sample, the valid pixels are listed in (N, H, W) row-major order and that list of n points is
resampled to exactly `size` entries the way PyTorch's `F.interpolate(mode="nearest")` does:
entry k is source k' = min(floor(k * s), n - 1) with s = float32(n) / size, the product taken in
float32 (so for large n it can differ from the exact integer floor). Points, GT points and
weights are resampled alike; a sample without valid pixels gets all-ones entries (S* = 1).

S* = argmin_a sum w |a x - y| over the flattened xyz coordinates (the weight repeated per
coordinate), solved exactly as a weighted median by `geometry.robust_scale`, then made positive
(S* <= 0 is negated, as the official does). No gradient flows through S*. `robust_scale` treats
x = 0 as positive where MoGe's torch.sign gives 0; either way such an entry has weight 0 and is
never the selected median, so the values agree.

`roe_indices` finds the k'-th valid pixel with a cumulative count and a binary search, so every
shape is fixed and the whole thing runs under `jit` / `vmap`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from flow3r_jax.geometry import robust_scale

__all__ = ["roe_indices", "roe_resample", "optimal_scale"]

_searchsorted = jnp.vectorize(lambda a, v: jnp.searchsorted(a, v, side="left"), signature="(m),(k)->(k)")


def roe_indices(valid: Bool[Array, "*batch M"], size: int = 4096) -> tuple[Int[Array, "*batch size"], Bool[Array, "*batch"]]:
    """(flat index of the pixel feeding each of the `size` entries, whether any pixel is valid).
    Indices of samples without valid pixels are 0 (their entries are replaced by ones)."""
    csum = jnp.cumsum(valid, axis=-1, dtype=jnp.int32)
    n = csum[..., -1]
    step = n.astype(jnp.float32) / jnp.float32(size)
    k = jnp.arange(size, dtype=jnp.float32)
    rank = jnp.minimum(jnp.floor(k * step[..., None]).astype(jnp.int32), n[..., None] - 1)
    idx = _searchsorted(csum, rank + 1)  # first position where the running count reaches rank + 1
    return jnp.clip(idx, 0, valid.shape[-1] - 1), n > 0


def roe_resample(
    x: Float[Array, "*batch M C"], valid: Bool[Array, "*batch M"], size: int = 4096
) -> Float[Array, "*batch size C"]:
    """The valid rows of x (in order), nearest-resampled to `size` rows; ones without valid rows."""
    idx, any_valid = roe_indices(valid, size)
    picked = jnp.take_along_axis(x, idx[..., None], axis=-2)
    return jnp.where(any_valid[..., None, None], picked, jnp.ones_like(picked))


def optimal_scale(
    pred: Float[Array, "*batch N H W 3"],
    gt: Float[Array, "*batch N H W 3"],
    weights: Float[Array, "*batch N H W"],
    valid: Bool[Array, "*batch N H W"],
    size: int = 4096,
) -> Float[Array, "*batch"]:
    """S* > 0 (no gradient) minimising sum w |S* pred - gt| over `size` resampled valid points."""
    pred, gt, weights = jax.lax.stop_gradient((pred, gt, weights))
    lead = valid.shape[:-3]
    flat = lambda a: a.reshape(lead + (-1, a.shape[-1]))  # noqa: E731
    v = valid.reshape(lead + (-1,))
    x = roe_resample(flat(pred), v, size)
    y = roe_resample(flat(gt), v, size)
    w = roe_resample(flat(weights[..., None]), v, size)
    w = jnp.broadcast_to(w, x.shape)
    s = robust_scale(x.reshape(lead + (-1,)), y.reshape(lead + (-1,)), w.reshape(lead + (-1,)))
    return jnp.where(s <= 0, -s, s)
