"""recipes/ppo_affine.py: from an SFT adapter (merged into the reference), PPO, evaluation before and after."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, load_recipe, run_script
from trl_ext.common.loss_log import read_loss_log
from trl_ext.eval.report import load_report

TINY = str(REPO / "recipes/configs/ppo_affine_tiny.yaml")


@pytest.fixture(scope="module")
def sft_adapter(tmp_path_factory, tiny_model_path):
    """A LoRA adapter with non-zero random weights, saved like the SFT recipe's output."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_path),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], init_lora_weights=False, task_type="CAUSAL_LM"),
    )
    out = tmp_path_factory.mktemp("sft_adapter")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(out)
    return out


def test_recipe_from_sft_adapter(tmp_path, sft_adapter, tiny_model_path):
    out = tmp_path / "ppo"
    proc = run_script(
        ["recipes/ppo_affine.py", "--config", TINY, "--model_name_or_path", str(sft_adapter),
         "--output_dir", str(out), "--data_dir", str(tmp_path / "data"), "--num_samples", "40",
         "--max_steps", "8", "--logging_steps", "1", "--save_strategy", "no", "--heldout_samples", "4",
         "--num_episodes", "5", "--heldout_episodes", "1"]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "[trl_ext] launch: NO x 1 process on cpu" in proc.stdout

    # the adapter was merged into its base: W = W_base + (alpha / r) B A, checked independently
    base = load_file(tiny_model_path / "model.safetensors")
    adapter = load_file(sft_adapter / "adapter_model.safetensors")
    merged = load_file(out / "init_policy" / "model.safetensors")
    key = "model.layers.0.self_attn.q_proj.weight"
    a = adapter["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    b = adapter["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    assert torch.allclose(merged[key], base[key] + (8 / 4) * b @ a, atol=1e-5)

    # the PPO adapter sits on the merged policy, the value head beside it
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str((out / "init_policy").resolve())
    assert (out / "value_head.safetensors").exists() and (out / "value_head_config.json").exists()
    columns, rows = read_loss_log(out / "loss_log.csv")
    assert len([r for r in rows if "ppo/loss/value" in r]) == 8
    assert "reward" in columns and "ppo/objective/kl" in columns
    before, after = load_report(out / "eval_before.json"), load_report(out / "eval_results.json")
    for task in ("sat", "abd", "ded"):  # the tiny config's three tasks, rewarded (ABD/DED in the sandbox) and reported
        assert before["environments"][task]["n"] == after["environments"][task]["n"] == 4
    for env in ("webshop", "alfworld", "babyai", "sciworld", "textcraft"):  # and its five environments
        assert before["environments"][env]["n"] == after["environments"][env]["n"] == 1
        assert after["episodes"][env]["mean_length"] <= 4  # heldout_max_episode_length of the tiny config
    comparison = after["baseline_comparison"]
    assert comparison["baseline"] == before["model"] and "sat" in comparison["environments"]


def test_tiny_config_parses_and_errors_are_named(tmp_path):
    from trl_ext import PPOConfig
    from trl_ext.common.recipes import LoRAModelConfig, recipe_parser
    from trl_ext.models import ModelNotFoundError

    recipe = load_recipe("ppo_affine")
    parser = recipe_parser(recipe.PPOAffineArguments, PPOConfig, LoRAModelConfig)
    script_args, training_args, model_args = parser.parse_args_and_config(
        ["--config", TINY, "--output_dir", str(tmp_path / "o"), "--model_name_or_path", "./missing/sft"]
    )
    assert (training_args.num_iterations, training_args.steps_per_generation) == (4, 2)
    assert (training_args.vf_coef, training_args.gamma, training_args.lam) == (0.5, 0.99, 0.95)
    with pytest.raises(ModelNotFoundError, match="model path './missing/sft' does not exist"):
        recipe.main(script_args, training_args, model_args)
    with pytest.raises(ValueError, match="--clip_rnge"):
        parser.parse_args_and_config(["--config", TINY, "--clip_rnge", "0.3"])
