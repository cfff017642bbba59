"""Entry points: user errors as one line and exit status 2, bugs with their traceback, and the dependency-noise
filters installed by the recipes and console scripts only (issue 14)."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings

import pytest

from tests.conftest import REPO, run_script
from trl_ext.common.entry import run_main
from trl_ext.common.errors import ConfigError, DataError, MissingPathError, UnknownNameError, UserInputError
from trl_ext.common.noise import HARMLESS_LOG_MESSAGES, quiet_dependency_noise


def test_run_main_prints_a_user_error_as_one_line_and_returns_2(capsys):
    def bad():
        raise MissingPathError("model path './no/such/model' does not exist")

    assert run_main(bad, prog="demo") == 2
    assert capsys.readouterr().err == "demo: error: model path './no/such/model' does not exist\n"
    assert run_main(lambda: 3, prog="demo") == 3
    assert run_main(lambda: None, prog="demo") == 0

    def bug():
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError, match="a bug"):  # not a user error: the traceback stays
        run_main(bug, prog="demo")


def test_user_errors_are_also_the_builtins_callers_catch():
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, UserInputError)
    assert issubclass(DataError, ValueError) and issubclass(UnknownNameError, ValueError)
    assert issubclass(MissingPathError, FileNotFoundError)


def test_noise_filters_drop_exactly_the_named_messages(monkeypatch):
    import trl_ext.common.noise as noise

    monkeypatch.setattr(noise, "_installed", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_dependency_noise()  # its filters go in front of "always"
        warnings.warn(
            "`gradient_checkpointing` is deprecated and will be removed in v6. Use", FutureWarning, stacklevel=1
        )
        warnings.warn("`gradient_checkpointing` is something else", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["`gradient_checkpointing` is something else"]
    samples = {
        "bitsandbytes.backends.cpu.ops": "Failed to load CPU gemm_4bit_forward from kernels-community: No module "
        "named 'kernels'. Please make sure you already `pip install kernels` and the kernels >= 0.11.1",
        "DeepSpeed": "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it.",
    }
    assert set(samples) == set(HARMLESS_LOG_MESSAGES)
    for name, message in samples.items():
        seen: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record, seen=seen: seen.append(record.getMessage())
        logger = logging.getLogger(name)
        level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        try:
            logger.warning(message)
            logger.warning("something else")
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
        assert seen == ["something else"], name


def test_the_library_itself_hides_no_warning():
    code = (
        "import warnings, trl_ext\n"
        "from trl_ext import SelectiveConfig\n"
        "SelectiveConfig(output_dir='out')\n"
        "assert not [f for f in warnings.filters if 'gradient_checkpointing' in str(f[1])], warnings.filters\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize(
    ("recipe", "args", "message"),
    [
        (
            "ppo_affine.py",
            ["--config", "recipes/configs/ppo_affine_tiny.yaml", "--kl_coef", "-1"],
            "ppo_affine.py: error: kl_coef must be >= 0, got -1.0",
        ),
        (
            "evaluate_affine.py",
            ["--config", "recipes/configs/evaluate_affine_tiny.yaml", "--output_dir", "x"],
            "evaluate_affine.py: error: Some specified arguments are not used by the HfArgumentParser: "
            "['--output_dir', 'x']",
        ),
        (
            "selective_generalisation.py",
            [
                "--config",
                "recipes/configs/selective/kl_divergence_tiny.yaml",
                "--model_name_or_path",
                "./no/such/model",
            ],
            "selective_generalisation.py: error: model path './no/such/model' does not exist",
        ),
        ("ppo_affine.py", ["--config", "no/such/config.yaml"], None),
        (
            "selective_generalisation.py",
            ["--config", "recipes/configs/selective/kl_divergence_tiny.yaml", "--strategy", "grad_projekt"],
            "selective_generalisation.py: error: unknown strategy 'grad_projekt'; known strategies: naive, ",
        ),
    ],
    ids=["bad-config-value", "unknown-flag", "missing-model", "missing-config", "unknown-strategy"],
)
def test_a_recipe_ends_a_user_error_with_one_line_and_status_2(recipe, args, message, tmp_path):
    proc = run_script(
        [str(REPO / "recipes" / recipe), *args, "--output_dir", str(tmp_path / "out")]
        if recipe != "evaluate_affine.py"
        else [str(REPO / "recipes" / recipe), *args],
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    if message is None:  # the missing config file: the message is the OS's, naming the path
        assert last.startswith("ppo_affine.py: error: ") and "no/such/config.yaml" in last, last
    else:
        assert last.startswith(message), last
    assert "Traceback" not in proc.stderr
