"""Static checks of the ``accelerate launch --config_file`` YAMLs in ``accelerate_configs/``.

Nothing here starts a process or a process group; the whole module runs in a few seconds.

What is checked, and how:

* Every YAML is parsed by accelerate's own loader (``load_config_from_file``) and has the expected
  ``distributed_type`` / ``num_processes`` / ``use_cpu`` / ``mixed_precision``.
* ``accelerate launch`` is replayed in-process: accelerate's own argument parser and ``launch_command`` run
  with the real launcher functions (``simple_launcher`` / ``multi_gpu_launcher`` / ``deepspeed_launcher``)
  replaced by recorders, so we see which launcher the YAML selects and the final ``args`` (e.g. that
  ``--num_processes`` on the command line beats the YAML), without spawning anything.
* From the recorded ``args`` we build the worker environment with accelerate's own
  ``prepare_deepspeed_cmd_env`` / ``prepare_multi_gpu_env`` and construct ``DeepSpeedPlugin()`` /
  ``FullyShardedDataParallelPlugin()`` from that environment, i.e. exactly as a launched worker does.
  For DeepSpeed this also runs accelerate's "no zero_stage etc. next to deepspeed_config_file" check.
* Every DeepSpeed JSON is loaded with ``DeepSpeedPlugin(hf_ds_config=path)``; its ``"auto"`` values are filled
  from ``TrainingArguments`` by transformers' ``HfTrainerDeepSpeedConfig`` (what ``TrainingArguments(deepspeed=...)``
  and, under ``accelerate launch``, ``Trainer`` do), and the result is validated by
  ``deepspeed.runtime.config.DeepSpeedConfig``. deepspeed is imported directly (no ``importorskip``): it is
  in the ``deepspeed`` extra that CI installs, and a missing install must fail here.
* Malformed inputs (unknown ``distributed_type``, unknown key, invalid ZeRO stage, missing
  ``zero_optimization``, unfilled ``"auto"``, forbidden keys next to ``deepspeed_config_file``, a relative
  JSON path seen from another working directory) are rejected by the same loaders.

What is NOT checked here (needs real processes; verified by hand with ``accelerate launch``):

* That the workers really form a process group, that DeepSpeed builds its engine (and JIT-compiles its
  ``shm_comm`` / ``cpu_adam`` ops), or that ZeRO-3 ``zero.Init`` partitions a model.
* FSDP sharding. On a CPU-only machine accelerate never enables FSDP: ``AcceleratorState`` only upgrades GPU-like
  distributed types to FSDP, so ``fsdp.yaml`` silently runs as DDP over gloo. We therefore only check that the
  FSDP2 plugin is built from the YAML with the intended settings and that its auto-wrap policy resolves to a
  transformers decoder-layer class; ``fully_shard`` itself is never applied.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "accelerate_configs"
DS_DIR = CONFIG_DIR / "deepspeed"

# name -> expected ClusterConfig fields (+ which launcher `accelerate launch` must pick)
EXPECTED = {
    "cpu.yaml": {
        "distributed_type": "NO",
        "num_processes": 1,
        "use_cpu": True,
        "mixed_precision": "no",
        "launcher": "simple_launcher",
    },
    "single_gpu.yaml": {
        "distributed_type": "NO",
        "num_processes": 1,
        "use_cpu": False,
        "mixed_precision": "no",
        "launcher": "simple_launcher",
    },
    "multi_gpu.yaml": {
        "distributed_type": "MULTI_GPU",
        "num_processes": 2,
        "use_cpu": False,
        "mixed_precision": "no",
        "launcher": "multi_gpu_launcher",
    },
    "deepspeed_zero2.yaml": {
        "distributed_type": "DEEPSPEED",
        "num_processes": 2,
        "use_cpu": False,
        "mixed_precision": None,  # must be absent when deepspeed_config_file is used
        "launcher": "deepspeed_launcher",
        "ds_json": "accelerate_configs/deepspeed/zero2.json",
        "zero_stage": 2,
        "zero3_init_flag": False,
    },
    "deepspeed_zero3.yaml": {
        "distributed_type": "DEEPSPEED",
        "num_processes": 2,
        "use_cpu": False,
        "mixed_precision": None,
        "launcher": "deepspeed_launcher",
        "ds_json": "accelerate_configs/deepspeed/zero3.json",
        "zero_stage": 3,
        "zero3_init_flag": True,
    },
    "deepspeed_zero3_offload.yaml": {
        "distributed_type": "DEEPSPEED",
        "num_processes": 2,
        "use_cpu": False,
        "mixed_precision": None,
        "launcher": "deepspeed_launcher",
        "ds_json": "accelerate_configs/deepspeed/zero3_offload.json",
        "zero_stage": 3,
        "zero3_init_flag": True,
    },
    "fsdp.yaml": {
        "distributed_type": "FSDP",
        "num_processes": 2,
        "use_cpu": False,
        "mixed_precision": "no",
        "launcher": "multi_gpu_launcher",
    },
}
DS_YAMLS = [name for name, exp in EXPECTED.items() if "ds_json" in exp]
# per JSON: (stage, optimizer offload device, param offload device, gather 16-bit weights on save)
DS_JSONS = {
    "zero2.json": (2, "none", "none", False),
    "zero3.json": (3, "none", "none", True),
    "zero3_offload.json": (3, "cpu", "cpu", True),
}
# DeepSpeed/accelerate keys that accelerate refuses next to `deepspeed_config_file`
# (accelerate.utils.DeepSpeedPlugin._deepspeed_config_checks).
FORBIDDEN_WITH_DS_FILE = {
    "gradient_accumulation_steps",
    "gradient_clipping",
    "zero_stage",
    "offload_optimizer_device",
    "offload_param_device",
    "offload_param_nvme_path",
    "offload_optimizer_nvme_path",
    "zero3_save_16bit_model",
}
# accelerate's prepare_*_env only warns (and would switch torchrun to a free port) when 29500 is taken
pytestmark = pytest.mark.filterwarnings("ignore:Port `29500` is already in use:UserWarning")
# environment variables a launched worker reads; cleared so the developer's shell cannot leak into the tests
_LAUNCH_ENV_PREFIXES = ("ACCELERATE_", "FSDP_")


@pytest.fixture(autouse=True)
def _isolate_global_state(monkeypatch):
    """No launcher env from the developer's shell in, no accelerate/transformers global state out."""
    for key in list(os.environ):
        if key.startswith(_LAUNCH_ENV_PREFIXES):
            monkeypatch.delenv(key)
    yield
    if "transformers.integrations.deepspeed" in sys.modules:  # HfTrainerDeepSpeedConfig sets a global weakref
        sys.modules["transformers.integrations.deepspeed"].unset_hf_deepspeed_config()
    if "accelerate.state" in sys.modules:  # TrainingArguments(...).world_size initialises PartialState
        sys.modules["accelerate.state"].AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def at_repo_root(monkeypatch):
    """The YAMLs reference the JSONs relative to the CWD: the launch commands are run from the repo root."""
    monkeypatch.chdir(REPO_ROOT)


