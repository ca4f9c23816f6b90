"""benchmarks/sfm_seeds.py: rendered clips through the sparse solver and pycolmap, scored against
the generator's exact poses and focal; the summary's statistics from known rows."""

import json

import numpy as np
import pytest

from benchmarks import sfm_seeds


def _row(preset, seed, err, std, colmap_err, registered=10):
    solver = dict(ok=True, registered=10, frames=10, ate_pct=1.0, rel_rot_deg=0.1, focal_pct=abs(err), focal_signed_pct=err, focal_std_pct=std, seconds=1.0)
    colmap = dict(ok=True, registered=registered, frames=10, ate_pct=2.0, rel_rot_deg=0.2, focal_pct=colmap_err, seconds=2.0)
    return dict(preset=preset, seed=seed, solver=solver, colmap_default=colmap)


def test_summary_counts_wins_and_calibration():
    rows = [_row("orbit", 0, 1.0, 0.5, 2.0), _row("orbit", 1, -3.0, 1.0, 1.0), _row("orbit", 2, 0.2, 0.4, 5.0, registered=7),
            _row("orbit", 3, -0.5, 1.0, 0.4)]
    text = sfm_seeds.summarise(rows, ["solver", "colmap_default"])
    # COLMAP solved 3 of 4 (one clip registered 7/10); the solver's focal error <= COLMAP's on 1 of those 3
    assert "| orbit | colmap_default | 3/4 |" in text and "| orbit | solver | 4/4 |" in text
    assert "on 1 of the 3 clips both solved" in text
    z = np.array([1.0 / 0.5, -3.0 / 1.0, 0.2 / 0.4, -0.5 / 1.0])
    assert f"median |z| {np.median(np.abs(z)):.2f}" in text  # 1.25
    assert f"{100 * np.mean(np.abs(z) < 2):.0f}% within 2" in text  # |2.0| is not < 2: 50%
    assert f"mean z {np.mean(z):+.2f}" in text
    # the solver's focal median / mean over its 4 clips
    errs = np.abs([1.0, -3.0, 0.2, -0.5])
    assert f"{np.median(errs):.2f} / {np.mean(errs):.2f}" in text


def test_sweep_runs_both_methods_on_rendered_clips(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert sfm_seeds.main(["--presets", "orbit", "--seeds", "2", "--size", "96x128", "--frames", "6", "--colmap", "default",
                           "--workdir", str(tmp_path / "w"), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 1 and rows[0]["preset"] == "orbit" and rows[0]["seed"] == 2
    solver = rows[0]["solver"]
    assert ("registered" in solver and np.isfinite(solver["focal_pct"]) and solver["focal_std_pct"] > 0) or solver["reason"], solver
    assert "seconds" in rows[0]["colmap_default"]
    assert "| orbit | solver |" in capsys.readouterr().out


def test_bad_options_are_refused(capsys):
    with pytest.raises(SystemExit):
        sfm_seeds.main(["--colmap", "fast"])
    assert "--colmap 'fast'" in capsys.readouterr().err


def test_pan_fixed_holds_the_camera_centre():
    """`pan_fixed` renders the pan path's rotations with every camera centre at the first frame's
    (a camera that only rotates); the rotations and intrinsics are the pan's."""
    from data_pipelines.synthetic import SceneConfig

    cfg = SceneConfig(height=48, width=64, frames=3, dynamic=False, preset="pan", kind="room", offsets=(1,), flow_px=(4.0, 8.0))
    drift, fixed = sfm_seeds.render(cfg, 0), sfm_seeds.render(cfg, 0, fixed_centre=True)
    np.testing.assert_allclose(fixed["poses"][:, :3, :3], drift["poses"][:, :3, :3])
    np.testing.assert_allclose(fixed["poses"][:, :3, 3], np.repeat(drift["poses"][:1, :3, 3], 3, 0))
    assert np.abs(drift["poses"][1:, :3, 3] - drift["poses"][:1, :3, 3]).max() > 0  # the pan as generated drifts
    np.testing.assert_allclose(fixed["intrinsics"], drift["intrinsics"])
    assert fixed["images"].shape == drift["images"].shape and not np.array_equal(fixed["images"][2], drift["images"][2])
