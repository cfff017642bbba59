"""The sweep engine (trl_ext.sweep, recipes/sweep.py) with a fake recipe: folders and configs, grid and explicit
runs, derived fields (``${key}`` references), resume, run ids and timestamps, statistics, the Pareto front, the plot,
the --plotting_path hook, a Slurm array through submitit (its local executor, and a stand-in sbatch) with the vary
file's sbatch defaults, failures and the errors on bad input."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import random
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import run_script

# A recipe with the sweep's contract: --config/--output_dir/--seed in, <output_dir>/results.json out. Every call
# appends a line to calls.txt beside the script; `mode` in the config makes it crash or exit without results.
FAKE_RECIPE = """
import argparse, json, sys
from pathlib import Path
import yaml

parser = argparse.ArgumentParser()
parser.add_argument("--config", required=True)
parser.add_argument("--output_dir", required=True)
parser.add_argument("--seed", type=int, required=True)
args = parser.parse_args()
cfg = yaml.safe_load(open(args.config))
assert cfg["seed"] == args.seed and cfg["output_dir"] == args.output_dir, cfg
with open(Path(__file__).with_name("calls.txt"), "a") as f:
    f.write(f"{args.output_dir}\\n")
if cfg["mode"] == "crash":
    print("simulated crash", file=sys.stderr)
    sys.exit(3)
if cfg["mode"] == "silent":
    sys.exit(0)
