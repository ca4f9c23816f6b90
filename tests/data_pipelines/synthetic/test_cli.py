"""The command line end to end (a real `python -m` process) and MP4 writing / reading."""

import json
import pathlib
import subprocess
import sys

import cv2
import numpy as np
import pytest

from data_pipelines.synthetic import SceneConfig
from data_pipelines.synthetic.__main__ import main
from data_pipelines.synthetic.video import read_video, write_video
from data_pipelines.synthetic.writer import GT_KEYS, load_gt

ROOT = pathlib.Path(__file__).resolve().parents[3]


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


@pytest.mark.parametrize("size", [(48, 64), (31, 45)])
def test_video_round_trip(tmp_path, size):
    H, W = size
    # Smooth frames (MPEG-4 is lossy; noise would not survive) that differ from frame to frame.
    y, x = np.mgrid[0:H, 0:W]
    frames = np.stack([np.stack([(x * 4 + 9 * k) % 256, (y * 5) % 256, np.full_like(x, 20 * k)], -1) for k in range(7)]).astype(np.uint8)
    h, w = write_video(tmp_path / "v.mp4", frames, fps=30)
    assert (h, w) == (H + H % 2, W + W % 2)  # odd sizes padded, not cropped
    back = read_video(tmp_path / "v.mp4")
    assert back.shape == (7, h, w, 3)
    assert _psnr(back[:, :H, :W], frames) > 25


def test_write_video_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "v.mp4", np.zeros((2, 8, 8, 3), np.float32), fps=30)
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "v.mp4", np.zeros((2, 8, 8, 3), np.uint8), fps=0)


@pytest.mark.slow
def test_cli_writes_images_video_ground_truth_and_readme(tmp_path):
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "data_pipelines.synthetic", "--out", str(out), "--scenes", "2", "--frames", "5",
           "--size", "30x41", "--dynamic", "--seed", "7", "--offsets", "1,2"]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "wrote 2 scene(s)" in result.stderr
    readme = (out / "README.md").read_text()
    assert "camera-to-world" in readme and "(0.5, 0.5)" in readme and "covisible" in readme
    K, H, W = 5, 30, 41
    cfg = SceneConfig(height=H, width=W, frames=K, dynamic=True, preset="mixed", offsets=(1, 2))
    for n, seed in enumerate((7, 8)):
        scene = out / f"scene_{n:04d}"
        images = sorted((scene / "images").glob("*.png"))
        assert [p.name for p in images] == [f"{k:05d}.png" for k in range(K)]
        video = read_video(scene / "video.mp4")
        assert video.shape == (K, H, W + 1, 3)  # the odd width is padded by one column
        gt = load_gt(scene)
        assert set(gt) == set(GT_KEYS)
        P = len(cfg.pairs())
        assert gt["depth"].shape == (K, H, W) and gt["depth"].dtype == np.float32
        assert gt["flow"].shape == (P, H, W, 2) and gt["covisible"].shape == (P, H, W)
        assert gt["poses"].shape == (K, 4, 4) and gt["intrinsics"].shape == (K, 3, 3)
        assert gt["pairs"].shape == (P, 2) and gt["dynamic"].shape == (K, H, W)
        assert int(gt["seed"]) == seed
        assert SceneConfig.from_json(str(gt["config"])) == cfg
        assert json.loads((scene / "scene.json").read_text()) == json.loads(str(gt["scene"]))
        # The video holds the PNG frames (up to MPEG-4 loss).
        png = np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in images])
        assert _psnr(video[:, :H, :W], png) > 20


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--frames", "1"]) == 2
    assert "SceneConfig.frames" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "--scenes", "0"]) == 2
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--size", "big"])
    assert "--size" in capsys.readouterr().err
