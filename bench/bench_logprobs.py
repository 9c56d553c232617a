#!/usr/bin/env python3
"""Completion log-probs at vocabulary 152064 and 4k positions: peak memory and time of vlreward's chunked
log-probs, its whole-batch path, and TRL 0.28's (the model's full logits, then trl's selective_log_softmax), forward
+ backward, each in its own process on the same shapes (bf16 hidden states and lm_head, hidden 3584).

    .venv-ref/bin/python bench/bench_logprobs.py --binary build/bench/bench_logprobs [--positions 4096] [--threads 2]

"peak above start" = the process's peak resident set during the computation (VmHWM reset once the inputs exist)
minus its resident set then: what the log-probs themselves add.
"""
import argparse
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from bench_mpo import peak_rss_mib, rss_mib, run  # noqa: E402


def trl_worker(positions: int, hidden_size: int, vocab: int, threads: int) -> None:
    import torch
    from trl.trainer.utils import selective_log_softmax
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    weight = torch.randn(vocab, hidden_size, dtype=torch.bfloat16).mul_(0.02)
    hidden = torch.randn(1, positions, hidden_size, dtype=torch.bfloat16).requires_grad_()
    ids = torch.randint(0, vocab, (1, positions))
    pathlib.Path("/proc/self/clear_refs").write_text("5")  # the peak of the computation, not of making its inputs
    before = rss_mib()
    start = time.perf_counter()
    logits = torch.nn.functional.linear(hidden, weight)  # the model's logits at every position
    logps = selective_log_softmax(logits[:, :-1], ids[:, 1:]).sum()
    logps.backward()
    print(json.dumps({"mode": "trl", "seconds": time.perf_counter() - start, "rss_before_mib": before,
                      "peak_rss_mib": peak_rss_mib(), "logp": float(logps)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", type=pathlib.Path, default=ROOT / "build" / "bench" / "bench_logprobs")
    ap.add_argument("--positions", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=3584)
    ap.add_argument("--vocab", type=int, default=152064)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--trl-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.trl_worker:
        trl_worker(args.positions, args.hidden, args.vocab, args.threads)
        return
    shape = ["--positions", str(args.positions), "--hidden", str(args.hidden), "--vocab", str(args.vocab),
             "--threads", str(args.threads)]
    runs = [run([str(args.binary), "--mode", mode] + shape) for mode in ("chunked", "whole")]
    runs.append(run([sys.executable, __file__, "--trl-worker"] + shape[:-2] + ["--threads", str(args.threads)]))
    print(f"{args.positions} positions (all completion tokens), hidden {args.hidden}, vocabulary {args.vocab}, bf16, "
          f"{args.threads} threads")
    print("\n| path | forward + backward s | peak RSS MiB | peak above start MiB | sum of log-probs |")
    print("|---|---|---|---|---|")
    names = {"chunked": "vlreward, chunked (256 positions)", "whole": "vlreward, whole-batch logits",
             "trl": "TRL 0.28 (full logits + selective_log_softmax)"}
    for r in runs:
        print(f"| {names[r['mode']]} | {r['seconds']:.2f} | {r['peak_rss_mib']:.0f} | "
              f"{r['peak_rss_mib'] - r['rss_before_mib']:.0f} | {r['logp']:.1f} |")


if __name__ == "__main__":
    main()
