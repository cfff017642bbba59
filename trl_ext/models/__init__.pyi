from .frozen import frozen_copy
from .loading import (
    ModelNotFoundError,
    default_device,
    is_peft_adapter_dir,
    load_causal_lm,
    load_for_inference,
    load_tokenizer,
    resolve_model_name_or_path,
)
from .policy_init import prepare_init_policy
from .tiny_model import TINY_MODEL_NAME, TinyModelConfig, build_tiny_model, get_tiny_model_path
