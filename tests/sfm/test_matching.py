"""Features, matches and tracks (`flow3r_jax.sfm.matching`): union-find tracks on hand-made matches,
matching on a texture warped by a known map.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from flow3r_jax.sfm.matching import Features, PairMatches, detect, match_pairs, tracks_from_matches


def _features(counts, seed=50):
    rng = np.random.default_rng(seed)
    xy = [rng.uniform(0, 100, (n, 2)) for n in counts]
    return Features(xy, [np.zeros((n, 128), np.float32) for n in counts])


def _tracks_as_sets(frame, track, xy):
    out = {}
    for f, t, p in zip(frame, track, xy):
        out.setdefault(int(t), set()).add((int(f), float(p[0]), float(p[1])))
    return sorted(out.values(), key=lambda s: sorted(s))


def test_tracks_from_matches():
    feats = _features([6, 5, 5])
    eye = np.eye(3)
    matches = [
        # chain 0:0 - 1:2 - 2:1 (one track, 3 observations)
        # conflict 0:1 - 1:0 - 2:3 - 0:3 (frame 0 twice: dropped)
        PairMatches(0, 1, np.array([[0, 2], [1, 0]]), eye),
        PairMatches(1, 2, np.array([[2, 1], [0, 3]]), eye),
        PairMatches(0, 2, np.array([[3, 3], [4, 4]]), eye),  # and 0:4 - 2:4, a 2-frame track
    ]
    frame, track, xy = tracks_from_matches(feats, matches)

    assert frame.shape == track.shape == (len(xy),) and xy.shape[1] == 2
    assert track.dtype == np.int64
    T = int(track.max()) + 1
    np.testing.assert_array_equal(np.unique(track), np.arange(T))
    P = feats.xy
    expected = [
        {(0, *P[0][0]), (1, *P[1][2]), (2, *P[2][1])},
        {(0, *P[0][4]), (2, *P[2][4])},
    ]
    assert _tracks_as_sets(frame, track, xy) == sorted(expected, key=lambda s: sorted(s))
    # neither the conflicting keypoints nor the unmatched ones (0:2, 0:5, 1:1, 1:3, 1:4, 2:0, 2:2)
    assert len(frame) == 5


def test_tracks_from_matches_no_matches():
    frame, track, xy = tracks_from_matches(_features([4, 4]), [])
    assert len(frame) == len(track) == len(xy) == 0


def _texture(seed, h=240, w=320):
    rng = np.random.default_rng(seed)
    noise = rng.random((h, w)).astype(np.float32)
    img = cv2.GaussianBlur(noise, (0, 0), 2.0)
    img = (img - img.min()) / (img.max() - img.min())
    gray = np.clip(img * 255, 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, -1)


def test_detect_and_match_pairs_on_warped_texture():
    a = _texture(60)
    h, w = a.shape[:2]
    M = cv2.getRotationMatrix2D((w / 2, h / 2), 4.0, 1.0)  # OpenCV pixel coordinates (centres at integers)
    M[:, 2] += (12.0, 7.0)
    b = cv2.warpAffine(a, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    feats = detect(np.stack([a, b]), max_features=1500)
    assert len(feats.xy) == 2 and all(len(x) > 100 for x in feats.xy)
    assert feats.desc[0].shape[1] == 128 and feats.desc[0].dtype == np.float32
    matches = match_pairs(feats, [(0, 1)])

    assert len(matches) == 1
    m = matches[0]
    assert (m.i, m.j) == (0, 1) and len(m.idx) >= 30
    p0, p1 = feats.xy[0][m.idx[:, 0]], feats.xy[1][m.idx[:, 1]]
    # +0.5 convention: map p - 0.5 with M, add 0.5 back
    mapped = (p0 - 0.5) @ M[:, :2].T + M[:, 2] + 0.5
    err = np.linalg.norm(mapped - p1, axis=1)
    assert np.median(err) < 0.25
    assert np.mean(err < 1.0) > 0.95
    # the pair's fundamental matrix holds on its matches: x_1 within ~1 px of the line F x_0
    h0, h1 = np.c_[p0, np.ones(len(p0))], np.c_[p1, np.ones(len(p1))]
    lines = h0 @ m.F.T
    dist = np.abs(np.sum(h1 * lines, 1)) / np.linalg.norm(lines[:, :2], axis=1)
    assert np.median(dist) < 0.5


def test_detect_scales_keypoints_of_a_downsized_frame_back():
    """A frame larger than max_size is detected on a resized copy: its keypoints, in its own
    pixels, are those of the small frame scaled by the size ratio (here the frame is the small
    texture enlarged 2x, so the same structures are found)."""
    small = _texture(3)
    big = cv2.resize(small, (640, 480), interpolation=cv2.INTER_CUBIC)
    ref = detect(small[None]).xy[0] * 2.0
    got = detect(big[None], max_size=320).xy[0]
    assert len(got) > 50 and abs(len(got) - len(ref)) < 0.2 * len(ref)
    nearest = np.min(np.linalg.norm(got[:, None] - ref[None], axis=-1), axis=1)
    assert np.median(nearest) < 0.5, np.median(nearest)
    full = detect(big[None], max_size=4000).xy[0]  # no resize: a different (finer) detection
    assert full.max(0)[0] > 320


def test_ratio_matches_against_scipy_distances_and_opencv():
    """The ratio-test matches equal a brute-force reference built from scipy's Euclidean
    distances (nearest, second nearest, nearest < 0.8 x second) and OpenCV's knnMatch on SIFT-like
    descriptors (non-negative, values up to 255), including near-duplicates that fail the test."""
    from scipy.spatial.distance import cdist

    from flow3r_jax.sfm.matching import ratio_matches

    rng = np.random.default_rng(3)
    b = rng.integers(0, 120, (700, 128)).astype(np.float32)
    a = b[rng.permutation(700)[:400]] + rng.normal(0, 6, (400, 128)).astype(np.float32)
    a[:50] = rng.integers(0, 120, (50, 128))  # no counterpart in b
    b[1] = b[0] + 1.0  # an ambiguous pair in b: a match to 0 or 1 fails the ratio test
    a = np.clip(a, 0, 255).astype(np.float32)
    got = ratio_matches(a, b, 0.8)

    d = cdist(a.astype(np.float64), b.astype(np.float64))
    order = np.argsort(d, 1)
    rows = np.arange(len(a))
    ok = d[rows, order[:, 0]] < 0.8 * d[rows, order[:, 1]]
    want = np.stack([rows[ok], order[ok, 0]], 1)
    np.testing.assert_array_equal(got, want)
    assert 300 <= len(got) < 400  # the genuine matches pass, the 50 strangers do not

    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(a, b, k=2)
    cv = np.array([(m[0].queryIdx, m[0].trainIdx) for m in knn if m[0].distance < 0.8 * m[1].distance])
    np.testing.assert_array_equal(got, cv)
    assert ratio_matches(a, b[:1]).shape == (0, 2)


def test_frame_pairs_adds_wide_gaps_for_long_clips():
    """wide=True adds the pairs max_gap x 1.5^k apart (30, 45 for 20 on 50 frames) to those at
    most max_gap apart; without it, only the latter."""
    from flow3r_jax.sfm.matching import frame_pairs

    near = {(i, j) for i in range(50) for j in range(i + 1, 50) if j - i <= 20}
    assert set(frame_pairs(50, 20)) == near and len(frame_pairs(50, 20)) == len(near)
    wide = frame_pairs(50, 20, wide=True)
    assert len(wide) == len(set(wide))
    assert set(wide) == near | {(i, i + 30) for i in range(20)} | {(i, i + 45) for i in range(5)}
    assert set(frame_pairs(10, 9, wide=True)) == {(i, j) for i in range(10) for j in range(i + 1, 10)}


def test_sampson_px_against_the_exact_two_view_correction():
    """The Sampson distance of noisy correspondences under a fundamental matrix from two known
    cameras equals, to first order, the smallest 4-D correction of (xa, xb) that satisfies the
    epipolar constraint exactly (found by scipy's constrained minimiser); exact ones give 0."""
    from scipy.optimize import minimize
    from scipy.spatial.transform import Rotation

    from flow3r_jax.sfm.matching import sampson_px

    rng = np.random.default_rng(4)
    Kc = np.array([[400.0, 0, 320], [0, 400, 240], [0, 0, 1]])
    R = Rotation.from_rotvec([0.02, -0.15, 0.03]).as_matrix()
    t = np.array([1.0, 0.1, 0.2])
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    F = np.linalg.inv(Kc).T @ tx @ R @ np.linalg.inv(Kc)  # xb^T F xa = 0 for Xb = R Xa + t
    X = rng.uniform([-2, -1.5, 4], [2, 1.5, 9], (12, 3))
    xa = (X @ Kc.T)[:, :2] / X[:, 2:]
    Xb = X @ R.T + t
    xb = (Xb @ Kc.T)[:, :2] / Xb[:, 2:]
    np.testing.assert_allclose(sampson_px(F, xa, xb), 0.0, atol=1e-9)
    na, nb = xa + rng.normal(0, 0.5, xa.shape), xb + rng.normal(0, 0.5, xb.shape)
    got = sampson_px(F, na, nb)
    for k in range(len(X)):
        constraint = lambda d: np.append(nb[k] + d[2:], 1.0) @ F @ np.append(na[k] + d[:2], 1.0)
        sol = minimize(lambda d: d @ d, np.zeros(4), constraints=[{"type": "eq", "fun": constraint}], method="SLSQP", options=dict(ftol=1e-14, maxiter=200))
        assert abs(constraint(sol.x)) < 1e-9
        assert got[k] == pytest.approx(np.sqrt(sol.x @ sol.x), rel=1e-3, abs=1e-6), k
    assert np.median(got) > 0.1
