"""Gradient surgery and alignment planes (``trl_ext.selective.projection``, docs/selective.md).

Checked against numpy computations of the formulas and against the defining properties (orthogonality,
unchanged non-conflicting gradients, the rescaled norm), plus a safetensors round trip.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trl_ext.selective.projection import (
    MeanGradient,
    alignment_plane_from_gradients,
    alignment_plane_from_weights,
    load_plane,
    project_gradients,
    project_out,
    save_plane,
)

SHAPES = {"a.lora_A.weight": (4, 6), "a.lora_B.weight": (6, 4), "b.bias": (5,)}


def _grads(gen: torch.Generator, scale: float = 1.0) -> dict[str, torch.Tensor]:
    return {name: torch.randn(*shape, generator=gen) * scale for name, shape in SHAPES.items()}


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.dot(a.double().numpy().ravel(), b.double().numpy().ravel()))


def _conflicting_pair(gen: torch.Generator, sign: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(g_T, g_A) with sign(⟨g_T, g_A⟩) = sign, by flipping g_T if needed."""
    g_t, g_a = torch.randn(4, 6, generator=gen), torch.randn(4, 6, generator=gen)
    if np.sign(_dot(g_t, g_a)) != sign:
        g_t = -g_t
    return g_t, g_a


# ---------------------------------------------------------------------------------------- project_gradients
def test_strict_projection_matches_formula_and_is_orthogonal():
    gen = torch.Generator().manual_seed(0)
    g_task, g_proxy = _grads(gen), _grads(gen)
    projected, stats = project_gradients(g_task, g_proxy, strict=True)
    assert projected.keys() == g_task.keys()
    cos_before, conflicts = [], 0
    for name in SHAPES:
        gt, ga = g_task[name].double().numpy(), g_proxy[name].double().numpy()
        lam = np.sum(gt * ga) / (np.sum(ga * ga) + 1e-16)
        np.testing.assert_allclose(projected[name].numpy(), gt - lam * ga, rtol=1e-5, atol=1e-6)
        assert abs(_dot(projected[name], g_proxy[name])) < 1e-4
        assert projected[name].dtype == g_task[name].dtype
        cos_before.append(np.sum(gt * ga) / np.linalg.norm(gt) / np.linalg.norm(ga))
        conflicts += int(np.sum(gt * ga) < 0)
    assert stats["num_paired"].item() == 3
    assert stats["num_conflicting"].item() == conflicts
    assert stats["cosine_before"].item() == pytest.approx(np.mean(cos_before), rel=1e-5)
    assert abs(stats["cosine_after"].item()) < 1e-5


@pytest.mark.parametrize("seed", range(4))
def test_conflict_only_projection(seed):
    gen = torch.Generator().manual_seed(seed)
    # agreeing: g_T unchanged (same values), even under strict=False
    g_t, g_a = _conflicting_pair(gen, +1.0)
    projected, stats = project_gradients({"w": g_t}, {"w": g_a}, strict=False)
    torch.testing.assert_close(projected["w"], g_t, rtol=0, atol=0)
    assert stats["num_conflicting"].item() == 0
    # while strict removes the (agreeing) component too
    strict, _ = project_gradients({"w": g_t}, {"w": g_a}, strict=True)
    assert abs(_dot(strict["w"], g_a)) < 1e-4
    assert not torch.allclose(strict["w"], g_t)
    # conflicting: the result is orthogonal to g_A and equals the strict projection
    g_t, g_a = _conflicting_pair(gen, -1.0)
    projected, stats = project_gradients({"w": g_t}, {"w": g_a}, strict=False)
    assert abs(_dot(projected["w"], g_a)) < 1e-4
    strict, _ = project_gradients({"w": g_t}, {"w": g_a}, strict=True)
    torch.testing.assert_close(projected["w"], strict["w"])
    assert stats["num_conflicting"].item() == 1
    assert stats["cosine_before"].item() < 0


def test_project_gradients_missing_none_and_zero_entries():
    gen = torch.Generator().manual_seed(5)
    g_task = {**_grads(gen), "frozen": None}
    g_proxy = {"a.lora_A.weight": torch.randn(4, 6, generator=gen), "b.bias": None, "frozen": torch.ones(2)}
    projected, stats = project_gradients(g_task, g_proxy)
    assert projected["frozen"] is None
    assert projected["a.lora_B.weight"] is g_task["a.lora_B.weight"]  # no proxy entry: unchanged
    assert projected["b.bias"] is g_task["b.bias"]  # proxy gradient None: unchanged
    assert stats["num_paired"].item() == 1
    zero, _ = project_gradients({"w": torch.ones(3)}, {"w": torch.zeros(3)})
    torch.testing.assert_close(zero["w"], torch.ones(3))  # λ = 0/(0 + eps) = 0
    _, empty = project_gradients({"w": torch.ones(3)}, {})
    assert empty["num_paired"].item() == 0 and np.isnan(empty["cosine_before"].item())


