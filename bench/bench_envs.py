"""Steps per second of the agent environments, and their share of a PPO rollout (environments vs generation).

The issue's target: on the tiny PPO config, the environments take **at most 10 %** of a rollout's time.

What is run
    Every environment of ``--envs`` (default the five registered ones: webshop, alfworld, babyai, sciworld,
    textcraft), each instance built once and reused (as ``EpisodeRollout`` does: one per name and batch slot), its
    ``reset`` and ``step`` wrapped with timers (``harness.instrument``). Building an instance is start-up, reported
    apart and never in a rate: SciWorld's engine (one JVM per instance, normally started by the first reset) is
    started up front by the instance's ``_start()`` and timed on its own.

    1. **Expert episodes**: per environment and round, ``--seeds`` (8) episodes of the scripted expert
       (``run_episode``, ``max_episode_length`` ``--expert_max_episode_length``, 50), fresh seeds every round (as
       PPO's rows are). Per round: median reset ms, median step ms and steps/s = steps / the steps' seconds (the
       expert's own choice of action is not timed); reported as the median over ``--repeats`` (3) rounds and the
       range over rounds.
    2. **Rollout share**: the PPO tiny config (``recipes/configs/ppo_affine_tiny.yaml``): the tiny model plays
       ``--rollout_batch`` (8) episodes side by side with ``play_episodes``, one batched ``generate_token_ids``
       (``batch_size=len(contexts)``, ``--max_new_tokens`` 24 per turn, sampling at ``--temperature`` 0.1) per
       turn, ``max_episode_length`` ``--max_episode_length`` (4; the recipe's data flag, not set by that config),
       ``max_context_tokens`` the model's ``max_position_embeddings`` (as ``EpisodeRollout``). Arms: each
       environment alone (8 episodes of it) and ``mixed`` (the environments in turn over ``max(--rollout_batch,
       number of environments)`` episodes: the PPO recipe mixes them). Rollout time = the ``play_episodes`` call;
       generation = the ``generate`` calls; environment = the wrapped resets and steps; other = the rest
       (tokenising, decoding, action parsing, bookkeeping). Shares pool the rounds (Σ part / Σ rollout), so they sum
       to 1 (``env_reset_share``: the resets' part of the environments'); the target is judged per arm, and
       ``overall`` pools the single-environment arms. One untimed warm-up rollout per arm first (lazy imports, the
       allocator, each instance's first reset: SciWorld's JVMs start cold and fill per-task caches).

Run ``python bench/bench_envs.py`` (``--quick``: 2 seeds, 1 round, rollouts of 1 episode per environment, 4 tokens
per turn: the smoke test of the tests).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import statistics
import time
from typing import Any

import harness as hx

ENVS = ("webshop", "alfworld", "babyai", "sciworld", "textcraft")
MIXED = "mixed"
TARGET = 0.10
"""Environment time / rollout time, on the tiny PPO config."""
CODE_FILES = (*(f"trl_ext/tasks/envs/{name}.py" for name in ENVS), "trl_ext/tasks/envs/base.py",
              "trl_ext/tasks/envs/play.py", "trl_ext/common/generation.py")  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags (see the module docstring); ``--quick`` shrinks every count."""
    parser = hx.bench_parser(
        __doc__, repeats=3, repeats_help="Rounds of expert episodes and of rollouts, per environment (default 3).",
        seed_help="Base of the episode seeds and the sampling seed (default 42).",
        quick_help="Smoke run: 2 seeds, 1 round, rollouts of 1 episode per environment, 4 tokens per turn.",
    )  # fmt: skip
    parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=ENVS, help="Environments to measure.")
    parser.add_argument("--seeds", type=int, default=8, help="Expert episodes per environment and round.")
    parser.add_argument("--expert_max_episode_length", type=int, default=50, help="Step limit of expert episodes.")
    parser.add_argument("--rollout_batch", type=int, default=8, help="Episodes played side by side per rollout.")
    parser.add_argument("--max_episode_length", type=int, default=4, help="Turns of a rollout episode.")
    parser.add_argument("--max_new_tokens", type=int, default=24, help="Tokens generated per turn.")
    parser.add_argument("--temperature", type=float, default=0.1, help="Sampling temperature of the rollouts.")
    parser.add_argument("--model", default="tiny", help="Policy: 'tiny' (the embedded model) or a folder.")
    opts = parser.parse_args(argv)
    hx.check_common(parser, opts)
    counts = (opts.seeds, opts.rollout_batch, opts.max_episode_length, opts.expert_max_episode_length)
    hx.require(parser, min(counts) >= 1 and opts.max_new_tokens >= 1, "counts and lengths must be >= 1")
    hx.require(parser, opts.temperature > 0, "--temperature must be > 0")
    opts.envs = list(dict.fromkeys(opts.envs))
    if opts.quick:
        opts.seeds, opts.repeats, opts.rollout_batch, opts.max_new_tokens = 2, 1, 1, 4
    return opts


