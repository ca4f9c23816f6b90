"""Train-step speed: our jitted Flow3r train step against the official PyTorch model, same inputs.

What is measured (CPU, the SPEC target: ours no slower than the official, ratio ours/official <= 1)
----------------------------------------------------------------------------------------------
For each size in --sizes (default tiny, small) and frame count in --frames (default 2, 4), at
B=--batch clips of N frames, H x W pixels, N flow pairs (i -> i+1, the last one back to 0), fp32:

- ours: the real train step of `flow3r_jax.train.step` (prepare_batch -> forward -> flow3r_loss
  -> gradients of all parameters (trainable="all") -> global-norm clip -> AdamW), jitted with its
  shardings on a 1-device mesh, the state donated, compiled ahead of time (compile time printed
  apart), trunk fp32, remat none. The loss is the full Flow3r loss: normalised points with the
  robust optimal scale S* (4096-point resampling), normals, confidence BCE, the camera loss over
  all ordered frame pairs and the Charbonnier flow loss, plus the flow derived from depth and
  poses (5% depth check) that `prepare_batch` computes in the step.
- official: the official `Flow3r` modules and forward from a checkout of `Kidrauh/flow3r` (the
  same code as ../shared/tools/parity) at the same width / depth as ours (`official_flow3r`
  below), in train mode: forward (same images, same pairs) + a comparable but lighter loss on the
  same outputs and targets (L1 of local points, BCE of confidence against validity, L1 of the
  camera poses, L1 of the NDC flow; weights 1 / 0.05 / 0.1 / 0.01) + `loss.backward()` +
  `clip_grad_norm_(1.0)` + `torch.optim.AdamW` (encoder at 0.1 x lr, as ours). The official
  Pi3FlowLoss is not part of the harness; ours computes strictly more, so the ratio is
  conservative for us. The official weights are converted into ours before timing and the
  forward outputs compared, to show that both sides run the same network.

Threads: XLA's CPU client uses every core the process may run on (its default intra-op pool);
torch gets `torch.set_num_threads` of the same count (--threads overrides it). Both are printed.
Times are medians of --steps steps after --warmup steps, the two sides' steps alternating (both
see the same load on a shared machine); ratios are measured in the same run. Process CPU seconds
per step are printed too: on a loaded machine PyTorch's OpenMP barriers suffer from waiting for a
core far more than XLA's thread pool, and CPU time leaves that waiting out. Under `taskset -c 0`
XLA's pool has one thread and --threads defaults to 1: a single-core comparison that other jobs
disturb the least.
Also printed: XLA's FLOP estimate of our step (`compiled.cost_analysis()["flops"]`) and the
achieved FLOP/s, and frames/s (= batch x frames / step time) for both sides.

GPU mode (--gpu; chosen by itself when JAX's default backend is a GPU)
--------------------------------------------------------------------------
`large` on one GPU, trunk bf16, remat as the training config (`configs/flow3r.py`), B=1 x N
frames of 518 x 378 (W x H), N pairs: step time, frames/s, and utilisation against the chip's
dense bf16 peak: MFU counts the model's FLOPs (the step lowered without rematerialisation, XLA's
estimate before optimisation), HFU the FLOPs the compiled step executes (recomputation
included). No torch needed. `--gpu --lower-only` traces and lowers that step without compiling
or running it (on CPU: a shape check of the large model's train step).

Usage::

    FLOW3R_OFFICIAL_REPO=/path/to/flow3r_checkout python benchmarks/train_step.py
    python benchmarks/train_step.py --official-repo DIR --sizes small --frames 4 --height 224 --width 224
    taskset -c 0 python benchmarks/train_step.py --threads 1   # both sides on one core (see below)
    python benchmarks/train_step.py --gpu                      # on a GPU machine
    python benchmarks/train_step.py --gpu --lower-only         # anywhere: large step, lowered only
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from benchmarks.inference import _TorchStateDict  # noqa: E402
from configs.flow3r import get_config  # noqa: E402
from flow3r_jax.convert.official import BUFFERS, convert_state_dict  # noqa: E402
from flow3r_jax.data.sample import SampleConfig, sample_spec  # noqa: E402
from flow3r_jax.data.targets import prepare_batch  # noqa: E402
from flow3r_jax.losses import LossConfig, gt_local_points  # noqa: E402
from flow3r_jax.models import get_model_config  # noqa: E402
from flow3r_jax.models.config import ModelConfig  # noqa: E402
from flow3r_jax.train.mesh import BATCH_AXES, make_mesh  # noqa: E402
from flow3r_jax.train.optimizer import make_optimizer  # noqa: E402
from flow3r_jax.train.state import ParamLayout, replicated  # noqa: E402
from flow3r_jax.train.step import COUNTERS, build_train_step, make_step_fn  # noqa: E402

# Dense bf16 peak FLOP/s per chip (vendor datasheets, without sparsity), matched against
# `jax.devices()[0].device_kind` in this order (the first substring found wins).
PEAK_BF16_FLOPS = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM / HBM3
    ("A100", 312e12),
    ("L40S", 362e12),
)

LOSS_WEIGHTS = {"point": 1.0, "conf": 0.05, "camera": 0.1, "flow": 0.01}  # official side's comparable loss


def cpu_threads() -> int:
    """Cores this process may run on (what XLA's CPU thread pool sizes itself to)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ---- synthetic batch ------------------------------------------------------------------------


def _rotation(rng: np.random.Generator, max_angle: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    a = rng.uniform(-max_angle, max_angle)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def synthetic_batch(batch: int, frames: int, height: int, width: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A labeled host batch with every field of `sample_spec`: random images, smooth positive
    depth, pinhole intrinsics, camera-to-world poses a small rotation and step apart, pairs
    (i, i+1) with the last one (N-1, 0), and a stored, covisible flow of a few pixels."""
    rng = np.random.default_rng(seed)
    B, N, H, W = batch, frames, height, width
    spec = sample_spec(SampleConfig(frames=N, pairs=N, height=H, width=W))
    yy, xx = np.meshgrid(np.linspace(0, 1, H), np.linspace(0, 1, W), indexing="ij")
    depth = 2.0 + 0.5 * np.sin(3 * xx + rng.uniform(0, 6, (B, N, 1, 1))) + 0.5 * yy
    K = np.array([[W, 0, W / 2], [0, W, H / 2], [0, 0, 1]], np.float32)
    poses = np.tile(np.eye(4, dtype=np.float32), (B, N, 1, 1))
    for b in range(B):
        for n in range(1, N):
            step = np.eye(4)
            step[:3, :3], step[:3, 3] = _rotation(rng, 0.1), rng.normal(scale=0.1, size=3)
            poses[b, n] = poses[b, n - 1] @ step
    pairs = np.stack([np.arange(N), (np.arange(N) + 1) % N], -1) if N > 1 else np.zeros((1, 2), int)
    out = {
        "images": rng.integers(0, 256, (B, N, H, W, 3), dtype=np.uint8),
        "depth": depth.astype(np.float32),
        "valid": rng.uniform(size=(B, N, H, W)) > 0.05,
        "intrinsics": np.broadcast_to(K, (B, N, 3, 3)).copy(),
        "poses": poses,
        "pairs": np.broadcast_to(pairs, (B, N, 2)).astype(np.int32),
        "flow": rng.normal(scale=3.0, size=(B, N, H, W, 2)).astype(np.float32),
        "covisible": rng.uniform(size=(B, N, H, W)) > 0.2,
        "pair_valid": np.ones((B, N), bool),
        "flow_stored": np.ones((B, N), bool),
        "labeled": np.ones((B,), bool),
        "high_quality": np.ones((B,), bool),
        "source": np.zeros((B,), np.int32),
    }
    for k, (shape, dtype) in spec.items():  # the real pipeline's layout, exactly
        assert out[k].shape == (B,) + shape and out[k].dtype == dtype, (k, out[k].shape, out[k].dtype, shape, dtype)
    return out


# ---- ours -----------------------------------------------------------------------------------


def _xla_flops(stage) -> float:
    """XLA's FLOP estimate of a lowered or compiled computation (nan when unavailable)."""
    try:
        cost = stage.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return float("nan")
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get("flops", float("nan")))


class OurStep:
    """The real train step on a 1-device mesh: trainable="all", the size's training config
    (optimiser, clipping), model config `mcfg`. `abstract` / `lower` need no parameters."""

    def __init__(self, mcfg: ModelConfig, size: str, batch: int, frames: int, height: int, width: int):
        c = get_config(f"size={size}")
        self.mesh = make_mesh((1, 1, 1), jax.devices()[:1])
        self.rules = tuple(tuple(r) for r in c.mesh.rules)
        self.layout = ParamLayout.of(mcfg)
        names = self.layout.names
        self.tx, schedule = make_optimizer(c.train, names)
        loss_cfg = LossConfig(point_weight=c.loss.point_weight, normal_weight=c.loss.normal_weight, conf_weight=c.loss.conf_weight, camera_weight=c.loss.camera_weight, flow_weight=c.loss.flow_weight)
        step_fn = make_step_fn(self.layout, self.tx, schedule, loss_cfg, float(c.train.clip_loss), 1, self.mesh)
        self.counters = list(COUNTERS)
        repl = replicated(self.mesh)
        self.param_sh = self.layout.shardings(self.mesh, self.rules)
        abstract_params = self.layout.abstract(self.mesh, self.rules)
        abstract_opt = jax.eval_shape(self.tx.init, abstract_params)
        self.opt_sh = jax.tree.map(lambda _: repl, abstract_opt)  # one device: everything is replicated
        self.state_sh = {"step": repl, "params": self.param_sh, "frozen": {}, "opt": self.opt_sh, "counters": {k: repl for k in self.counters}}
        spec = sample_spec(SampleConfig(frames=frames, pairs=frames, height=height, width=width))
        self.batch_sh = {k: NamedSharding(self.mesh, PartitionSpec(BATCH_AXES, *([None] * len(s)))) for k, (s, _) in spec.items()}
        self.abstract_batch = {k: jax.ShapeDtypeStruct((batch,) + s, d, sharding=self.batch_sh[k]) for k, (s, d) in spec.items()}
        self.abstract_state = {
            "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=repl),
            "params": abstract_params,
            "frozen": {},
            "opt": jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=repl), abstract_opt),
            "counters": {k: jax.ShapeDtypeStruct((), jnp.int32, sharding=repl) for k in self.counters},
        }
        self.jitted = build_train_step(step_fn, self.state_sh, self.batch_sh, self.mesh)

    def lower(self):
        return self.jitted.lower(self.abstract_state, self.abstract_batch)

    def state(self, params: dict[str, np.ndarray] | None = None, seed: int = 0) -> dict:
        """A fresh train state from host `params` ({name: array}) or the model's random init."""
        p = self.layout.init_sharded(seed, self.mesh, self.rules) if params is None else self.layout.put(params, self.mesh, self.rules)
        repl = replicated(self.mesh)
        return {
            "step": jax.device_put(jnp.int32(0), repl),
            "params": p,
            "frozen": {},
            "opt": jax.jit(self.tx.init, out_shardings=self.opt_sh)(p),
            "counters": {k: jax.device_put(jnp.int32(0), repl) for k in self.counters},
        }

    def put_batch(self, host: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return {k: jax.device_put(v, self.batch_sh[k]) for k, v in host.items()}


def our_step_runner(compiled, state, batch):
    """A no-argument function running one step (the donated state carried from call to call,
    waited for); returns the step's metrics on the host."""
    carry = {"state": state}

    def run():
        carry["state"], metrics = compiled(carry["state"], batch)
        jax.block_until_ready((carry["state"], metrics))
        return metrics

    return run


def interleaved_medians(steps: dict, warmup: int, repeats: int) -> dict[str, tuple[float, float]]:
    """{name: (median wall seconds, median process CPU seconds)} of each no-argument function,
    calls alternating between them so that both sides see the same load on a shared machine.
    CPU seconds (all threads of this process, spinning included) do not count the time the
    process waited for a core: a second view when other jobs load the machine."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times = {k: ([], []) for k in steps}
    for _ in range(repeats):
        for k, fn in steps.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            times[k][0].append(time.perf_counter() - t)
            times[k][1].append(time.process_time() - c)
    return {k: (statistics.median(w), statistics.median(c)) for k, (w, c) in times.items()}


# ---- official -------------------------------------------------------------------------------


def import_official(repo: str):
    """The official package from a checkout (pure-PyTorch paths: xformers disabled)."""
    os.environ.setdefault("XFORMERS_DISABLED", "1")
    if not os.path.isfile(os.path.join(repo, "flow3r", "models", "flow3r.py")):
        raise FileNotFoundError(f"not a Kidrauh/flow3r checkout (no flow3r/models/flow3r.py): {repo}")
    if repo not in sys.path:
        sys.path.insert(0, repo)
    import flow3r.models.flow3r as official

    return official


def official_flow3r(repo: str, cfg: ModelConfig, seed: int = 0):
    """The official `Flow3r` at the widths and depths of `cfg`.

    `Flow3r.__init__` hard-codes the large sizes (ViT-L encoder, 1024-wide head decoders, the DPT
    head's default channels); its decoder sizes cannot express ours (its "small" has 24 blocks).
    This builds an instance of the official class with the official building blocks and the
    arguments `Flow3r.__init__` passes them, only the sizes taken from `cfg`; `forward` and
    `decode` are the official methods, unchanged. At `get_model_config("large")` it has the
    official keys and shapes (tests/benchmarks check this against tests/fixtures/official_keys.json).
    """
    import torch
    from torch import nn

    official = import_official(repo)
    from flow3r.models.dinov2.layers import MemEffAttention
    from flow3r.models.dinov2.layers import NestedTensorBlock as Block
    from flow3r.models.dinov2.models.vision_transformer import DinoVisionTransformer

    torch.manual_seed(seed)
    m = official.Flow3r.__new__(official.Flow3r)
    nn.Module.__init__(m)
    p = cfg.patch_size
    # dinov2_vitl14_reg(pretrained=False) with the encoder sizes of cfg.
    m.encoder = DinoVisionTransformer(
        img_size=cfg.enc_pos_grid * p, patch_size=p, embed_dim=cfg.enc_dim, depth=cfg.enc_depth, num_heads=cfg.enc_heads,
        mlp_ratio=cfg.mlp_ratio, block_fn=functools.partial(Block, attn_class=MemEffAttention), init_values=cfg.enc_layerscale_init,
        ffn_layer="mlp", block_chunks=0, num_register_tokens=cfg.enc_registers, interpolate_antialias=True, interpolate_offset=0.0,
    )
    m.patch_size = p
    del m.encoder.mask_token
    m.pos_type = f"rope{cfg.rope_base:g}"
    m.rope = official.RoPE2D(freq=cfg.rope_base)
    m.position_getter = official.PositionGetter()
    m.decoder = nn.ModuleList([
        official.BlockRope(
            dim=cfg.dec_dim, num_heads=cfg.dec_heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=True, proj_bias=True, ffn_bias=True,
            drop_path=0.0, norm_layer=functools.partial(nn.LayerNorm, eps=1e-6), act_layer=nn.GELU, ffn_layer=official.Mlp,
            init_values=cfg.dec_layerscale_init, qk_norm=True, attn_class=official.FlashAttentionRope, rope=m.rope,
        )
        for _ in range(cfg.dec_depth)
    ])
    m.dec_embed_dim = cfg.dec_dim
    m.patch_start_idx = cfg.dec_registers
    m.register_token = nn.Parameter(torch.randn(1, 1, cfg.dec_registers, cfg.dec_dim))
    nn.init.normal_(m.register_token, std=1e-6)
    head = dict(in_dim=2 * cfg.dec_dim, dec_embed_dim=cfg.head_dim, depth=cfg.head_depth, dec_num_heads=cfg.head_heads, mlp_ratio=cfg.mlp_ratio, rope=m.rope)
    m.point_decoder = official.TransformerDecoder(out_dim=cfg.point_out_dim, **head)
    m.point_head = official.LinearPts3d(patch_size=p, dec_embed_dim=cfg.point_out_dim, output_dim=3)
    m.camera_decoder = official.TransformerDecoder(out_dim=cfg.camera_out_dim, use_checkpoint=False, **head)
    m.camera_head = official.CameraHead(dim=cfg.camera_out_dim)
    m.flow_head = official.DPTHead(dim_in=cfg.head_dim, patch_size=p, output_dim=2, features=cfg.dpt_features, out_channels=list(cfg.dpt_out_channels))
    if cfg.dpt_head_hidden != 32:  # the one width DPTHead.__init__ fixes (head_features_2 = 32)
        conv = m.flow_head.scratch.output_conv2
        m.flow_head.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(conv[0].in_channels, cfg.dpt_head_hidden, kernel_size=3, stride=1, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(cfg.dpt_head_hidden, conv[2].out_channels, kernel_size=1, stride=1, padding=0),
        )
    m.conf_decoder = copy.deepcopy(m.point_decoder)
    m.conf_head = official.LinearPts3d(patch_size=p, dec_embed_dim=cfg.point_out_dim, output_dim=1)
    m.register_buffer("image_mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
    m.register_buffer("image_std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
    return m


def official_params_in_ours(model, layout: ParamLayout) -> dict[str, np.ndarray]:
    """The official model's weights as our {name: array} (flow3r_jax.convert)."""
    shapes = {tuple(n.split("/")): layout.shapes[n] for n in layout.names}
    sd = _TorchStateDict({k: v for k, v in model.state_dict().items() if k not in BUFFERS})
    params, _ = convert_state_dict(sd, shapes, source="official model at this size")
    return {"/".join(k): v for k, v in params.items()}


def official_targets(prepared: dict, torch) -> dict:
    """Torch tensors of the targets the official side's loss uses, from our prepared batch."""
    gt_local = gt_local_points(prepared["depth"], prepared["intrinsics"], prepared["labeled"][:, None])
    poses = prepared["poses"]
    rel = jnp.linalg.inv(poses[:, :1]) @ poses  # relative to the first frame, as the model predicts
    t = lambda x: torch.from_numpy(np.array(x))  # noqa: E731  (a writable host copy)
    return {
        "images": t(jnp.moveaxis(prepared["images"], -1, 2)),  # (B, N, 3, H, W) in [0, 1]
        "pairs": t(prepared["pairs"]).long(),
        "local_points": t(gt_local),
        "valid": t(prepared["valid"]),
        "camera_poses": t(rel),
        "flow_target": t(prepared["flow_target"]),
        "covisible": t(prepared["covisible"]),
    }


def official_loss(out: dict, tg: dict, torch):
    """The official side's comparable loss (see the module docstring)."""
    F = torch.nn.functional
    v = tg["valid"][..., None].float()
    point = (torch.abs(out["local_points"] - tg["local_points"]) * v).sum() / (3 * v.sum()).clamp_min(1)
    conf = F.binary_cross_entropy_with_logits(out["conf"][..., 0], tg["valid"].float())
    camera = torch.abs(out["camera_poses"] - tg["camera_poses"]).mean()
    c = tg["covisible"][..., None].float()
    flow = (torch.abs(out["flow"] - tg["flow_target"]) * c).sum() / (2 * c.sum()).clamp_min(1)
    w = LOSS_WEIGHTS
    return w["point"] * point + w["conf"] * conf + w["camera"] * camera + w["flow"] * flow


def official_optimizer(model, size: str, torch):
    """AdamW with the training config's lr, betas, eps and weight decay; the encoder at
    encoder_lr_mult x lr; no decay on 1-d tensors (norms, biases) and tokens."""
    tc = get_config(f"size={size}").train
    groups = {(enc, dec): [] for enc in (True, False) for dec in (True, False)}
    for name, p in model.named_parameters():
        decay = p.ndim >= 2 and "token" not in name and "pos_embed" not in name
        groups[(name.startswith("encoder."), decay)].append(p)
    param_groups = [
        {"params": ps, "lr": tc.lr * (tc.encoder_lr_mult if enc else 1.0), "weight_decay": tc.weight_decay if dec else 0.0}
        for (enc, dec), ps in groups.items() if ps
    ]
    return torch.optim.AdamW(param_groups, lr=tc.lr, betas=(tc.b1, tc.b2), eps=tc.eps), float(tc.clip_grad)


def official_step_fn(model, tg: dict, size: str, torch):
    """One official train step: forward, loss, backward, grad clip, AdamW; returns the loss."""
    opt, clip = official_optimizer(model, size, torch)
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(tg["images"], pair_indices=tg["pairs"])
        loss = official_loss(out, tg, torch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        return float(loss.detach())

    return step


# ---- CPU comparison -------------------------------------------------------------------------


def _fmt_flops(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x / 1e9:.1f} G"


def compare_on_cpu(args) -> list[dict]:
    """Ours vs the official for every size x frame count; prints and returns one row each."""
    torch = None
    if args.official_repo:
        import torch

        torch.set_num_threads(args.threads)
        import_official(args.official_repo)
        print(f"official: Kidrauh/flow3r checkout {args.official_repo}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    else:
        print("official checkout not given (--official-repo / FLOW3R_OFFICIAL_REPO): timing ours only")
    print(f"ours: jax {jax.__version__} on {jax.default_backend()}, XLA CPU pool over {cpu_threads()} cores; fp32, remat none, trainable all")
    rows = []
    for size in args.sizes:
        cfg = get_model_config(size, trunk_dtype="float32", remat="none")
        checked = not args.check
        for frames in args.frames:
            B, H, W = args.batch, args.height, args.width
            print(f"\n[{size}] B={B} N={frames} {H}x{W}, {frames} pairs")
            ours = OurStep(cfg, size, B, frames, H, W)
            host = synthetic_batch(B, frames, H, W, seed=args.seed)
            model = params = None
            if torch is not None:
                model = official_flow3r(args.official_repo, cfg, seed=args.seed).float().train()
                params = official_params_in_ours(model, ours.layout)
            t = time.perf_counter()
            compiled = ours.lower().compile()
            compile_s = time.perf_counter() - t
            flops = _xla_flops(compiled)
            batch = ours.put_batch(host)
            if model is not None and not checked:
                print("  same network: " + check_same_outputs(model, params, cfg, batch, torch))
                checked = True
            last = {}
            run_ours = our_step_runner(compiled, ours.state(params, seed=args.seed), batch)
            steps = {"ours": lambda: last.update(ours=float(run_ours()["loss/total"]))}
            if model is not None:
                run_official = official_step_fn(model, official_targets(jax.jit(prepare_batch)(batch), torch), size, torch)
                steps["official"] = lambda: last.update(official=run_official())
            med = interleaved_medians(steps, args.warmup, args.steps)
            ours_s, ours_cpu = med["ours"]
            row = {"size": size, "frames": frames, "batch": B, "height": H, "width": W, "compile_s": compile_s, "ours_s": ours_s, "ours_cpu_s": ours_cpu, "ours_fps": B * frames / ours_s, "flops": flops, "flops_per_s": flops / ours_s, "ours_loss": last["ours"]}
            print(f"  ours:     {ours_s * 1e3:8.0f} ms/step  {row['ours_fps']:6.2f} frames/s  {ours_cpu:6.2f} CPU s/step  (compile {compile_s:.1f} s; XLA {_fmt_flops(flops)}FLOP/step -> {_fmt_flops(row['flops_per_s'])}FLOP/s; last loss {last['ours']:.3g})")
            if model is not None:
                theirs, theirs_cpu = med["official"]
                row.update(official_s=theirs, official_cpu_s=theirs_cpu, official_fps=B * frames / theirs, ratio=ours_s / theirs, cpu_ratio=ours_cpu / theirs_cpu, official_loss=last["official"])
                print(f"  official: {theirs * 1e3:8.0f} ms/step  {row['official_fps']:6.2f} frames/s  {theirs_cpu:6.2f} CPU s/step  (last loss {last['official']:.3g}, a lighter loss)")
                print(f"  ratio ours/official: {row['ratio']:.2f} wall (target <= 1), {row['cpu_ratio']:.2f} CPU time")
            rows.append(row)
            del model, params, compiled
    print_table(rows, args)
    return rows


def check_same_outputs(model, params: dict, cfg: ModelConfig, batch: dict, torch) -> str:
    """Max abs differences of one forward pass of both models with the same weights and input."""
    layout = ParamLayout.of(cfg)
    prepared = jax.jit(prepare_batch)(batch)
    fwd = jax.jit(lambda p, x, pr: layout.model(p)(x, pr))
    with jax.default_matmul_precision("highest"):
        out = fwd({n: jnp.asarray(v) for n, v in params.items()}, prepared["images"], prepared["pairs"])
    tg = official_targets(prepared, torch)
    with torch.no_grad():
        ref = model(tg["images"], pair_indices=tg["pairs"])
    diffs = {k: float(np.abs(np.asarray(out[k]) - ref[k].numpy()).max()) for k in ("points", "conf", "camera_poses", "flow")}
    return "max abs forward differences " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())


def print_table(rows: list[dict], args) -> None:
    nan = float("nan")
    print(f"\nTrain step on CPU, fp32, {cpu_threads()} cores for XLA / {args.threads} torch threads; median of {args.steps} steps after {args.warmup} warm-up, interleaved")
    head = (
        f"{'size':<6} {'B x N':>6} {'H x W':>9} {'compile s':>9} {'ours ms':>9} {'official ms':>11} {'ours f/s':>9} {'official f/s':>12} "
        f"{'ours/official':>13} {'CPU-s ratio':>11} {'XLA GFLOP':>10} {'GFLOP/s':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['size']:<6} {r['batch']:>2} x {r['frames']:<2} {r['height']:>4}x{r['width']:<4} {r['compile_s']:>9.1f} {r['ours_s'] * 1e3:>9.0f} "
            f"{r.get('official_s', nan) * 1e3:>11.0f} {r['ours_fps']:>9.2f} {r.get('official_fps', nan):>12.2f} "
            f"{r.get('ratio', nan):>13.2f} {r.get('cpu_ratio', nan):>11.2f} {r['flops'] / 1e9:>10.1f} {r['flops_per_s'] / 1e9:>8.1f}"
        )
    print("ours/official: wall-time ratio (target <= 1); CPU-s ratio: the same in process CPU seconds per step")


# ---- GPU ------------------------------------------------------------------------------------


def peak_bf16_flops(device_kind: str) -> float | None:
    for name, peak in PEAK_BF16_FLOPS:
        if name.lower() in device_kind.lower():
            return peak
    return None


def run_on_gpu(args) -> dict:
    """`large`, bf16 trunk, the config's remat, one device: step time, frames/s, MFU / HFU."""
    size = "large"
    c = get_config(f"size={size}")
    B, N, H, W = 1, args.frames[0], args.height, args.width
    mcfg = get_model_config(size, trunk_dtype="bfloat16", remat=c.model.remat)
    dev = jax.devices()[0]
    print(f"[{size} bf16 trunk, remat {mcfg.remat}] B={B} N={N} {H}x{W}, {N} pairs on {dev.device_kind} ({jax.default_backend()})")
    ours = OurStep(mcfg, size, B, N, H, W)
    t = time.perf_counter()
    lowered = ours.lower()
    print(f"  lowered in {time.perf_counter() - t:.1f} s; XLA estimate before optimisation {_fmt_flops(_xla_flops(lowered))}FLOP/step")
    # Model FLOPs: the same step without rematerialisation (lowered only, never compiled).
    model_flops = _xla_flops(OurStep(mcfg.replace(remat="none"), size, B, N, H, W).lower())
    print(f"  model FLOPs (no remat): {_fmt_flops(model_flops)}FLOP/step")
    if args.lower_only:
        return {"model_flops": model_flops}
    t = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t
    hw_flops = _xla_flops(compiled)
    mem = compiled.memory_analysis()
    if mem is not None:
        print(f"  compiled in {compile_s:.1f} s; device memory: arguments {mem.argument_size_in_bytes / 2**30:.1f} GiB, temporaries {mem.temp_size_in_bytes / 2**30:.1f} GiB")
    run = our_step_runner(compiled, ours.state(seed=args.seed), ours.put_batch(synthetic_batch(B, N, H, W, seed=args.seed)))
    last = {}
    step_s = interleaved_medians({"ours": lambda: last.update(metrics=run())}, args.warmup, args.steps)["ours"][0]
    metrics = last["metrics"]
    peak = peak_bf16_flops(dev.device_kind)
    res = {"step_s": step_s, "frames_per_s": B * N / step_s, "model_flops": model_flops, "hw_flops": hw_flops, "peak": peak, "compile_s": compile_s}
    print(f"  step {step_s * 1e3:.0f} ms (median of {args.steps}), {res['frames_per_s']:.2f} frames/s, loss {float(metrics['loss/total']):.3g}")
    if peak is None:
        print(f"  peak bf16 FLOP/s of {dev.device_kind!r} unknown (table PEAK_BF16_FLOPS): achieved {model_flops / step_s / 1e12:.1f} TFLOP/s of model FLOPs")
    else:
        res["mfu"], res["hfu"] = model_flops / step_s / peak, hw_flops / step_s / peak
        print(f"  MFU {100 * res['mfu']:.1f}% (model FLOPs), HFU {100 * res['hfu']:.1f}% (executed FLOPs incl. recomputation) of {peak / 1e12:.0f} TFLOP/s bf16 dense (target MFU >= 40%)")
    return res


# ---- entry point ----------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official-repo", default=os.environ.get("FLOW3R_OFFICIAL_REPO"), help="Kidrauh/flow3r checkout (else ours only)")
    ap.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=["tiny", "small", "base", "large"])
    ap.add_argument("--frames", nargs="+", type=int, default=None, help="frame counts (CPU default 2 4; GPU: the first, default 8)")
    ap.add_argument("--batch", type=int, default=1, help="clips per step (CPU; the GPU mode uses 1)")
    ap.add_argument("--height", type=int, default=None, help="multiple of 14 (CPU default 112, GPU 378)")
    ap.add_argument("--width", type=int, default=None, help="multiple of 14 (CPU default 154, GPU 518)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=cpu_threads(), help="torch threads (default: the cores XLA uses)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-check", dest="check", action="store_false", help="skip the same-outputs forward check")
    ap.add_argument("--gpu", action="store_true", help="large, bf16, one GPU (chosen by itself on a GPU backend)")
    ap.add_argument("--lower-only", action="store_true", help="with --gpu: trace and lower the step only (works on CPU)")
    args = ap.parse_args(argv)
    args.gpu = args.gpu or jax.default_backend() == "gpu"
    gpu = args.gpu
    args.frames = args.frames or ([8] if gpu else [2, 4])
    args.height = args.height or (378 if gpu else 112)
    args.width = args.width or (518 if gpu else 154)
    if args.height % 14 or args.width % 14:
        ap.error(f"--height/--width must be multiples of the patch size 14, got {args.height}x{args.width}")
    if args.lower_only and not gpu:
        ap.error("--lower-only goes with --gpu")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.gpu:
        if jax.default_backend() != "gpu" and not args.lower_only:
            print(f"--gpu needs a GPU, but JAX's default backend is {jax.default_backend()!r} (devices: {jax.devices()}). "
                  "Run on a machine with a CUDA GPU and jax[cuda12], or add --lower-only to check the large step's shapes here.")
            return 2
        return run_on_gpu(args)
    return compare_on_cpu(args)


if __name__ == "__main__":
    result = main()
    sys.exit(result if isinstance(result, int) else 0)
