"""Small modules: the embedded tiny model and model loading (value head, adapters and planes come later)."""

from trl_ext.models.loading import (
    ModelNotFoundError,
    default_device,
    is_peft_adapter_dir,
    load_causal_lm,
    load_for_inference,
    load_tokenizer,
    resolve_model_name_or_path,
)
from trl_ext.models.tiny_model import TINY_MODEL_NAME, TinyModelConfig, build_tiny_model, get_tiny_model_path

__all__ = [
    "TINY_MODEL_NAME",
    "ModelNotFoundError",
    "TinyModelConfig",
    "build_tiny_model",
    "default_device",
    "get_tiny_model_path",
    "is_peft_adapter_dir",
    "load_causal_lm",
    "load_for_inference",
    "load_tokenizer",
    "resolve_model_name_or_path",
]
