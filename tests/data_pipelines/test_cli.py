"""The dataset command lines (`make_dataset`, `beam_flow`, `synthetic`): configuration errors
refused before any input is read, exit statuses, --retry_failed, an output directory that already
holds a dataset, progress lines for batch jobs, the project's flag style."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from data_pipelines.dataset_writer import DatasetWriter
from data_pipelines.inputs import discover_inputs
from data_pipelines.make_dataset import main, parse_args, pipeline_config_from_args
from data_pipelines.process import ProcessResult
from data_pipelines.shards import open_dataset
from flow3r_jax.data.frames import list_images
from flow3r_jax.data.records import decode_jpeg
from tests.data_pipelines.conftest import files_of, write_folder

ROOT = pathlib.Path(__file__).resolve().parents[2]
FAST = ["--frames", "4", "--offsets", "1", "--max_pixels", "3000"]  # small clips: seconds per run


def _cli(module, args, env_path=None, **kw):
    """Runs `python -m module args` from the repository root; returns the CompletedProcess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([str(env_path)] if env_path else []) + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, **kw)


def _manifest(out) -> dict:
    return json.loads((pathlib.Path(out) / "manifest.json").read_text())


# -- 1. configuration errors ------------------------------------------------------------------

BAD_VIDEO_OPTIONS = [
    (["--teacher", "no_such_teacher"], ["--teacher", "unknown flow teacher 'no_such_teacher'", "registered: [", "'dis'", "--teacher_module"]),
    (["--teacher", "mine", "--teacher_module", "no_such_module_xyz"], ["--teacher_module", "cannot import 'no_such_module_xyz'"]),
    (["--teacher_arg", "preset=slow"], ["--teacher_arg", "unknown preset 'slow'", "ultrafast"]),
    (["--teacher_arg", "bogus=1"], ["--teacher_arg", "bogus", "it takes ['preset']"]),
    (["--num_shards", "0"], ["--num_shards must be an integer >= 1, got 0"]),
    (["--inputs_per_shard", "0"], ["--inputs_per_shard must be an integer >= 1, got 0"]),
    (["--workers", "0"], ["--workers must be an integer >= 1, got 0"]),
    (["--frames", "-3"], ["--frames must be an integer >= 2, got -3"]),
    (["--frames", "0"], ["--frames must be an integer >= 2, got 0"]),
    (["--frames", "4", "--offsets", "4,8"], ["--offsets", ">= --frames 4", "1..3"]),
    (["--offsets", "0,1"], ["--offsets must be positive integers"]),
    (["--jpeg_quality", "0"], ["--jpeg_quality must be an integer in 1..100, got 0"]),
    (["--jpeg_quality", "101"], ["--jpeg_quality must be an integer in 1..100, got 101"]),
    (["--flow_level", "23"], ["--flow_level must be an integer in 1..22, got 23"]),
    (["--max_pixels", "0"], ["--max_pixels must be an integer >= 1, got 0"]),
    (["--max_seconds", "0"], ["--max_seconds must be a number > 0"]),
    (["--teacher_batch", "0"], ["--teacher_batch must be an integer >= 1, got 0"]),
    (["--track_stride", "0"], ["--track_stride must be an integer >= 1, got 0"]),
    (["--progress_every", "-1"], ["--progress_every must be a number > 0"]),
    (["--name", "Not-Snake"], ["--name", "snake_case"]),
]


@pytest.mark.parametrize("bad, expect", BAD_VIDEO_OPTIONS, ids=[" ".join(b) for b, _ in BAD_VIDEO_OPTIONS])
def test_configuration_errors_are_refused_before_any_input(bad, expect, tmp_path, capsys):
    """Exit 2 naming the option and its range; the inputs (here: a path that does not exist, which
    would be an error of its own) are not looked at, and nothing is written."""
    out = tmp_path / "out"
    assert main(["--inputs", str(tmp_path / "missing" / "*.mp4"), "--output_dir", str(out), *bad]) == 2
    err = capsys.readouterr().err
    for text in expect:
        assert text in err, err
    assert "matches no input" not in err and "does not exist" not in err
    assert not out.exists()


