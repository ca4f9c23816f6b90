"""Independent float64 NumPy statement of the official Flow3r loss (Pi3FlowLoss at dfba904),
written the way the official code is (per-sample loops, boolean indexing), and a random batch.

Only numpy; nothing here imports flow3r_jax.
"""

import math

import numpy as np
from scipy.spatial.transform import Rotation

# ----------------------------------------------------------------------------- random inputs


def _rigid(rng, n, t_scale=1.0):
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = Rotation.random(n, random_state=rng).as_matrix()
    T[:, :3, 3] = rng.normal(size=(n, 3)) * t_scale
    return T


def unproject(depth, K):
    """(..., H, W) depth, (..., 3, 3) K -> (..., H, W, 3), pixel centres at +0.5."""
    H, W = depth.shape[-2:]
    u = np.arange(W) + 0.5
    v = np.arange(H) + 0.5
    fx, fy = K[..., 0, 0][..., None, None], K[..., 1, 1][..., None, None]
    cx, cy = K[..., 0, 2][..., None, None], K[..., 1, 2][..., None, None]
    x = (u[None, :] - cx) / fx * depth
    y = (v[:, None] - cy) / fy * depth
    return np.stack([x, y, depth], axis=-1)


def random_batch(
    rng, B=3, N=3, H=8, W=10, S=3, labeled=(True, True, False), high_quality=(True, False, False), zero_invalid=0.3
):
    """A prepared batch and model outputs (float32 numpy). Depths are noisy planes with a step, so
    the normal loss sees both smooth regions and depth edges; predictions are the GT up to a
    per-sample scale, noise, outliers and a perturbed similarity of the poses. A fraction
    `zero_invalid` of the invalid pixels has depth 0 (the rest keep a depth, as datasets do)."""
    labeled = np.array(labeled[:B], bool)
    hq = np.array(high_quality[:B], bool) & labeled
    u = (np.arange(W) + 0.5) / W
    v = (np.arange(H) + 0.5) / H
    depth = np.zeros((B, N, H, W))
    valid = np.zeros((B, N, H, W), bool)
    K = np.zeros((B, N, 3, 3))
    poses = np.tile(np.eye(4), (B, N, 1, 1))
    for b in np.flatnonzero(labeled):
        for n in range(N):
            a, gx, gy = rng.uniform(2, 4), rng.uniform(-0.25, 0.25), rng.uniform(-0.25, 0.25)
            d = a + gx * u[None, :] + gy * v[:, None]
            d = d + (u[None, :] > rng.uniform(0.5, 0.8)) * rng.uniform(0.5, 1.5)
            d = d * (1 + 0.002 * rng.normal(size=(H, W)))
            ok = rng.random((H, W)) < 0.8
            depth[b, n] = np.where(ok | (rng.random((H, W)) >= zero_invalid), d, 0.0)
            valid[b, n] = ok
            f = rng.uniform(8, 12)
            K[b, n] = [[f, 0, W / 2], [0, f * rng.uniform(0.9, 1.1), H / 2], [0, 0, 1]]
        poses[b] = _rigid(rng, N)
    gt_local = unproject(depth, np.where(labeled[:, None, None, None], K, np.eye(3)))

    scale = rng.uniform(0.3, 3.0, size=B)
    local = gt_local * scale[:, None, None, None, None] * (1 + 0.05 * rng.normal(size=gt_local.shape))
    outlier = rng.random((B, N, H, W)) < 0.1
    local = np.where(outlier[..., None], rng.normal(size=local.shape) * 3, local)
    local = np.where(labeled[:, None, None, None, None], local, rng.normal(size=local.shape) + [0, 0, 3])
    A = _rigid(rng, B, 2.0)
    noise = _rigid(rng, B * N, 0.0).reshape(B, N, 4, 4)
    small = Rotation.from_rotvec(rng.normal(size=(B * N, 3)) * 0.1).as_matrix().reshape(B, N, 3, 3)
    cam = poses.copy()
    cam[..., :3, 3] *= scale[:, None, None] * (1 + 0.1 * rng.normal(size=(B, N, 1)))
    cam[..., :3, :3] = cam[..., :3, :3] @ small
    cam = A[:, None] @ cam
    cam = np.where(labeled[:, None, None, None], cam, noise)

    i = rng.integers(0, N, size=(B, S))
    j = (i + rng.integers(1, N, size=(B, S))) % N
    pair_valid = rng.random((B, S)) < 0.8
    pair_valid[:, 0] = True
    flow_target = rng.normal(size=(B, S, H, W, 2)) * 0.5
    covisible = (rng.random((B, S, H, W)) < 0.7) & pair_valid[..., None, None]
    flow = flow_target + rng.normal(size=flow_target.shape) * rng.choice([0.02, 0.3, 1.0], size=(B, S, H, W, 1))

    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    batch = dict(
        depth=f32(depth), valid=valid, intrinsics=f32(K), poses=f32(poses),
        pairs=np.stack([i, j], -1).astype(np.int32), flow_target=f32(flow_target), covisible=covisible,
        pair_valid=pair_valid, labeled=labeled, high_quality=hq,
    )
    out = dict(local_points=f32(local), camera_poses=f32(cam), conf=f32(rng.normal(size=(B, N, H, W, 1)) * 2), flow=f32(flow))
    return out, batch


