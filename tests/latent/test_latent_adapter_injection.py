"""The latent adapter (shapes, initial scales, clamp, padding, input projection, save/load) and the injection
(positions, masks and labels on a hand-built sample; the mixing lengths of each ratio; the ratio schedules)."""

from __future__ import annotations

import math

import pytest
import torch

from trl_ext.common.errors import ConfigError, DataError, MissingPathError, UnknownNameError
from trl_ext.latent.adapter import ADAPTER_CONFIG, ADAPTER_WEIGHTS, LatentAdapter, LatentAdapterConfig
from trl_ext.latent.injection import DEFAULT_MIX_RATIOS, MixSchedule, mix_message, splice_message


def _adapter(**kw):
    torch.manual_seed(0)
    return LatentAdapter(LatentAdapterConfig(hidden_size=16, num_heads=4, dropout=0.0, **kw)).eval()


def test_adapter_shapes_initial_scales_and_formula():
    adapter = _adapter()
    assert adapter.scale.item() == pytest.approx(0.2) and adapter.out_scale.item() == pytest.approx(0.1)
    assert adapter.w2.weight.std().item() < 5e-3 and adapter.w2.bias.abs().max().item() == 0.0
    h = torch.randn(3, 5, 16)
    out = adapter(h)
    assert out.shape == (3, 5, 16) and out.dtype == h.dtype
    # the formula, step by step with the module's own layers
    x = adapter.norm_in(h)
    a, _ = adapter.attention(x, x, x, need_weights=False)
    r = adapter.scale * adapter.norm_attn(x + a)
    want = (r + adapter.w2(adapter.norm_mlp(torch.nn.functional.gelu(adapter.w1(r))))) * adapter.out_scale
    torch.testing.assert_close(out, want.clamp(-10, 10))
    assert adapter(h[0]).shape == (5, 16)  # a single message
    with pytest.raises(ValueError, match=r"\(B, K, 16\)"):
        adapter(torch.randn(2, 5, 8))


def test_adapter_clamp_padding_and_projection():
    adapter = _adapter()
    with torch.no_grad():
        adapter.out_scale.fill_(1e4)
    out = adapter(torch.randn(2, 4, 16))
    assert out.abs().max().item() == pytest.approx(10.0)
    adapter = _adapter()
    h = torch.randn(2, 4, 16)
    pad = torch.tensor([[False, False, True, True], [True, True, True, True]])
    out = adapter(h, key_padding_mask=pad)
    assert torch.isfinite(out).all() and out[0, 2:].abs().max().item() == 0.0 and out[1].abs().max().item() == 0.0
    # padding does not change the real positions: the same as the unpadded message alone
    torch.testing.assert_close(out[0, :2], adapter(h[0, :2]), rtol=1e-5, atol=1e-6)
    projected = _adapter(sender_hidden_size=24)
    assert projected.input_projection is not None and projected(torch.randn(2, 3, 24)).shape == (2, 3, 16)
    with pytest.raises(ConfigError, match="must divide"):
        LatentAdapterConfig(hidden_size=18, num_heads=4)


def test_adapter_save_load_gives_the_same_outputs(tmp_path):
    adapter = _adapter(sender_hidden_size=24)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.01 * torch.randn_like(p))
    adapter.save_pretrained(tmp_path)
    assert (tmp_path / ADAPTER_WEIGHTS).is_file() and (tmp_path / ADAPTER_CONFIG).is_file()
    loaded = LatentAdapter.from_pretrained(tmp_path).eval()
    h = torch.randn(2, 3, 24)
    torch.testing.assert_close(loaded(h), adapter(h), rtol=0, atol=0)
    with pytest.raises(MissingPathError, match=ADAPTER_WEIGHTS):
        LatentAdapter.from_pretrained(tmp_path / "nothing")


def test_mixing_lengths_for_each_ratio():
    latents, plan = torch.randn(10, 4), torch.randn(7, 4)
    for r in DEFAULT_MIX_RATIOS + (0.0, 1.0):
        m = mix_message(latents, plan, r)
        k, p = round(10 * r), round(7 * r)
        assert m.shape == (k + 7 - p, 4)
        torch.testing.assert_close(m[:k], latents[:k])
        torch.testing.assert_close(m[k:], plan[p:])
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        mix_message(latents, plan, 1.5)


def test_mix_schedules():
    s = MixSchedule(seed=3)
    draws = [s.draw(4) for _ in range(50)]
    assert {r for d in draws for r in d} == set(DEFAULT_MIX_RATIOS)  # fresh ratios at every forward
    assert len({tuple(d) for d in draws}) > 10
    copy = MixSchedule(seed=99)
    copy.load_state_dict(s.state_dict())
    assert copy.draw(6) == s.draw(6)  # the state resumes the stream
    lin = MixSchedule([0.8, 0.2, 0.5], "linear")
    assert [lin.draw(1, p)[0] for p in (0.0, 0.4, 0.7, 1.0)] == [0.2, 0.5, 0.8, 0.8]
    with pytest.raises(UnknownNameError, match="mix_schedule"):
        MixSchedule(schedule="cosine")


def test_splice_positions_masks_and_labels():
    embed = torch.nn.Embedding(20, 3)
    marker, bop, eop = 17, 18, 19
    # row 0: prompt 1 2 <marker> 3, answer 4 5 (labels only on the answer); row 1: shorter, padded with 0
    ids = torch.tensor([[1, 2, marker, 3, 4, 5], [6, marker, 7, 8, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    labels = torch.tensor([[-100, -100, -100, -100, 4, 5], [-100, -100, -100, 8, -100, -100]])
    messages = [torch.full((2, 3), 0.5), torch.full((3, 3), -0.5)]
    out = splice_message(ids, mask, labels, embed, marker, bop, eop, messages)
    assert out.spans == [(2, 6), (1, 6)]
    # row 0: e(1) e(2) e(bop) M M e(eop) e(3) e(4) e(5)  (the marker is gone)
    e = embed.weight
    want0 = torch.stack([e[1], e[2], e[bop], messages[0][0], messages[0][1], e[eop], e[3], e[4], e[5]])
    torch.testing.assert_close(out.inputs_embeds[0], want0)
    assert out.labels[0].tolist() == [-100, -100, -100, -100, -100, -100, -100, 4, 5]
    assert out.attention_mask[0].tolist() == [1] * 9
    # row 1: e(6) e(bop) M M M e(eop) e(7) e(8), then padding
    assert out.labels[1].tolist() == [-100] * 7 + [8, -100]
    assert out.attention_mask[1].tolist() == [1] * 8 + [0]
    torch.testing.assert_close(out.inputs_embeds[1, 2:5], messages[1])
    assert out.inputs_embeds[1, 8].abs().sum().item() == 0.0
    with pytest.raises(DataError, match="'s1'.*exactly once, found 0"):
        splice_message(ids[1:, :].masked_fill(ids[1:] == marker, 9), mask[1:], labels[1:], embed, marker, bop, eop,
                       messages[1:], row_ids=["s1"])  # fmt: skip
    assert math.isfinite(out.inputs_embeds.sum().item())
