"""SafeLoRA (docs/selective.md (SafeLoRA)) against an independent numpy computation; name matching; CLI; callback."""

from __future__ import annotations

import copy
import json
import random

import numpy as np
import pytest
import torch

from trl_ext.selective.safelora import (
    REPORT_NAME,
    SafeLoRAReport,
    load_state_dict_from,
    main,
    projection_matrix,
    safelora_project,
)

TARGETS = ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]
PREFIX = "base_model.model."
RANK, ALPHA = 4, 8


# --------------------------------------------------------------------------------------------------
# numpy reference, written from docs/selective.md (SafeLoRA)
def numpy_safelora(A, B, base, aligned, projection, select, threshold=0.5, num_proj_layers=10):
    """A, B: {module: array} in model order; base, aligned: {module: weight}. Returns cos, projected, B_new, pdst."""
    names = list(A)
    cos, cb = {}, {}
    for n in names:
        v = aligned[n].astype(np.float64) - base[n].astype(np.float64)
        if projection == "approx":
            c = v @ v.T / np.linalg.norm(v, "fro")
        else:  # V (VᵀV)⁺ Vᵀ
            c = v @ np.linalg.pinv(v.T @ v, rcond=1e-10) @ v.T
        b, a = B[n].astype(np.float64), A[n].astype(np.float64)
        dw = b @ a
        x = c @ dw
        cos[n] = float(np.sum(x * dw) / (np.linalg.norm(x) * np.linalg.norm(dw)))
        cb[n] = c @ b
    if select == "threshold":
        projected = {n for n in names if cos[n] <= threshold}
    else:
        projected = set(sorted(names, key=lambda n: cos[n])[:num_proj_layers])
    b_new = {n: cb[n] if n in projected else B[n].astype(np.float64) for n in names}
    pdst = float(np.mean([1.0 / (1.0 + np.linalg.norm(b_new[n] - cb[n])) for n in names]))
    return cos, projected, b_new, pdst


def lora_arrays(peft_model, adapter="default"):
    """{module: A}, {module: B} as numpy arrays, in model order, read from the parameters by name."""
    A, B = {}, {}
    for name, param in peft_model.named_parameters():
        for which, store in (("lora_A", A), ("lora_B", B)):
            suffix = f".{which}.{adapter}.weight"
            if name.endswith(suffix):
                store[name[len(PREFIX) : -len(suffix)]] = param.detach().cpu().numpy().copy()
    return A, B


def weights_np(state_dict, names):
    return {n: state_dict[n + ".weight"].numpy() for n in names}


# --------------------------------------------------------------------------------------------------
# fixtures
def _lora_config(**kw):
    from peft import LoraConfig

    return LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, init_lora_weights=False, **kw)


