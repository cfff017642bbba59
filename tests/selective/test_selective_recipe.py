"""recipes/selective_generalisation.py: the 24 configs, demo runs sharing one aligned base, custom data, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from trl import SFTConfig

from tests.conftest import REPO, load_recipe, run_script
from trl_ext.common.loss_log import read_loss_log
from trl_ext.data.loading import DatasetLoadError
from trl_ext.selective.config import STRATEGIES, SelectiveConfig

CONFIGS = REPO / "recipes" / "configs" / "selective"
RESULT_KEYS = {"task", "proxy", "task_loss", "proxy_loss", "before", "strategy", "seed", "train_seconds", "train_loss"}

# docs/selective.md defaults (kl_divergence: a non-zero β_kl, since 0 makes the strategy plain outcome SFT)
SPEC_KNOBS: dict[str, dict] = {
    "naive": {},
    "positive_negative_proxy": {"lambda_proxy": 0.5, "lambda_negative": 0.5, "beta_kl": 0.0},
    "kl_divergence": {"beta_kl": 1.0},
    "representation_constraint": {"beta_representation": 0.1},
    "dpo": {"lambda_dpo": 1.0, "dpo_beta": 0.1},
    "grad_project": {"grad_project_strict": True, "grad_project_source": "positive"},
    "grad_project_precomputed_proxy_grad": {"proxy_grad_path": None},
    "orth_penalty": {
        "lambda_plane": 0.5,
        "alignment_plane_source": "gradients",
        "alignment_plane_path": None,
        "alignment_plane_steps": 8,
    },
    "directional_penalty": {
        "lambda_plane": 0.5,
        "alignment_plane_source": "gradients",
        "alignment_plane_path": None,
        "alignment_plane_steps": 8,
    },
    "steering_weights": {
        "alignment_plane_steps": 8,
        "steering_alpha": 0.5,
        "final_steering_alpha": 0.1,
        "alpha_warmup_steps": 0,
        "direct_steering": False,
    },
    "steering_weights_add_alignment_plane": {"steering_alpha": 0.5, "alignment_plane_steps": 8},
    "safe_lora": {"safelora_projection": "approx", "safelora_select": "threshold", "safelora_threshold": 0.5},
}
# strategies whose tiny configs train LoRA: penalties on LoRA A, steering by a plane of LoRA parameters, SafeLoRA
LORA_STRATEGIES = ("orth_penalty", "directional_penalty", "steering_weights", "steering_weights_add_alignment_plane",
                   "safe_lora")  # fmt: skip
# keys a config may set only for its own strategy: SelectiveConfig's own fields
STRATEGY_KEYS = set(SelectiveConfig.__dataclass_fields__) - set(SFTConfig.__dataclass_fields__)
CONFIG_FILES = sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith("sweep_"))
SWEEP_BASES = {"adamw": CONFIGS / "sweep_base_tiny.yaml", "sgd": CONFIGS / "sweep_base_sgd_tiny.yaml"}
SWEEP_VARY = CONFIGS / "sweep_strategies_tiny.yaml"


@pytest.fixture(scope="module")
def recipe():
    return load_recipe("selective_generalisation")


def _parse(recipe, config: Path | str, *extra: str):
    # a fresh parser per call: TrlParser keeps a config's values as defaults
    return recipe.make_parser().parse_args_and_config(["--config", str(config), *extra])


def _strategy_of(path: Path) -> str:
    return path.stem.removesuffix("_tiny")


# --------------------------------------------------------------------------- configs


def test_configs_cover_every_strategy_tiny_and_full():
    assert {p.name for p in CONFIG_FILES} == {f"{s}{t}.yaml" for s in STRATEGIES for t in ("", "_tiny")}
    assert set(SPEC_KNOBS) == set(STRATEGIES)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_config_parses_with_its_strategy_and_spec_knobs(recipe, path, tmp_path):
    script_args, training_args, model_args = _parse(recipe, path, "--output_dir", str(tmp_path))
    strategy = _strategy_of(path)
    assert training_args.strategy == strategy
    for key, value in SPEC_KNOBS[strategy].items():
        assert getattr(training_args, key) == value, key
    if strategy == "kl_divergence":
        assert 1e-4 <= training_args.beta_kl <= 1e4
    if strategy == "safe_lora":  # on the demo the unaligned base is the model the aligned base is trained from
        assert training_args.safelora_base_model == model_args.model_name_or_path
    tiny = path.stem.endswith("_tiny")
    # LoRA (docs/selective.md defaults) on real models and for the strategies that need it; the tiny demo fine-tunes
    # fully
    assert model_args.use_peft == (not tiny or strategy in LORA_STRATEGIES)
    assert (model_args.lora_r, model_args.lora_alpha, model_args.use_rslora) == (32, 64, True)
    assert script_args.data == "demo"
    assert model_args.model_name_or_path == ("tiny" if tiny else "Qwen/Qwen2.5-0.5B-Instruct")
    assert training_args.output_dir == str(tmp_path)
    if tiny:  # short CPU runs, the demo's own aligned-base settings
        assert training_args.max_steps <= 150 and not training_args.gradient_checkpointing
        assert script_args.aligned_base_kwargs() == {}


def test_configs_differ_only_in_their_strategy_settings():
    """The 24 files repeat the shared settings (YAML has no includes): keep them from drifting apart."""
    shared: dict[bool, dict] = {}
    for path in CONFIG_FILES:
        config = yaml.safe_load(path.read_text())
        strategy, tiny = _strategy_of(path), path.stem.endswith("_tiny")
        own = {k for k in config if k in STRATEGY_KEYS}
        assert own == {"strategy"} | set(SPEC_KNOBS[strategy]) | (
            {"safelora_base_model"} if strategy == "safe_lora" else set()
        )
        assert config["output_dir"] == f"outputs/selective/{path.stem}"
        rest = {k: v for k, v in config.items() if k not in own and k not in ("output_dir", "use_peft")}
        assert rest == shared.setdefault(tiny, rest), path.name


def test_cli_flags_override_the_config_and_bad_values_are_named(recipe, tmp_path):
    config = CONFIGS / "dpo_tiny.yaml"
    script_args, training_args, _ = _parse(recipe, config, "--output_dir", str(tmp_path), "--seed", "7")
    assert (training_args.output_dir, training_args.seed, training_args.strategy) == (str(tmp_path), 7, "dpo")
    known = ", ".join(STRATEGIES)
    with pytest.raises(ValueError, match=rf"unknown strategy 'dpo2'; known strategies: {known}$"):
        _parse(recipe, config, "--strategy", "dpo2")
    with pytest.raises(ValueError, match="data must be one of demo, custom, got 'files'"):
        _parse(recipe, config, "--data", "files")
    with pytest.raises(ValueError, match="outcome_dataset given with data: demo; set data: custom"):
        _parse(recipe, config, "--outcome_dataset", "x.jsonl")
    with pytest.raises(ValueError, match="data: custom needs outcome_eval_dataset, proxy_eval_dataset"):
        _parse(recipe, config, "--data", "custom", "--outcome_dataset", "x.jsonl")
    with pytest.raises(ValueError, match="eval_scorer must be 'module:function'"):
        _parse(recipe, config, "--eval_scorer", "trl_ext.selective.demo")


def test_only_settings_given_are_passed_to_the_demo(recipe):
    args = recipe.SelectiveRecipeArguments(demo_num_eval=8, aligned_base_max_steps=20, eval_max_new_tokens=4)
    assert args.demo_kwargs() == {"num_eval": 8}
    assert args.aligned_base_kwargs() == {"max_steps": 20}
    assert args.scorer_kwargs() == {"max_new_tokens": 4}
    assert recipe.SelectiveRecipeArguments().demo_kwargs() == {}


# --------------------------------------------------------------------------- demo runs (subprocesses)


def _run(config: str, out: Path, aligned: Path, *extra: str):
    proc = run_script(
        ["recipes/selective_generalisation.py", "--config", str(CONFIGS / config), "--output_dir", str(out),
         "--aligned_base_dir", str(aligned), "--max_steps", "4", "--logging_steps", "1", "--disable_tqdm", "true",
         *extra]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory, tiny_model_path):
    """Two tiny demo runs (subprocesses) with seed 1: the first trains a small aligned base, the second reuses it."""
    tmp = tmp_path_factory.mktemp("selective")
    aligned = tmp / "aligned_base"
    small_base = ("--aligned_base_max_steps", "20", "--aligned_base_num_rows", "64")
    naive = _run(
        "naive_tiny.yaml", tmp / "naive", aligned, "--seed", "1", "--demo_num_eval", "12", "--use_peft", "true",
        *small_base,
    )  # fmt: skip
    mtime = (aligned / "seed_1" / "model.safetensors").stat().st_mtime_ns
    safe_lora = _run("safe_lora_tiny.yaml", tmp / "safe_lora", aligned, "--seed", "1")
    return {"tmp": tmp, "aligned": aligned / "seed_1", "mtime": mtime, "naive": naive, "safe_lora": safe_lora}


def _results(folder: Path) -> dict:
    results = json.loads((folder / "results.json").read_text())
    assert RESULT_KEYS <= set(results)
    for scores in (results, results["before"]):
        assert 0.0 <= scores["task"] <= 1.0 and 0.0 <= scores["proxy"] <= 1.0
        assert scores["task_loss"] > 0 and scores["proxy_loss"] > 0
    assert results["train_seconds"] > 0 and math.isfinite(results["train_loss"])
    return results


def test_demo_run_writes_results_adapter_and_loss_log(demo_runs):
    out, aligned = demo_runs["tmp"] / "naive", demo_runs["aligned"]
    assert f"[trl_ext] aligned base: training {aligned}" in demo_runs["naive"].stdout
    results = _results(out)
    assert (results["strategy"], results["seed"], results["steps"]) == ("naive", 1, 4)  # --seed and --max_steps
    assert results["eval_rows"] == {"outcome": 12, "proxy": 12} and results["model"] == str(aligned)
    assert json.loads((aligned / "aligned_base.json").read_text())["max_steps"] == 20

    columns, rows = read_loss_log(out / "loss_log.csv")
    assert len([r for r in rows if "loss" in r]) == 4 and (out / "loss_curve.png").is_file()

    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(aligned) and adapter["use_rslora"] and adapter["r"] == 32
    model = AutoPeftModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().max() > 0 for p in lora_b)  # B starts at zero: training moved it
    assert model(**tokenizer("Reverse: a b c", return_tensors="pt")).logits.isfinite().all()


def test_later_runs_reuse_the_aligned_base(demo_runs, recipe, capsys):
    aligned = demo_runs["aligned"]
    proc = demo_runs["safe_lora"]
    assert f"[trl_ext] aligned base: reusing {aligned}" in proc.stdout and "aligned base: training" not in proc.stdout
    first = _results(demo_runs["tmp"] / "safe_lora")
    assert first["strategy"] == "safe_lora" and first["model"] == str(aligned)

    # a third run, in process (dpo: paired A⁺/A⁻), with the flags a sweep passes
    out = demo_runs["tmp"] / "dpo"
    flags = ["--output_dir", str(out), "--seed", "1", "--aligned_base_dir", str(aligned.parent), "--max_steps", "2"]
    results = recipe.main(*_parse(recipe, CONFIGS / "dpo_tiny.yaml", *flags))
    assert f"[trl_ext] aligned base: reusing {aligned}" in capsys.readouterr().out
    assert results == _results(out) and (results["strategy"], results["seed"]) == ("dpo", 1)
    assert results["before"] == first["before"]  # same aligned base, same evaluation sets
    assert (aligned / "model.safetensors").stat().st_mtime_ns == demo_runs["mtime"]  # never retrained


def test_safe_lora_run_projects_the_adapter(demo_runs):
    report = json.loads((demo_runs["tmp"] / "safe_lora" / "safelora_report.json").read_text())
    assert report  # written by the SafeLoRA callback at the end of training


# --------------------------------------------------------------------------- custom data (in process)


@pytest.fixture(scope="module")
def custom_files(tmp_path_factory):
    """The demo's datasets written in every supported form."""
    from datasets import DatasetDict

    from trl_ext.selective.demo import make_demo

    tmp = tmp_path_factory.mktemp("custom_data")
    data = make_demo(num_outcome=32, num_proxy=8, num_negative=8, num_eval=6, seed=0)
    data["outcome_train"].to_json(tmp / "outcome.jsonl")
    data["proxy_positive"].to_parquet(tmp / "proxy.parquet")
    data["proxy_negative"].save_to_disk(tmp / "negative")
    data["outcome_eval"].to_json(tmp / "outcome_eval.json")
    DatasetDict(test=data["proxy_eval"]).save_to_disk(tmp / "proxy_eval")
    data["outcome_train"].remove_columns("completion").to_json(tmp / "no_completion.jsonl")
    return tmp


