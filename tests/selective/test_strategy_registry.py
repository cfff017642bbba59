"""register_strategy: a strategy added from user code runs on the hosts like a built-in one."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from tests.conftest import conversation_rows, small_lora
from trl_ext import SelectiveConfig, available_strategies, get_trainer, register_strategy
from trl_ext.selective import Mechanism, SelectiveDPOTrainer, SelectiveSFTTrainer, unregister_strategy
from trl_ext.selective.config import STRATEGIES
from trl_ext.selective.registry import get_strategy

WEIGHT = 1e-2


class L2Pull(Mechanism):
    """weight · Σ θ² over the trainable parameters: a term the package does not have."""

    name = "l2_pull"

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def loss(self, host, model, inputs):
        return {"l2_pull": self.weight * sum((p.float() ** 2).sum() for p in host.trainable_parameters().values())}


@pytest.fixture
def l2_pull():
    register_strategy("l2_pull", lambda args: [L2Pull(WEIGHT)], description="test strategy")
    yield "l2_pull"
    unregister_strategy("l2_pull")


def test_a_registered_strategy_trains_and_logs_its_term(tmp_path, tiny_model_path, l2_pull):
    assert available_strategies()[: len(STRATEGIES)] == STRATEGIES and available_strategies()[-1] == l2_pull
    cls = get_trainer(l2_pull)
    assert issubclass(cls, SelectiveSFTTrainer) and cls.strategy == l2_pull
    assert issubclass(get_trainer(l2_pull, base="dpo"), SelectiveDPOTrainer)
    args = SelectiveConfig(
        output_dir=str(tmp_path),
        strategy=l2_pull,
        max_steps=2,
        per_device_train_batch_size=4,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        disable_tqdm=True,
        learning_rate=1e-2,
    )
    trainer = cls(
        model=str(tiny_model_path),
        args=args,
        train_dataset=conversation_rows(16, "add {} and 1", "{}!"),
        proxy_dataset=conversation_rows(8, "be kind {}", "sure, friend {}."),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_path),
        peft_config=small_lora(),
    )
    assert [type(m) for m in trainer.mechanisms] == [L2Pull]
    params = trainer.trainable_parameters().values()
    expected = WEIGHT * sum(p.detach().double().pow(2).sum() for p in params).item()
    trainer.train()
    logged = [h["loss/l2_pull"] for h in trainer.state.log_history if "loss/l2_pull" in h]
    assert len(logged) == 2
    # float32 sum of ~1e4 squares: relative error well below 1e-5
    assert logged[0] == pytest.approx(expected, rel=1e-5)
    assert logged[1] != pytest.approx(expected, rel=1e-5)  # the weights moved after the first step


def test_registration_errors(tmp_path, l2_pull):
    with pytest.raises(ValueError, match="'l2_pull' is already registered"):
        register_strategy(l2_pull, lambda args: [])
    register_strategy(l2_pull, lambda args: [L2Pull(0.0)], overwrite=True)
    assert get_strategy(l2_pull).build(None)[0].weight == 0.0
    with pytest.raises(ValueError, match="'kl_divergence' is a built-in strategy"):
        register_strategy("kl_divergence", lambda args: [], overwrite=True)
    with pytest.raises(ValueError, match="snake_case"):
        register_strategy("My Strategy", lambda args: [])
    with pytest.raises(ValueError, match="'ppo' is the name of a plain trainer"):
        register_strategy("ppo", lambda args: [])
    with pytest.raises(TypeError, match="build must be callable"):
        register_strategy("not_callable", 3)
    with pytest.raises(ValueError, match="built in and cannot be unregistered"):
        unregister_strategy("naive")
    with pytest.raises(ValueError, match=r"unknown strategy 'l2_push'; known strategies: naive, .*, l2_pull"):
        SelectiveConfig(output_dir=str(tmp_path), strategy="l2_push")

    @register_strategy("decorated")
    def _decorated(args):
        return [torch.nn.Linear(1, 1)]  # not a Mechanism

    try:
        config = SelectiveConfig(output_dir=str(tmp_path), strategy="decorated", use_cpu=True, bf16=False)
        from trl_ext.selective.registry import build_mechanisms

        with pytest.raises(TypeError, match="every item must be a trl_ext Mechanism"):
            build_mechanisms(config)
    finally:
        unregister_strategy("decorated")
    assert "decorated" not in available_strategies()
