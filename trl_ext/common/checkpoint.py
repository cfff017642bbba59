"""The one checkpoint/resume helper for extension state (value function, KL controller, proxy positions,
curriculum weights and frozen model, and whatever the next family keeps across steps).

A family trainer puts :class:`ExtensionStateMixin` in its bases (through its family mixin) and implements

* ``_save_extension_state(folder)``: write its files into the checkpoint folder ``checkpoint-<global_step>``
  (called on the process that saves, after ``transformers.Trainer._save_checkpoint`` wrote the model, optimizer,
  scheduler and RNG states);
* ``_load_extension_state(folder)``: read them back (called on every process, before ``Trainer.train`` restores its
  own state from the same folder).

Both chain with ``super()``, so families compose: a curriculum PPO trainer saves and restores the PPO state and the
curriculum state through one ``_save_checkpoint`` and one ``train``. ``resume_from_checkpoint=True`` is resolved to
the last checkpoint of ``output_dir`` once, here, with the same error for every family.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from trl_ext.common.errors import MissingPathError

__all__ = ["ExtensionStateMixin", "checkpoint_folder", "read_json", "resolve_checkpoint", "write_json"]


def resolve_checkpoint(resume_from_checkpoint: str | os.PathLike | bool | None, output_dir: str) -> Path | None:
    """The checkpoint folder that ``Trainer.train(resume_from_checkpoint=...)`` will resume from, or ``None``.

    ``None``/``False`` (or the strings ``"false"``/``"none"``): no resume. ``True`` (or the strings ``"true"`` /
    ``"last"``, as a command line gives them, when no such folder exists): the last ``checkpoint-*`` folder of
    ``output_dir``. A path: itself.

    Raises:
        MissingPathError: (a ``FileNotFoundError``) ``True`` but ``output_dir`` holds no checkpoint, or a path that
            does not exist or is not a folder.
    """
    if resume_from_checkpoint is None or resume_from_checkpoint is False:
        return None
    if isinstance(resume_from_checkpoint, str) and not os.path.exists(resume_from_checkpoint):
        flag = resume_from_checkpoint.strip().lower()
        if flag in ("true", "last"):  # `--resume_from_checkpoint true` on a command line or in a YAML string
            resume_from_checkpoint = True
        elif flag in ("false", "none", ""):
            return None
    if resume_from_checkpoint is True:
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if last is None:
            raise MissingPathError(f"resume_from_checkpoint=True: no checkpoint found in {output_dir} to resume from")
        return Path(last)
    path = Path(resume_from_checkpoint)
    if not path.exists():
        raise MissingPathError(f"resume_from_checkpoint: {str(path)!r} does not exist")
    if not path.is_dir():
        raise MissingPathError(f"resume_from_checkpoint: {str(path)!r} is a file, not a checkpoint folder")
    return path


def checkpoint_folder(trainer: Any, trial: Any = None) -> Path:
    """The folder ``Trainer._save_checkpoint`` writes for the current global step: ``<run dir>/checkpoint-<step>``."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    return Path(trainer._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}"


def write_json(folder: str | os.PathLike, name: str, state: Any) -> None:
    """Write ``state`` as ``folder/name`` (JSON: never a pickle)."""
    (Path(folder) / name).write_text(json.dumps(state))


def read_json(folder: str | os.PathLike, name: str) -> Any | None:
    """The JSON ``folder/name``, or ``None`` when the checkpoint has no such file."""
    path = Path(folder) / name
    return json.loads(path.read_text()) if path.is_file() else None


class ExtensionStateMixin:
    """Saves and restores extension state with every checkpoint (see the module docstring). Goes before the TRL
    trainer in the bases; family mixins override the two hooks and call ``super()``."""

    def _save_extension_state(self, folder: Path) -> None:
        """Write this trainer's extension files into ``folder`` (chain with ``super()``)."""

    def _load_extension_state(self, folder: Path) -> None:
        """Restore this trainer's extension state from ``folder`` (chain with ``super()``)."""

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            self._save_extension_state(checkpoint_folder(self, trial))

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        folder = resolve_checkpoint(resume_from_checkpoint, self.args.output_dir)
        if folder is not None:
            self._load_extension_state(folder)
            resume_from_checkpoint = str(folder)  # the Trainer restores the same folder
        return super().train(resume_from_checkpoint, *args, **kwargs)
