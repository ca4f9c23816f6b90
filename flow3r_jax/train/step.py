"""The train step: one jitted pure function `(state, batch) -> (state, metrics)`.

    batch (global arrays over ("data", "fsdp"))
      -> prepare_batch (images to [0, 1], derived flows, the NDC flow target)
      -> micro-batches (strided, so each stays spread over the devices), scanned:
           model forward (bf16 trunk / fp32 heads per the model config, remat per the config)
           -> flow3r_loss -> loss clipping (a total above clip_loss gives no gradient, pi^3)
           -> gradients of the trainable parameters only, summed
      -> mean gradients -> global-norm clip + AdamW (optimizer.py)
      -> a step whose gradients are not finite is skipped: the state stays as it was except
         the step counter and the skipped-step counter.

`build_train_step` returns the jitted function with explicit in/out shardings and the state
donated. Metrics are fp32 scalars (loss terms averaged over micro-batches, grad norm, lr, counts).

What is Flow3r-specific (preparing the batch, calling the model, the loss, the non-finite terms
counted, a batch's sample and frame counts) is a `StepMethod`; `flow3r_method(loss_cfg)` is the
default, and other training methods (`flow3r_jax.train.method`) pass theirs.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from flow3r_jax.data.targets import prepare_batch
from flow3r_jax.losses import LossConfig, flow3r_loss
from flow3r_jax.train.mesh import BATCH_AXES
from flow3r_jax.train.state import ParamLayout

__all__ = ["loss_and_grads", "make_step_fn", "build_train_step", "NONFINITE_TERMS", "COUNTERS", "StepMethod", "flow3r_method", "counter_names"]

NONFINITE_TERMS = ("point", "normal", "conf", "camera", "flow")


def counter_names(nonfinite_terms: tuple[str, ...]) -> tuple[str, ...]:
    """int32 counters of the state: skipped steps, steps with a non-finite loss term, and the
    samples and frames trained on (batches of frame-count buckets differ in both)."""
    return ("skipped_steps", *(f"nonfinite/{k}" for k in nonfinite_terms), "samples", "frames")


COUNTERS = counter_names(NONFINITE_TERMS)


@dataclasses.dataclass(frozen=True)
class StepMethod:
    """What the generic step needs from a training method.

    prepare: batch -> batch (inside jit, once per step); loss: (model, batch, step) -> (total,
    terms) with a `nonfinite/<k>` term (> 0 when term k is not finite) for each k of
    `nonfinite_terms`; counts: batch -> (samples, frames), static Python ints; clip_basis:
    (total, terms) -> the value compared with `clip_loss` (default the total)."""

    prepare: Callable
    loss: Callable
    nonfinite_terms: tuple[str, ...]
    counts: Callable
    clip_basis: Callable | None = None

    @property
    def counters(self) -> tuple[str, ...]:
        return counter_names(self.nonfinite_terms)


def flow3r_method(loss_cfg: LossConfig) -> StepMethod:
    """Flow3r: `prepare_batch`, the model on (images, pairs), `flow3r_loss`."""

    def loss(model, mb, step):
        return flow3r_loss(model(mb["images"], mb["pairs"]), mb, loss_cfg)

    def clip_basis(total, terms):
        # pi^3's clip_loss judges pi^3's loss: DF-Net's consistency term (pixels, large while
        # the depth is untrained) would otherwise drop every step from random initialisation.
        return total - loss_cfg.consistency_weight * terms["consistency"] if "consistency" in terms else total

    return StepMethod(prepare_batch, loss, NONFINITE_TERMS, lambda batch: tuple(batch["images"].shape[:2]), clip_basis)


def _split_micro(x: jax.Array, m: int, mesh) -> jax.Array:
    """(B, ...) -> (m, B/m, ...) taking every m-th sample, so each micro-batch keeps the batch
    sharding (contiguous chunks would each sit on a fraction of the devices)."""
    b = x.shape[0] // m
    y = jnp.swapaxes(x.reshape((b, m) + x.shape[1:]), 0, 1)
    if mesh is not None:
        y = jax.lax.with_sharding_constraint(y, NamedSharding(mesh, PartitionSpec(None, BATCH_AXES, *([None] * (x.ndim - 1)))))
    return y


def loss_and_grads(layout: ParamLayout, loss_cfg: LossConfig, params, frozen, batch, clip_loss: float = float("inf"), microbatches: int = 1, mesh=None, method: StepMethod | None = None, step=None):
    """(grads of the trainable `params`, terms averaged over micro-batches) on a prepared batch.
    `method` (default Flow3r's with `loss_cfg`) calls the model and computes the loss."""
    method = flow3r_method(loss_cfg) if method is None else method

    def loss_fn(p, mb):
        model = layout.model({**frozen, **p})
        total, terms = method.loss(model, mb, step)
        clipped = (total if method.clip_basis is None else method.clip_basis(total, terms)) > clip_loss
        return jnp.where(clipped, 0.0, total), {**terms, "loss_clipped": clipped.astype(jnp.float32)}

    grad_fn = jax.grad(loss_fn, has_aux=True)
    if microbatches == 1:
        return grad_fn(params, batch)

    micro = jax.tree.map(lambda x: _split_micro(x, microbatches, mesh), batch)

    def body(acc, mb):
        g, t = grad_fn(params, mb)
        return jax.tree.map(jnp.add, acc, (g, t)), None

    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro)))
    (g, t), _ = jax.lax.scan(body, zeros, micro)
    return jax.tree.map(lambda x: x / microbatches, (g, t))


