"""SafeLoRA: post hoc, training-free projection of a LoRA adapter onto an alignment subspace (docs/selective.md
(SafeLoRA)).

Given base weights ``W_base``, aligned weights ``W_aligned`` (same architecture) and a trained LoRA adapter,
for every LoRA-adapted module ``i`` (a ``torch.nn.Linear`` with ``lora_A``/``lora_B``):

* alignment matrix ``V_i = W_aligned,i − W_base,i`` (shape ``out × in``, like ``ΔW_i``);
* projection ``C_i`` (``out × out``):

  - ``projection="approx"`` (default, the published SafeLoRA code): ``C_i = V_i V_iᵀ / ‖V_i‖_F``.
    This is *not* an orthogonal projection (it is not idempotent and scales with ``‖V_i‖``); it is kept
    because it is what the paper's code does.
  - ``projection="exact"``: the orthogonal projection onto the column space of ``V_i``,
    ``C_i = V_i (V_iᵀV_i)⁺ V_iᵀ = U_r U_rᵀ``, computed in float64 from the thin SVD ``V_i = U S Wᵀ``
    keeping the ``r`` singular values ``s_j > rtol · s_max``. ``rtol`` is ``exact_rtol`` when given, else
    ``max(out, in) · eps(float32)`` (≈ 7.6e-6 for a 64-wide layer): the weights are float32 or narrower, so
    directions below that relative size are rounding noise of the stored weights, not alignment.
    The result is symmetric and idempotent up to float64 rounding.

* LoRA update ``ΔW_i = B_i A_i`` (``B_i``: ``out × r``, ``A_i``: ``r × in``). **Scaling:** the cosine is
  computed on the *unscaled* ``B_i A_i``, as the published code does. PEFT multiplies the update by
  ``s = lora_alpha / r`` (``lora_alpha / √r`` with rsLoRA); ``cos(C·sΔW, sΔW) = cos(CΔW, ΔW)`` for any
  ``s ≠ 0``, so the choice does not change any result; the scaling is reported per module for reference.
* ``cos_i = ⟨vec(C_i ΔW_i), vec ΔW_i⟩ / (‖C_i ΔW_i‖_F ‖ΔW_i‖_F)``; defined as ``0`` when either norm is 0.
* selection: ``select="threshold"`` projects every module with ``cos_i ≤ threshold`` (default 0.5);
  ``select="number"`` projects the ``num_proj_layers`` (default 10) modules with the lowest ``cos_i``
  (exactly that many, or all when there are fewer; ties are broken by the module's order in the model, where
  the published code projected every module tied with the k-th lowest value).
* projection of a selected module: ``B_i ← C_i B_i`` (``A_i`` is unchanged, so ``ΔW_i ← C_i ΔW_i``).
* ``Pdst = (1/N) Σ_i 1 / (1 + ‖B_i,new − C_i B_i,old‖_F)`` over **all** N adapted modules, as in the
  published code: a projected module contributes exactly 1 (its new B *is* ``C_i B_i,old``); an unprojected
  module contributes ``1 / (1 + ‖(I − C_i) B_i‖_F)``, i.e. how far its (kept) B is from its projection. So
  Pdst = 1 means every adapter either was projected or already lay in its alignment subspace; lower values
  mean more of the adapter was left outside it. It is not scale-invariant (it depends on ‖B‖, and for
  ``"approx"`` on ‖V‖). The norm is measured in the compute precision, before casting back to B's dtype.

Edge cases (decisions):

* a module whose alignment matrix is exactly 0 (untouched by alignment) has ``C_i = 0`` (the projection
  onto the column space of the zero matrix; the published code produced NaN there), hence ``cos_i = 0``: it
  is projected under either selection rule, which zeroes its B. A warning names such modules.
* modules are matched by **name**: ``<module>.weight`` in the state dicts against the LoRA layer's name with
  PEFT's ``base_model.model.`` prefix removed (state-dict keys are normalised the same way, and
  ``.base_layer`` is dropped, so the state dict of a PEFT model can serve as base weights). A missing module,
  a base/aligned shape mismatch, base/aligned state dicts with different modules, or a ``V_i`` whose shape is
  not the LoRA layer's ``out × in`` raise ``ValueError`` naming the module. A weight present on one side only
  that equals another weight of its own state dict (a tied ``lm_head``: in ``model.state_dict()``, not in the
  saved folder) is not counted as a module-set difference.
* Conv1D-style layers (GPT-2; PEFT ``fan_in_fan_out=True``) store the weight as ``in × out``; ``V_i`` is
  transposed for them. Only linear LoRA layers are supported (embedding/convolution LoRA raise). LoRA
  ``lora_B`` biases (``lora_bias=True``) are left unchanged. Adapters merged into the base weights raise.
  Sharded parameters (DeepSpeed ZeRO-3, FSDP) are not gathered: run the CLI on the saved adapter instead.

Computation is in float32 (``"approx"``) or float64 (``"exact"``) on the device of ``lora_B`` (CPU for MPS
in float64), without materialising ``C_i`` (``C_i B_i = V_i (V_iᵀ B_i) / ‖V_i‖_F`` or ``U_r (U_rᵀ B_i)``);
:func:`projection_matrix` builds ``C_i`` explicitly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

REPORT_NAME = "safelora_report.json"
PROJECTIONS = ("approx", "exact")
SELECTS = ("threshold", "number")
_PEFT_PREFIX = "base_model.model."

Projection = Literal["approx", "exact"]
Select = Literal["threshold", "number"]


# --------------------------------------------------------------------------------------------------
# report
@dataclasses.dataclass
class ModuleResult:
    """One adapted module: its cosine, whether it was projected, and its Pdst distance.

    ``distance`` is ``‖B_new − C B_old‖_F`` (0 for projected modules); ``scaling`` is PEFT's LoRA scaling
    (not used by the cosine, which is scale-invariant).
    """

    name: str
    cos: float
    projected: bool
    distance: float = 0.0
    scaling: float = 1.0


@dataclasses.dataclass
class SafeLoRAReport:
    """Result of :func:`safelora_project`: per-module results (model order) and ``pdst``."""

    modules: list[ModuleResult]
    pdst: float
    projection: str
    select: str
    threshold: float | None = None
    num_proj_layers: int | None = None
    adapter_name: str = "default"

    @property
    def num_projected(self) -> int:
        return sum(m.projected for m in self.modules)

    @property
    def projected_modules(self) -> list[str]:
        return [m.name for m in self.modules if m.projected]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["num_modules"] = len(self.modules)
        data["num_projected"] = self.num_projected
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SafeLoRAReport:
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in fields}
        kwargs["modules"] = [ModuleResult(**m) for m in data["modules"]]
        return cls(**kwargs)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the report as JSON (parent folders are created); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> SafeLoRAReport:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def format(self) -> str:
        """A readable table: one row per module, then the selection rule, the count projected and Pdst."""
        width = max([len("module"), *(len(m.name) for m in self.modules)])
        lines = [f"{'module':<{width}}  {'cos':>9}  {'projected':>9}  {'‖B−CB‖':>10}"]
        lines.append("-" * len(lines[0]))
        for m in self.modules:
            lines.append(f"{m.name:<{width}}  {m.cos:>9.4f}  {'yes' if m.projected else 'no':>9}  {m.distance:>10.4g}")
        lines.append("-" * len(lines[0]))
        rule = f"cos <= {self.threshold}" if self.select == "threshold" else f"lowest {self.num_proj_layers} cos"
        lines.append(
            f"projection={self.projection} select={self.select} ({rule}): "
            f"{self.num_projected}/{len(self.modules)} modules projected, Pdst={self.pdst:.6f}"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


# --------------------------------------------------------------------------------------------------
# state dicts
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
    raise FileNotFoundError(
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


# --------------------------------------------------------------------------------------------------
# projection maths
def _default_rtol(shape: Sequence[int]) -> float:
    return max(shape) * torch.finfo(torch.float32).eps


def _basis(v: torch.Tensor, rtol: float | None) -> torch.Tensor:
    """Orthonormal basis ``U_r`` (``out × r``) of the column space of ``v`` (float64 thin SVD)."""
    u, s, _ = torch.linalg.svd(v, full_matrices=False)
    if s.numel() == 0 or s[0] == 0:
        return u[:, :0]
    tol = (_default_rtol(v.shape) if rtol is None else rtol) * s[0]
    return u[:, : int((s > tol).sum())]


def projection_matrix(v: torch.Tensor, projection: Projection = "approx", exact_rtol: float | None = None):
    """The explicit ``C`` for an alignment matrix ``V`` (``out × in``): ``V Vᵀ / ‖V‖_F`` (approx, float32)
    or ``U_r U_rᵀ``, the orthogonal projection onto the column space of ``V`` (exact, float64).
    ``C = 0`` when ``V = 0``."""
    if projection == "approx":
        v = v.to(torch.float32)
        norm = torch.linalg.matrix_norm(v)
        return v @ v.T / norm if norm > 0 else torch.zeros(v.shape[0], v.shape[0], dtype=v.dtype, device=v.device)
    if projection == "exact":
        u = _basis(v.to(torch.float64), exact_rtol)
        return u @ u.T
    raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")


def _apply_c(v: torch.Tensor, x: torch.Tensor, projection: str, exact_rtol: float | None) -> torch.Tensor:
    """``C x`` without materialising ``C`` (``v`` and ``x`` already in the compute dtype)."""
    if projection == "approx":
        norm = torch.linalg.matrix_norm(v)
        return v @ (v.T @ x) / norm if norm > 0 else torch.zeros_like(x)
    u = _basis(v, exact_rtol)
    return u @ (u.T @ x)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
    if na == 0 or nb == 0:
        return 0.0
    return float((a.flatten() @ b.flatten()) / (na * nb))


def _lora_layers(peft_model: torch.nn.Module, adapter_name: str) -> list[tuple[str, torch.nn.Module]]:
    from peft.tuners.lora import LoraLayer

    layers = []
    for name, module in peft_model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        if name.startswith(_PEFT_PREFIX):
            name = name[len(_PEFT_PREFIX) :]
        if adapter_name in getattr(module, "lora_embedding_A", {}):
            raise ValueError(f"module {name!r}: SafeLoRA supports linear LoRA layers only, not embedding LoRA")
        if adapter_name not in module.lora_A:
            continue
        if not isinstance(module.lora_A[adapter_name], torch.nn.Linear):
            raise ValueError(
                f"module {name!r}: SafeLoRA supports linear LoRA layers only, "
                f"got {type(module.lora_A[adapter_name]).__name__}"
            )
        if adapter_name in getattr(module, "merged_adapters", []):
            raise ValueError(f"module {name!r}: adapter {adapter_name!r} is merged into the base weights; unmerge it")
        layers.append((name, module))
    if not layers:
        raise ValueError(f"the model has no LoRA layers for adapter {adapter_name!r}")
    return layers


def _is_tied_duplicate(name: str, weights: Mapping[str, torch.Tensor]) -> bool:
    """True when ``weights[name]`` equals another weight of the same state dict (a tied ``lm_head``, which
    ``save_pretrained`` drops, is present in ``model.state_dict()`` and absent from the saved folder)."""
    value = weights[name]
    return any(
        other != name and t.shape == value.shape and t.dtype == value.dtype and torch.equal(t, value)
        for other, t in weights.items()
    )


def _check_module_sets(base: Mapping[str, torch.Tensor], aligned: Mapping[str, torch.Tensor]) -> None:
    only_base = sorted(n for n in set(base) - set(aligned) if not _is_tied_duplicate(n, base))
    only_aligned = sorted(n for n in set(aligned) - set(base) if not _is_tied_duplicate(n, aligned))
    if only_base or only_aligned:
        parts = []
        if only_base:
            parts.append(f"{len(only_base)} only in base (e.g. {only_base[:5]})")
        if only_aligned:
            parts.append(f"{len(only_aligned)} only in aligned (e.g. {only_aligned[:5]})")
        raise ValueError(
            "base and aligned weights have different modules (mismatched architectures?): " + "; ".join(parts)
        )


def safelora_project(
    peft_model: torch.nn.Module,
    base_state_dict: Mapping[str, torch.Tensor],
    aligned_state_dict: Mapping[str, torch.Tensor],
    *,
    projection: Projection = "approx",
    select: Select = "threshold",
    threshold: float = 0.5,
    num_proj_layers: int = 10,
    adapter_name: str = "default",
    exact_rtol: float | None = None,
) -> SafeLoRAReport:
    """Apply SafeLoRA to ``peft_model`` in place (``lora_B ← C lora_B`` for selected modules).

    For every LoRA module i (matched by name, see the module docstring): ``V_i = W_aligned,i − W_base,i``,
    ``C_i`` = ``V_i V_iᵀ / ‖V_i‖_F`` (``"approx"``) or ``V_i (V_iᵀV_i)⁺ V_iᵀ`` (``"exact"``, SVD with relative
    tolerance ``exact_rtol``, default ``max(out, in)·eps(float32)``), ``ΔW_i = B_i A_i`` (unscaled; the
    cosine is scale-invariant), ``cos_i = cos(vec(C_i ΔW_i), vec ΔW_i)``. ``select="threshold"`` projects
    every module with ``cos_i ≤ threshold``; ``select="number"`` the ``num_proj_layers`` lowest-cos modules.
    ``Pdst = mean over all adapted modules of 1 / (1 + ‖B_i,new − C_i B_i,old‖_F)``.

    Computes in float32 (approx) or float64 (exact) and casts the new B back to its dtype and device.
    Raises ``ValueError`` (naming the module) on missing modules or mismatched shapes.
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    if select not in SELECTS:
        raise ValueError(f"select must be one of {SELECTS}, got {select!r}")
    if select == "number" and num_proj_layers < 0:
        raise ValueError(f"num_proj_layers must be >= 0, got {num_proj_layers}")
    base = _module_weights(base_state_dict)
    aligned = _module_weights(aligned_state_dict)
    _check_module_sets(base, aligned)
    layers = _lora_layers(peft_model, adapter_name)

    # validate every module before touching any weight
    for name, layer in layers:
        for which, weights in (("base", base), ("aligned", aligned)):
            if name not in weights:
                raise ValueError(f"LoRA module {name!r} has no weight {name + '.weight'!r} in the {which} state dict")
        if base[name].shape != aligned[name].shape:
            raise ValueError(
                f"module {name!r}: base weight shape {tuple(base[name].shape)} != aligned weight shape "
                f"{tuple(aligned[name].shape)} (mismatched architectures?)"
            )
        lora_a, lora_b = layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight
        if lora_a.numel() == 0 or lora_b.numel() == 0:
            raise RuntimeError(
                f"module {name!r}: LoRA weights are empty (sharded by DeepSpeed ZeRO-3/FSDP?); "
                "save the adapter and run `python -m trl_ext.selective.safelora.core` on it"
            )
        expected = (lora_b.shape[0], lora_a.shape[1])
        v_shape = tuple(base[name].shape)
        if getattr(layer, "fan_in_fan_out", False):
            v_shape = v_shape[::-1]
        if v_shape != expected:
            raise ValueError(
                f"module {name!r}: weight shape {tuple(base[name].shape)} does not match the LoRA update "
                f"shape {expected} (out x in)"
            )

    dtype = torch.float64 if projection == "exact" else torch.float32
    computed: list[tuple[str, torch.nn.Module, torch.Tensor, float, float]] = []
    zero_v: list[str] = []
    with torch.no_grad():
        for name, layer in layers:
            b_param = layer.lora_B[adapter_name].weight
            device = b_param.device
            if dtype == torch.float64 and device.type == "mps":
                device = torch.device("cpu")
            v = aligned[name].to(device=device, dtype=dtype) - base[name].to(device=device, dtype=dtype)
            if getattr(layer, "fan_in_fan_out", False):
                v = v.T
            if not torch.any(v != 0):
                zero_v.append(name)
            b = b_param.to(device=device, dtype=dtype)
            a = layer.lora_A[adapter_name].weight.to(device=device, dtype=dtype)
            cb = _apply_c(v, b, projection, exact_rtol)
            delta = b @ a
            cos = _cos(cb @ a, delta)
            distance = float(torch.linalg.matrix_norm(b - cb))  # ‖B_old − C B_old‖, used when not projected
            computed.append((name, layer, cb, cos, distance))
        if zero_v:
            warnings.warn(
                f"SafeLoRA: base and aligned weights are identical for {zero_v[:5]}"
                f"{' ...' if len(zero_v) > 5 else ''} ({len(zero_v)} modules): C = 0 there, cos = 0, and their "
                "LoRA B is zeroed if selected",
                stacklevel=2,
            )

        cos_values = [c[3] for c in computed]
        if select == "threshold":
            chosen = {i for i, c in enumerate(cos_values) if c <= threshold}
        else:
            order = sorted(range(len(cos_values)), key=lambda i: (cos_values[i], i))
            chosen = set(order[: min(num_proj_layers, len(order))])

        results: list[ModuleResult] = []
        terms: list[float] = []
        for i, (name, layer, cb, cos, distance) in enumerate(computed):
            projected = i in chosen
            if projected:
                b_param = layer.lora_B[adapter_name].weight
                b_param.data.copy_(cb.to(device=b_param.device, dtype=b_param.dtype))
                distance = 0.0  # B_new = C B_old exactly
            terms.append(1.0 / (1.0 + distance))
            scaling = float(getattr(layer, "scaling", {}).get(adapter_name, 1.0))
            results.append(ModuleResult(name=name, cos=cos, projected=projected, distance=distance, scaling=scaling))

    return SafeLoRAReport(
        modules=results,
        pdst=sum(terms) / len(terms),
        projection=projection,
        select=select,
        threshold=threshold if select == "threshold" else None,
        num_proj_layers=num_proj_layers if select == "number" else None,
        adapter_name=adapter_name,
    )


