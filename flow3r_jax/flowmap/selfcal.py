"""Focal length from rotational flow: self-calibration of a camera that mostly rotates.

Why: FlowMap's soft-min (`intrinsics.py`) scores focal candidates by how well a rigid fit of
*depth-unprojected* points of pair (0, 1) explains the flow. When the camera mostly rotates,
depth is barely observable, the network's depth is still wrong when the free focal takes over,
and the chosen focal is off by tens of percent (23% on a real rotation-dominant clip). The flow
itself pins the focal down there: under a pure rotation R a pixel x moves to
x' ~ K R K^-1 x (a homography, no depth involved), and only the true K makes every frame pair's
flow such a homography (Hartley 1994, "Self-calibration from multiple views with a rotating
camera").

Estimate (NumPy, float64, once before the optimisation): one square-pixel pinhole with the
principal point at the image centre (the model of `intrinsics.py`); the unit is FlowMap's,
f_px / sqrt(H W). Frame pairs (i, i + k), k = 1, 2, 4, 8, 16, get correspondences by chaining
the consecutive flows through pixels where each flow is valid (inside the next frame and
forward-backward consistent): a wider rotation shows more of the perspective terms that pin the
focal down (on 8-frame rendered rotations with the CPU teacher's flow, 0.6-5% error either way:
the teacher's bias, not the pairs, limits it there). For a candidate focal f, a pair's correspondences give bearing pairs (u, u'); the
rotation that best aligns them is Kabsch's (SVD of sum u u'^T, no translation, no centring); the
pair's residual is the median pixel distance between K R K^-1 x and x'. The score of f is the
mean of the pairs' residuals. f is found on a log-spaced grid over [f_min, f_max] and refined by
golden-section search between the grid neighbours of the best candidate.

Whether to trust it (`RotationFocal.rotational`): the rotation-only model must explain the flow
(best residual at most `max_residual_ratio` of the median flow magnitude: translation leaves
parallax a homography cannot absorb) and the focal must be observable (the score at f x 1.25
and f / 1.25 at least `min_contrast` times the best score: with no rotation every focal fits).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = ["RotationFocal", "minimise_log", "rotation_fit", "rotation_focal", "rotation_residuals"]

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclasses.dataclass(frozen=True)
class RotationFocal:
    """The rotation-only focal estimate and the evidence for it."""

    focal: float  # FlowMap units, f_px / sqrt(H W)
    residual_px: float  # mean over pairs of the median reprojection residual at `focal`
    flow_px: float  # median flow magnitude over the pairs' valid pixels
    contrast: float  # min(score(f x 1.25), score(f / 1.25)) / score(f)
    pairs: int  # frame pairs used
    rotational: bool  # the clip is rotation-dominant and the focal observable (see module docstring)

    @property
    def residual_ratio(self) -> float:
        return self.residual_px / max(self.flow_px, 1e-9)

    def as_dict(self) -> dict:
        return dict(dataclasses.asdict(self), residual_ratio=self.residual_ratio)


def _valid_flow(flow_fw: np.ndarray, flow_bw: np.ndarray, alpha: float = 0.01, beta: float = 0.5) -> np.ndarray:
    """(F-1, H, W) bool: target inside the next frame and forward-backward consistent (the
    test of `geometry.forward_backward_mask`, nearest-pixel lookup of the backward flow)."""
    P, H, W, _ = flow_fw.shape
    y, x = np.mgrid[0:H, 0:W]
    tx = x + 0.5 + flow_fw[..., 0]
    ty = y + 0.5 + flow_fw[..., 1]
    inside = (tx >= 0) & (tx <= W) & (ty >= 0) & (ty <= H)
    ix = np.clip(np.floor(tx).astype(np.int64), 0, W - 1)
    iy = np.clip(np.floor(ty).astype(np.int64), 0, H - 1)
    back = flow_bw[np.arange(P)[:, None, None], iy, ix]
    err = np.sum((flow_fw + back) ** 2, axis=-1)
    ok = err <= alpha * (np.sum(flow_fw**2, axis=-1) + np.sum(back**2, axis=-1)) + beta
    return inside & ok


def _bilinear(field: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """field (H, W, C) at continuous pixel positions xy (n, 2) (pixel centres at +0.5), border
    clamped."""
    H, W = field.shape[:2]
    x = np.clip(xy[:, 0] - 0.5, 0.0, W - 1.0)
    y = np.clip(xy[:, 1] - 0.5, 0.0, H - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.int64), W - 2) if W > 1 else np.zeros(len(x), np.int64)
    y0 = np.minimum(np.floor(y).astype(np.int64), H - 2) if H > 1 else np.zeros(len(y), np.int64)
    ax, ay = (x - x0)[:, None], (y - y0)[:, None]
    x1, y1 = np.minimum(x0 + 1, W - 1), np.minimum(y0 + 1, H - 1)
    top = field[y0, x0] * (1 - ax) + field[y0, x1] * ax
    bottom = field[y1, x0] * (1 - ax) + field[y1, x1] * ax
    return top * (1 - ay) + bottom * ay


def chained_pairs(flow_fw, valid, spans=(1, 2, 4, 8, 16), max_points: int = 2048, max_pairs: int = 64, min_points: int = 64, seed: int = 0):
    """Correspondences of frame pairs (i, i + k), k in `spans`, by chaining consecutive flows:
    [(i, j, positions in i (n, 2), positions in j (n, 2))]. A point is followed while each flow
    it uses is valid at its (nearest) pixel; pairs with fewer than `min_points` points are left
    out, and at most `max_pairs` pairs are kept (anchors thinned evenly per span)."""
    rng = np.random.default_rng(seed)
    n_pairs, H, W, _ = flow_fw.shape
    F = n_pairs + 1
    wanted = {}
    spans = sorted(k for k in set(spans) if 0 < k < F)
    per_span = max(1, max_pairs // max(len(spans), 1))
    for k in spans:
        anchors = np.arange(F - k)
        if len(anchors) > per_span:
            anchors = np.unique(np.round(np.linspace(0, F - k - 1, per_span)).astype(int))
        for i in anchors:
            wanted.setdefault(int(i), []).append(k)
    out = []
    for i, ks in sorted(wanted.items()):
        idx = np.flatnonzero(valid[i].reshape(-1))
        if len(idx) > max_points:
            idx = rng.choice(idx, max_points, replace=False)
        start = np.stack([idx % W + 0.5, idx // W + 0.5], axis=-1).astype(np.float64)
        p, alive = start.copy(), np.ones(len(start), bool)
        for step in range(1, max(ks) + 1):
            a = i + step - 1
            ix = np.clip(np.floor(p[:, 0]).astype(np.int64), 0, W - 1)
            iy = np.clip(np.floor(p[:, 1]).astype(np.int64), 0, H - 1)
            alive &= valid[a][iy, ix]
            p = p + _bilinear(flow_fw[a], p)
            alive &= (p[:, 0] >= 0) & (p[:, 0] <= W) & (p[:, 1] >= 0) & (p[:, 1] <= H)
            if step in ks and alive.sum() >= min_points:
                out.append((i, i + step, start[alive], p[alive]))
    return out


def rotation_residuals(xy: np.ndarray, target: np.ndarray, focal_px: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """(N, n) pixel residuals of the best pure-rotation fit of one pair for N candidate focals.

    xy, target: (n, 2) pixel positions in frames i and j (pixel centres at +0.5); focal_px (N,);
    centre (2,) the principal point."""
    return rotation_fit(xy, target, focal_px, centre)[1]


def rotation_fit(xy: np.ndarray, target: np.ndarray, focal_px: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R (N, 3, 3), residuals (N, n)): for each of N candidate focals the rotation R that best
    maps the bearings of xy onto those of target (Kabsch, v ~ R u) and the pixel residuals of
    target against xy moved by it (inf where R turns a bearing behind the camera); the arguments
    as in `rotation_residuals`."""
    f = np.asarray(focal_px, np.float64)[:, None, None]
    ones = np.ones(xy.shape[:-1] + (1,))
    u = np.concatenate([(xy - centre) / f, np.broadcast_to(ones, (f.shape[0],) + ones.shape)], axis=-1)
    v = np.concatenate([(target - centre) / f, np.broadcast_to(ones, (f.shape[0],) + ones.shape)], axis=-1)
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    # Kabsch without translation: R maximising sum v . R u is V diag(1, 1, det) U^T of svd(u^T v).
    U, _, Vt = np.linalg.svd(np.einsum("npi,npj->nij", u, v))
    d = np.sign(np.linalg.det(np.einsum("nij,njk->nik", U, Vt)))
    D = np.zeros((len(d), 3, 3))
    D[:, 0, 0] = D[:, 1, 1] = 1.0
    D[:, 2, 2] = d
    R = np.einsum("nji,njk,nlk->nil", Vt, D, U)  # V D U^T
    ru = np.einsum("nij,npj->npi", R, u)
    z = np.maximum(ru[..., 2:], 1e-9)
    proj = ru[..., :2] / z * f + centre
    res = np.linalg.norm(proj - target, axis=-1)
    return R, np.where(ru[..., 2] > 1e-9, res, np.inf)


