#!/usr/bin/env python3
"""The host's matmul ceiling: achieved GFLOP/s of torch's F.linear at the shapes the benchmarked models run, per
dtype and thread count. A benchmark whose side already runs near this rate is compute-bound: no code change on
either side can make it faster than ceiling / its achieved rate.

    .venv-ref/bin/python bench/gemm_peak.py [--threads 1] [--dtypes float32,bfloat16]

Shapes (rows x in -> out): the small config's decoder (512 wide, MLP 1408) and vision blocks (256 wide, MLP 704)
over one scoring item's rows, and the 7B decoder's (3584 wide, MLP 18944) and vision blocks' (1280 wide, MLP 3420)
over a 290-token item and its 1024 patches. Median of --repeat calls after one warm-up.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

SHAPES = {
    "small decoder qkvo": (350, 512, 512),
    "small decoder mlp": (350, 512, 1408),
    "small vision mlp": (1300, 256, 704),
    "7B decoder qkvo": (290, 3584, 3584),
    "7B decoder mlp": (290, 3584, 18944),
    "7B vision mlp": (1024, 1280, 3420),
}


def rate(rows: int, k: int, n: int, dtype: torch.dtype, repeat: int) -> float:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, k, generator=gen).to(dtype)
    w = torch.randn(n, k, generator=gen).to(dtype)
    F.linear(x, w)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        F.linear(x, w)
        times.append(time.perf_counter() - start)
    return 2.0 * rows * k * n / statistics.median(times) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}\n")
    print("| shape | rows x in -> out | " + " | ".join(f"{str(d).split('.')[-1]} GFLOP/s" for d in dtypes) + " |")
    print("|---|---|" + "---:|" * len(dtypes))
    for name, (rows, k, n) in SHAPES.items():
        # Fewer calls for the slow (emulated) dtypes on the large shapes.
        cells = [f"{rate(rows, k, n, d, args.repeat if d == torch.float32 or k < 1000 else 1):.1f}" for d in dtypes]
        print(f"| {name} | {rows} x {k} -> {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
