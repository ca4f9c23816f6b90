"""Checkpoint readers: our NumPy safetensors parser against the safetensors package, torch .bin
files, wrappers, and clear errors for missing / foreign / corrupt files."""

import json
import struct

import numpy as np
import pytest

from flow3r_jax.convert.readers import CheckpointFormatError, RenamedKeys, SafetensorsFile, open_checkpoint


def _tensors(rng):
    return {
        "a.weight": rng.standard_normal((3, 4)).astype(np.float32),
        "b.bias": rng.standard_normal(5).astype(np.float16),
        "c.idx": np.arange(6, dtype=np.int64).reshape(2, 3),
    }


def test_safetensors_reader_matches_the_safetensors_package(tmp_path, rng):
    st = pytest.importorskip("safetensors.numpy")
    tensors = _tensors(rng)
    path = tmp_path / "m.safetensors"
    st.save_file(tensors, str(path), metadata={"format": "np"})
    f = open_checkpoint(str(path))
    assert set(f) == set(tensors)
    for k, v in tensors.items():
        np.testing.assert_array_equal(f[k], v)
        assert f[k].dtype == v.dtype and f.shape(k) == v.shape


def test_bfloat16_safetensors(tmp_path):
    import ml_dtypes

    data = np.array([1.0, -2.5, 3.25], ml_dtypes.bfloat16)
    header = json.dumps({"x": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}).encode()
    path = tmp_path / "bf.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + data.tobytes())
    np.testing.assert_array_equal(SafetensorsFile(str(path))["x"].astype(np.float32), [1.0, -2.5, 3.25])


@pytest.mark.torch
def test_torch_bin_and_module_prefix(tmp_path, rng):
    torch = pytest.importorskip("torch")
    tensors = {k: torch.from_numpy(v) for k, v in _tensors(rng).items()}
    plain, wrapped = tmp_path / "plain.bin", tmp_path / "wrapped.pth"
    torch.save(tensors, plain)
    torch.save({"model": {"module." + k: v for k, v in tensors.items()}}, wrapped)
    for path in (plain, wrapped):
        f = open_checkpoint(str(path))
        assert set(f) == set(tensors)
        np.testing.assert_array_equal(f["a.weight"], tensors["a.weight"].numpy())
        assert f.shape("c.idx") == (2, 3)


def test_renamed_keys_view(rng):
    base = {"blocks.0.w": np.ones(2), "norm.b": np.zeros(3)}
    view = RenamedKeys(base, prefix="encoder.")
    assert set(view) == {"encoder.blocks.0.w", "encoder.norm.b"}
    assert view.shape("encoder.norm.b") == (3,)


def test_missing_directory_and_unknown_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        open_checkpoint(str(tmp_path / "nope.safetensors"))
    with pytest.raises(CheckpointFormatError, match="directory"):
        open_checkpoint(str(tmp_path))
    other = tmp_path / "weights.npz"
    other.write_bytes(b"PK")
    with pytest.raises(CheckpointFormatError, match="unknown checkpoint format"):
        open_checkpoint(str(other))


def test_corrupt_and_truncated_safetensors(tmp_path, rng):
    text = tmp_path / "text.safetensors"
    text.write_text("this is not a checkpoint at all, just text")
    with pytest.raises(CheckpointFormatError, match="text.safetensors"):
        open_checkpoint(str(text))
    st = pytest.importorskip("safetensors.numpy")
    good = tmp_path / "good.safetensors"
    st.save_file({"w": rng.standard_normal((64, 64)).astype(np.float32)}, str(good))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(CheckpointFormatError, match="truncated"):
        open_checkpoint(str(truncated))


@pytest.mark.torch
def test_corrupt_bin(tmp_path):
    pytest.importorskip("torch")
    bad = tmp_path / "flow3r.bin"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointFormatError, match="flow3r.bin"):
        open_checkpoint(str(bad))
