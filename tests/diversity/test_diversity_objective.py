"""The batch objective and the trainer's helpers against direct computations: block table, cells and rewards,
diversity_objective (groups, concepts, reductions, TB), top-p renormalisation, k2/k3, stop strings, log Z's Adam,
the schedules with a final learning rate, and the config's document flags."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from trl_ext.common.errors import ConfigError, UnknownNameError
from trl_ext.common.schedules import floor_schedule, floor_schedule_factor
from trl_ext.diversity import Block, Concept, DiversityConfig, LogPartition, block_table, diversity_objective
from trl_ext.diversity.objective import (
    ROLE_CONCEPT,
    ROLE_FOLLOWING,
    ROLE_OTHER,
    cell_log_rewards,
    k2_k3,
    stop_string_cut,
    top_p_renormalized_logps,
)

ANIMAL = Concept("animal", ["cat", "dog"])
PLACE = Concept("place", ["park", "home", "sea"])


def _rows():
    """Six completions of two prompts: blocks by hand (token positions in a (6, 8) log-prob matrix)."""
    c = lambda s, e, o, k="animal": Block("concept", s, e, option=o, concept=k)  # noqa: E731
    o = lambda s, e: Block("open", s, e)  # noqa: E731
    return [
        [o(0, 1), c(1, 2, "cat"), o(2, 5)],
        [c(0, 2, "dog"), o(2, 4), c(4, 5, "sea", "place"), o(5, 8)],
        [o(0, 3), c(3, 4, "cat"), o(4, 6)],
        [o(0, 8)],
        [c(0, 1, "dog"), o(1, 3)],
        [o(0, 2), c(2, 3, "park", "place"), o(3, 6)],
    ]


def test_block_table_encodes_roles_options_and_padding():
    table = block_table(_rows(), [ANIMAL, PLACE], width=5)
    assert table.shape == (6, 5, 6)
    assert table[0].tolist()[:3] == [[0, 1, 2, -1, ROLE_OTHER, -1], [1, 2, 0, 0, ROLE_CONCEPT, -1],
                                     [2, 5, 0, 0, ROLE_FOLLOWING, -1]]  # fmt: skip
    # completion 1: the open block after "dog" follows concept 0 / option 1; after "sea" concept 1 / option 2
    assert table[1, 1].tolist() == [2, 4, 0, 1, ROLE_FOLLOWING, -1]
    assert table[1, 3].tolist() == [5, 8, 1, 2, ROLE_FOLLOWING, -1]
    assert table[3, 1:, 2].tolist() == [-1] * 4  # padding rows
    with pytest.raises(ValueError, match="more than the table width"):
        block_table(_rows(), [ANIMAL, PLACE], width=2)


def _numpy_kl(masses: list[float], n: int) -> float:
    p = np.asarray(masses, dtype=np.float64) / sum(masses)
    return float(sum(x * math.log(x * n) for x in p if x > 0))


def test_objective_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    logps = torch.tensor(rng.uniform(-3.0, -0.1, size=(6, 8)), dtype=torch.float64)
    mask = torch.ones(6, 8)
    table = block_table(_rows(), [ANIMAL, PLACE])
    # cluster labels of the following blocks (K = 2): cat 0 -> 0, cat 2 -> 1, dog 1 -> 1, dog 4 -> 1, sea -> 0
    for row, j, k in [(0, 2, 0), (2, 2, 1), (1, 1, 1), (4, 1, 1), (1, 3, 0), (5, 2, 1)]:
        table[row, j, 5] = k
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    lp = logps.numpy()

    def block(row, s, e, mean=False):
        v = lp[row, s:e].sum()
        return v / (e - s) if mean else v

    for reduction in ("sum", "weighted"):
        result = diversity_objective(
            logps, mask, table, groups, [2, 3], n_clusters=2, w_c=0.3, w_o=0.7, open_block_reduction=reduction
        )
        # group 0: animal blocks cat(0), dog(1), cat(2); place block sea(1). group 1: dog(4) (animal), park(5).
        m_g0 = [math.exp(block(0, 1, 2)) + math.exp(block(2, 3, 4)), math.exp(block(1, 0, 2))]
        lc = [_numpy_kl(m_g0, 2), _numpy_kl([1.0], 3), _numpy_kl([1.0], 2), _numpy_kl([1.0], 3)]
        p_g0 = np.asarray(m_g0) / sum(m_g0)
        # open blocks, group 0 animal: cat -> clusters {0: row 0, 1: row 2}, dog -> {1: row 1}
        cat = _numpy_kl([math.exp(block(0, 2, 5, True)), math.exp(block(2, 4, 6, True))], 2)
        dog = _numpy_kl([math.exp(block(1, 2, 4, True))], 2)  # one cluster observed: log 2
        lo_g0 = cat + dog if reduction == "sum" else p_g0[0] * cat + p_g0[1] * dog
        lo_place_g0 = _numpy_kl([1.0], 2)  # one block, one cluster: log 2, weight P̂(sea) = 1
        lo_g1_animal = _numpy_kl([1.0], 2)
        lo_place_g1 = _numpy_kl([1.0], 2)
        lo = [lo_g0, lo_place_g0, lo_g1_animal, lo_place_g1]
        want = 0.3 * np.mean(lc) + 0.7 * np.mean(lo)
        assert float(result.loss) == pytest.approx(want, rel=1e-10)
        assert float(result.concept) == pytest.approx(np.mean(lc), rel=1e-10)
        torch.testing.assert_close(result.concept_shares[(0, 0)], torch.tensor(p_g0), rtol=1e-10, atol=0)


def test_objective_unclustered_options_and_tb():
    logps = torch.full((6, 8), -1.0, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(6, 8)
    table = block_table(_rows(), [ANIMAL, PLACE])  # clusters all -1
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    result = diversity_objective(logps, mask, table, groups, [2, 3], n_clusters=2)
    assert float(result.open_block.detach()) == 0.0 and result.unclustered == {(0, 0), (0, 1), (1, 2), (1, 0)}
    result.loss.backward()  # the zero stays in the graph
    log_r = cell_log_rewards(table, groups, 2)
    # group 0: cells (cat,-), (dog,sea), (cat,-): n = 3 -> log(3/2), log 3, log(3/2); group 1: no match -> 0
    assert log_r.tolist() == pytest.approx([math.log(1.5), math.log(3), math.log(1.5), 0.0, math.log(3), math.log(3)])
    log_z = torch.tensor([0.5, -2.0], dtype=torch.float64)
    tb = diversity_objective(
        logps.detach(), mask, table, groups, [2, 3], n_clusters=2, loss_type="tb", log_z=log_z, log_rewards=log_r
    )
    seq = -8.0
    want = np.mean([(log_z[g].item() + seq - r) ** 2 for g, r in zip(groups.tolist(), log_r.tolist())])
    assert float(tb.loss) == pytest.approx(want, rel=1e-12) and float(tb.tb) == float(tb.loss)
    with pytest.raises(ConfigError, match="log_z"):
        diversity_objective(logps, mask, table, groups, [2, 3], n_clusters=2, loss_type="tb")


def test_top_p_renormalized_logps_match_the_nucleus():
    rng = np.random.default_rng(1)
    logits = torch.tensor(rng.normal(size=(2, 3, 7)), dtype=torch.float32)
    ids = torch.tensor(rng.integers(0, 7, size=(2, 3)))
    renorm, plain = top_p_renormalized_logps(logits, ids, top_p=0.8, temperature=0.7)
    for b in range(2):
        for t in range(3):
            p = np.exp(logits[b, t].double().numpy() / 0.7)
            p /= p.sum()
            order = np.argsort(p)  # ascending, as TopPLogitsWarper
            removed = np.cumsum(p[order]) <= 1 - 0.8
            removed[-1] = False
            kept = p[order][~removed].sum()
            assert plain[b, t].item() == pytest.approx(math.log(p[ids[b, t]]), abs=1e-5)
            assert renorm[b, t].item() == pytest.approx(math.log(p[ids[b, t]]) - math.log(kept), abs=1e-5)
    same, _ = top_p_renormalized_logps(logits, ids, top_p=1.0, temperature=0.7)
    torch.testing.assert_close(same, plain)


def test_k2_k3():
    d = torch.tensor([-0.5, 0.0, 0.3], requires_grad=True)
    k2, k3 = k2_k3(d, torch.zeros(3))
    assert k2.tolist() == pytest.approx([0.125, 0.0, 0.045])
    assert k3.tolist() == pytest.approx([math.exp(0.5) - 1.5, 0.0, math.exp(-0.3) - 0.7])
    k2.sum().backward()
    assert d.grad.tolist() == pytest.approx([-0.5, 0.0, 0.3])  # d ∇ log p


def test_stop_string_cut():
    vocab = {1: "I", 2: " like", 3: " cats", 4: ".\n", 5: " more", 6: "\n"}
    decode = lambda ids: "".join(vocab[i] for i in ids)  # noqa: E731
    assert stop_string_cut([1, 2, 3, 4, 5], decode, ["\n"]) == 4  # up to and including the token with "\n"
    assert stop_string_cut([1, 2, 3, 5], decode, ["\n"]) == 4  # no stop string: all tokens
    assert stop_string_cut([6, 1], decode, ["\n", ".\n"]) == 1
    assert stop_string_cut([1, 2, 3], decode, []) == 3 and stop_string_cut([], decode, ["\n"]) == 0


def test_log_partition_is_adam():
    lz = LogPartition(lr=0.05, init=None)
    i, j = lz.index("a"), lz.index("b")
    assert lz.needs_init(i)
    lz.initialize(i, 1.0)
    lz.initialize(j, -2.0)
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = torch.optim.Adam([param], lr=0.05)
    for g in ([0.3, -1.0], [0.1, 2.0], [-0.7, 0.5]):
        lz.step([i, j], torch.tensor(g))
        param.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    assert lz.values == pytest.approx(param.detach().tolist(), rel=1e-8)
    with pytest.raises(ValueError, match="already trained"):
        lz.initialize(i, 0.0)
    copy = LogPartition()
    copy.load_state_dict(lz.state_dict())
    assert copy.values == lz.values and copy.index("b") == j
    fresh = LogPartition()  # kl runs keep uninitialised entries (None) in their checkpoints
    fresh.index("p")
    again = LogPartition()
    again.load_state_dict(json.loads(json.dumps(fresh.state_dict())))
    assert again.needs_init(0)


def test_floor_schedules():
    for s in range(0, 11):
        want_cos = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * max(0, s - 2) / 8)) if s >= 2 else s / 2
        assert floor_schedule_factor(s, "cosine", 2, 10, 0.1) == pytest.approx(want_cos)
        assert floor_schedule_factor(s, "linear", 0, 10, 0.25) == pytest.approx(0.25 + 0.75 * (1 - s / 10))
        assert floor_schedule_factor(s, "constant", 0, 10, 0.25) == 1.0
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = floor_schedule(opt, "linear", 0, 4, 0.5)
    rates = []
    for _ in range(4):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates + [opt.param_groups[0]["lr"]] == pytest.approx([2.0, 1.75, 1.5, 1.25, 1.0])
    with pytest.raises(UnknownNameError, match="polynomial"):
        floor_schedule(opt, "polynomial", 0, 4, 0.5)
    with pytest.raises(ConfigError, match="final_learning_rate"):
        floor_schedule(opt, "cosine", 0, 4, 1.5)


def test_config_document_flags(tmp_path):
    args = DiversityConfig(
        output_dir=str(tmp_path), prompt=["a", "b"], concept_name="animal", concept_options=["cat", "dog"],
        batch_size=32, max_new_tokens=12, num_epochs=3, num_steps_per_epoch=5, use_cpu=True, report_to="none",
        use_wandb=True, wandb_name="run", gradient_accumulation_steps=4,
    )  # fmt: skip
    assert args.prompts == ["a", "b"] and args.max_completion_length == 12
    assert args.per_device_train_batch_size == 8 and args.num_generations == 16  # 32 / (1 process × 4 acc.), 32 / 2
    assert args.max_steps == 15 and args.report_to == ["wandb"] and args.run_name == "run"
    with pytest.raises(ConfigError, match="multiple"):
        DiversityConfig(output_dir=str(tmp_path), batch_size=30, gradient_accumulation_steps=4, use_cpu=True)
    with pytest.raises(UnknownNameError, match="loss_type"):
        DiversityConfig(output_dir=str(tmp_path), loss_type="ppo", use_cpu=True)
    with pytest.raises(ConfigError, match="both 0"):
        DiversityConfig(output_dir=str(tmp_path), w_c=0, w_o=0, use_cpu=True)
    with pytest.raises(ConfigError, match="not both"):
        DiversityConfig(
            output_dir=str(tmp_path), concepts=[{"name": "x", "options": ["a"]}], concept_name="y", use_cpu=True
        )
