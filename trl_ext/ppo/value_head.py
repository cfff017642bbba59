"""Value functions for PPO: a 2-layer MLP head on the policy's hidden states, or a separate value model.

Both map a sequence to one value per position, ``V(s_t)`` for the state that ends at position ``t``; the
PPO trainer takes the positions that *emit* the completion tokens. They are saved beside the policy as
``value_head.safetensors`` + ``value_head_config.json`` (head) or a ``value_model/`` folder (separate
model), never inside the policy's own weights, so the policy folder stays a plain checkpoint or adapter.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trl_ext.common.errors import MissingPathError

VALUE_HEAD_WEIGHTS = "value_head.safetensors"
VALUE_HEAD_CONFIG = "value_head_config.json"
VALUE_MODEL_DIR = "value_model"
VALUE_FUNCTION_FILES = (VALUE_HEAD_WEIGHTS, VALUE_HEAD_CONFIG, VALUE_MODEL_DIR)
"""Every file or folder a saved value function may consist of (what a merged SFT policy carries along)."""


class ValueHead(nn.Module):
    """``V(h) = W2 · GELU(W1 · h + b1) + b2``: hidden size ``H`` -> ``hidden_size`` -> 1; or, with
    ``hidden_size=0``, the linear head ``V(h) = w · h + b`` (the ``score`` layer of TRL ≤ 1.12's value model).

    Args:
        input_size: the policy's hidden size H.
        hidden_size: width of the middle layer (default: H; 0: no middle layer, a linear head).
        detach_trunk: stop value gradients at the head's input, so the value loss trains only the head and
            leaves the shared policy trunk to the policy loss.

    The output layer starts at N(0, 1/(fan_in + 1)²) weights and a zero bias, so initial values are small.
    """

    def __init__(self, input_size: int, hidden_size: int | None = None, detach_trunk: bool = False) -> None:
        super().__init__()
        if input_size < 1:
            raise ValueError(f"value head input_size must be >= 1, got {input_size}")
        if hidden_size is not None and hidden_size < 0:
            raise ValueError(f"value head hidden_size must be >= 0 (0: a linear head), got {hidden_size}")
        self.input_size = int(input_size)
        self.hidden_size = self.input_size if hidden_size is None else int(hidden_size)
        self.detach_trunk = bool(detach_trunk)
        if self.hidden_size:
            self.dense: nn.Linear | None = nn.Linear(self.input_size, self.hidden_size)
            self.act = nn.GELU()
        else:
            self.dense = None
        fan_in = self.hidden_size or self.input_size
        self.out = nn.Linear(fan_in, 1)
        nn.init.normal_(self.out.weight, std=1.0 / (fan_in + 1))
        nn.init.zeros_(self.out.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, L, H) -> (B, L) values (computed in the head's dtype)."""
        if hidden_states.shape[-1] != self.input_size:
            raise ValueError(
                f"value head expects hidden states of size {self.input_size}, got shape {tuple(hidden_states.shape)}"
            )
        if self.detach_trunk:
            hidden_states = hidden_states.detach()
        h = hidden_states.to(self.out.weight.dtype)
        if self.dense is not None:
            h = self.act(self.dense(h))
        return self.out(h).squeeze(-1)

    def config(self) -> dict[str, Any]:
        return {
            "type": "value_head",
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "detach_trunk": self.detach_trunk,
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``value_head.safetensors`` and ``value_head_config.json`` into ``directory``."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(out / VALUE_HEAD_WEIGHTS))
        (out / VALUE_HEAD_CONFIG).write_text(json.dumps(self.config(), indent=2))
        return out / VALUE_HEAD_WEIGHTS

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, expected_input_size: int | None = None) -> ValueHead:
        """Load a head saved by :meth:`save`; ``expected_input_size`` (the policy's hidden size) is checked."""
        head = cls(**_read_config(directory, expected_input_size))
        head.load_weights(directory)
        return head

    def load_weights(self, directory: str | os.PathLike) -> None:
        """Load the weights saved in ``directory`` into this head, checking every shape."""
        from safetensors.torch import load_file

        path = Path(directory) / VALUE_HEAD_WEIGHTS
        if not path.is_file():
            raise MissingPathError(f"no value head weights at {path}")
        state = load_file(str(path))
        own = self.state_dict()
        if set(state) != set(own):
            raise ValueError(f"value head file {path} has keys {sorted(state)}, expected {sorted(own)}")
        for key, value in state.items():
            if value.shape != own[key].shape:
                raise ValueError(
                    f"value head file {path}: {key} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)} "
                    f"(input size {self.input_size}, hidden size {self.hidden_size})"
                )
        self.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def _read_config(directory: str | os.PathLike, expected_input_size: int | None) -> dict[str, Any]:
    path = Path(directory) / VALUE_HEAD_CONFIG
    if not path.is_file():
        raise MissingPathError(f"no value head config at {path}")
    cfg = json.loads(path.read_text())
    cfg.pop("type", None)
    if expected_input_size is not None and cfg.get("input_size") != expected_input_size:
        raise ValueError(
            f"value head in {directory} takes hidden states of size {cfg.get('input_size')}, but the policy's hidden "
            f"size is {expected_input_size}"
        )
    return cfg


def has_value_head(directory: str | os.PathLike) -> bool:
    """True when ``directory`` holds a saved value head or value model."""
    d = Path(directory)
    return (d / VALUE_HEAD_WEIGHTS).is_file() or (d / VALUE_MODEL_DIR).is_dir()


class SeparateValueModel(nn.Module):
    """A value function with its own trunk: ``V = ValueHead(backbone(x).last_hidden_state)``.

    ``backbone`` is any transformers base model (e.g. ``AutoModel.from_pretrained(path)``) whose output has
    ``last_hidden_state``. Costs one extra forward per PPO step; the policy trunk gets no value gradient.
    """

    def __init__(self, backbone: nn.Module, head_hidden_size: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.head = ValueHead(hidden, head_hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return self.head(out.last_hidden_state)

    def save(self, directory: str | os.PathLike) -> Path:
        out = Path(directory) / VALUE_MODEL_DIR
        self.backbone.save_pretrained(out)
        self.head.save(out)
        return out

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **kwargs: Any) -> SeparateValueModel:
        from transformers import AutoModel

        src = Path(directory) / VALUE_MODEL_DIR
        if not src.is_dir():
            raise MissingPathError(f"no value model folder at {src}")
        backbone = AutoModel.from_pretrained(src, **kwargs)
        model = cls(backbone, _read_config(src, backbone.config.hidden_size).get("hidden_size"))
        model.head.load_weights(src)
        return model


# ---------------------------------------------------------------------- save / load beside a policy


def _read_head_size(path: str | os.PathLike) -> int | None:
    cfg = Path(path) / "value_head_config.json"
    return json.loads(cfg.read_text()).get("input_size") if cfg.is_file() else None


def _size_error(path, hidden):
    raise ValueError(
        f"the value head saved in {path} takes hidden states of size {_read_head_size(path)}, but the policy's hidden "
        f"size is {hidden}"
    )


def save_value_function(value_fn: nn.Module, output_dir: str | os.PathLike, state: dict | None = None) -> None:
    """Write the value head (or value model) of a PPO run into ``output_dir``; ``state`` overrides the weights
    (e.g. the gathered state dict under ZeRO-3)."""
    if isinstance(value_fn, SeparateValueModel):
        if state is not None:
            value_fn.load_state_dict(state)
        value_fn.save(output_dir)
        return
    if state is not None:
        head = ValueHead(value_fn.input_size, value_fn.hidden_size, value_fn.detach_trunk)
        head.load_state_dict({k: v.detach().to("cpu", torch.float32) for k, v in state.items()})
        head.save(output_dir)
    else:
        value_fn.save(output_dir)


def load_value_function(value_fn: nn.Module, directory: str | os.PathLike, hidden_size: int) -> None:
    """Load saved value weights from ``directory`` into ``value_fn`` (shape-checked)."""
    if isinstance(value_fn, SeparateValueModel):
        saved = SeparateValueModel.from_pretrained(directory)
        value_fn.load_state_dict(saved.state_dict())
        return
    size = _read_head_size(directory)
    if size is None:
        raise MissingPathError(f"no value head in {directory} (value_head_config.json missing)")
    if size != hidden_size:
        _size_error(directory, hidden_size)
    value_fn.load_weights(directory)
