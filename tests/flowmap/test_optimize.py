"""The compiled per-scene optimisation: it converges on a tiny scene, vmap equals separate runs,
and the stage switches (free focal, track loss) happen as FlowMap's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flow3r_jax.flowmap import FlowMapConfig, forward, init_params, make_scene_inputs, optimize_scene, optimize_scenes, stack_scenes
from flow3r_jax.flowmap.metrics import trajectory_errors
from flow3r_jax.flowmap.optimize import abstract_model

from tests.flowmap.conftest import exact_scene, exact_tracks

# A shrunk config exercising every stage within a few steps: soft-min, then (step 3) the free
# focal started from the mean of the soft-min focals of steps 1-2, and tracks from step 2.
SHORT = FlowMapConfig(steps=6, focal_regression_after=3, focal_regression_window=2, track_after=2, softmin_points=512, procrustes_points=300)


def _inputs(clip, tracks=True):
    t = exact_tracks(clip) if tracks else None
    return make_scene_inputs(clip["images"], clip["flow_fw"], clip["flow_bw"], tracks=t)


@pytest.fixture(scope="module")
def two_scenes(tiny_scene):
    return [_inputs(tiny_scene), _inputs(exact_scene(seed=5))]


@pytest.fixture(scope="module")
def separate_runs(two_scenes):
    return [optimize_scene(s, SHORT, key=k) for k, s in enumerate(two_scenes)]


def test_vmap_over_two_scenes_equals_two_separate_runs(two_scenes, separate_runs):
    batched = optimize_scenes(stack_scenes(two_scenes), SHORT, keys=jnp.stack([jax.random.key(0), jax.random.key(1)]))
    for s, single in enumerate(separate_runs):
        for name in ("depth", "poses", "focal", "intrinsics", "weights"):
            np.testing.assert_allclose(np.asarray(getattr(batched, name)[s]), np.asarray(getattr(single, name)), rtol=1e-4, atol=1e-5, err_msg=name)
        for name, values in single.history._asdict().items():
            np.testing.assert_allclose(np.asarray(getattr(batched.history, name)[s]), np.asarray(values), rtol=1e-4, atol=1e-6, err_msg=name)


def test_stacking_pads_scenes_with_fewer_tracks_without_changing_their_loss(tiny_scene):
    """Scenes with different numbers of tracks stack (padded with invisible tracks), and the
    padded scene's loss at a step with the track loss on is the unpadded scene's."""
    full = _inputs(tiny_scene)
    M = full.track_xy.shape[1]
    fewer = full._replace(track_xy=full.track_xy[:, : M - 7], track_visible=full.track_visible[:, : M - 7])
    stacked = stack_scenes([fewer, full])
    assert stacked.track_xy.shape[:3] == (2, full.num_frames, M)
    assert not np.asarray(stacked.track_visible[0, :, M - 7 :]).any()
    F, (H, W) = full.num_frames, full.image_shape
    graphdef, _ = abstract_model(SHORT, F, (H, W))
    params = init_params(SHORT, F, (H, W), jax.random.key(0))
    padded = jax.tree.map(lambda x: x[0], stacked)

    def losses(inputs):
        _, (m, *_) = forward(graphdef, SHORT, params, jnp.float32(1.0), inputs, jnp.int32(SHORT.track_after), jax.random.key(1))
        return float(m.loss), float(m.track_loss)

    got, want, with_all = losses(padded), losses(fewer), losses(full)
    assert want[1] > 0 and with_all[1] != want[1]  # the dropped tracks did count
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_stage_switches_are_functions_of_the_step(separate_runs):
    h = separate_runs[0].history
    focal, track = np.asarray(h.focal), np.asarray(h.track_loss)
    # Step 3 uses the mean of the soft-min focals of the window (steps 1 and 2) ...
    np.testing.assert_allclose(focal[3], focal[1:3].mean(), rtol=1e-6)
    # ... and from there the free focal takes Adam steps of about lr (a fresh Adam state).
    np.testing.assert_allclose(abs(focal[4] - focal[3]), SHORT.lr, rtol=0.05)
    np.testing.assert_allclose(abs(focal[5] - focal[4]), SHORT.lr, rtol=0.05)
    assert np.all(track[:2] == 0) and np.all(track[2:] > 0)
    assert np.all(np.isfinite(np.asarray(h.loss)))


@pytest.mark.slow
def test_short_optimisation_lowers_flow_loss_and_pose_error(tiny_scene):
    """From a random initialisation (FlowMap's from-scratch setting), 200 steps at a 10x larger
    learning rate than FlowMap's (to keep the test short) on a 8-frame 64 x 96 scene."""
    clip = tiny_scene
    inputs = _inputs(clip, tracks=False)
    F, H, W = clip["depth"].shape
    # with a convergence rule on: a loss still falling keeps the run going to the last step
    cfg = FlowMapConfig(steps=200, lr=3e-4, focal_regression_after=None, converge_window=20, converge_rtol=0.005)
    params = init_params(cfg, F, (H, W), 0)
    graphdef, _ = abstract_model(cfg, F, (H, W))
    _, (m0, _, _, poses0, _, _) = jax.jit(lambda p: forward(graphdef, cfg, p, jnp.zeros(()), inputs, jnp.int32(0), jax.random.key(0)))(params)
    result = optimize_scene(inputs, cfg, params, key=0)
    assert result.steps_done == 200 and not result.converged
    loss = np.asarray(result.history.flow_loss)
    assert loss[-20:].mean() < 0.5 * loss[:20].mean()
    before = trajectory_errors(np.asarray(poses0), clip["poses"])
    after = trajectory_errors(np.asarray(result.poses), clip["poses"])
    assert after["ate_rel"] < 0.85 * before["ate_rel"], (before, after)
    assert after["rot_err_deg"] < 0.5 * before["rot_err_deg"], (before, after)


def test_run_ending_at_the_focal_switch_uses_the_window_mean(tiny_scene):
    """A run of exactly `focal_regression_after` steps: the outputs are evaluated at the switch,
    with the free focal's starting value (the soft-min window's mean), not an unset parameter."""
    cfg = SHORT.replace(steps=3)
    result = optimize_scene(_inputs(tiny_scene, tracks=False), cfg, key=0)
    focal = np.asarray(result.history.focal)
    np.testing.assert_allclose(np.asarray(result.focal), focal[1:3].mean(), rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(result.poses))) and np.all(np.isfinite(np.asarray(result.intrinsics)))


