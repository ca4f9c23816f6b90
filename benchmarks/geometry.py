"""Wall-clock benchmark of three `flow3r_jax.geometry` kernels against NumPy (and torch).

What is measured
----------------
Three workloads, each run by up to three implementations on the same float32 inputs:

1. ``procrustes``: batched weighted rigid Procrustes (Kabsch), 4096 problems x 1000 points,
   `flow3r_jax.geometry.weighted_procrustes` -> (4096, 4, 4) transforms.
2. ``bilinear``: bilinear sampling with zero padding of an 8 x 224 x 224 x 64 image batch at
   224 x 224 query points per image, `flow3r_jax.geometry.bilinear_sample`.
3. ``induced_flow``: flow from frame i to frame j = i + 1 (cyclic) induced by depth and camera
   motion, 24 frames of 378 (H) x 518 (W), `flow3r_jax.geometry.induced_flow`.

Implementations:

- ``JAX``: the library function under `jax.jit`. It is lowered and compiled ahead of time (that
  time, tracing included, is the "compile ms" column), called once more as a warm-up, and then
  timed with `jax.block_until_ready`, so every timing covers the full computation and nothing of
  the compilation. Inputs are already on the device; no host <-> device copies are timed.
- ``NumPy``: a vectorised reference written below (no per-element Python loops; the bilinear
  reference loops over the four corners only). NumPy is mostly single-threaded, except
  for the BLAS calls made by `einsum(optimize=True)` / `matmul`.
- ``torch``: the equivalent torch CPU ops, when `import torch` works (`torch.linalg.svd`,
  `torch.nn.functional.grid_sample`, ...), with torch's default intra-op thread count.

Each timing is the median over ``--repeats`` calls (`time_fn`). Before timing, every workload
checks once (untimed) that all implementations return the same numbers and prints the maximum
absolute difference, so that every row does equal work.

How to read the table
---------------------
``ratio`` = (that row's median time) / (the JAX median time of the same workload). A ratio above
1 means JAX is faster than that implementation (2.0: JAX takes half the time); below 1 means it
is slower. The JAX row is 1.00 by definition. Numbers from a 2-core CPU are noisy at the 10%
level; compare orders of magnitude, not the last digit.

Usage::

    python benchmarks/geometry.py              # full sizes (under ~2 minutes on 2 cores)
    python benchmarks/geometry.py --quick      # tiny sizes, a smoke test of the script
    python benchmarks/geometry.py --repeats 5    # fewer timed calls (default 10)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import platform
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from flow3r_jax.geometry import bilinear_sample, induced_flow, weighted_procrustes

try:  # torch is optional (it lives in the `[convert]` extra)
    import torch
    import torch.nn.functional as F
except (ImportError, OSError):
    torch = None
    F = None


# --------------------------------------------------------------------------------------------
# Timing helpers
# --------------------------------------------------------------------------------------------


def time_fn(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall-clock time in seconds of `repeats` calls of `fn()`.

    `fn` must only return once its work is done: JAX callers wrap their call in
    `jax.block_until_ready` (JAX dispatches asynchronously); NumPy and torch CPU ops are
    synchronous. No warm-up call is made here.
    """
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compile_jax(fn: Callable, *args) -> tuple[Callable, float]:
    """jit + lower + compile `fn` for `args`. Returns (a blocking zero-argument runner, seconds
    spent tracing and compiling). The runner is warmed up (called once) before it is returned."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start

    def run():
        return jax.block_until_ready(compiled(*args))

    run()  # warm-up: first execution (allocations, thread-pool start-up) is not timed
    return run, compile_s


@dataclasses.dataclass
class Row:
    workload: str
    impl: str
    median_s: float
    compile_s: float | None = None


def check_close(name: str, a: np.ndarray, b: np.ndarray, atol: float, mask: np.ndarray | None = None) -> float:
    """Prints and asserts max |a - b| <= atol (over `mask` if given). Returns the difference."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if mask is not None:
        a, b = a[mask], b[mask]
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    status = "ok" if diff <= atol else "MISMATCH"
    print(f"  check {name:<34s} max|diff| = {diff:.3e}  (tol {atol:.0e})  {status}")
    assert diff <= atol, f"{name}: max abs diff {diff} > {atol}"
    return diff