# ----------------------------------------------------------------------------- official pieces


def inv_se3(T):
    out = np.tile(np.eye(4), T.shape[:-2] + (1, 1))
    Rt = np.swapaxes(T[..., :3, :3], -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, T[..., :3, 3])
    return out


def apply(T, x):
    return np.einsum("...ij,...hwj->...hwi", T[..., :3, :3], x) + T[..., None, None, :3, 3]


def prepare_gt(local, poses, masks):
    """Official prepare_gt: world points -> camera 0 -> divide by the mean valid norm -> local."""
    local, poses = np.asarray(local, np.float64), np.asarray(poses, np.float64)
    B, N = masks.shape[:2]
    world = apply(poses, local)
    w2c0 = inv_se3(poses[:, 0])
    pts = apply(w2c0[:, None], world)
    poses = w2c0[:, None] @ poses
    factors = np.ones(B)
    for b in range(B):
        if masks[b].sum() > 0:
            f = np.linalg.norm(pts[b][masks[b]], axis=-1).sum() / (masks[b].sum() + 1e-8)
            pts[b] /= f
            poses[b, :, :3, 3] /= f
            factors[b] = f
    return apply(inv_se3(poses), pts), poses, factors


def normalize_pred(local, poses, masks):
    local, poses = np.array(local, np.float64), np.array(poses, np.float64)
    factors = np.ones(len(local))
    for b in range(len(local)):
        if masks[b].sum() > 0:  # the official divides by ~0 here; the result is never used
            factors[b] = np.linalg.norm(local[b][masks[b]], axis=-1).sum() / (masks[b].sum() + 1e-8)
        local[b] /= factors[b]
        poses[b, :, :3, 3] /= factors[b]
    return local, poses, factors


def nearest_indices(n, size):
    """torch F.interpolate(mode='nearest') source indices: floor(k * float32(n / size)) in float32."""
    scale = np.float32(n) / np.float32(size)
    k = np.arange(size, dtype=np.float32)
    return np.minimum(np.floor(k * scale).astype(np.int64), n - 1)


def prepare_roe(pts, mask, size):
    out = []
    for b in range(len(pts)):
        v = pts[b][mask[b]]
        out.append(v[nearest_indices(len(v), size)] if len(v) else np.ones((size, pts.shape[-1])))
    return np.stack(out)


def moge_align(x, y, w):
    """MoGe align(x, y, w, trunc=None) on the last axis."""
    out = []
    for xb, yb, wb in zip(x, y, w):
        sign = np.sign(xb)
        xb, yb = xb * sign, yb * sign
        ratio = yb / np.maximum(xb, 1e-7)
        order = np.argsort(ratio, kind="stable")
        wx = (xb * wb)[order]
        d = 2 * np.cumsum(wx) - wx.sum()
        out.append(ratio[order][min(np.searchsorted(d, 0.0, side="left"), len(d) - 1)])
    return np.array(out)


def point_weights(z, masks):
    m = masks.astype(np.float64)
    mean = (z * m).mean(axis=(-2, -1), keepdims=True) / (m.mean(axis=(-2, -1), keepdims=True) + 1e-7)
    return 1 / (np.maximum(z, 0.1 * mean) + 1e-6)


def optimal_scale(pred, gt, w, masks, size=4096):
    B = len(pred)
    x = prepare_roe(pred, masks, size).reshape(B, -1)
    y = prepare_roe(gt, masks, size).reshape(B, -1)
    ww = np.repeat(prepare_roe(w[..., None], masks, size)[..., 0], 3, axis=-1)
    s = moge_align(x, y, ww)
    s[s <= 0] *= -1
    return s


def bce(x, t):
    return np.logaddexp(0.0, x) - x * t