class EnvPool:
    """Environments built once per name and slot, their ``reset``/``step`` durations recorded into :attr:`current`
    (``{name: {"reset": [s, ...], "step": [s, ...]}}``, replaced by each measurement)."""

    def __init__(self) -> None:
        self.envs: dict[str, list[Any]] = {}
        self.startup: dict[str, list[dict[str, float | None]]] = {}
        self.current: dict[str, dict[str, list[float]]] = {}

    def get(self, name: str, slot: int) -> Any:
        """Instance ``slot`` of ``name``, built (and its engine started, where it has one) on first use."""
        from trl_ext.tasks.envs import get_env

        pool = self.envs.setdefault(name, [])
        while len(pool) <= slot:
            importlib.import_module(f"trl_ext.tasks.envs.{name}")  # registers it (the registry may not yet)
            t0 = time.perf_counter()
            env = get_env(name)
            build, engine = time.perf_counter() - t0, None
            start = getattr(env, "_start", None)  # SciWorld: the JVM, otherwise started by the first reset
            if callable(start):
                t0 = time.perf_counter()
                start()
                engine = time.perf_counter() - t0
            self.startup.setdefault(name, []).append({"build_s": build, "engine_start_s": engine})
            for method in ("reset", "step"):
                hx.instrument(env, method, functools.partial(self._record, name, method))
            pool.append(env)
        return pool[slot]

    def _record(self, name: str, method: str, seconds: float, _kwargs: dict[str, Any]) -> None:
        self.current.setdefault(name, {"reset": [], "step": []})[method].append(seconds)

    def close(self) -> None:
        """Close every instance (SciWorld: stop its JVM)."""
        for pool in self.envs.values():
            for env in pool:
                env.close()


def expert_round(pool: EnvPool, name: str, rnd: int, opts: argparse.Namespace) -> dict[str, Any]:
    """``opts.seeds`` expert episodes of ``name`` (seeds fresh per round): their reset and step times."""
    from trl_ext.tasks.envs import run_episode

    env = pool.get(name, 0)
    env.max_episode_length, env.expert_enabled = opts.expert_max_episode_length, True
    seeds = [opts.seed + max(rnd, 0) * opts.seeds + i for i in range(opts.seeds)]
    pool.current = {}
    failures = sum(not run_episode(env, seed).success for seed in seeds)
    resets, steps = pool.current[name]["reset"], pool.current[name]["step"]
    return {"part": "expert", "env": name, "round": rnd, "seeds": seeds, "failures": failures, "steps": len(steps),
            "reset_ms": 1e3 * statistics.median(resets), "step_ms": 1e3 * statistics.median(steps),
            "steps_per_s": len(steps) / sum(steps), "reset_s": resets, "step_s": steps}  # fmt: skip


def batch_names(arm: str, opts: argparse.Namespace) -> list[str]:
    """The environment of each episode of a rollout of ``arm``."""
    if arm != MIXED:
        return [arm] * opts.rollout_batch
    return [opts.envs[i % len(opts.envs)] for i in range(max(opts.rollout_batch, len(opts.envs)))]


