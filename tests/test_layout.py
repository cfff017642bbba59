"""The layout by family (docs/architecture.md): the import-linter contracts hold and can fail, the package never
imports recipes/ or bench/, importing a config loads no trainer, and every package lists its public names once."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "trl_ext"
FAMILIES = ("ppo", "selective", "curriculum", "diversity", "latent")
SHARED = ("common", "data", "eval", "models", "sweep", "tasks")


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "lint-imports (import-linter) is not installed: bash scripts/setup.sh"
    env = {"PYTHONPATH": str(root), "PATH": str(Path(sys.executable).parent)}
    return subprocess.run([exe, "--no-cache"], cwd=root, capture_output=True, text=True, env=env, timeout=300)


def test_import_contracts_hold():
    proc = _lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 kept, 0 broken" in proc.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("common/generation.py", "from trl_ext.selective import mixin", "Shared folders import no family"),
        ("curriculum/sampler.py", "import trl_ext.selective.losses", "Families are independent"),
    ],
)
def test_import_contracts_catch_a_violation(tmp_path, module, line, contract):
    shutil.copytree(PACKAGE, tmp_path / "trl_ext", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "trl_ext" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    proc = _lint_imports(tmp_path)
    assert proc.returncode != 0, proc.stdout
    assert f"{contract}" in proc.stdout and "BROKEN" in proc.stdout, proc.stdout


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_package_never_imports_recipes_or_bench():
    offenders = {
        str(path.relative_to(REPO)): sorted(
            m for m in _imported_modules(path) if m.split(".")[0] in ("recipes", "bench")
        )
        for path in PACKAGE.rglob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_layout_has_the_families_and_shared_folders():
    for name in (*FAMILIES, *SHARED):
        assert (PACKAGE / name / "__init__.py").is_file(), name
        assert (PACKAGE / name / "__init__.pyi").is_file(), f"{name}: public names are listed in __init__.pyi"
    for family in FAMILIES:
        assert (PACKAGE / family / "_trl_compat.py").is_file(), f"{family} has no _trl_compat module"
        docstring = ast.get_docstring(ast.parse((PACKAGE / family / "__init__.py").read_text()))
        assert docstring and f"docs/{family}.md" in docstring, f"trl_ext.{family}: docstring must cite its docs page"
        assert (REPO / "docs" / f"{family}.md").is_file()


def _stub_names(stub: Path) -> list[str]:
    names = []
    for node in ast.parse(stub.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            names += [a.asname or a.name for a in node.names]
    return names


@pytest.mark.parametrize("stub", sorted(PACKAGE.rglob("__init__.pyi")), ids=lambda p: str(p.parent.relative_to(REPO)))
def test_each_public_name_is_listed_once(stub):
    names = _stub_names(stub)
    assert names and len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


_LIGHT = """
import json, sys
import {module}
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("trl_ext", "trl.trainer")))))
"""


@pytest.mark.parametrize(
    ("module", "not_loaded"),
    [
        ("trl_ext.ppo.config", ["trl_ext.ppo.trainer", "trl.trainer.grpo_trainer"]),
        ("trl_ext.selective.config", ["trl_ext.selective.sft", "trl_ext.selective.mixin", "trl.trainer.sft_trainer"]),
        ("trl_ext.curriculum.config", ["trl_ext.curriculum.trainer", "trl_ext.ppo.trainer"]),
        ("trl_ext.ppo", ["trl_ext.ppo.config", "trl_ext.ppo.trainer"]),
        ("trl_ext.selective", ["trl_ext.selective.config", "trl_ext.selective.registry"]),
    ],
)
def test_importing_a_config_loads_no_trainer(module, not_loaded):
    code = textwrap.dedent(_LIGHT.format(module=module))
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert module in loaded
    assert not loaded & set(not_loaded), sorted(loaded & set(not_loaded))


def test_family_names_resolve_lazily():
    code = textwrap.dedent(
        """
        import importlib, json
        out = {}
        for name in ("trl_ext.ppo", "trl_ext.selective", "trl_ext.curriculum", "trl_ext.selective.safelora",
                     "trl_ext.common", "trl_ext.data", "trl_ext.eval", "trl_ext.models", "trl_ext.sweep",
                     "trl_ext.tasks"):
            package = importlib.import_module(name)
            out[name] = [n for n in package.__all__ if getattr(package, n) is None]
        print(json.dumps(out))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not any(json.loads(proc.stdout.strip().splitlines()[-1]).values())
