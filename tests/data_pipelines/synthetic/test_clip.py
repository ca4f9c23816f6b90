"""Rendered clips against independent references.

Two small clips are rendered once per module: a static room and an outdoor scene with moving
objects. The checks use other code paths than the renderer: warping with
`flow3r_jax.geometry.bilinear_sample`, depth + pose reprojection with `induced_flow`, the
depth-test covisibility of `gt_flow_with_depth_check`, forward-backward consistency, closed-form
ray-sphere intersections and wall planes in float64 NumPy, and OpenCV's DIS optical flow.
"""

import json

import cv2
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines.synthetic import SceneConfig, build_scene, generate_clip, render_pair_flow
from flow3r_jax.geometry import bilinear_sample, flow_to_coords, forward_backward_mask, gt_flow_with_depth_check, induced_flow

STATIC = SceneConfig(height=96, width=128, frames=8, preset="random", kind="room", flow_px=(2.0, 5.0), offsets=(1, 2, 4))
DYNAMIC = SceneConfig(
    height=64, width=80, frames=8, preset="orbit", kind="outdoor", dynamic=True, num_dynamic=(2, 2), flow_px=(2.0, 5.0), offsets=(1, 3)
)
SEEDS = {"static": 0, "dynamic": 0}
CONFIGS = {"static": STATIC, "dynamic": DYNAMIC}


@pytest.fixture(scope="module")
def clips():
    return {name: generate_clip(cfg, SEEDS[name]) for name, cfg in CONFIGS.items()}


@pytest.fixture(scope="module")
def scenes():
    return {name: build_scene(cfg, SEEDS[name]) for name, cfg in CONFIGS.items()}


both = pytest.mark.parametrize("name", ["static", "dynamic"])


def _np(*arrays):
    return tuple(jnp.asarray(a) for a in arrays)


def _inside(flow, H, W):
    xy = np.asarray(flow_to_coords(jnp.asarray(flow)))
    return (xy[..., 0] >= 0) & (xy[..., 0] <= W) & (xy[..., 1] >= 0) & (xy[..., 1] <= H)


@both
def test_arrays_follow_the_contract(clips, name):
    clip, cfg = clips[name], CONFIGS[name]
    K, H, W = cfg.frames, cfg.height, cfg.width
    P = len(cfg.pairs())
    expected = {
        "images": (np.uint8, (K, H, W, 3)),
        "depth": (np.float32, (K, H, W)),
        "valid": (np.bool_, (K, H, W)),
        "poses": (np.float32, (K, 4, 4)),
        "intrinsics": (np.float32, (K, 3, 3)),
        "times": (np.float32, (K,)),
        "pairs": (np.int32, (P, 2)),
        "flow": (np.float32, (P, H, W, 2)),
        "covisible": (np.bool_, (P, H, W)),
        "dynamic": (np.bool_, (K, H, W)),
    }
    for key, (dtype, shape) in expected.items():
        assert clip[key].dtype == dtype and clip[key].shape == shape, (key, clip[key].dtype, clip[key].shape)
    assert [tuple(p) for p in clip["pairs"]] == cfg.pairs()
    assert int(clip["seed"]) == SEEDS[name]
    assert SceneConfig.from_json(str(clip["config"])) == cfg
    assert json.loads(str(clip["scene"]))["seed"] == SEEDS[name]
    np.testing.assert_allclose(clip["times"], np.arange(K) / cfg.fps, rtol=1e-6)
    assert np.all(np.isfinite(clip["flow"])) and np.all(np.isfinite(clip["depth"]))
    np.testing.assert_array_equal(clip["valid"], clip["depth"] > 0)
    assert not np.any(clip["dynamic"] & ~clip["valid"])
    assert clip["images"].std() > 20  # textured, not flat


@both
def test_poses_are_rigid_and_intrinsics_centred(clips, name):
    clip, cfg = clips[name], CONFIGS[name]
    R = clip["poses"][:, :3, :3].astype(np.float64)
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-5)
    np.testing.assert_array_equal(clip["poses"][:, 3], np.broadcast_to([0, 0, 0, 1], (cfg.frames, 4)))
    Kmat = clip["intrinsics"]
    fx = Kmat[:, 0, 0]
    np.testing.assert_array_equal(Kmat[:, 1, 1], fx)
    np.testing.assert_array_equal(Kmat[:, 0, 2], cfg.width / 2)
    np.testing.assert_array_equal(Kmat[:, 1, 2], cfg.height / 2)
    assert np.all((fx >= cfg.focal_range[0] * cfg.width - 1e-3) & (fx <= cfg.focal_range[1] * cfg.width + 1e-3))