def _custom_args(files: Path, out: Path, **replace: str) -> list[str]:
    args = {
        "outcome_dataset": files / "outcome.jsonl",
        "proxy_dataset": files / "proxy.parquet",
        "negative_proxy_dataset": files / "negative",
        "outcome_eval_dataset": files / "outcome_eval.json",
        "proxy_eval_dataset": files / "proxy_eval",
    }
    args.update(replace)
    flat = ["--data", "custom", "--proxy_eval_split", "test", "--output_dir", str(out), "--max_steps", "2"]
    for key, value in args.items():
        flat += [f"--{key}", str(value)]
    return flat


def test_custom_data_run_scores_exp_minus_loss(recipe, custom_files, tmp_path, tiny_model_path):
    config = CONFIGS / "positive_negative_proxy_tiny.yaml"
    custom = _custom_args(custom_files, tmp_path / "run")
    parsed = _parse(recipe, config, *custom, "--model_name_or_path", "tiny", "--use_peft", "true")
    results = recipe.main(*parsed)
    assert results == json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["scorer"] == "exp(-loss)" and results["eval_rows"] == {"outcome": 6, "proxy": 6}
    for scores in (results, results["before"]):
        assert scores["task"] == pytest.approx(math.exp(-scores["task_loss"]))
        assert scores["proxy"] == pytest.approx(math.exp(-scores["proxy_loss"]))
    assert results["model"] == str(tiny_model_path)  # custom data: model_name_or_path is trained as is
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()