# --------------------------------------------------------------------------------------------------
# from paths / CLI
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
)


def safelora_from_paths(
    base: str | os.PathLike,
    aligned: str | os.PathLike,
    adapter: str | os.PathLike,
    output_dir: str | os.PathLike,
    **kwargs: Any,
) -> SafeLoRAReport:
    """Load the base model (folder, hub id or ``"tiny"``), apply the PEFT adapter folder, project it with
    :func:`safelora_project` (``**kwargs``: ``projection``, ``select``, ``threshold``, ``num_proj_layers``,
    ``exact_rtol``), and save the projected adapter (``save_pretrained``), the adapter's
    tokenizer files when present, and ``safelora_report.json`` into ``output_dir``.

    The base weights for ``V`` are taken from the loaded base model itself; ``aligned`` is anything
    :func:`load_state_dict_from` accepts.
    """
    from peft import PeftModel

    from trl_ext.models.loading import load_causal_lm, resolve_model_name_or_path

    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{str(adapter)!r} is not a PEFT adapter folder (no adapter_config.json)")
    base_model = load_causal_lm(resolve_model_name_or_path(str(base)), dtype="float32")
    base_sd = _state_dict_of_model(base_model)
    aligned_sd = load_state_dict_from(aligned)
    if "adapter_name" in kwargs:
        raise TypeError("safelora_from_paths loads the adapter folder as the 'default' adapter; drop adapter_name")
    model = PeftModel.from_pretrained(base_model, str(adapter))
    report = safelora_project(model, base_sd, aligned_sd, **kwargs)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(output_dir))
    for name in _TOKENIZER_FILES:
        if (adapter / name).is_file() and not (output_dir / name).exists():
            shutil.copy2(adapter / name, output_dir / name)
    report.save(output_dir / REPORT_NAME)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trl-ext-safelora",
        description="SafeLoRA: project a trained LoRA adapter onto the alignment subspace V = W_aligned - W_base.",
    )
    parser.add_argument("--base", required=True, help="base model folder, hub id, or 'tiny'")
    parser.add_argument("--aligned", required=True, help="aligned model folder (or adapter folder), or hub id")
    parser.add_argument("--adapter", required=True, help="PEFT adapter folder trained on the base model")
    parser.add_argument("--output_dir", required=True, help="where to write the projected adapter and the report")
    parser.add_argument("--projection", choices=PROJECTIONS, default="approx")
    parser.add_argument("--select", choices=SELECTS, default="threshold")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--num_proj_layers", type=int, default=10)
    parser.add_argument("--exact_rtol", type=float, default=None, help="SVD rank tolerance for --projection exact")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``trl-ext-safelora --base B --aligned A --adapter L --output_dir O [...]``: prints the report."""
    args = build_parser().parse_args(argv)
    report = safelora_from_paths(
        args.base,
        args.aligned,
        args.adapter,
        args.output_dir,
        projection=args.projection,
        select=args.select,
        threshold=args.threshold,
        num_proj_layers=args.num_proj_layers,
        exact_rtol=args.exact_rtol,
    )
    print(report.format())
    print(f"projected adapter and {REPORT_NAME} written to {args.output_dir}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
