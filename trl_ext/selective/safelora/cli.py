"""SafeLoRA from paths and the console script ``trl-ext-safelora``."""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trl_ext.common.errors import InputTypeError, MissingPathError
from trl_ext.selective.safelora.core import PROJECTIONS, REPORT_NAME, SELECTS, SafeLoRAReport, safelora_project
from trl_ext.selective.safelora.loading import _state_dict_of_model, load_state_dict_from

__all__ = ["build_parser", "main", "safelora_from_paths"]

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
)


def safelora_from_paths(
    base: str | os.PathLike,
    aligned: str | os.PathLike,
    adapter: str | os.PathLike,
    output_dir: str | os.PathLike,
    **kwargs: Any,
) -> SafeLoRAReport:
    """Load the base model (folder, hub id or ``"tiny"``), apply the PEFT adapter folder, project it with
    :func:`safelora_project` (``**kwargs``: ``projection``, ``select``, ``threshold``, ``num_proj_layers``,
    ``exact_rtol``), and save the projected adapter (``save_pretrained``), the adapter's
    tokenizer files when present, and ``safelora_report.json`` into ``output_dir``.

    The base weights for ``V`` are taken from the loaded base model itself; ``aligned`` is anything
    :func:`load_state_dict_from` accepts.
    """
    from peft import PeftModel

    from trl_ext.models.loading import load_causal_lm, resolve_model_name_or_path

    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise MissingPathError(f"{str(adapter)!r} is not a PEFT adapter folder (no adapter_config.json)")
    base_model = load_causal_lm(resolve_model_name_or_path(str(base)), dtype="float32")
    base_sd = _state_dict_of_model(base_model)
    aligned_sd = load_state_dict_from(aligned)
    if "adapter_name" in kwargs:
        raise InputTypeError(
            "safelora_from_paths loads the adapter folder as the 'default' adapter; drop adapter_name"
        )
    model = PeftModel.from_pretrained(base_model, str(adapter))
    report = safelora_project(model, base_sd, aligned_sd, **kwargs)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(output_dir))
    for name in _TOKENIZER_FILES:
        if (adapter / name).is_file() and not (output_dir / name).exists():
            shutil.copy2(adapter / name, output_dir / name)
    report.save(output_dir / REPORT_NAME)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trl-ext-safelora",
        description="SafeLoRA: project a trained LoRA adapter onto the alignment subspace V = W_aligned - W_base.",
    )
    parser.add_argument("--base", required=True, help="base model folder, hub id, or 'tiny'")
    parser.add_argument("--aligned", required=True, help="aligned model folder (or adapter folder), or hub id")
    parser.add_argument("--adapter", required=True, help="PEFT adapter folder trained on the base model")
    parser.add_argument("--output_dir", required=True, help="where to write the projected adapter and the report")
    parser.add_argument("--projection", choices=PROJECTIONS, default="approx")
    parser.add_argument("--select", choices=SELECTS, default="threshold")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--num_proj_layers", type=int, default=10)
    parser.add_argument("--exact_rtol", type=float, default=None, help="SVD rank tolerance for --projection exact")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``trl-ext-safelora --base B --aligned A --adapter L --output_dir O [...]``: prints the report."""
    from trl_ext.common.entry import run_main

    args = build_parser().parse_args(argv)
    return run_main(lambda: _run(args), prog="trl-ext-safelora")


def _run(args: argparse.Namespace) -> int:
    report = safelora_from_paths(
        args.base,
        args.aligned,
        args.adapter,
        args.output_dir,
        projection=args.projection,
        select=args.select,
        threshold=args.threshold,
        num_proj_layers=args.num_proj_layers,
        exact_rtol=args.exact_rtol,
    )
    print(report.format())
    print(f"projected adapter and {REPORT_NAME} written to {args.output_dir}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