def _quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (w, x, y, z), normalised here -> (..., 3, 3) rotation matrices."""
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


# --------------------------------------------------------------------------------------------
# 1. Batched weighted Procrustes
# --------------------------------------------------------------------------------------------


def procrustes_numpy(src: np.ndarray, dst: np.ndarray, weights: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Weighted Kabsch in NumPy: (B, N, 3), (B, N, 3), (B, N) -> (B, 4, 4) mapping src to dst."""
    w = weights / np.maximum(weights.sum(-1, keepdims=True), eps)
    mu_src = np.einsum("bn,bnc->bc", w, src, optimize=True)
    mu_dst = np.einsum("bn,bnc->bc", w, dst, optimize=True)
    xs = src - mu_src[:, None, :]
    xd = dst - mu_dst[:, None, :]
    cov = np.einsum("bn,bni,bnj->bij", w, xd, xs, optimize=True)  # dst-by-src cross-covariance
    U, _, Vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(U) * np.linalg.det(Vt))  # -1 where U Vt would be a reflection
    U[:, :, 2] *= d[:, None]
    R = U @ Vt
    T = np.zeros(src.shape[:1] + (4, 4), src.dtype)
    T[:, :3, :3] = R
    T[:, :3, 3] = mu_dst - np.einsum("bij,bj->bi", R, mu_src)
    T[:, 3, 3] = 1.0
    return T


def procrustes_torch(src, dst, weights, eps: float = 1e-12):
    """`procrustes_numpy` with torch ops."""
    w = weights / weights.sum(-1, keepdim=True).clamp_min(eps)
    mu_src = torch.einsum("bn,bnc->bc", w, src)
    mu_dst = torch.einsum("bn,bnc->bc", w, dst)
    xs = src - mu_src[:, None, :]
    xd = dst - mu_dst[:, None, :]
    cov = torch.einsum("bni,bnj->bij", xd * w[..., None], xs)
    U, _, Vt = torch.linalg.svd(cov)
    d = torch.sign(torch.linalg.det(U) * torch.linalg.det(Vt))
    U = torch.cat([U[:, :, :2], U[:, :, 2:] * d[:, None, None]], dim=-1)
    R = U @ Vt
    T = torch.zeros(src.shape[:1] + (4, 4), dtype=src.dtype)
    T[:, :3, :3] = R
    T[:, :3, 3] = mu_dst - torch.einsum("bij,bj->bi", R, mu_src)
    T[:, 3, 3] = 1.0
    return T


def bench_procrustes(batch: int, points: int, repeats: int, rng: np.random.Generator) -> list[Row]:
    name = f"procrustes {batch}x{points}"
    print(f"\n[{name}] weighted rigid Procrustes, {batch} problems x {points} points")
    src = rng.normal(size=(batch, points, 3)).astype(np.float32)
    R = _quat_to_matrix(rng.normal(size=(batch, 4))).astype(np.float32)
    t = rng.normal(size=(batch, 3)).astype(np.float32)
    dst = (np.einsum("bij,bnj->bni", R, src) + t[:, None, :]).astype(np.float32)
    dst += 0.01 * rng.normal(size=dst.shape).astype(np.float32)
    weights = rng.random((batch, points), dtype=np.float32)

    args = tuple(jax.device_put(a) for a in (src, dst, weights))
    run_jax, compile_s = compile_jax(weighted_procrustes, *args)
    out_jax = np.asarray(run_jax())
    rows = [Row(name, "JAX", time_fn(run_jax, repeats), compile_s)]

    out_np = procrustes_numpy(src, dst, weights)
    check_close("JAX vs NumPy (4x4 transforms)", out_jax, out_np, atol=1e-4)
    rows.append(Row(name, "NumPy", time_fn(lambda: procrustes_numpy(src, dst, weights), repeats)))

    if torch is not None:
        targs = tuple(torch.from_numpy(a) for a in (src, dst, weights))
        check_close("JAX vs torch (4x4 transforms)", out_jax, procrustes_torch(*targs).numpy(), atol=1e-4)
        rows.append(Row(name, "torch", time_fn(lambda: procrustes_torch(*targs), repeats)))
    return rows