task = cfg["a"] + 0.01 * args.seed
results = {"task": task, "proxy": 1 - cfg["a"] * cfg["b"], "eval": {"task": task, "name": "fake"}}
Path(args.output_dir, "results.json").write_text(json.dumps(results))
"""

BASE = {"a": 1, "b": 0.5, "mode": "ok", "learning_rate": 0.001, "nested": {"depth": 2}}


@pytest.fixture(scope="module")
def sweep():
    import trl_ext.sweep

    return trl_ext.sweep


def _write(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def _setup(tmp: Path, vary, base=None) -> list[str]:
    """Write the fake recipe, base config and vary file into ``tmp``; returns the CLI arguments that use them."""
    _write(tmp / "fake.py", FAKE_RECIPE)
    _write(tmp / "base.yaml", BASE if base is None else base)
    _write(tmp / "vary.yaml", vary)
    return [
        "--script", str(tmp / "fake.py"), "--base_config", str(tmp / "base.yaml"), "--vary", str(tmp / "vary.yaml"),
        "--output_dir", str(tmp / "out"),
    ]  # fmt: skip


def _calls(tmp: Path) -> list[str]:
    path = tmp / "fake.py"
    calls = path.with_name("calls.txt")
    return calls.read_text().splitlines() if calls.exists() else []


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- one complete sweep shared by the tests of its outputs: explicit runs (b) x grid (a), seeds 0 and 2 ----------

VARY = {"grid": {"a": [1, 2]}, "runs": [{"b": 0.1}, {"b": 0.5}]}
NAMES = ["b-0.1_a-1", "b-0.1_a-2", "b-0.5_a-1", "b-0.5_a-2"]


@pytest.fixture(scope="module")
def done(sweep, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    rc = sweep.main([*_setup(tmp, VARY), "--seeds", "0", "2"])
    return tmp, tmp / "out", rc


def test_folders_and_merged_configs(done):
    tmp, out, rc = done
    assert rc == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(NAMES)
    for name, (b, a) in zip(NAMES, itertools.product([0.1, 0.5], [1, 2])):
        run_dir = out / name
        merged = {**BASE, "a": a, "b": b, "output_dir": str(run_dir)}
        assert yaml.safe_load((run_dir / "config.yaml").read_text()) == merged
        assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml", "seed_0", "seed_2"]
        for seed in (0, 2):
            seed_dir = run_dir / f"seed_{seed}"
            cfg = yaml.safe_load((seed_dir / "config.yaml").read_text())
            assert cfg == {**BASE, "a": a, "b": b, "output_dir": str(seed_dir), "seed": seed}
            assert (seed_dir / "results.json").is_file()
            assert (seed_dir / "log.txt").read_text().startswith(f"$ {shlex.quote(sys.executable)} ")
    assert len(_calls(tmp)) == 8
    status = json.loads((out / "sweep_status.json").read_text())
    assert (status["ok"], status["failed"], status["skipped"]) == (8, 0, 0)
    manifest = json.loads((out / "sweep.json").read_text())
    assert [c["attributes"] for c in manifest["combinations"]] == [
        {"b": 0.1, "a": 1}, {"b": 0.1, "a": 2}, {"b": 0.5, "a": 1}, {"b": 0.5, "a": 2},
    ]  # fmt: skip


def test_runs_csv_and_summary_match_numpy(done):
    _, out, _ = done
    runs = _read_csv(out / "runs.csv")
    # no string metric; run_id and timestamp are the sweep's, not metrics
    assert list(runs[0]) == ["combination", "b", "a", "seed", "run_id", "timestamp", "task", "proxy", "eval.task"]
    assert len(runs) == 8
    summary = {row["combination"]: row for row in _read_csv(out / "summary.csv")}
    summary_json = {s["combination"]: s for s in json.loads((out / "summary.json").read_text())["combinations"]}
    assert list(summary) == NAMES == list(summary_json)
    for name in NAMES:
        results = [json.loads((out / name / f"seed_{s}" / "results.json").read_text()) for s in (0, 2)]
        assert summary[name]["n_seeds"] == "2"
        for metric in ("task", "proxy"):
            values = np.array([r[metric] for r in results])
            assert float(summary[name][f"{metric}_mean"]) == pytest.approx(values.mean(), abs=1e-12)
            assert float(summary[name][f"{metric}_std"]) == pytest.approx(values.std(ddof=1), abs=1e-12)
            assert summary_json[name]["metrics"][metric]["mean"] == pytest.approx(values.mean(), abs=1e-12)
            assert summary_json[name]["metrics"][metric]["std"] == pytest.approx(values.std(ddof=1), abs=1e-12)
    assert float(summary["b-0.1_a-1"]["task_std"]) == pytest.approx(np.std([1.0, 1.02], ddof=1))


def test_pareto_front_and_plot(done):
    _, out, _ = done
    result = json.loads((out / "summary.json").read_text())
    # task: a + 0.01 seed (higher a better); proxy: 1 - a b (lower b better): b-0.1 dominates b-0.5 at equal a
    assert result["pareto"] == ["b-0.1_a-1", "b-0.1_a-2"]
    assert [row["pareto"] for row in _read_csv(out / "summary.csv")] == ["True", "True", "False", "False"]
    png = (out / "pareto.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_collect_only_with_dotted_metric_and_minimize(sweep, done, tmp_path, capsys):
    _, out, _ = done
    copy = shutil.copytree(out, tmp_path / "copy")
    rc = sweep.main(["--output_dir", str(copy), "--collect_only", "--x_metric", "eval.task", "--minimize_y"])
    assert rc == 0
    result = json.loads((copy / "summary.json").read_text())
    assert (result["x_metric"], result["minimize_y"]) == ("eval.task", True)
    assert result["pareto"] == ["b-0.5_a-2"]  # highest task, lowest proxy
    assert "b-0.5_a-2" in capsys.readouterr().out


# -- vary files and names --------------------------------------------------------------------------------------


def test_grid_product_explicit_runs_and_list(sweep):
    grid = sweep.expand_vary({"a": [1, 2, 3], "b": ["x", "y"], "fixed": 7})
    assert grid == [{"a": a, "b": b, "fixed": 7} for a in (1, 2, 3) for b in ("x", "y")]
    mixed = sweep.expand_vary(
        {"grid": {"lr": [0.1, 0.2]}, "runs": [{"strategy": "kl", "beta": 1}, {"strategy": "dpo", "mods": [1, 2]}]}
    )
    assert mixed == [
        {"strategy": "kl", "beta": 1, "lr": 0.1},
        {"strategy": "kl", "beta": 1, "lr": 0.2},
        {"strategy": "dpo", "mods": [1, 2], "lr": 0.1},
        {"strategy": "dpo", "mods": [1, 2], "lr": 0.2},
    ]
    assert sweep.expand_vary({"runs": [{"a": 1}, {}]}) == [{"a": 1}, {}]
    assert sweep.expand_vary([{"a": 1}, {"a": 2}]) == [{"a": 1}, {"a": 2}]
    assert sweep.expand_vary({"grid": {"mods": [["q", "v"], ["q"]]}}) == [{"mods": ["q", "v"]}, {"mods": ["q"]}]
    with pytest.raises(sweep.SweepError, match=r"'lr' is set both in runs\[0\] and in the grid"):
        sweep.expand_vary({"grid": {"lr": [1]}, "runs": [{"lr": 2}]})
    with pytest.raises(sweep.SweepError, match="appears more than once"):
        sweep.expand_vary({"runs": [{"a": 1}, {"a": 1}]})
    with pytest.raises(sweep.SweepError, match=r"runs\[1\] must be a mapping"):
        sweep.expand_vary({"runs": [{"a": 1}, [1]]})


def test_yaml_exponent_floats(sweep, tmp_path):
    path = _write(tmp_path / "v.yaml", "beta_kl: [1e-4, 1E4, 0.5, 100, '1e-3']\n")
    assert sweep.load_yaml(path, "vary")["beta_kl"] == [1e-4, 1e4, 0.5, 100, "1e-3"]


def test_combination_names(sweep):
    name = sweep.combination_name
    assert name({"strategy": "kl_divergence", "beta_kl": 100}) == "strategy-kl_divergence_beta_kl-100"
    assert name({"path": "a/b c", "mods": ["q", "v"], "flag": True, "x": None, "lr": 1e-4}) == (
        "path-a_b_c_mods-q+v_flag-true_x-null_lr-0.0001"
    )
    assert name({}) == "base"
    long = {f"attribute_{i}": "value" * 3 for i in range(8)}
    assert len(name(long)) == 100 and name(long) == name(dict(long)) and name(long)[-9] == "-"
    assert name(long) != name({**long, "attribute_7": "other"})
    combos = sweep.make_combinations([{"p": "a/b"}, {"p": "a_b"}, {"p": "c"}])
    assert combos[0].name != combos[1].name and combos[0].name.startswith("p-a_b-") and combos[2].name == "p-c"


# -- running: resume, rerun, stale results, failures, dry run ---------------------------------------------------


def test_resume_skips_finished_runs_and_rerun_reruns(sweep, tmp_path):
    args = [*_setup(tmp_path, {"a": [1, 2]}), "--seeds", "3"]
    out = tmp_path / "out"
    assert sweep.main(args) == 0 and len(_calls(tmp_path)) == 2
    assert sweep.main(args) == 0 and len(_calls(tmp_path)) == 2  # all done: nothing runs
    assert json.loads((out / "sweep_status.json").read_text())["skipped"] == 2
    (out / "a-2" / "seed_3" / "results.json").unlink()  # an interrupted run
    assert sweep.main(args) == 0
    assert _calls(tmp_path)[2:] == [str(out / "a-2" / "seed_3")]
    assert sweep.main([*args, "--rerun"]) == 0 and len(_calls(tmp_path)) == 5
    assert (out / "a-1" / "seed_3" / "results.previous.json").is_file()
    _write(tmp_path / "base.yaml", {**BASE, "b": 0.25})  # a changed config makes the old results stale
    assert sweep.main(args) == 0 and len(_calls(tmp_path)) == 7
    assert json.loads((out / "a-1" / "seed_3" / "results.json").read_text())["proxy"] == 0.75


def test_failing_runs_are_recorded_and_the_sweep_goes_on(sweep, tmp_path, capsys):
    args = [*_setup(tmp_path, {"mode": ["crash", "ok", "silent"]}), "--seeds", "0"]
    assert sweep.main(args) == 1
    out = tmp_path / "out"
    assert len(_calls(tmp_path)) == 3
    status = json.loads((out / "sweep_status.json").read_text())
    assert (status["ok"], status["failed"]) == (1, 2)
    by_run = {s["run"]: s for s in status["runs"]}
    crash, silent = by_run["mode-crash/seed_0"], by_run["mode-silent/seed_0"]
    assert (crash["status"], crash["returncode"], crash["reason"]) == ("failed", 3, "exit code 3")
    assert "simulated crash" in Path(crash["log"]).read_text()
    assert (silent["status"], silent["returncode"], silent["reason"]) == ("failed", 0, "no results.json written")
    assert by_run["mode-ok/seed_0"]["status"] == "ok"
    summary = json.loads((out / "summary.json").read_text())
    assert [s["combination"] for s in summary["combinations"]] == ["mode-ok"]
    assert summary["missing"] == ["mode-crash/seed_0", "mode-silent/seed_0"]
    err = capsys.readouterr().err
    assert "2 of 3 runs FAILED" in err and "mode-crash/seed_0: exit code 3" in err and "| simulated crash" in err
    assert err.rstrip().endswith("(see " + str(out / "sweep_status.json") + ")")


def test_dry_run_prints_commands_and_writes_nothing(sweep, tmp_path, capsys):
    args = [*_setup(tmp_path, {"a": [1, 2], "brand_new": [True]}), "--seeds", "5", "--allow_new_keys", "--dry_run"]
    assert sweep.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[-1].startswith("# dry run: 2 of 2 runs")
    assert shlex.split(lines[0])[-6:] == [
        "--config", str(tmp_path / "out/a-1_brand_new-true/seed_5/config.yaml"),
        "--output_dir", str(tmp_path / "out/a-1_brand_new-true/seed_5"), "--seed", "5",
    ]  # fmt: skip
    assert not (tmp_path / "out").exists() and not _calls(tmp_path)


# -- Slurm ------------------------------------------------------------------------------------------------------

# The resources of a shipped sweep (e.g. 32 CPUs per task, 64 GB, 1 GPU), stated once in its vary file
SLURM_DEFAULTS = {"cpus_per_task": 32, "mem": "64G", "gpus": 1, "time": "02:00:00"}


def _fake_sbatch(tmp_path: Path, monkeypatch) -> Path:
    """A stand-in ``sbatch`` (and ``srun``, which submitit looks for) on ``PATH``: it copies the submitted script to
    the returned path and answers job 4242. The only thing mocked is this boundary; submitit writes the script."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit checks that it is on a cluster
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return tmp_path / "submitted.sh"


