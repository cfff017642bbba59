"""Gradient surgery and alignment planes for selective generalisation (docs/selective.md), on dicts of per-parameter
tensors.

Everything here works on mappings ``{parameter name: tensor}`` (gradients, mean gradients, LoRA weights, planes),
matched by **name**, never by order; the projection is done per parameter tensor (each tensor is one vector).

Conventions:

- Names and shapes are validated up front: a name present where it cannot be matched, or two tensors of the same
  name with different shapes, raise ``ValueError`` naming the tensor (and the shapes).
- A gradient entry may be ``None`` (a parameter without gradient this step); it is passed through as ``None``.
- Inputs are never modified. Outputs are new tensors, except that entries left unchanged are returned as the
  input object itself. Projected gradients keep the dtype and device of the gradient they replace; the inner
  products are computed in float32 (float64 stays float64). Nothing here builds an autograd graph.
- Where to call it (trainer side): on the accumulated gradients just before the optimizer step (gradient
  accumulation: project the accumulated gradient once), and under DDP after the all-reduce, e.g. in
  ``TrainerCallback.on_pre_optimizer_step``.
- Files are safetensors (never pickle): a flat ``{name: tensor}`` file plus string metadata.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from trl_ext.common.tensor_checks import _compute_dtype, _shape

__all__ = [
    "MeanGradient",
    "alignment_plane_from_gradients",
    "alignment_plane_from_weights",
    "load_plane",
    "project_gradients",
    "project_out",
    "save_plane",
]

_PLANE_KIND = "trl_ext.alignment_plane"
_MEAN_GRAD_KIND = "trl_ext.mean_gradient"


# --------------------------------------------------------------------------------------------------- helpers


def _check_mapping(what: str, d: object, allow_none: bool = True) -> None:
    if not isinstance(d, Mapping):
        raise TypeError(f"{what} must be a mapping {{parameter name: tensor}}, got {type(d).__name__}")
    for name, t in d.items():
        if t is None and allow_none:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{what}[{name!r}] must be a torch.Tensor, got {type(t).__name__}")


def _check_subset(sub_what: str, sub: Iterable[str], sup_what: str, sup: Mapping[str, object]) -> None:
    unknown = [n for n in sub if n not in sup]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise ValueError(f"tensor {unknown[0]!r}{more} is in {sub_what} but not in {sup_what}; names must match")


def _check_same_names(a_what: str, a: Mapping[str, object], b_what: str, b: Mapping[str, object]) -> None:
    _check_subset(a_what, a, b_what, b)
    _check_subset(b_what, b, a_what, a)


def _check_shape(name: str, a_what: str, a: torch.Tensor, b_what: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"tensor {name!r} has shape {_shape(a)} in {a_what} but {_shape(b)} in {b_what}")


def _as_dict(what: str, d: object) -> dict[str, torch.Tensor]:
    """A mapping of tensors (``None`` entries dropped), or the mean of a :class:`MeanGradient`."""
    if isinstance(d, MeanGradient):
        return d.mean()
    _check_mapping(what, d)
    return {n: t for n, t in d.items() if t is not None}  # type: ignore[union-attr]


def _check_against_params(what: str, tensors: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor]) -> None:
    """Every tensor must name a parameter of ``params`` and have its shape (parameters absent from the file are
    fine: they simply have no direction)."""
    _check_mapping("params", params, allow_none=False)
    _check_subset(what, tensors, "params", params)
    for name, t in tensors.items():
        _check_shape(name, what, t, "params", params[name])


def _vec_stats(g: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``g`` and ``d`` in the compute dtype on ``g``'s device, plus ⟨g, d⟩ and ‖d‖²."""
    dtype = _compute_dtype(g, d)
    gc = g.detach().to(dtype)
    dc = d.detach().to(device=g.device, dtype=dtype)
    return gc, dc, (gc * dc).sum(), (dc * dc).sum()


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """cos(a, b), 0 when either vector is 0."""
    denom = a.norm() * b.norm()
    return torch.where(denom > 0, (a * b).sum() / denom.clamp_min(torch.finfo(denom.dtype).tiny), 0.0)


