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


# ---- custom reward functions, malformed-answer penalty, num_rollouts / rollout_batch_size (issue 19) ----


def _parse(recipe, *argv: str):
    from trl_ext import PPOConfig
    from trl_ext.common.recipes import LoRAModelConfig, recipe_parser

    parser = recipe_parser(recipe.PPOAffineArguments, PPOConfig, LoRAModelConfig)
    return parser.parse_args_and_config(["--config", TINY, *argv])


def test_malformed_penalty_through_the_task_reward():
    from trl_ext.tasks import get_task
    from trl_ext.tasks.rewards import is_malformed, make_task_reward

    inst = get_task("sat", n=5, k=3).generate_many(1, seed=0)[0]
    reward = make_task_reward({"sat": {"n": 5, "k": 3}}, malformed_penalty=0.5)
    completions = [inst.expert_answer, "x1=True", "I cannot solve this.", [{"role": "assistant", "content": ""}]]
    scores = reward(
        prompts=[""] * 4, completions=completions, task=["sat"] * 4, payload=[json.dumps(inst.payload)] * 4
    )
    assert scores == [1.0, 0.0, -0.5, -0.5]  # right, well-formed but wrong, no assignment at all, empty
    plain = make_task_reward({"sat": {"n": 5, "k": 3}})
    assert plain(prompts=[""] * 4, completions=completions, task=["sat"] * 4,
                 payload=[json.dumps(inst.payload)] * 4) == [1.0, 0.0, 0.0, 0.0]  # fmt: skip
    # ABD / DED: no <INPUT> block, no fenced code block
    assert is_malformed("abd", "the input is 5") and not is_malformed("abd", "<INPUT>\n5\n</INPUT>")
    assert is_malformed("ded", "print(1)") and not is_malformed("ded", "```python\nprint(1)\n```")
    with pytest.raises(ValueError, match=r"task\(s\) \['sudoku'\] have no malformed-answer check"):
        make_task_reward({"sudoku": {}}, malformed_penalty=1.0)
    with pytest.raises(ValueError, match="malformed_penalty must be a finite number >= 0, got -1"):
        make_task_reward({"sat": {}}, malformed_penalty=-1)


def test_reward_funcs_by_name_added_or_replacing_and_bad_names_are_named(tmp_path):
    from trl_ext.common.errors import ConfigError

    recipe = load_recipe("ppo_affine")
    module = tmp_path / "my_rewards.py"
    module.write_text("def brevity(prompts, completions, **kw):\n    return [-len(c) / 100 for c in completions]\n")
    spec = f"{module}:brevity"
    script_args, _, _ = _parse(recipe, "--reward_funcs", spec, "trl_ext.tasks.rewards:make_task_reward")
    funcs = recipe.build_reward_funcs(script_args, script_args.task_params())
    assert [f.__name__ for f in funcs] == ["task_score", "brevity", "make_task_reward"]  # added after the task reward
    assert funcs[1]([""], ["abcd"]) == [-0.04]
    script_args, _, _ = _parse(recipe, "--reward_funcs", spec, "--task_reward", "false")
    assert [f.__name__ for f in recipe.build_reward_funcs(script_args, {})] == ["brevity"]  # replacing it
    cases = {
        ("--reward_funcs", "no_such_module_xyz:f"): "--reward_funcs 'no_such_module_xyz:f': cannot import module",
        ("--reward_funcs", "trl_ext.tasks.rewards:nope"): "has no function 'nope'",
        ("--task_reward", "false"): "no reward function: --task_reward false needs --reward_funcs",
        ("--task_reward", "false", "--reward_funcs", spec, "--malformed_penalty", "1"): "needs --task_reward true",
    }
    for argv, message in cases.items():
        script_args, _, _ = _parse(recipe, *argv)
        with pytest.raises(ConfigError, match=message):
            recipe.build_reward_funcs(script_args, {})
    # in the recipe: before anything is loaded (the missing model would be the next error)
    script_args, training_args, model_args = _parse(
        recipe, "--output_dir", str(tmp_path / "o"), "--model_name_or_path", "./missing/sft",
        "--reward_funcs", "trl_ext.tasks.rewards:nope",
    )  # fmt: skip
    with pytest.raises(ConfigError, match="has no function 'nope'"):
        recipe.main(script_args, training_args, model_args)


