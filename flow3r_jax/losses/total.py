"""The Flow3r training loss: `flow3r_loss(out, batch, config)` -> (total, terms).

total = point + normal + 0.05 conf + 0.1 camera + 0.01 flow (weights in `LossConfig`), plus, when
`consistency_weight` > 0, DF-Net's cross-task consistency (`consistency`; off by default).

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
- Options beyond the official loss (off by default; then the terms and values are exactly the
  official ones): `consistency_weight` adds DF-Net's depth/pose-flow consistency ("consistency"
  and the estimated fraction of non-rigid pixels "dynamic_fraction" among the terms);
  `dynamic_weight` < 1 multiplies the point weights of pixels judged non-rigid (in the point
  term and the S* fit, hence the camera term) by that factor.

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
from flow3r_jax.losses.consistency import consistency_inputs, cross_consistency, dynamic_regions
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
    # DF-Net cross-task consistency (flow3r_jax.losses.consistency); 0 = off, DF-Net uses 0.5.
    consistency_weight: float = 0.0
    consistency_flow: str = "target"  # "target": the batch's flow; "pred": the flow head's output
    # "ndc": |r - f| in the flow head's NDC units (the other terms' scale at any resolution);
    # "px": DF-Net's pixels, whose size (5-25 at 56 px from scratch) swamps pi^3's terms
    consistency_units: str = "ndc"
    fb_alpha: float = 0.01  # occluded where |f + b|^2 > fb_alpha (|f|^2 + |b|^2) + fb_beta (px^2)
    fb_beta: float = 0.5
    dynamic_abs_px: float = 1.0  # non-rigid where |rigid - flow| > dynamic_abs_px + dynamic_rel |flow|
    dynamic_rel: float = 0.1
    dynamic_weight: float = 1.0  # point / S* weight of non-rigid pixels (1 = no down-weighting)

    def __post_init__(self):
        if self.consistency_units not in ("px", "ndc"):
            raise ValueError(f"LossConfig.consistency_units: choose 'ndc' or 'px', got {self.consistency_units!r}")
        if self.consistency_flow not in ("target", "pred"):
            raise ValueError(f"LossConfig.consistency_flow: choose 'target' or 'pred', got {self.consistency_flow!r}")
        if not 0.0 <= self.dynamic_weight <= 1.0:
            raise ValueError(f"LossConfig.dynamic_weight: must be in [0, 1], got {self.dynamic_weight!r}")
        if self.consistency_weight < 0:
            raise ValueError(f"LossConfig.consistency_weight: must be >= 0, got {self.consistency_weight!r}")

    @property
    def uses_consistency(self) -> bool:
        """Whether the rigid-flow consistency machinery runs (its loss or its dynamic mask)."""
        return self.consistency_weight > 0 or self.dynamic_weight != 1.0

    @classmethod
    def from_config(cls, loss: "dict | ml_collections.ConfigDict") -> "LossConfig":  # noqa: F821
        """A config's `loss` section (configs/flow3r.py) -> LossConfig; an unknown field is a
        ValueError naming it."""
        known = {f.name for f in dataclasses.fields(cls)}
        items = dict(loss.items())
        unknown = sorted(set(items) - known)
        if unknown:
            raise ValueError(f"config.loss: unknown fields {unknown}; LossConfig has {sorted(known)}")
        return cls(**items)


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
    # Non-rigid pixels down-weighted (LossConfig.dynamic_weight) in the S* fit and the point term.
    fit_weights = weights * batch["rigid_weight"] if "rigid_weight" in batch else weights
    scale = optimal_scale(pred, gt, fit_weights, valid, config.roe_points)
    aligned = per_pixel(scale)[..., None] * pred

    terms = dict(scale=scale, point=point_loss(aligned, gt, fit_weights, valid))
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
    total, scale (mean S* over labeled samples) and nonfinite/<term> (1. where it was zeroed);
    with the consistency options also consistency and dynamic_fraction."""
    geo_out = {k: out[k] for k in ("local_points", "camera_poses", "conf")}
    geo_batch = {k: batch[k] for k in ("depth", "valid", "intrinsics", "poses", "labeled", "high_quality")}
    terms, bad = {}, {}
    if config.uses_consistency:
        c_out = {k: out[k] for k in ("local_points", "camera_poses", "flow")}
        c_batch = {k: batch[k] for k in ("flow_target", "covisible", "pairs", "pair_valid")}
        src, fb = config.consistency_flow, dict(alpha=config.fb_alpha, beta=config.fb_beta)
        if config.consistency_weight > 0:
            term = lambda o, b: cross_consistency(*consistency_inputs(o, b, src, **fb)[:3], b["pair_valid"], config.consistency_units)  # noqa: E731
            terms["consistency"], bad["consistency"] = finite_or_zero(term, c_out, c_batch)
        dyn, frame_dyn, tested = dynamic_regions(c_out, c_batch, src, config.dynamic_abs_px, config.dynamic_rel, **fb)
        terms["dynamic_fraction"] = jnp.sum(dyn) / jnp.maximum(jnp.sum(tested), 1)
        if config.dynamic_weight != 1.0:
            geo_batch["rigid_weight"] = jnp.where(frame_dyn, config.dynamic_weight, 1.0).astype(out["local_points"].dtype)

    # Each term is guarded on its own (its own vjp), so that one NaN term keeps the others'
    # gradients: a shared pullback would carry 0 x NaN from the failed term into the others.
    # XLA merges the repeated forward work; the cost is compile time (~2x the loss's).
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
    if "consistency" in terms:
        total = total + config.consistency_weight * terms["consistency"]
    labeled = batch["labeled"]
    scale = jax.lax.stop_gradient(geometry_terms(geo_out, geo_batch, config, sky_mask)["scale"])
    terms["scale"] = jnp.sum(jnp.where(labeled, scale, 0.0)) / jnp.maximum(jnp.sum(labeled), 1)
    terms["total"] = total
    terms.update({f"nonfinite/{k}": v for k, v in bad.items()})
    return total, {k: jnp.asarray(v, jnp.float32) for k, v in terms.items()}