def test_procrustes_mask_multiplies_the_weights_and_off_is_flowmap(tiny_scene):
    """With the mask on, the poses are those of the learned weights times the validity; an
    all-ones validity gives exactly FlowMap's unmasked step (procrustes_mask=False)."""
    inputs = _inputs(tiny_scene, tracks=False)
    F, H, W = inputs.images.shape[:3]
    graphdef, _ = abstract_model(SHORT, F, (H, W))
    params = init_params(SHORT, F, (H, W), jax.random.key(0))
    args = (graphdef, SHORT, params, jnp.float32(1.0), inputs, jnp.int32(0), jax.random.key(1))
    _, (_, _, _, masked, _, w) = forward(*args)
    unmasked_cfg = FlowMapConfig(**{**SHORT.__dict__, "procrustes_mask": False})
    _, (_, _, _, plain, _, w_plain) = forward(graphdef, unmasked_cfg, *args[2:])
    ones = inputs._replace(valid_bw=jnp.ones_like(inputs.valid_bw))
    _, (_, _, _, all_valid, _, _) = forward(graphdef, SHORT, params, jnp.float32(1.0), ones, jnp.int32(0), jax.random.key(1))
    np.testing.assert_allclose(np.asarray(all_valid), np.asarray(plain), atol=1e-6)
    assert float(jnp.mean(inputs.valid_bw)) < 1.0  # this scene has invalid correspondences ...
    assert np.abs(np.asarray(masked) - np.asarray(plain)).max() > 1e-4  # ... and the mask changes the poses


def test_focal_lr_sets_the_free_focal_step_only(tiny_scene, separate_runs):
    """`focal_lr` gives the stage-2 focal its own Adam learning rate: its first steps move it by
    about focal_lr (fresh Adam state), while everything before the switch, and the model's own
    learning rate, stay FlowMap's (the same history as the run without it up to the switch)."""
    cfg = SHORT.replace(focal_lr=1e-2)
    result = optimize_scene(_inputs(tiny_scene), cfg, key=0)
    focal, base = np.asarray(result.history.focal), np.asarray(separate_runs[0].history.focal)
    np.testing.assert_allclose(focal[:4], base[:4], rtol=1e-6)  # soft-min steps and the switch value
    np.testing.assert_allclose(np.asarray(result.history.loss)[:4], np.asarray(separate_runs[0].history.loss)[:4], rtol=1e-5)
    np.testing.assert_allclose(abs(focal[4] - focal[3]), 1e-2, rtol=0.05)
    np.testing.assert_allclose(abs(focal[5] - focal[4]), 1e-2, rtol=0.2)
    assert abs(base[4] - base[3]) < 2 * SHORT.lr  # without it: steps of about lr