def test_custom_scorer_from_a_file(recipe, custom_files, tmp_path):
    scorer = tmp_path / "my_scorer.py"
    scorer.write_text(
        "def score(model, tokenizer, datasets, **kwargs):\n"
        "    assert len(datasets['outcome_eval']) == 6 and kwargs == {'max_new_tokens': 3}\n"
        "    return {'task': 0.25, 'proxy': 0.75}\n"
    )
    parsed = _parse(
        recipe, CONFIGS / "naive_tiny.yaml", *_custom_args(custom_files, tmp_path / "run"), "--max_steps", "1",
        "--eval_scorer", f"{scorer}:score", "--eval_max_new_tokens", "3", "--evaluate_before", "false",
        "--eval_losses", "false",
    )  # fmt: skip
    results = recipe.main(*parsed)
    assert (results["task"], results["proxy"], results["before"]) == (0.25, 0.75, None)
    assert "task_loss" not in results and results["scorer"] == f"{scorer}:score"


# --------------------------------------------------------------------------- bad input (fails before any training)


def test_custom_data_errors_name_the_input(recipe, custom_files, tmp_path):
    config = CONFIGS / "grad_project_tiny.yaml"
    missing = tmp_path / "missing" / "proxy.jsonl"
    parsed = _parse(recipe, config, *_custom_args(custom_files, tmp_path, proxy_dataset=missing))
    with pytest.raises(FileNotFoundError, match=rf"proxy_dataset: '{missing}' does not exist"):
        recipe.main(*parsed)
    bad = custom_files / "no_completion.jsonl"
    parsed = _parse(recipe, config, *_custom_args(custom_files, tmp_path, outcome_dataset=bad))
    with pytest.raises(DatasetLoadError, match=r"outcome_dataset \(.*no_completion\.jsonl\): missing column\(s\) "):
        recipe.main(*parsed)
    parsed = _parse(recipe, config, *_custom_args(custom_files, tmp_path), "--eval_scorer", "no_such_mod:f")
    with pytest.raises(ValueError, match="eval_scorer: cannot import module 'no_such_mod'"):
        recipe.main(*parsed)
    parsed = _parse(recipe, config, *_custom_args(custom_files, tmp_path), "--eval_scorer", "math:no_such_function")
    with pytest.raises(ValueError, match="eval_scorer: 'math' has no function 'no_such_function'"):
        recipe.main(*parsed)