# ------------------------------------------------------------------------------------------------ projection
@torch.no_grad()
def project_gradients(
    g_task: Mapping[str, torch.Tensor | None],
    g_proxy: Mapping[str, torch.Tensor | None],
    strict: bool = True,
    eps: float = 1e-16,
) -> tuple[dict[str, torch.Tensor | None], dict[str, torch.Tensor]]:
    """Project the task gradient against the proxy gradient, per parameter tensor (docs/selective.md ``grad_project``).

    For every name with both ``g_T = g_task[name]`` and ``g_A = g_proxy[name]`` (flattened to vectors)::

        λ = ⟨g_T, g_A⟩ / (‖g_A‖² + eps)
        strict=True:   g = g_T − λ·g_A               (the component along g_A is removed: ⟨g, g_A⟩ ≈ 0)
        strict=False:  g = g_T − min(λ, 0)·g_A       (conflict-only: removed only when ⟨g_T, g_A⟩ < 0;
                                                      g_T is returned unchanged when they do not conflict)

    ``g_A`` is ∇CE(A⁺) (or −∇CE(A⁻)); only the returned ``g`` is applied. Returns ``(projected, stats)`` where
    ``projected`` has exactly the keys of ``g_task``. Names missing from ``g_proxy``, or whose proxy gradient is
    ``None``, are left unchanged (no proxy direction for that tensor); a ``None`` task gradient stays ``None``.
    A name in ``g_proxy`` that is not in ``g_task``, or a shape mismatch, raises ``ValueError`` naming the tensor
    (this catches prefix mismatches such as DDP's ``module.``). A zero ``g_A`` leaves ``g_T`` unchanged.

    ``stats`` (detached 0-dim tensors): ``num_paired`` (tensors with both gradients), ``num_conflicting``
    (paired tensors with ⟨g_T, g_A⟩ < 0), ``cosine_before`` / ``cosine_after`` (mean over paired tensors of
    cos(g_T, g_A) and cos(g, g_A); NaN when nothing is paired).
    """
    _check_mapping("g_task", g_task)
    _check_mapping("g_proxy", g_proxy)
    _check_subset("g_proxy", g_proxy, "g_task", g_task)
    projected: dict[str, torch.Tensor | None] = {}
    conflicts, cos_before, cos_after = [], [], []
    stat_device = None
    for name, g in g_task.items():
        d = g_proxy.get(name)
        if g is None or d is None:
            projected[name] = g
            continue
        _check_shape(name, "g_task", g, "g_proxy", d)
        gc, dc, dot, sq = _vec_stats(g, d)
        lam = dot / (sq + eps)
        if not strict:
            lam = lam.clamp(max=0.0)
        new = gc - lam * dc
        projected[name] = new.to(g.dtype)
        if stat_device is None:
            stat_device = g.device
        conflicts.append((dot < 0).to(stat_device))
        cos_before.append(_cosine(gc, dc).to(stat_device))
        cos_after.append(_cosine(new, dc).to(stat_device))
    if conflicts:
        stats = {
            "num_paired": torch.tensor(len(conflicts), device=stat_device),
            "num_conflicting": torch.stack(conflicts).sum(),
            "cosine_before": torch.stack(cos_before).mean(),
            "cosine_after": torch.stack(cos_after).mean(),
        }
    else:
        nan = torch.tensor(float("nan"))
        stats = {
            "num_paired": torch.tensor(0),
            "num_conflicting": torch.tensor(0),
            "cosine_before": nan,
            "cosine_after": nan.clone(),
        }
    return projected, stats


