"""An embedded tiny causal LM, built on the spot, so that every recipe and test runs offline.

The model is a Qwen2-style decoder (default hidden 64, 2 layers, 4 heads, 2 KV heads, tied embeddings,
~0.2 M parameters) with a byte-level BPE tokenizer trained with ``tokenizers`` on a small built-in
corpus (plain English plus generated task prompts and answers, so that task text tokenises compactly)
and a ChatML chat template whose assistant turns are wrapped in ``{% generation %}`` (so TRL's
``assistant_only_loss`` works). It is saved as a normal checkpoint folder: ``from_pretrained`` loads it,
and TRL can reload the reference model from ``config._name_or_path``.

From Python::

    from trl_ext.models import build_tiny_model, get_tiny_model_path
    path = build_tiny_model("my_tiny")        # writes the folder
    path = get_tiny_model_path()              # cached build under ~/.cache/trl_ext (or $TRL_EXT_CACHE)

From the command line::

    trl-ext-tiny-model --output_dir my_tiny --hidden_size 64 --num_hidden_layers 2

In recipes, ``model_name_or_path: tiny`` selects the cached build (see :mod:`trl_ext.models.loading`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

TINY_MODEL_NAME = "tiny"
"""The ``model_name_or_path`` value that selects the embedded tiny model in every recipe."""

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""ChatML, with the assistant content (and its ``<|im_end|>``) inside a generation block."""

_ENGLISH = """\
The quick brown fox jumps over the lazy dog. A model learns from data, one step at a time.
Find a satisfying assignment for the formula. Provide your answer as comma-separated assignments.
The program reads its input from stdin and prints the result. Write a complete Python 3 program.
You are a helpful assistant. Think step by step, then give the final answer.
I love my dog because he is loyal and friendly. I love my cat because she is calm and independent.
search[blue shoes] click[item 3] buy now. go to the kitchen, take the mug, clean the mug, put it away.
def solve():\n    x = int(input())\n    print(x * 2)\nsolve()\n
for i in range(10):\n    print(i, i ** 2)\n
Training loss decreases; evaluation loss plateaus. The reward is 1.0 when the task is solved.
"""


@dataclass(frozen=True)
class TinyModelConfig:
    """Architecture and tokenizer sizes of the tiny model (every field is a CLI flag)."""

    vocab_size: int = 1024
    """Target BPE vocabulary size (byte alphabet + merges + special tokens)."""
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 4096
    seed: int = 0
    """Seed of the weight initialisation and of the generated part of the tokenizer corpus."""

    def fingerprint(self) -> str:
        """Short hash that names the cached build (changes when any field or the format version changes)."""
        payload = json.dumps({**asdict(self), "format": 1}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


CORPUS_TASKS = ("sat",)
"""The tasks whose prompts and answers train the tiny tokenizer (fixed: see :func:`default_corpus`)."""


def default_corpus(seed: int = 0, num_task_samples: int = 200) -> list[str]:
    """Lines to train the tokenizer on: the built-in English text plus generated SAT prompts/answers.

    The task list is fixed (SAT, the task the tokenizer was first built for), so that registering a new task
    never changes the tiny model, its cached build or the figures measured on it."""
    lines = _ENGLISH.splitlines()
    from trl_ext.tasks import get_task

    rng = random.Random(seed)
    for name in CORPUS_TASKS:
        task = get_task(name)
        for i in range(num_task_samples // len(CORPUS_TASKS)):
            inst = task.generate(rng, index=i)
            lines.extend([inst.prompt, inst.expert_answer])
    # also short SAT variants so small formulas tokenise well
    small = get_task("sat", n=6, k=3)
    for i in range(50):
        inst = small.generate(rng, index=i)
        lines.extend([inst.prompt, inst.expert_answer])
    return lines


def build_tiny_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 1024, seed: int = 0):
    """Train a byte-level BPE on ``corpus`` and wrap it as a ``PreTrainedTokenizerFast`` with ChatML.

    Special tokens: ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` (EOS) and ``<|pad|>`` (padding).
    Every byte is in the initial alphabet, so any text encodes and decodes losslessly.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus) if corpus is not None else default_corpus(seed), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token=None,
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
    )


def build_tiny_model(
    output_dir: str | os.PathLike,
    config: TinyModelConfig | None = None,
    corpus: Iterable[str] | None = None,
) -> Path:
    """Build the tiny Qwen2 model and its tokenizer and save both to ``output_dir``.

    Returns the folder path. The weights are initialised with ``torch.manual_seed(config.seed)`` inside a
    forked RNG, so the caller's random state is untouched and the same config gives the same weights.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    config = config or TinyModelConfig()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(corpus, config.vocab_size, config.seed)
    model_config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = Qwen2ForCausalLM(model_config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "tiny_model_config.json").write_text(json.dumps(asdict(config), indent=2))
    return out


def default_cache_dir() -> Path:
    """``$TRL_EXT_CACHE`` if set, else ``~/.cache/trl_ext``."""
    return Path(os.environ.get("TRL_EXT_CACHE", Path.home() / ".cache" / "trl_ext"))


def get_tiny_model_path(config: TinyModelConfig | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of the cached tiny model for ``config``, building it on first use.

    The build goes to a temporary folder that is renamed into place, so concurrent processes (DDP ranks)
    never see a half-written model: the first rename wins and the others discard their copy.
    """
    config = config or TinyModelConfig()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / f"tiny-qwen2-{config.fingerprint()}"
    if (target / "config.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=root))
    try:
        build_tiny_model(tmp, config)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    """CLI: ``trl-ext-tiny-model --output_dir DIR [--hidden_size 64 ...]``; a user error exits with status 2."""
    from trl_ext.common.entry import run_main

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True, help="folder to write the checkpoint to")
    defaults = TinyModelConfig()
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name}", type=type(value), default=value)
    args = vars(parser.parse_args(argv))
    output_dir = args.pop("output_dir")

    def run() -> None:
        path = build_tiny_model(output_dir, TinyModelConfig(**args))
        print(f"tiny model written to {path}")

    return run_main(run, prog="trl-ext-tiny-model")


if __name__ == "__main__":
    raise SystemExit(main())
