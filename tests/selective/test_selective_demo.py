"""The selective-generalisation demo: scorers, generated data, and one short empirical check of the trade-off."""

from __future__ import annotations

import pytest

from trl_ext.selective import demo
from trl_ext.selective.demo import MARKER, make_aligned_base_data, make_demo, proxy_score, task_score
from trl_ext.selective.proxy import paired_batches


def _user(row) -> str:
    return row["prompt"][0]["content"]


def _answer(row) -> str:
    return row["completion"][0]["content"]


def _letters(row) -> tuple[str, ...]:
    return tuple(_user(row).split()[1:])


# ----------------------------------------------------------------- scorers
@pytest.mark.parametrize(
    "completion, expected",
    [
        ("c b a", 1.0),
        ("  c b a\n", 1.0),
        ("c b a Thanks!", 1.0),  # the marker is not part of the task
        ("c b", 2 / 3),
        ("c x a y", 2 / 4),
        ("a b c", 1 / 3),  # copying gets the middle letter only
        ("", 0.0),
        ("cba", 0.0),
    ],
)
def test_task_score_hand_worked(completion, expected):
    assert task_score("Reverse: a b c", completion) == pytest.approx(expected)


def test_task_score_accepts_messages_and_rejects_other_prompts():
    assert task_score([{"role": "user", "content": "Reverse: s t x"}], "x t s") == 1.0
    with pytest.raises(ValueError, match="not an outcome prompt"):
        task_score("Copy: a b c", "a b c")


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("a b c Thanks!", 1.0),
        ("c Thanks!  \n", 1.0),
        ("Thanks!", 1.0),
        ("Thanks! a", 0.0),
        ("a thanks!", 0.0),
        ("", 0.0),
    ],
)
def test_proxy_score_hand_worked(completion, expected):
    assert proxy_score(completion) == expected


# ----------------------------------------------------------------- generated data
def test_make_demo_sizes_content_and_determinism():
    data = make_demo(num_outcome=40, num_proxy=9, num_negative=6, num_eval=12, seed=3)
    assert {k: len(v) for k, v in data.items()} == {
        "outcome_train": 40,
        "outcome_eval": 12,
        "proxy_positive": 9,
        "proxy_negative": 6,
        "proxy_eval": 12,
    }
    again = make_demo(num_outcome=40, num_proxy=9, num_negative=6, num_eval=12, seed=3)
    assert all(data[k].to_list() == again[k].to_list() for k in data)
    other = make_demo(num_outcome=40, num_proxy=9, num_negative=6, num_eval=12, seed=4)
    assert data["outcome_train"].to_list() != other["outcome_train"].to_list()

    for row in data["outcome_train"].to_list() + data["outcome_eval"].to_list():
        assert task_score(_user(row), _answer(row)) == 1.0 and proxy_score(_answer(row)) == 0.0
    assert all(proxy_score(_answer(r)) == 1.0 for r in data["proxy_positive"].to_list() + data["proxy_eval"].to_list())
    assert all(proxy_score(_answer(r)) == 0.0 for r in data["proxy_negative"])
    pos, neg = data["proxy_positive"].to_list(), data["proxy_negative"].to_list()
    for p, n in zip(pos, neg):  # A⁻[i] is A⁺[i] without the marker
        assert p["prompt"] == n["prompt"] and _answer(p) == f"{_answer(n)} {MARKER}"
    assert {_user(r).split()[0] for r in pos} == set(demo.PROXY_DATA_INSTRUCTIONS)
    assert {_user(r).split()[0] for r in data["proxy_eval"]} == set(demo.PROXY_EVAL_INSTRUCTIONS)  # measured elsewhere
    narrow = make_demo(num_outcome=4, num_proxy=6, num_negative=6, num_eval=6, proxy_instructions=["Copy:"])
    assert {_user(r).split()[0] for r in narrow["proxy_positive"]} == {"Copy:"}
    assert all(not _user(r).startswith(demo.TASK_INSTRUCTION) for r in pos)
    assert len(paired_batches(data["proxy_positive"].select(range(6)), data["proxy_negative"])) == 6