@both
def test_warping_with_gt_flow_reproduces_covisible_pixels_only(clips, name):
    """Frame j sampled at x + flow(x) matches frame i where covisible, not where occluded."""
    clip, cfg = clips[name], CONFIGS[name]
    err_cov, err_occ = [], []
    for p, (i, j) in enumerate(clip["pairs"]):
        flow, cov = clip["flow"][p], clip["covisible"][p]
        warped = np.asarray(bilinear_sample(jnp.asarray(clip["images"][j], jnp.float32), flow_to_coords(jnp.asarray(flow))))
        err = np.abs(warped - clip["images"][i]).mean(-1)
        occluded = clip["valid"][i] & _inside(flow, cfg.height, cfg.width) & ~cov
        err_cov.append(err[cov])
        err_occ.append(err[occluded])
    err_cov, err_occ = np.concatenate(err_cov), np.concatenate(err_occ)
    assert err_occ.size > 500  # the clip does have occlusions
    assert err_cov.mean() < 6.0, err_cov.mean()  # of 255 (object shading and edges blend a little)
    assert np.median(err_cov) < 3.0, np.median(err_cov)
    assert err_occ.mean() > 15.0 and err_occ.mean() > 4 * err_cov.mean(), (err_occ.mean(), err_cov.mean())


@both
def test_depth_pose_reprojection_equals_flow_on_static_pixels_only(clips, name):
    """induced_flow(depth, K, poses) is the flow of a static world: it must equal the GT flow on
    every static pixel and differ on exactly the pixels showing moving objects."""
    clip = clips[name]
    for p, (i, j) in enumerate(clip["pairs"]):
        K = clip["intrinsics"]
        ind, front = induced_flow(*_np(clip["depth"][i], K[i], clip["poses"][i], K[j], clip["poses"][j]))
        diff = np.linalg.norm(np.asarray(ind) - clip["flow"][p], axis=-1)
        m = np.asarray(front) & clip["valid"][i]
        dyn = clip["dynamic"][i]
        assert diff[m & ~dyn].max(initial=0.0) < 2e-3, (i, j, diff[m & ~dyn].max())
        np.testing.assert_array_equal(diff[m] > 2e-3, dyn[m])
    if name == "dynamic":
        assert clip["dynamic"].sum() > 500


def test_sky_flow_is_the_rotation_homography(clips):
    """Sky pixels (no surface) move like points at infinity: x_j ~ K R_j^T R_i K^-1 x_i."""
    clip = clips["dynamic"]
    H, W = DYNAMIC.height, DYNAMIC.width
    K = clip["intrinsics"][0].astype(np.float64)
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    pix = np.stack([xs, ys, np.ones_like(xs)], -1)
    assert (~clip["valid"]).mean() > 0.05
    for p, (i, j) in enumerate(clip["pairs"]):
        Hm = K @ clip["poses"][j, :3, :3].T.astype(np.float64) @ clip["poses"][i, :3, :3].astype(np.float64) @ np.linalg.inv(K)
        q = pix @ Hm.T
        ref = q[..., :2] / q[..., 2:] - pix[..., :2]
        sky = ~clip["valid"][i] & (q[..., 2] > 0)
        np.testing.assert_allclose(clip["flow"][p][sky], ref[sky], atol=2e-3)
        assert not clip["covisible"][p][~clip["valid"][i]].any()


