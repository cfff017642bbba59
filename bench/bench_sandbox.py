"""Throughput of the sandbox against bare subprocesses, and the cost of the ABD/DED reward per PPO rollout.

The issue's target: with full isolation (bubblewrap), **at least 0.7x** the executions per second of a bare
``subprocess.run([sys.executable, "-c", program])`` at the same parallelism, measured in the same run.

What is run
    The trivial program ``print(1)``, ``--executions`` (200) times per arm and round, at each parallelism of
    ``--workers`` (1 and 2):

    * ``sandbox``: one ``Sandbox(workers=w).run_many([...])`` call (SPEC §6 limits, ``isolation`` ``--isolation``,
      default ``required``: bubblewrap or an error); every execution gets its own program folder, namespaces,
      rlimits, user id (as root) and output supervision, exactly as a reward call;
    * ``bare``: a ``ThreadPoolExecutor(w)`` mapping ``subprocess.run([sys.executable, "-c", "print(1)"],
      capture_output=True)`` over as many executions (this interpreter: the project's virtual environment, site
      packages included, as a user would call it);
    * ``same_python``: the same pool running the sandbox's own interpreter and flags (``-I -S -X utf8``: no
      site-packages) without any sandbox, to isolate the sandbox's cost.

    ``--repeats`` (5) rounds, the arm order rotating round by round. Throughput = executions / wall seconds of
    the call; the ratio is the median over rounds of the per-round ratios (sandbox / bare). The per-execution
    overhead is ``(sandbox − same_python) wall seconds per execution`` (median over rounds): namespaces, mounts,
    ``prlimit``/``setpriv``, the program folder and the supervision.

    Reward cost: the PPO reward function of the tiny all-task config (``make_task_reward`` over ``sat``, ``abd``,
    ``ded``; ``recipes/configs/ppo_affine_all_tiny.yaml``) on a rollout of ``--rollout_size`` (8) completions drawn
    like the PPO data (instances of the three tasks in turn; their expert answers, so every ABD/DED answer runs: the
    worst case in runs), ``--repeats`` times: milliseconds per rollout (median) and per completion.

Run ``python bench/bench_sandbox.py`` (``--quick``: 20 executions, 1 round, the smoke test of the tests).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import harness as hx

PROGRAM = "print(1)"
TARGET = 0.7
"""Sandbox / bare throughput at the same parallelism, with full isolation."""
CODE_FILES = ("trl_ext/tasks/sandbox/runner.py", "trl_ext/tasks/sandbox/isolation.py", "trl_ext/tasks/programs.py")


def parse_args(argv=None):
    parser = hx.bench_parser(
        __doc__, repeats=5, repeats_help="Rounds of both arms per parallelism.",
        quick_help="Smoke run: 20 executions, 1 round.",
    )  # fmt: skip
    parser.add_argument("--executions", type=int, default=200, help="Executions per arm and round.")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Parallelisms to measure.")
    parser.add_argument("--isolation", default="required", choices=["required", "auto", "none"])
    parser.add_argument("--rollout_size", type=int, default=8, help="Completions per PPO rollout (the tiny config).")
    opts = parser.parse_args(argv)
    hx.check_common(parser, opts)
    hx.require(parser, opts.executions >= 1 and min(opts.workers) >= 1, "--executions and --workers must be >= 1")
    if opts.quick:
        opts.executions, opts.repeats = 20, 1
    return opts


def run_bare(n: int, workers: int, python: list[str] | None = None) -> float:
    cmd = [*(python or [sys.executable]), "-c", PROGRAM]

    def one(_):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.stdout == "1\n", proc.stderr

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(n)))
    return time.perf_counter() - start


def run_sandbox(box, n: int) -> float:
    start = time.perf_counter()
    results = box.run_many([PROGRAM] * n)
    wall = time.perf_counter() - start
    bad = [r for r in results if not (r.ok and r.stdout == "1\n")]
    assert not bad, bad[:1]
    return wall


def reward_cost(opts) -> dict:
    from trl_ext.data.affine import instance_to_row
    from trl_ext.tasks import get_task, make_task_reward

    params = {"sat": {"n": 5, "k": 3}, "abd": {"isolation": opts.isolation}, "ded": {"isolation": opts.isolation}}
    tasks = {name: get_task(name, **p) for name, p in params.items()}
    drawn = {name: task.generate_many(opts.rollout_size, seed=opts.seed) for name, task in tasks.items()}
    names = list(tasks)
    instances = [drawn[names[i % 3]][i // 3] for i in range(opts.rollout_size)]
    rows = [instance_to_row(inst) for inst in instances]
    reward = make_task_reward(params)
    completions = [inst.expert_answer for inst in instances]
    kwargs = {"task": [r["task"] for r in rows], "payload": [r["payload"] for r in rows]}
    reward([r["prompt"] for r in rows], completions, **kwargs)  # warm: sandbox probe, row loading
    times = []
    for _ in range(max(3, opts.repeats)):
        start = time.perf_counter()
        scores = reward([r["prompt"] for r in rows], completions, **kwargs)
        times.append(time.perf_counter() - start)
        assert scores == [1.0] * len(rows), scores
    med = statistics.median(times)
    return {"rollout_size": len(rows), "ms_per_rollout": 1e3 * med, "ms_per_completion": 1e3 * med / len(rows),
            "seconds": times, "tasks": [r["task"] for r in rows]}  # fmt: skip


def main(argv=None) -> dict:
    opts = parse_args(argv)
    from trl_ext.tasks.sandbox import Sandbox

    session = hx.BenchSession(opts, packages=(), code_files=CODE_FILES)
    per_workers, runs = {}, []
    for workers in opts.workers:
        box = Sandbox(workers=workers, isolation=opts.isolation)
        run_sandbox(box, min(4, opts.executions))  # warm-up: the probe, the thread pool
        same = box.isolation.interpreter()  # the sandbox's interpreter and flags, no sandbox

        def run(arm, rnd, box=box, workers=workers, same=same):
            if arm == "sandbox":
                return arm, run_sandbox(box, opts.executions)
            return arm, run_bare(opts.executions, workers, same if arm == "same_python" else None)

        results, _ = hx.run_rounds(
            ["sandbox", "bare", "same_python"], opts.repeats, run,
            describe=lambda r: f"{r[0]:<7} {opts.executions / r[1]:7.1f} exec/s", desc=f"{workers} worker(s)",
        )  # fmt: skip
        box.close()
        walls = {arm: [w for a, w in results if a == arm] for arm in ("sandbox", "bare", "same_python")}
        ratio = hx.paired_ratios([1 / w for w in walls["sandbox"]], [1 / w for w in walls["bare"]])
        per_workers[str(workers)] = {
            "sandbox_exec_per_s": opts.executions / statistics.median(walls["sandbox"]),
            "bare_exec_per_s": opts.executions / statistics.median(walls["bare"]),
            "throughput_ratio": ratio["median_of_rounds"],
            "throughput_ratio_per_round": ratio["per_round"],
            "same_python_exec_per_s": opts.executions / statistics.median(walls["same_python"]),
            "overhead_ms_per_execution": 1e3
            * statistics.median([(s - b) / opts.executions for s, b in zip(walls["sandbox"], walls["same_python"])]),
            "isolation": box.isolation.kind,
        }
        runs += [{"workers": workers, "arm": a, "wall_s": w} for a, w in results]
    verdicts = {w: "MET" if s["throughput_ratio"] >= TARGET else "NOT MET" for w, s in per_workers.items()}
    summary = {"targets": {"throughput_ratio": TARGET}, "workers": per_workers, "verdicts": verdicts,
               "reward": reward_cost(opts), "executions": opts.executions}  # fmt: skip
    summary = session.finish(summary)
    print(f"\nsandbox ({per_workers[str(opts.workers[0])]['isolation']}) vs bare subprocess.run, "
          f"{opts.executions} executions of {PROGRAM!r}, median of {opts.repeats} round(s):")  # fmt: skip
    print(f"{'workers':>7} {'sandbox/s':>10} {'bare/s':>8} {'ratio':>6} {'same-python/s':>14} {'overhead':>10}")
    for w, s in per_workers.items():
        print(f"{w:>7} {s['sandbox_exec_per_s']:10.1f} {s['bare_exec_per_s']:8.1f} {s['throughput_ratio']:6.2f} "
              f"{s['same_python_exec_per_s']:14.1f} {s['overhead_ms_per_execution']:8.1f}ms")  # fmt: skip
    print(
        "bare: this interpreter (its site-packages load); same-python: the sandbox's interpreter and flags (-I -S)"
        " without the sandbox; overhead: sandbox - same-python per execution"
    )
    print("TARGET sandbox/bare throughput >= 0.70: " + ", ".join(f"{w} worker(s) {v}" for w, v in verdicts.items()))
    r = summary["reward"]
    print(f"reward of a PPO rollout ({r['rollout_size']} completions: {', '.join(r['tasks'])}): "
          f"{r['ms_per_rollout']:.0f} ms ({r['ms_per_completion']:.1f} ms per completion)")  # fmt: skip
    session.print_footer(summary, hint="rerun on an idle machine")
    session.write(summary, runs)
    return summary


if __name__ == "__main__":
    main()