def depth_edge(z, rtol):
    H, W = z.shape[-2:]
    pad = np.full(z.shape[:-2] + (H + 2, W + 2), -np.inf)
    pad[..., 1:-1, 1:-1] = z
    hi = np.max([pad[..., a:a + H, b:b + W] for a in range(3) for b in range(3)], axis=0)
    pad[..., 1:-1, 1:-1] = -z
    lo = -np.max([pad[..., a:a + H, b:b + W] for a in range(3) for b in range(3)], axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.nan_to_num((hi - lo) / z, nan=0.0, posinf=np.finfo(np.float64).max)
    return rel > rtol


def normal_loss(points, gt, mask, rtol=0.03):
    mask = mask & ~depth_edge(gt[..., 2], rtol)

    def tri(p):
        lu, ru, ld, rd = p[..., :-1, :-1, :], p[..., :-1, 1:, :], p[..., 1:, :-1, :], p[..., 1:, 1:, :]
        return [np.cross(ru - rd, ld - rd), np.cross(lu - ru, rd - ru), np.cross(ld - lu, ru - lu), np.cross(rd - ld, lu - ld)]

    lu, ru, ld, rd = mask[..., :-1, :-1], mask[..., :-1, 1:], mask[..., 1:, :-1], mask[..., 1:, 1:]
    masks = [ru & ld & rd, lu & rd & ru, ld & ru & lu, rd & lu & ld]
    lo, hi, beta = math.radians(1), math.radians(90), math.radians(3)
    loss = 0.0
    for n1, n2, m in zip(tri(points), tri(gt), masks):
        e = np.clip(np.arctan2(np.linalg.norm(np.cross(n1, n2), axis=-1) + 1e-12, (n1 * n2).sum(-1)), lo, hi)
        loss = loss + m * np.where(e < beta, 0.5 * e**2 / beta, e - 0.5 * beta)
    return loss.mean() / (4 * max(points.shape[-3:-1]))


def huber(d, delta):
    a = np.abs(d)
    return np.where(a < delta, 0.5 * d**2, delta * (a - 0.5 * delta))


def camera_loss(pred_poses, gt_poses, scale, keep, alpha=100.0, delta=0.1):
    """Official CameraLosswMask over the samples `keep`: (total, trans, rot)."""
    t_err, angles = [], []
    for b in np.flatnonzero(keep):
        P = pred_poses[b].copy()
        P[:, :3, 3] *= scale[b]
        N = len(P)
        for i in range(N):
            for j in range(N):
                if i == j:
                    continue
                rp = inv_se3(P[i]) @ P[j]
                rg = inv_se3(gt_poses[b, i]) @ gt_poses[b, j]
                t_err.append(huber(rp[:3, 3] - rg[:3, 3], delta))
                cos = (np.trace(rp[:3, :3].T @ rg[:3, :3]) - 1) / 2
                angles.append(np.arccos(np.clip(cos, -1 + 1e-6, 1 - 1e-6)))
    if not angles:
        return 0.0, 0.0, 0.0
    trans, rot = np.mean(t_err), np.mean(angles)
    return alpha * trans + rot, trans, rot


def charbonnier(r, alpha=0.5, c=0.24):
    b = abs(alpha - 2)
    return b / alpha * (((r / c) ** 2 / b + 1) ** (alpha / 2) - 1)


def flow_loss(pred, target, covis):
    m = covis.reshape(-1) > 0.5
    d = pred.reshape(-1, 2)[m].astype(np.float64) - target.reshape(-1, 2)[m]
    r = np.linalg.norm(d, axis=1)
    return charbonnier(r).mean() if len(r) else 0.0


# ----------------------------------------------------------------------------- the whole loss


def official_terms(out, batch, sky=None):
    """Every term of Pi3FlowLoss (train_conf on), in float64."""
    labeled = batch["labeled"]
    raw_valid = batch["valid"] & labeled[:, None, None, None]
    K = np.where(labeled[:, None, None, None], batch["intrinsics"], np.eye(3))
    local = unproject(batch["depth"].astype(np.float64), K.astype(np.float64))
    gt_local, gt_poses, _ = prepare_gt(local, batch["poses"], raw_valid)
    pred, pred_poses, _ = normalize_pred(out["local_points"], out["camera_poses"], raw_valid)
    masks = raw_valid.copy()
    masks[~labeled] = False
    w = point_weights(gt_local[..., 2], masks)
    S = optimal_scale(pred, gt_local, w, masks)
    aligned = S[:, None, None, None, None] * pred
    res = np.abs(aligned[masks] - gt_local[masks]) * w[masks][:, None]
    t = {"scale": S, "point": res.mean() if res.size else 0.0}
    conf = out["conf"][..., 0].astype(np.float64)
    target = (res.mean(-1) < 0.02).astype(np.float64)
    t["conf"] = bce(conf[masks], target).mean() if res.size else 0.0
    if sky is not None:
        sky = sky.copy()
        sky[masks] = False
        sky[~labeled] = False
        t["conf"] += bce(conf[sky], 0.0).mean() if sky.sum() else 0.0
    sel = np.flatnonzero(labeled & batch["high_quality"])
    t["normal"] = normal_loss(aligned[sel], gt_local[sel], masks[sel]) if len(sel) else 0.0
    t["camera"], t["camera_trans"], t["camera_rot"] = camera_loss(pred_poses, gt_poses, S, labeled)
    t["flow"] = flow_loss(out["flow"], batch["flow_target"], batch["covisible"] & batch["pair_valid"][..., None, None])
    t["total"] = t["point"] + t["normal"] + 0.05 * t["conf"] + 0.1 * t["camera"] + 0.01 * t["flow"]
    return t
