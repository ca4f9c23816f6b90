"""The evaluation runner end to end on the project's synthetic benchmark: predictions on disk
scored against known answers, the tiny model through `launch.eval` (JSON, table, plots, two
devices equal to one), `--follow` on trainer-layout checkpoints, π³'s input resize, errors."""

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from flow3r_jax.eval.runner import EvalOptions, evaluate, evaluate_predictions, unproject
from flow3r_jax.eval.synthetic import load_synthetic, write_synthetic_benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = dict(load_width=56, plots=1, progress=False)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_data")
    write_synthetic_benchmark(str(root / "synthetic"), sequences=2, frames=4, size=(42, 56), seed=1000)
    return str(root)


@pytest.fixture(scope="module")
def tiny_model():
    import jax

    from flow3r_jax.models.config import get_model_config
    from flow3r_jax.models.pretrained import model_from_params
    from flow3r_jax.train.state import ParamLayout

    layout = ParamLayout.of(get_model_config("tiny"))
    params = jax.jit(layout.init_fn(0))()  # one compiled init (eager init is slow on 2 cores)
    return model_from_params(layout.cfg, {tuple(k.split("/")): np.asarray(v) for k, v in params.items()})


def _sim3(poses, s, R, t):
    out = poses.copy()
    out[:, :3, :3] = R @ poses[:, :3, :3]
    out[:, :3, 3] = s * poses[:, :3, 3] @ R.T + t
    return out


def test_predictions_on_disk_scored_against_known_answers(data_root, tmp_path):
    """Ground truth under a similarity transform, frames in shuffled order, depth x3: ATE and
    RPE 0, every pair within 5 degrees, AbsRel 0 after alignment. Noisy poses: the JSON's ATE
    is the Umeyama RMSE computed here in NumPy."""
    seqs = load_synthetic(os.path.join(data_root, "synthetic"))
    pred_root = tmp_path / "pred" / "synthetic"
    rng = np.random.default_rng(0)
    th = 0.4
    R = np.array([[np.cos(th), 0, np.sin(th)], [0, 1, 0], [-np.sin(th), 0, np.cos(th)]])
    noisy = {}
    for k, seq in enumerate(seqs):
        d = pred_root / seq.name
        d.mkdir(parents=True)
        with open(os.path.join(os.path.dirname(seq.image_paths[0]), "..", "cameras.json")) as f:
            cams = json.load(f)
        poses = _sim3(seq.poses, 2.5, R, np.array([1.0, -2.0, 0.5]))
        if k == 1:  # noisy centres
            poses[:, :3, 3] += rng.normal(0, 0.05, (len(poses), 3))
            noisy[seq.name] = (poses.copy(), seq.poses.copy())
        order = rng.permutation(len(poses))
        cams["frames"] = [dict(cams["frames"][i], camera_to_world=poses[i].tolist()) for i in order]
        with open(d / "cameras.json", "w") as f:
            json.dump(cams, f)
        names = [os.path.basename(p) for p in seq.image_paths]
        np.savez(d / "depth.npz", depth=3.0 * seq.load_depths()[order], names=np.asarray(names)[order])
    res = evaluate_predictions(str(tmp_path / "pred"), ["synthetic"], data_root, str(tmp_path / "out"), "gt_sim3", EvalOptions(progress=False, tasks=("video_depth", "pose_trajectory", "pose_angular")))
    s = res["synthetic"]
    assert s["video_depth"]["abs_rel"] < 1e-4 and s["video_depth"]["delta<1.25"] == pytest.approx(1.0)
    assert s["pose_angular"]["rra@5"] == pytest.approx(100.0)
    with open(tmp_path / "out" / "gt_sim3" / "synthetic.json") as f:
        rep = json.load(f)
    per = rep["tasks"]["pose_trajectory"]["sequences"]
    clean = [n for n in per if n not in noisy][0]
    assert per[clean]["ate"] < 1e-5 and per[clean]["rpe_rot"] < 1e-3
    (name, (est, gt)), = noisy.items()
    # Umeyama Sim(3) of the estimated centres onto the ground truth, then the RMSE (NumPy).
    x, y = est[:, :3, 3], gt[:, :3, 3]
    mx, my = x.mean(0), y.mean(0)
    U, D, Vt = np.linalg.svd((y - my).T @ (x - mx) / len(x))
    S = np.diag([1, 1, np.sign(np.linalg.det(U @ Vt))])
    Ra = U @ S @ Vt
    sa = np.trace(np.diag(D) @ S) / np.mean(np.sum((x - mx) ** 2, 1))
    ate = np.sqrt(np.mean(np.sum((sa * (x - mx) @ Ra.T + my - y) ** 2, 1)))
    assert per[name]["ate"] == pytest.approx(ate, rel=1e-4)
    table = open(tmp_path / "out" / "results.md").read()
    assert "gt_sim3" in table and "synthetic ATE" in table
    assert open(tmp_path / "out" / "gt_sim3" / "synthetic" / "frames" / f"{clean}.txt").read().split() == [f"frame_{i:04d}" for i in range(4)]


