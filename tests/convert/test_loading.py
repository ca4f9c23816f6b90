"""Loading a checkpoint into the model makes no whole-model copy (issue 26): on the tiny model,
from a converted directory, an official .safetensors and an official torch .bin, the host memory
the load allocates (tracemalloc, with the parameter buffers made visible to it) peaks at about the
model's bytes, every parameter on the (CPU) device is the very buffer the file was read into,
nothing of the file stays mapped, and the values equal the file's exactly."""

import tracemalloc

import jax
import numpy as np
import pytest
from flax import nnx

from flow3r_jax.convert.official import BUFFERS, export_state_dict
from flow3r_jax.convert.readers import SafetensorsFile, file_order, open_checkpoint, read_into
from flow3r_jax.models import get_model_config
from flow3r_jax.models import pretrained
from flow3r_jax.models.pretrained import _write_safetensors, abstract_params, load_pretrained, save_pretrained


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = get_model_config("tiny")
    shapes = abstract_params(cfg)[2]
    rng = np.random.default_rng(7)
    params = {p: rng.standard_normal(s).astype(np.float32) for p, s in shapes.items()}
    official = dict(export_state_dict(params, shapes))
    official.update(BUFFERS)
    d = tmp_path_factory.mktemp("ckpts")
    model = pretrained.model_from_params(cfg, params)
    save_pretrained(model, str(d / "converted"))
    _write_safetensors(str(d / "flow3r.safetensors"), official)
    return cfg, params, official, d


def _paths(tiny):
    cfg, params, official, d = tiny
    out = [(str(d / "converted"), None), (str(d / "flow3r.safetensors"), "tiny")]
    try:
        import torch
    except ImportError:
        return out
    if not (d / "flow3r.bin").exists():
        torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in official.items()}, d / "flow3r.bin")
    return out + [(str(d / "flow3r.bin"), "tiny")]


def _traced_load(monkeypatch, path, size):
    """load_pretrained with the parameter buffers allocated by NumPy (so tracemalloc counts them):
    (model, traced peak bytes, addresses of the buffers the load allocated)."""
    allocated = set()

    def traced_empty(shape, dtype=np.float32, align=64):
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        raw = np.empty(nbytes + align, np.uint8)
        start = -raw.ctypes.data % align
        a = raw[start : start + nbytes].view(dtype).reshape(shape)
        allocated.add(a.ctypes.data)
        return a

    monkeypatch.setattr(pretrained, "_aligned_empty", traced_empty)
    load_pretrained(path, size or "large")  # compile / trace once, outside the measurement
    allocated.clear()
    tracemalloc.start()
    try:
        model = load_pretrained(path, size or "large")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return model, peak, allocated


@pytest.mark.parametrize("which", ["converted", "safetensors", "bin"])
def test_load_makes_no_whole_model_copy_and_is_exact(tiny, monkeypatch, which):
    cfg, params, official, d = tiny
    paths = dict(zip(["converted", "safetensors", "bin"], _paths(tiny)))
    if which not in paths:
        pytest.skip("torch is not installed")
    path, size = paths[which]
    model, peak, allocated = _traced_load(monkeypatch, path, size)
    flat = {tuple(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    model_bytes = sum(v.nbytes for v in params.values())
    largest = max(v.nbytes for v in params.values())
    # The parameters themselves, one scratch tensor per reading thread, and small change; a
    # second copy of the model (a stacked copy, a converted dict beside the parameters) is not.
    assert peak <= model_bytes + 2 * pretrained.READ_THREADS * largest + (1 << 20), (peak, model_bytes)
    if jax.default_backend() == "cpu":
        # No device copy either: each parameter is the buffer its values were read into.
        assert all(v.unsafe_buffer_pointer() in allocated for v in flat.values())
    assert set(flat) == set(params)
    for p, v in params.items():
        np.testing.assert_array_equal(np.asarray(flat[p]), v, err_msg="/".join(p))


def test_readers_read_into_in_file_order_and_drop_their_pages(tiny):
    """read_into equals the mapping's values; file_order is the data's order in the file; after
    read_into nothing of the file is left mapped in the process."""
    _, _, official, d = tiny
    for path in [p for p, _ in _paths(tiny)][1:]:
        sd = open_checkpoint(path)
        order = file_order(sd)
        assert sorted(order) == sorted(sd.keys())
        if isinstance(sd, SafetensorsFile):
            offsets = [sd.offset(k) for k in order]
            assert offsets == sorted(offsets)
        for key in order:
            out = np.empty(official[key].shape, np.float32)
            read_into(sd, key, out)
            np.testing.assert_array_equal(out, official[key], err_msg=key)
        assert _resident_bytes_of(path) <= 2 * 4096 * len(order)  # at most the partial pages at tensor edges


def _resident_bytes_of(path):
    """Resident bytes of this process's mappings of `path` (/proc/self/smaps; 0 where absent)."""
    import os

    real, total, inside = os.path.realpath(path), 0, False
    try:
        with open("/proc/self/smaps") as f:
            for line in f:
                head = line.split()
                if head and "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
                    inside = len(head) >= 6 and head[5] == real
                elif inside and head and head[0] == "Rss:":
                    total += int(head[1]) * 1024
    except OSError:
        return 0
    return total
