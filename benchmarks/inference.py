"""Feed-forward inference speed: our Flow3r against the official PyTorch model, same weights and input.

What is measured
----------------
1. `large` in fp32 on CPU at B=1, N=2 frames of 112x154 with 2 flow pairs (the SPEC target:
   ours no slower than the official model). JAX: one `jax.jit` of the whole forward, compiled
   ahead of time (compile time printed apart), then timed with `block_until_ready`. Official:
   `Flow3r()` from a checkout of `Kidrauh/flow3r` (random initialisation, nothing downloaded)
   under `torch.no_grad()`; its weights are converted into ours so both run the same network,
   and the outputs' max abs differences are printed to show the work is identical.
2. `tiny` forward + backward (value and gradient of a loss on every output) of 2 frames at
   112x112, after compilation (target: well under a second on 2 cores).

Usage::

    python benchmarks/inference.py --official-repo /path/to/flow3r_checkout   # with torch installed
    python benchmarks/inference.py                                            # ours only
    FLOW3R_OFFICIAL_REPO=/path python benchmarks/inference.py --repeats 5

Ratios are official / ours (> 1: ours faster). Times are medians; a 2-core VM is noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flow3r_jax.convert.official import BUFFERS, convert_state_dict
from flow3r_jax.models import get_model_config
from flow3r_jax.models.pretrained import abstract_params, model_from_params


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def build_official(repo: str, seed: int):
    os.environ.setdefault("XFORMERS_DISABLED", "1")
    sys.path.insert(0, repo)
    import torch
    from flow3r.models.flow3r import Flow3r as OfficialFlow3r  # noqa: E402  (the user's checkout)

    torch.manual_seed(seed)
    model = OfficialFlow3r().eval()
    return model, torch


class _TorchStateDict(dict):
    """Official state dict as a lazy {key: numpy} view for the converter."""

    def __init__(self, sd):
        super().__init__(sd)

    def __getitem__(self, key):
        return super().__getitem__(key).detach().float().numpy()

    def shape(self, key):
        return tuple(super().__getitem__(key).shape)


def bench_large(args):
    B, N, H, W = 1, args.frames, args.height, args.width
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(B, N, H, W, 3)).astype(np.float32)
    pairs = np.array([[[0, 1], [1, 0]]], np.int32)[:, : args.pairs]
    cfg = get_model_config("large")
    _, _, shapes = abstract_params(cfg)

    official = None
    if args.official_repo:
        official, torch = build_official(args.official_repo, 0)
        torch.set_num_threads(os.cpu_count() or 1)
        sd = _TorchStateDict({k: v for k, v in official.state_dict().items() if k not in BUFFERS})
        params, _ = convert_state_dict(sd, shapes)
        print(f"official model from {args.official_repo}, torch {torch.__version__}, {torch.get_num_threads()} threads; weights converted into ours")
    else:
        print("official checkout not given (--official-repo / FLOW3R_OFFICIAL_REPO): timing ours only, random weights")
        params = {p: (0.02 * rng.standard_normal(s)).astype(np.float32) for p, s in shapes.items()}
    model = model_from_params(cfg, params)
    del params
    graphdef, state = nnx.split(model)
    fwd = jax.jit(lambda s, x, p: nnx.merge(graphdef, s)(x, p))
    x, p = jnp.asarray(images), jnp.asarray(pairs)
    with jax.default_matmul_precision("highest"):
        t = time.perf_counter()
        compiled = fwd.lower(state, x, p).compile()
        compile_s = time.perf_counter() - t
        out = jax.block_until_ready(compiled(state, x, p))
        ours = median_time(lambda: jax.block_until_ready(compiled(state, x, p)), args.repeats)
    print(f"\n[large fp32] B={B} N={N} {H}x{W}, {pairs.shape[1]} pairs")
    print(f"  ours:     {ours:7.2f} s / forward   (compile {compile_s:.1f} s, once per shape)")
    if official is not None:
        timg = torch.from_numpy(images.transpose(0, 1, 4, 2, 3).copy())
        tpairs = torch.from_numpy(pairs.astype(np.int64))
        with torch.no_grad():
            ref = official(timg, tpairs)
            theirs = median_time(lambda: official(timg, tpairs), args.repeats)
        print(f"  official: {theirs:7.2f} s / forward")
        print(f"  ratio official/ours: {theirs / ours:.2f}x  (target >= 1)")
        diffs = {k: float(np.abs(np.asarray(out[k]) - ref[k].numpy()).max()) for k in ("points", "conf", "camera_poses", "flow")}
        print("  same network, max abs output differences: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))


def bench_tiny(args):
    cfg = get_model_config("tiny")
    rng = np.random.default_rng(0)
    _, _, shapes = abstract_params(cfg)
    model = model_from_params(cfg, {p: (0.05 * rng.standard_normal(s)).astype(np.float32) for p, s in shapes.items()})
    graphdef, params = nnx.split(model, nnx.Param)
    x = jnp.asarray(rng.uniform(size=(1, 2, 112, 112, 3)).astype(np.float32))
    p = jnp.asarray([[[0, 1], [1, 0]]], jnp.int32)

    def loss(params):
        out = nnx.merge(graphdef, params)(x, p)
        return sum(jnp.mean(v**2) for v in out.values())

    step = jax.jit(jax.value_and_grad(loss))
    t = time.perf_counter()
    compiled = step.lower(params).compile()
    compile_s = time.perf_counter() - t
    jax.block_until_ready(compiled(params))
    s = median_time(lambda: jax.block_until_ready(compiled(params)), max(args.repeats, 5))
    print(f"\n[tiny fwd+bwd] 2 frames 112x112: {s * 1000:.0f} ms per step (compile {compile_s:.1f} s)  (target: well under 1 s)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official-repo", default=os.environ.get("FLOW3R_OFFICIAL_REPO"))
    ap.add_argument("--frames", type=int, default=2)
    ap.add_argument("--height", type=int, default=112)
    ap.add_argument("--width", type=int, default=154)
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-large", action="store_true", help="only the tiny fwd+bwd figure")
    args = ap.parse_args()
    print(f"jax {jax.__version__} on {jax.default_backend()}, {os.cpu_count()} CPU cores")
    bench_tiny(args)
    if not args.skip_large:
        bench_large(args)


if __name__ == "__main__":
    main()