def _load(path):
    from accelerate.commands.config.config_args import load_config_from_file

    return load_config_from_file(str(path))


def _replay_launch(monkeypatch, config_file, *extra_args):
    """Run accelerate's own `launch_command` on `config_file` with the launchers replaced by recorders."""
    from accelerate.commands import launch as launch_mod

    calls = []
    for name in ("simple_launcher", "multi_gpu_launcher", "deepspeed_launcher", "tpu_launcher", "tpu_pod_launcher"):
        monkeypatch.setattr(launch_mod, name, lambda args, _n=name: calls.append((_n, args)))
    monkeypatch.setattr(launch_mod, "sagemaker_launcher", lambda cfg, args: calls.append(("sagemaker", args)))
    parser = launch_mod.launch_command_parser()
    args = parser.parse_args(["--config_file", str(config_file), *extra_args, "train.py", "--config", "x.yaml"])
    launch_mod.launch_command(args)
    assert len(calls) == 1
    return calls[0]


def _worker_env(monkeypatch, launcher, args):
    """Apply the environment accelerate would hand to the workers (without the rest of os.environ)."""
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    before = dict(os.environ)
    if launcher == "deepspeed_launcher":
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    added = {k: v for k, v in env.items() if k.startswith(_LAUNCH_ENV_PREFIXES) and before.get(k) != v}
    for key, value in added.items():
        monkeypatch.setenv(key, value)
    return added