def test_procrustes_edge_zeroes_the_weights_of_samples_across_depth_edges(tiny_scene):
    """`procrustes_edge` multiplies the step's Procrustes weights by the edge validity of the
    step's own depth (and is off by default); a non-positive spread is refused."""
    from flow3r_jax.flowmap.poses import edge_validity, procrustes_indices

    inputs = _inputs(tiny_scene, tracks=False)
    F, H, W = inputs.images.shape[:3]
    graphdef, _ = abstract_model(SHORT, F, (H, W))
    params = init_params(SHORT, F, (H, W), jax.random.key(0))
    rest = (params, jnp.float32(1.0), inputs, jnp.int32(0), jax.random.key(1))
    _, (_, _, depth, _, _, w) = forward(graphdef, SHORT, *rest)
    _, (_, _, _, _, _, w_edge) = forward(graphdef, SHORT.replace(procrustes_edge=0.02), *rest)
    idx = jnp.asarray(procrustes_indices(H, W, SHORT.procrustes_points))
    keep = np.asarray(edge_validity(depth, inputs.flow_bw, idx, 0.02))
    np.testing.assert_allclose(np.asarray(w_edge), np.asarray(w) * keep, rtol=1e-6)
    assert 0 < keep.mean() < 1
    with pytest.raises(ValueError, match="procrustes_edge"):
        FlowMapConfig(procrustes_edge=0.0)


def test_stop_ends_the_run_between_stretches_with_the_state_reached(two_scenes, separate_runs):
    """`stop()` is asked between compiled calls (the first compiles and runs one step, the second
    one step too): stopped before the third, the run holds two steps, the same as the first two
    of the uninterrupted run, and its outputs are those the full run had at step 2."""
    asked, reports = [], []

    def stop():
        asked.append(1)
        return len(asked) >= 2

    result = optimize_scene(two_scenes[0], SHORT, key=0, progress=lambda step, loss: reports.append((step, loss)), stop=stop)
    full = separate_runs[0]
    assert result.steps_done == 2 and full.steps_done == SHORT.steps
    np.testing.assert_allclose(np.asarray(result.history.loss), np.asarray(full.history.loss)[:2], rtol=1e-6)
    assert [s for s, _ in reports] == [0, 1]
    np.testing.assert_allclose([l for _, l in reports], np.asarray(full.history.loss)[:2], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(result.poses), np.asarray(full.history.poses)[2], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(result.focal), np.asarray(full.history.focal)[2], rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(result.depth)))


def test_convergence_rule_on_constructed_loss_curves():
    """Level: the mean of the last W steps within rtol of the W before. A falling loss, a rising
    one and a non-finite one are not level; a plateau with noise inside the tolerance is."""
    from flow3r_jax.flowmap.optimize import converge_start, has_converged

    t = np.arange(400.0)
    decay = 1.0 + 5.0 * np.exp(-t / 40.0)  # level (to 0.5%) from about step 300
    first = next(s for s in range(40, 401) if has_converged(decay[:s], 20, 0.005))
    # the first level step from the definition: |mean(last) - mean(before)| <= rtol |mean(before)|
    want = next(s for s in range(40, 401) if abs(decay[s - 20 : s].mean() - decay[s - 40 : s - 20].mean()) <= 0.005 * decay[s - 40 : s - 20].mean())
    assert first == want and 200 < first < 400
    assert not any(has_converged(decay[:s], 20, 0.005) for s in range(40, first))
    rising = 1.0 + 0.002 * t  # diverging slowly: every window 2% worse than the one before at the start
    assert not any(has_converged(np.exp(0.01 * t[:s]), 20, 0.005) for s in range(40, 401))
    assert not has_converged(rising[:100], 20, 0.005) and has_converged(rising[:100], 20, 0.05)
    noisy = 2.0 + np.random.default_rng(0).normal(0, 0.01, 400)
    assert has_converged(noisy, 50, 0.005)
    bad = noisy.copy()
    bad[-3] = np.nan
    assert not has_converged(bad, 50, 0.005) and not has_converged(noisy[:60], 50, 0.005)  # not finite / too short
    # batched runs: scenes averaged, steps last
    assert has_converged(np.stack([noisy, noisy + 1.0]), 50, 0.005)
    # never before two windows after the free-focal switch
    assert converge_start(FlowMapConfig(converge_window=50)) == 1100
    assert converge_start(FlowMapConfig(converge_window=50, steps=800)) == 100  # no switch within the run
    assert converge_start(FlowMapConfig(converge_window=50), has_focal=True) == 100
    assert converge_start(FlowMapConfig(converge_window=50, focal_regression_after=None)) == 100
    with pytest.raises(ValueError, match="converge_window"):
        FlowMapConfig(converge_window=-1)


