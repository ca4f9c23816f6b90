"""Metric writers: only process 0 writes (TensorBoard event files through tensorboardX, which
needs no TensorFlow, and `metrics.jsonl` in the workdir, one JSON object per logged step); every
process logs to stderr with its index; a progress bar when stderr is a terminal.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time

import jax
import numpy as np

__all__ = ["MetricWriter", "setup_logging", "read_jsonl"]


def _not_ours(record: logging.LogRecord) -> bool:
    return not record.name.startswith("flow3r_jax")


def setup_logging(level=logging.INFO) -> None:
    """stderr logging prefixed with the process index (call after distributed.initialize).

    The project's records (loggers under `flow3r_jax`) are printed by this handler only; absl's
    handler (installed by `absl.app.run`) keeps the other libraries' records, so that no line is
    printed twice."""
    fmt = f"%(asctime)s [p{jax.process_index()}] %(levelname)s %(name)s: %(message)s"
    root = logging.getLogger()
    if not any(getattr(h, "_flow3r", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(fmt, "%H:%M:%S"))
        handler._flow3r = True
        # one line per record: drop handlers a library's basicConfig may have installed
        root.handlers = [h for h in root.handlers if type(h).__name__ == "ABSLHandler"] + [handler]
    for h in root.handlers:
        if type(h).__name__ == "ABSLHandler" and _not_ours not in h.filters:
            h.addFilter(_not_ours)
    root.setLevel(level)
    for noisy in ("absl", "jax._src", "orbax", "grain"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _scalar(v) -> float:
    return float(np.asarray(v))


class MetricWriter:
    def __init__(self, workdir: str, total_steps: int, start_step: int = 0, progress: bool = True):
        self.active = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        self._bar = None
        if not self.active:
            return
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
        if progress and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    def write(self, step: int, metrics: dict) -> None:
        if not self.active:
            return
        values = {k: _scalar(v) for k, v in metrics.items()}
        for k, v in values.items():
            if math.isfinite(v):
                self._tb.add_scalar(k, v, step)
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": int(step), "time": time.time(), **{k: (v if math.isfinite(v) else str(v)) for k, v in values.items()}}) + "\n")
        self._tb.flush()

    def progress(self, step: int, loss: float | None = None) -> None:
        if self._bar is not None:
            self._bar.n = step
            if loss is not None:
                self._bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
