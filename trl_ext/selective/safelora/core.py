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

import dataclasses
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from trl_ext.selective.safelora.loading import _PEFT_PREFIX, _module_weights

REPORT_NAME = "safelora_report.json"
PROJECTIONS = ("approx", "exact")
SELECTS = ("threshold", "number")

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