def test_a_level_loss_ends_the_run_at_the_first_check_after_two_windows(tiny_scene):
    """A run whose loss does not move (a vanishing learning rate) is level as soon as the rule
    may judge it: it ends at the first stretch boundary at or after 2 W steps, complete
    (`converged`), with outputs for the steps run."""
    from flow3r_jax.flowmap.optimize import converge_start

    cfg = SHORT.replace(steps=60, lr=1e-12, focal_regression_after=None, converge_window=4, converge_rtol=1e-3, progress_every=4)
    ends = []
    result = optimize_scene(_inputs(tiny_scene, tracks=False), cfg, key=0, progress=lambda step, loss: ends.append(step + 1))
    assert result.converged and converge_start(cfg) == 8
    # the stretches' sizes follow the machine's pace: the run ends at the first boundary >= 8
    assert result.steps_done == ends[-1] == min(e for e in ends if e >= 8) and len(np.asarray(result.history.loss)) == result.steps_done
    assert np.all(np.isfinite(np.asarray(result.poses))) and np.all(np.isfinite(np.asarray(result.depth)))


def test_a_known_principal_point_off_centre_is_used():
    """A scene cropped off centre (its principal point 24 px right of and 16 px below the crop's
    centre): at the exact depth (explicit depth) with the known focal, the step's poses and flow
    fit the exact ones where it unprojects with the given principal point, and the centre leaves
    both worse. The step's intrinsics carry it."""
    clip = exact_scene(height=96, width=144, frames=4, seed=3)
    r0, c0 = 0, 0  # crop rows 0..64, cols 0..96: the principal point (72, 48) sits off the crop's centre (48, 32)
    crop = lambda a: a[:, r0 : r0 + 64, c0 : c0 + 96]
    K = clip["intrinsics"][0]
    principal = (K[0, 2] - c0, K[1, 2] - r0)
    assert principal == (72.0, 48.0)
    F, H, W = 4, 64, 96
    depth = crop(clip["depth"])
    focal = K[0, 0] / np.sqrt(H * W)
    cfg = FlowMapConfig.explicit_depth(steps=1)
    graphdef, _ = abstract_model(cfg, F, (H, W))
    params = init_params(cfg, F, (H, W), 0, base_depth=jnp.asarray(depth))
    out = {}
    for name, pp in (("given", principal), ("centre", None)):
        inputs = make_scene_inputs(crop(clip["images"]), crop(clip["flow_fw"]), crop(clip["flow_bw"]), base_depth=depth, focal=focal, principal=pp)
        _, (metrics, _, d, poses, K_step, _) = jax.jit(lambda p: forward(graphdef, cfg, p, jnp.zeros(()), inputs, jnp.int32(0), jax.random.key(0)))(params)
        np.testing.assert_allclose(np.asarray(d), depth, rtol=1e-5)  # the step ran at the exact depth
        out[name] = (float(metrics.flow_loss), trajectory_errors(np.asarray(poses), clip["poses"]), np.asarray(K_step))
    np.testing.assert_allclose(out["given"][2][:2, 2], principal)
    np.testing.assert_allclose(out["centre"][2][:2, 2], (W / 2, H / 2))
    assert out["given"][1]["rot_err_deg"] < 0.05, out["given"][1]
    # measured: 0.021 vs 0.131 deg, flow loss 2.9e-5 vs 4.0e-4
    assert out["centre"][1]["rot_err_deg"] > 3 * max(out["given"][1]["rot_err_deg"], 0.01), (out["given"][1], out["centre"][1])
    assert out["given"][0] < 0.2 * out["centre"][0], (out["given"][0], out["centre"][0])


def test_a_principal_point_needs_a_known_focal_and_a_place_in_the_frame(tiny_scene):
    clip = tiny_scene
    args = (clip["images"], clip["flow_fw"], clip["flow_bw"])
    with pytest.raises(Exception, match="needs a known focal"):
        make_scene_inputs(*args, principal=(48.0, 32.0))
    with pytest.raises(Exception, match="inside the 96x64 frame"):
        make_scene_inputs(*args, focal=1.0, principal=(148.0, 32.0))