def test_demo_safe_lora_needs_the_same_base_model(recipe, tmp_path):
    parsed = _parse(
        recipe, CONFIGS / "safe_lora_tiny.yaml", "--output_dir", str(tmp_path), "--safelora_base_model", str(tmp_path)
    )
    with pytest.raises(ValueError, match="data: demo with safe_lora: the unaligned base is model_name_or_path"):
        recipe.main(*parsed)


def test_an_aligned_base_with_other_settings_is_not_reused(recipe, tmp_path):
    folder = tmp_path / "seed_3"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "aligned_base.json").write_text(json.dumps({"source": "/models/a", "seed": 3, "max_steps": 600}))
    args = recipe.SelectiveRecipeArguments(aligned_base_dir=str(tmp_path), aligned_base_max_steps=20)
    with pytest.raises(ValueError, match=r"seed_3 was trained with other settings \(source: has '/models/a', asked "):
        recipe.prepare_aligned_base(args, "/models/b", 3)
    args = recipe.SelectiveRecipeArguments(aligned_base_dir=str(tmp_path))
    assert recipe.prepare_aligned_base(args, "/models/a", 3) == folder  # same settings: reused, nothing trained
    (tmp_path / "seed_4").mkdir()
    (tmp_path / "seed_4" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="seed_4 exists but holds no model"):
        recipe.prepare_aligned_base(args, "/models/a", 4)


