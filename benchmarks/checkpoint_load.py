"""Checkpoint load time and peak memory against the raw file read (SPEC section 6: <= 2x the
raw file-read time, peak memory <= 1.5x the model's bytes).

    python benchmarks/checkpoint_load.py                       # large (the official size), all formats
    python benchmarks/checkpoint_load.py --size tiny --formats dir,safetensors
    python benchmarks/checkpoint_load.py --workdir /tmp/ckpts --keep   # keep (and reuse) the files

Writes checkpoints with random weights under the real names, shapes and dtypes to `--workdir`
(a temporary directory unless given): a converted model directory (`config.json` +
`params.safetensors`), the official state dict as `.safetensors` and, when torch is installed, as
a torch.save'd `.bin`. The free space is checked first; when the size asked for does not fit,
the largest size that does is used, and the output says so.

For each file two fresh subprocesses measure, in the same page-cache state:
- read: the file's bytes read once (`readinto` a 64 MiB buffer);
- load: the whole public call `load_pretrained(file)` until every parameter is ready
  (`block_until_ready`), timed after the imports (torch too, for .bin); and the process's peak
  RSS (`ru_maxrss`) over its life.
The page cache is dropped before each measurement with `posix_fadvise(DONTNEED)` (no root
needed; it drops the clean pages of that file). Where that is not available both measurements
run with the file cached (it is read once first) and the output says "warm".
Printed: load / read time (target <= 2) and peak RSS / model parameter bytes (target <= 1.5), with
the RSS the process had before the load for reference. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

GB = 1e9
FORMATS = ("dir", "safetensors", "bin")


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="large", help="model size (tiny, small, base, large; default large, the official one)")
    p.add_argument("--workdir", default=None, help="where the checkpoints are written (default: a new temporary directory under /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the written checkpoints (and reuse them on the next run with the same --workdir)")
    p.add_argument("--formats", default=",".join(FORMATS), help="comma-separated subset of dir,safetensors,bin")
    p.add_argument("--child", choices=("read", "load"), help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    p.add_argument("--cache", choices=("cold", "warm"), default="cold", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# --- page cache -----------------------------------------------------------------------------


def _drop_cache(path: str) -> bool:
    """Drops `path`'s clean pages from the page cache; False where the OS cannot."""
    if not hasattr(os, "posix_fadvise"):
        return False
    files = [os.path.join(path, f) for f in os.listdir(path)] if os.path.isdir(path) else [path]
    try:
        for f in files:
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    except OSError:
        return False
    return True


def _read_all(path: str) -> int:
    buf = memoryview(bytearray(64 << 20))
    n = 0
    with open(path, "rb", buffering=0) as f:
        while k := f.readinto(buf):
            n += k
    return n


def _weights_file(path: str) -> str:
    return os.path.join(path, "params.safetensors") if os.path.isdir(path) else path


def _prepare_cache(path: str, cache: str) -> None:
    if cache == "cold":
        _drop_cache(path)
    else:
        _read_all(_weights_file(path))


def _rss_now() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# --- children -------------------------------------------------------------------------------


def _child_read(path: str, cache: str) -> dict:
    _prepare_cache(path, cache)
    t = time.perf_counter()
    n = _read_all(_weights_file(path))
    return {"seconds": time.perf_counter() - t, "bytes": n}


def _child_load(path: str, size: str, cache: str) -> dict:
    t = time.perf_counter()
    import jax
    from flax import nnx

    from flow3r_jax.models.pretrained import load_pretrained

    if path.endswith(".bin"):
        import torch  # noqa: F401  (the .bin reader's import, not counted in the load)
    imports = time.perf_counter() - t
    _prepare_cache(path, cache)
    rss_before = _rss_now()
    t = time.perf_counter()
    model = load_pretrained(path, size)
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    jax.block_until_ready(leaves)
    seconds = time.perf_counter() - t
    return {
        "seconds": seconds,
        "imports": imports,
        "rss_before": rss_before,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "param_bytes": int(sum(x.nbytes for x in leaves)),
        "device": str(leaves[0].devices().pop()),
    }


def _run_child(mode: str, path: str, size: str, cache: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, "--path", path, "--size", size, "--cache", cache]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{run.stdout}\n{run.stderr}")
    return json.loads(run.stdout.strip().splitlines()[-1])


# --- writing the checkpoints ----------------------------------------------------------------


def _random(shape, key: str) -> np.ndarray:
    import zlib

    rng = np.random.default_rng(zlib.crc32(key.encode()))
    return rng.random(shape, dtype=np.float32) - np.float32(0.5)


def _write_safetensors_streaming(path: str, shapes: dict[str, tuple[int, ...]], value) -> None:
    """A float32 safetensors file whose tensors `value(key, shape)` makes one at a time."""
    header, offset = {}, 0
    for key, shape in shapes.items():
        n = 4 * int(np.prod(shape))
        header[key] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for key, shape in shapes.items():
            f.write(np.ascontiguousarray(value(key, shape), np.float32).tobytes())
    os.replace(path + ".tmp", path)