def rollout_round(pool: EnvPool, arm: str, rnd: int, policy: tuple[Any, Any], opts: argparse.Namespace) -> dict:
    """One rollout of ``arm`` by the policy: its wall time split into generation, environments and the rest."""
    from trl_ext.common.generation import generate_token_ids
    from trl_ext.tasks.envs.play import play_episodes

    model, tokenizer = policy
    names = batch_names(arm, opts)
    envs = [pool.get(name, names[:i].count(name)) for i, name in enumerate(names)]
    for env in envs:  # as EpisodeRollout: only the policy plays (SciWorld then skips its gold path)
        env.max_episode_length, env.expert_enabled = opts.max_episode_length, False
    seeds = [10_000 + opts.seed + (rnd + 1) * len(names) + i for i in range(len(names))]
    gen_s: list[float] = []
    tokens = [0]

    def generate(contexts: list[list[int]]) -> list[list[int]]:
        t0 = time.perf_counter()
        new = generate_token_ids(
            model, tokenizer, contexts, batch_size=len(contexts), max_new_tokens=opts.max_new_tokens, do_sample=True,
            temperature=opts.temperature,
        )  # fmt: skip
        gen_s.append(time.perf_counter() - t0)
        tokens[0] += sum(len(t) for t in new)
        return new

    limit = getattr(model.config, "max_position_embeddings", None)
    pool.current = {}
    t0 = time.perf_counter()
    played = play_episodes(envs, seeds, tokenizer, generate, max_context_tokens=limit)
    wall = time.perf_counter() - t0
    by_env = {name: sum(rec["reset"]) + sum(rec["step"]) for name, rec in pool.current.items()}
    env_s, generation_s = sum(by_env.values()), sum(gen_s)
    return {"part": "rollout", "arm": arm, "round": rnd, "episodes": len(played), "wall_s": wall,
            "generation_s": generation_s, "env_s": env_s, "other_s": wall - env_s - generation_s,
            "env_s_by_name": by_env, "reset_s": sum(sum(r["reset"]) for r in pool.current.values()),
            "turns": len(gen_s), "new_tokens": tokens[0], "env_steps": sum(p.episode.length for p in played),
            "context_limited": sum(p.context_limited for p in played),
            "invalid_actions": sum(p.episode.invalid_actions for p in played)}  # fmt: skip


def expert_summary(runs: list[dict[str, Any]], startup: list[dict[str, float | None]]) -> dict[str, Any]:
    """Median and [min, max] over rounds of reset ms, step ms and steps/s; the start-up of the instances."""
    out: dict[str, Any] = {
        "rounds": len(runs), "episodes": sum(len(r["seeds"]) for r in runs), "steps": sum(r["steps"] for r in runs),
        "failures": sum(r["failures"] for r in runs),
    }  # fmt: skip
    for key in ("reset_ms", "step_ms", "steps_per_s"):
        values = [r[key] for r in runs]
        out[key], out[f"{key}_range"] = statistics.median(values), [min(values), max(values)]
    engine = [s["engine_start_s"] for s in startup if s["engine_start_s"] is not None]
    out["startup"] = {
        "instances": len(startup), "build_s_first": startup[0]["build_s"],
        "build_s_median": statistics.median(s["build_s"] for s in startup),
        "engine_start_s_median": statistics.median(engine) if engine else None,
    }  # fmt: skip
    return out


