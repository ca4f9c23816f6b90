"""TracksTo4D's unsupervised losses (official `inference.get_losses` and `train.py`), on the outputs
of `models.tracks4d.Tracks4D` and a batch of tracks.

With r the reprojection distance in normalised image coordinates and V the visible (frame, track)
entries of the batch (means are over V, pooled over the batch; the official batch is one clip):

  static    mean_V log(NR_n + r_static^2 / NR_n): the static part X^0_n = B_n0 (c_t0 = 1) seen by
            the cameras; the per-track motion level NR_n is a learned robust scale: a track that
            moves (large static residual) pays log(NR) instead of r^2, one that is static is
            pushed to small NR, which in turn weighs its dynamic bases more in `sparsity`;
  dynamic   mean_V r over the full points X_tn = stop_gradient(B_n0) + sum_{k>=1} c_tk B_nk,
            projected by stop-gradient cameras (rotation, centre: official
            `detach_cameras_dynamic`; the focal factor is not stopped), weight 50;
  depth     -sum_V min(Z_c, 0) of those same full points (a sum, as the official code);
  sparsity  mean |B_nk / stop_gradient(NR_n)| over k >= 1, weight 0.001.

total = static + 50 dynamic + depth + 0.001 sparsity, clipped at `clip` (official: 100 from the
fourth epoch on; jnp.minimum, so a clipped step gives no gradient, like torch.clamp).

The official training starts with a camera warm-up (`train.py`, `num_pre_train_epochs`): until it
is below 1e-4, the loss is (mean_t |c_t - (0, 0, -15)|^2 + 100 mean |R_t - I|^2) / 100, which puts
every camera at (0, 0, -15) looking down +z at the origin, where the points start. Here
`warmup_steps` steps of it (a fixed count instead of the official threshold, so that the switch is
a function of the step counter inside the compiled step).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from flow3r_jax.models.tracks4d import points_at, project

__all__ = ["Tracks4DLossConfig", "tracks4d_loss", "tracks4d_terms", "camera_warmup_loss", "full_points", "WARMUP_CENTRE"]

WARMUP_CENTRE = (0.0, 0.0, -15.0)


@dataclasses.dataclass(frozen=True)
class Tracks4DLossConfig:
    dynamic_weight: float = 50.0  # official reprojection_dynamic_coeff
    sparsity_weight: float = 1e-3  # official sparsity_dynamic_coeff
    depth_weight: float = 1.0
    clip: float = 100.0
    warmup_steps: int = 0


def full_points(out: dict, stop_static: bool = True) -> Float[Array, "b t n 3"]:
    """X_tn = B_n0 + sum_{k>=1} c_tk B_nk, the static part B_n0 behind a stop-gradient (official)."""
    static = out["basis"][..., 0]
    if stop_static:
        static = jax.lax.stop_gradient(static)
    return points_at(out["coeffs"][..., 1:], out["basis"][..., 1:]) + static[..., None, :, :]


def _masked_mean(x, mask):
    m = mask.astype(x.dtype)
    return jnp.sum(x * m) / jnp.maximum(jnp.sum(m), 1.0)


def tracks4d_terms(out: dict, tracks: Float[Array, "b t n 2"], visible: Float[Array, "b t n"]) -> dict[str, jax.Array]:
    """The unweighted terms: static, dynamic, depth, sparsity (see the module docstring)."""
    vis = visible.astype(bool)
    R, c, f, nr = out["rotation"], out["centre"], out["focal"], out["motion"]
    static_pts = jnp.broadcast_to(out["basis"][..., None, :, :, 0], tracks.shape[:-1] + (3,))
    proj_s, _ = project(static_pts, R, c, f)
    proj_d, depth = project(full_points(out), jax.lax.stop_gradient(R), jax.lax.stop_gradient(c), f)
    r2_s = jnp.sum((proj_s - tracks) ** 2, axis=-1)
    # sqrt with a zero-safe gradient: the exact reconstruction has r = 0
    r2_d = jnp.sum((proj_d - tracks) ** 2, axis=-1)
    safe = jnp.where(r2_d > 0, r2_d, 1.0)
    r_d = jnp.where(r2_d > 0, jnp.sqrt(safe), 0.0)
    nr_t = nr[..., None, :]
    static = _masked_mean(jnp.log(nr_t + r2_s / nr_t), vis)
    dynamic = _masked_mean(r_d, vis)
    neg_depth = -jnp.sum(jnp.where(vis, jnp.minimum(depth, 0.0), 0.0))
    sparsity = jnp.mean(jnp.abs(out["basis"][..., 1:] / jax.lax.stop_gradient(nr)[..., None, None]))
    return {"static": static, "dynamic": dynamic, "depth": neg_depth, "sparsity": sparsity}


def camera_warmup_loss(out: dict) -> jax.Array:
    """Official pre-training loss: cameras to centre (0, 0, -15) and rotation I."""
    d = out["centre"] - jnp.asarray(WARMUP_CENTRE, out["centre"].dtype)
    return (jnp.mean(jnp.sum(d**2, axis=-1)) + 100.0 * jnp.mean((out["rotation"] - jnp.eye(3)) ** 2)) / 100.0


def tracks4d_loss(out: dict, batch: dict, cfg: Tracks4DLossConfig = Tracks4DLossConfig(), step: jax.Array | int | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(total, terms) on `batch` = {"tracks": (B, T, N, 2) normalised, "visible": (B, T, N)}.
    During the first `cfg.warmup_steps` steps (`step` given) the total is the camera warm-up loss."""
    terms = tracks4d_terms(out, batch["tracks"], batch["visible"])
    total = terms["static"] + cfg.dynamic_weight * terms["dynamic"] + cfg.depth_weight * terms["depth"] + cfg.sparsity_weight * terms["sparsity"]
    total = jnp.minimum(total, cfg.clip)
    terms["warmup"] = camera_warmup_loss(out)
    if step is not None and cfg.warmup_steps > 0:
        total = jnp.where(jnp.asarray(step) < cfg.warmup_steps, terms["warmup"], total)
    terms["total"] = total
    return total, terms