def _contains_auto(obj):
    if isinstance(obj, dict):
        return any(_contains_auto(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_contains_auto(v) for v in obj)
    return obj == "auto"


def _training_args(tmp_path, **overrides):
    from transformers import TrainingArguments

    kwargs = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_grad_norm=0.5,
        use_cpu=True,
        report_to=[],
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


# --------------------------------------------------------------------------------------------- YAML files


def test_config_dir_contains_exactly_the_expected_files():
    assert sorted(p.name for p in CONFIG_DIR.glob("*.yaml")) == sorted(EXPECTED)
    assert sorted(p.name for p in DS_DIR.glob("*.json")) == sorted(DS_JSONS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_yaml_parses_with_accelerate_loader(name):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils import ComputeEnvironment, DistributedType

    exp = EXPECTED[name]
    cfg = _load(CONFIG_DIR / name)
    assert isinstance(cfg, ClusterConfig)
    assert cfg.compute_environment == ComputeEnvironment.LOCAL_MACHINE
    assert cfg.distributed_type == DistributedType(exp["distributed_type"])
    assert cfg.num_processes == exp["num_processes"]
    assert cfg.num_machines == 1
    assert cfg.use_cpu is exp["use_cpu"]
    assert cfg.mixed_precision == exp["mixed_precision"]
    if "ds_json" in exp:
        assert cfg.deepspeed_config["deepspeed_config_file"] == exp["ds_json"]
        assert cfg.deepspeed_config["zero3_init_flag"] is exp["zero3_init_flag"]
        assert not FORBIDDEN_WITH_DS_FILE & set(cfg.deepspeed_config)
    else:
        assert cfg.deepspeed_config == {}
    if exp["distributed_type"] == "FSDP":
        assert cfg.fsdp_config["fsdp_version"] == 2
    else:
        assert cfg.fsdp_config == {}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_yaml_header_documents_the_launch_command(name):
    text = (CONFIG_DIR / name).read_text()
    assert text.startswith("#")
    assert f"accelerate launch --config_file accelerate_configs/{name}" in text


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_launch_picks_expected_launcher(name, monkeypatch, at_repo_root):
    exp = EXPECTED[name]
    launcher, args = _replay_launch(monkeypatch, CONFIG_DIR / name)
    assert launcher == exp["launcher"]
    assert args.num_processes == exp["num_processes"]


@pytest.mark.parametrize("name", ["multi_gpu.yaml", "deepspeed_zero2.yaml", "fsdp.yaml"])
def test_command_line_num_processes_overrides_yaml(name, monkeypatch, at_repo_root):
    launcher, args = _replay_launch(monkeypatch, CONFIG_DIR / name, "--num_processes", "4")
    assert launcher == EXPECTED[name]["launcher"]
    assert args.num_processes == 4
    env = _worker_env(monkeypatch, launcher, args)
    assert args.nproc_per_node == "4"  # what torchrun receives
    assert env  # the worker environment was produced


def test_cpu_yaml_always_runs_one_process(monkeypatch):
    """`use_cpu: true` routes to the single-process launcher; --num_processes does not change that."""
    launcher, args = _replay_launch(monkeypatch, CONFIG_DIR / "cpu.yaml", "--num_processes", "2")
    assert launcher == "simple_launcher"
    assert args.use_cpu is True


def test_multi_gpu_yaml_worker_env(monkeypatch):
    launcher, args = _replay_launch(monkeypatch, CONFIG_DIR / "multi_gpu.yaml")
    env = _worker_env(monkeypatch, launcher, args)
    assert args.nproc_per_node == "2"
    assert env["ACCELERATE_MIXED_PRECISION"] == "no"
    assert "ACCELERATE_USE_CPU" not in env  # would make it a single process
    assert "ACCELERATE_USE_DEEPSPEED" not in env and "ACCELERATE_USE_FSDP" not in env


# ------------------------------------------------------------------------------------ DeepSpeed (YAML path)


@pytest.mark.parametrize("name", DS_YAMLS)
def test_deepspeed_yaml_builds_plugin_like_a_worker(name, monkeypatch, at_repo_root):
    from accelerate.utils import DeepSpeedPlugin

    exp = EXPECTED[name]
    assert (REPO_ROOT / exp["ds_json"]).is_file()
    launcher, args = _replay_launch(monkeypatch, CONFIG_DIR / name)
    env = _worker_env(monkeypatch, launcher, args)
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
    assert env["ACCELERATE_DEEPSPEED_CONFIG_FILE"] == exp["ds_json"]  # passed verbatim, not made absolute
    assert env["ACCELERATE_DEEPSPEED_ZERO3_INIT"] == str(exp["zero3_init_flag"]).lower()
    assert "ACCELERATE_DEEPSPEED_ZERO_STAGE" not in env
    # DeepSpeedPlugin() reads that env (and raises if the YAML also set e.g. zero_stage / mixed_precision)
    plugin = DeepSpeedPlugin()
    assert plugin.zero_stage == exp["zero_stage"]
    assert plugin.zero3_init_flag is exp["zero3_init_flag"]
    assert plugin.hf_ds_config.is_zero3() is (exp["zero_stage"] == 3)


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("deepspeed_config", "zero_stage", 2),
        ("deepspeed_config", "gradient_clipping", 1.0),
        ("deepspeed_config", "offload_param_device", "cpu"),
        (None, "mixed_precision", "bf16"),  # a top-level precision is refused too
    ],
)
def test_deepspeed_yaml_rejects_keys_next_to_config_file(section, key, value, tmp_path, monkeypatch, at_repo_root):
    from accelerate.utils import DeepSpeedPlugin

    cfg = yaml.safe_load((CONFIG_DIR / "deepspeed_zero2.yaml").read_text())
    (cfg[section] if section else cfg)[key] = value
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    launcher, args = _replay_launch(monkeypatch, bad)
    _worker_env(monkeypatch, launcher, args)
    with pytest.raises(ValueError, match="When using `deepspeed_config_file`"):
        DeepSpeedPlugin()


