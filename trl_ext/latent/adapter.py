"""The latent adapter: the sender's hidden states → input embeddings of the receiver (docs/latent.md, "Adapter").

For a message ``H`` ``(K, d)`` (the sender's last-layer hidden states; an input projection maps ``d`` to the
receiver's width ``D`` when they differ):

    x = LN₁(H)                                   (K, D)
    a = MHA(x, x, x)                             num_heads heads, dropout 0.1
    o = LN₂(x + a)
    r = s · o                                    learnable scalar s, initialised at 0.2
    out = clamp((r + W₂ · LN₃(GELU(W₁ · r))) · s_out, −10, 10)   learnable s_out, initialised at 0.1

``W₂`` starts near zero (normal, std 1e-3), so the adapter starts as a scaled, normalised copy of the message.
Padded message positions (``key_padding_mask``) are ignored by the attention and zeroed in the output. The adapter
computes in its parameters' dtype (float32: the trainer keeps it in full precision whatever the receiver's dtype,
and autocast is off inside) and returns the message's dtype.

:meth:`LatentAdapter.save_pretrained` writes ``latent_comm_head.safetensors`` and ``latent_comm_head.json`` (its
configuration) into a folder, beside the receiver's weights; :meth:`LatentAdapter.from_pretrained` reads them back
(safetensors: no pickle).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from trl_ext.common.errors import ConfigError, MissingPathError

__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "LatentAdapter", "LatentAdapterConfig"]

ADAPTER_WEIGHTS = "latent_comm_head.safetensors"
ADAPTER_CONFIG = "latent_comm_head.json"
CLAMP = 10.0


@dataclass
class LatentAdapterConfig:
    """Sizes and initial values of :class:`LatentAdapter`."""

    hidden_size: int
    sender_hidden_size: int | None = None
    num_heads: int = 8
    dropout: float = 0.1
    scale_init: float = 0.2
    out_scale_init: float = 0.1
    w2_init_std: float = 1e-3

    def __post_init__(self) -> None:
        if self.hidden_size < 1 or self.num_heads < 1:
            raise ConfigError(f"hidden_size and num_heads must be >= 1, got {self.hidden_size}, {self.num_heads}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"num_heads={self.num_heads} must divide the receiver's hidden size {self.hidden_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.sender_hidden_size is not None and self.sender_hidden_size < 1:
            raise ConfigError(f"sender_hidden_size must be >= 1, got {self.sender_hidden_size}")


class LatentAdapter(nn.Module):
    """See the module docstring. ``forward(H, key_padding_mask=None)``: ``H`` ``(B, K, d)`` or ``(K, d)``;
    ``key_padding_mask`` ``(B, K)`` True on padding. Returns ``(B, K, D)`` (or ``(K, D)``) in ``H``'s dtype."""

    def __init__(self, config: LatentAdapterConfig) -> None:
        super().__init__()
        self.config = config
        width = config.hidden_size
        sender = config.sender_hidden_size
        self.input_projection = nn.Linear(sender, width) if sender is not None and sender != width else None
        self.norm_in = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, config.num_heads, dropout=config.dropout, batch_first=True)
        self.norm_attn = nn.LayerNorm(width)
        self.scale = nn.Parameter(torch.tensor(float(config.scale_init)))
        self.w1 = nn.Linear(width, width)
        self.norm_mlp = nn.LayerNorm(width)
        self.w2 = nn.Linear(width, width)
        self.out_scale = nn.Parameter(torch.tensor(float(config.out_scale_init)))
        nn.init.normal_(self.w2.weight, std=config.w2_init_std)
        nn.init.zeros_(self.w2.bias)

    @property
    def expected_width(self) -> int:
        """The width of the messages this adapter takes."""
        return self.config.sender_hidden_size or self.config.hidden_size

    def forward(self, hidden: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        single = hidden.dim() == 2
        if single:
            hidden = hidden.unsqueeze(0)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        if hidden.dim() != 3 or hidden.shape[-1] != self.expected_width:
            raise ValueError(
                f"latent message must be (B, K, {self.expected_width}) or (K, {self.expected_width}), got shape "
                f"{tuple(hidden.shape)}"
            )
        dtype = hidden.dtype
        compute = self.norm_in.weight.dtype  # float32: the trainer keeps the adapter in full precision
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            x = hidden.to(compute)
            if self.input_projection is not None:
                x = self.input_projection(x)
            x = self.norm_in(x)
            attn_mask = key_padding_mask
            if attn_mask is not None and attn_mask.all(dim=1).any():
                attn_mask = attn_mask.clone()
                attn_mask[attn_mask.all(dim=1), 0] = False  # an all-padding row would give NaN: attend to one slot
            a, _ = self.attention(x, x, x, key_padding_mask=attn_mask, need_weights=False)
            o = self.norm_attn(x + a)
            r = self.scale * o
            out = (r + self.w2(self.norm_mlp(nn.functional.gelu(self.w1(r))))) * self.out_scale
            out = out.clamp(-CLAMP, CLAMP)
            if key_padding_mask is not None:
                out = out.masked_fill(key_padding_mask.unsqueeze(-1), 0.0)
        out = out.to(dtype)
        return out[0] if single else out

    # ------------------------------------------------------------------ persistence

    def save_pretrained(self, folder: str | os.PathLike, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """Write ``latent_comm_head.safetensors`` and ``latent_comm_head.json`` into ``folder``; returns the
        weights' path. ``state_dict``: the weights to write (default: this module's; a trainer passes the gathered
        ones under DeepSpeed ZeRO-3)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state_dict = self.state_dict() if state_dict is None else state_dict
        state = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
        save_file(state, str(folder / ADAPTER_WEIGHTS))
        (folder / ADAPTER_CONFIG).write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        return folder / ADAPTER_WEIGHTS

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> LatentAdapter:
        """The adapter saved in ``folder`` by :meth:`save_pretrained`.

        Raises:
            MissingPathError: the folder has no adapter weights or configuration.
        """
        from safetensors.torch import load_file

        folder = Path(folder)
        for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):
            if not (folder / name).is_file():
                raise MissingPathError(f"{folder} has no {name}: not a folder saved with a latent adapter")
        adapter = cls(LatentAdapterConfig(**json.loads((folder / ADAPTER_CONFIG).read_text())))
        adapter.load_state_dict(load_file(str(folder / ADAPTER_WEIGHTS)))
        return adapter
