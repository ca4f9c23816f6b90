"""The paper's controlled experiment on the flow head: what unlabeled video with flow adds to
3D-supervised training, and which flow head turns it into better geometry
(`python -m launch.sweep configs/ablation_flow_heads.py --workdir DIR --config.ablation.labeled=...`).

OPTIONS is a comma-separated list of NAME=VALUE (all optional):

    variant=supervised|factored|tracking|projective|factored_more_data|consistency   (default factored)
        supervised          3D-supervised only: labeled clips, flow loss weight 0 (the flow
                            head is built but gets no gradient)
        factored            + unlabeled clips, Flow3r's factored flow head
        tracking            + unlabeled clips, a tracking head (feature matching, no geometry)
        projective          + unlabeled clips, flow induced by the predicted points and poses
                            (no head parameters: the flow loss trains the geometry directly)
        factored_more_data  factored with the larger unlabeled set (`ablation.unlabeled_more`)
        consistency         factored + DF-Net's cross-task consistency (configs/flow3r.py
                            consistency=target, weight 0.1 in NDC units): on pixels both branches find
                            reliable, the flow induced by the predicted depth and poses must
                            match the flow target (docs/dfnet.md)
    size=tiny|small|base|large   model size (default tiny; issue 23 runs the ablation at tiny)
    seed=N                       model initialisation and data order (default 0)

Every variant has the same budget: steps, global batch, frames, image size and optimiser are
those of configs/flow3r.py for the size, stage 2 (everything but the encoder trains). The
dataset directories are fields, set on the command line; data.sources follows them (a
reference): labeled only for `supervised`, else labeled and unlabeled at equal weights.
"""

from __future__ import annotations

import ml_collections

from configs import flow3r
from configs.flow3r import parse_options

ENTRY = "launch.train"  # what `launch.sweep` runs for a job of this config
WORKDIR_FLAG = "workdir"

VARIANTS = ("supervised", "factored", "tracking", "projective", "factored_more_data", "consistency")
_HEAD = {"supervised": "factored", "factored": "factored", "tracking": "tracking", "projective": "projective", "factored_more_data": "factored", "consistency": "factored"}

_OPTIONS = {"variant": "factored", "size": "tiny", "seed": "0"}
_CHOICES = {"variant": VARIANTS, "size": ("tiny", "small", "base", "large")}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_options(arg, _OPTIONS, _CHOICES)
    if not opts["seed"].isdigit():
        raise ValueError(f"config option seed={opts['seed']!r}: expected a non-negative integer")
    variant, seed = opts["variant"], int(opts["seed"])
    consistency = "target" if variant == "consistency" else "off"
    c = flow3r.get_config(f"size={opts['size']},stage=2,heads={_HEAD[variant]},consistency={consistency}")
    c.options = arg or ""
    c.seed = seed
    c.data.seed = seed

    c.ablation = ml_collections.ConfigDict()
    c.ablation.variant = variant
    c.ablation.labeled = ""  # dataset directory of labeled clips (data_pipelines' writer)
    c.ablation.unlabeled = ""  # unlabeled clips with precomputed flow
    c.ablation.unlabeled_more = ""  # about 4x as many unlabeled clips (factored_more_data)

    labeled = c.ablation.get_ref("labeled")
    if variant == "supervised":
        c.data.sources = labeled
        c.loss.flow_weight = 0.0  # total = ... + 0 x flow: no gradient reaches the flow head
    else:
        unlabeled = c.ablation.get_ref("unlabeled_more" if variant == "factored_more_data" else "unlabeled")
        c.data.sources = labeled + "," + unlabeled
    return c


def sweep():
    """Every variant with three seeds: 6 x 3 jobs."""
    for variant in VARIANTS:
        for seed in range(3):
            yield {"variant": variant, "seed": seed}
