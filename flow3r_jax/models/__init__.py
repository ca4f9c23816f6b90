"""Flax NNX Flow3r: encoder, decoder, heads, flow heads and the assembled model.

    from flow3r_jax.models import Flow3r, Predictor, get_model_config, flow_to_pixels
    model = Flow3r(get_model_config("tiny"), rngs=nnx.Rngs(0))
    out = model(images, pairs)            # images (B, N, H, W, 3) float in [0, 1], eager
    out = Predictor(model)(images, pairs)  # the same, one compiled program per input shape
    flow_px = flow_to_pixels(out["flow"])  # official NDC positions -> pixel displacement

Bad inputs raise `ModelInputError` (a ValueError; see `flow3r_jax.models.inputs`).
"""

from flow3r_jax.geometry import ndc_coords_to_flow as flow_to_pixels
from flow3r_jax.models.config import MODEL_SIZES, ModelConfig, get_model_config
from flow3r_jax.models.flow3r import Flow3r, check_image_shape
from flow3r_jax.models.inference import Predictor
from flow3r_jax.models.inputs import ModelInputError

__all__ = ["Flow3r", "Predictor", "ModelConfig", "MODEL_SIZES", "get_model_config", "flow_to_pixels", "check_image_shape", "ModelInputError"]