def _write_checkpoints(workdir: str, size: str, formats: list[str]) -> dict[str, str]:
    from flow3r_jax.convert.official import BUFFERS, conversion_plan, official_shape
    from flow3r_jax.models import get_model_config
    from flow3r_jax.models.pretrained import abstract_params

    cfg = get_model_config(size)
    shapes = abstract_params(cfg)[2]
    official = {s.key: official_shape(s) for s in conversion_plan(shapes)}
    official.update({k: v.shape for k, v in BUFFERS.items()})

    def value(key, shape):
        return BUFFERS[key] if key in BUFFERS else _random(shape, key)

    paths = {}
    if "dir" in formats:
        d = os.path.join(workdir, f"{size}_converted")
        if not os.path.exists(os.path.join(d, "params.safetensors")):
            os.makedirs(d, exist_ok=True)
            _write_safetensors_streaming(os.path.join(d, "params.safetensors"), {"/".join(p): s for p, s in shapes.items()}, value)
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(dataclasses.asdict(cfg), f, indent=2)
        paths["dir"] = d
    st = os.path.join(workdir, f"{size}_official.safetensors")
    b = os.path.join(workdir, f"{size}_official.bin")
    wrote_st = False
    if ("safetensors" in formats or ("bin" in formats and not os.path.exists(b))) and not os.path.exists(st):
        _write_safetensors_streaming(st, official, value)
        wrote_st = True
    if "safetensors" in formats:
        paths["safetensors"] = st
    if "bin" in formats:
        try:
            import torch
        except ImportError:
            print("torch is not installed: no .bin checkpoint")
        else:
            if not os.path.exists(b):
                from flow3r_jax.convert.readers import SafetensorsFile

                src = SafetensorsFile(st)  # memory-mapped: the tensors are written from the page cache
                torch.save({k: torch.from_numpy(np.array(src[k])) if k in BUFFERS else torch.from_numpy(np.memmap(st, np.float32, "c", src._offset + src._entries[k]["data_offsets"][0], src.shape(k))) for k in src}, b)
            paths["bin"] = b
        if "safetensors" not in formats and wrote_st:
            os.remove(st)  # written only to make the .bin
    return paths


def _model_bytes(size: str) -> int:
    from flow3r_jax.models import get_model_config
    from flow3r_jax.models.pretrained import abstract_params

    return 4 * int(sum(np.prod(s) for s in abstract_params(get_model_config(size))[2].values()))


def _pick_size(workdir: str, size: str, formats: list[str]) -> str:
    """`size` when its files fit the free space of `workdir`, else the largest that does."""
    from flow3r_jax.models.config import MODEL_SIZES

    free = shutil.disk_usage(workdir).free
    have = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(workdir) for f in fs)
    by_bytes = sorted(MODEL_SIZES, key=_model_bytes, reverse=True)
    for name in by_bytes[by_bytes.index(size) :]:
        need = len(formats) * _model_bytes(name) * 1.05 + (1 << 30)
        if need <= free + have:
            if name != size:
                print(f"NOTE: size {size!r} needs {need / GB:.1f} GB but {workdir} has {free / GB:.1f} GB free; using {name!r}, the largest that fits")
            return name
    raise SystemExit(f"{workdir}: {free / GB:.1f} GB free is too little even for the smallest model")


def main(argv=None) -> None:
    a = _parse(argv)
    if a.child:
        out = _child_read(a.path, a.cache) if a.child == "read" else _child_load(a.path, a.size, a.cache)
        print(json.dumps(out))
        return
    formats = [f for f in a.formats.split(",") if f]
    if unknown := set(formats) - set(FORMATS):
        raise SystemExit(f"unknown formats {sorted(unknown)}; choose from {FORMATS}")
    workdir = a.workdir or tempfile.mkdtemp(prefix="checkpoint_load_", dir="/tmp")
    os.makedirs(workdir, exist_ok=True)
    print(f"disk: {shutil.disk_usage(workdir).free / GB:.1f} GB free in {workdir}")
    size = _pick_size(workdir, a.size, formats)
    try:
        t = time.perf_counter()
        paths = _write_checkpoints(workdir, size, formats)
        print(f"wrote {size!r} checkpoints in {time.perf_counter() - t:.0f} s: " + ", ".join(f"{k} {_human(_weights_file(p))}" for k, p in paths.items()))
        cache = "cold" if _drop_cache(next(iter(paths.values()))) else "warm"
        model_bytes = _model_bytes(size)
        print(f"model {size!r}: {model_bytes / GB:.2f} GB of float32 parameters; page cache {cache}"
              + (" (dropped with posix_fadvise before each measurement)" if cache == "cold" else " (cannot drop it: each file is read once before each measurement)"))
        print(f"{'format':<12} {'file':>8} {'read s':>7} {'GB/s':>5} {'load s':>7} {'load/read':>9} {'peak RSS':>9} {'RSS before':>10} {'peak/model':>10} {'(peak-before)/model':>19}")
        for fmt, path in paths.items():
            read = _run_child("read", path, size, cache)
            load = _run_child("load", path, size, cache)
            if load["param_bytes"] != model_bytes:
                print(f"WARNING: loaded {load['param_bytes']} parameter bytes, expected {model_bytes}")
            print(
                f"{fmt:<12} {read['bytes'] / GB:>6.2f}GB {read['seconds']:>7.2f} {read['bytes'] / read['seconds'] / GB:>5.2f} {load['seconds']:>7.2f} "
                f"{load['seconds'] / read['seconds']:>9.2f} {load['peak_rss'] / GB:>7.2f}GB {load['rss_before'] / GB:>8.2f}GB "
                f"{load['peak_rss'] / model_bytes:>10.2f} {(load['peak_rss'] - load['rss_before']) / model_bytes:>19.2f}"
            )
        print("targets (SPEC section 6): load/read <= 2, peak/model <= 1.5; loads ran on " + load["device"] + f", imports {load['imports']:.1f} s not counted")
    finally:
        if not a.keep and not a.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        elif not a.keep:
            for p in paths.values() if "paths" in locals() else ():
                shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)


def _human(path: str) -> str:
    return f"{os.path.getsize(path) / GB:.2f} GB"


if __name__ == "__main__":
    main()
