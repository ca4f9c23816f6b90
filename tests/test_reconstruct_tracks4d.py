"""`reconstruct --method tracks4d` on a small synthetic dynamic clip: the standard outputs, with
the track points as the point cloud."""

import json
import os

import cv2
import numpy as np
import pytest

from flow3r_jax.reconstruct import ReconstructionError, main, reconstruct


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from data_pipelines.synthetic_tracks import clip_tracks

    d = tmp_path_factory.mktemp("frames")
    clip = clip_tracks(3, frames=6, tracks=8, size=(48, 64), images=True)
    for k, im in enumerate(clip["images"]):
        cv2.imwrite(str(d / f"frame_{k:02d}.png"), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    return str(d)


@pytest.mark.slow
def test_tracks4d_method_writes_the_standard_outputs(clip_dir, tmp_path):
    out = str(tmp_path / "out")
    assert main(["--input", clip_dir, "--out", out, "--method", "tracks4d", "--tracks4d_size", "tiny", "--steps", "12", "--pixels", str(48 * 64), "--no_progress"]) == 0
    cams = json.load(open(os.path.join(out, "cameras.json")))
    frames = cams["frames"] if isinstance(cams, dict) and "frames" in cams else cams
    assert len(frames) == 6
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["backend"] == "tracks4d" and summary["status"] == "complete"
    assert os.path.getsize(os.path.join(out, "points.ply")) > 200
    d = np.load(os.path.join(out, "depth.npz"))["depth"]
    assert d.shape[0] == 6 and np.isfinite(d).all() and (d > 0).any()


def test_tracks4d_method_refuses_flow3r_options(clip_dir, tmp_path):
    with pytest.raises(ReconstructionError, match="tracks4d"):
        reconstruct(clip_dir, str(tmp_path / "o"), checkpoint=clip_dir, method="tracks4d")
    with pytest.raises(ReconstructionError, match="--method"):
        reconstruct(clip_dir, str(tmp_path / "o"), method="nope")
