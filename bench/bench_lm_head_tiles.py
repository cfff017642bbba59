"""Peak memory and time of TRL's fused LM head on CPU: TRL's vocabulary tile against ``lm_head_vocab_tile`` widths.

What is compared
    ``trl.kernels.ChunkedLogProbFunction`` (the chunked LM head behind ``add_fused_lm_head``, which TRL 1.16's
    GRPO-family trainers and :class:`trl_ext.PPOTrainer` use for per-token log-probs and entropies), forward and
    backward of ``log_probs.sum() + 0.5·entropy.sum()`` over ``--tokens`` hidden states of width ``--hidden`` and a
    ``--vocab``-entry LM head, at TRL's own tile width (``trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE``, 32768
    in TRL 1.16: the plain TRL arm) and at each ``--widths`` entry (trl_ext's default on devices without Triton is
    256, ``trl_ext.common.lm_head_tiles``). On CPU the tiles are folded with torch ops, each making a
    tokens × tile temporary.

How
    Each (width, repeat) runs in a fresh subprocess (this file with ``--worker``): one warm-up pass, then one timed
    pass whose peak RSS above the RSS before it (``VmHWM`` reset through ``/proc/self/clear_refs``) is ``+peak``.
    Repeats alternate the widths. The log-probs and the LM-head gradient norm are printed per width: they must
    agree (the width changes the schedule, not the result).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_lm_head_tiles.py                     # 2048 tokens, 32k vocab
    .venv/bin/python bench/bench_lm_head_tiles.py --tokens 4096 --vocab 151936 --repeats 1   # Qwen's vocabulary
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    BenchSession,
    bench_parser,
    check_common,
    current_rss_mib,
    emit_result,
    peak_rss_mib,
    reset_peak_rss,
    run_worker_process,
)

RESULT_MARKER = "BENCH_TILE_RESULT "


def worker(tokens: int, hidden: int, vocab: int, width: int | None, threads: int, seed: int) -> dict:
    import gc

    import torch
    import trl.trainer.utils as trl_utils
    from trl.kernels import ChunkedLogProbFunction

    torch.set_num_threads(threads)
    width = width or trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(tokens, hidden, generator=gen).requires_grad_(True)
    w = (torch.randn(vocab, hidden, generator=gen) * 0.02).requires_grad_(True)
    targets = torch.randint(0, vocab, (tokens,), generator=gen)

    def one_pass():
        h.grad = w.grad = None
        logps, entropy, *_ = ChunkedLogProbFunction.apply(
            h, w, None, targets, 1.0, width, None, 1.0, ("log_probs", "entropy")
        )
        (logps.sum() + 0.5 * entropy.sum()).backward()
        return logps.detach()

    one_pass()
    gc.collect()
    before = current_rss_mib()
    reset_peak_rss()
    t0 = time.perf_counter()
    logps = one_pass()
    seconds = time.perf_counter() - t0
    return {
        "width": width,
        "seconds": seconds,
        "peak_above_mib": peak_rss_mib() - before,
        "logps_sum": float(logps.double().sum()),
        "grad_norm": float(w.grad.norm()),
    }


def run(opts: argparse.Namespace, width: int | None) -> dict:
    """One worker process at ``width`` (None: TRL's own tile); returns its result."""
    cmd = [sys.executable, __file__, "--worker", "--tokens", str(opts.tokens), "--hidden", str(opts.hidden)]
    cmd += ["--vocab", str(opts.vocab), "--threads", str(opts.threads), "--width", str(width or 0)]
    cmd += ["--seed", str(opts.seed)]
    result, _ = run_worker_process(
        cmd, RESULT_MARKER, threads=opts.threads, timeout=opts.timeout, what=f"worker (width {width})"
    )
    return result


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison, print the table, optionally write JSON; returns the summary."""
    parser = bench_parser(
        __doc__,
        repeats=3,
        repeats_help="Alternating rounds over all widths.",
        seed=0,
        seed_help="Seed of the random hidden states, LM head and targets.",
        threads_help="torch threads per worker.",
    )
    parser.add_argument("--tokens", type=int, default=2048, help="Scored positions per forward (TRL tiles 4096).")
    parser.add_argument("--hidden", type=int, default=256, help="Hidden size.")
    parser.add_argument("--vocab", type=int, default=32768, help="Vocabulary size (LM-head rows).")
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 256, 1024], help="trl_ext tile widths.")
    parser.add_argument("--timeout", type=float, default=1800.0, help="Seconds allowed per worker.")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, default=0, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.worker:
        emit_result(
            RESULT_MARKER, worker(opts.tokens, opts.hidden, opts.vocab, opts.width or None, opts.threads, opts.seed)
        )
        return {}
    check_common(parser, opts)

    session = BenchSession(opts, packages=("torch", "trl"), code_files=("trl_ext/common/lm_head_tiles.py",))
    arms: list[int | None] = [None, *opts.widths]
    print(
        f"fused LM head fwd+bwd on CPU: {opts.tokens} tokens, hidden {opts.hidden}, vocabulary {opts.vocab}, "
        f"{opts.threads} thread(s), {opts.repeats} round(s); load {session.load_start}",
        flush=True,
    )
    results: dict[int | None, list[dict]] = {arm: [] for arm in arms}
    for rnd in range(opts.repeats):
        for arm in arms:
            res = run(opts, arm)
            results[arm].append(res)
            print(
                f"  round {rnd + 1} width {res['width']:>6}: {res['seconds']:.3f} s, +{res['peak_above_mib']:.1f} MiB"
            )
    base_s = statistics.median(r["seconds"] for r in results[None])
    base_mib = statistics.median(r["peak_above_mib"] for r in results[None])
    ref = results[None][0]
    rows = []
    print(f"\n{'tile':>12} {'median s':>9} {'+peak MiB':>10} {'time ratio':>11} {'memory ratio':>13}  same result")
    for arm in arms:
        sec = statistics.median(r["seconds"] for r in results[arm])
        mib = statistics.median(r["peak_above_mib"] for r in results[arm])
        first = results[arm][0]
        same = (
            abs(first["logps_sum"] - ref["logps_sum"]) <= 1e-5 * abs(ref["logps_sum"])
            and abs(first["grad_norm"] - ref["grad_norm"]) <= 1e-4 * ref["grad_norm"]
        )
        label = f"TRL {first['width']}" if arm is None else str(arm)
        print(f"{label:>12} {sec:9.3f} {mib:10.1f} {sec / base_s:11.3f} {mib / base_mib:13.3f}  {same}")
        rows.append(
            {
                "tile": label,
                "median_s": sec,
                "peak_above_mib": mib,
                "time_ratio": sec / base_s,
                "memory_ratio": mib / base_mib,
                "same_result": same,
            }
        )
    summary = session.finish({"tiles": rows})
    session.print_footer(summary, hint="compare the memory ratios")
    session.write(summary, [r for arm in arms for r in results[arm]])
    return summary


if __name__ == "__main__":
    main()
