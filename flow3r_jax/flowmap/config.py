"""`FlowMapConfig`: every setting of the per-scene optimisation, with FlowMap's defaults.

The numbers are those of the official FlowMap release (`dcharatan/flowmap`, configs
`overfit.yaml`, `model/intrinsics/softmin.yaml`, `model/extrinsics/procrustes.yaml`,
`loss/flow.yaml`, `loss/tracking.yaml`, `loss/mapping/huber.yaml`,
`experiment/ablation_explicit_depth.yaml`). Where this file departs from them it says so.

A config is static (hashable): it selects shapes and branches of the compiled program, so a
change recompiles; the arrays of a scene never do.
"""

from __future__ import annotations

import dataclasses
import math

__all__ = ["FlowMapConfig"]

DEPTH_MODES = ("cnn", "explicit")


@dataclasses.dataclass(frozen=True)
class FlowMapConfig:
    """Settings of `flow3r_jax.flowmap.optimize`.

    Optimisation:
      steps: Adam steps (FlowMap: 2000).
      lr: Adam learning rate of the model parameters (FlowMap: 3e-5).
      focal_lr: Adam learning rate of the stage-2 free focal (None: `lr`, as in FlowMap, where
        the focal then moves by at most ~lr per step: 3% in 1000 steps, too little to undo a
        soft-min error of 10-20%).
    Depth:
      depth: "cnn" (default; depth = exp(raw) + 0.01, or base_depth * exp(raw) when a base
        depth such as Flow3r's is given) or "explicit" (per-pixel depth values, an ablation).
      cnn_widths: channels of the depth CNN at 1/4, 1/8 and 1/16 resolution.
      feature_dim: channels of the features the correspondence MLP sees.
      explicit_initial_depth: starting value of explicit depth (FlowMap: 0.1).
    Correspondence weights:
      use_correspondence_weights: False sets every weight to 1 (FlowMap's ablation).
      corr_hidden: hidden widths of the correspondence MLP.
      weight_clip: lower clip of the sigmoid weights (FlowMap: 1e-4).
      explicit_weight_sensitivity: explicit mode's weights are sigmoid(s * w) with w
        per-pixel parameters starting at 0 (FlowMap: s = 100).
    Poses:
      procrustes_points: pixels per pair used by Procrustes, evenly spaced over the flattened
        image (FlowMap: 1000 for the CNN; None = every pixel, FlowMap's explicit-depth setting).
      procrustes_mask: multiply the Procrustes (and soft-min) weights by the validity of each
        backward correspondence: target inside the frame and forward-backward consistent
        (`inputs.procrustes_validity`). A departure from FlowMap, which relies on the learned
        weights alone; off reproduces FlowMap.
      procrustes_edge: None (default, FlowMap) or a relative depth spread: also zero the
        Procrustes weight of a correspondence whose earlier point is sampled from four pixels
        whose current depths differ by more than that factor (`poses.edge_validity`: the sample
        straddles a depth edge). Opt-in; with exact depth, focal and flow on the accuracy
        benchmark it lowers the readout's ATE from 1.8% to 0.7% of the extent at 0.05.
    Intrinsics (one shared pinhole, principal point at the centre; focal in units of
    f_px / sqrt(H W), FlowMap's unit):
      focal_min, focal_max, focal_candidates: the soft-min candidates (0.5, 2.0, 60).
      softmin_points: random pixels of pair (0, 1) per step for the candidates (8192).
      softmin_temperature: softmin(temperature * (error - min error)) (10).
      focal_regression_after: from this step on the focal is a free parameter (1000; None:
        soft-min throughout); it starts at the mean of the last `focal_regression_window`
        soft-min focals (100).
      fixed_focal: if set, use this focal throughout (no soft-min, no free focal).
    Losses:
      flow_weight, huber_delta: 1000 x Huber(delta 0.01) on aspect-corrected normalised
        coordinates (pixel displacement / sqrt(H W)), divided by delta.
      track_weight, track_after: 100 x the same mapping on point tracks, from step 50.
    Stopping:
      converge_window: 0 (default: FlowMap's fixed `steps`) or W: end the run early once the loss
        has levelled off, judged on the host between stretches of steps: the mean loss of the
        last W steps differs from the mean of the W before by at most `converge_rtol` of it (a
        loss still falling or one rising keeps the run going), both windows after the last
        scheduled switch (the free focal from `focal_regression_after`). The run
        is then complete, not partial (`FlowMapResult.converged`).
      converge_rtol: the relative change of the windowed mean loss that counts as level (0.005).
    Monitoring:
      progress_every: at most this many steps between two host calls (progress report and
        stop check, `optimize.optimize_scene`); 0 (default): about `optimize.CHUNK_SECONDS`
        of steps, and at most 256.
    """

    steps: int = 2000
    lr: float = 3e-5
    focal_lr: float | None = None
    depth: str = "cnn"
    cnn_widths: tuple[int, int, int] = (24, 48, 96)
    feature_dim: int = 32
    explicit_initial_depth: float = 0.1
    use_correspondence_weights: bool = True
    corr_hidden: tuple[int, ...] = (64, 32)
    weight_clip: float = 1e-4
    explicit_weight_sensitivity: float = 100.0
    procrustes_points: int | None = 1000
    procrustes_mask: bool = True
    procrustes_edge: float | None = None
    focal_min: float = 0.5
    focal_max: float = 2.0
    focal_candidates: int = 60
    softmin_points: int = 8192
    softmin_temperature: float = 10.0
    focal_regression_after: int | None = 1000
    focal_regression_window: int = 100
    fixed_focal: float | None = None
    flow_weight: float = 1000.0
    huber_delta: float = 0.01
    track_weight: float = 100.0
    track_after: int = 50
    converge_window: int = 0
    converge_rtol: float = 0.005
    progress_every: int = 0

    def __post_init__(self):
        if self.depth not in DEPTH_MODES:
            raise ValueError(f"FlowMapConfig.depth: expected one of {DEPTH_MODES}, got {self.depth!r}")
        for name in ("steps", "focal_candidates", "softmin_points", "feature_dim", "focal_regression_window"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"FlowMapConfig.{name}: must be a positive integer, got {v!r}")
        if self.procrustes_points is not None and (not isinstance(self.procrustes_points, int) or self.procrustes_points < 3):
            raise ValueError(f"FlowMapConfig.procrustes_points: must be None or an integer >= 3, got {self.procrustes_points!r}")
        if not 0 < self.focal_min < self.focal_max:
            raise ValueError(f"FlowMapConfig: need 0 < focal_min < focal_max, got {self.focal_min}, {self.focal_max}")
        if self.focal_regression_after is not None and self.focal_regression_after < self.focal_regression_window:
            raise ValueError(
                f"FlowMapConfig.focal_regression_after={self.focal_regression_after} must be >= "
                f"focal_regression_window={self.focal_regression_window}"
            )
        if self.procrustes_edge is not None and not self.procrustes_edge > 0:
            raise ValueError(f"FlowMapConfig.procrustes_edge: must be None or positive, got {self.procrustes_edge!r}")
        for name in ("lr", "huber_delta", "softmin_temperature", "explicit_initial_depth"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"FlowMapConfig.{name}: must be a finite number > 0, got {v!r}")
        if not (isinstance(self.converge_window, int) and self.converge_window >= 0):
            raise ValueError(f"FlowMapConfig.converge_window: must be an integer >= 0 (0: off), got {self.converge_window!r}")
        if not (isinstance(self.converge_rtol, (int, float)) and 0 < self.converge_rtol < 1):
            raise ValueError(f"FlowMapConfig.converge_rtol: must be in (0, 1), got {self.converge_rtol!r}")
        for name in ("flow_weight", "track_weight", "track_after", "progress_every"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"FlowMapConfig.{name}: must be a finite number >= 0, got {v!r}")
        if not 0 <= self.weight_clip < 1:
            raise ValueError(f"FlowMapConfig.weight_clip: must be in [0, 1), got {self.weight_clip!r}")
        if self.focal_lr is not None and not self.focal_lr > 0:
            raise ValueError(f"FlowMapConfig.focal_lr: must be None or positive, got {self.focal_lr!r}")
        if self.fixed_focal is not None and not self.fixed_focal > 0:
            raise ValueError(f"FlowMapConfig.fixed_focal: must be positive, got {self.fixed_focal!r}")
        object.__setattr__(self, "cnn_widths", tuple(int(c) for c in self.cnn_widths))
        object.__setattr__(self, "corr_hidden", tuple(int(c) for c in self.corr_hidden))

    @classmethod
    def explicit_depth(cls, **overrides) -> "FlowMapConfig":
        """FlowMap's explicit-depth ablation: per-pixel depth and weights, Procrustes on every
        pixel (`experiment/ablation_explicit_depth.yaml`)."""
        return cls(**{"depth": "explicit", "procrustes_points": None, **overrides})

    def replace(self, **overrides) -> "FlowMapConfig":
        return dataclasses.replace(self, **overrides)

    @property
    def regression_active(self) -> bool:
        """True when the free-focal stage exists within `steps` (FlowMap's two stages)."""
        return self.fixed_focal is None and self.focal_regression_after is not None
