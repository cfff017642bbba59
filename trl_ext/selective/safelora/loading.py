"""SafeLoRA's inputs: weight state dicts of a model, a folder (safetensors or ``pytorch_model.bin`` loaded with
``weights_only=True``), a PEFT adapter folder merged into its base, or a hub id; keys normalised to module names."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from trl_ext.common.errors import MissingPathError

__all__ = ["load_state_dict_from"]

_PEFT_PREFIX = "base_model.model."


def _normalize_key(key: str) -> str | None:
    """A state-dict key in plain-model form (PEFT prefix and ``base_layer`` removed); None for LoRA keys."""
    if key.startswith(_PEFT_PREFIX):
        key = key[len(_PEFT_PREFIX) :]
    parts = key.split(".")
    if any(p.startswith("lora_") for p in parts) or "modules_to_save" in parts:
        return None
    return ".".join(p for p in parts if p not in ("base_layer", "original_module"))


def _module_weights(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{module name: weight}`` for every ``<module>.weight`` key of a (possibly PEFT) state dict."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        norm = _normalize_key(key)
        if norm is not None and norm.endswith(".weight"):
            out[norm[: -len(".weight")]] = value
    return out


def _load_weight_files(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    def torch_load(path: Path) -> dict[str, torch.Tensor]:
        return torch.load(path, map_location="cpu", weights_only=True)

    for index_name, loader in (
        ("model.safetensors.index.json", load_file),
        ("pytorch_model.bin.index.json", torch_load),
    ):
        index = folder / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(loader(folder / shard))
            return state
    if (folder / "model.safetensors").is_file():
        return load_file(folder / "model.safetensors")
    if (folder / "pytorch_model.bin").is_file():
        return torch_load(folder / "pytorch_model.bin")
    raise MissingPathError(
        f"no model weights in {str(folder)!r}: expected model.safetensors, a sharded "
        "model.safetensors.index.json, or pytorch_model.bin"
    )


def _state_dict_of_model(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict on CPU, detached, with tied duplicates (e.g. a tied ``lm_head``) dropped
    the way ``save_pretrained`` drops them, so a model object and its saved folder give the same keys."""
    seen: set[tuple[int, tuple[int, ...], tuple[int, ...]]] = set()
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict(keep_vars=False).items():
        if not isinstance(value, torch.Tensor):
            continue
        ident = (value.data_ptr(), tuple(value.shape), tuple(value.stride()))
        if value.numel() > 0 and value.data_ptr() != 0:
            if ident in seen:
                continue
            seen.add(ident)
        out[key] = value.detach().to("cpu")
    return out


def load_state_dict_from(
    path_or_model: str | os.PathLike | torch.nn.Module | Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """``{name: tensor}`` on CPU from a model folder, a weights file, a model object or a state dict.

    * a folder: ``model.safetensors``, a sharded ``model.safetensors.index.json``, else
      ``pytorch_model.bin`` (or its index), read with ``torch.load(weights_only=True)``;
      a PEFT adapter folder (``adapter_config.json``, no weights) is loaded on its base model and merged,
      so an aligned model given as base + alignment LoRA works;
    * a ``.safetensors`` / ``.bin`` / ``.pt`` file;
    * ``"tiny"`` or a hub id: loaded with ``from_pretrained`` (offline rules apply);
    * a ``torch.nn.Module``: its state dict (tied duplicates dropped, see ``save_pretrained``);
    * a mapping: returned as a dict of CPU tensors.
    """
    if isinstance(path_or_model, torch.nn.Module):
        return _state_dict_of_model(path_or_model)
    if isinstance(path_or_model, Mapping):
        return {k: v.detach().to("cpu") for k, v in path_or_model.items()}
    path = Path(path_or_model).expanduser()
    if path.is_file():
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    if path.is_dir():
        has_weights = any(
            (path / n).is_file()
            for n in (
                "model.safetensors",
                "model.safetensors.index.json",
                "pytorch_model.bin",
                "pytorch_model.bin.index.json",
            )
        )
        if not has_weights and (path / "adapter_config.json").is_file():
            from trl_ext.models.loading import load_causal_lm

            merged = load_causal_lm(str(path)).merge_and_unload()
            return _state_dict_of_model(merged)
        return _load_weight_files(path)
    from trl_ext.models.loading import load_causal_lm, resolve_model_name_or_path

    resolved = resolve_model_name_or_path(str(path_or_model))
    if Path(resolved).is_dir():  # "tiny"
        return load_state_dict_from(resolved)
    return _state_dict_of_model(load_causal_lm(resolved))
