"""LatentReceiver on the tiny model: the spliced forward equals a hand-built inputs_embeds forward, gradients reach
the adapter and the model, the plan source is the plan's embeddings, mixing changes the message length."""

from __future__ import annotations

import pytest
import torch

from trl_ext.common.errors import UnknownNameError
from trl_ext.latent.adapter import LatentAdapter, LatentAdapterConfig
from trl_ext.latent.collator import LatentCollator
from trl_ext.latent.injection import BOP, EOP, FIRST_HUMAN_END, add_latent_tokens
from trl_ext.latent.receiver import LatentReceiver

TURNS = [{"role": "user", "content": "Where is the key?"}, {"role": "assistant", "content": "Under the mat."}]


@pytest.fixture()
def setup(tiny_model_path):
    from trl_ext.models import load_causal_lm, load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(str(tiny_model_path))
    model = load_causal_lm(str(tiny_model_path))
    ids = add_latent_tokens(tok, model)
    adapter = LatentAdapter(
        LatentAdapterConfig(hidden_size=model.config.hidden_size, sender_hidden_size=8, num_heads=4)
    )
    receiver = LatentReceiver(model, adapter, ids).eval()
    items = [
        {"id": "a", "messages": TURNS, "plan": "look under the mat", "hidden_state": torch.randn(3, 8)},
        {"id": "b", "messages": TURNS, "plan": "check the mat", "hidden_state": torch.randn(2, 8)},
    ]
    return receiver, tok, LatentCollator(tok)(items)


def test_forward_matches_a_hand_built_input(setup):
    receiver, tok, batch = setup
    inputs = {k: v for k, v in batch.items() if k != "ids"}
    logits, labels, spliced = receiver(**inputs)
    assert logits.shape[:2] == labels.shape and logits.shape[0] == 2
    # row 0 by hand: embeddings of the tokens before the marker, <bop>, adapter(H), <eop>, the rest
    model, embed = receiver.model, receiver.model.get_input_embeddings()
    ids = batch["input_ids"][0, : int(batch["attention_mask"][0].sum())]
    p = int((ids == tok.convert_tokens_to_ids(FIRST_HUMAN_END)).nonzero()[0, 0])
    message = receiver.latent_adapter(batch["hidden_states"][0, :3])
    special = embed(torch.tensor([tok.convert_tokens_to_ids(BOP), tok.convert_tokens_to_ids(EOP)]))
    x = torch.cat([embed(ids[:p]), special[:1], message, special[1:], embed(ids[p + 1 :])])[None]
    want = model(inputs_embeds=x).logits[0, :-1]
    torch.testing.assert_close(logits[0, : want.shape[0]], want, rtol=1e-4, atol=1e-5)
    assert spliced.spans[0] == (p, p + 5) and (labels[0] != -100).sum() == (batch["labels"][0] != -100).sum()
    # gradients reach the adapter and the model
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    loss.backward()
    assert receiver.latent_adapter.w1.weight.grad.abs().sum() > 0 and embed.weight.grad.abs().sum() > 0


def test_plan_source_and_mixing(setup):
    receiver, tok, batch = setup
    plans = receiver.messages("plan", plan_ids=batch["plan_ids"], plan_mask=batch["plan_mask"])
    n_plan = int(batch["plan_mask"][0].sum())
    torch.testing.assert_close(plans[0], receiver.model.get_input_embeddings()(batch["plan_ids"][0, :n_plan]))
    mixed = receiver.messages("latent", batch["hidden_states"], batch["latent_padding"], batch["plan_ids"],
                              batch["plan_mask"], ratios=[0.5, 0.0])  # fmt: skip
    assert mixed[0].shape[0] == round(3 * 0.5) + n_plan - round(n_plan * 0.5)
    torch.testing.assert_close(mixed[1], plans[1])  # ratio 0: the whole plan
    with pytest.raises(UnknownNameError, match="source"):
        receiver.messages("noise")


def test_none_source_inserts_an_empty_message(setup):
    receiver, tok, batch = setup
    inputs = {k: v for k, v in batch.items() if k != "ids"}
    empty = receiver.messages("none", num_rows=2)
    assert len(empty) == 2 and all(m.shape == (0, receiver.model.config.hidden_size) for m in empty)
    logits, labels, spliced = receiver(**inputs, source="none")
    embed = receiver.model.get_input_embeddings()
    for i in range(2):
        length = int(batch["attention_mask"][i].sum())
        ids = batch["input_ids"][i, :length]
        p = int((ids == tok.convert_tokens_to_ids(FIRST_HUMAN_END)).nonzero()[0, 0])
        # the marker is dropped and <bop><eop> inserted: T − 1 + 2 positions, the same supervised tokens in order
        assert int(spliced.attention_mask[i].sum()) == length - 1 + 2 and spliced.spans[i] == (p, p + 2)
        kept = spliced.labels[i][spliced.labels[i] != -100]
        assert torch.equal(kept, batch["labels"][i][batch["labels"][i] != -100])
        special = embed(torch.tensor([tok.convert_tokens_to_ids(BOP), tok.convert_tokens_to_ids(EOP)]))
        x = torch.cat([embed(ids[:p]), special, embed(ids[p + 1 :])])[None]
        want = receiver.model(inputs_embeds=x).logits[0, :-1]
        torch.testing.assert_close(logits[i, : want.shape[0]], want, rtol=1e-4, atol=1e-5)
