"""stts: Spatial-Temporal Token Selection for efficient video transformers.

import stts
model = stts.build_model("mvit_b_16x4_t0.9_s0.9", checkpoint="t0_0.9_s4_0.9.pyth")
stts.list_models()
"""

from .registry import build_model, input_shape, list_models, model_config

__all__ = ["build_model", "input_shape", "list_models", "model_config"]
