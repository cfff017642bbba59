"""The curriculum's difficulty estimate: what the frozen model reads of a row (:func:`difficulty_segments`) and
the rolling frozen model itself (:class:`RollingFrozenModel`); ``docs/curriculum.md``.

The rolling frozen model is refreshed from the live weights every ``freeze_interval`` epochs or steps and, in
between, scores data with the weights it had at its last refresh. Two storage modes:

* ``"copy"``: a second full model (:func:`~trl_ext.models.frozen.frozen_copy` once, then refreshed in place with
  ``load_state_dict``);
* ``"adapter"`` (PEFT models): only the trainable (adapter) tensors are kept. Scoring swaps them into the live
  model under ``torch.no_grad`` and swaps the live values back afterwards, so the cost is one adapter's memory
  instead of a second model.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from trl_ext.common.errors import MissingPathError
from trl_ext.models.frozen import frozen_copy

__all__ = ["FROZEN_MODES", "RollingFrozenModel", "difficulty_segments"]

FROZEN_MODES = ("auto", "copy", "adapter")


def difficulty_segments(
    example: Mapping[str, Any], tokenizer: Any, field: str | None = None, completion_only: bool = True
) -> tuple[str, str]:
    """``(prefix, full)``: the text of one row that the frozen model reads, and its unscored beginning.

    ``field`` given: that column (a string), all scored. Otherwise, in order: ``text``; ``messages`` through the chat
    template; ``prompt`` (string or conversation) followed by ``completion`` or ``chosen`` when present — with
    ``completion_only`` the prompt is the prefix (SFT's ``completion_only_loss`` and DPO train on the answer only,
    so that is what "hard" should measure); a prompt alone (GRPO/PPO) is scored whole. (Rows holding only
    ``input_ids``, as for a plain ``Trainer``, are scored on those ids directly.)
    """
    if field is not None:
        value = example.get(field)
        if not isinstance(value, str):
            raise ValueError(f"difficulty_text_field {field!r} is {type(value).__name__}, not a string")
        return "", value
    if isinstance(example.get("text"), str):
        return "", example["text"]
    if isinstance(example.get("messages"), list):
        return "", tokenizer.apply_chat_template(example["messages"], tokenize=False)
    prompt = example.get("prompt")
    if prompt is None:
        raise ValueError(
            f"no text to score: the row has columns {sorted(example)}; expected 'text', 'messages' or 'prompt' "
            "(or set difficulty_text_field)"
        )
    answer = example.get("completion", example.get("chosen"))
    if isinstance(prompt, str):
        if not isinstance(answer, str):
            return "", prompt
        return (prompt if completion_only else ""), prompt + answer
    if not isinstance(answer, list):
        return "", tokenizer.apply_chat_template(list(prompt), tokenize=False)
    full = tokenizer.apply_chat_template(list(prompt) + list(answer), tokenize=False)
    prefix = tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
    return (prefix if completion_only else ""), full


def _has_text(row: Mapping[str, Any]) -> bool:
    return any(k in row for k in ("text", "messages", "prompt"))


def _is_peft(model: torch.nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


class RollingFrozenModel:
    """A frozen model refreshed on demand (see the module docstring).

    Args:
        mode: ``"copy"``, ``"adapter"`` or ``"auto"`` (adapter for a PEFT model, copy otherwise).

    Attributes:
        refreshed_at: the global step of the last :meth:`refresh` (``None`` before the first).
    """

    def __init__(self, mode: str = "auto") -> None:
        if mode not in FROZEN_MODES:
            raise ValueError(f"unknown frozen-model mode {mode!r}; known: {', '.join(FROZEN_MODES)}")
        self.mode = mode
        self.refreshed_at: int | None = None
        self._copy: torch.nn.Module | None = None
        self._adapter: dict[str, torch.Tensor] | None = None

    def resolved_mode(self, model: torch.nn.Module) -> str:
        if self.mode == "auto":
            return "adapter" if _is_peft(model) else "copy"
        if self.mode == "adapter" and not any(p.requires_grad for p in model.parameters()):
            raise ValueError("frozen-model mode 'adapter' needs trainable (adapter) parameters; the model has none")
        return self.mode

    @torch.no_grad()
    def refresh(self, model: torch.nn.Module, step: int) -> None:
        """Take the current weights of ``model`` (the unwrapped live model) as the frozen weights."""
        if self.resolved_mode(model) == "adapter":
            self._adapter = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        elif self._copy is None:
            self._copy = frozen_copy(model)
        else:
            self._copy.load_state_dict(model.state_dict())
        self.refreshed_at = int(step)

    def age(self, step: int) -> int:
        """Steps since the last refresh."""
        if self.refreshed_at is None:
            raise RuntimeError("the frozen model was never refreshed")
        return int(step) - self.refreshed_at

    @contextlib.contextmanager
    def scoring(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """A module that computes with the frozen weights, in eval mode and without gradients.

        ``model`` is the unwrapped live model; in adapter mode it is yielded with the frozen adapter swapped in, and
        its own adapter values and train/eval mode are restored on exit (also on an exception).
        """
        if self.refreshed_at is None:
            raise RuntimeError("the frozen model was never refreshed")
        if self._copy is not None:
            with torch.no_grad():
                yield self._copy
            return
        assert self._adapter is not None
        params = dict(model.named_parameters())
        missing = [n for n in self._adapter if n not in params]
        if missing:
            raise RuntimeError(f"frozen adapter tensors {missing[:3]} are not parameters of the model any more")
        was_training = model.training
        live = {}
        with torch.no_grad():
            for name, value in self._adapter.items():
                live[name] = params[name].detach().clone()
                params[name].copy_(value)
            model.eval()
            try:
                yield model
            finally:
                for name, value in live.items():
                    params[name].copy_(value)
                model.train(was_training)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The frozen weights (the full state dict in copy mode, the adapter tensors in adapter mode)."""
        if self._copy is not None:
            return {k: v.detach() for k, v in self._copy.state_dict().items()}
        return dict(self._adapter or {})

    def save(self, path: str | os.PathLike) -> None:
        """Write the frozen weights to ``path`` (safetensors; shared tensors are stored once)."""
        from safetensors.torch import save_file

        tensors = self.state_tensors()
        seen: dict[int, str] = {}
        unique = {}
        for name, t in tensors.items():
            key = t.data_ptr()
            if key in seen and t.numel() > 0:
                continue  # tied weights (e.g. embeddings and lm_head): load_state_dict fills the alias
            seen[key] = name
            unique[name] = t.contiguous().cpu()
        save_file(unique, str(path), metadata={"mode": "copy" if self._copy is not None else "adapter"})

    def load(self, path: str | os.PathLike, model: torch.nn.Module, step: int) -> None:
        """Restore frozen weights written by :meth:`save` (the live ``model`` gives the architecture/device)."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise MissingPathError(f"frozen-model weights {path} not found")
        with safe_open(str(path), framework="pt") as f:
            saved_mode = (f.metadata() or {}).get("mode")
        mode = self.resolved_mode(model)
        if saved_mode != mode:
            raise ValueError(f"{path} holds a frozen model in mode {saved_mode!r}, this run uses {mode!r}")
        device = next(model.parameters()).device
        tensors = load_file(str(path), device=str(device))
        if mode == "adapter":
            params = dict(model.named_parameters())
            unknown = [n for n in tensors if n not in params]
            if unknown:
                raise ValueError(f"{path}: adapter tensors {unknown[:3]} are not parameters of this model")
            self._adapter = {n: t.to(params[n].dtype) for n, t in tensors.items()}
        else:
            if self._copy is None:
                self._copy = frozen_copy(model)
            result = self._copy.load_state_dict(tensors, strict=False)
            tied = set(getattr(self._copy, "_tied_weights_keys", None) or [])
            missing = [k for k in result.missing_keys if k not in tied and not _is_alias(self._copy, k, tensors)]
            if missing or result.unexpected_keys:
                raise ValueError(
                    f"{path} does not match the model: missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}"
                )
        self.refreshed_at = int(step)


def _is_alias(model: torch.nn.Module, key: str, saved: dict[str, torch.Tensor]) -> bool:
    """Whether ``key`` shares storage with a tensor that was saved (tied weights)."""
    state = model.state_dict()
    ptr = state[key].data_ptr()
    return any(state[k].data_ptr() == ptr for k in saved if k in state and k != key)