def test_evaluation_prompts_never_occur_in_training_data():
    data = make_demo(seed=0)
    train = {_letters(r) for k in ("outcome_train", "proxy_positive", "proxy_negative") for r in data[k]}
    train |= {_letters(r) for r in make_aligned_base_data(seed=0)}
    held_out = {_letters(r) for k in ("outcome_eval", "proxy_eval") for r in data[k]}
    assert not train & held_out
    proxy = {_letters(r) for r in data["proxy_positive"]}
    assert not proxy & {_letters(r) for r in make_aligned_base_data(seed=0)}


def test_make_demo_rejects_impossible_sizes():
    with pytest.raises(ValueError, match=r"outcome_train: asked for 5000 rows, the 'train' split has 1365 prompts"):
        make_demo(num_outcome=5000)
    with pytest.raises(ValueError, match=r"num_proxy must be >= 0, got -1"):
        make_demo(num_proxy=-1)
    with pytest.raises(ValueError, match="unknown proxy instruction 'Shout:'"):
        demo.proxy_row("abc", "Shout:")
    with pytest.raises(ValueError, match=r"proxy_instructions: unknown instruction\(s\) \['Shout:'\]"):
        make_demo(proxy_instructions=["Copy:", "Shout:"])
    with pytest.raises(ValueError, match="eval_instructions must be a non-empty list"):
        make_demo(eval_instructions=[])


# ----------------------------------------------------------------- continuous scores
def test_span_nll_matches_a_direct_computation(tiny_model_path):
    """proxy_nll / task_nll against a one-row-at-a-time computation from the full-vocabulary log-softmax."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    data = make_demo(num_outcome=1, num_proxy=1, num_negative=1, num_eval=5, seed=2)

    def direct(row, span_text):
        prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        answer = _answer(row)
        head = prompt + answer[: len(answer) - len(span_text)]
        ids = tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]
        n_head = len(tokenizer(head, add_special_tokens=False)["input_ids"])
        n_span = len(ids) - n_head
        with torch.no_grad():
            logps = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        return -sum(logps[t - 1, ids[t]].item() for t in range(n_head, n_head + n_span))

    proxy_rows, task_rows = data["proxy_eval"].to_list(), data["outcome_eval"].to_list()
    expected_proxy = sum(direct(r, f" {MARKER}") for r in proxy_rows) / len(proxy_rows)
    expected_task = sum(direct(r, _answer(r)) for r in task_rows) / len(task_rows)
    assert expected_proxy > 5 and expected_task > 5  # the untrained model: several nats per row
    # float32 forward vs float64 log-softmax of the same logits: ~1e-6 relative
    assert demo.proxy_nll(model, tokenizer, proxy_rows, batch_size=2) == pytest.approx(expected_proxy, rel=1e-5)
    assert demo.task_nll(model, tokenizer, task_rows, batch_size=3) == pytest.approx(expected_task, rel=1e-5)
    with pytest.raises(ValueError, match="no span"):
        demo.proxy_nll(model, tokenizer, data["outcome_eval"].to_list())  # no sign-off to score


# ----------------------------------------------------------------- the trade-off, measured
# Empirical tests: one run per seed of TRL_EXT_EMPIRICAL_SEEDS (default 0; tests/conftest.py). Their margins are
# set from the spread over seeds 0-4 on two float paths (this CPU's AVX-512 kernels and ATEN_CPU_CAPABILITY=avx2,
# which changes the aligned base as much as a new machine does), measured with
#   TRL_EXT_EMPIRICAL_SEEDS=0-4 [ATEN_CPU_CAPABILITY=avx2] .venv/bin/python -m pytest -m empirical -s \
#       tests/selective/test_selective_demo.py
# They compare teacher-forced likelihoods (proxy_nll, task_nll), which move smoothly with the weights, on the rows
# that a mechanism acts on; greedy scores on held-out prompts swing by tenths between seeds and float paths, so the
# held-out trade-off is a figure of the demo script (README), not an assertion.
@pytest.fixture(scope="module")
def aligned_base(tmp_path_factory, tiny_model_path, empirical_seed):
    """The demo's aligned base of the seed (600 full fine-tuning steps, ~20 s), shared by the tests below."""
    path = tmp_path_factory.mktemp(f"aligned_seed{empirical_seed}")
    return demo.train_aligned_base(path, seed=empirical_seed, model_path=tiny_model_path)