def test_deepspeed_config_file_is_resolved_against_the_working_directory(tmp_path, monkeypatch):
    from accelerate.utils import DeepSpeedPlugin

    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", EXPECTED["deepspeed_zero2.yaml"]["ds_json"])
    monkeypatch.chdir(tmp_path)  # launching from anywhere but the repo root breaks the relative path
    with pytest.raises(ValueError, match="Expected a string path to an existing deepspeed config"):
        DeepSpeedPlugin()
    monkeypatch.chdir(REPO_ROOT)
    assert DeepSpeedPlugin().zero_stage == 2


# ------------------------------------------------------------------------------------- DeepSpeed JSON files


@pytest.mark.parametrize("json_name", sorted(DS_JSONS))
def test_deepspeed_json_loads_in_accelerate(json_name):
    from accelerate.utils import DeepSpeedPlugin

    stage, opt_dev, param_dev, gather16 = DS_JSONS[json_name]
    raw = json.loads((DS_DIR / json_name).read_text())
    for key in (
        "train_micro_batch_size_per_gpu",
        "gradient_accumulation_steps",
        "gradient_clipping",
        "train_batch_size",
    ):
        assert raw[key] == "auto", key
    assert raw["bf16"]["enabled"] == "auto" and raw["fp16"]["enabled"] == "auto"

    plugin = DeepSpeedPlugin(hf_ds_config=str(DS_DIR / json_name))
    assert plugin.zero_stage == stage
    assert plugin.offload_optimizer_device == opt_dev
    assert plugin.offload_param_device == param_dev
    assert plugin.zero3_save_16bit_model is gather16
    assert plugin.hf_ds_config.is_offload() is (opt_dev != "none" or param_dev != "none")
    if opt_dev != "none":
        zero = raw["zero_optimization"]
        assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
        assert zero["offload_param"] == {"device": "cpu", "pin_memory": True}