def test_unproject_reprojects_through_the_intrinsics(data_root):
    seq = load_synthetic(os.path.join(data_root, "synthetic"))[0]
    depth = seq.load_depths()
    pts = unproject(depth, seq.intrinsics, seq.poses)
    k, v, u = 1, 17, 30
    w2c = np.linalg.inv(seq.poses[k])
    pc = w2c[:3, :3] @ pts[k, v, u] + w2c[:3, 3]
    px = seq.intrinsics[k] @ pc
    assert px[:2] / px[2] == pytest.approx([u, v], abs=1e-6) and pc[2] == pytest.approx(depth[k, v, u], rel=1e-6)


def test_pi3_resize_matches_pil_and_torch_antialiased_bilinear():
    """π³'s load_and_resize14: Lanczos to width 512 (height rounded to 14), then an antialiased
    bilinear resize to multiples of 14 (torch F.interpolate as the reference)."""
    torch = pytest.importorskip("torch")
    from PIL import Image

    from flow3r_jax.eval.predict import pi3_input_size, pi3_resize

    img = np.random.default_rng(1).integers(0, 256, (2, 60, 90, 3), dtype=np.uint8)
    (h1, w1), (h2, w2) = pi3_input_size(60, 90, 64)
    assert (h1, w1, h2, w2) == (42, 64, 42, 56)
    ours = pi3_resize(img, 64)
    lz = np.stack([np.asarray(Image.fromarray(i).resize((64, 42), Image.Resampling.LANCZOS), np.float32) / 255 for i in img])
    ref = torch.nn.functional.interpolate(torch.from_numpy(lz).permute(0, 3, 1, 2), (42, 56), mode="bilinear", align_corners=False, antialias=True).permute(0, 2, 3, 1).numpy()
    assert ours.shape == (2, 42, 56, 3)
    np.testing.assert_allclose(ours, ref, atol=2e-5)


@pytest.mark.slow
def test_launch_eval_on_a_converted_tiny_model_two_devices_equal_one(data_root, tiny_model, tmp_path):
    from safetensors.numpy import save_file

    from flow3r_jax.convert.official import export_state_dict
    from flow3r_jax.models.pretrained import abstract_params

    params = {tuple(k.split("/")): np.asarray(v) for k, v in _params(tiny_model).items()}
    shapes = abstract_params(tiny_model.cfg)[2]
    ckpt = tmp_path / "flow3r_tiny.safetensors"
    save_file(dict(export_state_dict({k: params[k] for k in shapes}, shapes)), str(ckpt))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "launch.eval", f"--checkpoint={ckpt}", "--size=tiny", "--benchmarks=synthetic", f"--data_root={data_root}", f"--out={out}", "--load_width=56", "--cpu_devices=2", "--plots=1"]
    env = {**os.environ, "PYTHONPATH": ROOT}
    env.pop("XLA_FLAGS", None)
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.load(open(out / "flow3r_tiny" / "synthetic.json"))
    assert set(rep["tasks"]) == {"video_depth", "mono_depth", "pose_trajectory", "pose_angular", "pointmap", "flow"}
    for task, t in rep["tasks"].items():
        assert all(np.isfinite(v) for v in t["summary"].values() if isinstance(v, float)), (task, t["summary"])
    assert rep["tasks"]["mono_depth"]["summary"]["valid_pixels"] == 2 * 4 * 42 * 56
    assert rep["tasks"]["flow"]["summary"]["head_pairs"] == 2 * 6
    plots = os.listdir(out / "flow3r_tiny" / "synthetic" / "plots")
    assert any(p.startswith("pose_trajectory") for p in plots) and any(p.startswith("video_depth") for p in plots) and any(p.startswith("flow") for p in plots)
    assert "flow3r_tiny" in (out / "results.md").read_text() and "flow3r_tiny" in r.stdout
    # The same checkpoint on one device, in this process: the same per-sequence numbers.
    from flow3r_jax.models.pretrained import load_pretrained

    one = evaluate(load_pretrained(str(ckpt), size="tiny"), ["synthetic"], data_root, str(tmp_path / "one"), "one", EvalOptions(tasks=("pose_trajectory", "video_depth"), **SMALL))
    for task in ("pose_trajectory", "video_depth"):
        for k, v in one["synthetic"][task].items():
            assert v == pytest.approx(rep["tasks"][task]["summary"][k], rel=1e-3, abs=1e-5), (task, k)