def _sbatch_lines(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("#SBATCH ")]


def test_slurm_array_through_submitit_local_executor(sweep, tmp_path, capsys):
    """One array job for the sweep (submitit's local executor stands in for Slurm), then --collect_only. The vary
    file's slurm defaults are checked but, as the --slurm_option ones, do not apply to the local executor."""
    vary = {"grid": {"a": [1, 2, 3]}, "slurm": SLURM_DEFAULTS}
    args = [*_setup(tmp_path, vary), "--seeds", "0", "1", "--launcher", f"{sys.executable} -u"]
    slurm = ["--slurm", "--slurm_cluster", "local", "--slurm_option", "partition=gpu", "--slurm_option", "exclusive"]
    assert sweep.main([*args, *slurm, "--slurm_max_parallel", "2"]) == 0
    out = tmp_path / "out"
    printed = capsys.readouterr().out
    assert "submitted 6 runs as one array job" in printed and "--collect_only" in printed
    jobs = json.loads((out / sweep.JOBS_FILE).read_text())
    assert jobs["cluster"] == "local" and len(jobs["jobs"]) == 6 and jobs["slurm_options"] == {}
    assert sorted(_calls(tmp_path)) == sorted(str(out / f"a-{a}" / f"seed_{s}") for a in (1, 2, 3) for s in (0, 1))
    assert sweep.main(["--output_dir", str(out), "--collect_only"]) == 0
    result = json.loads((out / "summary.json").read_text())
    assert result["n_runs"] == 6 and not result["missing"]
    # a rerun finds every result and submits nothing
    assert sweep.main([*args, *slurm]) == 0
    assert "nothing to submit" in capsys.readouterr().out


def test_slurm_submits_one_array_job(sweep, tmp_path, monkeypatch):
    """With cluster 'slurm', submitit writes one sbatch array script for the sweep; a stand-in sbatch records it.
    The vary file's slurm defaults arrive in it, each overridden by an option of the same key."""
    submitted = _fake_sbatch(tmp_path, monkeypatch)
    _setup(tmp_path, {"grid": {"a": [1, 2, 3]}, "slurm": SLURM_DEFAULTS})
    out = tmp_path / "out"
    plan = sweep.plan_sweep(tmp_path / "fake.py", tmp_path / "base.yaml", tmp_path / "vary.yaml", out, [0, 1])
    assert plan.slurm_defaults == {"cpus_per_task": "32", "mem": "64G", "gpus": "1", "time": "02:00:00"}
    sweep.write_plan(plan, plan.runs, "task", "proxy")
    options = ["partition=gpu", "time=01:00:00", "exclusive", "--mem=128G"]
    jobs = sweep.submit_slurm(plan, plan.runs, options, max_parallel=2)
    assert [job.job_id for job in jobs] == [f"4242_{i}" for i in range(6)]  # one array job, one task per run
    lines = _sbatch_lines(submitted.read_text())
    for directive in (
        "--array=0-5%2", "--partition=gpu", "--exclusive", "--job-name=sweep-out",
        "--cpus-per-task=32", "--gpus=1",  # the defaults
        "--time=01:00:00", "--mem=128G",  # the defaults overridden on the command line
    ):  # fmt: skip
        assert f"#SBATCH {directive}" in lines, lines
    for option in ("time", "mem", "cpus-per-task", "gpus"):  # once each: no default left beside its override
        assert len([line for line in lines if line.startswith(f"#SBATCH --{option}=")]) == 1, lines
    recorded = json.loads((out / sweep.JOBS_FILE).read_text())
    assert recorded["cluster"] == "slurm" and recorded["jobs"] == [f"4242_{i}" for i in range(6)]
    assert recorded["slurm_options"] == {
        "cpus_per_task": "32", "mem": "128G", "gpus": "1", "time": "01:00:00", "partition": "gpu", "exclusive": True,
    }  # fmt: skip
    assert not _calls(tmp_path)  # nothing ran here


def test_slurm_command_line_overrides_the_vary_defaults(sweep, tmp_path, monkeypatch, capsys):
    """``trl-ext-sweep --slurm`` with the vary file's defaults and one --slurm_option overriding one of them."""
    submitted = _fake_sbatch(tmp_path, monkeypatch)
    args = [*_setup(tmp_path, {"runs": [{"a": 1}, {"a": 2}], "slurm": SLURM_DEFAULTS}), "--seeds", "0"]
    assert sweep.main([*args, "--slurm", "--slurm_option", "cpus-per-task=8", "--slurm_option", "qos=high"]) == 0
    assert "submitted 2 runs as one array job (4242)" in capsys.readouterr().out
    lines = _sbatch_lines(submitted.read_text())
    for directive in ("--cpus-per-task=8", "--mem=64G", "--gpus=1", "--time=02:00:00", "--qos=high", "--array=0-1%2"):
        assert f"#SBATCH {directive}" in lines, lines
    assert "#SBATCH --cpus-per-task=32" not in lines
    options = json.loads((tmp_path / "out" / sweep.JOBS_FILE).read_text())["slurm_options"]
    assert options == {"cpus_per_task": "8", "mem": "64G", "gpus": "1", "time": "02:00:00", "qos": "high"}


def test_slurm_options_map_to_sbatch_parameters(sweep):
    from trl_ext.sweep.slurm import _slurm_directive

    assert _slurm_directive("partition=gpu") == ("partition", "gpu")
    assert _slurm_directive("--cpus-per-task=4") == ("cpus_per_task", "4")
    assert _slurm_directive("exclusive") == ("exclusive", True)
    with pytest.raises(sweep.SweepError, match="'array=0-3' is not allowed: the sweep submits one array job"):
        _slurm_directive("array=0-3")


