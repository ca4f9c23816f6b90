"""Resize / crop keeps flow, intrinsics and depth consistent (checked with exact synthetic
geometry), and colour jitter is one transform for all frames."""

import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines.synthetic import SceneConfig, generate_clip
from flow3r_jax import geometry as g
from flow3r_jax.data.transforms import colour_jitter, keep_landing_inside, plan_resize_crop, warp_depth, warp_flow, warp_frames, warp_intrinsics


@pytest.fixture(scope="module")
def clip():
    return generate_clip(SceneConfig(height=120, width=160, frames=3, offsets=(1,), flow_px=(3.0, 6.0), num_objects=(3, 4)), seed=11)


@pytest.mark.parametrize("out_hw,seed", [((56, 70), 0), ((84, 126), 1), ((140, 168), 2)])  # shrink, crop, enlarge
def test_flow_after_resize_crop_matches_reprojected_geometry(clip, out_hw, seed):
    rng = np.random.default_rng(seed)
    t = plan_resize_crop(120, 160, *out_hw, rng, max_zoom=1.3)
    p = 0  # pair (0, 1)
    flow, covis = warp_flow(clip["flow"][p], clip["covisible"][p], t)
    depth, valid = warp_depth(clip["depth"][:2], clip["valid"][:2], t)
    K = warp_intrinsics(clip["intrinsics"][:2], t)
    # Independent reference: the flow that the transformed depth + intrinsics + poses induce.
    ref, ok = g.induced_flow(jnp.asarray(depth[0]), jnp.asarray(K[0]), jnp.asarray(clip["poses"][0]), jnp.asarray(K[1]), jnp.asarray(clip["poses"][1]))
    m = covis & np.asarray(ok) & valid[0]
    assert m.mean() > 0.6
    err = np.linalg.norm(flow - np.asarray(ref), axis=-1)[m]
    # Nearest-neighbour depth puts points up to half a source pixel off their new pixel centre.
    assert np.median(err) < 0.15 and np.quantile(err, 0.95) < 0.6, (np.median(err), np.quantile(err, 0.95))
    # Warping frame 1 into frame 0 with the new flow reproduces frame 0 on covisible pixels.
    imgs = warp_frames(clip["images"][:2], t).astype(np.float32)
    warped = np.asarray(g.bilinear_sample(jnp.asarray(imgs[1]), g.flow_to_coords(jnp.asarray(flow))))
    photo = np.abs(warped - imgs[0]).mean(-1)
    assert photo[covis].mean() < 0.5 * photo[~covis].mean() + 1e-6 or photo[covis].mean() < 8.0


def test_intrinsics_project_known_points(clip):
    t = plan_resize_crop(120, 160, 70, 84, np.random.default_rng(3), max_zoom=1.5)
    K = clip["intrinsics"][0]
    pts = np.asarray(g.unproject_depth(jnp.asarray(clip["depth"][0]), jnp.asarray(K)))
    ys, xs = np.nonzero(clip["valid"][0])
    sel = np.random.default_rng(0).choice(len(ys), 50, replace=False)
    X = pts[ys[sel], xs[sel]]
    xy, _ = g.project_points(jnp.asarray(X), jnp.asarray(warp_intrinsics(K, t)))
    expected = np.stack([(xs[sel] + 0.5) * t.sx - t.x0, (ys[sel] + 0.5) * t.sy - t.y0], -1)
    np.testing.assert_allclose(xy, expected, atol=1e-3)


def test_flow_mask_drops_boundaries_and_out_of_image_targets():
    flow = np.zeros((20, 20, 2), np.float32)
    flow[:, 10:, 0] = 5.0  # a motion boundary at x = 10
    flow[:, :2, 0] = -3.0  # pixels moving out of the image on the left
    mask = np.ones((20, 20), bool)
    t = plan_resize_crop(20, 20, 14, 14)  # centred shrink, scale 0.7
    new, keep = warp_flow(flow, mask, t)
    np.testing.assert_allclose(new[:, 8:, 0], 3.5, atol=1e-5)  # 5 px * 0.7
    x_src = (np.arange(14) + 0.5) / 0.7
    boundary = (np.floor(x_src - 0.5) == 9) | (np.floor(x_src - 0.5) == 1)
    assert not keep[:, boundary].any()
    assert keep[:, 8:11].all()  # moving region, target x' + 3.5 <= 14: inside
    assert not keep[:, 11:].any()  # target beyond the right edge
    assert not keep[:, 0].any()  # moves out on the left