@pytest.mark.parametrize("json_name", sorted(DS_JSONS))
def test_deepspeed_json_autos_filled_from_training_args_are_valid(json_name, tmp_path):
    import deepspeed  # noqa: F401  -- must be installed (deepspeed extra); fail loudly, never skip
    import torch
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers.integrations import HfTrainerDeepSpeedConfig

    stage, opt_dev, param_dev, gather16 = DS_JSONS[json_name]
    args = _training_args(tmp_path)
    hf_cfg = HfTrainerDeepSpeedConfig(str(DS_DIR / json_name))
    hf_cfg.trainer_config_process(args)  # what TrainingArguments(deepspeed=...) / Trainer do
    hf_cfg.trainer_config_finalize(args, model=None, num_training_steps=10)  # no hidden-size/scheduler autos
    filled = hf_cfg.config
    assert not _contains_auto(filled), filled
    assert filled["train_micro_batch_size_per_gpu"] == 4
    assert filled["gradient_accumulation_steps"] == 2
    assert filled["train_batch_size"] == 8  # world_size 1 * 4 * 2
    assert filled["gradient_clipping"] == 0.5
    assert filled["bf16"]["enabled"] is False and filled["fp16"]["enabled"] is False
    assert hf_cfg.dtype() is torch.float32

    ds = DeepSpeedConfig(filled)
    assert ds.zero_optimization_stage == stage
    assert ds.train_batch_size == 8 and ds.gradient_accumulation_steps == 2
    assert ds.gradient_clipping == 0.5
    zero = ds.zero_config
    assert (zero.offload_optimizer.device if zero.offload_optimizer else "none") == opt_dev
    assert (zero.offload_param.device if zero.offload_param else "none") == param_dev
    if opt_dev != "none":
        assert zero.offload_optimizer.pin_memory and zero.offload_param.pin_memory
    assert zero.gather_16bit_weights_on_model_save is gather16


def test_deepspeed_json_bf16_auto_follows_training_args(tmp_path):
    from transformers.integrations import HfTrainerDeepSpeedConfig

    hf_cfg = HfTrainerDeepSpeedConfig(str(DS_DIR / "zero2.json"))
    hf_cfg.trainer_config_process(_training_args(tmp_path, bf16=True))
    assert hf_cfg.config["bf16"]["enabled"] is True and hf_cfg.config["fp16"]["enabled"] is False


# ------------------------------------------------------------------------------------------------ FSDP


def test_fsdp_yaml_builds_fsdp2_plugin_like_a_worker(monkeypatch, at_repo_root):
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import CPUOffloadPolicy, StateDictType
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = _load(CONFIG_DIR / "fsdp.yaml")
    fsdp = cfg.fsdp_config
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_reshard_after_forward"] is True  # FSDP2 spelling of FULL_SHARD
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"

    launcher, args = _replay_launch(monkeypatch, CONFIG_DIR / "fsdp.yaml")
    env = _worker_env(monkeypatch, launcher, args)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"

    plugin = FullyShardedDataParallelPlugin()  # reads FSDP_* like a launched worker
    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True
    assert plugin.auto_wrap_policy is transformer_auto_wrap_policy
    assert plugin.state_dict_type == StateDictType.FULL_STATE_DICT
    assert plugin.cpu_ram_efficient_loading is True
    assert not isinstance(plugin.cpu_offload, CPUOffloadPolicy)  # FSDP2: plain OffloadPolicy() = no offload
    assert plugin.sync_module_states is None  # FSDP2: no device-bound param_init_fn (would fail on CPU)

    # The wrap policy resolves to the decoder-layer class named in the model's `_no_split_modules`.
    tiny = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=32,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )
    plugin.set_auto_wrap_policy(tiny)
    wrapped = {cls.__name__ for cls in plugin.auto_wrap_policy.keywords["transformer_layer_cls"]}
    assert wrapped == {"Qwen2DecoderLayer"}


