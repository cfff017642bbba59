"""Every coupling of trl_ext to a TRL (or transformers) internal holds for the installed version, and a check fails
naming its coupling when TRL changes under it. The couplings are listed in each family's ``_trl_compat`` module."""

from __future__ import annotations

import pytest

from trl_ext.common import _trl_compat as common_compat
from trl_ext.common._trl_compat import TRLCouplingError
from trl_ext.curriculum import _trl_compat as curriculum_compat
from trl_ext.diversity import _trl_compat as diversity_compat
from trl_ext.latent import _trl_compat as latent_compat
from trl_ext.ppo import _trl_compat as ppo_compat
from trl_ext.selective import _trl_compat as selective_compat

COUPLINGS = [
    *common_compat.COUPLINGS,
    *ppo_compat.COUPLINGS,
    *selective_compat.COUPLINGS,
    *curriculum_compat.COUPLINGS,
    *diversity_compat.COUPLINGS,
    *latent_compat.COUPLINGS,
]


def test_coupling_names_are_unique():
    names = [c.name for c in COUPLINGS]
    assert len(names) == len(set(names)) == 19, names


@pytest.mark.parametrize("coupling", COUPLINGS, ids=lambda c: c.name)
def test_coupling_holds(coupling):
    coupling.check()


def test_a_removed_global_fails_naming_the_coupling(monkeypatch):
    import trl.trainer.utils as trl_utils

    monkeypatch.delattr(trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE")
    coupling = next(c for c in COUPLINGS if c.name == "lm_head_tile_global")
    with pytest.raises(TRLCouplingError, match=r"TRL coupling 'lm_head_tile_global' .* broke with TRL"):
        coupling.check()


def test_a_changed_private_method_fails_naming_the_coupling(monkeypatch):
    from trl import GRPOTrainer, SFTTrainer

    def _prepare_inputs(self, generation_batch):  # a TRL that buffers rollouts differently
        return self._rollouts.pop()

    monkeypatch.setattr(GRPOTrainer, "_prepare_inputs", _prepare_inputs)
    coupling = next(c for c in COUPLINGS if c.name == "rollout_buffer")
    with pytest.raises(TRLCouplingError, match=r"'rollout_buffer'.*_prepare_inputs no longer matches"):
        coupling.check()

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        return self._new_helper(dataset, args.new_option)

    monkeypatch.setattr(SFTTrainer, "_prepare_dataset", _prepare_dataset)
    coupling = next(c for c in COUPLINGS if c.name == "sft_prepare_dataset")
    with pytest.raises(TRLCouplingError, match=r"now reads self\.\['_new_helper'\] / args\.\['new_option'\]"):
        coupling.check()


def test_group_statistics_that_change_fail_naming_the_coupling(monkeypatch):
    """PPO keeps GRPO's ``reward_std`` because it is a batch std: a TRL that computes it per group (meaningless with
    one completion per prompt) breaks ``grpo_group_metrics``, and so does a renamed ``frac_reward_zero_std``."""
    from trl import GRPOTrainer

    coupling = next(c for c in COUPLINGS if c.name == "grpo_group_metrics")
    source = common_compat.source_of(GRPOTrainer._generate_and_score_completions)
    changes = {
        'self._metrics[mode]["reward_std"].append(nanstd(rewards).item())': (
            'self._metrics[mode]["reward_std"].append(std_rewards.mean().item())'
        ),
        '"frac_reward_zero_std"': '"groups/frac_zero_std"',
    }
    for old, new in changes.items():
        assert old in source
        changed = source.replace(old, new)
        monkeypatch.setattr(common_compat, "source_of", lambda obj, text=changed: text)
        with pytest.raises(TRLCouplingError, match=r"'grpo_group_metrics'.*_generate_and_score_completions no longer"):
            coupling.check()


def test_a_moved_import_fails_naming_the_coupling(monkeypatch):
    import trl.generation.vllm_generation as vllm_generation

    monkeypatch.delattr(vllm_generation, "VLLMGeneration")
    coupling = next(c for c in COUPLINGS if c.name == "vllm_param_iterator")
    with pytest.raises(TRLCouplingError, match=r"'vllm_param_iterator'.*ImportError"):
        coupling.check()


def test_trl_is_bounded_below_the_next_untested_minor():
    from importlib.metadata import version

    from packaging.requirements import Requirement
    from packaging.version import Version

    from tests.conftest import REPO

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    trl = next(Requirement(r) for r in dependencies if Requirement(r).name == "trl")
    installed = Version(version("trl"))
    assert trl.specifier.contains(str(installed))
    next_minor = f"{installed.major}.{installed.minor + 1}.0"
    assert not trl.specifier.contains(next_minor), f"trl {trl.specifier} admits the untested {next_minor}"
