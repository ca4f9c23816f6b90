"""Training TracksTo4D (Kasten et al. 2024, `NVlabs/tracks-to-4d`) on point-track clips through the
project's trainer (`python -m launch.train --config configs/tracks4d.py:size=tiny --workdir DIR
--config.data.sources=DIR`; write DIR with `python -m data_pipelines.synthetic_tracks --out DIR`).

OPTIONS (comma-separated NAME=VALUE): size=tiny|small|base (base: the released network, width 256,
3 blocks, 16 heads x 64, MLP 2048, K = 12, conv kernel 31), focal=0|1 (predict a focal
correction: the official --predict_focal_length, for uncalibrated tracks), mesh=dp|fsdp.
Defaults cite the official `train.py` / `pretrained_checkpoints/*.json`.
"""

from __future__ import annotations

import ml_collections

from configs.flow3r import parse_options

ENTRY = "launch.train"  # what `launch.sweep` runs for a job of this config
WORKDIR_FLAG = "workdir"

_OPTIONS = {"size": "base", "focal": "0", "mesh": "dp"}
_CHOICES = {"size": ("tiny", "small", "base"), "focal": ("0", "1"), "mesh": ("dp", "fsdp")}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_options(arg, _OPTIONS, _CHOICES)
    tiny = opts["size"] == "tiny"
    c = ml_collections.ConfigDict()
    c.method = "tracks4d"
    c.options = arg or ""
    c.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.size = opts["size"]
    c.model.predict_focal = opts["focal"] == "1"
    c.model.remat = "none"

    c.init = ml_collections.ConfigDict()
    c.init.kind = "random"  # | "checkpoint" (a workdir / step directory of this config)
    c.init.path = ""

    c.data = ml_collections.ConfigDict()
    c.data.sources = ""  # directories of clip_*.npz (data_pipelines.synthetic_tracks)
    c.data.global_batch = 2 if tiny else 1  # official DataLoader batch_size 1
    c.data.frames = 8 if tiny else 24  # official: 20-50 sampled frames per clip (max_cameras 50)
    c.data.tracks = 64 if tiny else 100  # official max_points 100
    c.data.seed = 0

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
    if opts["mesh"] == "fsdp":
        c.mesh.data, c.mesh.fsdp = 1, -1
    c.mesh.rules = (("embed", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"), ("layers", None))

    c.train = ml_collections.ConfigDict()
    c.train.trainable = "all"
    c.train.steps = 60 if tiny else 200_000
    c.train.lr = 1e-3 if tiny else 1e-4  # official Adam lr 1e-4
    # Plain Adam (official optim.Adam): no decay, a constant rate, no gradient clipping.
    c.train.encoder_lr_mult = 1.0
    c.train.weight_decay = 0.0
    c.train.b1, c.train.b2, c.train.eps = 0.9, 0.999, 1e-8  # torch Adam defaults
    c.train.warmup_frac, c.train.div_factor, c.train.final_div_factor = 0.0, 1.0, 1.0
    c.train.clip_grad = 1e9
    c.train.clip_loss = float("inf")  # the loss clips itself (loss.clip)
    c.train.microbatches = 1

    c.loss = ml_collections.ConfigDict()
    c.loss.dynamic_weight = 50.0  # reprojection_dynamic_coeff
    c.loss.sparsity_weight = 1e-3  # sparsity_dynamic_coeff
    c.loss.depth_weight = 1.0
    c.loss.clip = 100.0  # torch.clamp(loss, max=100)
    # official: camera warm-up until its loss < 1e-4 (num_pre_train_epochs); here a step count
    c.loss.warmup_steps = 10 if tiny else 2000

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 50 if tiny else 1000
    c.checkpoint.keep = 3
    c.checkpoint.save_initial = False
    c.checkpoint.best_metric = ""
    c.checkpoint.best_mode = "min"
    c.checkpoint.keep_best = 1

    c.log = ml_collections.ConfigDict()
    c.log.every = 10 if tiny else 100
    c.log.progress = True

    c.eval = ml_collections.ConfigDict()
    c.eval.fn = ""  # "module:function": fn(model, config, step) -> {name: float}
    c.eval.every = 0
    return c


def sweep():
    """Dynamic-reprojection weight around the official 50 (`launch.sweep configs/tracks4d.py`;
    data.sources from the command line): 3 jobs."""
    for w in (25.0, 50.0, 100.0):
        yield {"loss.dynamic_weight": w}