def test_aligned_base_only_prepares_and_stops(demo_runs, recipe, tmp_path, capsys):
    aligned = demo_runs["aligned"]
    flags = ["--output_dir", str(tmp_path / "out"), "--seed", "1", "--aligned_base_dir", str(aligned.parent)]
    assert (
        recipe.main(*_parse(recipe, CONFIGS / "kl_divergence_tiny.yaml", *flags, "--aligned_base_only", "true"))
        is None
    )
    assert f"aligned base: reusing {aligned}" in capsys.readouterr().out and not (tmp_path / "out").exists()
    custom = ["--data", "custom", "--outcome_dataset", "a.jsonl", "--outcome_eval_dataset", "b.jsonl"]
    custom += ["--proxy_eval_dataset", "c.jsonl", "--aligned_base_only", "true"]
    parsed = _parse(recipe, CONFIGS / "kl_divergence_tiny.yaml", *custom)
    with pytest.raises(ValueError, match="aligned_base_only needs data: demo"):
        recipe.main(*parsed)


@pytest.mark.parametrize("regime", sorted(SWEEP_BASES))
def test_demo_sweep_files_parse_and_name_known_strategies(recipe, tmp_path, regime):
    """The README's two demo sweeps: each base config parses with the recipe in its optimizer regime, every run
    names a strategy and keys the base config has (so sweep.py accepts it without --allow_new_keys), and LoRA is
    on exactly where needed."""
    base_path, vary_path = SWEEP_BASES[regime], SWEEP_VARY
    script_args, training_args, model_args = _parse(recipe, base_path, "--output_dir", str(tmp_path))
    assert script_args.data == "demo" and not model_args.use_peft
    expected = {"adamw": ("adamw", 2e-3, 150), "sgd": ("sgd", 0.03, 300)}[regime]
    optim = str(getattr(training_args.optim, "value", training_args.optim))
    assert (optim.split("_")[0], training_args.learning_rate, training_args.max_steps) == expected
    base = yaml.safe_load(base_path.read_text())
    runs = yaml.safe_load(vary_path.read_text())["runs"]
    assert {r["strategy"] for r in runs} == set(STRATEGIES)
    for run in runs:
        assert set(run) <= set(base), run
        needs_lora = run["strategy"] in LORA_STRATEGIES
        assert run.get("use_peft", base["use_peft"]) == needs_lora or run["strategy"] == "naive", run


