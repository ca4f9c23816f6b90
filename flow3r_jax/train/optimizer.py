"""The optimiser: AdamW with a one-cycle cosine schedule, per-group learning rates (the encoder at
`encoder_lr_mult` x lr), no weight decay on norms, biases and tokens, and global-norm clipping.

Only the trainable parameters reach the optimiser (`state.trainable_mask`), so frozen parameters
have no optimiser state at all.

The schedule follows PyTorch's `OneCycleLR(anneal_strategy="cos")` as pi^3 configures it
(`pct_start` = warmup_frac, `div_factor`, `final_div_factor`): cosine from lr / div to lr over the
warm-up steps, then cosine from lr down to lr / div / final_div at the last step. With
warmup_frac = 0 (pi^3) the decay starts at once (PyTorch's empty first phase ends at step -1). One difference: pi^3 passes a
single `max_lr` to OneCycleLR, which overrides its separate encoder lr; here the encoder's group
keeps its multiplier throughout (pi^3 freezes the encoder, so this changes nothing there).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import optax

from flow3r_jax.train.state import decays

__all__ = ["one_cycle_schedule", "make_optimizer"]


def one_cycle_schedule(peak: float, total_steps: int, warmup_frac: float = 0.0, div_factor: float = 1000.0, final_div_factor: float = 100.0) -> optax.Schedule:
    """lr(step) for step = 0 .. total_steps - 1 (see the module docstring)."""
    if total_steps < 1:
        raise ValueError(f"schedule: total_steps must be >= 1, got {total_steps}")
    if not 0.0 <= warmup_frac < 1.0:
        raise ValueError(f"schedule: warmup_frac must be in [0, 1), got {warmup_frac}")
    start, end = peak / div_factor, peak / div_factor / final_div_factor
    warm_end = float(warmup_frac * total_steps) - 1.0  # PyTorch's phase boundary
    last = float(total_steps - 1)

    def cos_anneal(a, b, pct):
        return b + (a - b) / 2.0 * (jnp.cos(math.pi * pct) + 1.0)

    def schedule(step):
        s = jnp.asarray(step, jnp.float32)
        down = cos_anneal(peak, end, jnp.clip((s - warm_end) / max(last - warm_end, 1.0), 0.0, 1.0))
        if warm_end > 0:
            up = cos_anneal(start, peak, jnp.clip(s / warm_end, 0.0, 1.0))
            return jnp.where(s <= warm_end, up, down)
        return down

    return schedule


def make_optimizer(tc, names: list[str]) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(transformation over the trainable parameter dict `names`, the base lr schedule).
    `tc` is the config's `train` block."""
    base = one_cycle_schedule(tc.lr, tc.steps, tc.warmup_frac, tc.div_factor, tc.final_div_factor)
    mult = float(tc.encoder_lr_mult)

    def adamw(scale: float):
        sched = base if scale == 1.0 else (lambda step: base(step) * scale)
        return optax.adamw(sched, b1=tc.b1, b2=tc.b2, eps=tc.eps, weight_decay=tc.weight_decay, mask=lambda p: {n: decays(n) for n in p})

    labels = {n: ("encoder" if n.startswith("encoder/") else "rest") for n in names}
    groups = {"rest": adamw(1.0)}
    if any(v == "encoder" for v in labels.values()):
        groups["encoder"] = adamw(mult)
    tx = optax.chain(optax.clip_by_global_norm(tc.clip_grad), optax.multi_transform(groups, labels))
    return tx, base