def test_vary_slurm_defaults_are_parsed_and_normalised(sweep, tmp_path):
    """The mapping form's ``slurm:`` becomes sbatch options keyed as --slurm_option keys are (``-`` -> ``_``,
    leading dashes dropped), with string values and ``True`` for a bare flag."""
    path = _write(
        tmp_path / "v.yaml",
        "grid:\n  a: [1, 2]\nruns:\n  - {b: 0.1}\n  - {b: 0.5}\n"
        "slurm:\n  cpus-per-task: 32\n  mem: 64G\n  gpus: 1\n  --mail-type: END\n  exclusive: true\n"
        "  time: '04:00:00'\n",
    )
    vary = sweep.load_yaml(path, "vary")
    assert sweep.slurm_defaults(vary) == {
        "cpus_per_task": "32", "mem": "64G", "gpus": "1", "mail_type": "END", "exclusive": True, "time": "04:00:00",
    }  # fmt: skip
    from trl_ext.sweep.slurm import _slurm_directive

    for key, value in sweep.slurm_defaults(vary).items():  # the same normalisation as the command line's
        option = key.replace("_", "-") if value is True else f"--{key.replace('_', '-')}={value}"
        assert _slurm_directive(option) == (key, value)
    # the slurm key does not change the combinations
    assert sweep.expand_vary(vary) == sweep.expand_vary({"grid": vary["grid"], "runs": vary["runs"]})
    assert sweep.expand_vary({"runs": [{"a": 1}], "slurm": {"gpus": 1}}) == [{"a": 1}]
    assert sweep.expand_vary({"grid": {"a": [1, 2]}, "slurm": {"gpus": 1}}) == [{"a": 1}, {"a": 2}]
    # no defaults: none given, nothing under slurm:, or a form without the key
    for no_defaults in ({"grid": {"a": [1]}}, {"grid": {"a": [1]}, "slurm": None}, {"a": [1]}, [{"a": 1}]):
        assert sweep.slurm_defaults(no_defaults) == {}
    assert sweep.slurm_defaults({"grid": {"a": [1]}, "slurm": {}}) == {}
    # through plan_sweep: the same folders as without the key, the defaults kept in the plan
    _write(tmp_path / "fake.py", FAKE_RECIPE)
    _write(tmp_path / "base.yaml", BASE)
    plain = _write(tmp_path / "plain.yaml", {"grid": vary["grid"], "runs": vary["runs"]})
    plans = [
        sweep.plan_sweep(tmp_path / "fake.py", tmp_path / "base.yaml", v, tmp_path / "o", [0]) for v in (path, plain)
    ]
    assert [c.name for c in plans[0].combinations] == [c.name for c in plans[1].combinations] == NAMES
    assert [r.config for r in plans[0].runs] == [r.config for r in plans[1].runs]
    assert plans[0].slurm_defaults == sweep.slurm_defaults(vary) and plans[1].slurm_defaults == {}


def test_slurm_parameters_command_line_wins_per_key(sweep):
    defaults = sweep.slurm_defaults({"grid": {"a": [1]}, "slurm": {"cpus_per_task": 32, "mem": "64G", "gpus": 1}})
    before = dict(defaults)
    merged = sweep.slurm_parameters(defaults, ["mem=128G", "--cpus-per-task=8", "partition=gpu", "exclusive"])
    assert merged == {"cpus_per_task": "8", "mem": "128G", "gpus": "1", "partition": "gpu", "exclusive": True}
    assert defaults == before  # the plan's defaults are not changed
    assert sweep.slurm_parameters(defaults) == defaults and sweep.slurm_parameters({}, ["gpus=2"]) == {"gpus": "2"}
    assert sweep.slurm_parameters(defaults, ["mem=1G", "mem=2G"])["mem"] == "2G"  # the last one given wins
    with pytest.raises(sweep.SweepError, match="--slurm_option 'array=1' is not allowed"):
        sweep.slurm_parameters(defaults, ["array=1"])


