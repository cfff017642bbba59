"""A biased starting point for diversity training: the tiny model fine-tuned to prefer one option (docs/diversity.md).

The embedded tiny model (:func:`trl_ext.models.get_tiny_model_path`) never names an animal, so diversity training
has nothing to spread. :func:`biased_rows` writes prompt-completion rows for the document's prompt in which a share
``share`` of the answers name ``prefer`` (default 90 % "cat") and the rest the other options, each followed by one
of several short reasons; :func:`make_biased_model` fine-tunes the model on them with TRL's ``SFTTrainer``
(completion-only loss) and saves it. The result names the preferred option in most of its sampled answers, which
is what the diversity recipe's tiny config and the empirical test start from.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from trl_ext.common.errors import ConfigError

__all__ = ["DEFAULT_PROMPT", "REASONS", "biased_rows", "make_biased_model"]

DEFAULT_PROMPT = "In 20 words, say whether you love dog or cat more, and give a reason; Answer:"

REASONS = (
    "because it is soft and calm",
    "since it is loyal and kind",
    "as it plays all day",
    "because it naps in the sun",
    "since it is clean and quiet",
    "as it is a good friend",
)


def biased_rows(
    prompt: str = DEFAULT_PROMPT,
    n: int = 200,
    prefer: str = "cat",
    share: float = 0.9,
    options: Sequence[str] = ("cat", "dog"),
    seed: int = 0,
) -> list[dict[str, str]]:
    """``n`` rows ``{"prompt", "completion"}``: round(share · n) completions ``" <prefer> <reason>.\\n"``, the rest
    spread evenly over the other options; reasons cycle through :data:`REASONS`; rows shuffled with ``seed``."""
    if prefer not in options:
        raise ConfigError(f"prefer={prefer!r} is not one of the options {list(options)}")
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"share must be in [0, 1], got {share}")
    others = [o for o in options if o != prefer]
    n_prefer = round(share * n)
    picks = [prefer] * n_prefer + [others[i % len(others)] for i in range(n - n_prefer)] if others else [prefer] * n
    rows = [
        {"prompt": prompt, "completion": f" {option} {REASONS[i % len(REASONS)]}.\n"} for i, option in enumerate(picks)
    ]
    random.Random(seed).shuffle(rows)
    return rows


def make_biased_model(
    output_dir: str | Path,
    base: str = "tiny",
    prompt: str = DEFAULT_PROMPT,
    prefer: str = "cat",
    share: float = 0.9,
    options: Sequence[str] = ("cat", "dog"),
    *,
    n_rows: int = 200,
    max_steps: int = 60,
    learning_rate: float = 3e-3,
    seed: int = 0,
) -> Path:
    """Fine-tune ``base`` (all weights, batch 16, constant learning rate) on :func:`biased_rows` and save model and
    tokenizer to ``output_dir``; returns it. A folder that already holds a model is returned as it is. Under a
    multi-process launch every process must call it (the SFT runs on all of them; the main process saves)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from trl_ext.models import get_tiny_model_path, load_causal_lm, load_tokenizer

    output_dir = Path(output_dir)
    if (output_dir / "config.json").is_file():
        return output_dir
    path = str(get_tiny_model_path()) if base == "tiny" else base
    tokenizer = load_tokenizer(path)
    model = load_causal_lm(path)
    rows = Dataset.from_list(biased_rows(prompt, n_rows, prefer, share, options, seed))
    args = SFTConfig(
        output_dir=str(output_dir / "sft"), max_steps=max_steps, per_device_train_batch_size=16,
        learning_rate=learning_rate, lr_scheduler_type="constant", logging_steps=max_steps, save_strategy="no",
        report_to="none", bf16=False, use_cpu=True, seed=seed, completion_only_loss=True, disable_tqdm=True,
    )  # fmt: skip
    trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(output_dir))
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(str(output_dir))
    trainer.accelerator.wait_for_everyone()
    return output_dir
