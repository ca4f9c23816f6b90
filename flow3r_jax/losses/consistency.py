"""DF-Net cross-task consistency (Zou et al., ECCV 2018, `vt-vl-lab/DF-Net`) and the dynamic-region
estimate that falls out of it.

On pixels that both branches judge reliable, the flow induced by the predicted depth and relative
pose (the *rigid* flow, `geometry.induced_flow`) must agree with the flow (the batch's flow target,
or the flow head's prediction):

    L = sum_p m_p |r_p - f_p|_1 / (sum_p m_p + 1e-3)        per direction, |.|_1 over (dx, dy)

with m = in_range(r) (1 - occ(r, r_back)) x in_range(f) (1 - occ(f, f_back)), both masks without
gradient. A pixel is occluded when |a + b|^2 > alpha (|a|^2 + |b|^2) + beta, alpha = 0.01,
beta = 0.5 px^2, where b is the backward flow sampled bilinearly at the forward-warped position
x + a; in range means the target's pixel centre lies within the centres of the border pixels,
[0.5, W - 0.5] x [0.5, H - 0.5] in our convention ([0, W - 1] in DF-Net's integer pixel indices).
DF-Net weights the sum of both directions by 0.5 (`--cross_consistency`).

How this maps onto a Flow3r batch:
- A batch carries S directed pairs (i, j) per sample. Each is one *direction*; both directions of a
  pair are the slots (i, j) and (j, i) when the sampler drew both. The rigid branch always has both
  directions (every frame has predicted points), so its occlusion test is always DF-Net's. The flow
  branch's occlusion test uses the reverse slot's flow when the sample has it; otherwise it keeps
  the target's own covisibility mask (exact for synthetic clips, the teacher's forward-backward
  check for unlabeled video), which is already an occlusion test.
- Each slot is normalised over the whole batch (DF-Net pools the batch the same way for each source
  frame and direction); the loss is 2 x the mean over slots with a real pair, which equals DF-Net's
  L(i->j) + L(j->i) for one pair in both directions, and does not grow with S.
- Depth is the predicted local points' z, intrinsics a pinhole at the image centre whose focal is
  the least-squares fit to the frame's own points (`geometry.focal_from_pointmap`, as the projective
  flow head does), poses the predicted camera-to-world poses. The induced flow is invariant to the
  prediction's global scale, so no S* is needed.
- Flow is in pixels, as DF-Net's (so the weight and the 0.5 px^2 occlusion margin mean the same).

Dynamic regions: where both branches are valid (the loss mask without the rigid forward-backward
test, see `consistency_masks`) and |r - f|_2 > abs_px + rel |f|_2 the pixel does not
move rigidly with the camera (`disagreement_mask`); per frame, a pixel is dynamic when any pair
leaving that frame says so (`frame_dynamic`). The train loss can down-weight those pixels in the
point term and in the scale fit S* (hence the camera term) with `LossConfig.dynamic_weight`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from flow3r_jax.geometry import bilinear_sample, fb_occluded, flow_to_coords, focal_from_pointmap, induced_flow, intrinsics_from_focal, ndc_coords_to_flow

__all__ = [
    "in_range",
    "sample_backward",
    "fb_occluded",
    "branch_mask",
    "pinhole_from_points",
    "pair_rigid_flows",
    "reverse_slots",
    "consistency_masks",
    "consistency_inputs",
    "cross_consistency",
    "disagreement_mask",
    "frame_dynamic",
    "dynamic_regions",
    "precision_recall",
]

EPS = 1e-3  # DF-Net's EPS in the normalisation


def in_range(flow: Float[Array, "*batch H W 2"]) -> Bool[Array, "*batch H W"]:
    """The target x + flow lies within the centres of the border pixels: x in [0.5, W - 0.5],
    y in [0.5, H - 0.5] (DF-Net's `get_in_range_mask`, which uses integer pixel centres)."""
    H, W = flow.shape[-3:-1]
    xy = flow_to_coords(flow)
    return (xy[..., 0] >= 0.5) & (xy[..., 0] <= W - 0.5) & (xy[..., 1] >= 0.5) & (xy[..., 1] <= H - 0.5)


def sample_backward(flow_fw: Float[Array, "*batch H W 2"], flow_bw: Float[Array, "*batch H W 2"]) -> Float[Array, "*batch H W 2"]:
    """flow_bw (on frame j's grid) sampled bilinearly at x + flow_fw (DF-Net's `flow_inverse_warp`
    of the backward flow; outside the image the border is repeated, which only happens where
    `in_range` is False)."""
    return bilinear_sample(flow_bw, flow_to_coords(flow_fw), padding="border")


def branch_mask(
    flow_fw: Float[Array, "*batch H W 2"], flow_bw: Float[Array, "*batch H W 2"], alpha: float = 0.01, beta: float = 0.5
) -> Bool[Array, "*batch H W"]:
    """in_range(f) x (1 - occ(f, b(x + f))): one branch's valid pixels for one direction."""
    return in_range(flow_fw) & ~fb_occluded(flow_fw, sample_backward(flow_fw, flow_bw), alpha, beta)


def pinhole_from_points(local_points: Float[Array, "*batch H W 3"], min_focal: float = 0.05) -> Float[Array, "*batch 3 3"]:
    """Intrinsics of a predicted pointmap: principal point at the image centre, focal the
    least-squares fit to its own points, at least min_focal x max(H, W) (a >170 degree field of
    view; keeps an untrained prediction's intrinsics invertible)."""
    H, W = local_points.shape[-3:-1]
    focal = jnp.maximum(focal_from_pointmap(local_points), min_focal * max(H, W))
    return intrinsics_from_focal(focal, cx=W / 2.0, cy=H / 2.0)


def _gather(x, idx):
    return jax.vmap(lambda a, i: a[i])(x, idx)


def pair_rigid_flows(
    depth: Float[Array, "B N H W"], intrinsics: Float[Array, "B N 3 3"], poses: Float[Array, "B N 4 4"], pairs: Int[Array, "B S 2"]
) -> tuple[Float[Array, "B S H W 2"], Float[Array, "B S H W 2"], Bool[Array, "B S H W"]]:
    """(rigid flow i -> j on i's grid, rigid flow j -> i on j's grid, valid i -> j: depth > 0 and in
    front of camera j) for every pair (i, j), from depth, intrinsics and camera-to-world poses."""
    i, j = pairs[..., 0], pairs[..., 1]
    d_i, K_i, T_i = _gather(depth, i), _gather(intrinsics, i), _gather(poses, i)
    d_j, K_j, T_j = _gather(depth, j), _gather(intrinsics, j), _gather(poses, j)
    fw, valid = induced_flow(d_i, K_i, T_i, K_j, T_j)
    bw, _ = induced_flow(d_j, K_j, T_j, K_i, T_i)
    return fw, bw, valid


def reverse_slots(pairs: Int[Array, "B S 2"], pair_valid: Bool[Array, "B S"]) -> tuple[Int[Array, "B S"], Bool[Array, "B S"]]:
    """(index of the slot holding (j, i) for slot (i, j), whether there is one), per sample."""
    match = (pairs[:, :, None, 0] == pairs[:, None, :, 1]) & (pairs[:, :, None, 1] == pairs[:, None, :, 0])
    match = match & pair_valid[:, :, None] & pair_valid[:, None, :]
    return jnp.argmax(match, axis=-1), jnp.any(match, axis=-1)


def consistency_masks(
    rigid_fw: Float[Array, "B S H W 2"],
    rigid_bw: Float[Array, "B S H W 2"],
    rigid_valid: Bool[Array, "B S H W"],
    flow: Float[Array, "B S H W 2"],
    flow_valid: Bool[Array, "B S H W"],
    pairs: Int[Array, "B S 2"],
    pair_valid: Bool[Array, "B S"],
    alpha: float = 0.01,
    beta: float = 0.5,
) -> tuple[Bool[Array, "B S H W"], Bool[Array, "B S H W"]]:
    """(loss mask, test mask) for each directed pair, without gradient.

    The loss mask is DF-Net's, both branches: rigid in range and forward-backward consistent with
    the reverse rigid flow; flow `flow_valid`, in range and forward-backward consistent with the
    reverse slot's flow where the sample has one. The test mask, where the dynamic-region test
    runs, drops the rigid forward-backward test: a moving object breaks the rigid round trip (the
    point is elsewhere in frame j, which shows other depth there), so that test would hide most
    of what the disagreement is meant to find."""
    rigid_ok = rigid_valid & in_range(rigid_fw) & pair_valid[..., None, None]
    rigid_fb = ~fb_occluded(rigid_fw, sample_backward(rigid_fw, rigid_bw), alpha, beta)
    rev, has_rev = reverse_slots(pairs, pair_valid)
    occluded = fb_occluded(flow, sample_backward(flow, _gather(flow, rev)), alpha, beta) & has_rev[..., None, None]
    flow_ok = flow_valid & in_range(flow) & ~occluded
    return jax.lax.stop_gradient((rigid_ok & rigid_fb & flow_ok, rigid_ok & flow_ok))


def consistency_inputs(
    out: dict, batch: dict, flow_source: str = "target", alpha: float = 0.01, beta: float = 0.5
) -> tuple[Float[Array, "B S H W 2"], Float[Array, "B S H W 2"], Bool[Array, "B S H W"], Bool[Array, "B S H W"]]:
    """(rigid flow, flow, loss mask, test mask) of every directed pair from model outputs (local_points, camera_poses,
    flow) and a prepared batch (flow_target, covisible, pairs, pair_valid), flows in pixels.

    The rigid flow comes from the predicted depth (local z), pinhole (`pinhole_from_points`) and
    poses; the flow is the target (`flow_source="target"`, valid where covisible) or the flow
    head's output ("pred", valid everywhere before the DF-Net tests)."""
    points, poses, pairs, pair_valid = out["local_points"], out["camera_poses"], batch["pairs"], batch["pair_valid"]
    rigid_fw, rigid_bw, rigid_valid = pair_rigid_flows(points[..., 2], pinhole_from_points(points), poses, pairs)
    if flow_source == "target":
        flow, flow_valid = ndc_coords_to_flow(batch["flow_target"]), batch["covisible"]
    elif flow_source == "pred":
        flow, flow_valid = ndc_coords_to_flow(out["flow"]), jnp.ones(out["flow"].shape[:-1], bool)
    else:
        raise ValueError(f"consistency_inputs: flow_source must be 'target' or 'pred', got {flow_source!r}")
    loss_mask, test_mask = consistency_masks(rigid_fw, rigid_bw, rigid_valid, flow, flow_valid, pairs, pair_valid, alpha, beta)
    return rigid_fw, flow, loss_mask, test_mask


def cross_consistency(
    rigid: Float[Array, "B S H W 2"], flow: Float[Array, "B S H W 2"], mask: Bool[Array, "B S H W"], pair_valid: Bool[Array, "B S"], units: str = "px"
) -> Float[Array, ""]:
    """2 x mean over slots with a real pair of sum m |r - f|_1 / (sum m + 1e-3), each slot's sums
    pooled over the batch (DF-Net's cross-task term, unweighted). Masked-out pixels never reach
    the value or the gradient. `units`: "px" (DF-Net's) or "ndc", the difference measured as the
    flow head's output is (dx 2 / (W - 1), dy 2 / (H - 1)), which keeps the term's size that of
    the other Flow3r losses at any resolution."""
    if units not in ("px", "ndc"):
        raise ValueError(f"cross_consistency: units must be 'px' or 'ndc', got {units!r}")
    H, W = rigid.shape[-3:-1]
    diff = jnp.where(mask[..., None], rigid - flow, 0.0)
    if units == "ndc":
        diff = diff * jnp.asarray([2.0 / max(W - 1, 1), 2.0 / max(H - 1, 1)], diff.dtype)
    per_slot = jnp.sum(jnp.abs(diff), axis=(0, 2, 3, 4)) / (jnp.sum(mask, axis=(0, 2, 3)).astype(diff.dtype) + EPS)
    active = jnp.any(pair_valid, axis=0)
    return 2.0 * jnp.sum(jnp.where(active, per_slot, 0.0)) / jnp.maximum(jnp.sum(active), 1).astype(diff.dtype)


def disagreement_mask(
    rigid: Float[Array, "*batch H W 2"], flow: Float[Array, "*batch H W 2"], mask: Bool[Array, "*batch H W"], abs_px: float = 1.0, rel: float = 0.1
) -> Bool[Array, "*batch H W"]:
    """Non-rigid pixels: within `mask`, |r - f|_2 > abs_px + rel |f|_2."""
    err = jnp.sqrt(jnp.sum((rigid - flow) ** 2, axis=-1))
    return mask & (err > abs_px + rel * jnp.sqrt(jnp.sum(flow**2, axis=-1)))


def frame_dynamic(pair_dynamic: Bool[Array, "B S H W"], pairs: Int[Array, "B S 2"], num_frames: int) -> Bool[Array, "B N H W"]:
    """Per frame: a pixel is dynamic when any pair leaving that frame flags it."""
    leaves = pairs[..., 0][..., None] == jnp.arange(num_frames)  # (B, S, N)
    return jnp.any(leaves[..., None, None] & pair_dynamic[:, :, None], axis=1)


def dynamic_regions(
    out: dict,
    batch: dict,
    flow_source: str = "target",
    abs_px: float = 1.0,
    rel: float = 0.1,
    alpha: float = 0.01,
    beta: float = 0.5,
) -> tuple[Bool[Array, "B S H W"], Bool[Array, "B N H W"], Bool[Array, "B S H W"]]:
    """The dynamic-region estimate, without gradient: (per pair: pixel of i judged non-rigid, per
    frame: `frame_dynamic`, per pair: where the test ran). Inputs as `consistency_inputs`."""
    rigid, flow, _, tested = jax.lax.stop_gradient(consistency_inputs(out, batch, flow_source, alpha, beta))
    pair = disagreement_mask(rigid, flow, tested, abs_px, rel)
    return pair, frame_dynamic(pair, batch["pairs"], out["local_points"].shape[1]), tested


def precision_recall(pred: Bool[Array, "*shape"], gt: Bool[Array, "*shape"], where: Bool[Array, "*shape"]) -> tuple[Array, Array]:
    """(precision, recall) of `pred` against `gt` over the pixels in `where`, pooled; a ratio with
    nothing to count is NaN."""
    tp = jnp.sum(pred & gt & where)
    return tp / jnp.sum(pred & where), tp / jnp.sum(gt & where)
