"""Forward-backward covisibility: equal to the geometry kernel, and against exact synthetic masks."""

import cv2
import numpy as np
import pytest

from data_pipelines.covisibility import ALPHA, BETA, agreement, covisibility_masks, fb_mask, reverse_index
from flow3r_jax.correspondence.teacher import DISTeacher, compute_pair_flows
from flow3r_jax.geometry import forward_backward_mask


def _smooth_flows(n, H, W, seed, sigma):
    """n random smooth flow fields (H, W, 2) with unit standard deviation."""
    rng = np.random.default_rng(seed)
    f = np.stack([cv2.GaussianBlur(rng.normal(size=(H, W, 2)).astype(np.float32), (0, 0), sigma) for _ in range(n)])
    return f / f.std()


def test_thresholds_are_the_documented_ones():
    assert (ALPHA, BETA) == (0.01, 0.5)


def test_matches_the_geometry_kernel():
    fw = _smooth_flows(3, 40, 56, seed=1, sigma=8) * 2.0
    bw = -fw + _smooth_flows(3, 40, 56, seed=2, sigma=3) * 0.5  # about an inverse, errors ~ the threshold
    ours = np.stack([fb_mask(f, b) for f, b in zip(fw, bw)])
    ref = np.asarray(forward_backward_mask(fw, bw))
    assert 0.2 < ref.mean() < 0.8  # a mix of both outcomes
    # Both in float32, the same formula up to the order of a few operations: only pixels whose
    # two sides agree to the last bits may differ.
    assert np.sum(ours != ref) <= 2, np.argwhere(ours != ref)


def test_exact_translation():
    H, W = 20, 30
    fw = np.zeros((H, W, 2), np.float32)
    fw[..., 0] = 3.0  # everything moves 3 px right: the last 3 columns leave the frame
    bw = -fw
    m = fb_mask(fw, bw)
    assert m[:, : W - 3].all() and not m[:, W - 2 :].any()
    bad = bw.copy()
    bad[:, 10:13] += 2.0  # inconsistent where the forward flow lands in columns 10-12
    m2 = fb_mask(fw, bad)
    assert not m2[:, 7:10].any() and m2[:, :6].all()


def test_reverse_index():
    pairs = np.array([[0, 1], [1, 0], [0, 2], [2, 0]])
    np.testing.assert_array_equal(reverse_index(pairs), [1, 0, 3, 2])
    with pytest.raises(ValueError, match="reverse"):
        reverse_index(np.array([[0, 1]]))


def test_agreement_helper():
    pred = np.array([True, True, False, False])
    exact = np.array([True, False, True, False])
    a = agreement(pred, exact)
    assert a["accuracy"] == 0.5 and a["precision"] == 0.5 and a["recall"] == 0.5 and a["specificity"] == 0.5
    assert agreement(pred, exact, where=np.array([True, False, False, True]))["accuracy"] == 1.0


def test_exact_flow_gives_exact_masks(pipe_clips):
    clip = pipe_clips[0]
    m = covisibility_masks(clip["flow"], clip["pairs"])
    assert agreement(m, clip["covisible"])["accuracy"] > 0.98  # same convention as the renderer


def test_dis_covisibility_against_exact_masks(pipe_clips):
    """DIS flow (96x128, 8 frames, offsets 1, 2, 4) + the fb check vs the renderer's exact
    occlusion-aware covisibility over 4 scenes, all pixels of all 34 pairs pooled. Measured:
    accuracy 0.888 (0.81-0.95 per scene), precision 0.985, specificity 0.90; 12.5% of pixels are
    not covisible, so accuracy alone would flatter an all-true mask (0.875)."""
    preds, exact = [], []
    for clip in pipe_clips:
        flows = compute_pair_flows(DISTeacher(), clip["images"], clip["pairs"]).flow
        preds.append(covisibility_masks(flows, clip["pairs"]))
        exact.append(clip["covisible"])
    a = agreement(np.concatenate(preds), np.concatenate(exact))
    assert a["exact_rate"] < 0.95  # the scenes do have occlusions / out-of-view pixels
    assert a["accuracy"] > 0.85, a
    assert a["precision"] > 0.95, a
    assert a["specificity"] > 0.75, a


def test_borders_against_a_float64_reference():
    """Landing points all over [-1, W + 1] x [-1, H + 1], many in the half-pixel border bands where
    the sampling clamps (border padding) and beyond them: the compiled kernel against scipy's
    bilinear interpolation (mode 'nearest' = border padding) in float64."""
    from scipy.ndimage import map_coordinates

    rng = np.random.default_rng(5)
    H, W = 37, 53
    y, x = np.mgrid[0:H, 0:W].astype(np.float64) + 0.5  # pixel centres (flow3r_jax's coordinates)
    target = np.stack([rng.uniform(-1, W + 1, (H, W)), rng.uniform(-1, H + 1, (H, W))], -1)
    target[::3, ::2, 0] = rng.choice([0.0, 0.25, 0.5, W - 0.5, W - 0.25, W, W + 1e-3, -1e-3], size=target[::3, ::2, 0].shape)
    fw = (target - np.stack([x, y], -1)).astype(np.float32)
    bw = (-_smooth_flows(1, H, W, seed=6, sigma=4)[0] * 3.0).astype(np.float32)

    f = fw.astype(np.float64)
    land = np.stack([x, y], -1) + f - 0.5  # array indices (centres at integers)
    back = np.stack([map_coordinates(bw[..., c].astype(np.float64), [land[..., 1].ravel(), land[..., 0].ravel()], order=1, mode="nearest").reshape(H, W) for c in range(2)], -1)
    err = np.sum((f + back) ** 2, -1)
    inside = (land[..., 0] >= -0.5) & (land[..., 0] <= W - 0.5) & (land[..., 1] >= -0.5) & (land[..., 1] <= H - 0.5)
    beta = float(np.median(err[inside]))  # random targets are far from consistent: a bound that splits them
    bound = ALPHA * (np.sum(f**2, -1) + np.sum(back**2, -1)) + beta
    ref = (err < bound) & inside
    ours = fb_mask(fw, bw, ALPHA, beta)
    close = np.abs(err - bound) < 1e-4 * (1 + bound)  # float32 vs float64 may decide these either way
    assert 0.05 < ref.mean() < 0.95 and (~inside).mean() > 0.02
    np.testing.assert_array_equal(ours[~close], ref[~close])


def test_input_checks_nan_and_strided_views():
    fw = _smooth_flows(2, 24, 32, seed=7, sigma=5) * 2.0
    bw = -fw[::-1]
    full = fb_mask(fw[0], bw[0])
    big = np.zeros((24, 64, 2), np.float32)
    big[:, ::2] = fw[0]
    np.testing.assert_array_equal(fb_mask(big[:, ::2], bw[0]), full)  # a strided view is copied, same result
    nan = fw[0].copy()
    nan[3, 4] = np.nan
    m = fb_mask(nan, bw[0])
    assert not m[3, 4] and np.array_equal(np.delete(m.ravel(), 3 * 32 + 4), np.delete(full.ravel(), 3 * 32 + 4))
    with pytest.raises(ValueError, match="one shape"):
        fb_mask(fw[0], bw[0][:-1])
    with pytest.raises(ValueError, match="out must be bool"):
        fb_mask(fw[0], bw[0], out=np.empty((24, 32), np.uint8))