def minimise_log(score, candidates: np.ndarray, iterations: int = 14) -> tuple[float, float]:
    """(x, score(x)): the minimum of a scalar function of x > 0 over the increasing `candidates`
    (score maps an array of them to an array of scores), refined by golden-section search on
    log x between the best candidate's neighbours."""
    candidates = np.asarray(candidates, np.float64)
    scores = score(candidates)
    k = int(np.argmin(scores))
    lo, hi = math.log(candidates[max(k - 1, 0)]), math.log(candidates[min(k + 1, len(candidates) - 1)])
    a, b = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    sa, sb = score(np.array([math.exp(a)]))[0], score(np.array([math.exp(b)]))[0]
    for _ in range(iterations):
        if sa < sb:
            hi, b, sb = b, a, sa
            a = hi - _GOLDEN * (hi - lo)
            sa = score(np.array([math.exp(a)]))[0]
        else:
            lo, a, sa = a, b, sb
            b = lo + _GOLDEN * (hi - lo)
            sb = score(np.array([math.exp(b)]))[0]
    x, s = (math.exp(a), sa) if sa < sb else (math.exp(b), sb)
    if scores[k] < s:
        x, s = float(candidates[k]), float(scores[k])
    return float(x), float(s)


def rotation_focal(
    flow_fw,
    flow_bw,
    focal_min: float = 0.25,
    focal_max: float = 4.0,
    grid: int = 97,
    spans: tuple[int, ...] = (1, 2, 4, 8, 16),
    max_points: int = 1024,
    max_pairs: int = 48,
    max_residual_ratio: float = 0.15,
    min_contrast: float = 1.5,
    seed: int = 0,
) -> RotationFocal:
    """The focal that makes the flow between frames pure rotations (see the module docstring).

    flow_fw (F-1, H, W, 2): flow i -> i + 1 on frame i's grid; flow_bw (F-1, H, W, 2): i + 1 -> i
    (for the validity test). Pairs (i, i + k) for k in `spans` come from chaining the
    consecutive flows (`chained_pairs`; a wider rotation shows more of the perspective terms
    that pin the focal down). Focal bounds in FlowMap units."""
    flow_fw = np.asarray(flow_fw, np.float32)
    flow_bw = np.asarray(flow_bw, np.float32)
    if flow_fw.ndim != 4 or flow_fw.shape[-1] != 2 or flow_bw.shape != flow_fw.shape:
        raise ValueError(f"rotation_focal: flows must both be (F-1, H, W, 2), got {flow_fw.shape} and {flow_bw.shape}")
    if not 0 < focal_min < focal_max:
        raise ValueError(f"rotation_focal: need 0 < focal_min < focal_max, got {focal_min}, {focal_max}")
    H, W = flow_fw.shape[1:3]
    scale = math.sqrt(H * W)
    centre = np.array([W / 2.0, H / 2.0])
    valid = _valid_flow(flow_fw, flow_bw)
    pairs = [(a, b) for _, _, a, b in chained_pairs(flow_fw, valid, spans, max_points, max_pairs, seed=seed)]
    magnitude = np.concatenate([np.linalg.norm(b - a, axis=-1) for a, b in pairs]) if pairs else np.zeros(0)
    flow_px = float(np.median(magnitude)) if len(magnitude) else 0.0
    if not pairs:
        return RotationFocal(float("nan"), float("nan"), flow_px, 1.0, 0, False)

    def score(f_norm) -> np.ndarray:
        f_px = np.atleast_1d(np.asarray(f_norm, np.float64)) * scale
        per_pair = [np.median(rotation_residuals(a, b, f_px, centre), axis=-1) for a, b in pairs]
        return np.mean(per_pair, axis=0)

    f_best, s_best = minimise_log(score, np.geomspace(focal_min, focal_max, grid))
    side = score(np.array([f_best * 1.25, f_best / 1.25]))
    contrast = float(np.min(side) / max(s_best, 1e-6))
    rotational = bool(s_best <= max_residual_ratio * flow_px and contrast >= min_contrast and flow_px > 0)
    return RotationFocal(float(f_best), float(s_best), flow_px, contrast, len(pairs), rotational)
