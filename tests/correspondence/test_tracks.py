"""Point tracks: exact cases, chaining exact flow, and DIS tracks against exact projected motion."""

import numpy as np
import pytest

from data_pipelines.synthetic import build_scene
from flow3r_jax.correspondence.tracks import Tracks, compute_tracks, grid_points
from tests.data_pipelines.conftest import PIPE_CFG


def test_grid_points_use_pixel_centres():
    pts = grid_points(16, 24, 8)
    assert pts.shape == (2 * 3, 2) and pts.dtype == np.float32
    np.testing.assert_array_equal(pts[0], [4.5, 4.5])
    np.testing.assert_array_equal(pts[-1], [20.5, 12.5])


def _const_flows(K, H, W, dx, dy):
    fw = np.zeros((K - 1, H, W, 2), np.float32)
    fw[..., 0], fw[..., 1] = dx, dy
    return fw, -fw


def test_constant_translation_is_exact_and_leaves_the_frame():
    K, H, W = 6, 32, 40
    frames = np.zeros((K, H, W, 3), np.uint8)
    fw, bw = _const_flows(K, H, W, 3.0, 1.0)
    tr = compute_tracks(frames, fw, bw, grid_stride=8, reseed=False)
    assert isinstance(tr, Tracks) and tr.xy.shape == (K, 20, 2) and tr.visible.shape == (K, 20)
    seeds = grid_points(H, W, 8)
    for k in range(K):
        expect = seeds + np.array([3.0, 1.0]) * k
        inside = np.all((expect >= 0) & (expect <= [W, H]), axis=-1)
        if k:  # a track stays visible exactly while it is inside (it died at the first exit)
            inside &= tr.visible[k - 1]
        np.testing.assert_array_equal(tr.visible[k], inside)
        np.testing.assert_allclose(tr.xy[k][inside], expect[inside], atol=1e-4)
        assert np.all(tr.xy[k][~inside] == 0)


def test_reseeding_and_backward_extension():
    K, H, W = 5, 32, 48
    frames = np.zeros((K, H, W, 3), np.uint8)
    fw, bw = _const_flows(K, H, W, 8.0, 0.0)  # one grid cell per frame to the right
    tr = compute_tracks(frames, fw, bw, grid_stride=8, reseed=True)
    n0 = len(grid_points(H, W, 8))
    assert tr.num_tracks > n0  # the left column empties every frame and is re-seeded
    # A track seeded at frame k in the left column came from outside the image: not extendable.
    new = tr.visible[:, n0:]
    first = np.argmax(new, axis=0)
    assert np.all(first >= 1)
    # Cells at the left edge reseeded, each new track visible from its seed frame on while inside.
    assert np.all(tr.lengths() >= 1)


def test_inconsistent_flow_kills_tracks():
    K, H, W = 3, 24, 24
    frames = np.zeros((K, H, W, 3), np.uint8)
    fw, bw = _const_flows(K, H, W, 2.0, 0.0)
    bw[0] += 5.0  # backward flow of step 0 disagrees everywhere
    tr = compute_tracks(frames, fw, bw, grid_stride=8, reseed=False)
    assert tr.visible[0].all() and not tr.visible[1:].any()


def test_input_validation():
    frames = np.zeros((3, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="both"):
        compute_tracks(frames, flows_fw=np.zeros((2, 16, 16, 2), np.float32))
    with pytest.raises(ValueError, match="flows must be"):
        compute_tracks(frames, np.zeros((3, 16, 16, 2)), np.zeros((3, 16, 16, 2)))
    with pytest.raises(ValueError, match="K >= 2"):
        compute_tracks(frames[:1])
    with pytest.raises(ValueError, match="flows must be"):
        compute_tracks(frames, [np.zeros((16, 16, 2))] * 2, [np.zeros((16, 15, 2))] * 2)


def test_sequences_of_views_give_the_same_tracks():
    """The pipeline passes lists of views into its pair-flow array instead of stacked copies."""
    rng = np.random.default_rng(0)
    frames = np.zeros((4, 24, 32, 3), np.uint8)
    fw = (rng.normal(size=(3, 24, 32, 2)) * 0.3 + (1.5, -0.5)).astype(np.float32)
    bw = (-fw + rng.normal(size=fw.shape) * 0.3).astype(np.float32)
    a = compute_tracks(frames, fw, bw, grid_stride=4)
    b = compute_tracks(frames, list(fw), tuple(bw), grid_stride=4)
    np.testing.assert_array_equal(a.xy, b.xy)
    np.testing.assert_array_equal(a.visible, b.visible)
    assert 0 < a.visible[1:].mean() < 1  # the checks both keep and drop tracks here


def _exact_errors(scene, tr, K):
    """Position errors of the frame-0 tracks against the exact flow 0 -> k, over frames where
    the track is visible and the point is exactly covisible; and the count of visible-but-not-
    covisible entries."""
    H, W = scene.config.height, scene.config.width
    n0 = len(grid_points(H, W, 8))
    xy0 = tr.xy[0, :n0]
    r, c = (xy0[:, 1] - 0.5).astype(int), (xy0[:, 0] - 0.5).astype(int)  # seeds sit on pixel centres
    errs, wrong, vis = [], 0, 0
    for k in range(1, K):
        flow, cov, _ = scene.flow(0, k)
        exact = xy0 + flow[r, c]
        v = tr.visible[k, :n0]
        ok = v & cov[r, c]
        errs.append(np.linalg.norm(tr.xy[k, :n0] - exact, axis=-1)[ok])
        wrong += int(np.sum(v & ~cov[r, c]))
        vis += int(v.sum())
    return np.concatenate(errs), wrong, vis


def test_chaining_exact_flow_follows_the_scene():
    scene = build_scene(PIPE_CFG, 0)
    K = PIPE_CFG.frames
    fw = np.stack([scene.flow(k, k + 1)[0] for k in range(K - 1)])
    bw = np.stack([scene.flow(k + 1, k)[0] for k in range(K - 1)])
    frames = np.stack([scene.render(k)["image"] for k in range(K)])
    tr = compute_tracks(frames, fw, bw, grid_stride=8)
    err, wrong, vis = _exact_errors(scene, tr, K)
    assert np.median(err) < 0.05 and np.percentile(err, 90) < 0.5, np.percentile(err, [50, 90])
    assert wrong <= 0.05 * vis


def test_dis_tracks_against_exact_motion():
    """DIS flows chained over 8 frames (96x128): median error on visible, exactly covisible
    frame-0 tracks below 1 px (measured ~0.2-0.5 px); few visible tracks are truly occluded."""
    errs, wrong, vis = [], 0, 0
    for seed in (0, 1):
        scene = build_scene(PIPE_CFG, seed)
        frames = np.stack([scene.render(k)["image"] for k in range(PIPE_CFG.frames)])
        tr = compute_tracks(frames, grid_stride=8)  # the default DIS teacher computes the flows
        e, w, v = _exact_errors(scene, tr, PIPE_CFG.frames)
        errs.append(e)
        wrong, vis = wrong + w, vis + v
    err = np.concatenate(errs)
    assert len(err) > 200
    assert np.median(err) < 1.0, np.percentile(err, [50, 90])
    assert wrong <= 0.1 * vis, (wrong, vis)
