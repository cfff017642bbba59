"""The sft_affine recipe with the auto-curriculum (``curriculum_split``) on the tiny model, and its errors."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO, load_recipe
from trl_ext.common.loss_log import read_loss_log

CURRICULUM_TINY = str(REPO / "recipes/configs/sft_affine_curriculum_tiny.yaml")
SIZES = ["n=3", "n=4", "n=5", "n=6", "n=7"]


def _parse(recipe, argv: list[str]):
    from trl_ext import CurriculumSFTConfig
    from trl_ext.common.recipes import LoRAModelConfig, recipe_parser

    return recipe_parser(recipe.SFTAffineArguments, CurriculumSFTConfig, LoRAModelConfig).parse_args_and_config(argv)


def _main_with(recipe, tmp_path, *extra: str):
    script_args, training_args, model_args = _parse(
        recipe,
        ["--config", CURRICULUM_TINY, "--output_dir", str(tmp_path / "o"), "--data_dir", str(tmp_path / "d"), *extra],
    )
    return recipe.main(script_args, training_args, model_args)


@pytest.fixture(scope="module")
def curriculum_run(tmp_path_factory, tiny_model_path):
    from trl_ext.curriculum import callback

    tmp = tmp_path_factory.mktemp("sft_curriculum")
    recipe = load_recipe("sft_affine")
    writes = []
    original = callback.write_curriculum_report

    def counted(trainer, output_dir, **extra):
        writes.append((str(output_dir), extra))
        return original(trainer, output_dir, **extra)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(callback, "write_curriculum_report", counted)
        report = _main_with(
            recipe, tmp, "--num_samples", "120", "--max_steps", "12", "--logging_steps", "2", "--eval_steps", "6",
            "--save_steps", "6", "--save_total_limit", "1", "--heldout_samples", "0", "--curriculum_interval", "4",
            "--freeze_interval", "4",
        )  # fmt: skip
    # the trainer writes the report, once; the recipe adds the split
    assert writes == [(str(tmp / "o"), {"split": "payload:n"})]
    return tmp / "o", report


def test_curriculum_json_has_one_weight_per_size(curriculum_run):
    out, report = curriculum_run
    assert report is None  # heldout_samples 0: no held-out evaluation
    result = json.loads((out / "curriculum.json").read_text())
    assert (out / "curriculum_weights.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["split"] == "payload:n"
    assert result["names"] == SIZES  # sorted by size
    assert list(result["final_weights"]) == SIZES
    assert sum(result["sizes"].values()) == 108  # 120 rows minus the 10 % validation split
    weights = list(result["final_weights"].values())
    assert sum(weights) == pytest.approx(1.0)
    assert max(abs(w - 1 / len(SIZES)) for w in weights) > 1e-3  # moved away from uniform
    # an update before the first step, then every 4 steps but not at the final step 12 (nothing would be sampled
    # with it); the last one sets the final weights
    history = result["history"]
    assert [h["step"] for h in history] == [0, 4, 8]
    assert history[-1]["weights"] == pytest.approx(weights)
    for record in history:
        assert len(record["difficulty"]) == len(SIZES) and len(record["weights"]) == len(SIZES)
        assert max(record["difficulty"]) - min(record["difficulty"]) > 1e-3  # the sizes are told apart


def test_larger_instances_score_harder_at_the_start(curriculum_run):
    """Before any training step (the base model), the largest SAT size has a higher mean token loss than the
    smallest, and the centered update moves weight towards it. Later updates depend on the training noise and
    are not asserted (on the tiny model the differences are a few hundredths of a nat)."""
    out, _ = curriculum_run
    first = json.loads((out / "curriculum.json").read_text())["history"][0]
    assert first["difficulty"][-1] > first["difficulty"][0]
    assert first["weights"][-1] > 1 / len(SIZES) > first["weights"][0]


def test_loss_log_has_curriculum_columns(curriculum_run):
    out, _ = curriculum_run
    columns, rows = read_loss_log(out / "loss_log.csv")
    for name in SIZES:
        assert f"curriculum/weight/{name}" in columns and f"curriculum/difficulty/{name}" in columns
    assert [r["step"] for r in rows if "curriculum/weight/n=3" in r] == [0.0, 4.0, 8.0]
    assert len([r for r in rows if "loss" in r]) == 6  # plain training logs are unchanged
    assert (out / "adapter_model.safetensors").exists()
    checkpoint = next(out.glob("checkpoint-*"))
    assert (checkpoint / "curriculum_state.json").exists()


# ---- splitting the rows -------------------------------------------------------------------------------


def _rows(payloads: list[dict], tasks: list[str] | None = None):
    from datasets import Dataset

    tasks = tasks or ["sat"] * len(payloads)
    return Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": f"q{i}"}],
                "completion": [{"role": "assistant", "content": f"a{i}"}],
                "task": task,
                "id": f"{task}-{i:06d}",
                "payload": json.dumps(payload),
            }
            for i, (payload, task) in enumerate(zip(payloads, tasks))
        ]
    )


def test_split_sorts_numbers_numerically_and_keeps_prompt_completion():
    recipe = load_recipe("sft_affine")
    data = _rows([{"n": 10}, {"n": 9}, {"n": 10}, {"n": 2}])
    split = recipe.split_curriculum(data, "payload:n")
    assert list(split) == ["n=2", "n=9", "n=10"]
    assert [len(d) for d in split.values()] == [1, 1, 2]
    assert split["n=10"].column_names == ["prompt", "completion"]
    assert [r["prompt"][0]["content"] for r in split["n=10"]] == ["q0", "q2"]  # row order kept
    by_task = recipe.split_curriculum(_rows([{}, {}, {}], tasks=["sat", "abd", "sat"]), "task")
    assert list(by_task) == ["abd", "sat"] and len(by_task["sat"]) == 2


def test_split_errors_are_clear():
    recipe = load_recipe("sft_affine")
    data = _rows([{"n": 3}, {"k": 3}])
    with pytest.raises(ValueError, match=r"row 'sat-000001' \(task 'sat'\) has no payload key 'n'"):
        recipe.split_curriculum(data, "payload:n")
    with pytest.raises(ValueError, match="unknown curriculum_split 'payload:'"):
        recipe.split_curriculum(data, "payload:")
    with pytest.raises(ValueError, match="a split needs a scalar value"):
        recipe.split_curriculum(_rows([{"n": [1]}, {"n": [2]}]), "payload:n")


# ---- bad input through main: each error names the offending item --------------------------------------


def test_unknown_split_kind_is_named(tmp_path, tiny_model_path):
    recipe = load_recipe("sft_affine")
    with pytest.raises(ValueError, match=r"unknown curriculum_split 'size': use 'task' .* or 'payload:<key>'"):
        _main_with(recipe, tmp_path, "--curriculum_split", "size", "--num_samples", "20")
    assert not (tmp_path / "d").exists()  # fails before collecting any data


def test_missing_payload_key_names_the_row(tmp_path, tiny_model_path):
    recipe = load_recipe("sft_affine")
    with pytest.raises(ValueError, match=r"'payload:size': row 'sat-\d{6}' \(task 'sat'\) has no payload key 'size'"):
        _main_with(recipe, tmp_path, "--curriculum_split", "payload:size", "--num_samples", "20")


def test_single_group_is_refused(tmp_path, tiny_model_path):
    recipe = load_recipe("sft_affine")
    with pytest.raises(ValueError, match=r"puts all 18 training rows in one dataset \('sat'\); a curriculum needs"):
        _main_with(recipe, tmp_path / "task", "--curriculum_split", "task", "--num_samples", "20")
    with pytest.raises(ValueError, match=r"one dataset \('n=5'\).*choose another split"):
        _main_with(recipe, tmp_path / "size", "--curriculum_split", "payload:n", "--num_samples", "20", "--sat_n", "5")