def test_num_rollouts_and_rollout_batch_size_map_onto_the_batching(tmp_path):
    from trl_ext.common.errors import ConfigError

    recipe = load_recipe("ppo_affine")
    # the tiny config: num_mini_batches 2, num_ppo_epochs 4, per_device_train_batch_size 8, max_steps 160
    script_args, training_args, _ = _parse(recipe, "--num_rollouts", "3", "--rollout_batch_size", "4",
                                           "--max_steps", "-1")  # fmt: skip
    text = recipe.apply_rollout_args(script_args, training_args)
    assert (training_args.per_device_train_batch_size, training_args.generation_batch_size) == (2, 4)
    assert training_args.max_steps == 24  # 3 rollouts x 4 epochs x 2 mini-batches
    assert "per_device_train_batch_size=2 x num_mini_batches=2" in text and "max_steps=24" in text
    script_args, training_args, _ = _parse(recipe, "--num_rollouts", "20")  # agrees with max_steps 160
    assert recipe.apply_rollout_args(script_args, training_args) and training_args.max_steps == 160
    script_args, training_args, _ = _parse(recipe, "--gradient_accumulation_steps", "2", "--num_rollouts", "3",
                                           "--max_steps", "-1")  # fmt: skip
    recipe.apply_rollout_args(script_args, training_args)
    assert training_args.max_steps == 12
    script_args, training_args, _ = _parse(recipe)
    assert recipe.apply_rollout_args(script_args, training_args) is None and training_args.max_steps == 160
    cases = {
        ("--num_rollouts", "3"): "num_rollouts=3 means max_steps=24, but max_steps=160 is set",
        ("--rollout_batch_size", "5"): "rollout_batch_size=5 is not a multiple of num_mini_batches=2",
        ("--rollout_batch_size", "4", "--per_device_train_batch_size", "3"): "per_device_train_batch_size=3 is set",
        ("--rollout_batch_size", "0"): "rollout_batch_size must be an int >= 1",
    }
    for argv, message in cases.items():
        script_args, training_args, _ = _parse(recipe, *argv)
        with pytest.raises(ConfigError, match=message):
            recipe.apply_rollout_args(script_args, training_args)


def test_recipe_with_rollouts_custom_reward_and_penalty(tmp_path, tiny_model_path):
    """One tiny run: 1 rollout of 4 completions (2 per mini-batch x 2), the task reward with the penalty and a custom
    reward by file name, both logged."""
    module = tmp_path / "my_rewards.py"
    module.write_text("def brevity(prompts, completions, **kw):\n    return [-len(c) / 100 for c in completions]\n")
    out = tmp_path / "ppo"
    proc = run_script(
        ["recipes/ppo_affine.py", "--config", TINY, "--model_name_or_path", "tiny", "--output_dir", str(out),
         "--data_dir", str(tmp_path / "data"), "--tasks", "sat", "--num_samples", "20", "--num_episodes", "0",
         "--heldout_samples", "0", "--heldout_episodes", "0", "--save_strategy", "no", "--logging_steps", "1",
         "--num_rollouts", "1", "--rollout_batch_size", "4", "--max_steps", "-1",
         "--reward_funcs", f"{module}:brevity", "--malformed_penalty", "0.5"]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "[trl_ext] rollouts: rollout_batch_size=4 -> per_device_train_batch_size=2" in proc.stdout
    columns, rows = read_loss_log(out / "loss_log.csv")
    assert max(r["step"] for r in rows) == 8.0  # 1 rollout x 4 epochs x 2 mini-batches
    assert "rewards/brevity/mean" in columns and "rewards/task_score/mean" in columns
    task_scores = [r["rewards/task_score/mean"] for r in rows if "rewards/task_score/mean" in r]
    assert task_scores and all(-0.5 <= x <= 1.0 for x in task_scores)
