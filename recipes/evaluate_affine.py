"""Evaluate a model on held-out reasoning tasks and agent-environment episodes; write a JSON report with Beta
intervals.

    python recipes/evaluate_affine.py --model outputs/sft_affine_tiny
    python recipes/evaluate_affine.py --model outputs/rl_final --baseline outputs/base/eval_results.json

``--model`` is a model folder, a PEFT adapter folder (its base model is loaded from the adapter config),
a hub id, or ``tiny``. Answers are generated greedily in batches (with a progress bar), scored per task,
and summarised per environment (accuracy, mean, std, median, success rate, Jeffreys 80% interval) and in
aggregate. Every agent environment of ``--environments`` plays ``--num_episodes`` held-out episodes greedily: its
success rate (with the interval), mean return and length are reported beside the tasks, with the AgentGym score
(the mean success rate over the environments). With ``--baseline`` the report also says, per environment, who
wins (intervals separate) and whether the model dominates the baseline. The report goes to ``--output`` (default:
``<model>/eval_results.json`` for a local folder, ``eval_results.json`` otherwise).

Without ``--model`` the recipe evaluates the newest trained model, as the document's evaluator does ("RL -> SFT ->
Base"): of the PPO output ``--rl_output`` (default ``outputs/ppo_affine``, ``recipes/configs/ppo_affine.yaml``'s
``output_dir``) and the SFT output ``--sft_output`` (default ``outputs/sft_affine``, ``sft_affine.yaml``'s), the
one saved last (the newest modification time of its weights and config files; on a tie the RL output); when
neither holds a saved model, ``--base_model`` (if given). It prints which one it chose and why; with nothing to
evaluate the error lists every place it looked.
"""

from __future__ import annotations

from trl_ext.common.noise import quiet_dependency_noise

quiet_dependency_noise()  # first: the known-harmless messages of dependencies (trl_ext/common/noise.py)

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from trl import TrlParser

from trl_ext.common.entry import run_main
from trl_ext.common.recipes import parse_or_config_error
from trl_ext.data.affine_args import AffineTaskArguments
from trl_ext.eval.report import compare_reports, format_report, load_report, save_report
from trl_ext.eval.tasks import evaluate_heldout
from trl_ext.models import resolve_model_name_or_path


@dataclass
class EvaluateArguments(AffineTaskArguments):
    """Arguments of the evaluation recipe (task selection comes from the base class)."""

    model: str | None = field(
        default=None,
        metadata={"help": "Model folder, adapter folder, hub id or 'tiny'. Default: the newest of --rl_output and "
                  "--sft_output, else --base_model."},
    )  # fmt: skip
    rl_output: str = field(
        default="outputs/ppo_affine", metadata={"help": "Without --model: the PPO (stage 2) output folder."}
    )
    sft_output: str = field(
        default="outputs/sft_affine", metadata={"help": "Without --model: the SFT (stage 1) output folder."}
    )
    base_model: str | None = field(
        default=None,
        metadata={"help": "Without --model: evaluated when neither output holds a model (hub id, folder or 'tiny')."},
    )
    baseline: str | None = field(default=None, metadata={"help": "A saved report to compare against."})
    output: str | None = field(default=None, metadata={"help": "Where to write the JSON report."})
    num_samples: int = field(default=50, metadata={"help": "Held-out instances per task."})
    num_episodes: int = field(default=20, metadata={"help": "Held-out episodes per agent environment (0: none)."})
    max_turn_tokens: int = field(default=64, metadata={"help": "Tokens generated per turn of an agent episode."})
    seed: int = field(default=20_261_121, metadata={"help": "Seed of the held-out instances."})
    batch_size: int = field(default=8, metadata={"help": "Generation batch size."})
    max_new_tokens: int = field(default=256, metadata={"help": "Tokens generated per answer."})
    level: float = field(default=0.8, metadata={"help": "Credibility level of the Beta intervals."})
    dtype: str | None = field(default=None, metadata={"help": "Model dtype (e.g. bfloat16); default float32."})
    load_in_4bit: bool = field(default=False, metadata={"help": "Load the model in 4-bit (bitsandbytes)."})


