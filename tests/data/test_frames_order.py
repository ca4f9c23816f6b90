"""The shared frame reader: natural order of image folders, and subsets read without holding (or
even opening / converting) the frames that are not kept."""

import os

import cv2
import numpy as np
import pytest

from flow3r_jax.data.frames import (
    count_video_frames,
    even_indices,
    list_images,
    natural_key,
    read_frames,
    read_image_folder,
    read_video,
)


def _coded(k, h=24, w=32):
    """A frame whose colour says its number: red = 2 k (exact in PNG)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = 2 * k
    img[..., 1] = np.arange(w, dtype=np.uint8)[None, :] * 3
    return img


def test_image_folders_are_in_natural_order(tmp_path):
    numbers = [10, 2, 1, 33, 100, 9, 20]
    for k in numbers:
        cv2.imwrite(str(tmp_path / f"frame{k}.png"), cv2.cvtColor(_coded(k), cv2.COLOR_RGB2BGR))
    (tmp_path / "notes.txt").write_text("not an image")
    want = [f"frame{k}.png" for k in sorted(numbers)]  # the order a person numbers them in
    assert [os.path.basename(p) for p in list_images(str(tmp_path))] == want
    images, times, names = read_image_folder(str(tmp_path))
    assert names == want
    np.testing.assert_array_equal(images[:, 0, 0, 0], [2 * k for k in sorted(numbers)])  # the pixels follow the names
    assert read_frames(str(tmp_path))[2] == want
    # Mixed text and numbers, case and leading zeros: a total, deterministic order.
    mixed = ["b2.png", "a10.png", "A2.png", "a2.png", "a02.png", "a1.png", "img.png"]
    assert sorted(mixed, key=natural_key) == ["a1.png", "A2.png", "a02.png", "a2.png", "a10.png", "b2.png", "img.png"]


def test_even_indices():
    assert even_indices(5, 10) == [0, 1, 2, 3, 4]
    assert even_indices(300, 20) == np.round(np.linspace(0, 299, 20)).astype(int).tolist()
    assert even_indices(31, 4) == [0, 10, 20, 30]


def test_folder_subset_opens_only_the_kept_files(tmp_path):
    """Of 31 files only 0, 10, 20, 30 are images: the others are garbage, which reading them
    would report (FrameReadError: unreadable)."""
    for k in range(31):
        path = tmp_path / f"f{k}.png"
        if k % 10 == 0:
            cv2.imwrite(str(path), cv2.cvtColor(_coded(k), cv2.COLOR_RGB2BGR))
        else:
            path.write_bytes(b"garbage")
    images, times, names = read_image_folder(str(tmp_path), indices=even_indices(31, 4), fps=10.0)
    assert names == ["f0.png", "f10.png", "f20.png", "f30.png"]
    np.testing.assert_array_equal(images[:, 0, 0, 0], [0, 20, 40, 60])
    np.testing.assert_allclose(times, [0.0, 1.0, 2.0, 3.0])


class _CountingCapture:
    """cv2.VideoCapture that counts the frames it converts and hands out (retrieve / read)."""

    retrieved = 0

    def __init__(self, *args):
        self._cap = _REAL_CAPTURE(*args)

    def retrieve(self, *args):
        type(self).retrieved += 1
        return self._cap.retrieve(*args)

    def read(self, *args):
        type(self).retrieved += 1
        return self._cap.read(*args)

    def __getattr__(self, name):
        return getattr(self._cap, name)


_REAL_CAPTURE = cv2.VideoCapture


def test_video_subset_converts_only_the_kept_frames(tmp_path, monkeypatch):
    frames = np.stack([np.roll(_coded(k % 40, 48, 64), 3 * k, axis=1) for k in range(40)])
    path = str(tmp_path / "v.mp4")
    vw = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()
    everything, _ = read_video(path)  # the reference: every frame decoded in order
    assert len(everything) == 40 and count_video_frames(path) == 40
    monkeypatch.setattr(cv2, "VideoCapture", _CountingCapture)
    kept = even_indices(40, 5)
    got, times = read_video(path, indices=kept)
    assert _CountingCapture.retrieved == 5  # the 35 others were only grabbed
    np.testing.assert_array_equal(got, everything[kept])
    np.testing.assert_allclose(times, np.asarray(kept) / 10, atol=1e-6)
    _, _, names = read_frames(path, indices=[30, 3])
    assert names == ["frame_00003", "frame_00030"]


@pytest.mark.parametrize("bad", [[-1], [5]])
def test_folder_indices_out_of_range(tmp_path, bad):
    from flow3r_jax.data.frames import FrameReadError

    for k in range(3):
        cv2.imwrite(str(tmp_path / f"{k}.png"), _coded(k))
    with pytest.raises(FrameReadError, match="3 images"):
        read_image_folder(str(tmp_path), indices=bad)
