"""latent_generate and evaluate_latent_conditions on the tiny model, against independent computations: a greedy loop
that runs the hand-built spliced sequence through the model token by token, and a hand-built teacher-forced CE.

The tiny model's layers are re-drawn with a larger scale (and the adapter's scales set to 1) so that its answers
depend on the context and on the latent message: with its small initial weights it repeats the last token."""

from __future__ import annotations

import pytest
import torch

from trl_ext.common.errors import DataError, InputTypeError, UnknownNameError
from trl_ext.latent.adapter import LatentAdapter, LatentAdapterConfig
from trl_ext.latent.collator import LatentCollator
from trl_ext.latent.data import LatentDataset, LatentRow
from trl_ext.latent.generation import evaluate_latent_conditions, latent_generate, latent_generate_ids
from trl_ext.latent.injection import BOP, EOP, FIRST_HUMAN_END, add_latent_tokens
from trl_ext.latent.receiver import LatentReceiver

PROMPTS = [
    [{"role": "user", "content": "Where is the key?"}],
    [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Find the mug."}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Go"}],
]
EVAL_PROMPTS = [*PROMPTS[:2], [{"role": "user", "content": "Go to the door."}]]  # one assistant turn to come
PLANS = ["look under the mat", "check the kitchen", "go to the door"]


@pytest.fixture(scope="module")
def setup(tiny_model_path):
    from trl_ext.models import load_causal_lm, load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(str(tiny_model_path))
    model = load_causal_lm(str(tiny_model_path))
    ids = add_latent_tokens(tok, model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.model.layers.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3, generator=g)
    adapter = LatentAdapter(
        LatentAdapterConfig(hidden_size=model.config.hidden_size, sender_hidden_size=8, num_heads=4)
    )
    with torch.no_grad():
        adapter.scale.fill_(1.0), adapter.out_scale.fill_(1.0)
    receiver = LatentReceiver(model, adapter, ids).eval()
    states = [torch.randn(3, 8), torch.randn(1, 8), torch.randn(5, 8)]
    return receiver, tok, states


def hand_prefix(receiver, tok, messages, message):
    """The spliced embeddings of one conversation, built by hand: tokens before the marker, <bop>, message, <eop>,
    the rest; and the tokens with the marker removed."""
    messages = [dict(m) for m in messages]
    first = next(i for i, m in enumerate(messages) if m["role"] == "user")
    messages[first]["content"] += FIRST_HUMAN_END
    gen = messages[-1]["role"] == "user"
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
    ids = torch.tensor(tok(text, add_special_tokens=False)["input_ids"])
    p = int((ids == tok.convert_tokens_to_ids(FIRST_HUMAN_END)).nonzero()[0, 0])
    embed = receiver.model.get_input_embeddings()
    special = embed(torch.tensor([tok.convert_tokens_to_ids(BOP), tok.convert_tokens_to_ids(EOP)]))
    x = torch.cat([embed(ids[:p]), special[:1], message, special[1:], embed(ids[p + 1 :])])
    return x, p, message.shape[0]


def hand_greedy(receiver, tok, messages, message, n):
    """Greedy decoding by hand: the whole sequence through the model at every step, no cache, stop at <|im_end|>."""
    x, _, _ = hand_prefix(receiver, tok, messages, message)
    x, out = x[None], []
    embed = receiver.model.get_input_embeddings()
    with torch.no_grad():
        for _ in range(n):
            token = int(receiver.model(inputs_embeds=x).logits[0, -1].argmax())
            if token == tok.convert_tokens_to_ids("<|im_end|>"):
                break
            out.append(token)
            x = torch.cat([x, embed(torch.tensor([[token]]))], dim=1)
    return out


def message_of(receiver, tok, source, i, states):
    with torch.no_grad():
        if source == "latent":
            return receiver.latent_adapter(states[i])
        if source == "plan":
            return receiver.model.get_input_embeddings()(
                torch.tensor(tok(PLANS[i], add_special_tokens=False)["input_ids"])
            )
        return torch.zeros((0, receiver.model.config.hidden_size))