MODEL_FILES = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "model.safetensors.index.json",
               "pytorch_model.bin", "adapter_config.json", "config.json")  # fmt: skip


class ModelChoice(NamedTuple):
    """The model :func:`choose_model` picked: its path, the stage (``"RL"``, ``"SFT"`` or ``"base"``) and why."""

    path: str
    stage: str
    reason: str


def saved_model_time(folder: str | Path) -> float | None:
    """When the model in ``folder`` was saved: the newest modification time of its weights and config files
    (:data:`MODEL_FILES`); ``None`` when ``folder`` holds no saved model (no ``config.json`` or
    ``adapter_config.json``)."""
    folder = Path(folder).expanduser()
    if not ((folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()):
        return None
    return max((folder / name).stat().st_mtime for name in MODEL_FILES if (folder / name).is_file())


def choose_model(rl_output: str, sft_output: str, base_model: str | None = None) -> ModelChoice:
    """The model to evaluate when ``--model`` is not given: the newest saved of ``rl_output`` (PPO) and ``sft_output``
    (SFT), the RL output on a tie; else ``base_model``. A ``ValueError`` listing the places looked at when there is
    none."""

    def when(t: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))

    found = [(stage, path, t) for stage, path in (("RL", rl_output), ("SFT", sft_output))
             if (t := saved_model_time(path)) is not None]  # fmt: skip
    outputs = {"RL": rl_output, "SFT": sft_output}
    if found:
        stage, path, t = max(found, key=lambda item: item[2])  # max keeps the first (RL) on a tie
        reason = f"the {stage} output, saved {when(t)}"
        other = [(s, p, u) for s, p, u in found if s != stage]
        if not other:
            missing = "SFT" if stage == "RL" else "RL"
            reason += f"; no saved model in the {missing} output {outputs[missing]}"
        elif t > other[0][2]:
            reason += f"; newer than the {other[0][0]} output {other[0][1]} (saved {when(other[0][2])})"
        else:
            reason += f"; the {other[0][0]} output {other[0][1]} was saved at the same time, and RL comes first"
        return ModelChoice(path, stage, reason)
    if base_model:
        return ModelChoice(base_model, "base", f"no saved model in {rl_output} (RL) or {sft_output} (SFT)")
    raise ValueError(
        "--model is required when no trained model is found: looked for a saved model (config.json or "
        "adapter_config.json) in "
        f"the RL output {rl_output!r} (--rl_output) and the SFT output {sft_output!r} (--sft_output), and no "
        "--base_model was given; pass --model (a model folder, adapter folder, hub id or 'tiny')"
    )


def main(args: EvaluateArguments) -> dict:
    if not args.model:
        choice = choose_model(args.rl_output, args.sft_output, args.base_model)
        print(f"[trl_ext] --model not given: evaluating {choice.path} ({choice.reason})", flush=True)
        args.model = choice.path
    task_params = args.task_params()
    baseline = load_report(args.baseline) if args.baseline else None  # fail before the slow part
    report = evaluate_heldout(
        resolve_model_name_or_path(args.model),
        task_params,
        num_per_task=args.num_samples,
        seed=args.seed,
        model_name=args.model,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        level=args.level,
        dtype=args.dtype,
        load_in_4bit=args.load_in_4bit,
        env_params=args.env_params() if args.num_episodes else None,
        num_episodes=args.num_episodes,
        max_turn_tokens=args.max_turn_tokens,
    )
    comparison = None
    if baseline is not None:
        comparison = compare_reports(report, baseline)
        report["baseline_comparison"] = comparison
    output = Path(args.output) if args.output else _default_output(args.model)
    save_report(report, output)
    print(format_report(report, comparison))
    print(f"report written to {output}")
    return report


def _default_output(model: str) -> Path:
    local = Path(model).expanduser()
    return local / "eval_results.json" if local.is_dir() else Path("eval_results.json")


def _run() -> None:
    (eval_args,) = parse_or_config_error(TrlParser((EvaluateArguments,)).parse_args_and_config)
    result = main(eval_args)
    print(json.dumps(result["aggregate"], indent=2))


if __name__ == "__main__":
    sys.exit(run_main(_run))