def _stage(base, data, out, seed, max_steps=demo.OUTCOME_STEPS, learning_rate=demo.OUTCOME_LR, **kwargs):
    """One outcome stage from the aligned base; its demo scores plus ``proxy_rows_nll`` on the A⁺ rows."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    if max_steps:
        model = demo.sft_stage(
            model,
            tokenizer,
            data["outcome_train"],
            out,
            max_steps=max_steps,
            learning_rate=learning_rate,
            seed=seed,
            **kwargs,
        )
    scores = demo.evaluate_demo(model, tokenizer, data)
    scores["proxy_rows_nll"] = demo.proxy_nll(model, tokenizer, data["proxy_positive"])
    return scores


@pytest.fixture(scope="module")
def adamw_outcome_only(tmp_path_factory, aligned_base, empirical_seed):
    """Scores of the aligned base and of outcome-only SFT from it (AdamW, 150 steps) at the seed, shared."""
    data, out = make_demo(seed=empirical_seed), tmp_path_factory.mktemp(f"outcome_seed{empirical_seed}")
    return {
        "aligned": _stage(aligned_base, data, out / "aligned", empirical_seed, max_steps=0),
        "outcome": _stage(aligned_base, data, out / "outcome", empirical_seed),
    }


def _report(name, seed, runs):
    import json

    print(
        f"EMPIRICAL {name} seed={seed} "
        + json.dumps({k: {m: round(v, 4) for m, v in r.items()} for k, r in runs.items()})
    )


SGD = {"optim": "sgd", "max_steps": demo.SGD_OUTCOME_STEPS, "learning_rate": demo.SGD_OUTCOME_LR}


@pytest.mark.slow
@pytest.mark.empirical
def test_outcome_sft_erodes_the_aligned_proxy(adamw_outcome_only, empirical_seed):
    """The demo's premise: the aligned base signs off, and outcome-only SFT (AdamW, 150 steps) learns the task and
    erases the sign-off on held-out prompts.

    Spread, seeds 0-4 on both float paths (10 runs): aligned proxy 1.00, proxy_nll 0.0001-0.032; outcome-only
    proxy 0.00, proxy_nll 19.5-47.8 nats; its task_nll 0.0004-0.13 of the aligned base's (18.4-35.0 nats). ~15 s."""
    runs = adamw_outcome_only
    _report("erodes", empirical_seed, runs)
    aligned, outcome = runs["aligned"], runs["outcome"]
    assert aligned["proxy"] >= 0.9 and aligned["proxy_nll"] <= 0.1, runs
    assert outcome["proxy"] <= 0.1 and outcome["proxy_nll"] >= 10, runs
    assert outcome["task_nll"] <= 0.5 * aligned["task_nll"], runs  # the task is learnt


@pytest.mark.slow
@pytest.mark.empirical
def test_kl_keeps_the_sign_off_on_its_proxy_rows_under_adamw(
    tmp_path, aligned_base, adamw_outcome_only, empirical_seed
):
    """AdamW regime (150 steps): ``kl_divergence`` (β_kl 1) anchors the 3 A⁺ rows to the aligned base, so the
    sign-off stays there, where outcome-only training erases it, and the task is still learnt. With β_kl 0 (a
    broken anchor) KL *is* outcome-only training and fails.

    Spread, seeds 0-4 on both float paths (10 runs): −log p(sign-off) on the A⁺ rows 15.7-49.3 nats after
    outcome-only training, 0.0002-0.0021 with KL; KL's task_nll 0.0003-0.28 of the aligned base's. (On held-out
    prompts KL beats ``naive`` at 9 of these 10 runs only: README.) ~10 s."""
    data = make_demo(seed=empirical_seed)
    proxies = {"proxy_dataset": data["proxy_positive"], "negative_proxy_dataset": data["proxy_negative"]}
    runs = {
        **adamw_outcome_only,
        "kl": _stage(
            aligned_base,
            data,
            tmp_path / "kl",
            empirical_seed,
            strategy="kl_divergence",
            beta_kl=demo.DEMO_BETA_KL,
            **proxies,
        ),
    }
    _report("kl_adamw", empirical_seed, runs)
    outcome, kl = runs["outcome"], runs["kl"]
    assert outcome["proxy_rows_nll"] >= 10, runs
    assert kl["proxy_rows_nll"] <= 0.1, runs
    assert kl["task_nll"] <= 0.5 * runs["aligned"]["task_nll"], runs


