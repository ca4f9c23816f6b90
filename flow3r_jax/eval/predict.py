"""Running a model on evaluation sequences the way π³'s released evaluation does.

Input sizing (π³ `utils/interfaces.py`, `load_images` + `load_and_resize14`): every frame is
resized with PIL's Lanczos filter to width `load_width` and height
round(H * load_width / W / 14) * 14, then with an antialiased bilinear resize to the nearest
lower multiple of 14 in both sides (so a 512 load width feeds 504 pixels). `load_width` is 512
for depth and pose and 518 for pointmaps (π³ `configs/evaluation/*.yaml`).

Outputs per sequence (float32 NumPy on the model grid): camera-to-world poses, z-depth of the
local points, global points, confidence (sigmoid), and where flow pairs are asked for, the flow
head's pixel flow and the flow induced by the predicted geometry (the parameter-free projective
head: frame i's local points moved into camera j by the predicted poses and projected with the
least-squares focal of frame j's points).

Sequences with the same frame count and input size run together, one per device, the batch
sharded over a 1-D device mesh (data parallel over sequences).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = ["LOAD_WIDTH", "pi3_input_size", "pi3_resize", "SequencePrediction", "SequencePredictor"]

# π³ configs/evaluation/{videodepth,monodepth,relpose-*,mv_recon}.yaml: load_img_size.
LOAD_WIDTH = {"video_depth": 512, "mono_depth": 512, "pose_trajectory": 512, "pose_angular": 512, "pointmap": 518, "flow": 512}


def pi3_input_size(height: int, width: int, load_width: int, patch: int = 14) -> tuple[tuple[int, int], tuple[int, int]]:
    """((Lanczos height, width), (model height, width)) of π³'s evaluation resize."""
    h1 = int(round(height * (load_width / width) / patch)) * patch
    w1 = load_width
    return (h1, w1), ((h1 // patch) * patch, (w1 // patch) * patch)


def pi3_resize(images: np.ndarray, load_width: int, patch: int = 14) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 (N, h, w, 3) in [0, 1], π³'s evaluation resize."""
    from PIL import Image

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"pi3_resize: expected (N, H, W, 3) images, got {images.shape}")
    (h1, w1), (h2, w2) = pi3_input_size(images.shape[1], images.shape[2], load_width, patch)
    if h1 < patch or w1 < patch:
        raise ValueError(f"pi3_resize: {images.shape[1]}x{images.shape[2]} frames give a {h1}x{w1} input, smaller than one {patch}-pixel patch")
    out = np.stack([np.asarray(Image.fromarray(im).resize((w1, h1), Image.Resampling.LANCZOS), np.float32) / 255.0 for im in images])
    if (h2, w2) != (h1, w1):
        out = np.asarray(jax.image.resize(jnp.asarray(out), (len(out), h2, w2, 3), "linear", antialias=True))
    return out.astype(np.float32)


@dataclasses.dataclass
class SequencePrediction:
    poses: np.ndarray  # (N, 4, 4) camera-to-world
    depth: np.ndarray  # (N, h, w) z of the local points
    points: np.ndarray  # (N, h, w, 3) global points
    conf: np.ndarray  # (N, h, w) sigmoid confidence
    flow: np.ndarray | None = None  # (P, h, w, 2) pixel flow of the flow head for `pairs`
    induced_flow: np.ndarray | None = None  # (P, h, w, 2) flow of the predicted geometry
    pairs: np.ndarray | None = None  # (P, 2)
    seconds: float = 0.0  # model time of this sequence (its share of a batch)


class SequencePredictor:
    """Runs one model on batches of same-shape sequences, data parallel over the devices."""

    def __init__(self, model, devices=None, precision: str = "highest"):
        from flax import nnx

        from flow3r_jax.models.alt_flow_heads import ProjectiveFlowHead

        self.cfg = model.cfg
        self.devices = list(devices if devices is not None else jax.devices())
        self.mesh = Mesh(np.asarray(self.devices), ("data",))
        graphdef, state = nnx.split(model)
        self._state = jax.device_put(state, NamedSharding(self.mesh, P()))
        self._precision = precision
        projective = ProjectiveFlowHead(self.cfg)

        def forward(state, images, pairs):
            out = nnx.merge(graphdef, state)(images, pairs)
            res = {"poses": out["camera_poses"], "depth": out["local_points"][..., 2], "points": out["points"], "conf": jax.nn.sigmoid(out["conf"][..., 0])}
            if pairs is not None:
                from flow3r_jax.geometry.flow import ndc_coords_to_flow

                res["flow"] = ndc_coords_to_flow(out["flow"])
                res["induced_flow"] = ndc_coords_to_flow(projective(out["local_points"], out["camera_poses"], pairs))
            return res

        self._fwd_pairs = jax.jit(forward)
        self._fwd = jax.jit(lambda s, x: forward(s, x, None))

    @property
    def batch_size(self) -> int:
        return len(self.devices)

    def __call__(self, images: list[np.ndarray], pairs: np.ndarray | None = None) -> list[SequencePrediction]:
        """images: up to `batch_size` float32 arrays (N, h, w, 3) of one shape -> their predictions."""
        import time

        from flow3r_jax.models.flow3r import check_image_shape

        k = len(images)
        if not 1 <= k <= self.batch_size or len({im.shape for im in images}) != 1:
            raise ValueError(f"SequencePredictor: 1..{self.batch_size} sequences of one shape, got {[im.shape for im in images]}")
        batch = np.stack(list(images) + [images[-1]] * (self.batch_size - k))  # pad to one per device
        check_image_shape(batch.shape, self.cfg.patch_size)
        x = jax.device_put(batch, NamedSharding(self.mesh, P("data")))
        t = time.perf_counter()
        with jax.default_matmul_precision(self._precision):
            if pairs is None:
                out = self._fwd(self._state, x)
            else:
                pb = jax.device_put(np.broadcast_to(np.asarray(pairs, np.int32), (self.batch_size, *np.shape(pairs))).copy(), NamedSharding(self.mesh, P("data")))
                out = self._fwd_pairs(self._state, x, pb)
            out = jax.tree.map(np.asarray, jax.block_until_ready(out))
        dt = (time.perf_counter() - t) / k
        return [
            SequencePrediction(
                poses=out["poses"][b].astype(np.float64),
                depth=out["depth"][b],
                points=out["points"][b],
                conf=out["conf"][b],
                flow=out.get("flow", [None] * k)[b] if pairs is not None else None,
                induced_flow=out.get("induced_flow", [None] * k)[b] if pairs is not None else None,
                pairs=None if pairs is None else np.asarray(pairs),
                seconds=dt,
            )
            for b in range(k)
        ]
