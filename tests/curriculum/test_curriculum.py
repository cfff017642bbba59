"""Auto-curriculum pieces without a trainer: update rules, difficulty statistics, the sampler, the frozen model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from trl_ext.curriculum.difficulty import RollingFrozenModel
from trl_ext.curriculum.sampler import CurriculumSampler
from trl_ext.curriculum.weights import check_weights, difficulty_statistics, update_weights

# ---------------------------------------------------------------------- update rules


def test_centered_update_hand_worked():
    """w = 1/3 each, m = (1, 2, 4), η = 0.1: g = m − 7/3 = (−4/3, −1/3, 5/3) → w = (0.2, 0.3, 0.5)."""
    w = update_weights([1 / 3] * 3, [1.0, 2.0, 4.0], eta=0.1, update="centered")
    np.testing.assert_allclose(w, [0.2, 0.3, 0.5], atol=1e-12)


def test_index_gradient_update_hand_worked():
    """np.gradient((1, 2, 4)) = (1, 1.5, 2): w + 0.1 g = (0.4333, 0.4833, 0.5333), normalised by 1.45."""
    w = update_weights([1 / 3] * 3, [1.0, 2.0, 4.0], eta=0.1, update="index_gradient")
    np.testing.assert_allclose(w, np.array([1 / 3 + 0.1, 1 / 3 + 0.15, 1 / 3 + 0.2]) / 1.45, atol=1e-12)
    np.testing.assert_allclose(w, [0.298851, 0.333333, 0.367816], atol=1e-6)


def test_index_gradient_depends_on_order_centered_does_not():
    m = np.array([3.0, 1.0, 2.0])
    perm = [2, 0, 1]
    c = update_weights([1 / 3] * 3, m, eta=0.2)
    c_perm = update_weights([1 / 3] * 3, m[perm], eta=0.2)
    np.testing.assert_allclose(c[perm], c_perm)
    i = update_weights([1 / 3] * 3, m, eta=0.2, update="index_gradient")
    i_perm = update_weights([1 / 3] * 3, m[perm], eta=0.2, update="index_gradient")
    assert not np.allclose(i[perm], i_perm)


def test_clip_and_min_weight():
    """w = (0.5, 0.5), m = (0, 10), η = 0.2: w + ηg = (−0.5, 1.5) → clip → (0, 1); floor 0.1 → (0.1, 1.5)/1.6."""
    np.testing.assert_allclose(update_weights([0.5, 0.5], [0.0, 10.0], eta=0.2), [0.0, 1.0])
    np.testing.assert_allclose(update_weights([0.5, 0.5], [0.0, 10.0], eta=0.2, min_weight=0.1), [0.0625, 0.9375])


def test_all_weights_clipped_is_an_error():
    """np.gradient((10, 0)) = (−10, −10): every w + ηg is negative."""
    with pytest.raises(ValueError, match="every curriculum weight would be clipped to zero.*easy: -0.5"):
        update_weights([0.5, 0.5], [10.0, 0.0], eta=0.1, update="index_gradient", names=["easy", "hard"])


def test_update_errors():
    with pytest.raises(ValueError, match="unknown curriculum update 'sideways'"):
        update_weights([0.5, 0.5], [1.0, 2.0], update="sideways")
    with pytest.raises(ValueError, match="non-finite difficulty for b"):
        update_weights([0.5, 0.5], [1.0, float("nan")], names=["a", "b"])
    with pytest.raises(ValueError, match="2 curriculum weights but 3"):
        update_weights([0.5, 0.5], [1.0, 2.0, 3.0])


def test_check_weights_errors():
    np.testing.assert_allclose(check_weights([1, 3]), [0.25, 0.75])
    with pytest.raises(ValueError, match="weight of 'b' is -1"):
        check_weights([1, -1], ["a", "b"])
    with pytest.raises(ValueError, match="all curriculum weights are zero"):
        check_weights([0, 0])
    with pytest.raises(ValueError, match="2 curriculum weights for 3 datasets"):
        check_weights([1, 1], ["a", "b", "c"])


def test_difficulty_statistics_against_numpy():
    rng = np.random.default_rng(0)
    losses = rng.normal(3.0, 0.5, size=13)
    mu, var, m = difficulty_statistics(losses)
    assert mu == pytest.approx(np.mean(losses))
    assert var == pytest.approx(np.var(losses))  # population variance, ddof 0
    assert m == pytest.approx(np.mean(losses) + np.var(losses))
    assert difficulty_statistics([2.0]) == (2.0, 0.0, 2.0)


# ---------------------------------------------------------------------- sampler


def test_sampler_frequencies_match_weights():
    """Chi-square goodness of fit of the per-dataset counts to w (seeded; p well above 0.001)."""
    w = np.array([0.2, 0.3, 0.5])
    sampler = CurriculumSampler([50, 100, 30], w, num_samples=20_000, seed=3)
    counts = np.bincount([sampler.dataset_of(i) for i in sampler], minlength=3)
    assert counts.sum() == 20_000
    result = stats.chisquare(counts, f_exp=w * counts.sum())
    assert result.pvalue > 0.001, (counts, result)
    # and a wrong w is rejected by the same test
    assert stats.chisquare(counts, f_exp=np.array([1 / 3] * 3) * counts.sum()).pvalue < 1e-6


def test_sampler_walks_permutations_within_a_dataset():
    """Rows of a dataset are drawn without replacement until it is used up: counts differ by at most one."""
    sampler = CurriculumSampler([7, 30], [0.5, 0.5], num_samples=1_000, seed=0)
    indices = list(sampler)
    small = np.bincount([i for i in indices if i < 7], minlength=7)
    large = np.bincount([i - 7 for i in indices if i >= 7], minlength=30)
    assert small.max() - small.min() <= 1 and large.max() - large.min() <= 1
    assert all(0 <= i < 37 for i in indices)


def test_zero_weight_dataset_is_never_drawn():
    sampler = CurriculumSampler([10, 10, 10], [0.5, 0.0, 0.5], num_samples=3_000, seed=1)
    assert not any(10 <= i < 20 for i in sampler)


def test_sampler_is_deterministic_per_seed_and_epoch():
    def draw(seed, epoch):
        s = CurriculumSampler([20, 30], seed=seed)
        s.set_epoch(epoch)
        return list(s)

    assert draw(0, 0) == draw(0, 0)
    assert draw(0, 0) != draw(1, 0)
    assert draw(0, 0) != draw(0, 1)
    assert len(draw(0, 0)) == 50


def test_weight_change_applies_from_the_current_position_and_replays():
    """Weights set mid-epoch apply to later draws only; a fresh sampler loaded with the schedule replays the epoch."""
    sampler = CurriculumSampler([100, 100], [1.0, 0.0], num_samples=200, seed=0)
    it = iter(sampler)
    first = [next(it) for _ in range(50)]
    sampler.set_weights([0.0, 1.0])
    rest = list(it)
    assert all(i < 100 for i in first) and all(i >= 100 for i in rest)
    assert sampler.state_dict()["schedule"][1][0] == [0, 50]

    replay = CurriculumSampler([100, 100], [0.3, 0.7], num_samples=200, seed=0)
    replay.load_state_dict(sampler.state_dict())
    assert list(replay) == first + rest


def test_sampler_keeps_grpo_grouping():
    """mini_repeat_count / batch_size / repeat_count reproduce RepeatSampler's layout."""
    sampler = CurriculumSampler([12, 12], num_samples=12, seed=0, mini_repeat_count=2, batch_size=3, repeat_count=2)
    out = list(sampler)
    assert len(out) == len(sampler) == 12 * 2 * 2
    blocks = [out[i : i + 12] for i in range(0, len(out), 12)]  # one chunk: 3 prompts x 2 generations x 2 repeats
    for block in blocks:
        once = block[:6]
        assert block[6:] == once  # the chunk is repeated
        assert once[0::2] == once[1::2]  # each prompt twice in a row
    assert len({i for b in blocks for i in b[:6:2]}) == 12  # 12 distinct prompts drawn


