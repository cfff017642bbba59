"""Model and tokenizer loading shared by the recipes: the ``tiny`` default, clear errors, QLoRA, PEFT adapters."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from trl_ext.common.errors import MissingPathError
from trl_ext.models.tiny_model import TINY_MODEL_NAME, get_tiny_model_path


class ModelNotFoundError(MissingPathError):
    """Raised when ``model_name_or_path`` is neither an existing folder, a reachable hub id, nor ``tiny``."""


def looks_like_path(name: str) -> bool:
    """True for a string that names a local path rather than a hub id (``name`` or ``org/name``)."""
    # Hub ids are "name" or "org/name"; anything with a leading ./ ~ / or several separators is a path.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def resolve_model_name_or_path(name: str | None) -> str:
    """Turn a recipe's ``model_name_or_path`` into something ``from_pretrained`` can load.

    * ``"tiny"`` -> the cached embedded tiny model (built on first use);
    * an existing folder -> itself (absolute);
    * a path-like string that does not exist -> :class:`ModelNotFoundError` naming it;
    * anything else is treated as a hub id and returned unchanged (loading errors are re-raised with
      the id by :func:`load_causal_lm` / :func:`load_tokenizer`).
    """
    if name is None or str(name).strip() == "":
        raise ModelNotFoundError("model_name_or_path is not set: give a hub id, a local folder, or 'tiny'")
    name = str(name)
    if name == TINY_MODEL_NAME:
        return str(get_tiny_model_path())
    expanded = Path(name).expanduser()
    if expanded.is_dir():
        return str(expanded.resolve())
    if expanded.exists():
        raise ModelNotFoundError(f"model path {name!r} is a file, expected a model folder")
    if looks_like_path(name):
        raise ModelNotFoundError(f"model path {name!r} does not exist")
    return name


def default_device() -> str:
    """``cuda`` (local rank's device under a launcher) when available, else ``mps``, else ``cpu``."""
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def load_for_inference(name_or_path: str, *, dtype: str | None = None, load_in_4bit: bool = False):
    """Load a model (or adapter folder) for generation: eval mode, on :func:`default_device`.

    Quantised models are placed by bitsandbytes and not moved.
    """
    model = load_causal_lm(name_or_path, dtype=dtype, load_in_4bit=load_in_4bit)
    if not load_in_4bit:
        model = model.to(default_device())
    return model.eval()


def is_peft_adapter_dir(path: str) -> bool:
    """True when ``path`` is a folder holding a PEFT adapter (``adapter_config.json``)."""
    return (Path(path) / "adapter_config.json").is_file()


def _reraise(name: str, err: Exception) -> None:
    raise ModelNotFoundError(
        f"could not load model {name!r}: it is not a local folder and the hub could not provide it "
        f"(offline={os.environ.get('HF_HUB_OFFLINE', '0')}): {err}"
    ) from err


def load_tokenizer(name_or_path: str, padding_side: str | None = None, **kwargs: Any):
    """``AutoTokenizer.from_pretrained`` with a pad token guaranteed (EOS when the tokenizer has none)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    except OSError as err:
        _reraise(name_or_path, err)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    return tokenizer


def load_causal_lm(
    name_or_path: str,
    *,
    dtype: str | None = None,
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
    bnb_4bit_quant_type: str = "nf4",
    use_bnb_nested_quant: bool = False,
    attn_implementation: str | None = None,
    revision: str = "main",
    trust_remote_code: bool = False,
):
    """Load a causal LM for training or inference.

    ``load_in_4bit``/``load_in_8bit`` quantise with bitsandbytes (QLoRA); the compute dtype is ``dtype``
    (float32 when unset). On a machine without CUDA, quantised weights are placed on the CPU.
    A PEFT adapter folder is loaded as base model + adapter (``AutoPeftModelForCausalLM``).
    """
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if load_in_4bit and load_in_8bit:
        raise ValueError("load_in_4bit and load_in_8bit are mutually exclusive")
    torch_dtype = getattr(torch, dtype) if dtype not in (None, "auto") else (dtype or None)
    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if load_in_4bit or load_in_8bit:
        compute = torch_dtype if isinstance(torch_dtype, torch.dtype) else torch.float32
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=load_in_4bit,
            load_in_8bit=load_in_8bit,
            bnb_4bit_quant_type=bnb_4bit_quant_type,
            bnb_4bit_compute_dtype=compute,
            bnb_4bit_quant_storage=compute,
            bnb_4bit_use_double_quant=use_bnb_nested_quant,
        )
        if torch.cuda.is_available():
            from accelerate import PartialState

            kwargs["device_map"] = {"": PartialState().local_process_index}
        else:
            kwargs["device_map"] = "cpu"
    try:
        if is_peft_adapter_dir(name_or_path):
            from peft import AutoPeftModelForCausalLM

            return AutoPeftModelForCausalLM.from_pretrained(name_or_path, **kwargs)
        return AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except OSError as err:
        _reraise(name_or_path, err)
