"""benchmarks/real_clips.py on a tiny synthetic clip directory: both methods run and are scored;
the scores are invariant to a similarity transform of the reference and count unregistered
frames as failures; bad clip folders are refused before any work."""

import json
import math
import os

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from benchmarks import real_clips
from data_pipelines.synthetic import SceneConfig, generate_clip
from flow3r_jax.export.formats import write_cameras_json


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    clip = generate_clip(SceneConfig(height=64, width=96, frames=5, preset="orbit", offsets=(1,), flow_px=(4.0, 8.0)), seed=2)
    d = root / "synthetic_orbit"
    (d / "images").mkdir(parents=True)
    names = [f"frame{k}.png" for k in (1, 2, 3, 10, 11)]  # natural order differs from lexicographic
    for name, im in zip(names, clip["images"]):
        cv2.imwrite(str(d / "images" / name), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    K = clip["intrinsics"][0]
    camera = dict(width=96, height=64, fx=K[0, 0], fy=K[1, 1], cx=K[0, 2], cy=K[1, 2])
    write_cameras_json(str(d / "cameras.json"), names, clip["poses"], camera)
    intrinsics = [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]) - 0.5, float(K[1, 2]) - 0.5]
    (d / "clip.json").write_text(json.dumps({"kind": "object_ring", "intrinsics": intrinsics, "source": "synthetic"}))
    return str(root), clip


def test_scores_are_similarity_invariant_and_count_missing_frames(clip_dir):
    root, clip = clip_dir
    c = real_clips.load_clip(os.path.join(root, "synthetic_orbit"))
    assert c["names"] == ["frame1.png", "frame2.png", "frame3.png", "frame10.png", "frame11.png"]
    np.testing.assert_allclose(c["poses"], clip["poses"], atol=1e-9)
    S = np.eye(4)
    S[:3, :3] = 2.5 * Rotation.from_rotvec([0.3, -0.2, 0.9]).as_matrix()
    S[:3, 3] = (1.0, -4.0, 2.0)
    moved = {n: S @ T @ np.diag([1 / 2.5, 1 / 2.5, 1 / 2.5, 1]) for n, T in zip(c["names"], c["poses"])}  # rigid camera frames, scaled world
    m = real_clips.score(c["names"], moved, c["focal"] * 1.1, c)
    assert m["registered"] == 5 and m["ate_pct"] < 1e-3 and m["rel_rot_deg"] < 1e-3
    assert m["rra5"] == m["rta5"] == 100.0 and m["auc30"] > 95
    assert m["focal_pct"] == pytest.approx(10.0)
    del moved["frame3.png"]
    m = real_clips.score(c["names"], moved, None, c)
    assert m["registered"] == 4 and "focal_pct" not in m
    assert m["rra5"] == pytest.approx(100.0 * 6 / 10)  # 4 of the 10 pairs involve the missing frame


@pytest.mark.slow
def test_benchmark_runs_both_methods(clip_dir, tmp_path, capsys):
    root, _ = clip_dir
    out = tmp_path / "results.json"
    assert real_clips.main(["--clips", root, "--workdir", str(tmp_path / "w"), "--steps", "2", "--colmap", "default", "--pixels", str(64 * 96), "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["method"] for r in results] == ["reconstruct", "colmap (default)"]
    rec = results[0]["metrics"]
    assert rec["registered"] == rec["frames"] == 5 and math.isfinite(rec["ate_pct"]) and math.isfinite(rec["focal_pct"])
    assert set(rec["timing"]) == {"read", "sfm", "flow", "tracks", "setup", "compile", "optimise", "export"}
    assert "error" not in results[1]["metrics"], results[1]  # COLMAP ran (whatever it registered)
    table = capsys.readouterr().out
    assert "synthetic_orbit" in table and "colmap (default)" in table and "time split" in table


def test_bad_clip_folders_are_refused(tmp_path, capsys):
    (tmp_path / "a" / "images").mkdir(parents=True)
    with pytest.raises(SystemExit):
        real_clips.main(["--clips", str(tmp_path)])
    assert "no ground truth" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        real_clips.main(["--clips", str(tmp_path), "--only", "b"])
    assert "no clip folder ['b']" in capsys.readouterr().err
