"""The shared checkpoint/resume helper: resolution of resume_from_checkpoint, JSON state files, and the chaining
of the families' save/load hooks through one _save_checkpoint and one train."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from trl_ext.common.checkpoint import ExtensionStateMixin, checkpoint_folder, read_json, resolve_checkpoint, write_json


def test_resolve_checkpoint(tmp_path):
    assert resolve_checkpoint(None, str(tmp_path)) is None
    assert resolve_checkpoint(False, str(tmp_path)) is None
    with pytest.raises(FileNotFoundError, match=f"no checkpoint found in {tmp_path}"):
        resolve_checkpoint(True, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        resolve_checkpoint(True, str(tmp_path / "missing"))
    for step in (2, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
    assert resolve_checkpoint(True, str(tmp_path)) == tmp_path / "checkpoint-10"  # by step, not by name
    assert resolve_checkpoint(str(tmp_path / "checkpoint-2"), "unused") == tmp_path / "checkpoint-2"
    # the strings of a command line (`--resume_from_checkpoint true`) when no folder has that name
    assert (
        resolve_checkpoint("true", str(tmp_path))
        == resolve_checkpoint("last", str(tmp_path))
        == tmp_path / "checkpoint-10"
    )
    assert resolve_checkpoint("False", str(tmp_path)) is None and resolve_checkpoint("none", str(tmp_path)) is None
    with pytest.raises(FileNotFoundError, match="'.*checkpoint-3' does not exist"):
        resolve_checkpoint(str(tmp_path / "checkpoint-3"), str(tmp_path))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="'.*notes.txt' is a file, not a checkpoint folder"):
        resolve_checkpoint(str(tmp_path / "notes.txt"), str(tmp_path))


def test_json_state_round_trip(tmp_path):
    state = {"kl_ctl": {"value": 0.05, "n": 3}, "history": [1.5, None]}
    write_json(tmp_path, "state.json", state)
    assert read_json(tmp_path, "state.json") == state
    assert read_json(tmp_path, "absent.json") is None


class _Host:
    """A stand-in for transformers.Trainer: what ExtensionStateMixin calls."""

    def __init__(self, output_dir: Path, should_save: bool = True) -> None:
        self.args = SimpleNamespace(output_dir=str(output_dir), should_save=should_save)
        self.state = SimpleNamespace(global_step=7)
        self.events: list[str] = []

    def _get_output_dir(self, trial=None):
        return self.args.output_dir

    def _save_checkpoint(self, model, trial):
        folder = checkpoint_folder(self, trial)
        folder.mkdir(parents=True)
        self.events.append(f"host saved {folder.name}")

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        self.events.append(f"host train {resume_from_checkpoint}")
        return "trained"


class _FamilyA(ExtensionStateMixin):
    def _save_extension_state(self, folder):
        super()._save_extension_state(folder)
        write_json(folder, "a.json", {"a": 1})
        self.events.append("a saved")

    def _load_extension_state(self, folder):
        super()._load_extension_state(folder)
        self.events.append(f"a loaded {read_json(folder, 'a.json')}")


class _FamilyB(ExtensionStateMixin):
    def _save_extension_state(self, folder):
        super()._save_extension_state(folder)
        write_json(folder, "b.json", {"b": 2})
        self.events.append("b saved")

    def _load_extension_state(self, folder):
        super()._load_extension_state(folder)
        self.events.append(f"b loaded {read_json(folder, 'b.json')}")


class _Composed(_FamilyB, _FamilyA, _Host):
    """Like CurriculumPPOTrainer: two families over one host."""


def test_families_compose_through_one_save_and_one_train(tmp_path):
    trainer = _Composed(tmp_path)
    trainer._save_checkpoint(None, None)
    folder = tmp_path / "checkpoint-7"
    assert read_json(folder, "a.json") == {"a": 1} and read_json(folder, "b.json") == {"b": 2}
    assert trainer.events == ["host saved checkpoint-7", "a saved", "b saved"]

    resumed = _Composed(tmp_path)
    assert resumed.train(resume_from_checkpoint=True) == "trained"
    # the host restores the same folder the families read (True resolved once, here)
    assert resumed.events == ["a loaded {'a': 1}", "b loaded {'b': 2}", f"host train {folder}"]

    fresh = _Composed(tmp_path)
    fresh.train()
    assert fresh.events == ["host train None"]


def test_only_the_saving_process_writes_state(tmp_path):
    trainer = _Composed(tmp_path, should_save=False)
    trainer._save_checkpoint(None, None)
    assert trainer.events == ["host saved checkpoint-7"]
    assert not (tmp_path / "checkpoint-7" / "a.json").exists()


def test_the_family_trainers_use_the_helper():
    from trl_ext import CurriculumPPOTrainer, PPOTrainer, SelectivePPOTrainer, SelectiveSFTTrainer

    for cls in (PPOTrainer, SelectiveSFTTrainer, SelectivePPOTrainer, CurriculumPPOTrainer):
        mro = cls.__mro__
        assert ExtensionStateMixin in mro, cls
        owners = [c for c in mro if "_save_checkpoint" in vars(c) and c.__module__.startswith("trl_ext")]
        assert owners == [ExtensionStateMixin], (cls, owners)  # no family rebuilds the checkpoint plumbing
        owners = [c for c in mro if "train" in vars(c) and c.__module__.startswith("trl_ext.common.checkpoint")]
        assert owners == [ExtensionStateMixin]
