"""Ahead-of-time memory plans: compile the real train step for a mesh of fake CPU devices, without
running it, and print what each device would hold.

    python benchmarks/aot_memory.py                               # large, 64-way FSDP and 8 x 8, remat none / dots / full
    python benchmarks/aot_memory.py --size large --mesh 1x64x1 --remat dots --buckets
    python benchmarks/aot_memory.py --max-frames --budget-gib 80 --sizes small,base,large
    python benchmarks/aot_memory.py --size tiny --devices 8 --mesh 2x4x1 --frames 4 --height 56 --width 56

For each (mesh, remat policy) the program is exactly the one `launch.train` compiles
(`flow3r_jax.train.plan.TrainPlan`: same shardings, optimiser, loss, bf16 trunk, remat, attention
chunking), for `--clips-per-device` clips of `--frames` frames at `--height` x `--width` with
`--pairs` flow pairs per clip per device. Printed per device: argument, output, temporary and
total bytes (total = arguments + outputs - donated aliases + temporaries), and XLA's FLOPs per
step. `--buckets` also plans every frame-count bucket of the config's pi^3 bucket set at
`--images-per-device`. `--max-frames` finds, per model size, the most frames per device (one clip)
whose plan fits `--budget-gib`.

Read the figures as estimates: they come from XLA's CPU backend, whose buffer assignment and
fusion differ from the GPU / TPU compilers'. On a GPU machine, `--gpu --mesh 1x1x1` compiles the
same plan for the real device (run it beside the CPU plan of the same mesh to compare).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

GIB = 2.0**30


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="large", help="model size (tiny, small, base, large)")
    p.add_argument("--devices", type=int, default=64, help="fake CPU devices (default 64)")
    p.add_argument("--mesh", action="append", default=None, help="DATAxFSDPxTENSOR, repeatable (default: 1x64x1 and 8x8x1 scaled to --devices)")
    p.add_argument("--remat", default="none,dots,full", help="comma-separated remat policies to compare")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--height", type=int, default=378)
    p.add_argument("--width", type=int, default=518)
    p.add_argument("--pairs", type=int, default=None, help="flow pairs per clip (default: the config's)")
    p.add_argument("--clips-per-device", type=int, default=1)
    p.add_argument("--trainable", default=None, help="all | all_but_encoder | flow_head (default: the config's stage 2)")
    p.add_argument("--attention-chunk", type=int, default=None, help="queries per attention chunk (default: the config's; 0 = plain)")
    p.add_argument("--buckets", action="store_true", help="also plan the config's pi^3 frame-count buckets")
    p.add_argument("--images-per-device", type=int, default=24, help="the bucket set's image budget (pi^3 highres: 24)")
    p.add_argument("--pairs-per-device", type=int, default=None, help="the bucket set's flow-pair cap (default: the config's; 0: none)")
    p.add_argument("--max-frames", action="store_true", help="search the most frames per device that fit --budget-gib")
    p.add_argument("--budget-gib", type=float, default=80.0)
    p.add_argument("--sizes", default="small,base,large", help="--max-frames: model sizes")
    p.add_argument("--gpu", action="store_true", help="compile for this machine's GPU(s) instead of fake CPU devices (meshes must fit its device count)")
    p.add_argument("--target-gib", type=float, default=60.0, help="the target printed beside the first row (SPEC: 60 GiB)")
    a = p.parse_args(argv)
    if a.mesh is None:
        d = a.devices
        a.mesh = [f"1x{d}x1"] + ([f"{d // 8}x8x1"] if d % 8 == 0 and d > 8 else [])
    return a


def _mesh_sizes(text: str) -> tuple[int, int, int]:
    try:
        sizes = tuple(int(s) for s in text.lower().split("x"))
    except ValueError:
        sizes = ()
    if len(sizes) != 3:
        raise SystemExit(f"--mesh {text!r}: expected DATAxFSDPxTENSOR, e.g. 8x8x1")
    return sizes


def train_config(size: str, mesh: tuple[int, int, int], remat: str, frames: int, height: int, width: int, clips_per_device: int, pairs=None, trainable=None, attention_chunk=None):
    """The training config of one plan (configs/flow3r.py with these fields set)."""
    from configs.flow3r import get_config

    c = get_config(f"size={size}")
    c.model.remat = remat
    if attention_chunk is not None:
        c.model.attention_chunk = attention_chunk
    if trainable:
        c.train.trainable = trainable
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = mesh
    c.data.frames, c.data.height, c.data.width = frames, height, width
    if pairs is not None:
        c.data.pairs = pairs
    c.data.global_batch = clips_per_device * mesh[0] * mesh[1]
    return c


def plan_memory(c, devices=None) -> dict:
    """Compiles config `c`'s train step for each of its batch shapes -> rows of figures."""
    import jax

    from flow3r_jax.train.mesh import make_mesh
    from flow3r_jax.train.plan import TrainPlan

    mesh = make_mesh((c.mesh.data, c.mesh.fsdp, c.mesh.tensor), devices=devices)
    plan = TrainPlan(c, mesh)
    rows = []
    for shape in plan.shapes:
        t0 = time.perf_counter()
        cs = plan.compile(shape)
        m = cs.memory
        row = {"frames": shape.frames, "batch": shape.global_batch, "pairs": shape.pairs, "seconds": time.perf_counter() - t0, "flops": cs.flops, "backend": mesh.devices.flat[0].platform}
        if m is not None:
            row.update(
                arguments=m.argument_size_in_bytes,
                outputs=m.output_size_in_bytes,
                aliased=m.alias_size_in_bytes,
                temporaries=m.temp_size_in_bytes,
                total=m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes,
            )
        rows.append(row)
        del cs
        jax.clear_caches()
    return {"rows": rows, "params": plan.param_count}