def test_project_gradients_bf16_keeps_dtype():
    gen = torch.Generator().manual_seed(6)
    g_t, g_a = torch.randn(8, 8, generator=gen), torch.randn(8, 8, generator=gen)
    projected, _ = project_gradients({"w": g_t.bfloat16()}, {"w": g_a.bfloat16()})
    assert projected["w"].dtype == torch.bfloat16
    reference, _ = project_gradients({"w": g_t.bfloat16().float()}, {"w": g_a.bfloat16().float()})
    torch.testing.assert_close(projected["w"].float(), reference["w"], rtol=1e-2, atol=1e-2)


def test_project_gradients_name_and_shape_errors():
    gen = torch.Generator().manual_seed(7)
    g_task = _grads(gen)
    with pytest.raises(ValueError, match=r"'module\.b\.bias' is in g_proxy but not in g_task"):
        project_gradients(g_task, {"module.b.bias": torch.zeros(5)})
    with pytest.raises(ValueError, match=r"'b\.bias' has shape \(5,\) in g_task but \(6,\) in g_proxy"):
        project_gradients(g_task, {"b.bias": torch.zeros(6)})
    with pytest.raises(TypeError, match="mapping"):
        project_gradients(list(g_task.values()), {})


# ------------------------------------------------------------------------------------------------ project_out
def test_project_out_matches_formula_and_is_orthogonal():
    gen = torch.Generator().manual_seed(8)
    grads, direction = _grads(gen), _grads(gen, scale=1e-3)
    out = project_out(grads, direction)
    for name in SHAPES:
        g, d = grads[name].double().numpy(), direction[name].double().numpy()
        expected = g - (np.sum(g * d) / np.sum(d * d)) * d
        np.testing.assert_allclose(out[name].numpy(), expected, rtol=1e-5, atol=1e-6)
        cos = _dot(out[name], direction[name]) / np.linalg.norm(out[name]) / np.linalg.norm(direction[name])
        assert abs(cos) < 1e-5
    # a tiny direction is still projected exactly (no eps by default), a zero one leaves g unchanged
    tiny = project_out({"w": torch.tensor([1.0, 1.0])}, {"w": torch.tensor([1e-12, 0.0])})
    torch.testing.assert_close(tiny["w"], torch.tensor([0.0, 1.0]))
    zero = project_out({"w": torch.tensor([1.0, 2.0]), "v": None}, {"w": torch.zeros(2)})
    torch.testing.assert_close(zero["w"], torch.tensor([1.0, 2.0]))
    assert zero["v"] is None
    with pytest.raises(ValueError, match=r"'b\.bias' has shape \(5,\) in grads but \(2,\) in direction"):
        project_out(grads, {"b.bias": torch.zeros(2)})
    with pytest.raises(ValueError, match="'c' is in direction but not in grads"):
        project_out(grads, {"c": torch.zeros(2)})


# ---------------------------------------------------------------------------------------------- MeanGradient
def test_mean_gradient_matches_numpy_and_round_trips(tmp_path):
    gen = torch.Generator().manual_seed(9)
    steps = [_grads(gen) for _ in range(5)]
    steps[2]["b.bias"] = None  # a tensor without gradient in one step is not counted there
    acc = MeanGradient()
    for g in steps:
        acc.add(g)
    mean = acc.mean()
    for name in SHAPES:
        arrays = [g[name].numpy() for g in steps if g[name] is not None]
        np.testing.assert_allclose(mean[name].numpy(), np.mean(arrays, axis=0), rtol=1e-5, atol=1e-6)
    assert acc.counts == {"a.lora_A.weight": 5, "a.lora_B.weight": 5, "b.bias": 4}

    path = tmp_path / "proxy_grad.safetensors"
    acc.save(path)
    params = {name: torch.nn.Parameter(torch.zeros(shape)) for name, shape in SHAPES.items()}
    params["extra.weight"] = torch.nn.Parameter(torch.zeros(3))  # parameters without a stored mean are fine
    loaded = MeanGradient.load(path, params=params)
    assert loaded.counts == acc.counts
    for name, m in loaded.mean().items():
        torch.testing.assert_close(m, mean[name], rtol=0, atol=0)
    with open(path, "rb") as f:  # a safetensors file: 8-byte header length then a JSON header, no pickle
        header_len = int.from_bytes(f.read(8), "little")
        assert f.read(1) == b"{" and header_len > 0

    # continuing a loaded mean keeps the running average exact
    extra = _grads(gen)
    loaded.add(extra)
    np.testing.assert_allclose(
        loaded.mean()["a.lora_A.weight"].numpy(),
        np.mean([g["a.lora_A.weight"].numpy() for g in [*steps, extra]], axis=0),
        rtol=1e-5,
        atol=1e-6,
    )


