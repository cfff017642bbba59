"""Recipe plumbing: the cosine floor, precision fallback, and model path resolution errors."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import TrainingArguments, get_scheduler

from trl_ext.common.recipes import LoRAModelConfig, apply_min_lr_ratio, resolve_precision
from trl_ext.models import ModelNotFoundError, load_causal_lm, load_tokenizer, resolve_model_name_or_path


def _lrs(args: TrainingArguments, total: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=args.learning_rate)
    sched = get_scheduler(
        args.lr_scheduler_type,
        opt,
        num_warmup_steps=args.warmup_steps,
        num_training_steps=total,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs,
    )
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_floor_matches_formula(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=2.0, lr_scheduler_type="cosine", warmup_steps=4)
    apply_min_lr_ratio(args, 0.1)
    total, lr_max, lr_min = 40, 2.0, 0.2
    got = _lrs(args, total)
    for step, lr in enumerate(got):
        if step < 4:
            expected = lr_max * step / 4
        else:
            progress = (step - 4) / (total - 4)
            expected = lr_min + (lr_max - lr_min) * 0.5 * (1 + math.cos(math.pi * progress))
        assert lr == pytest.approx(expected, rel=1e-6, abs=1e-9), step
    assert min(got[4:]) >= lr_min - 1e-9


def test_min_lr_ratio_zero_keeps_plain_cosine_and_other_schedules_refuse(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), lr_scheduler_type="cosine")
    apply_min_lr_ratio(args, 0.0)
    assert args.lr_scheduler_type.value == "cosine"
    linear = TrainingArguments(output_dir=str(tmp_path), lr_scheduler_type="linear")
    with pytest.raises(ValueError, match="min_lr_ratio=0.1 needs lr_scheduler_type 'cosine', got 'linear'"):
        apply_min_lr_ratio(linear, 0.1)
    with pytest.raises(ValueError, match="min_lr_ratio must be in"):
        apply_min_lr_ratio(args, 1.5)


def test_bf16_falls_back_to_fp32_without_support(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True)
    args.bf16 = True
    resolve_precision(args)
    assert args.bf16 is (torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def test_lora_defaults_are_the_documents():
    cfg = LoRAModelConfig()
    assert (cfg.use_peft, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == (True, 64, 128, 0.05)
    assert cfg.lora_target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert cfg.model_name_or_path == "tiny"


def test_model_paths(tmp_path, tiny_model_path):
    assert resolve_model_name_or_path("tiny") == str(tiny_model_path)
    assert resolve_model_name_or_path(str(tiny_model_path)) == str(tiny_model_path)
    for missing in ["./does/not/exist", str(tmp_path / "nope"), "~/nope-trl-ext", "a/b/c"]:
        with pytest.raises(ModelNotFoundError, match="model path '.*' does not exist") as err:
            resolve_model_name_or_path(missing)
        assert missing in str(err.value)
    (tmp_path / "file.bin").write_text("x")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        resolve_model_name_or_path(str(tmp_path / "file.bin"))
    with pytest.raises(ModelNotFoundError, match="not set"):
        resolve_model_name_or_path("")
    assert resolve_model_name_or_path("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"  # a hub id passes through


def test_unreachable_hub_id_names_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="could not load model 'trl-ext-test/no-such-model'"):
        load_causal_lm("trl-ext-test/no-such-model")
    with pytest.raises(ModelNotFoundError, match="trl-ext-test/no-such-model"):
        load_tokenizer("trl-ext-test/no-such-model")


@pytest.mark.parametrize("recipe_name", ["sft_affine", "ppo_affine"])
def test_real_configs_parse_here(recipe_name):
    """The real-model configs ask for bf16; on hardware without it they still parse, in float32."""
    from trl import SFTConfig

    from tests.conftest import REPO, load_recipe
    from trl_ext import PPOConfig
    from trl_ext.common.recipes import recipe_parser

    recipe = load_recipe(recipe_name)
    script_cls = recipe.SFTAffineArguments if recipe_name == "sft_affine" else recipe.PPOAffineArguments
    config_cls = SFTConfig if recipe_name == "sft_affine" else PPOConfig
    parser = recipe_parser(script_cls, config_cls, LoRAModelConfig)
    _, training_args, model_args = parser.parse_args_and_config(
        ["--config", str(REPO / f"recipes/configs/{recipe_name}.yaml")]
    )
    assert training_args.bf16 is (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    assert model_args.lora_r == 64 and model_args.lora_alpha == 128
