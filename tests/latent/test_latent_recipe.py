"""``recipes/latent_comm.py`` on the shipped tiny demo: the outputs, and (empirical) that the receiver learns to read
the latent message.

The demo (:mod:`trl_ext.latent.demo`): the sender (the tiny model) reads "The code word is <secret>." (6 secrets),
the receiver is asked "What is the code word?" and must answer from the sender's hidden states alone. The tiny
config trains 200 steps (batch 8, lr 3e-3 decaying linearly, all three loss terms, default mixing) on 48 rows and
evaluates on 16 held out. Measured over seeds 0–9 (``TRL_EXT_EMPIRICAL_SEEDS=0-9``, 2 CPU cores, torch 2.13), the
seed choosing the demo's secrets, the initialisation and the batch order:

* answer CE with shuffled latents − with true latents (``latent_eval.json``): 0.65–1.15 (true 0.03–0.18, shuffled
  0.76–1.20); asserted ≥ 0.4;
* the InfoNCE probe's MI lower bound (K = 8): −0.002–0.002 before training, 0.51–0.85 after (a rise of 0.51–0.81);
  asserted to rise by ≥ 0.3.

Both margins leave at least 0.2 between the worst seed and the bound.
"""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import REPO, run_script
from trl_ext.common.loss_log import read_loss_log

TINY = str(REPO / "recipes/configs/latent_comm_tiny.yaml")


def _launch(out, *flags):
    return run_script(
        ["-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/cpu.yaml", "recipes/latent_comm.py",
         "--config", TINY, "--output_dir", str(out), *flags]
    )  # fmt: skip


_RUNS: dict[int, object] = {}


def _run(tmp_path_factory, tiny_model_path, seed: int):
    if seed not in _RUNS:
        out = tmp_path_factory.mktemp(f"latent_recipe_seed{seed}")
        proc = _launch(out, "--seed", str(seed))
        assert proc.returncode == 0, proc.stderr[-4000:]
        _RUNS[seed] = (out, proc)
    return _RUNS[seed]


@pytest.mark.slow
def test_tiny_recipe_writes_every_output(tmp_path_factory, tiny_model_path):
    out, proc = _run(tmp_path_factory, tiny_model_path, 0)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "latent_comm_head.safetensors",
                 "latent_comm_head.json", "trainer_state.json", "training_args.bin", "loss_log.csv",
                 "loss_curve.png", "latent_eval.json", "demo_data/rows.jsonl"):  # fmt: skip
        assert (out / name).is_file(), name
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert [c.name for c in checkpoints] == ["checkpoint-100", "checkpoint-200"]  # every 100 of 200 steps, limit 2
    assert (checkpoints[-1] / "trainer_state.json").is_file()
    columns, rows = read_loss_log(out / "loss_log.csv")
    for key in ("loss/ce", "loss/plan_similarity", "loss/random_contrast", "eval_loss", "infonce/mi_lower_bound",
                "js_bits", "delta_nll_bits"):  # fmt: skip
        assert key in columns, key
    assert all(math.isfinite(r["loss"]) for r in rows if "loss" in r)
    result = json.loads((out / "latent_eval.json").read_text())
    assert set(result) >= {"true", "shuffled", "none", "num_samples"} and result["num_samples"] == 16
    assert "launch: NO x 1 process on cpu" in proc.stdout


@pytest.mark.empirical
@pytest.mark.slow
def test_training_makes_the_receiver_read_the_latents(tmp_path_factory, tiny_model_path, empirical_seed):
    out, _ = _run(tmp_path_factory, tiny_model_path, empirical_seed)
    result = json.loads((out / "latent_eval.json").read_text())
    assert result["shuffled"]["ce"] - result["true"]["ce"] >= 0.4, result
    _, rows = read_loss_log(out / "loss_log.csv")
    bounds = [r["infonce/mi_lower_bound"] for r in rows if "infonce/mi_lower_bound" in r]
    assert len(bounds) == 5  # steps 0, 50, 100, 150, 200
    assert bounds[-1] - bounds[0] >= 0.3, bounds


@pytest.mark.parametrize(
    "flags, message",
    [((), "train_file is required"),
     (("--train_file", "missing.jsonl"), "missing.jsonl"),
     (("--train_file", "tiny-demo", "--eval_ratio", "0", "--eval_strategy", "steps"), "needs evaluation rows"),
     (("--train_file", "tiny-demo", "--use_peft", "true"), "use_peft"),
     (("--train_file", "tiny-demo", "--mix_schedule", "cosine"), "mix_schedule"),
     (("--train_file", "tiny-demo", "--num_heads", "7"), "num_heads=7 must divide")],
)  # fmt: skip
def test_bad_input_stops_before_training_with_a_named_error(tmp_path, tiny_model_path, flags, message):
    """In-process (the recipe's parser and ``main``): each user error names its item before any training step."""
    from tests.conftest import load_recipe
    from trl_ext.common.errors import UserInputError
    from trl_ext.common.recipes import recipe_parser

    recipe = load_recipe("latent_comm")
    parser = recipe_parser(recipe.LatentDataArguments, recipe.LatentCommConfig, recipe.LatentModelConfig)
    base = ["--model_name_or_path", "tiny", "--output_dir", str(tmp_path), "--eval_strategy", "no", "--demo_rows", "8",
            "--report_to", "none", "--max_steps", "1"]  # fmt: skip
    with pytest.raises(UserInputError, match=message):
        script_args, training_args, model_args = parser.parse_args_and_config(base + list(flags))
        recipe.main(script_args, training_args, model_args)
    assert not list(tmp_path.glob("checkpoint-*"))