# --------------------------------------------------------------------------------------------
# 2. Bilinear sampling with zero padding
# --------------------------------------------------------------------------------------------


def bilinear_numpy(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Zero-padded bilinear lookup in NumPy. image (B, H, W, C), xy (B, h, w, 2) in pixel
    coordinates (top-left pixel centre at (0.5, 0.5)) -> (B, h, w, C)."""
    B, H, W, C = image.shape
    px = xy[..., 0] - 0.5  # continuous index space: pixel centres at integers
    py = xy[..., 1] - 0.5
    x0f = np.floor(px)
    y0f = np.floor(py)
    wx1, wy1 = px - x0f, py - y0f
    x0, y0 = x0f.astype(np.int64), y0f.astype(np.int64)
    flat = image.reshape(B, H * W, C)
    b = np.arange(B).reshape((B,) + (1,) * (xy.ndim - 2))
    out = np.zeros(xy.shape[:-1] + (C,), image.dtype)
    for dx, wx in ((0, 1.0 - wx1), (1, wx1)):  # the four corners; each step is one vector gather
        for dy, wy in ((0, 1.0 - wy1), (1, wy1)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi <= W - 1) & (yi >= 0) & (yi <= H - 1)
            idx = np.clip(yi, 0, H - 1) * W + np.clip(xi, 0, W - 1)
            out += flat[b, idx] * (wx * wy * inside).astype(image.dtype)[..., None]
    return out


def bilinear_torch(image_nchw, xy):
    """torch's `grid_sample` on its native channels-first layout. image (B, C, H, W), xy
    (B, h, w, 2) pixel coordinates -> (B, C, h, w). The conversion to grid_sample's [-1, 1]
    coordinates (align_corners=False) is part of the timed work."""
    H, W = image_nchw.shape[-2:]
    scale = torch.tensor([2.0 / W, 2.0 / H], dtype=xy.dtype)
    grid = xy * scale - 1.0
    return F.grid_sample(image_nchw, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def bench_bilinear(batch: int, channels: int, size: int, repeats: int, rng: np.random.Generator) -> list[Row]:
    name = f"bilinear {batch}x{channels}x{size}x{size}"
    print(f"\n[{name}] zero-padded bilinear sampling, {size}x{size} queries per image")
    image = rng.random((batch, size, size, channels), dtype=np.float32)
    # A warp: every pixel centre displaced by up to 4 px, so queries land between pixels and
    # some leave the image (exercising the zero padding), as when warping by a flow field.
    centres = np.stack(np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="xy"), -1)
    xy = (centres[None] + rng.uniform(-4.0, 4.0, size=(batch, size, size, 2))).astype(np.float32)

    args = (jax.device_put(image), jax.device_put(xy))
    run_jax, compile_s = compile_jax(functools.partial(bilinear_sample, padding="zeros"), *args)
    out_jax = np.asarray(run_jax())
    rows = [Row(name, "JAX", time_fn(run_jax, repeats), compile_s)]

    check_close("JAX vs NumPy (sampled values)", out_jax, bilinear_numpy(image, xy), atol=1e-4)
    rows.append(Row(name, "NumPy", time_fn(lambda: bilinear_numpy(image, xy), repeats)))

    if torch is not None:
        # Channels-first is torch's native layout; the transpose is done once, untimed.
        img_nchw = torch.from_numpy(image).permute(0, 3, 1, 2).contiguous()
        xy_t = torch.from_numpy(xy)
        out_t = bilinear_torch(img_nchw, xy_t).permute(0, 2, 3, 1).numpy()
        check_close("JAX vs torch grid_sample", out_jax, out_t, atol=1e-4)
        rows.append(Row(name, "torch (NCHW)", time_fn(lambda: bilinear_torch(img_nchw, xy_t), repeats)))
    return rows


# --------------------------------------------------------------------------------------------
# 3. Pose-induced flow
# --------------------------------------------------------------------------------------------


def induced_flow_numpy(depth, K_i, pose_i, K_j, pose_j, min_depth: float = 1e-6):
    """Flow i -> j in NumPy. depth (B, H, W), K (B, 3, 3), camera-to-world poses (B, 4, 4)
    -> (flow (B, H, W, 2), valid (B, H, W)); same validity rule as the library."""
    B, H, W = depth.shape
    ys, xs = np.meshgrid(np.arange(H, dtype=depth.dtype) + 0.5, np.arange(W, dtype=depth.dtype) + 0.5, indexing="ij")
    grid = np.stack([xs, ys], -1)  # (H, W, 2) pixel centres
    pix = np.concatenate([grid, np.ones_like(xs)[..., None]], -1).reshape(1, H * W, 3)
    rays = pix @ np.swapaxes(np.linalg.inv(K_i), -1, -2)  # K_i^-1 [x, y, 1]
    points = rays * depth.reshape(B, H * W, 1)
    T = np.linalg.inv(pose_j) @ pose_i  # camera i -> world -> camera j
    points_j = points @ np.swapaxes(T[:, :3, :3], -1, -2) + T[:, None, :3, 3]
    z = points_j[..., 2:]
    valid = z[..., 0] > min_depth
    proj = (points_j / np.where(z > min_depth, z, min_depth)) @ np.swapaxes(K_j, -1, -2)
    flow = proj[..., :2].reshape(B, H, W, 2) - grid
    return flow, valid.reshape(B, H, W) & (depth > 0)


def induced_flow_torch(depth, K_i, pose_i, K_j, pose_j, min_depth: float = 1e-6):
    """`induced_flow_numpy` with torch ops."""
    B, H, W = depth.shape
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=depth.dtype) + 0.5, torch.arange(W, dtype=depth.dtype) + 0.5, indexing="ij"
    )
    grid = torch.stack([xs, ys], -1)
    pix = torch.cat([grid, torch.ones_like(xs)[..., None]], -1).reshape(1, H * W, 3)
    rays = pix @ torch.linalg.inv(K_i).transpose(-1, -2)
    points = rays * depth.reshape(B, H * W, 1)
    T = torch.linalg.inv(pose_j) @ pose_i
    points_j = points @ T[:, :3, :3].transpose(-1, -2) + T[:, None, :3, 3]
    z = points_j[..., 2:]
    valid = z[..., 0] > min_depth
    proj = (points_j / torch.where(z > min_depth, z, torch.full_like(z, min_depth))) @ K_j.transpose(-1, -2)
    flow = proj[..., :2].reshape(B, H, W, 2) - grid
    return flow, valid.reshape(B, H, W) & (depth > 0)


def bench_induced_flow(frames: int, height: int, width: int, repeats: int, rng: np.random.Generator) -> list[Row]:
    name = f"induced_flow {frames}x{width}x{height}"
    print(f"\n[{name}] pose-induced flow i -> i+1 (cyclic), {frames} frames of W={width}, H={height}")
    depth = rng.uniform(1.0, 10.0, size=(frames, height, width)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.05] = 0.0  # 5% missing depth (flagged invalid)
    f = rng.uniform(0.7, 0.9, size=frames) * width  # roughly a 60-70 degree horizontal FOV
    K = np.zeros((frames, 3, 3), np.float32)
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = f, f, width / 2, height / 2, 1.0
    # Camera-to-world poses near the identity: ~3 degree rotations, ~0.1 translations.
    poses = np.tile(np.eye(4, dtype=np.float32), (frames, 1, 1))
    q = np.concatenate([np.ones((frames, 1)), 0.025 * rng.normal(size=(frames, 3))], -1)
    poses[:, :3, :3] = _quat_to_matrix(q)
    poses[:, :3, 3] = 0.1 * rng.normal(size=(frames, 3))
    K_j, pose_j = np.roll(K, -1, axis=0), np.roll(poses, -1, axis=0)  # frame j = i + 1, cyclic
    inputs = (depth, K, poses, K_j, pose_j)

    args = tuple(jax.device_put(a) for a in inputs)
    run_jax, compile_s = compile_jax(induced_flow, *args)
    flow_jax, valid_jax = (np.asarray(a) for a in run_jax())
    rows = [Row(name, "JAX", time_fn(run_jax, repeats), compile_s)]

    # Pixel coordinates reach ~500, where float32 spacing is ~3e-5 px: tolerance 1e-3 px.
    flow_np, valid_np = induced_flow_numpy(*inputs)
    print(f"  check {'JAX vs NumPy valid mask':<34s} {int(np.sum(valid_jax != valid_np))} of {valid_np.size} differ")
    assert np.array_equal(valid_jax, valid_np), "valid masks differ"
    check_close("JAX vs NumPy flow (valid px)", flow_jax, flow_np, atol=1e-3, mask=valid_np)
    rows.append(Row(name, "NumPy", time_fn(lambda: induced_flow_numpy(*inputs), repeats)))

    if torch is not None:
        targs = tuple(torch.from_numpy(a) for a in inputs)
        flow_t, valid_t = (a.numpy() for a in induced_flow_torch(*targs))
        assert np.array_equal(valid_jax, valid_t), "valid masks differ (torch)"
        check_close("JAX vs torch flow (valid px)", flow_jax, flow_t, atol=1e-3, mask=valid_t)
        rows.append(Row(name, "torch", time_fn(lambda: induced_flow_torch(*targs), repeats)))
    return rows


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def machine_info() -> str:
    dev = jax.devices()[0]
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    cpu_model = platform.processor() or platform.system()
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [
        f"python {platform.python_version()} on {platform.machine()} ({cpu_model})",
        f"jax {jax.__version__}, default device: {dev.platform} ({dev.device_kind}), {jax.device_count()} device(s)",
        f"CPU cores: {os.cpu_count()} (usable by this process: {usable})",
        f"numpy {np.__version__}",
        f"torch {torch.__version__} ({torch.get_num_threads()} intra-op threads)" if torch else "torch not installed",
    ]
    return "\n".join(lines)


def print_table(rows: list[Row], repeats: int) -> None:
    jax_time = {r.workload: r.median_s for r in rows if r.impl == "JAX"}
    width = max(len(r.workload) for r in rows)
    header = f"{'workload':<{width}}  {'impl':<12}  {'median ms':>10}  {'ratio ref/JAX':>13}  {'compile ms':>10}"
    print(f"\nMedian wall-clock time over {repeats} repeats (ratio > 1: JAX is faster)")
    print(header)
    print("-" * len(header))
    previous = None
    for r in rows:
        label = r.workload if r.workload != previous else ""
        previous = r.workload
        compile_ms = f"{1e3 * r.compile_s:10.1f}" if r.compile_s is not None else f"{'':>10}"
        ratio = r.median_s / jax_time[r.workload]
        print(f"{label:<{width}}  {r.impl:<12}  {1e3 * r.median_s:10.2f}  {ratio:13.2f}  {compile_ms}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per implementation (median reported)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    args = parser.parse_args(argv)

    print(machine_info())
    rng = np.random.default_rng(0)
    if args.quick:
        sizes = dict(procrustes=(64, 100), bilinear=(2, 8, 32), flow=(4, 48, 64))
    else:
        sizes = dict(procrustes=(4096, 1000), bilinear=(8, 64, 224), flow=(24, 378, 518))

    start = time.perf_counter()
    rows = []
    rows += bench_procrustes(*sizes["procrustes"], args.repeats, rng)
    rows += bench_bilinear(*sizes["bilinear"], args.repeats, rng)
    frames, height, width = sizes["flow"]
    rows += bench_induced_flow(frames, height, width, args.repeats, rng)
    print_table(rows, args.repeats)
    print(f"\ntotal script time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