def _params(model) -> dict:
    from flow3r_jax.train.state import ParamLayout

    return {k: np.asarray(v) for k, v in ParamLayout.of(model.cfg).params_of(model).items()}


def _write_step(workdir, step, model):
    """A checkpoint in the trainer's layout (Orbax v1, state + Grain iterator), as loop.py saves."""
    import grain

    from flow3r_jax.train.checkpoint import Checkpoints

    params = _params(model)
    ck = Checkpoints(os.path.join(workdir, "checkpoints"), every=1, keep=5)
    it = iter(grain.MapDataset.range(4).to_iter_dataset())
    ck.save(step, {"params": params, "frozen": {}}, it, force=True)
    ck.wait()
    ck.close()


def test_follow_evaluates_each_new_checkpoint_once(data_root, tiny_model, tmp_path):
    import dataclasses

    from flow3r_jax.eval.follow import committed_steps, follow
    from flow3r_jax.train.checkpoint import read_params

    wd = tmp_path / "run"
    wd.mkdir()
    (wd / "config.json").write_text(json.dumps({"train": {"steps": 2}}))
    (wd / "model_config.json").write_text(json.dumps(dataclasses.asdict(tiny_model.cfg)))
    _write_step(str(wd), 1, tiny_model)
    assert committed_steps(str(wd)) == [1] and len(read_params(str(wd))) > 0
    opts = EvalOptions(tasks=("pose_trajectory",), **SMALL)
    out = str(tmp_path / "out")
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("steps", follow(str(wd), ["synthetic"], data_root, out, opts, poll_seconds=0.2, idle_timeout=300)))
    t.start()
    deadline = time.monotonic() + 300
    while not os.path.exists(os.path.join(out, "step_00000001", "synthetic.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    _write_step(str(wd), 2, tiny_model)  # written while the follower runs
    t.join(timeout=300)
    assert result.get("steps") == [1, 2]
    assert sorted(os.listdir(out)) == ["results.md", "step_00000001", "step_00000002"]
    # A restarted follower finds both done and evaluates nothing.
    assert follow(str(wd), ["synthetic"], data_root, out, opts, poll_seconds=0.2, idle_timeout=5) == []
    # The trainer's eval hook: the same numbers, keyed benchmark/task/metric.
    from configs.flow3r import get_config
    from flow3r_jax.eval.follow import benchmark_metrics

    c = get_config("size=tiny")
    c.eval.benchmarks, c.eval.data_root, c.eval.tasks, c.eval.load_width, c.eval.out_dir = "synthetic", data_root, "pose_trajectory", 56, str(tmp_path / "hook")
    got = benchmark_metrics(tiny_model, c, 2)
    want = json.load(open(os.path.join(out, "step_00000002", "synthetic.json")))["tasks"]["pose_trajectory"]["summary"]
    assert got["synthetic/pose_trajectory/ate"] == pytest.approx(want["ate"], rel=1e-6)


def test_errors_name_the_problem(data_root, tiny_model, tmp_path):
    from flow3r_jax.eval.benchmarks import BenchmarkError
    from flow3r_jax.eval.runner import check_benchmarks

    with pytest.raises(BenchmarkError, match="unknown benchmark 'nope'"):
        check_benchmarks(["nope"], data_root, EvalOptions())
    with pytest.raises(BenchmarkError, match="no sequence folders with a cameras.json"):
        check_benchmarks(["synthetic"], str(tmp_path), EvalOptions())
    # Predictions that miss frames of a sequence.
    seq = load_synthetic(os.path.join(data_root, "synthetic"))[0]
    d = tmp_path / "pred" / "synthetic" / seq.name
    d.mkdir(parents=True)
    src = os.path.join(os.path.dirname(seq.image_paths[0]), "..", "cameras.json")
    cams = json.load(open(src))
    cams["frames"] = cams["frames"][:2]
    json.dump(cams, open(d / "cameras.json", "w"))
    with pytest.raises(BenchmarkError, match="no pose for 2 of the sequence's 4 frames"):
        evaluate_predictions(str(tmp_path / "pred"), ["synthetic"], data_root, str(tmp_path / "o"), "x", EvalOptions(tasks=("pose_trajectory",), max_sequences=1, progress=False))
    # A checkpoint of another model size, through launch.eval.
    from safetensors.numpy import save_file

    save_file({"encoder.cls_token": np.zeros((1, 1, 8), np.float32)}, str(tmp_path / "bad.safetensors"))
    env = {**os.environ, "PYTHONPATH": ROOT}
    r = subprocess.run([sys.executable, "-m", "launch.eval", f"--checkpoint={tmp_path / 'bad.safetensors'}", "--size=tiny", "--benchmarks=synthetic", f"--data_root={data_root}", f"--out={tmp_path / 'o2'}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "does not match model size 'tiny'" in r.stderr, r.stderr[-2000:]


def test_reconstruct_frames_from_a_saved_frame_list(data_root, tmp_path):
    """The frame lists launch.eval saves select the same frames in `reconstruct`."""
    from flow3r_jax.data.frames import read_image
    from flow3r_jax.reconstruct import ReconstructionError, read_input_frames

    seq = load_synthetic(os.path.join(data_root, "synthetic"))[0]
    folder = os.path.dirname(seq.image_paths[0])
    lst = tmp_path / "frames.txt"
    lst.write_text("frame_0003\n# a comment\nframe_0000\nframe_0002.png\n")
    images, names = read_input_frames(folder, frames_from=str(lst))
    assert names == ["frame_0003.png", "frame_0000.png", "frame_0002.png"]
    np.testing.assert_array_equal(images[0], read_image(seq.image_paths[3]))
    lst.write_text('["frame_0001", "frame_0009"]')
    with pytest.raises(ReconstructionError, match=r"1 listed frame\(s\) not in .*frame_0009"):
        read_input_frames(folder, frames_from=str(lst))


def test_predictions_on_a_cropped_grid_are_scored_where_they_cover_the_image(data_root, tmp_path):
    """`reconstruct`'s depth.npz on a grid of another aspect (one scale and a centred crop, with
    its scale and offset): the depth goes back to the image through that mapping and only the
    pixels the grid covers are scored. Ground-truth depth on such a grid scores as well as on
    the image's own grid; read as a plain resize (the offset ignored), it would not."""
    from flow3r_jax.data.frames import resize_to_grid, uniform_grid

    seqs = load_synthetic(os.path.join(data_root, "synthetic"))
    opts = EvalOptions(progress=False, tasks=("video_depth",))
    scores = {}
    for kind in ("grid", "plain"):
        for seq in seqs:
            d = tmp_path / kind / "synthetic" / seq.name
            d.mkdir(parents=True)
            gt = seq.load_depths()
            H, W = gt.shape[1:3]
            g = uniform_grid(H, W, ((3 * H) // 8, W // 2))  # a wider aspect: rows cropped
            assert g.offset[1] > 1 and g.offset[0] == 0
            with open(os.path.join(os.path.dirname(seq.image_paths[0]), "..", "cameras.json")) as f:
                (d / "cameras.json").write_text(f.read())
            names = np.asarray([os.path.basename(p) for p in seq.image_paths])
            extra = dict(scale=np.float64(g.scale), offset=np.asarray(g.offset), input_size=np.asarray([H, W])) if kind == "grid" else {}
            np.savez(d / "depth.npz", depth=resize_to_grid(3.0 * gt, g), names=names, **extra)
        scores[kind] = evaluate_predictions(str(tmp_path / kind), ["synthetic"], data_root, str(tmp_path / ("out_" + kind)), kind, opts)["synthetic"]["video_depth"]
    assert scores["grid"]["abs_rel"] < 0.05 and scores["grid"]["delta<1.25"] > 0.95
    assert scores["plain"]["abs_rel"] > 2 * scores["grid"]["abs_rel"]