def share_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Pooled shares of the rollouts ``runs`` (Σ part / Σ rollout time), the per-round env shares, the verdict."""
    wall = sum(r["wall_s"] for r in runs)
    env, gen, other = (sum(r[k] for r in runs) / wall for k in ("env_s", "generation_s", "other_s"))
    per_round = [r["env_s"] / r["wall_s"] for r in runs]
    return {"rollouts": len(runs), "rollout_s_median": statistics.median(r["wall_s"] for r in runs),
            "env_share": env, "generation_share": gen, "other_share": other, "env_share_per_rollout": per_round,
            "env_reset_share": sum(r["reset_s"] for r in runs) / wall,
            "turns": sum(r["turns"] for r in runs), "new_tokens": sum(r["new_tokens"] for r in runs),
            "env_steps": sum(r["env_steps"] for r in runs), "target_met": env <= TARGET,
            "verdict": hx.verdict(env <= TARGET)}  # fmt: skip


def num(value: float) -> str:
    """Three to four significant digits without an exponent: 0.0123, 1.23, 12.3, 123, 12345."""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}" if value >= 0.01 else f"{value:.4f}"


def print_tables(summary: dict[str, Any], opts: argparse.Namespace) -> None:
    """The expert table, the rollout table and the target line."""
    print(f"\nexpert episodes: {opts.seeds} seeds x {opts.repeats} round(s) per environment, "
          f"median over rounds [min-max]; start-up (build s: first/median instance) apart")  # fmt: skip
    print(f"{'env':<10} {'reset ms':>24} {'step ms':>24} {'steps/s':>24} {'build s':>13} {'engine s':>9}")
    for name, s in summary["expert"].items():
        cells = [f"{num(s[k])} [{num(s[k + '_range'][0])}-{num(s[k + '_range'][1])}]"
                 for k in ("reset_ms", "step_ms", "steps_per_s")]  # fmt: skip
        up = s["startup"]
        build = f"{up['build_s_first']:.3f}/{up['build_s_median']:.3f}"
        print(f"{name:<10} {cells[0]:>24} {cells[1]:>24} {cells[2]:>24} {build:>13} "
              f"{hx.fmt(up['engine_start_s_median'], '9.2f'):>9}")  # fmt: skip
    mixed = len(batch_names(MIXED, opts))
    print(f"\nrollouts: tiny policy, {opts.rollout_batch} episodes side by side (mixed: {mixed}"
          f"), {opts.max_episode_length} turns max, {opts.max_new_tokens} tokens/turn, temperature "
          f"{opts.temperature}; shares pooled over {opts.repeats} round(s), env per round [min-max]")  # fmt: skip
    head = f"{'arm':<10} {'rollout s':>9} {'env':>7} {'(resets)':>8} {'env per round':>15} {'generation':>10}"
    print(f"{head} {'other':>7} {'turns':>5} {'tokens':>6} target")
    for arm, s in {**summary["rollout"], "overall": summary["overall"]}.items():
        rounds = f"[{min(s['env_share_per_rollout']):.1%}-{max(s['env_share_per_rollout']):.1%}]"
        print(f"{arm:<10} {s['rollout_s_median']:9.2f} {s['env_share']:7.1%} {s['env_reset_share']:8.1%} {rounds:>15} "
              f"{s['generation_share']:10.1%} "
              f"{s['other_share']:7.1%} {s['turns']:5d} {s['new_tokens']:6d} {s['verdict']}")  # fmt: skip
    print(
        f"TARGET environment share of a rollout <= {TARGET:.0%}: "
        + ", ".join(f"{arm} {v}" for arm, v in summary["verdicts"].items())
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both parts, print the tables, write the JSON; returns the summary."""
    opts = parse_args(argv)
    hx.quiet_offline_torch(opts.threads)
    import torch

    from trl_ext.models import load_for_inference, load_tokenizer, resolve_model_name_or_path

    session = hx.BenchSession(opts, code_files=CODE_FILES)
    pool = EnvPool()
    try:
        expert_runs, _ = hx.run_rounds(
            opts.envs, opts.repeats, lambda name, rnd: expert_round(pool, name, rnd, opts), desc="expert episodes",
            describe=lambda r: f"reset {r['reset_ms']:8.2f} ms  step {r['step_ms']:7.3f} ms  {r['steps_per_s']:9.1f} "
            f"steps/s ({r['steps']} steps)",
        )  # fmt: skip
        path = resolve_model_name_or_path(opts.model)
        policy = (load_for_inference(path), load_tokenizer(path))
        torch.manual_seed(opts.seed)
        arms = [*opts.envs, MIXED]
        rollout_runs, _ = hx.run_rounds(
            arms, opts.repeats, lambda arm, rnd: rollout_round(pool, arm, rnd, policy, opts), desc="rollouts",
            warmup=arms, run_warmup=lambda arm: rollout_round(pool, arm, -1, policy, opts),
            describe=lambda r: f"{r['wall_s']:6.2f} s  env {r['env_s'] / r['wall_s']:6.1%}  generation "
            f"{r['generation_s'] / r['wall_s']:6.1%}  ({r['turns']} turns, {r['env_steps']} steps)",
        )  # fmt: skip
    finally:
        pool.close()
    expert = {n: expert_summary([r for r in expert_runs if r["env"] == n], pool.startup[n]) for n in opts.envs}
    rollout = {arm: share_summary([r for r in rollout_runs if r["arm"] == arm]) for arm in arms}
    overall = share_summary([r for r in rollout_runs if r["arm"] != MIXED])
    verdicts = {**{arm: s["verdict"] for arm, s in rollout.items()}, "overall": overall["verdict"]}
    summary = {"targets": {"env_share": TARGET}, "expert": expert, "rollout": rollout, "overall": overall,
               "verdicts": verdicts, "envs": opts.envs, "mixed_batch": batch_names(MIXED, opts)}  # fmt: skip
    summary = session.finish(summary)
    print_tables(summary, opts)
    session.print_footer(summary, hint="rerun on an idle machine")
    session.write(summary, expert_runs + rollout_runs)
    return summary


if __name__ == "__main__":
    main()
