"""The starting policy of an RL stage: a model folder or hub id as is, or an SFT adapter merged into its base."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from trl_ext.models.loading import is_peft_adapter_dir, load_causal_lm, load_tokenizer, resolve_model_name_or_path


def prepare_init_policy(
    model_name_or_path: str | None,
    merged_dir: str | os.PathLike,
    dtype: str | None = None,
    carry_files: Sequence[str] = (),
) -> str:
    """Return a path every process can load the starting policy (and the reference model) from.

    A PEFT adapter folder (e.g. the output of ``recipes/sft_affine.py``) is merged into its base model and saved
    to ``merged_dir`` with the tokenizer (and any saved value function), by the main process while the others
    wait. The merged folder is then both the policy's starting point and the reference model: a new LoRA trained
    on it has the SFT policy as its adapter-disabled reference, and a full fine-tune reloads it from
    ``config._name_or_path``. Anything else is resolved by :func:`resolve_model_name_or_path` and returned as is.
    """
    from accelerate import PartialState

    path = resolve_model_name_or_path(model_name_or_path)
    if not is_peft_adapter_dir(path):
        return path
    merged = Path(merged_dir)
    state = PartialState()
    with state.main_process_first():
        if state.is_main_process and not (merged / "config.json").exists():
            model = load_causal_lm(path, dtype=dtype).merge_and_unload()
            model.save_pretrained(merged)
            load_tokenizer(path).save_pretrained(merged)
            for name in carry_files:
                source = Path(path) / name
                if source.is_dir():
                    shutil.copytree(source, merged / name, dirs_exist_ok=True)
                elif source.is_file():
                    shutil.copy2(source, merged / name)
    return str(merged.resolve())