@pytest.mark.parametrize("source", ["latent", "plan", "none"])
def test_batched_equals_one_by_one_and_the_hand_loop(setup, source):
    receiver, tok, states = setup
    kwargs = {"source": source, "max_new_tokens": 6}
    batched = latent_generate_ids(receiver, tok, PROMPTS, states, plans=PLANS, **kwargs)
    alone = [
        latent_generate_ids(receiver, tok, [m], [h], **kwargs, plans=[p])[0] for m, h, p in zip(PROMPTS, states, PLANS)
    ]
    assert batched == alone
    for i, messages in enumerate(PROMPTS):
        assert batched[i] == hand_greedy(receiver, tok, messages, message_of(receiver, tok, source, i, states), 6)
    assert latent_generate(receiver, tok, PROMPTS, states, plans=PLANS, **kwargs) == [
        tok.decode(a, skip_special_tokens=True) for a in batched
    ]
    if source == "latent":  # the test discriminates: another message gives another answer
        assert latent_generate_ids(receiver, tok, PROMPTS[:1], states[1:2], max_new_tokens=6) != batched[:1]
        # a stop token: row 0 stops early (then padded by generate), the others go on; each cut at its first stop
        stop = batched[0][2]
        stopped = latent_generate_ids(receiver, tok, PROMPTS, states, max_new_tokens=6, eos_token_id=stop)
        assert stopped == [a[: a.index(stop)] if stop in a else a for a in batched] and len(stopped[0]) == 2
        assert stopped == [latent_generate_ids(receiver, tok, [m], [h], max_new_tokens=6, eos_token_id=[stop])[0]
                           for m, h in zip(PROMPTS, states)]  # fmt: skip


def test_generate_with_inputs_embeds_returns_only_new_tokens_and_ignores_shipped_defaults(setup):
    receiver, tok, states = setup
    x, _, _ = hand_prefix(receiver, tok, PROMPTS[0], message_of(receiver, tok, "latent", 0, states))
    with torch.no_grad():
        out = receiver.model.generate(inputs_embeds=x[None], max_new_tokens=4, do_sample=False, eos_token_id=[])
    assert out.shape == (1, 4)  # only the new tokens, no placeholder for the prompt
    config = receiver.model.generation_config
    saved = config.repetition_penalty, config.do_sample, config.top_k
    config.repetition_penalty, config.do_sample, config.top_k = 3.0, True, 2
    try:
        got = latent_generate_ids(receiver, tok, PROMPTS, states, max_new_tokens=6)
    finally:
        config.repetition_penalty, config.do_sample, config.top_k = saved
    assert got == [
        hand_greedy(receiver, tok, m, message_of(receiver, tok, "latent", i, states), 6) for i, m in enumerate(PROMPTS)
    ]


def test_sampling_seed_is_reproducible_and_leaves_the_global_rng(setup):
    receiver, tok, states = setup
    before = torch.get_rng_state()
    a = latent_generate_ids(receiver, tok, PROMPTS, states, do_sample=True, temperature=2.0, seed=3, max_new_tokens=8)
    b = latent_generate_ids(receiver, tok, PROMPTS, states, do_sample=True, temperature=2.0, seed=3, max_new_tokens=8)
    assert a == b and torch.equal(torch.get_rng_state(), before)


def rows_of(answers, states):
    """Dataset items: the prompts answered by ``answers``, with the plans and ``states``."""
    return [
        {"id": f"s{i}", "messages": [*m, {"role": "assistant", "content": a}], "plan": PLANS[i], "hidden_state": h}
        for i, (m, a, h) in enumerate(zip(EVAL_PROMPTS, answers, states))
    ]


