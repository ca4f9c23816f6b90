"""The Flow3r training loss: `flow3r_loss(out, batch, config)` -> (total, terms).

total = point + normal + 0.05 conf + 0.1 camera + 0.01 flow (weights in `LossConfig`).

`out` holds the model outputs: local_points (B, N, H, W, 3), camera_poses (B, N, 4, 4)
camera-to-world, conf (B, N, H, W, 1) logits, flow (B, S, H, W, 2) official NDC. `batch` is
`flow3r_jax.data.targets.prepare_batch`'s output (depth, valid, intrinsics, poses, flow_target,
covisible, pair_valid, labeled, high_quality).

Follows the official `Pi3FlowLoss` (flow3r/models/loss.py @ dfba904):
- GT into camera 0 and divided by the mean norm of its valid points; prediction divided by the
  mean norm of its local points over the valid mask (`normalize`).
- S* from 4096 nearest-resampled valid points (PyTorch float32 index rule), MoGe's weighted-L1
  fit, sign flipped where <= 0, no gradient (`scale`).
- Point loss w |S* x - x_gt|, w = 1 / (max(z, 0.1 mean_view z) + 1e-6), pooled over the batch's
  valid pixels (`point`); confidence BCE with target error < 0.02, weight 0.05, plus an optional
  sky BCE hook (`conf`); MoGe normal loss on high-quality samples (`normal`).
- Camera: all ordered pairs, 100 Huber(0.1) on translation + mean angle, labeled samples only
  (`camera`). Flow: generalised Charbonnier (0.5, 0.24) of the NDC end-point error over
  covisible pixels of all samples (`flow`).
- Flow-only (unlabeled) samples: valid masks cleared for point / conf / normal, excluded from the
  camera loss; no labeled sample gives exactly zero point and camera terms.
- A non-finite term becomes 0 with zero gradient (`guard`), counted in "nonfinite/<term>".

Differs (deliberately):
- GT local points are the local GT divided by the factor (equal to the official's
  inv(normalised pose) applied to normalised world points, without the round trip).
- A sample without valid pixels gets normalisation factor 1 (the official divides by ~0 there
  and never uses the result). A labeled sample without valid pixels is left out of the camera
  loss (the official's would be NaN and zero the whole camera term); camera terms with no pair
  (N == 1) are 0, not NaN.
- Rotation angle: atan2 geodesic angle instead of acos of the clamped trace (see `camera`).
- Confidence loss on by default (`train_conf=True`, as the SPEC says; the official default is
  False). The sky term needs a caller-provided mask (no SegFormer is shipped); off by default.
- The normal loss is selected by the batch's `high_quality` flag instead of dataset names.
- Non-finite handling is per term (point, normal, conf, camera, flow), where the official
  zeroes point+normal+conf together; masked-out pixels are replaced before any arithmetic, so
  a NaN there never reaches a value or a gradient.
- The Charbonnier is evaluated as expm1 / log1p of r^2: the same function, without float32
  cancellation at small r and without a square root (finite gradient at r = 0).
- The flip of S* <= 0 and all pooled means use masks and safe denominators instead of boolean
  indexing (same values; a mean over nothing is 0 instead of NaN).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from flow3r_jax.losses.camera import camera_loss
from flow3r_jax.losses.conf import conf_loss
from flow3r_jax.losses.flow import flow_loss
from flow3r_jax.losses.guard import finite_or_zero
from flow3r_jax.losses.normal import normal_loss
from flow3r_jax.losses.normalize import gt_local_points, normalize_gt, normalize_pred
from flow3r_jax.losses.point import point_loss, point_weights
from flow3r_jax.losses.scale import optimal_scale

__all__ = ["LossConfig", "geometry_terms", "flow3r_loss"]


@dataclasses.dataclass(frozen=True)
class LossConfig:
    point_weight: float = 1.0
    normal_weight: float = 1.0
    conf_weight: float = 0.05
    camera_weight: float = 0.1
    flow_weight: float = 0.01
    camera_trans_weight: float = 100.0
    huber_delta: float = 0.1
    roe_points: int = 4096
    depth_floor: float = 0.1  # point weight clamps z below at depth_floor x the view's mean z
    conf_threshold: float = 0.02
    charbonnier_alpha: float = 0.5
    charbonnier_c: float = 0.24
    edge_rtol: float = 0.03
    normals: bool = True
    train_conf: bool = True


def geometry_terms(
    out: dict, batch: dict, config: LossConfig = LossConfig(), sky_mask: Bool[Array, "B N H W"] | None = None
) -> dict[str, Array]:
    """point, normal, conf (scalars), camera (stacked total, trans, rot) and scale (B,), not yet
    guarded, from the raw outputs and batch."""
    labeled = batch["labeled"]
    per_pixel = lambda x: x[:, None, None, None]  # noqa: E731
    valid = batch["valid"] & per_pixel(labeled)
    gt_local = gt_local_points(batch["depth"], batch["intrinsics"], labeled[:, None])
    gt, gt_poses, _ = normalize_gt(gt_local, batch["poses"], valid)
    local = jnp.where(valid[..., None], out["local_points"], 0.0)  # invalid pixels never matter
    pred, pred_poses, _ = normalize_pred(local, out["camera_poses"], valid)
    weights = point_weights(gt[..., 2], valid, config.depth_floor)
    scale = optimal_scale(pred, gt, weights, valid, config.roe_points)
    aligned = per_pixel(scale)[..., None] * pred

    terms = dict(scale=scale, point=point_loss(aligned, gt, weights, valid))
    zero = jnp.zeros((), jnp.float32)
    hq = labeled & batch["high_quality"]
    terms["normal"] = normal_loss(aligned, gt, valid, hq, config.edge_rtol) if config.normals else zero
    sky = None if sky_mask is None else sky_mask & per_pixel(labeled)
    conf = out["conf"][..., 0]
    terms["conf"] = conf_loss(conf, aligned, gt, weights, valid, config.conf_threshold, sky) if config.train_conf else zero
    has_points = jnp.any(valid, axis=(-3, -2, -1))  # labeled samples with a scale
    cam = camera_loss(pred_poses, gt_poses, scale, has_points, config.camera_trans_weight, config.huber_delta)
    terms["camera"] = jnp.stack(cam)
    return terms


def flow3r_loss(
    out: dict, batch: dict, config: LossConfig = LossConfig(), sky_mask: Bool[Array, "B N H W"] | None = None
) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """(total, terms): terms has point, normal, conf, camera, camera_trans, camera_rot, flow,
    total, scale (mean S* over labeled samples) and nonfinite/<term> (1. where it was zeroed)."""
    geo_out = {k: out[k] for k in ("local_points", "camera_poses", "conf")}
    geo_batch = {k: batch[k] for k in ("depth", "valid", "intrinsics", "poses", "labeled", "high_quality")}

    # Each term is guarded on its own (its own vjp), so that one NaN term keeps the others'
    # gradients: a shared pullback would carry 0 x NaN from the failed term into the others.
    # XLA merges the repeated forward work; the cost is compile time (~2x the loss's).
    terms, bad = {}, {}
    for name in ("point", "normal", "conf", "camera"):
        term = lambda o, b, s, name=name: geometry_terms(o, b, config, s)[name]  # noqa: E731
        terms[name], bad[name] = finite_or_zero(term, geo_out, geo_batch, sky_mask)
    terms["camera"], terms["camera_trans"], terms["camera_rot"] = terms["camera"]
    valid_flow = batch["covisible"] & batch["pair_valid"][..., None, None]
    flow_term = lambda f, t, m: flow_loss(f, t, m, config.charbonnier_alpha, config.charbonnier_c)  # noqa: E731
    terms["flow"], bad["flow"] = finite_or_zero(flow_term, out["flow"], batch["flow_target"], valid_flow)

    total = (
        config.point_weight * terms["point"]
        + config.normal_weight * terms["normal"]
        + config.conf_weight * terms["conf"]
        + config.camera_weight * terms["camera"]
        + config.flow_weight * terms["flow"]
    )
    labeled = batch["labeled"]
    scale = jax.lax.stop_gradient(geometry_terms(geo_out, geo_batch, config, sky_mask)["scale"])
    terms["scale"] = jnp.sum(jnp.where(labeled, scale, 0.0)) / jnp.maximum(jnp.sum(labeled), 1)
    terms["total"] = total
    terms.update({f"nonfinite/{k}": v for k, v in bad.items()})
    return total, {k: jnp.asarray(v, jnp.float32) for k, v in terms.items()}