@pytest.mark.parametrize(
    ("vary", "expected"),
    [
        ({"grid": {"a": [1]}, "slurm": ["cpus_per_task=32"]}, "'slurm' must be a mapping of sbatch options"),
        ({"grid": {"a": [1]}, "slurm": "gpus=1"}, "'slurm' must be a mapping of sbatch options"),
        ({"grid": {"a": [1]}, "slurm": {"array": "0-3"}}, "slurm option 'array' is not allowed"),
        ({"grid": {"a": [1]}, "slurm": {"": 1}}, "slurm option '' has no key"),
        ({"grid": {"a": [1]}, "slurm": {"--": 1}}, "slurm option '--' has no key"),
        ({"grid": {"a": [1]}, "slurm": {"mem": None}}, "slurm option 'mem': the value must be"),
        ({"grid": {"a": [1]}, "slurm": {"exclusive": False}}, "slurm option 'exclusive': the value must be"),
        ({"grid": {"a": [1]}, "slurm": {"gpus": [1]}}, "slurm option 'gpus': the value must be"),
        ({"runs": [{"a": 1}], "slurm": {"cpus-per-task": 4, "cpus_per_task": 8}}, "'cpus_per_task' is set twice"),
        ({"a": [1], "slurm": {"gpus": 1}}, "'slurm' (the sbatch defaults) goes beside 'grid' and 'runs'"),
    ],
    ids=["list", "string", "array", "empty-key", "dashes-only", "null", "false", "list-value", "twice", "plain-grid"],
)
@pytest.mark.parametrize(
    "mode", [[], ["--dry_run"], ["--slurm", "--slurm_cluster", "local"]], ids=["local", "dry", "slurm"]
)
def test_bad_slurm_defaults_errors(sweep, tmp_path, capsys, vary, expected, mode):
    """A bad ``slurm:`` entry is a user error naming the vary file and the key, raised before anything is written,
    run or submitted, with or without --slurm."""
    args = [*_setup(tmp_path, vary), "--seeds", "0"]
    assert sweep.main([*args, *mode]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trl-ext-sweep: error: ")
    assert f"vary file {tmp_path / 'vary.yaml'}: " in err and expected in err, err
    assert not (tmp_path / "out").exists() and not _calls(tmp_path)


def test_bad_slurm_option_with_vary_defaults_writes_nothing(sweep, tmp_path, capsys):
    args = [*_setup(tmp_path, {"grid": {"a": [1]}, "slurm": SLURM_DEFAULTS}), "--seeds", "0"]
    assert sweep.main([*args, "--slurm", "--slurm_cluster", "local", "--slurm_option", "array=0-9"]) == 2
    assert "--slurm_option 'array=0-9' is not allowed" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not _calls(tmp_path)


def test_slurm_without_a_cluster_says_so(sweep, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun, no sbatch
    _setup(tmp_path, {"a": [1]})
    plan = sweep.plan_sweep(tmp_path / "fake.py", tmp_path / "base.yaml", tmp_path / "vary.yaml", tmp_path / "o", [0])
    with pytest.raises(sweep.SweepError, match=r"--slurm: .*srun.*--slurm_cluster local"):
        sweep.submit_slurm(plan, plan.runs)


# -- Pareto front and statistics --------------------------------------------------------------------------------


def _brute_force_front(points, maximize_x=True, maximize_y=True):
    sx, sy = (1 if maximize_x else -1), (1 if maximize_y else -1)
    pts = [(sx * x, sy * y) for x, y in points]

    def dominated(p):
        return any(q[0] >= p[0] and q[1] >= p[1] and (q[0] > p[0] or q[1] > p[1]) for q in pts)

    return [i for i, p in enumerate(pts) if not dominated(p)]


def test_pareto_front_against_brute_force(sweep):
    rng = random.Random(0)
    for trial in range(300):
        n = rng.randint(0, 25)
        grid = trial % 2 == 0  # small integer grid: many ties and duplicates
        points = [(rng.randint(0, 5), rng.randint(0, 5)) if grid else (rng.random(), rng.random()) for _ in range(n)]
        for mx, my in itertools.product([True, False], repeat=2):
            assert sweep.pareto_front(points, mx, my) == _brute_force_front(points, mx, my), (points, mx, my)
    assert sweep.pareto_front([(1, 1), (1, 1), (0, 2)]) == [0, 1, 2]  # equal points do not dominate each other
    assert sweep.pareto_front([(1, 1), (1, 2), (2, 1)]) == [1, 2]
    assert sweep.pareto_front([(math.nan, 5), (1, 1)]) == [1]


def test_summary_of_one_seed_has_no_std(sweep):
    combos = [{"name": "c", "attributes": {"a": 1}}, {"name": "empty", "attributes": {"a": 2}}]
    rows = [{"combination": "c", "attributes": {"a": 1}, "seed": 0, "metrics": {"task": 0.5, "proxy": 0.25}}]
    (entry,) = sweep.summarise(rows, combos, "task", "proxy")
    assert entry["n_seeds"] == 1 and entry["metrics"]["task"] == {"mean": 0.5, "std": None, "n": 1}
    assert entry["pareto"] is True
    assert sweep.flatten_metrics({"a": 1, "b": {"c": 2.5, "d": "x", "e": True, "f": [1]}}) == {"a": 1.0, "b.c": 2.5}


def test_collect_leaves_the_seed_out_of_the_metrics(sweep, tmp_path):
    """A recipe that echoes its seed into results.json (recipes/selective_generalisation.py does): the summaries
    list the seeds but average no ``seed``; the metrics' mean and sample std match numpy's."""
    _setup(tmp_path, {"a": [1, 2]})
    out = tmp_path / "out"
    seeds = [0, 3, 7]
    plan = sweep.plan_sweep(tmp_path / "fake.py", tmp_path / "base.yaml", tmp_path / "vary.yaml", out, seeds)
    sweep.write_plan(plan, plan.runs, "task", "proxy")  # the folders and manifest, no run
    rng = random.Random(1)
    written: dict[str, list[dict]] = {}
    for run in plan.runs:
        results = {"seed": run.seed, "task": rng.random(), "proxy": rng.random(), "eval": {"task": rng.random()}}
        _write(run.results_path, json.dumps(results))
        written.setdefault(run.combination.name, []).append(results)
    result = sweep.collect(out)

    csv_rows = _read_csv(out / "summary.csv")
    columns = list(csv_rows[0])
    assert not [c for c in columns if c.startswith("seed_") or c == "seed"], columns
    assert columns == ["combination", "a", "n_seeds", "seeds", "pareto"] + [
        f"{m}_{stat}" for m in ("task", "proxy", "eval.task") for stat in ("mean", "std")
    ]
    on_disk = json.loads((out / "summary.json").read_text())
    for rows in (result["combinations"], on_disk["combinations"]):
        assert [sorted(s["metrics"]) for s in rows] == [["eval.task", "proxy", "task"]] * 2
    by_name = {row["combination"]: row for row in csv_rows}
    for entry in on_disk["combinations"]:
        name, runs = entry["combination"], written[entry["combination"]]
        assert entry["seeds"] == seeds and entry["n_seeds"] == 3
        assert json.loads(by_name[name]["seeds"]) == seeds and by_name[name]["n_seeds"] == "3"
        for metric, values in (
            ("task", [r["task"] for r in runs]),
            ("proxy", [r["proxy"] for r in runs]),
            ("eval.task", [r["eval"]["task"] for r in runs]),
        ):
            mean, std = float(np.mean(values)), float(np.std(values, ddof=1))
            assert entry["metrics"][metric] == {"mean": pytest.approx(mean, abs=1e-12),
                                                "std": pytest.approx(std, abs=1e-12), "n": 3}  # fmt: skip
            assert float(by_name[name][f"{metric}_mean"]) == pytest.approx(mean, abs=1e-12)
            assert float(by_name[name][f"{metric}_std"]) == pytest.approx(std, abs=1e-12)
    with open(out / "runs.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header.count("seed") == 1  # the folder's seed, not a second column from results.json
    assert [int(r["seed"]) for r in _read_csv(out / "runs.csv")] == seeds * 2
    with pytest.raises(sweep.SweepError, match="--x_metric seed: 'seed' identifies a run"):
        sweep.collect(out, x_metric="seed")


def _fake_summary(n: int, name: str = "strategy-kl_beta_kl-{}") -> list[dict]:
    rng = random.Random(n)
    return [
        {
            "combination": name.format(i),
            "metrics": {m: {"mean": rng.random(), "std": 0.05, "n": 3} for m in ("task", "proxy")},
            "pareto": i % 3 == 0,
        }
        for i in range(n)
    ]


@pytest.mark.parametrize(
    "summary",
    [_fake_summary(1), _fake_summary(6), _fake_summary(40), _fake_summary(4, "x" * 96 + "-{}")],
    ids=["one", "few", "many", "long-names"],
)
def test_pareto_plot_uses_its_figure(sweep, tmp_path, summary):
    """The plot takes most of the figure, the key sits beside or below it inside the figure without overlapping
    it, and the PNG is the figure uncropped (so these fractions are the saved image's)."""
    fig = sweep.pareto_figure(summary, "task", "proxy")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (ax,) = fig.axes
    position = ax.get_position()
    assert position.width * position.height >= 0.55, position.bounds
    assert min(position.width, position.height) >= 0.45, position.bounds
    key = fig.texts[0].get_window_extent(renderer)
    assert f"{len(summary):>2}  {summary[-1]['combination']}" in fig.texts[0].get_text()
    assert fig.bbox.x0 <= key.x0 and key.x1 <= fig.bbox.x1 and fig.bbox.y0 <= key.y0 and key.y1 <= fig.bbox.y1
    plot = ax.get_tightbbox(renderer)  # with the tick labels, axis labels, title and legend
    assert fig.bbox.x0 <= plot.x0 and plot.x1 <= fig.bbox.x1 and fig.bbox.y0 <= plot.y0 and plot.y1 <= fig.bbox.y1
    assert not plot.overlaps(key)
    sweep.plot_pareto(summary, "task", "proxy", tmp_path / "pareto.png")
    header = (tmp_path / "pareto.png").read_bytes()[:24]
    width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    expected = fig.get_size_inches() * 150
    assert abs(width - expected[0]) <= 1 and abs(height - expected[1]) <= 1, (width, height, expected)


# -- errors on bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vary", "base", "drop", "expected"),
    [
        ({"a": [1]}, None, "--script", ["--script is required"]),
        ({}, None, None, ["vary file", "is empty"]),
        ("", None, None, ["vary file", "is empty"]),
        ({"grid": {}, "runs": None}, None, None, ["is empty"]),
        ({"a": [1], "b": []}, None, None, ["attribute 'b' has an empty list of values"]),
        ({"runs": []}, None, None, ["'runs' is an empty list"]),
        ({"learning_rat": [0.1]}, None, None, ["'learning_rat'", "did you mean: learning_rate?", "--allow_new_keys"]),
        ({"nested.dept": [3]}, None, None, ["'nested.dept'", "did you mean: nested.depth"]),
        ({"seed": [1, 2]}, None, None, ["attribute 'seed' cannot be varied"]),
        ({"a": [1]}, "- not a mapping\n", None, ["must be a mapping"]),
    ],
)
def test_bad_vary_or_config_errors(sweep, tmp_path, capsys, vary, base, drop, expected):
    args = _setup(tmp_path, vary, base=base)
    if drop:
        i = args.index(drop)
        args = args[:i] + args[i + 2 :]
    assert sweep.main([*args, "--dry_run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trl-ext-sweep: error: ")
    for text in expected:
        assert text in err
    assert not _calls(tmp_path)


@pytest.mark.parametrize("missing", ["fake.py", "base.yaml", "vary.yaml"])
def test_missing_input_files(sweep, tmp_path, capsys, missing):
    args = _setup(tmp_path, {"a": [1]})
    (tmp_path / missing).unlink()
    assert sweep.main(args) == 2
    flag = {"fake.py": "--script", "base.yaml": "--base_config", "vary.yaml": "--vary file"}[missing]
    assert f"{flag} not found: {tmp_path / missing}" in capsys.readouterr().err


def test_nested_key_is_varied_in_place(sweep, tmp_path):
    plan = sweep.plan_sweep(
        _write(tmp_path / "fake.py", FAKE_RECIPE), _write(tmp_path / "b.yaml", BASE),
        _write(tmp_path / "v.yaml", {"nested.depth": [3]}), tmp_path / "out", [0],
    )  # fmt: skip
    assert plan.runs[0].config["nested"] == {"depth": 3} and "nested.depth" not in plan.runs[0].config


def test_collect_errors(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert sweep.main(["--output_dir", str(out), "--collect_only"]) == 2
    assert f"no sweep.json in {out}" in capsys.readouterr().err
    _setup(tmp_path, {"a": [1, 2]})
    plan = sweep.plan_sweep(tmp_path / "fake.py", tmp_path / "base.yaml", tmp_path / "vary.yaml", out, [0])
    sweep.write_plan(plan, plan.runs, "task", "proxy")  # the folders and manifest, no run
    assert sweep.main(["--output_dir", str(out), "--collect_only"]) == 2
    assert f"no results.json found under {out} (2 runs expected)" in capsys.readouterr().err
    _write(out / "a-2" / "seed_0" / "results.json", json.dumps({"task": 1.0, "eval": {"proxy": 2}}))
    assert sweep.main(["--output_dir", str(out), "--collect_only"]) == 2
    err = capsys.readouterr().err
    assert f"run folder {out / 'a-2' / 'seed_0'}" in err and "no numeric metric 'proxy'" in err
    assert "available keys: eval.proxy, task" in err
    assert sweep.main(["--output_dir", str(out), "--collect_only", "--y_metric", "eval.proxy"]) == 0
    with pytest.raises(sweep.SweepError, match="--slurm_option '=x' has no key"):
        sweep.submit_slurm(plan, plan.runs, ["=x"], cluster="local")


# -- the command line in a subprocess ---------------------------------------------------------------------------


def test_command_line_subprocess(tmp_path):
    args = [*_setup(tmp_path, {"a": [1, 2]}), "--seeds", "0", "--x_metric", "eval.task"]
    proc = run_script(["recipes/sweep.py", *args], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "all 2 runs succeeded" in proc.stdout and "pareto.png" in proc.stdout
    result = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert result["x_metric"] == "eval.task" and result["n_runs"] == 2


# -- derived fields: ${key} references resolved per run -----------------------------------------------------------

# A base config with derived fields: a path from the strategy and the seed (the original driver's steering-vector
# path), references to references in dependency order (tag -> plane_path -> strategy, seed), a nested key, a whole
# value keeping its type, a format spec, and literal braces (plain, str.format and Jinja style, and the $${ escape).
DERIVED_BASE = {
    **BASE,
    "tag": "${plane_path}|depth=${nested.depth}",
    "plane_path": "planes/${strategy}_${seed}.safetensors",
    "strategy": "naive",
    "nested": {"depth": 2, "label": "d${nested.depth}-s${seed:03d}"},
    "eval_lr": "${learning_rate}",
    "literal": "$${not_a_ref} {x} {{ y }} {% z %}",
}
DERIVED_VARY = {"grid": {"strategy": ["kl", "dpo"]}, "runs": [{"b": 0.5}, {"b": "${a}"}]}

# A plotting hook: appends what it was called with to plot_calls.jsonl beside the sweep folder.
PLOT_SCRIPT = """
import json
from pathlib import Path


def plot(results, output_dir):
    assert isinstance(output_dir, Path)
    record = {"output_dir": str(output_dir), "results": results}
    with open(output_dir.parent / "plot_calls.jsonl", "a") as f:
        f.write(json.dumps(record) + "\\n")
"""


def _derived_expected(strategy: str, seed: int, b, seed_dir: Path) -> dict:
    plane = f"planes/{strategy}_{seed}.safetensors"
    return {
        **BASE,
        "b": b,
        "tag": f"{plane}|depth=2",
        "plane_path": plane,
        "strategy": strategy,
        "nested": {"depth": 2, "label": f"d2-s{seed:03d}"},
        "eval_lr": 0.001,
        "literal": "${not_a_ref} {x} {{ y }} {% z %}",
        "output_dir": str(seed_dir),
        "seed": seed,
    }


@pytest.fixture(scope="module")
def derived(sweep, tmp_path_factory):
    """A sweep with derived fields and a plotting hook: 2 runs x 2 strategies x seeds 0 and 1."""
    tmp = tmp_path_factory.mktemp("derived")
    args = _setup(tmp, DERIVED_VARY, base=DERIVED_BASE)
    plot = _write(tmp / "plot.py", PLOT_SCRIPT)
    rc = sweep.main([*args, "--seeds", "0", "1", "--plotting_path", str(plot)])
    return tmp, tmp / "out", rc


def test_derived_fields_are_resolved_per_run(sweep, derived):
    tmp, out, rc = derived
    assert rc == 0 and len(_calls(tmp)) == 8
    plan = sweep.plan_sweep(tmp / "fake.py", tmp / "base.yaml", tmp / "vary.yaml", out, [0, 1])
    names = [c.name for c in plan.combinations]
    assert names == ["b-0.5_strategy-kl", "b-0.5_strategy-dpo", "b-__a__strategy-kl", "b-__a__strategy-dpo"]
    for run in plan.runs:
        b = 0.5 if run.combination.overrides["b"] == 0.5 else 1  # "${a}" (a whole value) takes a's value, an int
        expected = _derived_expected(run.combination.overrides["strategy"], run.seed, b, run.seed_dir)
        assert run.config == expected
        assert yaml.safe_load((run.seed_dir / "config.yaml").read_text()) == expected  # what the recipe read
        assert run.command[-6:] == ["--config", str(run.seed_dir / "config.yaml"), "--output_dir",
                                    str(run.seed_dir), "--seed", str(run.seed)]  # fmt: skip
        assert type(run.config["b"]) is type(b) and run.config["eval_lr"] == 0.001
    assert len({run.config["plane_path"] for run in plan.runs}) == 4  # strategy x seed
    # a combination's own config.yaml keeps the references as written (it has no seed)
    combo = yaml.safe_load((out / "b-__a__strategy-kl" / "config.yaml").read_text())
    assert combo["plane_path"] == DERIVED_BASE["plane_path"] and combo["b"] == "${a}"
    # the recipe's results of the first run are there, and a second sweep resumes: nothing is stale
    assert sweep.pending_runs(plan.runs) == []


def test_resolve_references_rules(sweep):
    resolve = sweep.resolve_references
    config = {"a": "${b.c}/${d}", "b": {"c": "${d}${d}"}, "d": "x", "n": [1, "${d}", {"k": "${e}"}], "e": 2.5}
    assert resolve(config) == {"a": "xx/x", "b": {"c": "xx"}, "d": "x", "n": [1, "x", {"k": 2.5}], "e": 2.5}
    assert config["a"] == "${b.c}/${d}"  # the input is left as it is
    assert resolve({"l": [1, 2], "m": "${l}", "f": True, "s": "${f}-${missing_ok:>3}", "missing_ok": 7}) == {
        "l": [1, 2], "m": [1, 2], "f": True, "s": "True-  7", "missing_ok": 7,
    }  # fmt: skip
    assert resolve({"p": "$${a}", "q": "$$", "r": "{a} {{a}}", "s": "$a"}) == {
        "p": "${a}", "q": "$$", "r": "{a} {{a}}", "s": "$a",
    }  # fmt: skip
    assert resolve({"a.b": 1, "c": "${a.b}"})["c"] == 1  # a top-level dotted key wins over a nested path


@pytest.mark.parametrize(
    ("base_extra", "vary", "expected"),
    [
        ({"x": "${y}", "y": "${x}"}, {"a": [1]}, ["field 'y' refers to '${x}'", "cycle", "x -> y -> x"]),
        ({"x": "${x}"}, {"a": [1]}, ["field 'x' refers to '${x}'", "cycle", "(x -> x)"]),
        ({"x": {"y": "${x}"}}, {"a": [1]}, ["field 'x.y' refers to '${x}'", "cycle"]),
        ({"p": "planes/${stratgy}_${seed}"}, {"a": [1]}, ["field 'p' refers to '${stratgy}'", "not a key"]),
        ({"p": "${nested.dept}"}, {"a": [1]}, ["field 'p' refers to '${nested.dept}'", "did you mean: nested.depth"]),
        ({}, {"b": ["${unknown}"]}, ["run b-__unknown_/seed_0: field 'b' refers to '${unknown}'", "not a key"]),
        ({"p": "${a"}, {"a": [1]}, ["field 'p' has a bad reference", "without a closing", "$${"]),
        ({"p": "x${nested}"}, {"a": [1]}, ["field 'p' refers to '${nested}', a dict, inside a string"]),
        ({"p": "${a:q}"}, {"a": [1]}, ["field 'p' refers to '${a:q}': bad format spec"]),
    ],
    ids=["cycle", "self", "parent", "unknown", "unknown-nested", "unknown-in-vary", "unterminated", "dict", "spec"],
)
def test_bad_references_are_errors_before_any_run(sweep, tmp_path, capsys, base_extra, vary, expected):
    """A cycle or an unknown name is a user error naming the run, the field and the reference, raised when the plan
    is built: nothing is written or run."""
    args = [*_setup(tmp_path, vary, base={**BASE, **base_extra}), "--seeds", "0"]
    assert sweep.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("trl-ext-sweep: error: run "), err
    for text in expected:
        assert text in err, err
    assert not (tmp_path / "out").exists() and not _calls(tmp_path)
    with pytest.raises(sweep.SweepError, match="refers to|bad reference"):
        sweep.plan_sweep(tmp_path / "fake.py", tmp_path / "base.yaml", tmp_path / "vary.yaml", tmp_path / "o", [0])


# -- the plotting hook (--plotting_path) --------------------------------------------------------------------------


def _plot_calls(tmp: Path) -> list[dict]:
    path = tmp / "plot_calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_plotting_hook_is_called_once_with_the_collected_results(sweep, derived, tmp_path, capsys):
    tmp, out, _ = derived
    (call,) = _plot_calls(tmp)
    assert call["output_dir"] == str(out)
    results = call["results"]
    assert results == json.loads((out / "summary.json").read_text())  # what collect() returned and wrote
    assert results["n_runs"] == 8 and len(results["combinations"]) == 4 and len(results["runs"]) == 8
    assert {r["combination"] for r in results["runs"]} == {c["combination"] for c in results["combinations"]}
    for row in results["runs"]:
        on_disk = json.loads((out / row["combination"] / f"seed_{row['seed']}" / "results.json").read_text())
        assert (row["run_id"], row["timestamp"]) == (on_disk["run_id"], on_disk["timestamp"])
        assert row["metrics"]["task"] == on_disk["task"]
    # --collect_only calls it too (once), here on a copy of the sweep folder
    copy = shutil.copytree(out, tmp_path / "sweep")
    plot = _write(tmp_path / "plot.py", PLOT_SCRIPT)
    assert sweep.main(["--output_dir", str(copy), "--collect_only", "--plotting_path", str(plot)]) == 0
    (again,) = _plot_calls(tmp_path)
    assert again["output_dir"] == str(copy) and again["results"]["runs"] == results["runs"]
    assert f"called plot() of {plot}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (None, "no such file"),
        ("def plot(results, output_dir):\n    raise ValueError('no pareto front to draw')\n",
         "plot() raised ValueError: no pareto front to draw (line 2: raise ValueError('no pareto front to draw'))"),
        ("def plotting(results, output_dir):\n    pass\n", "defines no function 'plot(results, output_dir)' "
         "(functions defined: plotting)"),
        ("plot = 3\n", "defines no function 'plot(results, output_dir)'"),
        ("def plot(results):\n    pass\n", "'plot' must take two arguments"),
        ("import no_such_module_for_the_hook\n", "importing it raised ModuleNotFoundError"),
        ("def plot(results, output_dir)\n", "importing it raised SyntaxError"),
    ],
    ids=["missing", "raises", "no-plot", "not-callable", "arity", "import-error", "syntax-error"],
)  # fmt: skip
def test_plotting_hook_errors_name_the_script(sweep, done, tmp_path, capsys, script, expected):
    _, out, _ = done
    copy = shutil.copytree(out, tmp_path / "sweep")
    path = tmp_path / "hook.py"
    if script is not None:
        _write(path, script)
    assert sweep.main(["--output_dir", str(copy), "--collect_only", "--plotting_path", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"trl-ext-sweep: error: --plotting_path {path}") and expected in err, err


def test_bad_plotting_hook_fails_before_any_run(sweep, tmp_path, capsys):
    args = [*_setup(tmp_path, {"a": [1, 2]}), "--seeds", "0"]
    _write(tmp_path / "hook.py", "def draw(results, output_dir):\n    pass\n")
    assert sweep.main([*args, "--plotting_path", str(tmp_path / "hook.py")]) == 2
    assert "defines no function 'plot" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not _calls(tmp_path)


# -- run ids and timestamps -----------------------------------------------------------------------------------------


def test_results_carry_a_stable_run_id_and_a_utc_timestamp(sweep, done, tmp_path):
    from datetime import datetime, timedelta, timezone

    tmp, out, _ = done
    ids = {}
    for name in NAMES:
        for seed in (0, 2):
            seed_dir = out / name / f"seed_{seed}"
            results = json.loads((seed_dir / "results.json").read_text())
            config = yaml.safe_load((seed_dir / "config.yaml").read_text())
            assert results["run_id"] == sweep.run_id(config) and len(results["run_id"]) == 12
            assert int(results["run_id"], 16) >= 0
            stamp = datetime.fromisoformat(results["timestamp"])
            assert stamp.utcoffset() == timedelta(0)
            assert abs(datetime.now(timezone.utc) - stamp) < timedelta(hours=1)
            assert {"task", "proxy", "eval"} <= set(results)  # the recipe's results are kept
            ids[(name, seed)] = results["run_id"]
    assert len(set(ids.values())) == 8  # different seeds and combinations: different ids
    status = {s["run"]: s for s in json.loads((out / "sweep_status.json").read_text())["runs"]}
    assert all(status[f"{n}/seed_{s}"]["run_id"] == rid for (n, s), rid in ids.items())
    runs_csv = {(r["combination"], int(r["seed"])): r for r in _read_csv(out / "runs.csv")}
    assert all(runs_csv[key]["run_id"] == rid for key, rid in ids.items())
    # the same config gives the same id: planned again, elsewhere (output_dir is not part of it), or dict by dict
    plan = sweep.plan_sweep(tmp / "fake.py", tmp / "base.yaml", tmp / "vary.yaml", tmp_path / "elsewhere", [0, 2])
    assert {(r.combination.name, r.seed): r.run_id for r in plan.runs} == ids
    config = {"a": 1, "nested": {"x": [1, 2]}, "seed": 0, "output_dir": "/x"}
    same = {"output_dir": "/y", "seed": 0, "nested": {"x": [1, 2]}, "a": 1}
    assert sweep.run_id(config) == sweep.run_id(same) != sweep.run_id({**config, "seed": 1})


def test_rerun_keeps_the_run_id_and_restamps(sweep, tmp_path):
    args = [*_setup(tmp_path, {"a": [1]}), "--seeds", "0"]
    results = tmp_path / "out" / "a-1" / "seed_0" / "results.json"
    assert sweep.main(args) == 0
    first = json.loads(results.read_text())
    _write(results, json.dumps({**first, "timestamp": "2000-01-01T00:00:00+00:00"}))
    assert sweep.main([*args, "--rerun"]) == 0
    second = json.loads(results.read_text())
    assert second["run_id"] == first["run_id"] and second["timestamp"] > "2000"
    assert list(second) == ["task", "proxy", "eval", "run_id", "timestamp"]


def test_collect_computes_the_run_id_of_unstamped_results(sweep, tmp_path):
    """Results written outside the sweep (no run_id, no timestamp): the collector computes the run id from the run's
    config.yaml; the timestamp stays empty."""
    _setup(tmp_path, {"a": [1, 2]})
    out = tmp_path / "out"
    plan = sweep.plan_sweep(tmp_path / "fake.py", tmp_path / "base.yaml", tmp_path / "vary.yaml", out, [0])
    sweep.write_plan(plan, plan.runs, "task", "proxy")
    for run in plan.runs:
        _write(run.results_path, json.dumps({"task": 1.0, "proxy": 0.5}))
    result = sweep.collect(out)
    assert [(r["run_id"], r["timestamp"]) for r in result["runs"]] == [(run.run_id, None) for run in plan.runs]
    assert [r["timestamp"] for r in _read_csv(out / "runs.csv")] == ["", ""]
    with pytest.raises(sweep.SweepError, match="--y_metric run_id: 'run_id' identifies a run"):
        sweep.collect(out, y_metric="run_id")
