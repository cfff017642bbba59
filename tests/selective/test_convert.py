"""trl_ext.selective.convert: original config.json -> trl_ext recipe YAML, parsed by the recipe's own parser."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import load_recipe
from trl_ext.common.errors import ConfigError, MissingPathError
from trl_ext.selective.config import STRATEGIES
from trl_ext.selective.convert import KEY_MAPPING, convert, convert_config, main, mapping_markdown, write_converted

# an original-style config (emergent-misalignment experiment): top-level data keys, nested finetune_config
BASE: dict[str, Any] = {
    "dev_mode": False,
    "experiment_name": "em_run",
    "proxy_strategy": "naive",
    "train_on_task": True,
    "task_dataset_path": "data/task.jsonl",
    "task_dataset_format": "jsonl",
    "task_train_split": 0.9,
    "train_on_proxy": True,
    "align_test_dataset_desc": "HHH",
    "align_test_dataset_path": "data/hhh.jsonl",
    "align_test_neg_dataset_path": "data/hhh_neg.jsonl",
    "align_train_strategy": "subset",
    "align_train_coverage": 0.45,
    "do_mcq_eval": True,
    "mcq_eval_limit": 10,
    "data_seed": 3,
    "model_seed": 5,
    "timestamp": "20250618_060412",
    "finetune_config": {
        "model": "Qwen/Qwen2.5-0.5B-Instruct",
        "finetuned_model_id": "me/run",
        "max_seq_length": 256,
        "load_in_4bit": False,
        "is_peft": True,
        "r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.05,
        "lora_bias": "none",
        "use_rslora": False,
        "target_modules": ["q_proj", "v_proj"],
        "learning_rate": "2e-5",
        "epochs": 3,
        "max_steps": None,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "warmup_steps": 7,
        "logging_steps": 3,
        "save_steps": 500,
        "optim": "adamw_torch",
        "weight_decay": 0.02,
        "lr_scheduler_type": "cosine",
        "use_gradient_checkpointing": False,
        "push_to_hub": False,
        "output_dir": "outputs/converted",
        "save_checkpoints_to_hub": True,
        "checkpoint_save_model_frequency": 1,
        "proxy_cycling_mode": "synchronized",
        "positive_proxy": "proxy",
        "negative_proxy": "proxy_neg",
    },
}

# per strategy: its original knobs (finetune_config) and the trl_ext fields they must become
KNOBS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "naive": ({}, {}),
    "positive_negative_proxy": (
        {"lambda_proxy": 0.7, "neg_lambda_proxy": 0.3, "beta_kl": 0.01},
        {"lambda_proxy": 0.7, "lambda_negative": 0.3, "beta_kl": 0.01},
    ),
    "kl_divergence": ({"beta_kl": 10.0}, {"beta_kl": 10.0}),
    "representation_constraint": ({"beta_kl": 100.0}, {"beta_representation": 100.0}),
    "dpo": ({"lambda_dpo": 4.0, "beta": 0.2, "beta_kl": 0}, {"lambda_dpo": 4.0, "dpo_beta": 0.2}),
    "grad_project": (
        {"project_along_positive_proxy_grad": False, "project_strictly_orthogonal": False},
        {"grad_project_source": "negative", "grad_project_strict": False},
    ),
    "grad_project_precomputed_proxy_grad": ({"project_strictly_orthogonal": True}, {"proxy_grad_path": None}),
    "orth_penalty": (
        {"lambda_1": 2.0, "calc_alignment_plane_using_fully_finetuned_weights": True, "proxy_epochs": 1},
        {"lambda_plane": 2.0, "alignment_plane_source": "weights"},
    ),
    "directional_penalty": (
        {"lambda_1": 0.25, "outcome_epochs": 2, "steering_vector_path": "~/plane.pt", "load_steering_vector": True},
        {"lambda_plane": 0.25, "num_train_epochs": 2.0, "alignment_plane_path": str(Path("~/plane.pt").expanduser())},
    ),
    "steering_weights": (
        {
            "steering_alpha": 0.8,
            "final_steering_alpha": 0.2,
            "alpha_scheduler_type": "linear",
            "alpha_warmup_steps": 4,
            "direct_steering": True,
        },
        {"steering_alpha": 0.8, "final_steering_alpha": 0.2, "alpha_warmup_steps": 4, "direct_steering": True},
    ),
    "steering_weights_add_alignment_plane": (
        {"steering_alpha": 0.3, "alpha_scheduler_type": None},
        {"steering_alpha": 0.3, "final_steering_alpha": 0.3},
    ),
    "safe_lora": (
        {"safe_lora_type": "number", "safe_lora_num_proj_layers": 4, "safe_lora_threshold": 0.4},
        {
            "safelora_select": "number",
            "safelora_num_proj_layers": 4,
            "safelora_threshold": 0.4,
            "safelora_base_model": "Qwen/Qwen2.5-0.5B-Instruct",
        },
    ),
}

# what every converted BASE must parse to: (argument group, field) -> value
COMMON: dict[tuple[str, str], Any] = {
    ("script", "data"): "custom",
    ("script", "outcome_dataset"): "data/task.jsonl",
    ("script", "outcome_split"): "train[:90%]",
    ("script", "outcome_eval_dataset"): "data/task.jsonl",
    ("script", "outcome_eval_split"): "train[90%:]",
    ("script", "proxy_dataset"): "data/hhh.jsonl",
    ("script", "proxy_split"): "train[:45%]",
    ("script", "negative_proxy_dataset"): "data/hhh_neg.jsonl",
    ("script", "negative_proxy_split"): "train[:45%]",
    ("script", "proxy_eval_dataset"): "data/hhh.jsonl",
    ("model", "model_name_or_path"): "Qwen/Qwen2.5-0.5B-Instruct",
    ("model", "use_peft"): True,
    ("model", "lora_r"): 16,
    ("model", "lora_alpha"): 32,
    ("model", "lora_dropout"): 0.05,
    ("model", "use_rslora"): False,
    ("model", "lora_target_modules"): ["q_proj", "v_proj"],
    ("model", "load_in_4bit"): False,
    ("train", "run_name"): "em_run",
    ("train", "seed"): 5,
    ("train", "data_seed"): 3,
    ("train", "learning_rate"): 2e-5,
    ("train", "max_steps"): -1,
    ("train", "per_device_train_batch_size"): 4,
    ("train", "gradient_accumulation_steps"): 2,
    ("train", "warmup_steps"): 7,
    ("train", "logging_steps"): 3,
    ("train", "save_steps"): 500,
    ("train", "optim"): "adamw_torch",
    ("train", "weight_decay"): 0.02,
    ("train", "lr_scheduler_type"): "cosine",
    ("train", "gradient_checkpointing"): False,
    ("train", "push_to_hub"): False,
    ("train", "hub_model_id"): "me/run",
    ("train", "output_dir"): "outputs/converted",
    ("train", "max_length"): 256,
    ("train", "proxy_cycling"): "synchronized",
}


@pytest.fixture(scope="module")
def recipe():
    return load_recipe("selective_generalisation")


def _original(strategy: str) -> dict[str, Any]:
    config = copy.deepcopy(BASE)
    config["proxy_strategy"] = strategy
    config["finetune_config"].update(KNOBS[strategy][0])
    if "outcome_epochs" not in KNOBS[strategy][0]:
        config["finetune_config"]["outcome_epochs"] = None
    return config


def _parse(recipe, path: Path):
    script, train, model = recipe.make_parser().parse_args_and_config(["--config", str(path)])
    return {"script": script, "train": train, "model": model}


def _value(args, group: str, name: str) -> Any:
    value = getattr(args[group], name)
    return getattr(value, "value", value)  # enums (optim, lr_scheduler_type) compare by value


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_converts_and_parses_with_the_recipe(recipe, strategy, tmp_path):
    out = tmp_path / "converted.yaml"
    write_converted(_original(strategy), out)
    args = _parse(recipe, out)
    assert args["train"].strategy == strategy
    expected = dict(COMMON)
    expected[("train", "num_train_epochs")] = 3.0
    for name, value in KNOBS[strategy][1].items():
        expected[("train", name)] = value
    for (group, name), value in expected.items():
        assert _value(args, group, name) == value, f"{strategy}: {group}.{name}"


def test_nested_finetune_config_is_read_and_results_json_unwrapped():
    original = _original("kl_divergence")
    direct = convert_config(original)
    wrapped = convert_config({"experiment_config": original, "train_losses": []})
    assert direct == wrapped
    assert direct["learning_rate"] == 2e-5 and direct["lora_target_modules"] == ["q_proj", "v_proj"]
    assert direct["beta_kl"] == 10.0 and direct["num_train_epochs"] == 3.0


def test_unknown_and_unsupported_keys_are_named_in_one_error():
    original = _original("dpo")
    original["mystery_top"] = 1
    original["upsample_proxy_to"] = 0.1
    original["finetune_config"]["mystery_nested"] = True
    original["finetune_config"]["add_proxy_gradients"] = True
    original["finetune_config"]["alpha_scheduler_type"] = "cosine"
    with pytest.raises(ConfigError) as info:
        convert(original)
    message = str(info.value)
    for key in ("mystery_top", "upsample_proxy_to", "finetune_config.mystery_nested",
                "finetune_config.add_proxy_gradients", "finetune_config.alpha_scheduler_type"):  # fmt: skip
        assert key in message
    assert "5 key(s)" in message
    # the same keys dropped deliberately
    keys = ["mystery_top", "upsample_proxy_to", "finetune_config.mystery_nested",
            "finetune_config.add_proxy_gradients", "finetune_config.alpha_scheduler_type"]  # fmt: skip
    assert convert(original, ignore=keys).config["strategy"] == "dpo"


def test_unknown_strategy_and_conflicting_seeds_are_reported_together():
    original = _original("naive")
    original["proxy_strategy"] = "my_trainer"
    original["seed"] = 9  # the trigger experiment's seed, differing from model_seed 5
    with pytest.raises(ConfigError, match=r"(?s)proxy_strategy: unknown strategy 'my_trainer'.*seed"):
        convert(original)


def test_neutral_and_ignored_keys_are_listed_not_errors():
    conversion = convert(_original("naive"))
    assert "dev_mode" in conversion.ignored and "finetune_config.lora_bias" in conversion.ignored
    assert "do_mcq_eval" in conversion.ignored and "timestamp" in conversion.ignored
    original = _original("naive")
    original["finetune_config"]["lora_bias"] = "all"
    with pytest.raises(ConfigError, match="finetune_config.lora_bias"):
        convert(original)


def test_missing_custom_dataset_asks_for_an_override():
    original = _original("dpo")
    original["align_test_dataset_path"] = None  # the original picked it by align_test_dataset_desc
    with pytest.raises(ConfigError, match="proxy_eval_dataset"):
        convert(original)
    config = convert_config(original, overrides={"proxy_eval_dataset": "hhh.jsonl"})
    assert config["proxy_eval_dataset"] == "hhh.jsonl"


def test_missing_file(tmp_path):
    with pytest.raises(MissingPathError, match="nope.json"):
        convert_config(tmp_path / "nope.json")


def test_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{\n  "proxy_strategy": "dpo",\n  "finetune_config": {,}\n}\n')
    with pytest.raises(ConfigError, match=r"config\.json: invalid JSON at line 3"):
        convert_config(path)


def test_cli_convert_writes_a_yaml_that_reloads(recipe, tmp_path, capsys):
    source = tmp_path / "config.json"
    source.write_text(json.dumps(_original("steering_weights")))
    out = tmp_path / "out" / "steering.yaml"
    assert main(["convert", str(source), "-o", str(out), "--set", "max_steps=12"]) == 0
    assert yaml.safe_load(out.read_text())["strategy"] == "steering_weights"
    args = _parse(recipe, out)
    assert args["train"].max_steps == 12 and args["train"].steering_alpha == 0.8
    assert main(["convert", str(source)]) == 0  # printed
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["strategy"] == "steering_weights" and "max_steps" not in printed  # null: trl_ext's default
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"proxy_strategy": "naive", "who_knows": 1, "finetune_config": {"what": 2}}))
    assert main(["convert", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "who_knows" in err and "finetune_config.what" in err


def test_mapping_table_lists_every_rule():
    table = mapping_markdown()
    assert all(f"`{rule.key}`" in table for rule in KEY_MAPPING)
    assert main(["mapping"]) == 0
