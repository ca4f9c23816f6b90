"""Camera paths: the spline interpolates, look-at frames are level rotations that look at the
target, every preset stays inside its bounds and moves smoothly."""

import numpy as np
import pytest

from data_pipelines.synthetic.scene import sample_environment
from data_pipelines.synthetic.trajectory import PATH_PRESETS, catmull_rom, look_at, make_path


def test_catmull_rom_passes_through_waypoints_and_reproduces_lines(rng):
    pts = rng.normal(size=(6, 3))
    np.testing.assert_allclose(catmull_rom(pts, np.linspace(0, 1, 6)), pts, atol=1e-12)
    # Collinear, evenly spaced points: the spline is that line at uniform speed.
    line = np.outer(np.arange(5.0), [1.0, -2.0, 0.5])
    v = rng.random(50)
    np.testing.assert_allclose(catmull_rom(line, v), np.outer(4 * v, [1.0, -2.0, 0.5]), atol=1e-12)


def test_look_at_is_a_level_rotation_looking_at_the_target(rng):
    pos = rng.normal(size=(100, 3))
    tgt = pos + rng.normal(size=(100, 3)) * np.array([1.0, 0.3, 1.0])
    R = look_at(pos, tgt)
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    d = (tgt - pos) / np.linalg.norm(tgt - pos, axis=-1, keepdims=True)
    pitch = np.arcsin(np.abs(d[:, 1]))
    ok = pitch < np.deg2rad(59)  # beyond 60 degrees pitch is clamped on purpose
    np.testing.assert_allclose(R[ok, :, 2], d[ok], atol=1e-12)  # camera z axis = viewing direction
    np.testing.assert_allclose(R[:, 1, 0], 0.0, atol=1e-12)  # camera x axis horizontal (level)
    assert np.all(R[:, 1, 1] > 0)  # camera y (down) points down in the world (y down)
    # The identity pose looks along +z, level.
    np.testing.assert_allclose(look_at(np.zeros(3), np.array([0.0, 0.0, 5.0])), np.eye(3), atol=1e-12)


@pytest.mark.parametrize("kind", ["room", "outdoor"])
@pytest.mark.parametrize("preset", PATH_PRESETS)
def test_presets_stay_in_bounds_and_move_smoothly(kind, preset):
    for seed in range(3):
        rng = np.random.default_rng(seed)
        env = sample_environment(kind, rng)
        path = make_path(preset, rng, env.bounds)
        T = path.poses(np.linspace(0.0, 1.0, 401))
        assert np.all(np.isfinite(T))
        pos = T[:, :3, 3]
        assert np.all(pos >= env.bounds.lo - 1e-9) and np.all(pos <= env.bounds.hi + 1e-9)
        R = T[:, :3, :3]
        np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-9)
        # Re-parameterised by motion: consecutive steps are similar in size (no jumps, no stalls).
        step = np.linalg.norm(np.diff(pos, axis=0), axis=-1) / env.bounds.ref_depth
        rel = np.einsum("nji,njk->nik", R[:-1], R[1:])
        step += np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1))
        assert step.max() < 3.0 * np.median(step) + 1e-9, (preset, seed, step.max(), np.median(step))