def test_colour_jitter_is_shared_and_identity_at_zero(rng):
    frames = rng.integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
    frames[1] = frames[0]
    out = colour_jitter(frames, np.random.default_rng(1))
    np.testing.assert_array_equal(out[1], out[0])
    assert np.abs(out.astype(int) - frames).mean() > 1
    np.testing.assert_array_equal(colour_jitter(frames, rng, strength=0.0), frames)


def test_depth_resampling_is_nearest_and_crop_exact(rng):
    depth = rng.uniform(1, 5, size=(2, 30, 40)).astype(np.float32)
    valid = rng.uniform(size=(2, 30, 40)) > 0.3
    crop = plan_resize_crop(30, 40, 30, 28, rng)  # height matches: scale 1, crop only
    d, v = warp_depth(depth, valid, crop)
    assert (crop.sx, crop.sy) == (1.0, 1.0)
    np.testing.assert_array_equal(d, depth[:, crop.y0 : crop.y0 + 30, crop.x0 : crop.x0 + 28])
    t = plan_resize_crop(30, 40, 14, 28)  # shrink
    d, v = warp_depth(depth, valid, t)
    # Reference: the source pixel containing each new pixel centre (either side of a boundary
    # when the centre falls exactly on one, as y = 5.0 does here).
    xc = (np.arange(28) + 0.5 + t.x0) / t.sx
    yc = (np.arange(14) + 0.5 + t.y0) / t.sy
    ok = np.zeros(d.shape, bool)
    for ys in {tuple(np.floor(yc).astype(int)), tuple(np.floor(yc - 1e-4).astype(int))}:
        for xs in {tuple(np.floor(xc).astype(int)), tuple(np.floor(xc - 1e-4).astype(int))}:
            ref = depth[:, list(ys)][:, :, list(xs)]
            ok |= (d == ref) & (v == valid[:, list(ys)][:, :, list(xs)])
    assert ok.all()


def _landing_reference(flow, mask):
    """Every pixel, in float64: x + 0.5 + fx in [0, w] and y + 0.5 + fy in [0, h]."""
    h, w = mask.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    tx, ty = x + flow[..., 0].astype(np.float64), y + flow[..., 1].astype(np.float64)
    return mask & (tx >= 0) & (tx <= w) & (ty >= 0) & (ty <= h)


@pytest.mark.parametrize("scale", [0.0, 0.7, 3.0, 12.0, 200.0])
def test_landing_test_equals_the_per_pixel_reference(rng, scale):
    """Only the border bands within max |flow| are tested; the result must be the full test's,
    from zero flow (nothing tested) to flows larger than the image (everything tested)."""
    h, w = 37, 52
    flow = (rng.normal(size=(h, w, 2)) * scale).astype(np.float32)
    # Targets exactly on the borders 0 and w / h (kept) and just beyond (dropped).
    edge = {(3, 0): (-0.5, 0), (4, 0): (np.nextafter(np.float32(-0.5), np.float32(-1)), 0), (5, w - 1): (0.5, 0),
            (6, w - 1): (np.nextafter(np.float32(0.5), np.float32(1)), 0), (0, 7): (0, -0.5), (h - 1, 8): (0, np.nextafter(np.float32(0.5), np.float32(1)))}
    mask = rng.random((h, w)) < 0.9
    for (y, x), f in edge.items():
        flow[y, x], mask[y, x] = f, True
    expected = _landing_reference(flow, mask)
    stack = np.zeros((2, h, w), bool)
    stack[1] = mask
    got = keep_landing_inside(flow, stack[1])
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(stack[1], expected)  # in place, in a slot of a stacked array
    assert not stack[0].any()
    assert [bool(expected[yx]) for yx in edge] == [True, False, True, False, True, False]
