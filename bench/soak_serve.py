#!/usr/bin/env python3
"""reward-serve soak benchmark (standard library only): serves the tiny Skywork-VL fixture with reward-serve on
loopback and drives it with bench_serve for a fixed time (default 16 clients, 10 minutes), every --hostile-every-th
request a hostile one (malformed JSON, bombs, lies about lengths, garbage frames: see bench/bench_serve.cpp) sent on a
fresh connection to the HTTP or binary port. Samples the server's RSS every few seconds and prints one markdown table.

    python3 bench/soak_serve.py --build build [--seconds 600] [--clients 16] [--hostile-every 10] [--threads N]

Passes (exit 0) when no good request was lost or answered wrongly, every hostile one got a 4xx / error frame /
closed connection, the server shut down cleanly on SIGTERM, and its RSS after the first --settle seconds stayed
within 10 % of the RSS at that point.
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_serve import FIXTURES, ROOT, start_server, stop_server  # noqa: E402


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--hostile-every", type=int, default=10)
    parser.add_argument("--settle", type=float, default=60, help="seconds before the RSS baseline is taken")
    parser.add_argument("--sample-every", type=float, default=5)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    process, port, log = start_server(args.build, 16, 2, "http", args.threads)
    binary_port = next(int(m.group(1)) for m in (re.search(r"binary [^ ;]+:(\d+)", line) for line in log) if m)
    samples = []  # (seconds since start, RSS MiB)
    stop = threading.Event()
    started = time.monotonic()

    def sample():
        while not stop.is_set():
            samples.append((time.monotonic() - started, rss_mib(process.pid)))
            stop.wait(args.sample_every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        done = subprocess.run([os.path.join(args.build, "bench", "bench_serve"), "--port", str(port),
                               "--binary-port", str(binary_port or 0), "--clients", str(args.clients),
                               "--seconds", str(args.seconds), "--hostile-every", str(args.hostile_every),
                               "--warmup", "200", "--input", os.path.join(FIXTURES, "reward", "items.jsonl"),
                               "--expected", os.path.join(FIXTURES, "reward", "expected.json")],
                              capture_output=True, text=True)
    finally:
        stop.set()
        sampler.join()
        samples.append((time.monotonic() - started, rss_mib(process.pid)))
        stop_server(process, log)  # raises unless SIGTERM ends it with status 0
    if not done.stdout.strip():
        raise SystemExit(f"bench_serve failed ({done.returncode}):\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])

    settled = [rss for t, rss in samples if t >= args.settle] or [samples[-1][1]]
    baseline, peak, last = settled[0], max(settled), settled[-1]
    drift = max(abs(peak - baseline), abs(last - baseline)) / baseline
    flat = drift <= 0.10
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs; tiny Skywork-VL "
          f"fixture on CPU; {args.clients} clients over HTTP for {args.seconds:.0f} s, every {args.hostile_every}th "
          f"request hostile (HTTP and binary port); RSS sampled every {args.sample_every:.0f} s")
    print("| good requests | lost | mismatched | requests/s | p50 ms | p99 ms | hostile sent | hostile unexpected "
          "| RSS at start MiB | RSS at settle MiB | RSS peak MiB | RSS at end MiB | drift |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {result['requests']} | {result['lost']} | {result['mismatched']} | {result['requests_per_s']:.0f} "
          f"| {result['p50_ms']:.2f} | {result['p99_ms']:.2f} | {result['hostile_sent']} | "
          f"{result['hostile_unexpected']} | {samples[0][1]:.0f} | {baseline:.0f} | {peak:.0f} | {last:.0f} "
          f"| {100 * drift:.1f} % |")
    if result["unexpected_examples"]:
        print("unexpected answers to hostile requests:", json.dumps(result["unexpected_examples"]))
    print(json.dumps({"bench_serve": result, "rss_mib": samples}))
    ok = result["lost"] == 0 and result["mismatched"] == 0 and result["hostile_unexpected"] == 0 and flat
    print("soak: " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