def test_mean_gradient_errors(tmp_path):
    gen = torch.Generator().manual_seed(10)
    acc = MeanGradient()
    with pytest.raises(ValueError, match="no gradient"):
        acc.mean()
    acc.add(_grads(gen))
    with pytest.raises(ValueError, match=r"'b\.bias' has shape \(4,\) in grads"):
        acc.add({"b.bias": torch.zeros(4)})
    path = tmp_path / "g.safetensors"
    acc.save(path)
    wrong = {name: torch.zeros(shape) for name, shape in SHAPES.items()}
    wrong["a.lora_B.weight"] = torch.zeros(6, 8)
    with pytest.raises(ValueError, match=r"'a\.lora_B\.weight' has shape \(6, 4\) in file .* but \(6, 8\) in params"):
        MeanGradient.load(path, params=wrong)
    renamed = {f"module.{name}": torch.zeros(shape) for name, shape in SHAPES.items()}
    with pytest.raises(ValueError, match=r"'a\.lora_A\.weight' \(and 2 more\) is in file .* but not in params"):
        MeanGradient.load(path, params=renamed)


# ------------------------------------------------------------------------------------------------- planes
def test_plane_from_gradients_sign_conventions():
    gen = torch.Generator().manual_seed(11)
    pos, neg = _grads(gen), _grads(gen)
    plane = alignment_plane_from_gradients(pos, neg)
    for name in SHAPES:
        np.testing.assert_allclose(plane[name].numpy(), pos[name].numpy() - neg[name].numpy(), rtol=1e-6)
    only_pos = alignment_plane_from_gradients(pos, None)
    only_neg = alignment_plane_from_gradients(None, neg)
    for name in SHAPES:
        torch.testing.assert_close(only_pos[name], pos[name])
        torch.testing.assert_close(only_neg[name], -neg[name])
    acc = MeanGradient()
    acc.add(pos)
    from_acc = alignment_plane_from_gradients(acc, neg)
    torch.testing.assert_close(from_acc["b.bias"], plane["b.bias"])
    with pytest.raises(ValueError, match="both None"):
        alignment_plane_from_gradients(None, None)
    with pytest.raises(ValueError, match="'b.bias' is in mean_pos but not in mean_neg"):
        alignment_plane_from_gradients(pos, {k: v for k, v in neg.items() if k != "b.bias"})
    with pytest.raises(ValueError, match=r"'b\.bias' has shape \(5,\) in mean_pos but \(3,\) in mean_neg"):
        alignment_plane_from_gradients(pos, {**neg, "b.bias": torch.zeros(3)})


def test_plane_from_weights_and_rescaling():
    gen = torch.Generator().manual_seed(12)
    theta_pos, theta_neg, ref = _grads(gen), _grads(gen), _grads(gen, scale=1e-3)
    plane = alignment_plane_from_weights(theta_pos, theta_neg)
    for name in SHAPES:
        np.testing.assert_allclose(plane[name].numpy(), theta_neg[name].numpy() - theta_pos[name].numpy(), rtol=1e-6)
    scaled = alignment_plane_from_weights(theta_pos, theta_neg, reference_plane=ref)
    for name in SHAPES:
        diff = theta_neg[name].double().numpy() - theta_pos[name].double().numpy()
        ref_norm = np.linalg.norm(ref[name].double().numpy())
        assert np.linalg.norm(scaled[name].double().numpy()) == pytest.approx(ref_norm, rel=1e-5)
        # same direction as θ_neg − θ_pos
        np.testing.assert_allclose(scaled[name].numpy(), diff * ref_norm / np.linalg.norm(diff), rtol=1e-5, atol=1e-9)
    same = alignment_plane_from_weights({"w": torch.ones(2)}, {"w": torch.ones(2)}, {"w": torch.ones(2)})
    torch.testing.assert_close(same["w"], torch.zeros(2))  # no direction: stays 0
    with pytest.raises(ValueError, match="'b.bias' is in theta_pos but not in reference_plane"):
        alignment_plane_from_weights(theta_pos, theta_neg, {k: v for k, v in ref.items() if k != "b.bias"})
    with pytest.raises(ValueError, match=r"'b\.bias' has shape \(5,\) in theta_pos but \(2,\) in theta_neg"):
        alignment_plane_from_weights(theta_pos, {**theta_neg, "b.bias": torch.zeros(2)})


def test_plane_save_load_round_trip(tmp_path):
    gen = torch.Generator().manual_seed(13)
    plane = alignment_plane_from_gradients(_grads(gen), _grads(gen))
    path = tmp_path / "plane.safetensors"
    save_plane(plane, path)
    params = {name: torch.zeros(shape) for name, shape in SHAPES.items()}
    loaded = load_plane(path, params=params)
    assert loaded.keys() == plane.keys()
    for name in plane:
        torch.testing.assert_close(loaded[name], plane[name], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"'b\.bias' has shape \(5,\) in file .* but \(7,\) in params"):
        load_plane(path, params={**params, "b.bias": torch.zeros(7)})
    with pytest.raises(ValueError, match="empty"):
        save_plane({}, path)
