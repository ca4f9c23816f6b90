"""`python -m flow3r_jax.reconstruct`: clear input errors, and end-to-end runs on a synthetic video
(per-scene optimiser) and with a tiny random Flow3r checkpoint (feed-forward, refine)."""

import json
import os

import cv2
import numpy as np
import pytest

from flow3r_jax.data.frames import FrameReadError
from flow3r_jax.reconstruct import ReconstructionError, flowmap_size, main, read_input_frames


def _write_folder(folder, sizes):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(os.path.join(folder, f"{i:03d}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_folder_with_mixed_image_sizes(tmp_path):
    _write_folder(tmp_path / "imgs", [(32, 48), (32, 48), (40, 48), (32, 48)])
    with pytest.raises(FrameReadError, match="mixed frame sizes.*002.png"):
        read_input_frames(str(tmp_path / "imgs"))


def test_fewer_than_three_frames(tmp_path):
    _write_folder(tmp_path / "two", [(32, 48)] * 2)
    with pytest.raises(ReconstructionError, match="2 frame.*at least 3"):
        read_input_frames(str(tmp_path / "two"))
    from data_pipelines.synthetic.video import write_video

    write_video(str(tmp_path / "two.mp4"), np.zeros((2, 32, 48, 3), np.uint8), 30.0)
    with pytest.raises(ReconstructionError, match="at least 3"):
        read_input_frames(str(tmp_path / "two.mp4"))
    with pytest.raises(ReconstructionError, match="--frames 2"):
        read_input_frames(str(tmp_path / "two.mp4"), frames=2)


def test_unreadable_files(tmp_path, capsys):
    _write_folder(tmp_path / "imgs", [(32, 48)] * 3)
    (tmp_path / "imgs" / "001.png").write_bytes(b"not an image")
    with pytest.raises(FrameReadError, match="001.png: unreadable"):
        read_input_frames(str(tmp_path / "imgs"))
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(FrameReadError, match="broken.mp4"):
        read_input_frames(str(tmp_path / "broken.mp4"))
    with pytest.raises(FrameReadError, match="no such file"):
        read_input_frames(str(tmp_path / "missing"))
    # The command reports the error (exit code 2) instead of a traceback.
    assert main(["--input", str(tmp_path / "imgs"), "--out", str(tmp_path / "out")]) == 2
    assert "001.png: unreadable" in capsys.readouterr().err


def test_frame_selection_and_size(tmp_path):
    _write_folder(tmp_path / "imgs", [(32, 48)] * 10)
    frames, names = read_input_frames(str(tmp_path / "imgs"), frames=4)
    assert frames.shape == (4, 32, 48, 3) and names == ["000.png", "003.png", "006.png", "009.png"]
    assert flowmap_size(480, 640) == (176, 240)
    assert flowmap_size(160, 224) == (160, 224)
    assert flowmap_size(1080, 1920, 43_200) == (160, 272)


@pytest.fixture(scope="module")
def synthetic_video(tmp_path_factory):
    from data_pipelines.synthetic import SceneConfig, generate_clip
    from data_pipelines.synthetic.video import write_video

    cfg = SceneConfig(height=64, width=96, frames=8, dynamic=False, preset="random", kind="room", offsets=(1,), flow_px=(4.0, 8.0))
    clip = generate_clip(cfg, seed=3)
    path = str(tmp_path_factory.mktemp("video") / "room.mp4")
    write_video(path, clip["images"], 30.0)
    return path, clip


def _check_outputs(out, n_frames, size):
    H, W = size
    with open(os.path.join(out, "cameras.json")) as f:
        doc = json.load(f)
    assert (doc["height"], doc["width"]) == (H, W) and len(doc["frames"]) == n_frames
    first = doc["frames"][0]
    np.testing.assert_allclose(first["camera_to_world"], np.eye(4), atol=1e-5)
    assert first["fx"] > 0 and first["fy"] > 0 and abs(first["cx"] - W / 2) < 1e-6 and abs(first["cy"] - H / 2) < 1e-6
    for frame in doc["frames"]:
        T = np.asarray(frame["camera_to_world"])
        assert np.all(np.isfinite(T))
        np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-4)
    from flow3r_jax.flowmap.export import read_colmap_model
    from flow3r_jax.flowmap.ply import read_ply

    model = read_colmap_model(os.path.join(out, "sparse", "0"))
    assert len(model["images"]) == n_frames and len(model["points3D"]) > 100
    pts, cols = read_ply(os.path.join(out, "points.ply"))
    assert len(pts) > 100 and np.all(np.isfinite(pts)) and cols.dtype == np.uint8
    assert os.path.getsize(os.path.join(out, "trajectory.png")) > 1000
    try:
        import pycolmap
    except ImportError:
        return doc
    rec = pycolmap.Reconstruction(os.path.join(out, "sparse", "0"))
    assert rec.num_reg_images() == n_frames
    return doc


@pytest.mark.slow
def test_reconstruct_synthetic_video_with_the_optimiser(synthetic_video, tmp_path):
    path, clip = synthetic_video
    out = str(tmp_path / "out")
    assert main(["--input", path, "--out", out, "--steps", "30", "--no-progress"]) == 0
    doc = _check_outputs(out, 8, (64, 96))
    assert doc["run"]["backend"] == "flowmap" and doc["run"]["init"].startswith("pretrained")
    with open(os.path.join(out, "flowmap_history.json")) as f:
        hist = json.load(f)
    assert len(hist["loss"]) == 30 and np.all(np.isfinite(hist["loss"]))


@pytest.mark.slow
def test_reconstruct_with_a_checkpoint_and_refine(synthetic_video, tmp_path):
    from flax import nnx

    from flow3r_jax.models import Flow3r, get_model_config
    from flow3r_jax.models.pretrained import save_pretrained

    ckpt = str(tmp_path / "tiny")
    save_pretrained(Flow3r(get_model_config("tiny"), rngs=nnx.Rngs(0)), ckpt)
    path, _ = synthetic_video
    out = str(tmp_path / "ff")
    assert main(["--input", path, "--out", out, "--checkpoint", ckpt, "--ff-pixels", "6000", "--no-progress"]) == 0
    doc = _check_outputs(out, 8, (64, 96))
    assert doc["run"]["backend"] == "feedforward"
    out = str(tmp_path / "refine")
    assert main(["--input", path, "--out", out, "--checkpoint", ckpt, "--ff-pixels", "6000", "--refine", "--steps", "5", "--no-progress"]) == 0
    doc = _check_outputs(out, 8, (64, 96))
    assert doc["run"]["backend"] == "flowmap" and doc["run"]["refine"] and doc["run"]["feedforward"]["backend"] == "feedforward"


@pytest.mark.slow
def test_demo_runs_and_takes_its_flags(tmp_path, capsys):
    """The README's main command (`reconstruct --demo DIR`), shortened to 2 steps: it writes
    every output, prints the errors against the exact ground truth, and applies --init (it used
    to ignore it and --no-progress)."""
    out = str(tmp_path / "demo")
    assert main(["--demo", out, "--demo-steps", "2", "--init", "random", "--no-progress"]) == 0
    printed = capsys.readouterr()
    summary = json.loads(next(line for line in printed.out.splitlines() if line.startswith("demo: {"))[len("demo: "):])
    assert set(summary) >= {"ate_rel", "rot_err_deg", "focal_err"} and np.isfinite(summary["ate_rel"])
    assert "step/s" not in printed.err  # no progress bar
    doc = _check_outputs(os.path.join(out, "reconstruction"), 16, (160, 224))
    assert doc["run"]["init"] == "random"
    with pytest.raises(SystemExit):
        main(["--demo", out, "--steps", "10"])  # --steps is --demo-steps here: refused, not ignored
    assert "does not take --steps" in capsys.readouterr().err
