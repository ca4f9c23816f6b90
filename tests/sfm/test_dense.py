"""Dense depth by triangulating flow with known cameras (`flow3r_jax.sfm.dense`), against a
rendered clip's exact depth, poses and flow."""

from __future__ import annotations

import numpy as np
import pytest

from flow3r_jax.sfm.dense import flow_pairs, triangulate_flow


@pytest.fixture(scope="module")
def clip():
    from data_pipelines.synthetic import SceneConfig, generate_clip

    cfg = SceneConfig(height=72, width=96, frames=5, dynamic=False, preset="handheld", kind="room", offsets=(1, 2), flow_px=(3.0, 5.0))
    return generate_clip(cfg, seed=4)


def _relative_errors(depth, clip, mask):
    gt = np.asarray(clip["depth"], np.float64)
    ok = mask & (depth > 0)
    return np.abs(depth[ok] / gt[ok] - 1.0), ok


def test_exact_flow_and_cameras_give_the_exact_depth(clip):
    """With the clip's exact flow and cameras, every covisible pixel's depth comes back to
    within 1e-4 (relative; the flow is float32) and nothing covisible is left unknown."""
    pairs = np.asarray(clip["pairs"])
    depth, info = triangulate_flow(clip["poses"], clip["intrinsics"][0], np.asarray(clip["flow"]), pairs)
    covisible = np.zeros(depth.shape, bool)
    for (i, _), cov in zip(pairs, np.asarray(clip["covisible"])):
        covisible[i] |= cov
    # pixels whose parallax is far from zero in some pair (the rotation alone moves them too)
    err, ok = _relative_errors(depth, clip, covisible & np.asarray(clip["valid"]))
    assert ok.sum() >= 0.98 * (covisible & np.asarray(clip["valid"])).sum()
    assert np.median(err) < 1e-5 and np.percentile(err, 99) < 1e-3, (np.median(err), np.percentile(err, 99))
    assert info["pairs"] == len(pairs) and 0.9 < info["known_fraction"] <= 1.0
    assert depth.dtype == np.float32 and depth.shape == np.asarray(clip["depth"]).shape


def test_a_corrupted_pair_is_outvoted_and_a_lone_wrong_pair_is_unknown(clip):
    """A block of one pair's flow moved by 6 px: the other pairs of that frame still give the exact
    depth there (the start is the hypothesis most pairs agree with; the wrong pair then does not
    reproject within 1 px and its weight drops to 0). With the corrupted pair as the frame's only
    pair, the block is unknown (0): the shift leaves the epipolar line, no depth explains it; the
    rest of the frame is known. A flow far outside the frame gives 0 too."""
    pairs = np.asarray(clip["pairs"])
    flows = np.array(clip["flow"], np.float32)
    p = int(np.flatnonzero((pairs[:, 0] == 2) & (pairs[:, 1] == 3))[0])
    flows[p, 20:40, 30:60] += np.float32(6.0)
    depth, _ = triangulate_flow(clip["poses"], clip["intrinsics"][0], flows, pairs)
    block = np.zeros(depth.shape, bool)
    block[2, 20:40, 30:60] = True
    err, ok = _relative_errors(depth, clip, block & np.asarray(clip["valid"]))
    assert ok.sum() > 0.9 * block.sum() and np.median(err) < 1e-4, np.median(err)

    lone = pairs[[p]]
    d1, info = triangulate_flow(clip["poses"], clip["intrinsics"][0], flows[[p]], lone)
    assert (d1[block] == 0).mean() > 0.95
    rest = ~block & np.asarray(clip["covisible"])[p][None] & (np.arange(5) == 2)[:, None, None]
    err1, ok1 = _relative_errors(d1, clip, rest)
    assert ok1.sum() > 0.9 * rest.sum() and np.median(err1) < 1e-4
    assert (d1[[0, 1, 3, 4]] == 0).all()  # frames with no pair: unknown
    behind = flows[[p]].copy()
    behind[..., 0] = -1e4  # an impossible correspondence far outside the frame
    d2, _ = triangulate_flow(clip["poses"], clip["intrinsics"][0], behind, lone)
    assert (d2[2] == 0).mean() > 0.5


def test_flow_pairs_and_bad_input():
    assert flow_pairs(4, 1).tolist() == [[0, 1], [1, 0], [1, 2], [2, 1], [2, 3], [3, 2]]
    assert len(flow_pairs(10, 3)) == 2 * (9 + 8 + 7)
    with pytest.raises(ValueError, match="2 flows but 1 pairs"):
        triangulate_flow(np.tile(np.eye(4), (2, 1, 1)), np.eye(3), np.zeros((2, 4, 4, 2), np.float32), np.array([[0, 1]]))
    with pytest.raises(ValueError, match="outside"):
        triangulate_flow(np.tile(np.eye(4), (2, 1, 1)), np.eye(3), np.zeros((1, 4, 4, 2), np.float32), np.array([[0, 2]]))