# --------------------------------------------------------------------------- hosts dpo and ppo (--host)

HOST_CONFIGS_DIR = CONFIGS / "hosts"


@pytest.fixture(scope="module")
def host_files(custom_files, recipe):
    """``custom_files`` plus the outcome data of the other hosts: preference rows (dpo) and prompts (ppo)."""
    from datasets import Dataset

    outcome = Dataset.from_json(str(custom_files / "outcome.jsonl"))
    outcome.map(recipe.demo_preference_row, remove_columns=["completion"]).to_json(custom_files / "preference.jsonl")
    outcome.remove_columns("completion").to_json(custom_files / "prompts.jsonl")
    return custom_files


def _host_results(out: Path, host: str, trainer: str) -> dict:
    results = _results(out)
    assert (results["host"], results["trainer"], results["steps"]) == (host, trainer, 2)
    assert results["scorer"] == "exp(-loss)" and results["eval_rows"] == {"outcome": 6, "proxy": 6}
    assert results["task"] == pytest.approx(math.exp(-results["task_loss"]))
    assert (out / "adapter_model.safetensors").is_file() and (out / "loss_log.csv").is_file()
    return results


def test_host_configs_parse_with_their_config_class(recipe, tmp_path):
    from trl_ext.selective.config import SelectiveDPOConfig
    from trl_ext.selective.ppo import SelectivePPOConfig

    for name, host, cls in (("dpo", "dpo", SelectiveDPOConfig), ("ppo", "ppo", SelectivePPOConfig)):
        config = HOST_CONFIGS_DIR / f"kl_divergence_{name}_tiny.yaml"
        script_args, training_args, _ = recipe.parse_args(["--config", str(config), "--output_dir", str(tmp_path)])
        assert script_args.host == host and type(training_args) is cls and training_args.strategy == "kl_divergence"
    # --host on the command line wins over the config's host: (first pass), here back to sft
    sft = recipe.parse_args(["--config", str(CONFIGS / "dpo_tiny.yaml"), "--host", "sft", "--output_dir", "o"])
    assert type(sft[1]) is SelectiveConfig and sft[0].host == "sft"


