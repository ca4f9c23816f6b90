"""`python -m flow3r_jax.reconstruct`: clear input errors, options checked before any work, frame
subsets, outputs for COLMAP / nerfstudio / depth without stale files, Ctrl-C and SIGTERM, the
progress bar, the flag style, and end-to-end runs on a synthetic video (per-scene optimiser)
and with a tiny random Flow3r checkpoint (feed-forward, refine). The sparse solver's default path:
tests/test_reconstruct_sfm.py."""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from flow3r_jax.data.frames import FrameReadError
from flow3r_jax.reconstruct import ReconstructionError, build_parser, flowmap_size, main, read_input_frames

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    from flow3r_jax.export.formats import read_colmap_model
    from flow3r_jax.export.ply import read_ply

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
    # --pixels 3072: 64x96 frames onto a 48x64 grid (multiples of 16: not the input's aspect)
    assert main(["--input", path, "--out", out, "--steps", "30", "--no-progress", "--pixels", "3072"]) == 0
    doc = _check_outputs(out, 8, (64, 96))
    assert doc["run"]["backend"] == "flowmap" and doc["run"]["init"].startswith("pretrained") and doc["run"]["size"] == [48, 64]
    # one scale for both axes and a centred crop: one square-pixel camera, centred, in image pixels
    first = doc["frames"][0]
    assert first["fx"] == pytest.approx(first["fy"], rel=1e-9)
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
    assert main(["--input", path, "--out", out, "--checkpoint", ckpt, "--ff-pixels", "6000", "--refine", "--steps", "5", "--no-progress", "--sfm", "off"]) == 0
    refined = _check_outputs(out, 8, (64, 96))
    assert refined["run"]["backend"] == "flowmap" and refined["run"]["refine"] and refined["run"]["feedforward"]["backend"] == "feedforward"
    # Refinement improves the feed-forward poses (here an untrained model's; docs/real_clips.md
    # measures a trained one): Procrustes poses from its depth and the clip's flow.
    from flow3r_jax.flowmap.metrics import trajectory_errors

    _, clip = synthetic_video
    errors = [trajectory_errors(np.stack([fr["camera_to_world"] for fr in d["frames"]]), clip["poses"]) for d in (doc, refined)]
    assert errors[1]["rot_err_deg"] < errors[0]["rot_err_deg"] and errors[1]["ate_rel"] < errors[0]["ate_rel"], errors


@pytest.mark.slow
def test_demo_runs_and_takes_its_flags(tmp_path, capsys):
    """The README's main command (`reconstruct --demo DIR`), shortened to 2 steps: it writes
    every output, prints the errors against the exact ground truth, and applies --init (it used
    to ignore it and --no-progress)."""
    out = str(tmp_path / "demo")
    assert main(["--demo", out, "--dense", "flowmap", "--demo-steps", "2", "--init", "random", "--no-progress"]) == 0
    printed = capsys.readouterr()
    summary = json.loads(next(line for line in printed.out.splitlines() if line.startswith("demo: {"))[len("demo: "):])
    assert set(summary) >= {"ate_rel", "rot_err_deg", "focal_err"} and np.isfinite(summary["ate_rel"])
    assert "step/s" not in printed.err  # no progress bar
    doc = _check_outputs(os.path.join(out, "reconstruction"), 16, (160, 224))
    assert doc["run"]["init"] == "random"
    with pytest.raises(SystemExit):
        main(["--demo", out, "--steps", "10"])  # --steps is --demo-steps here: refused, not ignored
    assert "does not take --steps" in capsys.readouterr().err


# ------------------------------------------------------------------ options checked up front


def _garbage_folder(folder, n=3):
    """A folder of image files that cannot be read: any reading would report 'unreadable'."""
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        with open(os.path.join(folder, f"{i:03d}.png"), "wb") as f:
            f.write(b"not an image")
    return str(folder)