def test_sampler_errors():
    with pytest.raises(ValueError, match="dataset 'b' is empty"):
        CurriculumSampler([3, 0], names=["a", "b"])
    with pytest.raises(ValueError, match="weight of 'a' is -0.5"):
        CurriculumSampler([3, 3], [-0.5, 1.0], names=["a", "b"])
    sampler = CurriculumSampler([3, 3], names=["a", "b"])
    with pytest.raises(ValueError, match="differ from this run's"):
        sampler.load_state_dict({**sampler.state_dict(), "sizes": [3, 4]})


# ---------------------------------------------------------------------- frozen model


def _tiny_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_frozen_copy_is_constant_between_refreshes_and_equal_after_one(tmp_path):
    net = _tiny_net()
    frozen = RollingFrozenModel("copy")
    frozen.refresh(net, step=0)
    at_refresh = {k: v.clone() for k, v in frozen.state_tensors().items()}
    assert _equal(at_refresh, net.state_dict())
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):
        net(torch.randn(8, 4)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    assert _equal(frozen.state_tensors(), at_refresh)  # unchanged by training
    assert not _equal(frozen.state_tensors(), net.state_dict())
    assert frozen.age(3) == 3
    frozen.refresh(net, step=3)
    assert _equal(frozen.state_tensors(), net.state_dict()) and frozen.age(3) == 0
    x = torch.randn(5, 4)
    with frozen.scoring(net) as scorer:
        assert scorer is not net and torch.equal(scorer(x), net(x).detach())

    frozen.save(tmp_path / "f.safetensors")
    restored = RollingFrozenModel("copy")
    restored.load(tmp_path / "f.safetensors", net, step=3)
    assert _equal(restored.state_tensors(), frozen.state_tensors())


def test_frozen_adapter_swaps_in_and_out(tmp_path, tiny_model_path):
    """PEFT: only adapter tensors are kept; scoring runs the live model with the frozen adapter, then restores it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_path),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    frozen = RollingFrozenModel("auto")
    frozen.refresh(model, step=0)
    assert frozen.resolved_mode(model) == "adapter"
    assert set(frozen.state_tensors()) == {n for n, p in model.named_parameters() if p.requires_grad}
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    before = model(input_ids=ids).logits.detach()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05)
    live = {n: p.detach().clone() for n, p in model.named_parameters()}
    after = model(input_ids=ids).logits.detach()
    assert not torch.allclose(before, after)
    model.train()
    with frozen.scoring(model) as scorer:
        assert scorer is model and not model.training
        torch.testing.assert_close(scorer(input_ids=ids).logits, before)
    assert model.training
    assert _equal({n: p.detach() for n, p in model.named_parameters()}, live)

    frozen.save(tmp_path / "a.safetensors")
    restored = RollingFrozenModel("auto")
    restored.load(tmp_path / "a.safetensors", model, step=0)
    assert _equal(restored.state_tensors(), frozen.state_tensors())
    with pytest.raises(ValueError, match="mode 'adapter', this run uses 'copy'"):
        RollingFrozenModel("copy").load(tmp_path / "a.safetensors", model, step=0)


def test_frozen_model_errors():
    with pytest.raises(ValueError, match="unknown frozen-model mode 'lazy'"):
        RollingFrozenModel("lazy")
    with pytest.raises(RuntimeError, match="never refreshed"):
        with RollingFrozenModel().scoring(_tiny_net()):
            pass