def _dilate(mask):
    return cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def test_occlusions_agree_with_the_depth_test_reference(clips):
    """On a static scene, compare with the classic check (reproject with depth, 5% depth test
    against the nearest pixel of frame j). Our occluded pixels (valid, landing inside j, not
    covisible) are within a pixel of the reference's; where the reference alone flags occlusion,
    the target lands next to a depth discontinuity of frame j, where a nearest-pixel depth
    lookup is ambiguous (the exact ray test decides those: the point itself is visible)."""
    clip = clips["static"]
    H, W = STATIC.height, STATIC.width
    ours_explained, ours_total, extra_at_edges, extra_total = 0, 0, 0, 0
    for p, (i, j) in enumerate(clip["pairs"]):
        K, T, D = clip["intrinsics"], clip["poses"], clip["depth"]
        _, ref = gt_flow_with_depth_check(*_np(D[i], K[i], T[i], D[j], K[j], T[j]))
        flow, cov = clip["flow"][p], clip["covisible"][p]
        inside = _inside(flow, H, W)
        assert not np.any(cov & ~clip["valid"][i]) and not np.any(cov & ~inside)
        ours = clip["valid"][i] & inside & ~cov
        theirs = clip["valid"][i] & inside & ~np.asarray(ref)
        ours_explained += (ours & _dilate(theirs)).sum()
        ours_total += ours.sum()
        extra = theirs & ~_dilate(ours)
        jump = cv2.dilate(D[j], np.ones((3, 3))) - cv2.erode(D[j], np.ones((3, 3))) > 0.05 * D[j]
        xy = np.asarray(flow_to_coords(jnp.asarray(flow)))
        col, row = np.clip(xy[..., 0].astype(int), 0, W - 1), np.clip(xy[..., 1].astype(int), 0, H - 1)
        extra_at_edges += jump[row, col][extra].sum()
        extra_total += extra.sum()
    assert ours_total > 500
    assert ours_explained / ours_total > 0.9, ours_explained / ours_total
    assert extra_at_edges / max(extra_total, 1) > 0.97, (extra_at_edges, extra_total)


def test_covisible_pixels_are_forward_backward_consistent(clips):
    clip = clips["static"]
    pairs = [tuple(p) for p in clip["pairs"]]
    for p, (i, j) in enumerate(pairs):
        back = clip["flow"][pairs.index((j, i))]
        fb = np.asarray(forward_backward_mask(jnp.asarray(clip["flow"][p]), jnp.asarray(back)))
        assert fb[clip["covisible"][p]].mean() > 0.97


@both
def test_ray_caster_matches_closed_form_geometry(clips, scenes, name):
    """Independent float64 NumPy geometry through the clip's own K and poses: the ray of every
    pixel that sees a sphere hits that sphere (closed form) at the rendered depth; every pixel
    that sees the room / ground lies on its planes; a sphere centre in view projects into a
    pixel that sees that sphere."""
    clip, scene, cfg = clips[name], scenes[name], CONFIGS[name]
    desc = json.loads(str(clip["scene"]))
    H, W = cfg.height, cfg.width
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    checked_centre = 0
    for i in (0, cfg.frames - 1):
        frame = scene.render(i)
        K = clip["intrinsics"][i].astype(np.float64)
        T = clip["poses"][i].astype(np.float64)
        rays = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(K).T @ T[:3, :3].T  # world, camera z = 1
        origin = T[:3, 3]
        for obj in desc["objects"] + desc["dynamic_objects"]:
            if obj["kind"] != "sphere":
                continue
            seen = frame["prim"] == obj["slot"]
            centre = np.asarray(scene.o2w[i, obj["slot"], :3, 3], np.float64)  # at this frame's time
            r = obj["half"][0]
            oc = origin - centre
            a, b, c = np.sum(rays * rays, -1), np.sum(rays * oc, -1), oc @ oc - r * r
            disc = b * b - a * c
            t = (-b - np.sqrt(np.maximum(disc, 0))) / a
            # a pixel the renderer puts on the sphere: its ray meets it (up to fp32 rounding of a
            # grazing ray, relative to a r^2)
            assert np.all(disc[seen] >= -1e-4 * a[seen] * r * r)
            if seen.any():
                rel = np.abs(frame["depth"][seen] - t[seen]) / t[seen]
                # float32 rendering; at the silhouette (grazing rays) the quadratic is ill-conditioned.
                assert np.median(rel) < 1e-5 and rel.max() < 1e-3, (np.median(rel), rel.max())
            # The sphere centre projects into a pixel that sees the sphere (if not hidden there).
            x_cam = T[:3, :3].T @ (centre - origin)
            u, v, _ = K @ (x_cam / x_cam[2])
            if x_cam[2] > 0 and 0 <= u < W and 0 <= v < H and seen.any():
                col, row = int(u), int(v)
                front = t[row, col] <= frame["depth"][row, col] * (1 + 1e-4)
                if front:
                    assert frame["prim"][row, col] == obj["slot"]
                    checked_centre += 1
        # Room walls / ground: unprojected points lie on the shell's faces.
        shell = desc["environment"]["shell"]
        on_shell = frame["prim"] == 0
        depth = frame["depth"][on_shell]
        offset = np.abs(origin + rays[on_shell] * depth[:, None] - np.asarray(shell["center"])) - np.asarray(shell["half"])
        assert np.all(offset <= 1e-5 * depth[:, None] + 1e-6)  # inside the shell's box
        assert np.all(np.min(np.abs(offset), axis=-1) <= 1e-5 * depth + 1e-6)  # on one of its faces
    assert checked_centre > 0