def hand_ce(receiver, tok, messages, message):
    """(sum, count) of the answer's token CE: the first assistant turn's tokens and the template's end of turn."""
    x, p, length = hand_prefix(receiver, tok, messages, message)
    k = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
    marked = [dict(m) for m in messages]
    first = next(i for i, m in enumerate(marked) if m["role"] == "user")
    marked[first]["content"] += FIRST_HUMAN_END

    def n_tokens(turns, gen):
        return len(
            tok(tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=gen), add_special_tokens=False)[
                "input_ids"
            ]
        )

    start, end = n_tokens(marked[:k], True), n_tokens(marked[: k + 1], False)
    ids = tok(tok.apply_chat_template(marked, tokenize=False), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(receiver.model(inputs_embeds=x[None]).logits[0].float(), -1)
    shift = length + 2 - 1  # the inserted span replaces the marker
    total = -sum(float(logp[t + shift - 1, ids[t]]) for t in range(start, end))
    return total, end - start


def test_evaluate_conditions_equal_a_hand_computation(setup):
    receiver, tok, states = setup
    true_answers = latent_generate(receiver, tok, EVAL_PROMPTS, states, max_new_tokens=5)
    rows = rows_of(true_answers, states)  # the reference answers are the greedy answers with the true latents
    conditions = ("true", "shuffled", "none", "plan")
    out = evaluate_latent_conditions(
        receiver, tok, rows, batch_size=2, conditions=conditions, generate=True, max_new_tokens=5
    )
    assert out["num_samples"] == 3
    messages = {
        "true": [message_of(receiver, tok, "latent", i, states) for i in range(3)],
        "shuffled": [message_of(receiver, tok, "latent", (i + 1) % 3, states) for i in range(3)],
        "none": [message_of(receiver, tok, "none", i, states) for i in range(3)],
        "plan": [message_of(receiver, tok, "plan", i, states) for i in range(3)],
    }
    for condition, msgs in messages.items():
        parts = [hand_ce(receiver, tok, rows[i]["messages"], msgs[i]) for i in range(3)]
        assert out["num_tokens"] == sum(c for _, c in parts)
        assert out[condition]["ce"] == pytest.approx(sum(s for s, _ in parts) / sum(c for _, c in parts), rel=1e-5)
        assert out[condition]["ce_per_sample"] == pytest.approx(sum(s / c for s, c in parts) / 3, rel=1e-5)
    assert out["shuffled"]["ce"] != pytest.approx(out["true"]["ce"], rel=1e-4)
    assert out["true"]["exact_match"] == 1.0
    shuffled = latent_generate(receiver, tok, EVAL_PROMPTS, [states[1], states[2], states[0]], max_new_tokens=5)
    assert out["shuffled"]["exact_match"] == pytest.approx(
        sum(a.strip() == r.strip() for a, r in zip(shuffled, true_answers)) / 3
    )
    # a LatentCollator works as well as a tokenizer; the default conditions
    again = evaluate_latent_conditions(receiver, LatentCollator(tok), rows, batch_size=3)
    assert set(again) == {"true", "shuffled", "none", "num_samples", "num_tokens"}
    assert again["true"]["ce"] == pytest.approx(out["true"]["ce"], rel=1e-5) and "exact_match" not in again["true"]
    latent_rows = [LatentRow(r["id"], r["messages"], r["plan"], r["hidden_state"]) for r in rows]
    assert evaluate_latent_conditions(receiver, tok, LatentDataset(latent_rows), batch_size=3) == again


def test_bad_inputs_raise_named_errors(setup):
    receiver, tok, states = setup
    ends_with_answer = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    with pytest.raises(DataError, match="conversation 'b'.*user turn"):
        latent_generate(receiver, tok, [PROMPTS[0], ends_with_answer], states[:2], ids=["a", "b"])
    with pytest.raises(DataError, match="3 conversations but 2 hidden_states"):
        latent_generate(receiver, tok, PROMPTS, states[:2])
    with pytest.raises(DataError, match="needs hidden_states"):
        latent_generate(receiver, tok, PROMPTS)
    with pytest.raises(DataError, match=r"sample '1'.*\(K, 8\)"):
        latent_generate(receiver, tok, PROMPTS, [states[0], torch.randn(2, 5), states[2]])
    with pytest.raises(DataError, match=r"plan.*\['1'\]"):
        latent_generate(receiver, tok, PROMPTS, source="plan", plans=["a", "", "c"])
    with pytest.raises(UnknownNameError, match="source"):
        latent_generate(receiver, tok, PROMPTS, states, source="noise")
    rows = rows_of(["x", "y", "z"], states)
    with pytest.raises(UnknownNameError, match="conditions"):
        evaluate_latent_conditions(receiver, tok, rows, conditions=("true", "random"))
    with pytest.raises(DataError, match="at least 2"):
        evaluate_latent_conditions(receiver, tok, rows[:1])
    with pytest.raises(DataError, match="'s1'"):
        evaluate_latent_conditions(receiver, tok, [rows[0], {**rows[1], "plan": None}], conditions=("plan",))
    with pytest.raises(DataError, match=r"sample 's1'.*\(K, 8\)"):  # the shuffled message's own sample is named
        bad = [rows[0], {**rows[1], "hidden_state": torch.randn(2, 5)}]
        evaluate_latent_conditions(receiver, tok, bad, batch_size=1, conditions=("shuffled",))
    with pytest.raises(InputTypeError, match="row 1"):
        evaluate_latent_conditions(receiver, tok, [rows[0], "not a row"], conditions=("true",))


def test_training_mode_restored_and_eval_mode_used(setup):
    receiver, tok, states = setup
    want = latent_generate_ids(receiver, tok, PROMPTS, states, max_new_tokens=6)
    rows = rows_of(["x", "y", "z"], states)
    want_ce = evaluate_latent_conditions(receiver, tok, rows)
    receiver.train()
    try:
        assert latent_generate_ids(receiver, tok, PROMPTS, states, max_new_tokens=6) == want  # dropout was off
        got_ce = evaluate_latent_conditions(receiver, tok, rows, show_progress=True)
        assert receiver.training and receiver.latent_adapter.training and receiver.model.training
    finally:
        receiver.eval()
    assert got_ce == want_ce