def _fmt(row: dict) -> str:
    if "total" not in row:
        return f"{'n/a':>9} {'n/a':>9} {'n/a':>9} {'n/a':>9}"
    return f"{row['arguments'] / GIB:9.2f} {row['outputs'] / GIB:9.2f} {row['temporaries'] / GIB:9.2f} {row['total'] / GIB:9.2f}"


HEADER = f"{'size':>6} {'mesh d x f x t':>15} {'remat':>6} {'frames':>6} {'batch':>6} {'args GiB':>9} {'out GiB':>9} {'temp GiB':>9} {'total GiB':>9} {'GFLOP/step':>10} {'compile s':>9}"


def _line(size, mesh, remat, row) -> str:
    return f"{size:>6} {'x'.join(map(str, mesh)):>15} {remat:>6} {row['frames']:>6} {row['batch']:>6} {_fmt(row)} {row['flops'] / 1e9:10.1f} {row['seconds']:9.1f}"


def max_frames(size: str, mesh, remat: str, height: int, width: int, budget: float, pairs=None, trainable=None, attention_chunk=None, hi: int = 64) -> tuple[int, dict]:
    """The most frames per device (1 clip) whose plan's total fits `budget` bytes (binary search
    over 1..hi; the plan is monotone in the frame count)."""
    best, best_row = 0, {}
    lo, top = 1, hi
    while lo <= top:
        mid = (lo + top) // 2
        row = plan_memory(train_config(size, mesh, remat, mid, height, width, 1, pairs, trainable, attention_chunk))["rows"][0]
        print(f"  {size}: {mid} frames -> {row.get('total', float('nan')) / GIB:.2f} GiB", flush=True)
        if row.get("total", float("inf")) <= budget:
            best, best_row, lo = mid, row, mid + 1
        else:
            top = mid - 1
    return best, best_row


def main(argv=None) -> int:
    a = _parse(sys.argv[1:] if argv is None else argv)
    import jax

    on_gpu = a.gpu
    if not on_gpu:
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", a.devices)
    elif jax.default_backend() != "gpu":
        raise SystemExit(f"--gpu: no GPU here (JAX backend {jax.default_backend()!r})")
    meshes = [_mesh_sizes(m) for m in a.mesh]
    remats = [r.strip() for r in a.remat.split(",") if r.strip()]
    print(f"JAX {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} devices ({jax.devices()[0].device_kind})")
    print(f"per device: {a.clips_per_device} clip(s) x {a.frames} frames x {a.height}x{a.width}; figures per device; total = args + outputs - donated + temporaries")
    if not on_gpu:
        print("NOTE: CPU-backend estimates (XLA:CPU buffer assignment and fusion); a GPU or TPU compiler's figures differ.")
    print(HEADER)
    first = None
    for mesh in meshes:
        if mesh[0] * mesh[1] * mesh[2] != jax.device_count():
            raise SystemExit(f"--mesh {'x'.join(map(str, mesh))} needs {mesh[0] * mesh[1] * mesh[2]} devices, have {jax.device_count()} (--devices)")
        for remat in remats:
            c = train_config(a.size, mesh, remat, a.frames, a.height, a.width, a.clips_per_device, a.pairs, a.trainable, a.attention_chunk)
            res = plan_memory(c)
            row = res["rows"][0]
            first = first or row
            print(_line(a.size, mesh, remat, row), flush=True)
    if first is not None and "total" in first:
        verdict = "meets" if first["total"] <= a.target_gib * GIB else "misses"
        print(f"first row: {first['total'] / GIB:.2f} GiB per device {verdict} the {a.target_gib:g} GiB target")
    if a.buckets:
        from flow3r_jax.train.plan import parse_buckets

        from configs.flow3r import get_config

        pi3 = get_config(f"size={a.size},buckets=pi3").data
        buckets = pi3.buckets
        pair_budget = pi3.pairs_per_device if a.pairs_per_device is None else a.pairs_per_device
        print(f"\nbucket set {buckets} at {a.images_per_device} images and {pair_budget or 'uncapped'} flow pairs per device, mesh {a.mesh[0]}, remat {remats[0]}:")
        print(HEADER)
        c = train_config(a.size, meshes[0], remats[0], a.frames, a.height, a.width, a.clips_per_device, a.pairs, a.trainable, a.attention_chunk)
        c.data.buckets, c.data.images_per_device, c.data.pairs_per_device = buckets, a.images_per_device, pair_budget
        parse_buckets(buckets)
        for row in plan_memory(c)["rows"]:
            print(_line(a.size, meshes[0], remats[0], row), flush=True)
    if a.max_frames:
        print(f"\nmost frames per device (1 clip, {a.height}x{a.width}) within {a.budget_gib:g} GiB, mesh {a.mesh[0]}, remat {remats[0]}:")
        for size in [s.strip() for s in a.sizes.split(",") if s.strip()]:
            n, row = max_frames(size, meshes[0], remats[0], a.height, a.width, a.budget_gib * GIB, a.pairs, a.trainable, a.attention_chunk)
            at_least = ">= " if n == 64 else ""  # the search's upper end
            print(f"{size:>6}: {at_least}{n} frames ({row.get('total', float('nan')) / GIB:.2f} GiB)" if n else f"{size:>6}: not even 1 frame fits", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