BAD_SYNTHETIC_OPTIONS = [
    (["--synthetic", "0"], "--synthetic must be an integer >= 1, got 0"),
    (["--synthetic", "1", "--seed", "-1"], "--seed must be an integer >= 0, got -1"),
    (["--synthetic", "1", "--size", "0x64"], "--size (height) must be an integer >= 1, got 0"),
    (["--synthetic", "1", "--jpeg_quality", "0"], "--jpeg_quality must be an integer in 1..100, got 0"),
    (["--synthetic", "1", "--frames", "1"], "--frames must be an integer >= 2, got 1"),
    (["--synthetic", "1", "--preset", "spiral"], "unknown preset 'spiral'"),
]


@pytest.mark.parametrize("bad, expect", BAD_SYNTHETIC_OPTIONS, ids=[" ".join(b) for b, _ in BAD_SYNTHETIC_OPTIONS])
def test_synthetic_configuration_errors(bad, expect, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([*bad, "--output_dir", str(out)]) == 2
    assert expect in capsys.readouterr().err
    assert not out.exists()


def test_configuration_error_through_the_module_entry_point(pipe_videos, tmp_path):
    """`python -m data_pipelines.make_dataset` with real inputs and an unknown teacher: exit 2, no
    failure recorded; the corrected command then writes every input."""
    out = tmp_path / "out"
    args = ["--inputs", str(pipe_videos[0] / "*" / "video.mp4"), "--output_dir", str(out), *FAST]
    proc = _cli("data_pipelines.make_dataset", [*args, "--teacher", "disk"])
    assert proc.returncode == 2, proc.stderr
    assert "error: --teacher: unknown flow teacher 'disk'" in proc.stderr
    assert not out.exists()
    proc = _cli("data_pipelines.make_dataset", args)
    assert proc.returncode == 0, proc.stderr
    assert _manifest(out)["counts"] == {"inputs": 4, "written": 4, "failed": 0, "failed_by_stage": {}}


def test_a_teacher_that_cannot_be_built_stops_the_run_and_records_nothing(pipe_videos, tmp_path, monkeypatch, capsys):
    """A teacher whose arguments pass the signature check but whose construction fails (missing
    weights) is a configuration error: exit 2 and no input marked failed; fixing the argument is
    then a plain rerun into the same directory (nothing was done under the old settings)."""
    (tmp_path / "weights_teacher_for_cli_test.py").write_text(
        "import os\n"
        "from flow3r_jax.correspondence.teacher import DISTeacher, register_teacher\n"
        "class Weighted(DISTeacher):\n"
        "    name = 'weighted-dis'\n"
        "    def __init__(self, weights):\n"
        "        if not os.path.exists(weights):\n"
        "            raise FileNotFoundError(f'no weights file {weights}')\n"
        "        super().__init__('ultrafast')\n"
        "register_teacher('weighted', Weighted)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    args = ["--inputs", str(pipe_videos[0] / "*" / "video.mp4"), "--output_dir", str(out), *FAST,
            "--teacher", "weighted", "--teacher_module", "weights_teacher_for_cli_test"]
    assert main([*args, "--teacher_arg", f"weights={tmp_path / 'missing.pt'}"]) == 2
    err = capsys.readouterr().err
    assert "the teacher cannot be built" in err and "no weights file" in err
    assert not (out / "manifest.json").exists()
    assert not list((out / "_work").glob("staging/*/*.json"))  # no input recorded as failed
    (tmp_path / "weights.pt").write_bytes(b"w")
    assert main([*args, "--teacher_arg", f"weights={tmp_path / 'weights.pt'}"]) == 0
    m = _manifest(out)
    assert m["counts"]["written"] == 4 and m["teacher"]["name"] == "weighted-dis"


# -- 2. every input failed; --retry_failed ----------------------------------------------------


def test_a_run_where_every_input_failed_exits_1_with_the_reasons(bad_inputs, tmp_path):
    out = tmp_path / "out"
    args = ["--inputs", bad_inputs["corrupt"], bad_inputs["short"], "--output_dir", str(out), *FAST]
    proc = _cli("data_pipelines.make_dataset", args)
    assert proc.returncode == 1, proc.stderr
    assert "error: every input failed (2 of 2)" in proc.stderr
    assert re.search(r"2 x \[read\] FrameReadError, e\.g\. ", proc.stderr), proc.stderr
    assert "--retry_failed" in proc.stderr
    assert _manifest(out)["counts"]["failed"] == 2  # the manifest still records them
    # A rerun skips them (and says so), and fails again.
    proc = _cli("data_pipelines.make_dataset", args)
    assert proc.returncode == 1
    assert "2 of 2 inputs were done by an earlier run and are skipped; 2 of them failed and stay failed (--retry_failed retries them)" in proc.stderr


def _corrupt_folder(folder: pathlib.Path, frames) -> None:
    write_folder(folder, frames)
    (folder / f"{len(frames) - 1:05d}.png").write_bytes(b"not a png")  # the last image: every sampling reads it


def test_retry_failed_processes_only_the_failed_inputs_again(pipe_clips, pipe_videos, tmp_path, capsys):
    """One shard with two good videos and a folder with a corrupt image. After the image is
    repaired, a plain rerun keeps the failure; --retry_failed processes the folder (only it: the
    videos are broken by then and would fail if read again) and ends with the same files as a
    fresh run."""
    src = tmp_path / "in"
    for n in (0, 1):
        (src / f"scene_{n}").mkdir(parents=True)
        shutil.copy(pipe_videos[1][n], src / f"scene_{n}" / "video.mp4")
    frames = pipe_clips[2]["images"]
    _corrupt_folder(src / "folder", frames)
    out, ref = tmp_path / "out", tmp_path / "ref"
    args = ["--inputs", str(src), *FAST, "--num_shards", "1"]
    assert main([*args, "--output_dir", str(out)]) == 0
    m = _manifest(out)
    assert (m["counts"]["written"], m["counts"]["failed"]) == (2, 1) and m["failures"][0]["key"] == "folder"
    write_folder(src / "folder", frames)  # repaired
    capsys.readouterr()
    assert main([*args, "--output_dir", str(out)]) == 0
    assert "1 of them failed and stay failed (--retry_failed retries them)" in capsys.readouterr().err
    assert _manifest(out)["counts"]["failed"] == 1
    assert main([*args, "--output_dir", str(ref)]) == 0  # a fresh run over the repaired inputs
    for n in (0, 1):
        (src / f"scene_{n}" / "video.mp4").write_bytes(b"\0" * 1000)
    assert main([*args, "--output_dir", str(out), "--retry_failed"]) == 0
    assert _manifest(out)["counts"] == {"inputs": 3, "written": 3, "failed": 0, "failed_by_stage": {}}
    assert files_of(out) == files_of(ref)
    assert not any((out / "_work" / "staging").glob("*/*"))


def test_retry_failed_recovers_from_configuration_failures_of_an_older_version(pipe_videos, tmp_path, monkeypatch, capsys):
    """Older versions recorded a missing --teacher_module as a failure of every input (exit 0).
    Once the module exists, the same command skips them (exit 1: all failed, with the hint);
    --retry_failed processes them."""
    out = tmp_path / "out"
    argv = ["--inputs", str(pipe_videos[0] / "*" / "video.mp4"), "--output_dir", str(out), *FAST,
            "--teacher", "late", "--teacher_module", "late_teacher_for_cli_test"]
    # The directory as such an older run left it (same plan, every input failed at "teacher").
    cfg = pipeline_config_from_args(parse_args(argv))
    inputs = discover_inputs(str(pipe_videos[0] / "*" / "video.mp4"))
    writer = DatasetWriter(str(out), "flow3r_videos", "unlabeled", cfg.to_dict(), 1)
    assignment = writer.prepare(inputs)
    for inp in inputs:
        fail = {"input": inp.path, "stage": "teacher", "error_type": "ModuleNotFoundError", "message": "No module named 'late_teacher_for_cli_test'"}
        writer.stage(ProcessResult(inp.path, inp.key, failure=fail))
    writer.finalize(assignment)
    # The module now exists.
    (tmp_path / "late_teacher_for_cli_test.py").write_text(
        "from flow3r_jax.correspondence.teacher import DISTeacher, register_teacher\n"
        "register_teacher('late', lambda: DISTeacher('ultrafast'))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "every input failed (4 of 4)" in err and "4 x [teacher] ModuleNotFoundError" in err and "--retry_failed" in err
    assert main([*argv, "--retry_failed"]) == 0
    assert _manifest(out)["counts"] == {"inputs": 4, "written": 4, "failed": 0, "failed_by_stage": {}}


# -- 3. an output directory that already holds a dataset --------------------------------------


def test_a_dataset_whose_work_directory_was_deleted_is_not_mixed_into(pipe_videos, tmp_path, capsys):
    out = tmp_path / "out"
    videos = str(pipe_videos[0] / "*" / "video.mp4")
    assert main(["--inputs", videos, "--output_dir", str(out), *FAST, "--num_shards", "2", "--name", "old_clips"]) == 0
    shutil.rmtree(out / "_work")
    (out / "notes.txt").write_text("mine")
    before = files_of(out)
    capsys.readouterr()
    new = ["--inputs", pipe_videos[1][0], "--output_dir", str(out), *FAST, "--num_shards", "1"]
    assert main(new) == 2
    err = capsys.readouterr().err
    assert f"{out} already holds a dataset" in err
    assert "manifest.json of 'old_clips': 4 written, 0 failed of 4 inputs" in err and "2 shard file(s)" in err
    assert "--overwrite" in err
    assert files_of(out) == before and not (out / "_work").exists()  # untouched
    assert main([*new, "--overwrite"]) == 0
    names = sorted(os.listdir(out))
    assert names == ["_work", "dataset_info.json", "features.json", "flow3r_videos-train.array_record-00000-of-00001", "manifest.json", "notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"  # only dataset files are deleted
    assert [r.video_id for r in open_dataset(str(out))] == ["video.mp4"]


# -- 4. progress for batch jobs ---------------------------------------------------------------

SLOW_TEACHER = (
    "import time\n"
    "from flow3r_jax.correspondence.teacher import DISTeacher, register_teacher\n"
    "class Slow(DISTeacher):\n"
    "    def __call__(self, src, dst):\n"
    "        time.sleep(0.3)\n"
    "        return super().__call__(src, dst)\n"
    "register_teacher('slow', lambda: Slow('ultrafast'))\n"
)


def test_progress_is_logged_when_not_on_a_terminal(pipe_videos, tmp_path):
    (tmp_path / "slow_teacher_for_cli_test.py").write_text(SLOW_TEACHER)
    out = tmp_path / "out"
    args = ["--inputs", str(pipe_videos[0] / "*" / "video.mp4"), "--output_dir", str(out), *FAST,
            "--teacher", "slow", "--teacher_module", "slow_teacher_for_cli_test", "--progress-every", "0.25"]
    proc = _cli("data_pipelines.make_dataset", args, env_path=tmp_path)  # stderr is a pipe
    assert proc.returncode == 0, proc.stderr
    periodic = re.findall(r"^\[[\d: -]+\] flow3r_videos: (\d)/4 inputs done, (\d) failed; ([\d.]+) inputs/min, ETA (\S+)$", proc.stderr, re.M)
    assert len(periodic) >= 2, proc.stderr
    assert all(int(done) <= 4 and failed == "0" for done, failed, _, _ in periodic)
    assert any(float(rate) > 0 and eta != "unknown" for _, _, rate, eta in periodic)
    assert re.search(r"^\[[\d: -]+\] flow3r_videos: 4/4 inputs done, 0 failed; 4 processed in \S+ \([\d.]+ inputs/min\)$", proc.stderr, re.M)
    assert "input/s" not in proc.stderr and "%|" not in proc.stderr  # no progress bar in a log file


def test_a_terminal_gets_the_progress_bar_instead(pipe_videos, tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    out = tmp_path / "out"
    args = ["--inputs", pipe_videos[1][0], "--output_dir", str(out), *FAST, "--progress_every", "0.01"]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a terminal 120 columns wide
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "data_pipelines.make_dataset", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=300) == 0
    text = b"".join(chunks).decode(errors="replace")
    assert "flow3r_videos: 100%" in text and "1/1" in text  # tqdm's bar
    assert "inputs/min, ETA" not in text


# -- 5. flag style ----------------------------------------------------------------------------


def test_every_option_has_help_and_the_usage_names_the_module():
    from data_pipelines import beam_flow, make_dataset
    from data_pipelines.synthetic import __main__ as synthetic_main

    for name, mod in (("data_pipelines.make_dataset", make_dataset), ("data_pipelines.beam_flow", beam_flow), ("data_pipelines.synthetic", synthetic_main)):
        parser = mod.build_parser()
        assert parser.format_usage().startswith(f"usage: python -m {name} "), parser.format_usage()
        for action in parser._actions:
            assert action.help, f"{name}: {action.option_strings} has no help text"
            for opt in action.option_strings:
                assert opt in ("-h", "--help") or re.fullmatch(r"--[a-z0-9_]+", opt), f"{name}: {opt} is not --snake_case"


def test_kebab_case_spellings_are_accepted(pipe_videos, tmp_path):
    from data_pipelines.beam_flow import parse_args as beam_args
    from data_pipelines.synthetic.__main__ import parse_args as synthetic_args

    out = tmp_path / "out"
    assert main(["--inputs", pipe_videos[1][0], "--output-dir", str(out), "--frames", "4", "--offsets", "1", "--max-pixels", "3000",
                 "--num-shards", "1", "--jpeg-quality", "90", "--input-kind", "video"]) == 0
    m = _manifest(out)
    assert m["config"]["max_pixels"] == 3000 and m["config"]["jpeg_quality"] == 90 and len(m["shards"]) == 1
    args, rest = beam_args(["--input-glob", "x", "--output-dir", "o", "--retry-failed", "--teacher-arg", "preset=fast", "--runner", "DirectRunner", "--direct-num-workers", "2"])
    assert args.input_glob == ["x"] and args.retry_failed and args.teacher_arg == [("preset", "fast")]
    assert rest == ["--runner", "DirectRunner", "--direct-num-workers", "2"]  # Beam's options are left to Beam
    a = synthetic_args(["--out", "d", "--flow-px", "2,6", "--no-video"])
    assert a.flow_px == (2.0, 6.0) and a.no_video


# -- beam_flow shares the checks and the exit statuses ----------------------------------------


def test_beam_refuses_configuration_errors_and_exits_1_when_every_input_failed(bad_inputs, tmp_path, capsys):
    pytest.importorskip("apache_beam")
    from data_pipelines.beam_flow import main as beam_main

    runner = ["--runner", "DirectRunner", "--direct_num_workers", "1", "--direct_running_mode", "in_memory"]
    out = tmp_path / "out"
    assert beam_main(["--input_glob", str(tmp_path / "missing"), "--output_dir", str(out), "--jpeg_quality", "0", *runner]) == 2
    assert "--jpeg_quality must be an integer in 1..100, got 0" in capsys.readouterr().err
    assert beam_main(["--input_glob", str(tmp_path / "missing"), "--output_dir", str(out), "--teacher", "nope", *runner]) == 2
    assert "--teacher: unknown flow teacher 'nope'" in capsys.readouterr().err
    assert not out.exists()
    args = ["--input_glob", bad_inputs["corrupt"], "--output_dir", str(out), *FAST, *runner]
    assert beam_main(args) == 1
    assert "every input failed (1 of 1)" in capsys.readouterr().err
    assert beam_main(args) == 1
    assert "1 input(s) failed in an earlier run and stay failed (--retry_failed retries them)" in capsys.readouterr().err


# -- image folders are read by the project's reader -------------------------------------------


def test_image_folder_frames_come_in_the_readers_order(tmp_path):
    """Discovery and reading go through flow3r_jax.data.frames (list_images): the record's frames
    are the folder's images in the reader's order, the natural one (frame_2 before frame_10)."""
    # 48x64: OpenCV's DIS lowers its finest scale for good on smaller images, which would change
    # the default teacher's flows for every later clip of this test process.
    folder = tmp_path / "in" / "shot"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(1, 13):  # frame_1 .. frame_12: a texture of mean brightness 15 k + 10
        cv2.imwrite(str(folder / f"frame_{k}.png"), (15 * k + rng.integers(0, 21, (48, 64, 3))).astype(np.uint8))
    out = tmp_path / "out"
    assert main(["--inputs", str(tmp_path / "in"), "--output_dir", str(out), "--frames", "12", "--offsets", "1"]) == 0
    (rec,) = list(open_dataset(str(out)))
    assert rec.video_id == "shot"
    seen = [int(round((f.mean() - 10) / 15)) for f in decode_jpeg(rec.frames_jpeg)]
    expected = [int(re.search(r"(\d+)\.png$", p).group(1)) for p in list_images(str(folder))]
    assert seen == expected == list(range(1, 13))