def test_dpo_host_runs_through_the_recipe(host_files, tmp_path):
    """A subprocess run of the recipe: host from the YAML, preference outcome data, a LoRA adapter saved."""
    out = tmp_path / "dpo"
    custom = _custom_args(host_files, out, outcome_dataset=host_files / "preference.jsonl")
    proc = run_script(
        ["recipes/selective_generalisation.py", "--config", str(HOST_CONFIGS_DIR / "kl_divergence_dpo_tiny.yaml"),
         *custom, "--use_peft", "true", "--per_device_train_batch_size", "4", "--disable_tqdm", "true"]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "[trl_ext] trainer: KlDivergenceDPOTrainer (host dpo, SelectiveDPOConfig)" in proc.stdout
    results = _host_results(out, "dpo", "KlDivergenceDPOTrainer")
    assert results["strategy"] == "kl_divergence"


def test_ppo_host_runs_through_the_recipe_with_its_reward_funcs(recipe, host_files, tmp_path, capsys):
    reward = tmp_path / "my_reward.py"
    calls = tmp_path / "calls.txt"
    reward.write_text(
        "def length(prompts, completions, **kwargs):\n"
        f"    open({str(calls)!r}, 'a').write(f'{{len(completions)}}\\n')\n"
        "    return [len(c[-1]['content']) / 10 for c in completions]\n"
    )
    out = tmp_path / "ppo"
    custom = _custom_args(host_files, out, outcome_dataset=host_files / "prompts.jsonl")
    parsed = recipe.parse_args(
        ["--config", str(HOST_CONFIGS_DIR / "kl_divergence_ppo_tiny.yaml"), *custom, "--use_peft", "true",
         "--reward_funcs", f"{reward}:length", "--per_device_train_batch_size", "4", "--num_ppo_epochs", "1"]
    )  # fmt: skip
    results = recipe.main(*parsed)
    assert "[trl_ext] trainer: KlDivergencePPOTrainer (host ppo, SelectivePPOConfig)" in capsys.readouterr().out
    assert results == _host_results(out, "ppo", "KlDivergencePPOTrainer")
    assert calls.read_text().split()  # the named reward function scored the rollouts
    assert (out / "value_head.safetensors").is_file()


def test_host_errors_name_the_input(recipe, host_files, tmp_path):
    dpo = ["--config", str(HOST_CONFIGS_DIR / "kl_divergence_dpo_tiny.yaml")]
    # dpo on prompt-completion rows: the missing preference columns, before any model is loaded
    parsed = recipe.parse_args([*dpo, *_custom_args(host_files, tmp_path)])
    missing = r"outcome_dataset \(.*outcome\.jsonl\): host 'dpo' .* missing column\(s\) chosen, rejected "
    with pytest.raises(DatasetLoadError, match=missing + r"\(columns: prompt, completion\)"):
        recipe.main(*parsed)
    ppo = ["--config", str(HOST_CONFIGS_DIR / "kl_divergence_ppo_tiny.yaml")]
    with pytest.raises(ValueError, match="host ppo with data: custom needs reward_funcs"):
        recipe.parse_args([*ppo, *_custom_args(host_files, tmp_path)])
    # an unknown host names the choices, on the command line and in a config file
    with pytest.raises(ValueError, match=r"unknown host 'grpo'; choices: sft, dpo, ppo"):
        recipe.parse_args([*dpo, "--host", "grpo"])
    config = tmp_path / "grpo.yaml"
    config.write_text("host: grpo\nstrategy: naive\noutput_dir: out\n")
    with pytest.raises(ValueError, match=r"unknown host 'grpo'; choices: sft, dpo, ppo"):
        recipe.parse_args(["--config", str(config)])
    # a key of another host's config class, in the YAML or as a flag, is named with its class and host
    tiny_sft = CONFIGS / "kl_divergence_tiny.yaml"  # has max_length, a field of the SFT and DPO configs only
    with pytest.raises(ValueError, match=r"'max_length' is a field of SelectiveConfig \(--host sft\), "
                                         r"SelectiveDPOConfig \(--host dpo\), not of SelectivePPOConfig"):  # fmt: skip
        recipe.parse_args(["--config", str(tiny_sft), "--host", "ppo"])
    with pytest.raises(ValueError, match=r"'label_smoothing' is a field of SelectiveDPOConfig \(--host dpo\), not of "
                                         r"SelectiveConfig \(host 'sft'\)"):  # fmt: skip
        recipe.parse_args(["--config", str(tiny_sft), "--label_smoothing", "0.1"])
    with pytest.raises(ValueError, match="reward_funcs is for host ppo"):
        recipe.parse_args([*dpo, "--reward_funcs", "math:sqrt"])
    # main with a config class of another host (a parser made for sft, --host dpo)
    parsed = _parse(recipe, tiny_sft, "--host", "dpo", "--output_dir", str(tmp_path))
    with pytest.raises(ValueError, match=r"host 'dpo' needs a SelectiveDPOConfig, got SelectiveConfig"):
        recipe.main(*parsed)
