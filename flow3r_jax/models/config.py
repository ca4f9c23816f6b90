"""Model configurations: `large` is the official Flow3r; `base`, `small`, `tiny` keep its structure.

Every size has the same modules in the same arrangement (DINOv2-style encoder with registers,
alternating frame/global decoder, point / conf / camera head decoders, pixel-shuffle heads, camera
head, factored DPT flow head); only widths, depths and head counts shrink. `tiny` exists for tests
and the CPU demo.
"""

from __future__ import annotations

import dataclasses

__all__ = ["ModelConfig", "get_model_config", "MODEL_SIZES"]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters (defaults: the official `large` model)."""

    patch_size: int = 14
    # Encoder (DINOv2 ViT with registers).
    enc_dim: int = 1024
    enc_depth: int = 24
    enc_heads: int = 16
    enc_registers: int = 4
    enc_pos_grid: int = 37  # learned position table for a 518 px square image
    enc_layerscale_init: float = 1.0
    # Decoder: alternating frame / global attention.
    dec_dim: int = 1024
    dec_depth: int = 36
    dec_heads: int = 16
    dec_registers: int = 5
    dec_layerscale_init: float = 0.01
    # Head decoders (point, conf, camera).
    head_dim: int = 1024
    head_depth: int = 5
    head_heads: int = 16
    point_out_dim: int = 1024
    camera_out_dim: int = 512
    mlp_ratio: int = 4
    rope_base: float = 100.0
    # Factored DPT flow head.
    flow_head: str = "factored"  # "factored" | "tracking" | "projective"
    dpt_out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    dpt_features: int = 256
    dpt_head_hidden: int = 32
    # Numerics and memory.
    trunk_dtype: str = "float32"  # encoder, decoder and head decoders; heads always run in fp32
    remat: str = "none"  # "none" | "full" | "dots": rematerialisation policy per transformer block
    attention_chunk: int = 0  # > 0: attention `chunk` queries at a time (layers.chunked_attention)

    def __post_init__(self):
        for name in ("enc", "dec", "head"):
            dim, heads = getattr(self, f"{name}_dim"), getattr(self, f"{name}_heads")
            if dim % heads:
                raise ValueError(f"ModelConfig: {name}_dim={dim} is not divisible by {name}_heads={heads}")
        for name in ("dec", "head"):
            hd = getattr(self, f"{name}_dim") // getattr(self, f"{name}_heads")
            if hd % 4:
                raise ValueError(f"ModelConfig: 2D RoPE needs {name} head dim divisible by 4, got {hd}")
        if self.dec_depth % 2 or self.dec_depth < 2:
            raise ValueError(f"ModelConfig: dec_depth must be even and >= 2 (frame/global pairs), got {self.dec_depth}")
        if self.head_depth < 4:
            raise ValueError(f"ModelConfig: head_depth must be >= 4 (the flow head reads 4 levels), got {self.head_depth}")
        if self.flow_head not in ("factored", "tracking", "projective"):
            raise ValueError(f"ModelConfig: unknown flow_head {self.flow_head!r}")
        if self.remat not in ("none", "full", "dots"):
            raise ValueError(f"ModelConfig: unknown remat policy {self.remat!r}")
        if self.attention_chunk < 0:
            raise ValueError(f"ModelConfig: attention_chunk must be >= 0, got {self.attention_chunk}")
        if self.trunk_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"ModelConfig: trunk_dtype must be float32 or bfloat16, got {self.trunk_dtype!r}")

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)


MODEL_SIZES: dict[str, ModelConfig] = {
    "large": ModelConfig(),
    "base": ModelConfig(
        enc_dim=768, enc_depth=12, enc_heads=12,
        dec_dim=768, dec_depth=24, dec_heads=12,
        head_dim=768, head_depth=5, head_heads=12, point_out_dim=768, camera_out_dim=384,
        dpt_out_channels=(96, 192, 384, 768), dpt_features=128,
    ),
    "small": ModelConfig(
        enc_dim=384, enc_depth=12, enc_heads=6,
        dec_dim=384, dec_depth=12, dec_heads=6,
        head_dim=384, head_depth=4, head_heads=6, point_out_dim=384, camera_out_dim=256,
        dpt_out_channels=(48, 96, 192, 384), dpt_features=64,
    ),
    "tiny": ModelConfig(
        enc_dim=128, enc_depth=2, enc_heads=2, enc_registers=4, enc_pos_grid=8,
        dec_dim=128, dec_depth=2, dec_heads=2,
        head_dim=128, head_depth=4, head_heads=2, point_out_dim=128, camera_out_dim=64,
        dpt_out_channels=(16, 32, 64, 64), dpt_features=32, dpt_head_hidden=16,
    ),
}


def get_model_config(size: str = "large", **overrides) -> ModelConfig:
    """The named size with optional field overrides (e.g. trunk_dtype="bfloat16")."""
    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {sorted(MODEL_SIZES)}")
    return MODEL_SIZES[size].replace(**overrides)
