"""The embedded tiny model: builds offline, reloads, tokenises losslessly, works with chat templates."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.conftest import run_script
from trl_ext.models import TinyModelConfig, build_tiny_model, get_tiny_model_path


def test_cached_build_reloads_and_generates(tiny_model_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    assert model.config.model_type == "qwen2"
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert model.config.vocab_size == len(tok)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|pad|>"
    assert model.config._name_or_path == str(tiny_model_path)  # TRL reloads the reference from here
    out = model.generate(**tok("hello", return_tensors="pt"), max_new_tokens=5, do_sample=False)
    assert out.shape[1] > 1
    # the second call returns the cached folder without rebuilding it
    mtime = (tiny_model_path / "model.safetensors").stat().st_mtime_ns
    assert get_tiny_model_path() == tiny_model_path
    assert (tiny_model_path / "model.safetensors").stat().st_mtime_ns == mtime


@pytest.mark.parametrize(
    "text", ["plain ascii", "x1=True, x2=False", "(¬x4 ∨ x3) ∧ (x1 ∨ ¬x2)", "tabs\tand\nnewlines", "émoji 🎯 中文"]
)
def test_tokenizer_round_trip(tiny_model_path, text):
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    assert tok.decode(tok(text)["input_ids"]) == text


def test_chat_template_marks_assistant_tokens(tiny_model_path):
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    messages = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
    enc = tok.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    masked = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert tok.decode(masked) == "4<|im_end|>"
    prompt = tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")


def test_same_config_same_weights_and_other_sizes(tmp_path):
    cfg = TinyModelConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, vocab_size=600, seed=3)
    a = build_tiny_model(tmp_path / "a", cfg)
    b = build_tiny_model(tmp_path / "b", cfg)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = build_tiny_model(tmp_path / "c", TinyModelConfig(**{**cfg.__dict__, "seed": 4}))
    wc = load_file(c / "model.safetensors")
    assert not torch.equal(wa["model.embed_tokens.weight"], wc["model.embed_tokens.weight"])
    conf = json.loads((a / "config.json").read_text())
    assert conf["hidden_size"] == 32 and conf["num_hidden_layers"] == 1
    assert json.loads((a / "tiny_model_config.json").read_text())["seed"] == 3
    assert cfg.fingerprint() != TinyModelConfig().fingerprint()


def test_command_line_builds_a_checkpoint(tmp_path):
    out = tmp_path / "cli_tiny"
    proc = run_script(["-m", "trl_ext.models.tiny_model", "--output_dir", str(out), "--hidden_size", "32"])
    assert proc.returncode == 0, proc.stderr
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.hidden_size == 32
    bad = run_script(["-m", "trl_ext.models.tiny_model", "--output_dir", str(out), "--hidden_sise", "32"])
    assert bad.returncode != 0 and "--hidden_sise" in bad.stderr
