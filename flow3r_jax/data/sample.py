"""One training sample from one encoded clip record: N frames, S flow pairs, fixed shapes.

`make_sample(record, cfg, rng)` decodes only what it uses (the chosen frames and the chosen
pairs' flows), resizes and crops everything consistently (`transforms`), and returns a dict of
NumPy arrays with the same shapes for every clip kind:

    images      uint8   (N, H, W, 3)
    depth       float32 (N, H, W)      0 where unknown (always for unlabeled clips)
    valid       bool    (N, H, W)      depth / point supervision valid
    intrinsics  float32 (N, 3, 3)      0 for unlabeled clips
    poses       float32 (N, 4, 4)      camera-to-world; identity for unlabeled clips
    pairs       int32   (S, 2)         (i, j) in sample frame indices; (0, 0) for padding
    flow        float32 (S, H, W, 2)   pixel displacement i -> j; 0 where not stored
    covisible   bool    (S, H, W)
    pair_valid  bool    (S,)           a real pair (not padding)
    flow_stored bool    (S,)           flow came from the record; else derive it from depth and
                                       poses (labeled clips only, `targets.derive_flows`)
    labeled     bool    ()             geometry supervision available
    high_quality bool   ()             depth good enough for the normal loss
    source      int32   ()             index of the dataset in the mixture

Flow stays in pixels here; the conversion to the official NDC target happens once, on device,
in `flow3r_jax.data.targets`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from flow3r_jax.data import records
from flow3r_jax.data.sampling import choose_frames, choose_pairs
from flow3r_jax.data.transforms import colour_params, keep_landing_inside, plan_resize_crop, warp_depth, warp_flow, warp_frame, warp_intrinsics

__all__ = ["SampleConfig", "make_sample", "sample_spec"]


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    frames: int = 8
    pairs: int = 8
    height: int = 378
    width: int = 518
    frame_mode: str = "window"  # "window" | "spread"
    max_stride: int = 3
    train: bool = True  # random crop / zoom / colour; centred crop, no colour otherwise
    max_zoom: float = 1.0
    colour: float = 1.0  # colour-jitter strength (0 disables)

    @classmethod
    def for_budget(cls, aspect_height: int, aspect_width: int, max_pixels: int = 255_000, **kwargs) -> "SampleConfig":
        """The largest multiple-of-14 size with the given aspect ratio and at most `max_pixels`
        pixels, by the official inference rule (`frames.official_target_size`)."""
        from flow3r_jax.data.frames import official_target_size

        h, w = official_target_size(aspect_height, aspect_width, max_pixels)
        return cls(height=h, width=w, **kwargs)

    def __post_init__(self):
        if self.height % 14 or self.width % 14 or self.height <= 0 or self.width <= 0:
            raise ValueError(f"SampleConfig: height and width must be positive multiples of 14, got {self.height}x{self.width}")
        if self.frames < 1 or self.pairs < 0:
            raise ValueError(f"SampleConfig: need frames >= 1 and pairs >= 0, got {self.frames}, {self.pairs}")


def sample_spec(cfg: SampleConfig) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every field of a sample."""
    N, S, H, W = cfg.frames, cfg.pairs, cfg.height, cfg.width
    return {
        "images": ((N, H, W, 3), np.uint8),
        "depth": ((N, H, W), np.float32),
        "valid": ((N, H, W), np.bool_),
        "intrinsics": ((N, 3, 3), np.float32),
        "poses": ((N, 4, 4), np.float32),
        "pairs": ((S, 2), np.int32),
        "flow": ((S, H, W, 2), np.float32),
        "covisible": ((S, H, W), np.bool_),
        "pair_valid": ((S,), np.bool_),
        "flow_stored": ((S,), np.bool_),
        "labeled": ((), np.bool_),
        "high_quality": ((), np.bool_),
        "source": ((), np.int32),
    }


_ZEROS: dict = {}


def _zeros(shape: tuple[int, ...], dtype) -> np.ndarray:
    """A cached read-only zero array (unlabeled samples' depth and validity: ~8 MB per sample
    that need not be allocated and cleared every time)."""
    key = (shape, np.dtype(dtype).str)
    if key not in _ZEROS:
        if len(_ZEROS) > 8:
            _ZEROS.clear()
        z = np.zeros(shape, dtype)
        z.flags.writeable = False
        _ZEROS[key] = z
    return _ZEROS[key]


def make_sample(record: bytes, cfg: SampleConfig, rng: np.random.Generator, source: int = 0, verify: bool = True) -> dict[str, np.ndarray]:
    clip = records.decode_record(record, blob_views=True, verify=verify)
    labeled = isinstance(clip, records.LabeledClip)
    clip_id = clip.clip_id if labeled else clip.video_id
    N, S, H, W = cfg.frames, cfg.pairs, cfg.height, cfg.width
    frames = choose_frames(clip.num_frames, N, rng, cfg.frame_mode, cfg.max_stride, clip_id)
    stored = clip.pairs if clip.flows is not None and len(clip.flows) else None
    if stored is None and not labeled:
        stored = np.zeros((0, 2), np.int32)  # unlabeled clips without flow give no pairs
    pairs, index, pair_valid = choose_pairs(frames, stored, S, rng)
    t = plan_resize_crop(clip.height, clip.width, H, W, rng if cfg.train else None, cfg.max_zoom)

    spec = sample_spec(cfg)
    # Small fields start zeroed; the large ones are written in place (no zero-fill, no stacking).
    out = {name: np.zeros(shape, dtype) for name, (shape, dtype) in spec.items() if name not in ("images", "flow", "covisible", "depth", "valid")}
    jitter = colour_params(rng, cfg.colour) if cfg.train and cfg.colour > 0 else None
    images = np.empty(spec["images"][0], np.uint8)
    for k, f in enumerate(frames):  # decoded one at a time, resized / cropped / coloured into place
        warp_frame(clip.decode_frame(int(f)), t, images[k], jitter)
    out["images"] = images
    out["pairs"], out["pair_valid"] = pairs, pair_valid
    flow, covisible = np.empty(spec["flow"][0], np.float32), np.empty(spec["covisible"][0], np.bool_)
    rows, cols = t.window
    for s in range(S):
        if pair_valid[s] and index[s] >= 0:
            if t.crop_only:  # the codec decodes the window straight into the sample's slot
                clip.decode_flow(int(index[s]), crop=(rows.start, cols.start, H, W), out=flow[s], mask_out=covisible[s])
                keep_landing_inside(flow[s], covisible[s])
            else:
                flow[s], covisible[s] = warp_flow(*clip.decode_flow(int(index[s])), t)
            out["flow_stored"][s] = True
        else:
            flow[s], covisible[s] = 0.0, False
    out["flow"], out["covisible"] = flow, covisible
    out["poses"][:] = np.eye(4, dtype=np.float32)
    if labeled:
        depth, valid = warp_depth(clip.depth, clip.valid, t, frames)
        valid &= depth > 0  # nearest resampling picks one source pixel for both: same as before
        out["depth"], out["valid"] = depth, valid
        out["intrinsics"] = warp_intrinsics(clip.intrinsics[frames], t)
        out["poses"] = clip.poses[frames].astype(np.float32)
        out["high_quality"] = np.bool_(clip.high_quality)
    else:  # no geometry: shared read-only zeros (a sample is never written after it is made)
        out["depth"], out["valid"] = _zeros(*spec["depth"]), _zeros(*spec["valid"])
    out["labeled"] = np.bool_(labeled)
    out["source"] = np.int32(source)
    return out
