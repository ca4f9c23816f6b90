"""Dataset-level averages of per-sequence (or per-frame) metric dicts, as π³'s scripts form them."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

__all__ = ["average_metrics"]


def average_metrics(results: Sequence[Mapping[str, float]], weight_key: str | None = None) -> dict[str, float]:
    """Mean of each metric over `results` (a list of dicts with the same keys).

    - `weight_key=None`: the plain mean over sequences. π³ averages trajectory metrics
      (`relpose/evo_utils.py: calculate_averages`) and pointmap metrics (`mv_recon/eval.py`,
      sum / number of sequences) this way.
    - `weight_key="valid_pixels"`: `np.average(..., weights=valid_pixels)`, the pixel-weighted
      mean π³ uses for depth (`videodepth/eval.py` over sequences, `monodepth/eval.py` over all
      frames of a dataset), which equals pooling every valid pixel of the dataset for AbsRel and
      the delta accuracies. The weight key itself is summed, not averaged.

    Keys whose values are not numbers are skipped. Raises ValueError on an empty list or when all
    weights are zero.
    """
    if not results:
        raise ValueError("average_metrics: no results to average")
    keys = [k for k, v in results[0].items() if isinstance(v, (int, float, np.floating, np.integer))]
    weights = None
    if weight_key is not None:
        weights = np.array([float(r[weight_key]) for r in results])
        if not np.any(weights > 0):
            raise ValueError(f"average_metrics: every {weight_key!r} is zero")
    out = {}
    for k in keys:
        values = np.array([float(r[k]) for r in results])
        if k == weight_key:
            out[k] = float(values.sum())
        else:
            out[k] = float(np.average(values, weights=weights))
    return out