@pytest.fixture(scope="module")
def setup(tiny_model_path):
    """A LoRA model with random non-zero A/B, the tiny base weights, and an aligned copy where every adapted
    module moved along a rank-3 direction U Rᵀ (plus k_proj, not adapted); half of the adapted modules have a
    B mostly inside span(U) (high cos), the other half a random B (low cos)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_path), _lora_config())
    base = load_state_dict_from(tiny_model_path)
    aligned = {k: v.clone() for k, v in base.items()}
    gen = torch.Generator().manual_seed(1)
    names = list(lora_arrays(model)[0])
    assert len(names) == 10
    with torch.no_grad():
        for i, name in enumerate(sorted(names)):
            w = base[name + ".weight"]
            u, r = torch.randn(w.shape[0], 3, generator=gen), torch.randn(w.shape[1], 3, generator=gen)
            aligned[name + ".weight"] = w + 0.02 * u @ r.T
            if i % 2 == 0:
                b = model.get_submodule(PREFIX + name).lora_B["default"].weight
                b.copy_(0.1 * u @ torch.randn(3, RANK, generator=gen) + 0.03 * torch.randn(b.shape, generator=gen))
        k = "model.layers.0.self_attn.k_proj.weight"
        aligned[k] = aligned[k] + 0.05 * torch.randn(aligned[k].shape, generator=gen)
    return model, base, aligned, names


def fresh(setup):
    model, base, aligned, names = setup
    return copy.deepcopy(model), base, aligned, names


# --------------------------------------------------------------------------------------------------
# the algorithm
@pytest.mark.parametrize("projection", ["approx", "exact"])
@pytest.mark.parametrize("select", ["threshold", "number"])
def test_matches_numpy_reference(setup, projection, select):
    model, base, aligned, names = fresh(setup)
    A, B = lora_arrays(model)
    ref_cos, ref_projected, ref_b, ref_pdst = numpy_safelora(
        A, B, weights_np(base, names), weights_np(aligned, names), projection, select, 0.5, 3
    )
    # the case is informative: cos values on both sides of the threshold
    assert 2 <= sum(c <= 0.5 for c in ref_cos.values()) <= 8

    report = safelora_project(model, base, aligned, projection=projection, select=select, num_proj_layers=3)

    assert [m.name for m in report.modules] == names
    assert report.projection == projection and report.select == select
    assert {m.name: m.cos for m in report.modules} == pytest.approx(ref_cos, abs=2e-5)
    assert set(report.projected_modules) == ref_projected
    if select == "number":
        assert len(ref_projected) == 3
    assert report.pdst == pytest.approx(ref_pdst, rel=1e-5)
    assert all(m.scaling == pytest.approx(ALPHA / RANK) for m in report.modules)
    A_new, B_new = lora_arrays(model)
    for n in names:
        np.testing.assert_array_equal(A_new[n], A[n])  # A untouched
        if n in ref_projected:
            np.testing.assert_allclose(B_new[n], ref_b[n], rtol=1e-4, atol=1e-6)
            assert not np.allclose(B_new[n], B[n])
        else:
            np.testing.assert_array_equal(B_new[n], B[n])  # bitwise unchanged
    # unprojected modules contribute 1/(1 + ‖B − CB‖), projected ones exactly 1
    terms = [1.0 if m.projected else 1.0 / (1.0 + m.distance) for m in report.modules]
    assert report.pdst == pytest.approx(np.mean(terms))
    assert 0 < report.pdst < 1


def test_number_selection_edges(setup):
    model, base, aligned, names = fresh(setup)
    report = safelora_project(model, base, aligned, select="number", num_proj_layers=0)
    assert report.num_projected == 0 and report.pdst < 1
    model, *_ = fresh(setup)
    report = safelora_project(model, base, aligned, select="number", num_proj_layers=100)
    assert report.num_projected == len(names) and report.pdst == 1.0
    with pytest.raises(ValueError, match="num_proj_layers"):
        safelora_project(model, base, aligned, select="number", num_proj_layers=-1)
    with pytest.raises(ValueError, match="projection"):
        safelora_project(model, base, aligned, projection="pinv")


def test_projection_matrices(setup):
    _, base, aligned, _ = setup
    name = "model.layers.0.mlp.up_proj.weight"  # 128 x 64, rank-3 alignment direction
    v = aligned[name].double() - base[name].double()
    c = projection_matrix(v, "exact")
    assert c.dtype == torch.float64 and c.shape == (128, 128)
    torch.testing.assert_close(c @ c, c, atol=1e-10, rtol=0)  # idempotent
    torch.testing.assert_close(c, c.T, atol=1e-12, rtol=0)  # orthogonal (symmetric)
    assert torch.trace(c).item() == pytest.approx(3.0, abs=1e-8)  # rank of V
    torch.testing.assert_close(c @ v, v, atol=1e-7, rtol=0)  # fixes the column space of V (float32 noise)
    vn = v.numpy()
    np.testing.assert_allclose(c.numpy(), vn @ np.linalg.pinv(vn.T @ vn, rcond=1e-10) @ vn.T, atol=1e-8)
    approx = projection_matrix(v, "approx")
    np.testing.assert_allclose(approx.numpy(), vn @ vn.T / np.linalg.norm(vn, "fro"), rtol=1e-5, atol=1e-7)
    assert not torch.allclose(approx.double() @ approx.double(), approx.double(), atol=1e-3)  # not a projection
    full = torch.randn(64, 32, dtype=torch.float64)  # full column rank: C projects onto a 32-dim space
    cf = projection_matrix(full, "exact")
    assert torch.trace(cf).item() == pytest.approx(32.0, abs=1e-8)
    torch.testing.assert_close(cf @ cf, cf, atol=1e-10, rtol=0)
    assert torch.count_nonzero(projection_matrix(torch.zeros(8, 4), "approx")) == 0


def test_zero_alignment_module_is_projected_to_zero(setup):
    model, base, aligned, names = fresh(setup)
    aligned = dict(aligned)
    name = "model.layers.1.self_attn.q_proj"
    aligned[name + ".weight"] = base[name + ".weight"].clone()
    with pytest.warns(UserWarning, match="identical"):
        report = safelora_project(model, base, aligned, projection="exact", threshold=0.0)
    result = next(m for m in report.modules if m.name == name)
    assert result.cos == 0.0 and result.projected
    assert torch.count_nonzero(model.get_submodule(PREFIX + name).lora_B["default"].weight) == 0


# --------------------------------------------------------------------------------------------------
# matching by name
def _b_tensors(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}


def test_matching_is_by_name_not_order(setup):
    model, base, aligned, _ = fresh(setup)
    expected = safelora_project(model, base, aligned, projection="exact").to_dict()
    expected_b = _b_tensors(model)

    keys = list(base)
    random.Random(0).shuffle(keys)
    shuffled_base = {k: base[k] for k in keys}
    random.Random(1).shuffle(keys)
    shuffled_aligned = {k: aligned[k] for k in keys}
    model, *_ = fresh(setup)
    assert safelora_project(model, shuffled_base, shuffled_aligned, projection="exact").to_dict() == expected
    for n, b in _b_tensors(model).items():
        torch.testing.assert_close(b, expected_b[n], rtol=0, atol=0)

    # the PEFT model's own state dict (base_model.model. prefix, .base_layer, lora keys) serves as base weights
    model, *_ = fresh(setup)
    peft_state = {k: v.clone() for k, v in model.state_dict().items()}
    assert any(".base_layer." in k for k in peft_state)
    assert safelora_project(model, peft_state, shuffled_aligned, projection="exact").to_dict() == expected


def test_missing_module_is_named(setup):
    model, base, aligned, _ = fresh(setup)
    before = _b_tensors(model)
    key = "model.layers.1.mlp.up_proj.weight"
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.up_proj.*base"):
        safelora_project(
            model, {k: v for k, v in base.items() if k != key}, {k: v for k, v in aligned.items() if k != key}
        )
    with pytest.raises(ValueError, match=r"different modules.*only in aligned.*model\.layers\.1\.mlp\.up_proj"):
        safelora_project(model, {k: v for k, v in base.items() if k != key}, aligned)
    for n, b in _b_tensors(model).items():  # nothing was modified before the error
        torch.testing.assert_close(b, before[n], rtol=0, atol=0)


def test_shape_mismatch_is_named(setup):
    model, base, aligned, _ = fresh(setup)
    key = "model.layers.0.self_attn.o_proj.weight"
    bad = dict(aligned)
    bad[key] = torch.zeros(64, 65)
    with pytest.raises(ValueError, match=r"model\.layers\.0\.self_attn\.o_proj.*\(64, 64\).*\(64, 65\)"):
        safelora_project(model, base, bad)
    both_base, both_aligned = dict(base), dict(aligned)
    both_base[key], both_aligned[key] = torch.zeros(32, 64), torch.ones(32, 64)  # agree, but not the LoRA's shape
    with pytest.raises(ValueError, match=r"model\.layers\.0\.self_attn\.o_proj.*\(32, 64\).*\(64, 64\)"):
        safelora_project(model, both_base, both_aligned)


# --------------------------------------------------------------------------------------------------
# loading, report, CLI
def test_load_state_dict_from_folder_sharded_model_and_adapter(setup, tiny_model_path, tmp_path):
    from transformers import AutoModelForCausalLM

    model_obj = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    from_folder = load_state_dict_from(tiny_model_path)
    from_model = load_state_dict_from(model_obj)
    assert set(from_folder) == set(from_model)  # tied lm_head dropped like save_pretrained does
    for k in from_folder:
        torch.testing.assert_close(from_model[k], from_folder[k], rtol=0, atol=0)
    model_obj.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    sharded = load_state_dict_from(tmp_path / "sharded")
    assert set(sharded) == set(from_folder)
    # an adapter folder = base + alignment LoRA, merged
    peft_model, *_ = setup
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = load_state_dict_from(tmp_path / "adapter")
    name = "model.layers.0.self_attn.v_proj"
    A, B = lora_arrays(peft_model)
    expected = from_folder[name + ".weight"].numpy() + (ALPHA / RANK) * B[name] @ A[name]
    np.testing.assert_allclose(merged[name + ".weight"].numpy(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="no model weights"):
        load_state_dict_from(tmp_path)


def test_report_roundtrip_and_table(setup, tmp_path):
    model, base, aligned, names = fresh(setup)
    report = safelora_project(model, base, aligned, select="number", num_proj_layers=4)
    path = report.save(tmp_path / "r" / REPORT_NAME)
    data = json.loads(path.read_text())
    assert data["num_projected"] == 4 and data["num_modules"] == 10 and data["num_proj_layers"] == 4
    assert [m["name"] for m in data["modules"]] == names
    assert SafeLoRAReport.load(path) == report
    table = report.format()
    assert all(n in table for n in names) and "Pdst=" in table and "4/10 modules projected" in table


def test_cli_writes_projected_adapter(setup, tiny_model_path, tmp_path, capsys):
    from peft import PeftModel
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    model, base, aligned, names = fresh(setup)
    model.save_pretrained(tmp_path / "adapter")
    (tmp_path / "aligned").mkdir()
    save_file({k: v.contiguous() for k, v in aligned.items()}, tmp_path / "aligned" / "model.safetensors")
    expected = safelora_project(
        copy.deepcopy(model), base, aligned, projection="exact", select="number", num_proj_layers=5
    )
    expected_b = _b_tensors(model)  # unprojected adapter
    # fmt: off
    rc = main([
        "--base", str(tiny_model_path), "--aligned", str(tmp_path / "aligned"), "--adapter", str(tmp_path / "adapter"),
        "--output_dir", str(tmp_path / "out"), "--projection", "exact", "--select", "number", "--num_proj_layers", "5",
    ])
    # fmt: on
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Pdst=" in printed and "5/10 modules projected" in printed
    saved = SafeLoRAReport.load(tmp_path / "out" / REPORT_NAME)
    assert saved.projected_modules == expected.projected_modules
    assert saved.pdst == pytest.approx(expected.pdst, rel=1e-6)

    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_path), tmp_path / "out")
    in_memory = copy.deepcopy(model)
    safelora_project(in_memory, base, aligned, projection="exact", select="number", num_proj_layers=5)
    got, want = _b_tensors(reloaded), _b_tensors(in_memory)
    assert set(got) == set(want) == set(expected_b)
    changed = 0
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-6, atol=1e-7)
        changed += not torch.equal(got[n], expected_b[n])
    assert changed == 5


# --------------------------------------------------------------------------------------------------
# callback
def test_callback_projects_at_train_end(setup, tiny_model_path, tmp_path):
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from trl_ext.selective.safelora.callback import SafeLoRACallback

    _, base, aligned, names = setup
    snapshots = {}

    class Snapshot(TrainerCallback):  # runs before SafeLoRACallback (callbacks run in order)
        def on_train_end(self, args, state, control, model=None, **kwargs):
            snapshots["A"], snapshots["B"] = lora_arrays(model)

    rows = [
        {
            "prompt": [{"role": "user", "content": f"what is {i} + {i}?"}],
            "completion": [{"role": "assistant", "content": str(2 * i)}],
        }
        for i in range(4)
    ]
    out = tmp_path / "out"
    args = SFTConfig(
        output_dir=str(out),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        gradient_checkpointing=False,
        disable_tqdm=True,
    )
    callback = SafeLoRACallback(base=str(tiny_model_path), aligned=aligned, select="number", num_proj_layers=3)
    torch.manual_seed(0)
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_path),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_path),
        peft_config=_lora_config(),
        callbacks=[Snapshot(), callback],
    )
    trainer.train()

    A, B = snapshots["A"], snapshots["B"]
    assert list(A) == names
    _, ref_projected, ref_b, ref_pdst = numpy_safelora(
        A, B, weights_np(base, names), weights_np(aligned, names), "approx", "number", num_proj_layers=3
    )
    assert callback.report is not None
    assert set(callback.report.projected_modules) == ref_projected and len(ref_projected) == 3
    assert callback.report.pdst == pytest.approx(ref_pdst, rel=1e-5)
    _, B_now = lora_arrays(trainer.model)
    for n in names:
        np.testing.assert_allclose(B_now[n], ref_b[n], rtol=1e-4, atol=1e-6)
    saved = SafeLoRAReport.load(out / REPORT_NAME)
    assert saved == callback.report

    # the adapter saved after train() is the projected one
    trainer.save_model(str(tmp_path / "final"))
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_path), tmp_path / "final")
    _, B_saved = lora_arrays(reloaded)
    for n in names:
        np.testing.assert_allclose(B_saved[n], B_now[n], rtol=0, atol=0)


def test_conv1d_fan_in_fan_out_weights_are_transposed():
    """GPT-2-style Conv1D stores the weight as in x out; V is transposed to the LoRA update's out x in."""
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = Conv1D(nf=12, nx=6)  # weight (6, 12) = in x out

        def forward(self, x):
            return self.c_attn(x)

    torch.manual_seed(0)
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False)
    model = get_peft_model(Toy(), config)
    base = {"c_attn.weight": torch.randn(6, 12), "c_attn.bias": torch.zeros(12)}
    aligned = {"c_attn.weight": base["c_attn.weight"] + torch.randn(6, 12), "c_attn.bias": torch.zeros(12)}
    A, B = lora_arrays(model)
    assert B["c_attn"].shape == (12, 2)
    ref_cos, _, ref_b, ref_pdst = numpy_safelora(
        A, B, {"c_attn": base["c_attn.weight"].numpy().T}, {"c_attn": aligned["c_attn.weight"].numpy().T},
        "exact", "number", num_proj_layers=1,
    )  # fmt: skip
    report = safelora_project(model, base, aligned, projection="exact", select="number", num_proj_layers=1)
    assert report.modules[0].name == "c_attn" and report.modules[0].cos == pytest.approx(ref_cos["c_attn"], abs=1e-6)
    assert report.pdst == pytest.approx(ref_pdst)
    np.testing.assert_allclose(lora_arrays(model)[1]["c_attn"], ref_b["c_attn"], rtol=1e-5, atol=1e-6)
