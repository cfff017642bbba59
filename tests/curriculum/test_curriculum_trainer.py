"""Curriculum trainers end to end on the tiny model: SFT, DPO, GRPO, PPO, plain Trainer; resume, DDP, errors."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer, TrainerCallback

from tests.conftest import run_script
from trl_ext import (
    CurriculumSFTConfig,
    CurriculumSFTTrainer,
    CurriculumTrainer,
    CurriculumTrainingArguments,
    with_curriculum,
)
from trl_ext.common.loss_log import LossLogCallback, read_loss_log
from trl_ext.curriculum.demo import make_curriculum_demo
from trl_ext.curriculum.trainer import CURRICULUM_FROZEN_FILE, CURRICULUM_STATE_FILE


def _texts(n=40, seed=0):
    rng = random.Random(seed)
    return {
        "easy": Dataset.from_dict({"text": ["the cat sat on the mat. " * 3] * n}),
        "mid": Dataset.from_dict({"text": [" ".join(str(i) for i in range(s, s + 12)) for s in range(n)]}),
        "hard": Dataset.from_dict(
            {"text": ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(60)) for _ in range(n)]}
        ),
    }


def _sft_args(tmp_path, **kw) -> CurriculumSFTConfig:
    base = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, learning_rate=1e-3, logging_steps=1,
        report_to="none", save_strategy="no", max_length=64, use_cpu=True, disable_tqdm=True, seed=0,
        difficulty_sample_size=16, difficulty_batch_size=4, curriculum_eta=0.3,
    )  # fmt: skip
    base.update(kw)
    return CurriculumSFTConfig(**base)


def _sft(tmp_path, model_path, datasets=None, callbacks=None, peft_config=None, **kw):
    return CurriculumSFTTrainer(
        model=str(model_path), args=_sft_args(tmp_path, **kw), train_dataset=datasets or _texts(),
        processing_class=AutoTokenizer.from_pretrained(model_path), callbacks=callbacks, peft_config=peft_config,
    )  # fmt: skip


def _losses(trainer):
    return {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}


# ---------------------------------------------------------------------- behaviour


@pytest.mark.empirical
def test_hardest_demo_dataset_gains_weight(tmp_path, tiny_model_path, empirical_seed):
    """SFT on the shipped demo (η 0.1, floor 0.05): once the model has learned some language `random` is the
    hardest dataset, and its weight rises at every update; updates are logged (console keys, loss_log.csv, plot).
    Empirical (data and training seed = ``empirical_seed``, tests/conftest.py). Spread, seeds 0-4, on both float
    paths (AVX-512 and ATEN_CPU_CAPABILITY=avx2 agree to 1e-3): random's weight 0.330-0.331 → 0.381-0.387 →
    0.496-0.512 → 0.558-0.623 (smallest rise +0.047), dialog's final weight 0.330-0.399; at updates 2 and 3 the
    difficulties are 3.73-3.85 / 1.94-3.15 / 0.61-1.15 nats (random / dialog / repeat; smallest gap 0.62)."""
    trainer = _sft(
        tmp_path, tiny_model_path, datasets=make_curriculum_demo(64, seed=empirical_seed), num_train_epochs=4,
        learning_rate=3e-3, curriculum_eta=0.1, curriculum_min_weight=0.05, callbacks=[LossLogCallback()],
        seed=empirical_seed,
    )  # fmt: skip
    trainer.train()
    history = trainer.curriculum.history
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    for h in history:
        assert sum(h["weights"]) == pytest.approx(1.0)
    # untrained, all three score ~ln(vocab); after an epoch `repeat` is learned, after two `dialog` too
    assert all(h["difficulty"][2] > h["difficulty"][1] > h["difficulty"][0] for h in history[2:])
    random_w = [h["weights"][2] for h in history]
    print(f"EMPIRICAL curriculum seed={empirical_seed} random_w={random_w} difficulty={history[-1]['difficulty']}")
    assert all(b > a for a, b in zip(random_w, random_w[1:])), random_w
    assert random_w[-1] > 1 / 3 + 0.15 and random_w[-1] == max(history[-1]["weights"]), random_w
    logged = [h for h in trainer.state.log_history if "curriculum/weight/random" in h]
    assert [h["curriculum/weight/random"] for h in logged] == pytest.approx(random_w)
    assert all("curriculum/frozen_age" in h and "curriculum/variance/dialog" in h for h in logged)
    assert len(_losses(trainer)) == trainer.state.global_step  # the updates do not swallow the per-step logs
    columns, _ = read_loss_log(tmp_path / "out" / "loss_log.csv")
    assert {"curriculum/weight/repeat", "curriculum/difficulty/random"} <= set(columns)
    assert (tmp_path / "out" / "loss_curve.png").stat().st_size > 0


def test_frozen_model_refreshes_on_schedule(tmp_path, tiny_model_path):
    """Steps unit, updates every 2 steps, refresh every 4: the frozen weights equal the live ones right after a
    refresh and stay put until the next one, while the live model moves every step."""
    seen = []

    class Probe(TrainerCallback):  # runs after the curriculum callback (added later)
        def on_step_end(self, args, state, control, model=None, **kw):
            frozen = trainer.curriculum.frozen.state_tensors()
            live = model.state_dict()
            seen.append(
                (
                    state.global_step,
                    all(torch.equal(frozen[k], live[k]) for k in frozen),
                    {k: v.clone() for k, v in frozen.items()},
                )
            )

    trainer = _sft(
        tmp_path, tiny_model_path, max_steps=10, curriculum_interval_unit="steps", curriculum_interval=2,
        freeze_interval=4,
    )  # fmt: skip
    trainer.add_callback(Probe())
    trainer.train()
    assert [h["step"] for h in trainer.curriculum.history] == [0, 2, 4, 6, 8]  # none at the final step 10
    assert [h["frozen_age"] for h in trainer.curriculum.history] == [0, 2, 0, 2, 0]
    equal_at = [step for step, equal, _ in seen if equal]
    assert equal_at == [4, 8]
    by_step = {step: frozen for step, _, frozen in seen}
    for a, b in [(1, 2), (2, 3), (5, 6), (6, 7)]:
        assert all(torch.equal(by_step[a][k], by_step[b][k]) for k in by_step[a])
    assert not all(torch.equal(by_step[3][k], by_step[4][k]) for k in by_step[3])


@pytest.mark.parametrize("unit", ["epoch", "steps", "steps+lora"])
def test_resume_restores_weights_and_next_batches(tmp_path, tiny_model_path, unit):
    """Resuming mid-epoch (with gradient accumulation and mid-epoch weight changes) reproduces the uninterrupted
    run's losses, hence its batches, and its weight history; with LoRA the frozen model is the adapter snapshot."""
    from peft import LoraConfig

    lora = unit.endswith("+lora")
    unit = unit.removesuffix("+lora")
    kw = dict(
        num_train_epochs=3, save_strategy="steps", save_steps=7, gradient_accumulation_steps=2,
        curriculum_interval_unit=unit, curriculum_interval=1 if unit == "epoch" else 3,
        freeze_interval=2 if unit == "epoch" else 6,  # the first update after step 7 uses a restored frozen model
    )  # fmt: skip
    if lora:
        kw["peft_config"] = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
        kw["learning_rate"] = 1e-2
    full = _sft(tmp_path, tiny_model_path, **kw)
    assert full.curriculum.frozen.resolved_mode(full.model) == ("adapter" if lora else "copy")
    full.train()
    ckpt = tmp_path / "out" / "checkpoint-7"
    state = json.loads((ckpt / CURRICULUM_STATE_FILE).read_text())
    assert len(state["sampler"]["schedule"]) == len(state["history"]) == (1 if unit == "epoch" else 3)
    assert (ckpt / CURRICULUM_FROZEN_FILE).is_file()

    resumed = _sft(tmp_path, tiny_model_path, **kw)
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert [h["frozen_age"] for h in resumed.curriculum.history] == [h["frozen_age"] for h in full.curriculum.history]
    a, b = _losses(full), _losses(resumed)
    assert a.keys() == b.keys() and len(a) == full.state.global_step
    assert [b[s] for s in sorted(b) if s > 7] == pytest.approx([a[s] for s in sorted(a) if s > 7], abs=1e-6)
    np.testing.assert_allclose(
        [h["weights"] for h in resumed.curriculum.history], [h["weights"] for h in full.curriculum.history], atol=1e-6
    )


