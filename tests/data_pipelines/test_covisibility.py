"""Forward-backward covisibility: equal to the geometry kernel, and against exact synthetic masks."""

import cv2
import numpy as np
import pytest

from data_pipelines.covisibility import ALPHA, BETA, agreement, covisibility_masks, fb_mask, reverse_index
from data_pipelines.flow_teacher import DISTeacher, compute_pair_flows
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
    # cv2.remap quantises bilinear weights to 1/32 px: only pixels at the threshold may differ
    # (measured: 0.1-0.2% of pixels).
    assert np.mean(ours == ref) > 0.995


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


def test_row_tiles_give_the_untiled_mask(monkeypatch):
    """fb_mask works in row tiles with reused buffers; every pixel's arithmetic is independent of
    the tiling, so one tile and many (the last one partial) must agree bit for bit."""
    import data_pipelines.covisibility as cov

    rng = np.random.default_rng(5)
    H, W = 250, 160
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    fw = np.stack([3.0 + 0.02 * x, -2.0 + 0.01 * y], -1).astype(np.float32) + rng.normal(scale=0.4, size=(H, W, 2)).astype(np.float32)
    bw = (-fw + rng.normal(scale=0.6, size=(H, W, 2))).astype(np.float32)
    one_tile = fb_mask(fw, bw, out=np.empty((H, W), bool)).copy()
    monkeypatch.setattr(cov, "_TILE_PIXELS", 7 * W)  # 7 rows per tile: 35 full tiles + one of 5
    tiled = fb_mask(fw, bw)
    np.testing.assert_array_equal(tiled, one_tile)
    assert 0.05 < tiled.mean() < 0.95  # both outcomes occur
