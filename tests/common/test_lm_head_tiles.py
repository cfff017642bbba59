"""The vocabulary tile of TRL's fused LM head: same numbers at any width, set only around PPO's forwards."""

from __future__ import annotations

import pytest
import torch
import trl.trainer.utils as trl_utils
from transformers import AutoModelForCausalLM, TrainerCallback

from trl_ext import PPOConfig
from trl_ext.common import lm_head_tiles
from trl_ext.common.lm_head_tiles import DEFAULT_TILE_WITHOUT_TRITON, resolve_vocab_tile, vocab_tile

TRL_WIDTH = trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE


def _fused_outputs(model, input_ids, labels, width):
    model.zero_grad(set_to_none=True)
    with vocab_tile(width):
        out = model(input_ids=input_ids, labels=labels, fused_lm_head=True)
    (out.log_probs.sum() + 0.5 * out.entropy.sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.log_probs.detach(), out.entropy.detach(), grads


def test_tile_width_gives_the_same_logps_entropy_and_gradients(tiny_model_path):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path).float()
    trl_utils.add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    vocab = model.config.vocab_size
    input_ids = torch.randint(0, vocab, (3, 12))
    labels = input_ids.clone()
    labels[:, :4] = -100  # a prompt: not scored

    # independent: full logits through the model's own forward
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits[:, :-1].float()
    logp_all = logits.log_softmax(-1)
    expected_logps = logp_all.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    expected_entropy = -(logp_all.exp() * logp_all).sum(-1)
    scored = labels[:, 1:] != -100

    ref_logps, ref_entropy, ref_grads = _fused_outputs(model, input_ids, labels, None)
    for width in (DEFAULT_TILE_WITHOUT_TRITON, 100, 7):
        assert vocab > width  # several tiles
        logps, entropy, grads = _fused_outputs(model, input_ids, labels, width)
        torch.testing.assert_close(logps[scored], expected_logps[scored], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(entropy[scored], expected_entropy[scored], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(logps, ref_logps, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(entropy, ref_entropy, atol=1e-6, rtol=1e-6)
        assert grads.keys() == ref_grads.keys() and len(grads) > 0
        for name in grads:
            torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_vocab_tile_sets_and_restores_the_width():
    with vocab_tile(64):
        assert trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE == 64
    assert trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE == TRL_WIDTH
    with pytest.raises(RuntimeError, match="boom"), vocab_tile(32):
        raise RuntimeError("boom")
    assert trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE == TRL_WIDTH
    with vocab_tile(None):
        assert trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE == TRL_WIDTH


def test_resolve_vocab_tile(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_vocab_tile(None, cpu) == DEFAULT_TILE_WITHOUT_TRITON
    assert resolve_vocab_tile(128, cpu) == 128
    with pytest.raises(ValueError, match="lm_head_vocab_tile"):
        resolve_vocab_tile(0, cpu)
    monkeypatch.setattr(lm_head_tiles, "folds_with_triton", lambda device: True)
    assert resolve_vocab_tile(None, cpu) is None  # Triton folds the tiles: TRL's width
    assert resolve_vocab_tile(512, cpu) == 512  # an explicit width applies everywhere
    monkeypatch.delattr(trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE")
    assert resolve_vocab_tile(None, cpu) is None
    with pytest.raises(ValueError, match="has no trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE"):
        resolve_vocab_tile(256, cpu)


def test_config_rejects_a_non_positive_tile(tmp_path):
    with pytest.raises(ValueError, match="lm_head_vocab_tile"):
        PPOConfig(output_dir=str(tmp_path), lm_head_vocab_tile=0)


@pytest.mark.parametrize("requested, expected", [(None, DEFAULT_TILE_WITHOUT_TRITON), (100, 100)])
def test_ppo_forwards_run_with_the_tile(tmp_path, tiny_model_path, requested, expected):
    from tests.ppo.test_ppo_trainer import _trainer

    seen: list[int] = []

    class Record(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            model.register_forward_pre_hook(lambda *_: seen.append(trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE))

    trainer = _trainer(tmp_path, tiny_model_path, max_steps=2, lm_head_vocab_tile=requested)
    trainer.add_callback(Record())
    trainer.train()
    # the whole of train() runs at the tile: generation, the rollout forward and both training mini-batches
    assert len(seen) >= 3
    assert set(seen) == {expected}
    assert trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE == TRL_WIDTH


def _sft_losses(trainer_cls, tmp_path, model_path, seen=None):
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig

    rows = [{"text": f"count {i} {i + 1} {i + 2} {i + 3}"} for i in range(32)]
    args = SFTConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        max_steps=4,
        learning_rate=1e-3,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = trainer_cls(
        model=str(model_path),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(model_path),
    )
    if seen is not None:
        trainer.model.register_forward_pre_hook(lambda *_: seen.append(trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE))
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def test_mixin_runs_sft_at_the_tile_with_the_same_losses(tmp_path, tiny_model_path):
    from trl import SFTTrainer

    from trl_ext.common.lm_head_tiles import LMHeadTileMixin

    class TiledSFTTrainer(LMHeadTileMixin, SFTTrainer):
        pass

    seen: list[int] = []
    tiled = _sft_losses(TiledSFTTrainer, tmp_path / "tiled", tiny_model_path, seen)
    plain = _sft_losses(SFTTrainer, tmp_path / "plain", tiny_model_path)
    assert set(seen) == {DEFAULT_TILE_WITHOUT_TRITON}  # an SFTConfig has no field: the automatic width
    assert len(tiled) == len(plain) == 4
    # the first step sees the same weights: equal to fp32 rounding; later steps drift by the order of the fp32 sums
    assert tiled[0] == pytest.approx(plain[0], rel=1e-6)
    for a, b in zip(tiled, plain):
        assert a == pytest.approx(b, rel=1e-3)
    assert trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE == TRL_WIDTH


def test_every_trl_ext_trainer_and_config_has_the_tile():
    from trl_ext import (
        CurriculumDPOConfig,
        CurriculumDPOTrainer,
        CurriculumGRPOConfig,
        CurriculumGRPOTrainer,
        CurriculumPPOConfig,
        CurriculumPPOTrainer,
        CurriculumSFTConfig,
        CurriculumSFTTrainer,
        PPOTrainer,
        SelectiveConfig,
        SelectiveDPOConfig,
        SelectiveDPOTrainer,
        SelectiveSFTTrainer,
    )
    from trl_ext.common.lm_head_tiles import LMHeadTileMixin
    from trl_ext.selective.ppo import SelectivePPOConfig, SelectivePPOTrainer

    trainers = (PPOTrainer, SelectiveSFTTrainer, SelectiveDPOTrainer, SelectivePPOTrainer, CurriculumSFTTrainer)
    trainers += (CurriculumDPOTrainer, CurriculumGRPOTrainer, CurriculumPPOTrainer)
    for cls in trainers:
        assert issubclass(cls, LMHeadTileMixin), cls.__name__
    configs = (PPOConfig, SelectiveConfig, SelectiveDPOConfig, SelectivePPOConfig, CurriculumSFTConfig)
    configs += (CurriculumDPOConfig, CurriculumGRPOConfig, CurriculumPPOConfig)
    for cls in configs:
        assert "lm_head_vocab_tile" in cls.__dataclass_fields__, cls.__name__
    with pytest.raises(ValueError, match="lm_head_vocab_tile"):
        SelectiveConfig(output_dir="x", strategy="naive", lm_head_vocab_tile=-1)
