"""Training Flow3r: the factored-flow model on labeled 3D clips plus unlabeled videos with
precomputed flow (`python -m launch.train --config configs/flow3r.py:OPTIONS --workdir DIR`).

OPTIONS is a comma-separated list of NAME=VALUE (all optional):

    size=tiny|small|base|large   model size (default large: the official 1B model)
    stage=1|2                    1: train only the flow head, everything else frozen (Flow3r's
                                 first stage); 2: train everything but the encoder (pi^3 freezes it)
    init=random|pretrained|checkpoint   where the weights come from (init.path names the file or
                                 the stage-1 workdir / step directory)
    heads=factored|tracking|projective  the flow head (the paper's ablation)
    buckets=none|pi3             none: every sample has data.frames frames, data.global_batch
                                 per step; pi3: pi^3's 2-24 frames per sample as frame-count
                                 buckets under a per-device image budget (flow3r_jax/train/plan.py)
    mesh=dp|fsdp                 dp: data parallel (mesh.data = -1); fsdp: parameters and
                                 optimiser state sharded over every device (mesh.fsdp = -1)
    schedule=onecycle|constant   pi^3's one-cycle cosine, or the peak lr throughout
    consistency=off|target|pred  DF-Net's cross-task consistency (docs/dfnet.md): the flow induced
                                 by the predicted depth and poses must match, on pixels both
                                 branches find reliable, the flow target (target) or the flow
                                 head's prediction (pred, DF-Net's own form); weight 0.5 (DF-Net).
                                 loss.dynamic_weight < 1 also down-weights the pixels it judges
                                 non-rigid in the point term and the scale fit

Every field is overridable on the command line, e.g. `--config.train.lr=1e-4`,
`--config.data.sources=/data/synthetic:1,/data/videos:3`. Defaults are those of `large`; each cites
its source. `tiny` shrinks model, images and batch for tests and the CPU demo.
"""

from __future__ import annotations

import ml_collections

_OPTIONS = {"size": "large", "stage": "2", "init": "random", "heads": "factored", "buckets": "none", "mesh": "dp", "schedule": "onecycle", "consistency": "off"}
_CHOICES = {
    "size": ("tiny", "small", "base", "large"),
    "stage": ("1", "2"),
    "init": ("random", "pretrained", "checkpoint"),
    "heads": ("factored", "tracking", "projective"),
    "buckets": ("none", "pi3"),
    "mesh": ("dp", "fsdp"),  # applied by _apply_run_options
    "schedule": ("onecycle", "constant"),
    "consistency": ("off", "target", "pred"),
}


