"""Fixtures of the flow-dataset pipeline tests: tiny synthetic clips, their videos, bad inputs.

One SceneConfig for all of them, so the synthetic renderer compiles once per test process."""

import os
import pathlib

import cv2
import numpy as np
import pytest

from data_pipelines.synthetic import SceneConfig, generate_clip
from data_pipelines.synthetic.video import write_video

PIPE_CFG = SceneConfig(height=96, width=128, frames=8, offsets=(1, 2, 4), flow_px=(3.0, 6.0), preset="random")
PIPE_SEEDS = (0, 1, 2, 3)


@pytest.fixture(scope="session")
def pipe_clips():
    """Synthetic clips (generate_clip dicts) of PIPE_CFG for PIPE_SEEDS."""
    return [generate_clip(PIPE_CFG, s) for s in PIPE_SEEDS]


@pytest.fixture(scope="session")
def pipe_videos(pipe_clips, tmp_path_factory):
    """A directory with scene_000N/video.mp4 for each clip, and the clips; returns (dir, paths)."""
    root = tmp_path_factory.mktemp("videos")
    paths = []
    for n, clip in enumerate(pipe_clips):
        (root / f"scene_{n:04d}").mkdir()
        path = root / f"scene_{n:04d}" / "video.mp4"
        write_video(path, clip["images"], fps=30)
        paths.append(str(path))
    return root, paths


def write_folder(folder: pathlib.Path, frames) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{k:05d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture(scope="session")
def bad_inputs(pipe_clips, pipe_videos, tmp_path_factory):
    """{case: path} of inputs that must fail, next to good ones built from the same clip:
    corrupt video bytes, truncated mp4, too few frames, unreadable image, mixed frame sizes."""
    root = tmp_path_factory.mktemp("bad")
    clip = pipe_clips[0]["images"]
    good = pathlib.Path(pipe_videos[1][0])
    (root / "corrupt.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    data = good.read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    write_video(root / "short.mp4", clip[:3], fps=30)
    bad_img = write_folder(root / "unreadable_image", clip)
    (bad_img / "00007.png").write_bytes(b"not a png at all")  # the last image: every sampling opens it
    mixed = write_folder(root / "mixed_sizes", clip)
    cv2.imwrite(str(mixed / "00007.png"), np.zeros((40, 50, 3), np.uint8))  # the last image, as above
    good_folder = write_folder(root / "good_folder", clip)
    return {
        "corrupt": str(root / "corrupt.mp4"),
        "truncated": str(root / "truncated.mp4"),
        "short": str(root / "short.mp4"),
        "unreadable_image": str(bad_img),
        "mixed_sizes": str(mixed),
        "good_folder": str(good_folder),
        "root": str(root),
    }


@pytest.fixture
def no_tensorflow():
    """Asserts TensorFlow is not importable in this process (the TFDS path must not need it)."""
    with pytest.raises(ImportError):
        import tensorflow  # noqa: F401
    yield
    import sys

    assert "tensorflow" not in sys.modules


def files_of(directory) -> dict[str, bytes]:
    """{name: bytes} of the dataset files of a directory (shards, manifest, TFDS metadata)."""
    out = {}
    for name in sorted(os.listdir(directory)):
        p = os.path.join(directory, name)
        if os.path.isfile(p):
            with open(p, "rb") as f:
                out[name] = f.read()
    return out