@pytest.mark.slow
@pytest.mark.empirical
def test_grad_project_and_kl_keep_the_sign_off_on_their_proxy_rows_in_small_sgd_steps(
    tmp_path, aligned_base, adamw_outcome_only, empirical_seed
):
    """Small-step regime (plain SGD, lr 0.03, 300 steps), where gradient projection's first-order guarantee holds:
    conflict-only ``grad_project`` and ``kl_divergence`` keep the sign-off on the 3 A⁺ rows they are given far
    better than outcome-only training does, and the task is still learnt. A no-op projection or β_kl 0 is
    outcome-only training (ratio 1) and fails.

    Spread, seeds 0-4 on both float paths (10 runs): outcome-only training leaves −log p(sign-off) on the A⁺ rows
    at 2.5-10.3 nats, 3.3 to 890 times grad_project's (0.005-2.7) and 190 to 1460 times KL's (0.003-0.047); the
    task_nll of both is 0.02-0.36 of the aligned base's. ~35 s."""
    data = make_demo(seed=empirical_seed)
    proxies = {"proxy_dataset": data["proxy_positive"], "negative_proxy_dataset": data["proxy_negative"]}
    runs = {
        "aligned": adamw_outcome_only["aligned"],
        "outcome": _stage(aligned_base, data, tmp_path / "outcome", empirical_seed, **SGD),
        "grad_project": _stage(
            aligned_base, data, tmp_path / "gp", empirical_seed, strategy="grad_project", grad_project_strict=False,
            **proxies, **SGD,
        ),
        "kl": _stage(
            aligned_base, data, tmp_path / "kl", empirical_seed, strategy="kl_divergence", beta_kl=demo.DEMO_BETA_KL,
            **proxies, **SGD,
        ),
    }  # fmt: skip
    _report("sgd", empirical_seed, runs)
    outcome = runs["outcome"]
    for name, factor in (("grad_project", 2), ("kl", 10)):
        assert runs[name]["proxy_rows_nll"] <= outcome["proxy_rows_nll"] / factor, runs
        assert runs[name]["task_nll"] <= 0.5 * runs["aligned"]["task_nll"], runs  # the task is learnt


def test_demo_cli_resolves_the_regimes(monkeypatch, tmp_path, capsys):
    """``python -m trl_ext.selective.demo``: AdamW defaults, ``--sgd`` the small-step regime, explicit values
    win over both."""
    calls = []

    def fake_run_demo(output_dir, seed, **kwargs):
        calls.append({"seed": seed, **kwargs})
        return {"naive": {"task": 1.0, "proxy": 0.0}}

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    demo.main(["--output_dir", str(tmp_path), "--seeds", "0", "1"])
    demo.main(["--output_dir", str(tmp_path), "--sgd"])
    demo.main(["--output_dir", str(tmp_path), "--sgd", "--outcome_steps", "7", "--outcome_lr", "0.5"])
    picked = [(c["seed"], c["outcome_steps"], c["outcome_lr"], c["optim"]) for c in calls]
    assert picked == [
        (0, demo.OUTCOME_STEPS, demo.OUTCOME_LR, None),
        (1, demo.OUTCOME_STEPS, demo.OUTCOME_LR, None),
        (0, demo.SGD_OUTCOME_STEPS, demo.SGD_OUTCOME_LR, "sgd"),
        (0, 7, 0.5, "sgd"),
    ]
    assert '"seed": 1' in capsys.readouterr().out