def make_step_fn(layout: ParamLayout, tx: optax.GradientTransformation, schedule, loss_cfg: LossConfig, clip_loss: float, microbatches: int, mesh=None, method: StepMethod | None = None):
    """The pure step function (not yet jitted)."""
    method = flow3r_method(loss_cfg) if method is None else method

    def step_fn(state, batch):
        prepared = method.prepare(batch)
        grads, terms = loss_and_grads(layout, loss_cfg, state["params"], state["frozen"], prepared, clip_loss, microbatches, mesh, method, state["step"])
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(grad_norm)
        updates, new_opt = tx.update(grads, state["opt"], state["params"])
        new_params = optax.apply_updates(state["params"], updates)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
        counters = dict(state["counters"])
        counters["skipped_steps"] = counters["skipped_steps"] + (~finite).astype(jnp.int32)
        for k in method.nonfinite_terms:
            counters[f"nonfinite/{k}"] = counters[f"nonfinite/{k}"] + (terms[f"nonfinite/{k}"] > 0).astype(jnp.int32)
        b, n = method.counts(batch)  # static: this step's bucket
        counters["samples"] = counters["samples"] + jnp.int32(b)
        counters["frames"] = counters["frames"] + jnp.int32(b * n)
        new_state = {
            "step": state["step"] + 1,
            "params": keep(new_params, state["params"]),
            "frozen": state["frozen"],
            "opt": keep(new_opt, state["opt"]),
            "counters": counters,
        }
        metrics = {f"loss/{k}": v for k, v in terms.items() if not k.startswith("nonfinite/") and k != "loss_clipped"}
        metrics.update({f"count/{k}": v.astype(jnp.float32) for k, v in counters.items()})
        metrics["train/grad_norm"] = grad_norm
        metrics["train/lr"] = schedule(state["step"])
        metrics["train/loss_clipped"] = terms["loss_clipped"]
        metrics["train/step_skipped"] = (~finite).astype(jnp.float32)
        metrics["train/batch_samples"] = jnp.float32(b)
        metrics["train/batch_frames"] = jnp.float32(n)
        return new_state, metrics

    return step_fn


def build_train_step(step_fn, state_shardings, batch_shardings, mesh):
    """jit with explicit shardings; the state is donated (updated in place on device)."""
    return jax.jit(step_fn, in_shardings=(state_shardings, batch_shardings), out_shardings=(state_shardings, NamedSharding(mesh, PartitionSpec())), donate_argnums=(0,))