# ------------------------------------------------------------------------------------- malformed configs


def test_unknown_distributed_type_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIG_DIR / "multi_gpu.yaml").read_text().replace("MULTI_GPU", "MULTI_BANANA"))
    with pytest.raises(ValueError, match="MULTI_BANANA"):
        _load(bad)


def test_unknown_key_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIG_DIR / "multi_gpu.yaml").read_text() + "num_proceses: 4\n")
    with pytest.raises(ValueError, match="unknown keys"):
        _load(bad)


def test_missing_distributed_type_is_rejected(tmp_path):
    cfg = yaml.safe_load((CONFIG_DIR / "cpu.yaml").read_text())
    del cfg["distributed_type"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match="distributed_type"):
        _load(bad)


def test_invalid_zero_stage_is_rejected_by_deepspeed(tmp_path):
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers.integrations import HfTrainerDeepSpeedConfig

    raw = json.loads((DS_DIR / "zero2.json").read_text())
    raw["zero_optimization"]["stage"] = 7
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    hf_cfg = HfTrainerDeepSpeedConfig(str(bad))
    hf_cfg.trainer_config_process(_training_args(tmp_path))
    # accelerate's DeepSpeedPlugin only reads the stage; DeepSpeed's pydantic model rejects it
    with pytest.raises(Exception, match="stage") as excinfo:
        DeepSpeedConfig(hf_cfg.config)
    assert type(excinfo.value).__name__ == "ValidationError"


def test_unknown_zero_key_is_rejected_by_deepspeed(tmp_path):
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers.integrations import HfTrainerDeepSpeedConfig

    hf_cfg = HfTrainerDeepSpeedConfig(str(DS_DIR / "zero3.json"))
    hf_cfg.trainer_config_process(_training_args(tmp_path))
    hf_cfg.config["zero_optimization"]["stage3_gather_weights_typo"] = True
    with pytest.raises(Exception, match="stage3_gather_weights_typo") as excinfo:
        DeepSpeedConfig(hf_cfg.config)
    assert type(excinfo.value).__name__ == "ValidationError"


def test_unfilled_auto_is_rejected_by_deepspeed():
    from deepspeed.runtime.config import DeepSpeedConfig

    with pytest.raises(TypeError):
        DeepSpeedConfig(json.loads((DS_DIR / "zero2.json").read_text()))


def test_deepspeed_json_without_zero_section_is_rejected(tmp_path):
    from accelerate.utils import DeepSpeedPlugin

    raw = json.loads((DS_DIR / "zero2.json").read_text())
    del raw["zero_optimization"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="ZeRO optimization config"):
        DeepSpeedPlugin(hf_ds_config=str(bad))


def test_copied_config_tree_is_self_contained(tmp_path, monkeypatch):
    """The YAML -> JSON reference only depends on the directory layout, so a copied repo root works too."""
    from accelerate.utils import DeepSpeedPlugin

    shutil.copytree(CONFIG_DIR, tmp_path / "accelerate_configs")
    monkeypatch.chdir(tmp_path)
    launcher, args = _replay_launch(monkeypatch, Path("accelerate_configs/deepspeed_zero3_offload.yaml"))
    _worker_env(monkeypatch, launcher, args)
    plugin = DeepSpeedPlugin()
    assert plugin.zero_stage == 3 and plugin.offload_param_device == "cpu"