def test_grpo_keeps_prompt_groups_and_ppo_runs(tmp_path, tiny_model_path):
    """GRPO: each generation batch holds whole groups of num_generations copies of one prompt; PPO
    (num_generations 1) trains over the same datasets. Both update the weights."""
    from trl_ext import CurriculumGRPOConfig, CurriculumGRPOTrainer, CurriculumPPOConfig, CurriculumPPOTrainer
    from trl_ext.curriculum.demo import demo_prompts

    data = demo_prompts(make_curriculum_demo(32, seed=0), prompt_chars=12)

    def short(completions, completion_ids, **kwargs):
        return [-float(len(ids)) for ids in completion_ids]

    common = dict(
        output_dir=str(tmp_path / "rl"), per_device_train_batch_size=8, max_completion_length=4, learning_rate=1e-3,
        logging_steps=1, max_steps=4, report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True,
        log_completions=False, curriculum_interval_unit="steps", curriculum_interval=2, difficulty_sample_size=8,
        seed=0,
    )  # fmt: skip
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    grpo = CurriculumGRPOTrainer(
        model=str(tiny_model_path), reward_funcs=short, args=CurriculumGRPOConfig(num_generations=4, **common),
        train_dataset=data, processing_class=tok,
    )  # fmt: skip
    batches = []
    original = grpo._generate_and_score_completions
    grpo._generate_and_score_completions = lambda inputs: (
        batches.append([x["prompt"] for x in inputs]) or original(inputs)
    )
    grpo.train()
    assert batches and all(len(b) == 8 for b in batches)
    for b in batches:
        assert b[0:4] == [b[0]] * 4 and b[4:8] == [b[4]] * 4
    assert [h["step"] for h in grpo.curriculum.history] == [0, 2]  # none at the final step 4

    # a rollout (2 mini-batches, one per step) is drawn whole at its first step: the update at step 4 of 6 comes
    # after the last rollout's draw, so it is skipped
    ppo_common = common | {"max_steps": 6}
    ppo_args = CurriculumPPOConfig(num_generations=1, num_mini_batches=2, num_ppo_epochs=1, **ppo_common)
    ppo = CurriculumPPOTrainer(
        model=str(tiny_model_path), reward_funcs=short, args=ppo_args,
        train_dataset=data, processing_class=tok,
    )  # fmt: skip
    ppo.train()
    assert [h["step"] for h in ppo.curriculum.history] == [0, 2]
    weights = [h["weights"] for h in ppo.curriculum.history]
    assert weights[-1] != weights[0]