def test_bad_options_are_refused_before_any_frame_is_read(tmp_path, capsys):
    """Every refusal names the option, its value and the allowed range, with exit status 2; the
    input's images are garbage, so an error that read them would say 'unreadable'."""
    imgs = _garbage_folder(tmp_path / "imgs")
    out = str(tmp_path / "out")
    base = ["--input", imgs, "--out", out, "--no_progress"]
    for args, expected in [
        (["--steps", "-1"], "argument --steps: -1 is out of range (allowed: an integer >= 0)"),
        (["--steps", "many"], "argument --steps: 'many' is not an integer (allowed: an integer >= 0)"),
        (["--frames", "2"], "argument --frames: 2 is out of range (allowed: an integer >= 3)"),
        (["--pixels", "100"], "argument --pixels: 100 is out of range (allowed: an integer >= 256)"),
        (["--ff_pixels", "-5"], "argument --ff_pixels: -5 is out of range (allowed: an integer >= 196)"),
        (["--model_size", "huge"], "argument --model_size: invalid choice: 'huge'"),
        (["--focal", "wide"], "argument --focal: 'wide': expected auto, softmin, rotation or a focal length in pixels"),
        (["--focal", "-5"], "argument --focal: '-5': a focal length must be a positive number of pixels"),
        (["--dense", "mvs"], "argument --dense: invalid choice: 'mvs'"),
        (["--dense", "flowmap", "--sfm", "off"], "--dense chooses the depth of the sparse solver's run; this run has none"),
        (["--dense", "flowmap", "--method", "tracks4d"], "--dense chooses the depth of the sparse solver's run; this run has none"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(base + args)
        assert exc.value.code == 2
        assert expected in capsys.readouterr().err, args
    file_out = tmp_path / "a_file"
    file_out.write_text("x")
    foreign = tmp_path / "used"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    for args, expected in [
        (["--config=configs/flowmap.py", "--config.flowmap.lr=-1"], "FlowMapConfig.lr: must be a finite number > 0, got -1"),
        (["--config=configs/flowmap.py", "--config.pixels=10"], "--pixels 10: must be an integer >= 256"),
        (["--config=configs/flowmap.py", "--config.flowmap.huber_delta=0"], "FlowMapConfig.huber_delta: must be a finite number > 0"),
        (["--refine"], "--refine needs --checkpoint"),
        (["--checkpoint", str(tmp_path / "nope.safetensors")], "nope.safetensors: no such file or directory"),
        (["--init", str(tmp_path / "nope.npz")], "expected 'pretrained', 'random' or an initialisation .npz file"),
        (["--frames_from", str(tmp_path / "list.txt")], "--frames_from " + str(tmp_path / "list.txt") + ": no such file"),
        (["--frames", "4", "--frames_from", __file__], "--frames and --frames_from exclude each other"),
        (["--checkpoint", __file__, "--explicit_depth"], "--explicit_depth applies to the per-scene optimisation"),
        (["--steps", "0", "--sfm", "off"], "--steps 0 writes the sparse solver's poses and points alone"),
        (["--steps", "0", "--method", "tracks4d"], "--steps 0 writes the sparse solver's poses and points alone"),
        (["--steps", "0", "--dense", "flowmap"], "--steps 0 writes the sparse solver's poses and points alone"),
    ]:
        assert main(base + args) == 2, args
        err = capsys.readouterr().err
        assert expected in err and "unreadable" not in err, (args, err)
    for out_dir, expected in [
        (str(file_out), "is a file, not a directory"),
        (str(file_out / "sub"), f"cannot be created, {file_out} is a file"),
        (str(foreign), "holds 1 file(s) that reconstruct did not write, e.g. ['notes.txt']"),
        (imgs, "reconstruct did not write"),  # the input folder itself
    ]:
        assert main(["--input", imgs, "--out", out_dir]) == 2
        err = capsys.readouterr().err
        assert expected in err and "unreadable" not in err, (out_dir, err)
    assert (foreign / "notes.txt").read_text() == "keep me" and file_out.read_text() == "x"
    from flow3r_jax.reconstruct import reconstruct

    for focal in ("wide", -3.0, float("nan")):  # the function checks what the parser would
        with pytest.raises(ReconstructionError, match="focal"):
            reconstruct(imgs, out, focal=focal)
    with pytest.raises(ReconstructionError, match="--dense 'mvs'"):
        reconstruct(imgs, out, dense="mvs")
    assert not os.path.exists(out)
    # The real command: the same refusals and exit status, in a second or two (nothing heavy loaded).
    env = {**os.environ, "PYTHONPATH": ROOT}
    for args, expected in [(["--steps", "-3"], "allowed: an integer >= 0"), (["--out", str(file_out)], "is a file, not a directory")]:
        r = subprocess.run([sys.executable, "-m", "flow3r_jax.reconstruct", "--input", imgs, "--out", out, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and expected in r.stderr, r.stderr


# ------------------------------------------------------------------------- frame subsets


def test_subsets_read_only_the_kept_frames_and_say_so(tmp_path, caplog, monkeypatch):
    """A folder of 31 files of which only the kept ones are images (the others would fail if
    opened); a 40-frame video whose frames are converted only where kept."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(31):
        path = folder / f"img{k}.png"
        if k % 10:
            path.write_bytes(b"garbage")
        else:
            cv2.imwrite(str(path), rng.integers(0, 255, (16, 24, 3), dtype=np.uint8))
    with caplog.at_level(logging.INFO, logger="flow3r_jax.reconstruct"):
        images, names = read_input_frames(str(folder), frames=4)
    assert names == ["img0.png", "img10.png", "img20.png", "img30.png"] and images.shape == (4, 16, 24, 3)
    assert "kept 4 of 31 frames: every 10th" in caplog.text
    from data_pipelines.synthetic.video import write_video

    video = np.stack([np.full((32, 48, 3), 6 * k, np.uint8) for k in range(40)])
    path = str(tmp_path / "v.mp4")
    write_video(path, video, 30.0)
    from flow3r_jax.data.frames import read_video

    everything, _ = read_video(path)  # the reference: every frame decoded in order
    retrieved = []
    real = cv2.VideoCapture

    class Counting:
        def __init__(self, *a):
            self._cap = real(*a)

        def retrieve(self, *a):
            retrieved.append(1)
            return self._cap.retrieve(*a)

        def read(self, *a):
            retrieved.append(1)
            return self._cap.read(*a)

        def __getattr__(self, name):
            return getattr(self._cap, name)

    monkeypatch.setattr(cv2, "VideoCapture", Counting)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="flow3r_jax.reconstruct"):
        images, names = read_input_frames(path, frames=5)
    assert len(retrieved) == 5  # the 35 frames not kept were grabbed, never converted or copied
    kept = np.round(np.linspace(0, 39, 5)).astype(int)
    assert names == [f"frame_{k:05d}.png" for k in kept]
    np.testing.assert_array_equal(images, everything[kept])  # the right frames
    assert "kept 5 of 40 frames: one in 9.8 on average" in caplog.text


# -------------------------------------------------------------------------------- outputs


@pytest.fixture(scope="module")
def small_video(tmp_path_factory):
    """4 frames of 64 x 96: small enough for explicit-depth runs of a few seconds a step."""
    from data_pipelines.synthetic import SceneConfig, generate_clip
    from data_pipelines.synthetic.video import write_video

    cfg = SceneConfig(height=64, width=96, frames=4, dynamic=False, preset="random", kind="room", offsets=(1,), flow_px=(4.0, 8.0))
    clip = generate_clip(cfg, seed=5)
    path = str(tmp_path_factory.mktemp("small") / "small.mp4")
    write_video(path, clip["images"], 30.0)
    return path


def _opencv_to_opengl(T):
    """nerfstudio's camera axes, written out: x stays, y and z flip (x right, y up, z back)."""
    G = np.array(T, np.float64)
    G[:3, 1] *= -1.0
    G[:3, 2] *= -1.0
    return G


def _check_tool_outputs(out, names):
    """The COLMAP model's images exist and open, transforms.json is cameras.json in nerfstudio's
    axes, and the depth maps agree with the COLMAP points seen in each frame."""
    from flow3r_jax.export.formats import read_colmap_model

    with open(os.path.join(out, "cameras.json")) as f:
        cams = json.load(f)
    W, H = cams["width"], cams["height"]
    model = read_colmap_model(os.path.join(out, "sparse", "0"))
    assert sorted(img[0] for img in model["images"].values()) == sorted(names)
    for name, *_ in model["images"].values():
        im = cv2.imread(os.path.join(out, "images", name))
        assert im is not None and im.shape == (H, W, 3), name
    assert sorted(os.listdir(os.path.join(out, "images"))) == sorted(names)  # nothing else
    with open(os.path.join(out, "transforms.json")) as f:
        tr = json.load(f)
    assert tr["camera_model"] in ("OPENCV", "PINHOLE") and (tr["w"], tr["h"]) == (W, H)
    first = cams["frames"][0]
    assert (tr["fl_x"], tr["fl_y"], tr["cx"], tr["cy"]) == (first["fx"], first["fy"], first["cx"], first["cy"])
    assert len(tr["frames"]) == len(names)
    for fr, cam in zip(tr["frames"], cams["frames"]):
        assert fr["file_path"] == f"images/{cam['image_name']}" and os.path.isfile(os.path.join(out, fr["file_path"]))
        np.testing.assert_allclose(fr["transform_matrix"], _opencv_to_opengl(cam["camera_to_world"]), atol=1e-12)
    stems = sorted(os.path.splitext(n)[0] + ".npy" for n in names)
    assert sorted(os.listdir(os.path.join(out, "depth"))) == stems
    # Depth: every COLMAP point lies at the depth its frame's map has at the pixel it came from.
    by_id = {iid: (img[0], img[2], img[3], img[4]) for iid, img in model["images"].items()}
    checked = 0
    for iid, (name, c2w, xy, pids) in by_id.items():
        depth = np.load(os.path.join(out, "depth", os.path.splitext(name)[0] + ".npy"))
        assert depth.dtype == np.float32
        h, w = depth.shape
        for (x, y), pid in list(zip(xy, pids))[:50]:
            X = model["points3D"][int(pid)][0]
            z = (np.linalg.inv(c2w) @ np.append(X, 1.0))[2]
            row, col = int(y * h / H), int(x * w / W)
            np.testing.assert_allclose(depth[row, col], z, rtol=1e-3)
            checked += 1
    assert checked > 20
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    # Every file in the directory is listed as written by this run.
    listed = set(summary["files"])
    present = {os.path.relpath(os.path.join(r, f), out) for r, _, fs in os.walk(out) for f in fs}
    assert present == listed, present ^ listed
    return summary


@pytest.mark.slow
def test_outputs_for_colmap_nerfstudio_and_depth_and_no_stale_files(small_video, tmp_path, capsys):
    from flow3r_jax.data.frames import read_video

    out = str(tmp_path / "out")
    assert main(["--input", small_video, "--out", out, "--steps", "3", "--explicit_depth", "--no_progress"]) == 0
    names = [f"frame_{k:05d}.png" for k in range(4)]
    summary = _check_tool_outputs(out, names)
    assert summary["status"] == "complete" and summary["steps_done"] == 3 and not os.path.exists(os.path.join(out, "PARTIAL"))
    frames, _ = read_video(small_video)
    for k, name in enumerate(names):  # the frames used, lossless
        np.testing.assert_array_equal(cv2.cvtColor(cv2.imread(os.path.join(out, "images", name)), cv2.COLOR_BGR2RGB), frames[k])
    # The same directory again, now from an image folder (natural order): no file of the video
    # run is left, and the folder's files are copied as they are.
    folder = tmp_path / "shots"
    folder.mkdir()
    folder_names = ["shot1.png", "shot2.png", "shot10.png", "shot11.png"]
    for k, name in enumerate(folder_names):
        cv2.imwrite(str(folder / name), cv2.cvtColor(frames[k], cv2.COLOR_RGB2BGR))
    assert main(["--input", str(folder), "--out", out, "--steps", "3", "--explicit_depth", "--no_progress"]) == 0
    summary = _check_tool_outputs(out, folder_names)
    assert summary["frames"] == folder_names
    for name in folder_names:
        assert (folder / name).read_bytes() == open(os.path.join(out, "images", name), "rb").read()
    # A file reconstruct did not write: refused, nothing touched.
    with open(os.path.join(out, "notes.txt"), "w") as f:
        f.write("mine")
    before = open(os.path.join(out, "cameras.json")).read()
    capsys.readouterr()
    assert main(["--input", small_video, "--out", out, "--steps", "3", "--explicit_depth", "--no_progress"]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert open(os.path.join(out, "notes.txt")).read() == "mine" and open(os.path.join(out, "cameras.json")).read() == before


@pytest.mark.slow
def test_a_second_run_loads_its_compiled_programs_from_the_cache(small_video, tmp_path):
    """--jit_cache DIR: the first run compiles and stores its programs, a second run of the same
    shapes (another process) loads every one of them and compiles nothing it would store; both
    counts are in the run's record."""
    cache = tmp_path / "jit"

    def run(out):
        env = {**os.environ, "PYTHONPATH": ROOT}
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        r = subprocess.run([sys.executable, "-m", "flow3r_jax.reconstruct", "--input", small_video, "--out", str(out), "--steps", "3", "--explicit_depth", "--no_progress", "--jit_cache", str(cache)],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        with open(out / "cameras.json") as f:
            return json.load(f)["run"]["compilation_cache"], r.stderr

    first, _ = run(tmp_path / "a")
    second, log2 = run(tmp_path / "b")
    assert first["dir"] == second["dir"] == str(cache)
    assert first["loaded"] == 0 and first["stored"] >= 1, first
    assert second["loaded"] == first["stored"] and second["stored"] == 0, (first, second)
    assert f"compilation cache {cache}: {second['loaded']} programs loaded, 0 compiled and stored" in log2


def test_converge_ends_the_optimisation_early_as_a_complete_run(small_video, tmp_path, capsys, caplog):
    """--converge W: a loss that no longer moves (a vanishing learning rate) ends the run after
    2 W steps or a little more; the outputs are complete, not partial, and say where it ended.
    A run without the optimisation refuses the option."""
    out = tmp_path / "out"
    cfg = os.path.join(ROOT, "configs", "flowmap.py")
    args = ["--input", small_video, "--out", str(out), "--steps", "200", "--explicit_depth", "--no_progress", "--converge", "3", "--config", cfg, "--config.flowmap.lr=1e-12"]
    with caplog.at_level(logging.INFO, logger="flow3r_jax.reconstruct"):
        assert main(args) == 0
    with open(out / "summary.json") as f:
        summary = json.load(f)
    with open(out / "cameras.json") as f:
        run = json.load(f)["run"]
    assert summary["status"] == "complete" and not (out / "PARTIAL").exists()
    assert 6 <= run["converged_at"] < 200 and summary["steps_done"] == run["converged_at"] and summary["converged"] and summary["steps"] == 200
    assert "flowmap: converged after" in caplog.text
    for extra in (["--method", "tracks4d"], ["--checkpoint", small_video]):
        with pytest.raises(SystemExit) as e:
            main(["--input", small_video, "--out", str(tmp_path / "x"), "--converge", "5", *extra])
        assert e.value.code == 2
    assert "--converge ends FlowMap's per-scene optimisation early" in capsys.readouterr().err


@pytest.mark.slow
def test_focal_from_rotation_and_a_given_focal(tmp_path, caplog):
    """A video whose camera only rotates, FlowMap alone (--sfm off): by default (--focal auto) the
    focal comes from the flow's rotation (flowmap/selfcal.py), close to the truth after one step; --focal PX fixes it
    at PX pixels of the input frames (fx = fy: one square-pixel pinhole)."""
    import dataclasses

    from data_pipelines.synthetic.clip import build_scene
    from data_pipelines.synthetic.config import SceneConfig

    H, W = 144, 192
    scene = build_scene(SceneConfig(height=H, width=W, frames=6, preset="pan", focal=0.8, flow_px=(5.0, 7.0), offsets=(1,)), 3)
    poses = scene.poses.copy()
    poses[:, :3, 3] = poses[0, :3, 3]  # the camera only rotates
    scene = dataclasses.replace(scene, poses=poses, _frames={})
    folder = tmp_path / "pan"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"{i:02d}.png"), cv2.cvtColor(scene.render(i)["image"], cv2.COLOR_RGB2BGR))
    f_true = float(scene.intrinsics[0, 0])
    for focal, out in (("auto", tmp_path / "auto"), ("150", tmp_path / "given")):
        with caplog.at_level(logging.INFO, logger="flow3r_jax.reconstruct"):
            # --sfm off: FlowMap's own focal (the default path solves this clip with the sparse
            # solver's rotation-only route: tests/test_reconstruct_sfm.py)
            assert main(["--input", str(folder), "--out", str(out), "--steps", "1", "--explicit_depth", "--no_progress", "--pixels", str(H * W), "--focal", focal, "--sfm", "off"]) == 0
        with open(out / "cameras.json") as f:
            cams = json.load(f)
        fx, fy = cams["frames"][0]["fx"], cams["frames"][0]["fy"]
        assert fx == fy
        if focal == "auto":
            assert cams["run"]["focal_init"]["used"] == "rotation" and "using it" in caplog.text
            assert abs(fx / f_true - 1) < 0.02, (fx, f_true)
        else:
            assert cams["run"]["focal_init"]["mode"] == "given"
            np.testing.assert_allclose(fx, 150.0, rtol=1e-5)
    with pytest.raises(SystemExit):
        main(["--input", str(folder), "--out", str(tmp_path / "x"), "--focal", "softmin", "--method", "tracks4d"])


# ------------------------------------------------------------------ signals and progress bar


class _Live:
    """`python -m flow3r_jax.reconstruct ARGS` with its output read as it comes: every line and
    every progress-bar redraw ('\\r') with the time the test saw it."""

    def __init__(self, args):
        env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONUNBUFFERED": "1"}
        env.pop("JAX_COMPILATION_CACHE_DIR", None)  # signals are timed against real compilation
        env["FLOW3R_JIT_CACHE"] = "off"
        self.proc = subprocess.Popen([sys.executable, "-m", "flow3r_jax.reconstruct", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.t0 = time.monotonic()
        self.segments: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        buf = b""
        while chunk := os.read(self.proc.stdout.fileno(), 4096):
            buf += chunk
            *done, buf = re.split(rb"[\r\n]", buf)
            now = time.monotonic()
            self.segments += [(now, s.decode(errors="replace")) for s in done if s.strip()]
        if buf.strip():
            self.segments.append((time.monotonic(), buf.decode(errors="replace")))

    def wait_for(self, pattern, timeout=600):
        """(time seen, match) of the first segment matching `pattern`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, seg in list(self.segments):
                m = re.search(pattern, seg)
                if m:
                    return t, m
            if self.proc.poll() is not None and not self._thread.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the output:\n" + "\n".join(s for _, s in self.segments[-40:]))

    def finish(self, timeout=300):
        rc = self.proc.wait(timeout=timeout)
        self._thread.join(timeout=10)
        return rc

    @property
    def text(self):
        return "\n".join(s for _, s in self.segments)


_STEPS = 100_000
_BAR = rf"(\d+)/{_STEPS} \["


@pytest.fixture(scope="module")
def sigterm_run(small_video, tmp_path_factory):
    """A long run (progress bar on) sent SIGTERM once its bar shows 3 steps done."""
    out = str(tmp_path_factory.mktemp("sigterm") / "out")
    live = _Live(["--input", small_video, "--out", out, "--steps", str(_STEPS), "--explicit_depth"])
    deadline = time.monotonic() + 600
    seen = 0
    while seen < 3 and time.monotonic() < deadline:
        _, m = live.wait_for(_BAR)
        seen = max([int(m2.group(1)) for _, s in list(live.segments) if (m2 := re.search(_BAR, s))] + [0])
        time.sleep(0.05)
    t_signal = time.monotonic()
    live.proc.send_signal(signal.SIGTERM)
    rc = live.finish()
    return dict(live=live, out=out, rc=rc, seen=seen, t_signal=t_signal)


@pytest.mark.slow
def test_sigterm_mid_run_stops_promptly_and_writes_a_partial_result(sigterm_run):
    live, out = sigterm_run["live"], sigterm_run["out"]
    assert sigterm_run["rc"] == 143, live.text[-3000:]
    t_stop, m = live.wait_for(r"stopped by SIGTERM after (\d+) of 100000 steps", timeout=1)
    assert t_stop - sigterm_run["t_signal"] < 5.0  # within about a second of the current stretch
    done = int(m.group(1))
    assert sigterm_run["seen"] <= done < _STEPS
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert (summary["status"], summary["stopped_by"], summary["steps_done"], summary["steps"]) == ("partial", "SIGTERM", done, _STEPS)
    assert f"after {done} of {_STEPS}" in open(os.path.join(out, "PARTIAL")).read()
    with open(os.path.join(out, "flowmap_history.json")) as f:
        assert len(json.load(f)["loss"]) == done
    with open(os.path.join(out, "cameras.json")) as f:
        cams = json.load(f)
    assert cams["run"]["partial"]["steps_done"] == done and np.all(np.isfinite([fr["camera_to_world"] for fr in cams["frames"]]))
    _check_tool_outputs(out, [f"frame_{k:05d}.png" for k in range(4)])


@pytest.mark.slow
def test_progress_rate_excludes_compilation(sigterm_run):
    """The bar says 'compiling' while the first step compiles; its first rate counts only the
    steps after that: the time it implies is a small part of what the test saw pass since
    compilation began (which a rate including compilation would at least equal)."""
    live = sigterm_run["live"]
    t_compiling, _ = live.wait_for(r"flowmap \(compiling\)", timeout=1)
    rate = r"(\d+)/100000 \[[\d:]+<[^,]*, +([\d.]+)(step/s|s/step)"
    t_rate, m = live.wait_for(rate, timeout=1)
    assert t_compiling < t_rate
    assert not any(re.search(rate, s) for t, s in live.segments if t < t_compiling)
    n, value = int(m.group(1)), float(m.group(2))
    steps_per_s = value if m.group(3) == "step/s" else 1.0 / value
    seen = t_rate - t_compiling  # compilation + the first steps, by the test's clock
    assert n / steps_per_s < 0.5 * seen, (n, steps_per_s, seen)


@pytest.mark.slow
def test_sigint_during_compilation_and_before_the_optimisation(small_video, tmp_path):
    """Ctrl-C while the first step compiles takes effect when compilation returns (no crash):
    one step is done, written as partial, exit 130. Ctrl-C before the optimisation: nothing is
    written, and the command says so."""
    out = str(tmp_path / "compiling")
    live = _Live(["--input", small_video, "--out", out, "--steps", str(_STEPS), "--explicit_depth"])
    live.wait_for(r"flowmap: compiling the optimisation")
    live.proc.send_signal(signal.SIGINT)
    assert live.finish() == 130, live.text[-3000:]
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert (summary["status"], summary["stopped_by"], summary["steps_done"]) == ("partial", "SIGINT", 1)
    assert "stopped by SIGINT after 1 of 100000 steps" in live.text
    out = str(tmp_path / "early")
    live = _Live(["--input", small_video, "--out", out, "--steps", str(_STEPS), "--explicit_depth"])
    live.wait_for(r"input: .*4 frames of 96x64|input: .*4 frames")
    live.proc.send_signal(signal.SIGINT)
    assert live.finish() == 130, live.text[-3000:]
    assert "interrupted by SIGINT" in live.text and "nothing was written" in live.text
    assert not os.path.exists(out)


# ---------------------------------------------------------------------------- flag style


def test_flags_snake_case_with_kebab_aliases_and_help(tmp_path, capsys):
    p = build_parser()
    options = [a for a in p._actions if a.option_strings]
    assert all(a.help for a in options)
    assert all(s == "-h" or s == "--help" or re.fullmatch(r"--[a-z0-9_]+", s) for a in options for s in a.option_strings)
    kebab = p.parse_args(["--model-size", "tiny", "--explicit-depth", "--no-progress", "--demo-steps", "5", "--ff-pixels", "300", "--frames-from", "x.txt"])
    snake = p.parse_args(["--model_size", "tiny", "--explicit_depth", "--no_progress", "--demo_steps", "5", "--ff_pixels", "300", "--frames_from", "x.txt"])
    assert vars(kebab) == vars(snake)
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m flow3r_jax.reconstruct") and "--frames_from" in text
    # An old spelling reaches the option (and is refused with the canonical name).
    imgs = _garbage_folder(tmp_path / "imgs")
    assert main(["--input", imgs, "--out", str(tmp_path / "o"), "--frames-from", str(tmp_path / "missing.txt")]) == 2
    assert "--frames_from " + str(tmp_path / "missing.txt") + ": no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--input", imgs, "--out", str(tmp_path / "o"), "--ff-pixels", "5"])
    assert "argument --ff_pixels: 5 is out of range" in capsys.readouterr().err
    # flowmap.pretrain: the same style.
    from flow3r_jax.flowmap import pretrain

    pp = pretrain.build_parser()
    assert all(a.help for a in pp._actions if a.option_strings)
    assert vars(pp.parse_args(["--out", "x.npz", "--clip-frames", "9", "--depth-weight", "0.5"])) == vars(pp.parse_args(["--out", "x.npz", "--clip_frames", "9", "--depth_weight", "0.5"]))
    for args, expected in [
        (["--clip-frames", "1"], "argument --clip_frames: 1 is out of range (allowed: an integer >= 2)"),
        (["--lr", "0"], "argument --lr: 0 is out of range (allowed: a number > 0.0)"),
        (["--teacher-share", "1.5"], "allowed: a number >= 0.0 and <= 1.0"),
        (["--size", "100x30"], "both sides multiples of 16"),
        (["--frames", "9", "--clip_frames", "8"], "more than --clip_frames"),
    ]:
        with pytest.raises(SystemExit) as exc:
            pretrain.main(["--out", str(tmp_path / "i.npz"), *args])
        assert exc.value.code == 2 and expected in capsys.readouterr().err, args
    with pytest.raises(SystemExit):
        pretrain.main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python -m flow3r_jax.flowmap.pretrain")