def parse_options(arg: str | None, defaults: dict[str, str], choices: dict[str, tuple[str, ...]] | None = None) -> dict[str, str]:
    """'a=1,b=x' -> {'a': '1', 'b': 'x'} over `defaults`; unknown names or values raise ValueError."""
    opts = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        if "=" not in item:
            raise ValueError(f"config option {item!r}: expected NAME=VALUE (options: {sorted(defaults)})")
        k, v = (s.strip() for s in item.split("=", 1))
        if k not in defaults:
            raise ValueError(f"unknown config option {k!r}; known: {sorted(defaults)}")
        if choices and k in choices and v not in choices[k]:
            raise ValueError(f"config option {k}={v!r}: choose one of {choices[k]}")
        opts[k] = v
    return opts


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_options(arg, _OPTIONS, _CHOICES)
    size, stage, tiny = opts["size"], int(opts["stage"]), opts["size"] == "tiny"
    c = ml_collections.ConfigDict()
    c.options = arg or ""
    c.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.size = size
    c.model.flow_head = opts["heads"]
    # pi^3 trains in bf16 (configs/model/pi3.yaml model_dtype: bf16); heads stay fp32 (SPEC §1).
    c.model.trunk_dtype = "float32" if tiny else "bfloat16"
    # pi^3 checkpoints decoder blocks from index 4 on (num_dec_blk_not_to_checkpoint: 4) with
    # torch.utils.checkpoint, which keeps only each block's input: our "full". Our stacks are
    # scanned, so the policy applies to every block. "dots" (keep matmul outputs) recomputes less
    # but needs ~73 GiB per device for large at 24 frames of 518x378 against 41 GiB for "full"
    # (benchmarks/aot_memory.py).
    c.model.remat = "none" if tiny else "full"
    # Attention `attention_chunk` queries at a time (same result; logits of 256 queries x all
    # keys instead of all x all: 24 frames of 518x378 are 24k tokens, 1004 per frame). 0 = one block.
    c.model.attention_chunk = 0 if tiny else 256

    c.init = ml_collections.ConfigDict()
    c.init.kind = opts["init"]
    c.init.path = ""  # flow3r.bin / model.safetensors / a save_pretrained dir / a workdir or step dir

    c.data = ml_collections.ConfigDict()
    # "DIR[:WEIGHT],DIR[:WEIGHT]": dataset directories written by data_pipelines (labeled and
    # unlabeled clips may be mixed; a record says which it is). Flow3r's loss marks spatialvid
    # and epickitchens as flow-only: here that is the record kind (unlabeled clips).
    c.data.sources = ""
    c.data.global_batch = 8 if tiny else 64  # samples per step over all devices (pi^3: 1 clip per GPU x 64 GPUs)
    c.data.frames = 4 if tiny else 24  # pi^3: 2-24 frames per sample; fixed N per compiled step
    # Frame-count buckets "FRAMES[:WEIGHT],...": each a static shape with per-device batch
    # images_per_device // FRAMES (pi^3 max_img_per_gpu: 64 at 224x224, 24 at 100k-255k pixels);
    # "" = one shape (data.frames, data.global_batch). A bucket is drawn per global batch.
    pi3_buckets = opts["buckets"] == "pi3"
    c.data.buckets = ("2,4" if tiny else "2,4,8,12,16,24") if pi3_buckets else ""
    c.data.images_per_device = (8 if tiny else 64) if pi3_buckets else 0
    # Flow pairs per device and step over a bucket's clips (0: no cap, data.pairs per clip).
    c.data.pairs_per_device = (4 if tiny else 8) if pi3_buckets else 0
    c.data.pairs = 4 if tiny else 8
    c.data.height = 56 if tiny else 224  # pi^3 lowres stage: 224x224
    c.data.width = 56 if tiny else 224
    c.data.frame_mode = "window"
    c.data.max_zoom = 1.0
    c.data.colour = 1.0
    c.data.num_workers = 0 if tiny else 8
    c.data.read_threads = 2
    c.data.seed = 0
    # A record failing its checksum: "raise" stops training (tests, small runs); "skip" takes the
    # next record, logs it and counts it (input/skipped_records), and stops only above
    # max(max_bad_records, max_bad_fraction x records read) per process (long runs).
    c.data.bad_records = "raise" if tiny else "skip"
    c.data.max_bad_fraction = 0.001
    c.data.max_bad_records = 10

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    # Logical parameter axes -> mesh axes (first match wins; an axis that does not divide the
    # dimension is left replicated). Batches are always sharded over ("data", "fsdp").
    c.mesh.rules = (
        ("embed", "fsdp"),
        ("conv_out", "fsdp"),
        ("mlp", "tensor"),
        ("heads", "tensor"),
        ("layers", None),
        ("conv_in", None),
    )

    c.train = ml_collections.ConfigDict()
    # Flow3r's two stages: the flow head alone, then the rest (pi^3 freeze_encoder: true).
    c.train.trainable = "flow_head" if stage == 1 else "all_but_encoder"  # | "all"
    c.train.steps = 300 if tiny else 64_000  # pi^3: 80 epochs x 800 iterations
    c.train.lr = 1e-3 if tiny else 5e-5  # pi^3 optimizer.lr
    c.train.encoder_lr_mult = 0.1  # pi^3 encoder_lr 5e-6 = 0.1 x lr
    c.train.weight_decay = 0.05  # pi^3 weight_decay 5e-2 (not on norms, biases, tokens)
    c.train.b1 = 0.9  # pi^3 betas [0.9, 0.95]
    c.train.b2 = 0.95
    c.train.eps = 1e-8  # torch AdamW default
    c.train.warmup_frac = 0.05 if tiny else 0.0  # pi^3 OneCycleLR pct_start 0.0
    c.train.div_factor = 1000.0  # pi^3 OneCycleLR div_factor (start lr = lr / div)
    c.train.final_div_factor = 100.0  # pi^3 final_div_factor (end lr = lr / div / final_div)
    c.train.clip_grad = 1.0  # pi^3 clip_grad
    c.train.clip_loss = 10.0  # pi^3 clip_loss: a larger loss contributes no gradient
    c.train.microbatches = 1  # gradient accumulation (per step, scanned)

    c.loss = ml_collections.ConfigDict()
    # Flow3r's Pi3FlowLoss: point + 0.1 camera + 0.01 flow; 0.05 conf (SPEC §2).
    c.loss.point_weight = 1.0
    c.loss.normal_weight = 1.0
    c.loss.conf_weight = 0.05
    c.loss.camera_weight = 0.1
    c.loss.flow_weight = 0.01
    # DF-Net's cross-task consistency (flow3r_jax.losses.consistency; ECCV 2018), off unless
    # consistency=target|pred. DF-Net weighs its pixel-unit term 0.5 (train_df.py
    # --cross_consistency) beside its photometric losses; beside pi^3's normalised terms that
    # swamps them (the ablation's depth diverged, docs/dfnet.md), so here the term is in the flow
    # head's NDC units with the camera term's weight, 0.1. The dynamic-region test
    # (|rigid - flow| > dynamic_abs_px + dynamic_rel |flow|) feeds loss/dynamic_fraction and, with
    # dynamic_weight < 1, down-weights those pixels in the point term and the S* fit.
    consistency = opts["consistency"]
    c.loss.consistency_weight = 0.0 if consistency == "off" else 0.1
    c.loss.consistency_flow = "pred" if consistency == "pred" else "target"
    c.loss.consistency_units = "ndc"  # "px" with weight 0.5: DF-Net's literal form
    c.loss.fb_alpha = 0.01  # DF-Net get_fb_mask alpha1
    c.loss.fb_beta = 0.5  # DF-Net get_fb_mask alpha2 (px^2)
    c.loss.dynamic_abs_px = 1.0
    c.loss.dynamic_rel = 0.1
    c.loss.dynamic_weight = 1.0  # 1: no down-weighting

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 50 if tiny else 1000
    c.checkpoint.keep = 3  # pi^3 max_checkpoints: 3
    c.checkpoint.save_initial = False  # also save step 0 (the initial model) before training
    c.checkpoint.best_metric = ""  # e.g. "eval/flow_epe": also keep the best checkpoints by it
    c.checkpoint.best_mode = "min"
    c.checkpoint.keep_best = 1

    c.log = ml_collections.ConfigDict()
    c.log.every = 10 if tiny else 50
    c.log.progress = True  # a progress bar when stderr is a terminal

    c.eval = ml_collections.ConfigDict()
    # A callable "module:function" run every `every` steps on process 0 and at the end:
    # fn(model, config, step) -> {name: float}; the evaluation issue plugs its benchmarks in here.
    c.eval.fn = ""
    c.eval.every = 0
    c.eval.sources = ""  # held-back dataset directories for flow3r_jax.train.evaluate
    c.eval.batches = 4
    # For fn = "flow3r_jax.eval.follow:benchmark_metrics": benchmarks run in the trainer.
    c.eval.benchmarks = ""  # e.g. "synthetic" or "sintel,tum"
    c.eval.data_root = ""
    c.eval.out_dir = ""  # where their JSON / table go (default: a temporary directory)
    c.eval.max_sequences = 0  # 0: all sequences
    c.eval.tasks = ""  # e.g. "video_depth,pose_trajectory" (default: every task of each benchmark)
    c.eval.load_width = 0  # 0: π³'s input widths (512 / 518)
    _apply_run_options(c, opts)
    return c


def _apply_run_options(c: ml_collections.ConfigDict, opts: dict[str, str]) -> None:
    """The `mesh` and `schedule` options over the defaults set above."""
    if opts["mesh"] == "fsdp":
        c.mesh.data, c.mesh.fsdp = 1, -1
    if opts["schedule"] == "constant":  # the one-cycle schedule with no warm-up and no decay
        c.train.warmup_frac, c.train.div_factor, c.train.final_div_factor = 0.0, 1.0, 1.0


def sweep():
    """Learning rate against model size around pi^3's 5e-5 (`launch.sweep configs/flow3r.py`;
    data.sources and the rest from the command line): 2 x 3 jobs."""
    for size in ("small", "base"):
        for lr in (2.5e-5, 5e-5, 1e-4):
            yield {"size": size, "train.lr": lr}