@torch.no_grad()
def project_out(
    grads: Mapping[str, torch.Tensor | None],
    direction: Mapping[str, torch.Tensor | None],
    eps: float = 0.0,
) -> dict[str, torch.Tensor | None]:
    """Remove a fixed direction from every gradient tensor (docs/selective.md
    ``grad_project_precomputed_proxy_grad``)::

        g ← g − (⟨g, ḡ⟩ / (‖ḡ‖² + eps))·ḡ          per parameter tensor, ḡ = direction[name]

    ``direction`` is normally the mean proxy gradient of one proxy pass (:class:`MeanGradient`, cached to disk).
    The default ``eps = 0`` is the exact formula of docs/selective.md (the result is orthogonal to ḡ); a tensor whose
    ``‖ḡ‖² + eps`` is 0 (a zero direction) is left unchanged instead of dividing by zero. Same name rules as
    :func:`project_gradients`: names absent from ``direction`` (or ``None``) are left unchanged, ``None``
    gradients stay ``None``, a direction name not in ``grads`` or a shape mismatch raises ``ValueError``.
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    _check_mapping("grads", grads)
    _check_mapping("direction", direction)
    _check_subset("direction", direction, "grads", grads)
    out: dict[str, torch.Tensor | None] = {}
    for name, g in grads.items():
        d = direction.get(name)
        if g is None or d is None:
            out[name] = g
            continue
        _check_shape(name, "grads", g, "direction", d)
        gc, dc, dot, sq = _vec_stats(g, d)
        denom = sq + eps
        coef = torch.where(denom > 0, dot / torch.where(denom > 0, denom, 1.0), 0.0)
        out[name] = (gc - coef * dc).to(g.dtype)
    return out


# ----------------------------------------------------------------------------------------- mean gradient
class MeanGradient:
    """Running mean per parameter tensor of gradients over a pass (the precomputed proxy gradient ḡ_A).

    ``add(grads)`` after each backward (or each optimizer step) of the proxy pass; ``mean()`` returns
    ``{name: ḡ}`` with ``ḡ = (1/n_name)·Σ g`` over the ``n_name`` calls in which that tensor had a gradient
    (``None`` entries are skipped and not counted). The mean is kept in float32 (float64 stays float64) on the
    device of the first gradient, updated as ``ḡ ← ḡ + (g − ḡ)/n``. ``save(path)`` / ``MeanGradient.load(path)``
    round-trip the means and counts through a safetensors file (no pickle), so the pass is computed once and
    reused; ``load(path, params=...)`` checks every tensor against a parameter dict (name and shape).
    """

    def __init__(self) -> None:
        self._mean: dict[str, torch.Tensor] = {}
        self._count: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._mean)

    def __contains__(self, name: object) -> bool:
        return name in self._mean

    @property
    def counts(self) -> dict[str, int]:
        """Number of gradients averaged per tensor."""
        return dict(self._count)

    @torch.no_grad()
    def add(self, grads: Mapping[str, torch.Tensor | None]) -> None:
        """Fold one set of gradients into the running means; a shape change for a known name raises ``ValueError``."""
        _check_mapping("grads", grads)
        for name, g in grads.items():
            if g is not None and name in self._mean:
                _check_shape(name, "grads", g, "the running mean", self._mean[name])
        for name, g in grads.items():
            if g is None:
                continue
            if name not in self._mean:
                self._mean[name] = g.detach().to(_compute_dtype(g)).clone()
                self._count[name] = 1
                continue
            mean = self._mean[name]
            n = self._count[name] + 1
            mean.add_(g.detach().to(device=mean.device, dtype=mean.dtype) - mean, alpha=1.0 / n)
            self._count[name] = n

    def mean(self) -> dict[str, torch.Tensor]:
        """``{name: ḡ}`` (copies). Raises ``ValueError`` if nothing was added."""
        if not self._mean:
            raise ValueError("MeanGradient.mean: no gradient was added")
        return {name: m.clone() for name, m in self._mean.items()}

    def save(self, path: str | os.PathLike) -> None:
        """Write the means and counts to a safetensors file (counts in the string metadata)."""
        if not self._mean:
            raise ValueError("MeanGradient.save: no gradient was added; nothing to save")
        metadata = {"format": "pt", "kind": _MEAN_GRAD_KIND, "counts": json.dumps(self._count)}
        save_file({n: m.detach().cpu().contiguous() for n, m in self._mean.items()}, os.fspath(path), metadata)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        params: Mapping[str, torch.Tensor] | None = None,
        device: str | torch.device = "cpu",
    ) -> MeanGradient:
        """Read a file written by :meth:`save` (a file without counts, e.g. a plane, loads with counts 1).

        With ``params`` (e.g. ``dict(model.named_parameters())``), every stored tensor must name a parameter and
        have its shape, else ``ValueError`` naming the tensor; parameters absent from the file are allowed (no
        direction for them: :func:`project_out` leaves them unchanged).
        """
        tensors, metadata = _read(path, device)
        if params is not None:
            _check_against_params(f"file {os.fspath(path)!r}", tensors, params)
        counts = json.loads(metadata.get("counts", "{}"))
        obj = cls()
        obj._mean = tensors
        obj._count = {name: int(counts.get(name, 1)) for name in tensors}
        return obj


# ------------------------------------------------------------------------------------------ alignment plane
def alignment_plane_from_gradients(
    mean_pos: Mapping[str, torch.Tensor] | MeanGradient | None,
    mean_neg: Mapping[str, torch.Tensor] | MeanGradient | None,
) -> dict[str, torch.Tensor]:
    """Alignment plane from mean gradients of fresh LoRA parameters (docs/selective.md)::

        S = ḡ⁺ − ḡ⁻        (both given: same names and shapes required, else ValueError naming the tensor)
        S = ḡ⁺             (only the positive-proxy mean)
        S = −ḡ⁻            (only the negative-proxy mean)

    **Decision** ("whichever exists if only one"): a missing side counts as 0 in ``ḡ⁺ − ḡ⁻``, so with only ḡ⁻ the
    plane is ``−ḡ⁻``, not ``ḡ⁻``. This keeps one sign convention for every plane: ``−S`` is the aligned
    direction (descending the proxy loss and/or ascending the negative-proxy loss), which is what
    ``θ ← θ − α·S`` (steering) relies on, and it matches :func:`alignment_plane_from_weights`
    (``S = θ_neg − θ_pos``). Both ``None`` raises ``ValueError``. Accepts dicts or :class:`MeanGradient`;
    returns new detached tensors in float32 (float64 stays float64).
    """
    if mean_pos is None and mean_neg is None:
        raise ValueError("alignment_plane_from_gradients: mean_pos and mean_neg are both None; need at least one")
    pos = _as_dict("mean_pos", mean_pos) if mean_pos is not None else None
    neg = _as_dict("mean_neg", mean_neg) if mean_neg is not None else None
    if pos is not None and neg is not None:
        _check_same_names("mean_pos", pos, "mean_neg", neg)
        plane = {}
        for name, gp in pos.items():
            gn = neg[name]
            _check_shape(name, "mean_pos", gp, "mean_neg", gn)
            dtype = _compute_dtype(gp, gn)
            plane[name] = gp.detach().to(dtype) - gn.detach().to(device=gp.device, dtype=dtype)
        return plane
    if neg is None:
        return {name: g.detach().to(_compute_dtype(g)).clone() for name, g in pos.items()}
    return {name: -g.detach().to(_compute_dtype(g)) for name, g in neg.items()}


@torch.no_grad()
def alignment_plane_from_weights(
    theta_pos: Mapping[str, torch.Tensor],
    theta_neg: Mapping[str, torch.Tensor],
    reference_plane: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Alignment plane from trained weights (docs/selective.md alternative)::

        S_i = θ_neg,i − θ_pos,i
        with reference_plane:  S_i ← S_i · ‖ref_i‖ / ‖S_i‖     (so ‖S_i‖ = ‖ref_i‖, Frobenius norms per tensor)

    ``theta_pos`` / ``theta_neg`` are the weights (e.g. LoRA A/B) trained on the positive and negative proxy;
    ``reference_plane`` is normally the gradient plane (:func:`alignment_plane_from_gradients`), so the weight
    plane gets the gradient plane's per-tensor scale. All mappings must have the same names and per-name shapes,
    else ``ValueError`` naming the tensor. A tensor with ``S_i = 0`` (identical weights) stays 0 (it has no
    direction to rescale). Returns new tensors in float32 (float64 stays float64).
    """
    _check_mapping("theta_pos", theta_pos, allow_none=False)
    _check_mapping("theta_neg", theta_neg, allow_none=False)
    _check_same_names("theta_pos", theta_pos, "theta_neg", theta_neg)
    if reference_plane is not None:
        _check_mapping("reference_plane", reference_plane, allow_none=False)
        _check_same_names("theta_pos", theta_pos, "reference_plane", reference_plane)
    plane = {}
    for name, tp in theta_pos.items():
        tn = theta_neg[name]
        _check_shape(name, "theta_pos", tp, "theta_neg", tn)
        dtype = _compute_dtype(tp, tn)
        s = tn.detach().to(device=tp.device, dtype=dtype) - tp.detach().to(dtype)
        if reference_plane is not None:
            ref = reference_plane[name]
            _check_shape(name, "theta_pos", tp, "reference_plane", ref)
            s_norm = s.norm()
            ref_norm = ref.detach().to(device=s.device, dtype=dtype).norm()
            scale = torch.where(s_norm > 0, ref_norm / torch.where(s_norm > 0, s_norm, 1.0), 0.0)
            s = s * scale
        plane[name] = s
    return plane


# ------------------------------------------------------------------------------------------------------ I/O
def _read(path: str | os.PathLike, device: str | torch.device) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = os.fspath(path)
    with safe_open(path, framework="pt") as f:
        metadata = dict(f.metadata() or {})
    return load_file(path, device=str(device)), metadata


def save_plane(plane: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write an alignment plane ``{name: S_name}`` to a safetensors file (no pickle)."""
    _check_mapping("plane", plane, allow_none=False)
    if not plane:
        raise ValueError("save_plane: plane is empty")
    tensors = {n: t.detach().cpu().contiguous() for n, t in plane.items()}
    save_file(tensors, os.fspath(path), {"format": "pt", "kind": _PLANE_KIND})


def load_plane(
    path: str | os.PathLike,
    params: Mapping[str, torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """Read a plane written by :func:`save_plane`; with ``params``, check names and shapes as
    :meth:`MeanGradient.load` does (``ValueError`` naming the tensor)."""
    tensors, _ = _read(path, device)
    if params is not None:
        _check_against_params(f"file {os.fspath(path)!r}", tensors, params)
    return tensors
