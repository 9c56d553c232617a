"""The C++ side of the reward benchmarks: `bench_reward --serve` with the backend loaded once, one timed pass over
the JSONL per "score" line (see bench/bench_reward.cpp). Shared by bench_reward.py (CPU) and gpu_reward.py (GPU)."""
import json
import os
import pathlib
import subprocess


class CppSide:
    """bench_reward --serve: the backend loaded once, one pass over the JSONL per "score" line."""

    def __init__(self, binary, config: dict, items: pathlib.Path, batch: int, threads: int):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
        cmd = [str(binary), "--config", json.dumps(config), "--input", str(items), "--batch-size", str(batch),
               "--threads", str(threads), "--serve"]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"bench_reward exited ({self.proc.wait()})")
        out = json.loads(line)
        if "error" in out:
            raise SystemExit(f"bench_reward: {out['error']}")
        return out

    def __call__(self) -> dict:
        self.proc.stdin.write("score\n")
        self.proc.stdin.flush()
        out = self._read()
        if out["errors"]:
            raise SystemExit(f"bench_reward: {len(out['errors'])} items failed, first: {out['errors'][0]}")
        return out

    def peak_rss(self) -> int:
        """The process's peak resident set size in bytes (VmHWM), while it runs."""
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def close(self) -> None:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait()