def test_dynamic_pair_mask_and_on_demand_pairs(clips, scenes):
    clip, scene = clips["dynamic"], scenes["dynamic"]
    p = [tuple(q) for q in clip["pairs"]].index((2, 3))
    flow, cov, dyn = render_pair_flow(scene, 2, 3)
    np.testing.assert_array_equal(flow, clip["flow"][p])
    np.testing.assert_array_equal(cov, clip["covisible"][p])
    np.testing.assert_array_equal(dyn, clip["dynamic"][2])  # the objects move all the time
    # A pair outside the offsets, and the identity pair (zero flow, covisible = valid).
    flow, cov, _ = render_pair_flow(scene, 0, 7)
    assert flow.shape == (DYNAMIC.height, DYNAMIC.width, 2) and cov.dtype == bool
    flow, cov, _ = render_pair_flow(scene, 4, 4)
    np.testing.assert_allclose(flow[clip["valid"][4]], 0.0, atol=1e-3)
    np.testing.assert_array_equal(cov, clip["valid"][4])
    with pytest.raises(IndexError, match="j=8"):
        render_pair_flow(scene, 0, 8)


@both
def test_camera_keeps_clear_of_objects_and_inside_the_room(clips, scenes, name):
    clip, scene = clips[name], scenes[name]
    desc = json.loads(str(clip["scene"]))
    centres = clip["poses"][:, :3, 3].astype(np.float64)
    for obj in desc["objects"] + desc["dynamic_objects"]:
        radius = obj["half"][0] if obj["kind"] == "sphere" else np.linalg.norm(obj["half"])
        dist = np.linalg.norm(centres - scene.o2w[:, obj["slot"], :3, 3], axis=-1)
        assert dist.min() > radius + 0.3
    shell = desc["environment"]["shell"]
    if desc["kind"] == "room":
        assert np.all(np.abs(centres - shell["center"]) < np.asarray(shell["half"]) - 0.3)
    else:
        assert np.all(centres[:, 1] < -0.4)  # above the ground (y down)


@both
def test_mean_consecutive_flow_matches_the_target(clips, name):
    clip = clips[name]
    desc = json.loads(str(clip["scene"]))
    lo, hi = CONFIGS[name].flow_px
    assert lo <= desc["target_flow_px"] <= hi
    mags = []
    for p, (i, j) in enumerate(clip["pairs"]):
        if j == i + 1:
            static = clip["valid"][i] & ~clip["dynamic"][i]
            mags.append(np.linalg.norm(clip["flow"][p], axis=-1)[static].mean())
    assert 0.7 * desc["target_flow_px"] < np.mean(mags) < 1.4 * desc["target_flow_px"], (np.mean(mags), desc["target_flow_px"])


def test_same_seed_same_arrays_other_seed_other_scene(clips):
    again = generate_clip(STATIC, SEEDS["static"])
    for key, value in clips["static"].items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)
    other = generate_clip(STATIC, SEEDS["static"] + 1)
    assert not np.array_equal(other["images"], again["images"])
    assert not np.allclose(other["poses"], again["poses"])
    assert json.loads(str(other["scene"]))["environment"] != json.loads(str(again["scene"]))["environment"]


@pytest.mark.parametrize("name, bound", [("static", 1.0), ("dynamic", 3.0)])
def test_dis_optical_flow_recovers_the_gt_flow(clips, name, bound):
    """Textures are usable by classical optical flow: OpenCV DIS (medium preset) on consecutive
    frames is close to the GT flow on covisible static pixels (the outdoor clip is small, 64 x 80,
    and near objects there move up to ~20 px per frame, hence its looser bound)."""
    clip = clips[name]
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    epe = []
    for p, (i, j) in enumerate(clip["pairs"]):
        if abs(i - j) != 1:
            continue
        gray = [cv2.cvtColor(clip["images"][k], cv2.COLOR_RGB2GRAY) for k in (i, j)]
        est = dis.calc(gray[0], gray[1], None)
        mask = clip["covisible"][p] & ~clip["dynamic"][i]
        epe.append(np.linalg.norm(est - clip["flow"][p], axis=-1)[mask].mean())
    assert np.mean(epe) < bound, epe