def test_dpo_host_scores_prompt_plus_chosen(tmp_path, tiny_model_path):
    from trl_ext import CurriculumDPOConfig, CurriculumDPOTrainer

    def pairs(n, word):
        return Dataset.from_list(
            [{"prompt": f"say {word} {i}", "chosen": f" {word} {i}", "rejected": f" no {i}"} for i in range(n)]
        )

    trainer = CurriculumDPOTrainer(
        model=str(tiny_model_path),
        args=CurriculumDPOConfig(
            output_dir=str(tmp_path / "dpo"), per_device_train_batch_size=4, max_steps=3, report_to="none",
            save_strategy="no", use_cpu=True, disable_tqdm=True, difficulty_sample_size=8, seed=0,
        ),
        train_dataset={"yes": pairs(16, "yes"), "maybe": pairs(16, "maybe not at all")},
        processing_class=AutoTokenizer.from_pretrained(tiny_model_path),
    )  # fmt: skip
    trainer.train()
    first = trainer.curriculum.history[0]
    assert len(first["difficulty"]) == 2 and first["difficulty"][0] != first["difficulty"][1]


def test_plain_trainer_with_pretokenized_rows_and_with_curriculum(tmp_path, tiny_model_path):
    """A plain transformers.Trainer over tokenized datasets (difficulty scored on input_ids), and with_curriculum
    on a user's Trainer subclass."""
    from transformers import DataCollatorForLanguageModeling, Trainer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    data = {name: d.map(lambda r: tok(r["text"]), remove_columns=["text"]) for name, d in _texts(16).items()}
    args = CurriculumTrainingArguments(
        output_dir=str(tmp_path / "plain"), per_device_train_batch_size=4, max_steps=4, report_to="none",
        save_strategy="no", use_cpu=True, disable_tqdm=True, difficulty_sample_size=8, seed=0,
        curriculum_interval_unit="steps", curriculum_interval=2,
    )  # fmt: skip
    from transformers import AutoModelForCausalLM

    collator = DataCollatorForLanguageModeling(tok, mlm=False)
    trainer = CurriculumTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_path), args=args, train_dataset=data,
        data_collator=collator, processing_class=tok,
    )  # fmt: skip
    trainer.train()
    assert [h["step"] for h in trainer.curriculum.history] == [0, 2]  # none at the final step 4

    class MyTrainer(Trainer):
        pass

    cls = with_curriculum(MyTrainer)
    assert cls.__name__ == "CurriculumMyTrainer" and issubclass(cls, MyTrainer)
    custom = cls(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_path), args=args, train_dataset=data,
        data_collator=collator, processing_class=tok,
    )  # fmt: skip
    custom.train()
    assert [h["weights"] for h in custom.curriculum.history] == [h["weights"] for h in trainer.curriculum.history]
    with pytest.raises(TypeError, match="needs a transformers.Trainer subclass"):
        with_curriculum(dict)


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory, tiny_model_path):
    out = tmp_path_factory.mktemp("curriculum_one")
    proc = run_script(["tests/scripts/curriculum_ddp.py", str(tiny_model_path), str(out), "8"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "rank0.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize(("config", "kind"), [("multi_gpu.yaml", "MULTI_CPU"), ("deepspeed_zero2.yaml", "DEEPSPEED")])
def test_distributed_weights_identical_across_processes_and_equal_to_one_process(
    tmp_path, tiny_model_path, one_process_run, config, kind
):
    """2 processes (per-device batch 4) vs 1 process (batch 8), DDP and DeepSpeed ZeRO-2: the difficulty batches are
    split over the ranks and summed, so both ranks hold exactly the same weights, equal to the single process's."""
    proc = run_script(
        ["-m", "accelerate.commands.launch", "--config_file", f"accelerate_configs/{config}",
         "tests/scripts/curriculum_ddp.py", str(tiny_model_path), str(tmp_path), "4"]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    one = one_process_run
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == 2 and r0["type"] == kind
    assert r0["history"] == r1["history"]  # bit-identical weights on both ranks
    assert [h["step"] for h in r0["history"]] == [0, 3, 6]  # none at the final step 9
    for a, b in zip(one["history"], r0["history"]):
        np.testing.assert_allclose(b["weights"], a["weights"], atol=1e-6)
    assert r0["losses"] == pytest.approx(one["losses"], rel=1e-5)


# ---------------------------------------------------------------------- bad input


def test_bad_datasets(tmp_path, tiny_model_path):
    texts = _texts(8)
    with pytest.raises(ValueError, match="curriculum dataset 'mid' is empty"):
        _sft(tmp_path, tiny_model_path, datasets={"easy": texts["easy"], "mid": texts["mid"].select([])})
    other = Dataset.from_dict({"body": ["x y z"] * 4})
    with pytest.raises(ValueError, match="must share their columns: 'b' has \\['body'\\]"):
        _sft(tmp_path, tiny_model_path, datasets={"a": texts["easy"], "b": other})
    with pytest.raises(ValueError, match="curriculum dataset 'easy', row \\d+: difficulty_text_field 'body'"):
        _sft(tmp_path, tiny_model_path, datasets=texts, difficulty_text_field="body")
    with pytest.raises(TypeError, match="mapping name -> Dataset"):
        _sft(tmp_path, tiny_model_path, datasets=texts["easy"])
    with pytest.raises(ValueError, match="cannot pack"):
        _sft(tmp_path, tiny_model_path, datasets=texts, packing=True)


def test_bad_config_and_resume(tmp_path, tiny_model_path):
    with pytest.raises(ValueError, match="curriculum_update must be one of"):
        _sft_args(tmp_path, curriculum_update="sideways")
    with pytest.raises(ValueError, match="curriculum_interval_unit must be one of"):
        _sft_args(tmp_path, curriculum_interval_unit="hours")
    with pytest.raises(ValueError, match="difficulty_sample_size must be >= 1"):
        _sft_args(tmp_path, difficulty_sample_size=0)
    # the index-gradient rule can push every weight below zero: the update fails naming the datasets (untrained,
    # the repeated sentence scores higher than random letters, so m decreases along the index)
    decreasing = {"easy": _texts(8)["easy"], "hard": _texts(8)["hard"]}
    trainer = _sft(
        tmp_path, tiny_model_path, datasets=decreasing, max_steps=1, curriculum_update="index_gradient",
        curriculum_eta=1e3,
    )  # fmt: skip
    with pytest.raises(ValueError, match="every curriculum weight would be clipped to zero \\(w \\+ eta\\*g = easy"):
        trainer.train()
    (tmp_path / "plain_ckpt").mkdir()
    trainer = _sft(tmp_path, tiny_model_path, max_steps=1)
    with pytest.raises(FileNotFoundError, match="has no curriculum_state.json"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "plain_ckpt"))


def test_difficulty_is_the_answer_loss_against_a_direct_computation(tmp_path, tiny_model_path):
    """Prompt-completion rows: μ of the first update equals the mean token cross-entropy of the *completion* tokens
    under the starting model, computed by hand (one batch per dataset, so σ² = 0)."""
    from transformers import AutoModelForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    data = {
        "short": Dataset.from_list([{"prompt": f"say {i}", "completion": f" {i} ok"} for i in range(6)]),
        "long": Dataset.from_list(
            [{"prompt": f"list {i}", "completion": f" {i} {i + 1} {i + 2} go"} for i in range(6)]
        ),
    }
    trainer = _sft(tmp_path, tiny_model_path, datasets=data, max_steps=1, difficulty_sample_size=6,
                   difficulty_batch_size=6)  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    expected = []
    for d in data.values():
        total, count = 0.0, 0
        for row in d:
            ids = tok(row["prompt"] + row["completion"])["input_ids"]
            start = len(tok(row["prompt"])["input_ids"])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
            total -= sum(logp[t - 1, ids[t]].item() for t in range(start, len(ids)))
            count += len(ids) - start
        expected.append(total / count)
    trainer.train()
    first = trainer.curriculum.history[0]
    np.testing.assert_allclose(first["difficulty"], expected, rtol=1e-5)
    assert first["variance"] == [0.0, 0.0]


def test_curriculum_metrics_reach_tensorboard(tmp_path, tiny_model_path):
    """The updates go through Trainer.log, so report_to integrations record them (TensorBoard read back)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = _sft(
        tmp_path, tiny_model_path, max_steps=4, curriculum_interval_unit="steps", curriculum_interval=2,
        report_to=["tensorboard"],
    )  # fmt: skip
    trainer.train()
    (event_file,) = tmp_path.rglob("events.out.tfevents.*")
    events = EventAccumulator(str(event_file)).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/curriculum/weight/hard", "train/curriculum/difficulty/easy", "train/curriculum/frozen_age"} <= tags
    logged = [e.value for e in events.Scalars("train/curriculum/weight/hard")]
    np.testing.assert_allclose(logged, [h["weights"][2] for h in trainer.curriculum.history], rtol=1e-6)


# ---------------------------------------------------------------------- report, update schedule, input checks


def test_direct_run_writes_the_report(tmp_path, tiny_model_path):
    """Used from Python (no recipe), the trainer writes curriculum.json and curriculum_weights.png into output_dir
    at the end of train(); the JSON reloads with the run's names, sizes, weights and history, and
    curriculum_report_extra adds fields."""
    from trl_ext.curriculum.callback import CURRICULUM_JSON, CURRICULUM_PNG

    trainer = _sft(tmp_path, tiny_model_path, max_steps=4, curriculum_interval_unit="steps", curriculum_interval=2)
    trainer.curriculum_report_extra["note"] = "direct"
    out = tmp_path / "out"
    assert not (out / CURRICULUM_JSON).exists()
    trainer.train()
    report = json.loads((out / CURRICULUM_JSON).read_text())
    history = trainer.curriculum.history
    assert len(history) == 2
    assert list(report["final_weights"]) == ["easy", "mid", "hard"]
    assert list(report["final_weights"].values()) == history[-1]["weights"]
    assert report["history"] == json.loads(json.dumps(history))
    assert report["sizes"] == {"easy": 40, "mid": 40, "hard": 40}
    assert report["initial_weights"] == pytest.approx([1 / 3] * 3)
    assert report["global_step"] == 4 and report["num_updates"] == 2 and report["note"] == "direct"
    assert trainer.curriculum.report["final_weights"] == report["final_weights"]
    png = (out / CURRICULUM_PNG).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


@pytest.mark.parametrize(
    ("rows", "accumulation", "interval", "max_steps", "expected"),
    [
        (40, 1, 2, 8, [0, 2, 4, 6]),  # the old schedule also updated at the final step 8
        (40, 1, 1, 4, [0, 1, 2]),  # step 3: the loader has already drawn step 4's batch (one ahead)
        (40, 2, 1, 4, [0, 1, 2, 3]),  # step 3: the second micro-batch of step 4 is still to be drawn
        (8, 1, 3, 6, [0, 3]),  # 3 steps per epoch: step 3 ends epoch 0, and epoch 1 draws with its weights
    ],
)
def test_every_update_is_sampled_with(tmp_path, tiny_model_path, rows, accumulation, interval, max_steps, expected):
    """Steps unit: every update in history precedes a draw of a trained batch, and each skipped due update (the
    final step, or one after which the loader had drawn every remaining batch) would have been used by none.

    A batch of 8 is 8 draws; epoch e trains n_e of them, its first ones, so weights set at (epoch e, position p)
    are sampled with iff p < n_e or a later epoch trains."""
    ahead = []

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            sampler = trainer.curriculum_sampler
            ahead.append((state.global_step, sampler.epoch, sampler.next_draw_output))

    trainer = _sft(
        tmp_path, tiny_model_path, datasets=_texts(rows), max_steps=max_steps,
        gradient_accumulation_steps=accumulation, curriculum_interval_unit="steps", curriculum_interval=interval,
    )  # fmt: skip
    trainer.add_callback(Probe())
    trainer.train()
    assert trainer.state.global_step == max_steps
    history = trainer.curriculum.history
    assert [h["step"] for h in history] == expected
    assert all(h["step"] < max_steps for h in history)

    micro_per_epoch = 3 * rows // 8
    steps_per_epoch = -(-micro_per_epoch // accumulation)
    trained: dict[int, int] = {}  # epoch -> draws trained
    for step in range(max_steps):
        epoch = step // steps_per_epoch
        trained[epoch] = min(trained.get(epoch, 0) + 8 * accumulation, 8 * micro_per_epoch)

    def used(epoch: int, position: int) -> bool:
        return position < trained.get(epoch, 0) or any(n > 0 for e, n in trained.items() if e > epoch)

    schedule = trainer.curriculum_sampler.state_dict()["schedule"]
    assert len(schedule) == len(history)  # the first update replaced the initial weights at (0, 0)
    for (epoch, position), _ in schedule:
        assert used(epoch, position), (epoch, position, trained)
    np.testing.assert_allclose([w for _, w in schedule], [h["weights"] for h in history])
    skipped = [s for s, _, _ in ahead if s % interval == 0 and s not in expected]
    assert max_steps in skipped
    for step, epoch, next_draw in ahead:
        if step in skipped:
            assert not used(epoch, next_draw), (step, epoch, next_draw, trained)


def test_wrong_config_class_is_refused(tmp_path, tiny_model_path):
    """A curriculum trainer given its host's plain config (or another host's) fails with a TypeError naming the
    class it needs, before anything is loaded (the model path does not exist); with curriculum_args the plain
    config is accepted."""
    from transformers import TrainingArguments
    from trl import DPOConfig, GRPOConfig, SFTConfig

    from trl_ext import (
        CurriculumArguments,
        CurriculumDPOConfig,
        CurriculumDPOTrainer,
        CurriculumGRPOTrainer,
        CurriculumPPOTrainer,
        PPOConfig,
    )

    missing = str(tmp_path / "no_model")
    common = dict(output_dir=str(tmp_path / "o"), use_cpu=True, bf16=False, report_to="none")
    data = _texts(4)
    with pytest.raises(
        TypeError,
        match=r"CurriculumSFTTrainer needs a CurriculumSFTConfig \(got SFTConfig\): the curriculum knobs .* Pass "
        r"args=CurriculumSFTConfig\(\.\.\.\), or keep the SFTConfig and add curriculum_args=CurriculumArguments",
    ):
        CurriculumSFTTrainer(model=missing, args=SFTConfig(**common), train_dataset=data)
    with pytest.raises(TypeError, match=r"CurriculumSFTTrainer needs a CurriculumSFTConfig \(got SFTConfig\)"):
        CurriculumSFTTrainer(missing, SFTConfig(**common), train_dataset=data)  # args given positionally
    with pytest.raises(
        TypeError, match=r"CurriculumSFTTrainer needs a CurriculumSFTConfig \(got CurriculumDPOConfig\) \(docs"
    ):
        CurriculumSFTTrainer(model=missing, args=CurriculumDPOConfig(**common), train_dataset=data)
    with pytest.raises(TypeError, match=r"CurriculumDPOTrainer needs a CurriculumDPOConfig \(got DPOConfig\)"):
        CurriculumDPOTrainer(model=missing, args=DPOConfig(**common), train_dataset=data)
    with pytest.raises(TypeError, match=r"CurriculumGRPOTrainer needs a CurriculumGRPOConfig \(got GRPOConfig\)"):
        CurriculumGRPOTrainer(model=missing, reward_funcs=len, args=GRPOConfig(**common), train_dataset=data)
    with pytest.raises(TypeError, match=r"CurriculumPPOTrainer needs a CurriculumPPOConfig \(got PPOConfig\)"):
        CurriculumPPOTrainer(model=missing, reward_funcs=len, args=PPOConfig(**common), train_dataset=data)
    with pytest.raises(
        TypeError, match=r"CurriculumTrainer needs a CurriculumTrainingArguments \(got TrainingArguments\)"
    ):
        CurriculumTrainer(model=None, args=TrainingArguments(**common), train_dataset=data)
    with pytest.raises(TypeError, match=r"CurriculumSFTTrainer needs a SFTConfig or a CurriculumSFTConfig"):
        CurriculumSFTTrainer(
            model=missing, args=DPOConfig(**common), train_dataset=data, curriculum_args=CurriculumArguments()
        )

    trainer = CurriculumSFTTrainer(
        model=str(tiny_model_path), args=SFTConfig(max_length=64, **common), train_dataset=data,
        processing_class=AutoTokenizer.from_pretrained(tiny_model_path),
        curriculum_args=CurriculumArguments(difficulty_sample_size=2, curriculum_eta=0.5),
    )  # fmt: skip
    assert trainer.curriculum_args.curriculum_eta == 0.5 and sum(map(len, trainer.curriculum.batches[0])) == 2


def test_missing_model_and_resume_folder_are_named(tmp_path, tiny_model_path):
    """A model path that does not exist (Python API, as in the recipes) and a resume folder that does not exist are
    named as missing, before anything is trained."""
    with pytest.raises(FileNotFoundError, match="model path './no/such/model' does not exist"):
        CurriculumSFTTrainer(model="./no/such/model", args=_sft_args(tmp_path), train_dataset=_texts(4))
    trainer = CurriculumSFTTrainer(
        model=str(tiny_model_path), args=_sft_args(tmp_path), train_dataset=_texts(4),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_path),
    )  # fmt: skip
    with pytest.raises(FileNotFoundError, match=r"resume_from_checkpoint: '.*missing' does not exist"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "missing"))
    assert trainer.state.global_step == 0


def test_dataset_without_host_columns_is_named(tmp_path, tiny_model_path):
    """Datasets without a column the host reads fail before the host's __init__ (the model path does not exist)
    with a ValueError naming the dataset, its columns and the formats the host takes, not TRL's KeyError."""
    from trl_ext import CurriculumDPOConfig, CurriculumDPOTrainer, CurriculumGRPOConfig, CurriculumGRPOTrainer

    missing = str(tmp_path / "no_model")
    body = {"notes": Dataset.from_dict({"body": ["x y z"] * 4}), "essays": Dataset.from_dict({"body": ["a b"] * 4})}
    with pytest.raises(
        ValueError,
        match=r"curriculum dataset 'notes' has the columns \['body'\]; CurriculumSFTTrainer needs 'text' \| "
        r"'messages' \| 'prompt' \+ 'completion' \| 'conversations' \| 'input_ids'\. TRL's SFT formats",
    ):
        CurriculumSFTTrainer(model=missing, args=_sft_args(tmp_path), train_dataset=body)
    prompts = {"q": Dataset.from_dict({"prompt": ["say"] * 4}), "r": Dataset.from_dict({"prompt": ["tell"] * 4})}
    with pytest.raises(ValueError, match=r"curriculum dataset 'q' has the columns \['prompt'\]; CurriculumSFTTrainer"):
        CurriculumSFTTrainer(model=missing, args=_sft_args(tmp_path), train_dataset=prompts)  # no completion
    with pytest.raises(ValueError, match=r"curriculum dataset 'notes' has the columns \['body'\]; .*needs 'article'"):
        CurriculumSFTTrainer(model=missing, args=_sft_args(tmp_path, dataset_text_field="article"), train_dataset=body)
    common = dict(output_dir=str(tmp_path / "o"), use_cpu=True, bf16=False, report_to="none")
    with pytest.raises(
        ValueError,
        match=r"curriculum dataset 'q' has the columns \['prompt'\]; CurriculumDPOTrainer needs 'prompt' \+ "
        r"'chosen' \+ 'rejected' \| 'chosen' \+ 'rejected'",
    ):
        CurriculumDPOTrainer(model=missing, args=CurriculumDPOConfig(**common), train_dataset=prompts)
    with pytest.raises(
        ValueError, match=r"curriculum dataset 'easy' has the columns \['text'\]; CurriculumGRPOTrainer needs 'prompt'"
    ):
        CurriculumGRPOTrainer(
            model=missing, reward_funcs=len, args=CurriculumGRPOConfig(**common), train_dataset=_texts(4)
        )
