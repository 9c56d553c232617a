#!/usr/bin/env python3
"""reward-serve load benchmark (standard library only): serves the tiny Skywork-VL fixture with reward-serve on
loopback, drives it with bench_serve (16 concurrent clients, 10,000 single-sample requests with images, every answer
checked against its request), once with dynamic batching and once with max_batch_size 1, and prints throughput,
latency, the batching gain and the lost / mismatched counts (which must be 0).

    python3 bench/bench_serve.py --build build [--requests 10000] [--clients 16] [--protocol http|binary]
                                 [--batch-size 16] [--max-wait-ms 2] [--threads N] [--rounds N]

--threads sets the server's LibTorch threads (OMP_NUM_THREADS; default: all cores). --rounds alternates the two
configurations N times and reports each one's median-throughput run (shared machines are noisy).
"""
import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def start_server(build, batch_size, max_wait_ms, protocol, threads):
    command = [os.path.join(build, "reward", "reward-serve"), "--model", os.path.join(FIXTURES, "model", "tiny"),
               "--value-head", os.path.join(FIXTURES, "reward", "value_head.safetensors"),
               "--port", "0", "--binary-port", "0", "--max-batch-size", str(batch_size),
               "--max-wait-ms", str(max_wait_ms), "--max-queue", "4096"]
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    log = []
    for line in process.stderr:
        log.append(line)
        match = re.search(r"HTTP [^ ;]+:(\d+); binary [^ ;]+:(\d+)", line)
        if match:
            threading.Thread(target=lambda: log.extend(process.stderr), daemon=True).start()
            port = int(match.group(1) if protocol == "http" else match.group(2))
            return process, port, log
    raise SystemExit("reward-serve exited before serving:\n" + "".join(log))


def stop_server(process, log):
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=120)
    if code != 0:
        raise SystemExit(f"reward-serve exited with {code} after SIGTERM:\n" + "".join(log))


def run(build, args, batch_size):
    process, port, log = start_server(build, batch_size, args.max_wait_ms, args.protocol, args.threads)
    try:
        done = subprocess.run([os.path.join(build, "bench", "bench_serve"), "--port", str(port),
                               "--protocol", args.protocol, "--clients", str(args.clients),
                               "--requests", str(args.requests), "--warmup", str(args.warmup),
                               "--input", os.path.join(FIXTURES, "reward", "items.jsonl"),
                               "--expected", os.path.join(FIXTURES, "reward", "expected.json")],
                              capture_output=True, text=True)
    finally:
        stop_server(process, log)
    if not done.stdout.strip():
        raise SystemExit(f"bench_serve failed ({done.returncode}):\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["max_batch_size"] = batch_size
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--protocol", choices=["http", "binary"], default="http")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    runs = {"batched": [], "single": []}
    for _ in range(args.rounds):
        runs["batched"].append(run(args.build, args, args.batch_size))
        runs["single"].append(run(args.build, args, 1))
    median = lambda rs: sorted(rs, key=lambda r: r["requests_per_s"])[len(rs) // 2]
    batched, single = median(runs["batched"]), median(runs["single"])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs; "
          f"tiny Skywork-VL fixture on CPU; {args.clients} clients x {args.protocol}; {args.requests} requests each run; "
          f"median of {args.rounds} alternating round(s)")
    print("| max_batch_size | requests | lost | mismatched | requests/s | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in (batched, single):
        print(f"| {r['max_batch_size']} | {r['requests']} | {r['lost']} | {r['mismatched']} | {r['requests_per_s']:.0f} "
              f"| {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.1f} |")
    gain = batched["requests_per_s"] / single["requests_per_s"]
    print(f"batching gain (throughput, max_batch_size {args.batch_size} vs 1): {gain:.2f}x")
    print(json.dumps({"batched": batched, "batch_size_1": single, "gain": gain}))
    bad = sum(r["lost"] + r["mismatched"] for rs in runs.values() for r in rs)
    print(f"lost or mismatched over all {2 * args.rounds} runs: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
