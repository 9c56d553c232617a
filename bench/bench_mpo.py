#!/usr/bin/env python3
"""MPO optimizer-step benchmark: vlreward's C++ step (bench_mpo) vs TRL 0.28's DPOTrainer, same config and batch.

    .venv-ref/bin/python bench/bench_mpo.py --binary build-bench/bench/bench_mpo [--threads 1] [--steps 4]

For each config (tiny = tests/fixtures/model/tiny; small = bench_model.small_config(): text 512 x 8 layers, vision
256 x 8 blocks) the script writes a float32 checkpoint with the tiny tokenizer / chat template / preprocessor
config into a temp dir (tiny: the fixture's weights; small: bench_model's seeded random weights), and both sides
train on the 4 pairs of tests/fixtures/mpo_step/pairs.jsonl as ONE batch (policy + frozen reference copy;
loss_type sigmoid/bco_pair/sft, weights 0.8/0.2/1.0, beta 0.1; AdamW lr 1e-3, weight decay 0.05; clip 1.0):

  * TRL: gen_mpo_step's _QwenVLDPOTrainer (DPOTrainer + the Qwen2-VL image fix, see gen_mpo_step.py), default
    attention implementation (sdpa), the optimizer transformers picks (adamw_torch_fused), in a subprocess.
  * C++: bench_mpo (tokenize_pair, build_concatenated_batch, the model, MPO loss, LibTorch AdamW), a subprocess.

Each side runs --steps optimizer steps on that batch; a step is forward (policy) + reference forward + loss +
backward + clip + optimizer step (TRL: on_step_begin -> on_step_end; data collation and tokenization excluded on
both sides). Reported: the median step time after the first (warm-up) step, wall clock and process CPU time, and
the peak resident set of each process (VmHWM), plus the resident set once both models are loaded.
The two sides' first-step losses must agree (same weights, same batch). Achieved GFLOP/s: step_flops() per
median step time.
"""
import argparse
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
PAIRS = FIXTURES / "mpo_step" / "pairs.jsonl"
TINY = FIXTURES / "model" / "tiny"
PROCESSOR_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "chat_template.jinja", "preprocessor_config.json"]


def peak_rss_mib() -> float:
    """VmHWM: this process image's peak resident set (ru_maxrss would include the parent's, Linux keeps it across
    fork + execve)."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return -1.0


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def trl_worker(checkpoint: str, steps: int, threads: int) -> None:
    """Runs in the subprocess: TRL on the pairs, prints one JSON line like bench_mpo."""
    import torch
    torch.set_num_threads(threads)
    sys.path.insert(0, str(FIXTURES))
    import transformers
    from datasets import Dataset
    from PIL import Image
    from transformers import Qwen2_5_VLForConditionalGeneration, TrainerCallback
    from trl import DPOConfig
    import gen_model
    import gen_mpo_step
    transformers.logging.set_verbosity_error()

    rows = {"images": [], "prompt": [], "chosen": [], "rejected": []}
    for line in PAIRS.read_text().splitlines():
        p = json.loads(line)
        prompt = [{"role": "system", "content": [{"type": "text", "text": p["system"]}]}] if "system" in p else []
        prompt.append({"role": "user", "content": [{"type": "image"}] * len(p["images"]) +
                       [{"type": "text", "text": p["question"]}]})
        rows["images"].append([Image.open(PAIRS.parent / i).convert("RGB") for i in p["images"]])
        rows["prompt"].append(prompt)
        rows["chosen"].append([{"role": "assistant", "content": p["chosen"]}])
        rows["rejected"].append([{"role": "assistant", "content": p["rejected"]}])

    class Timer(TrainerCallback):
        def __init__(self):
            self.wall, self.cpu, self.losses = [], [], []

        def on_step_begin(self, args, state, control, **kwargs):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            self.wall.append(time.perf_counter() - self.t0)
            self.cpu.append(time.process_time() - self.c0)

    processor = gen_model._load_processor(pathlib.Path(checkpoint))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32)
    config = dict(gen_mpo_step.CONFIG, max_steps=steps)
    with tempfile.TemporaryDirectory() as out:
        args = DPOConfig(output_dir=out, report_to=[], logging_steps=1, save_strategy="no", use_cpu=True,
                         disable_tqdm=True, **config)
        timer = Timer()
        trainer = gen_mpo_step._QwenVLDPOTrainer(
            model=model, args=args, train_dataset=Dataset.from_dict(rows), processing_class=processor,
            data_collator=gen_mpo_step._Collator(pad_token_id=processor.tokenizer.pad_token_id), callbacks=[timer])
        trainer.remove_callback(transformers.PrinterCallback)
        rss_loaded = rss_mib()
        trainer.train()
    losses = [float(c["loss"]) for c in trainer.captured["losses"]]
    print(json.dumps({"step_s": timer.wall, "step_cpu_s": timer.cpu, "losses": losses,
                      "params": sum(p.numel() for p in model.parameters()),
                      "attn": model.config._attn_implementation, "optim": str(args.optim),
                      "rss_after_load_mib": rss_loaded,
                      "peak_rss_mib": peak_rss_mib()}))


def write_checkpoint(name: str, directory: pathlib.Path) -> None:
    import torch
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_model
    from transformers import Qwen2_5_VLForConditionalGeneration
    if name == "tiny":
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(TINY, dtype=torch.float32)
    else:
        model = bench_model.build_model(bench_model.CONFIGS[name](), "eager")
    model.to(torch.float32).save_pretrained(directory, safe_serialization=True)
    for f in PROCESSOR_FILES:
        if (TINY / f).is_file():
            shutil.copyfile(TINY / f, directory / f)


def run(cmd, env=None) -> dict:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{cmd[0]} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    res = json.loads(lines[-1])
    if "error" in res:
        raise SystemExit(f"{cmd[0]}: {res['error']}")
    return res


def step_flops(checkpoint: pathlib.Path, tokens: int, rows: int) -> float:
    """bench/flops.py's matmul FLOPs of one optimizer step: the policy's forward + backward (3 forwards) and the
    reference's forward, each over every pair's chosen and rejected row (vision tower per image, decoder over the
    real tokens with lm_head at every position; causal attention reckoned at the rows' mean length)."""
    sys.path.insert(0, str(ROOT / "bench"))
    sys.path.insert(0, str(FIXTURES))
    import flops
    import gen_model
    from PIL import Image
    from transformers import Qwen2_5_VLConfig
    config = Qwen2_5_VLConfig.from_pretrained(checkpoint)
    processor = gen_model._load_processor(checkpoint)
    vision = 0.0
    for line in PAIRS.read_text().splitlines():
        for name in json.loads(line).get("images", []):
            grid = processor.image_processor(images=[Image.open(PAIRS.parent / name)], return_tensors="pt")["image_grid_thw"]
            vision += 2 * flops.vision_flops(config, int(grid.prod()))  # the chosen and the rejected row
    decoder = 2.0 * flops.decoder_linear_params(config) * tokens + rows * flops.causal_attention_flops(config, round(tokens / rows))
    return 4 * (vision + decoder + flops.lm_head_flops(config, tokens))


def load_average() -> str:
    try:
        return " ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", type=pathlib.Path, default=ROOT / "build" / "bench" / "bench_mpo")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per side (the first is warm-up)")
    ap.add_argument("--configs", default="tiny,small")
    ap.add_argument("--trl-worker", nargs=3, metavar=("CHECKPOINT", "STEPS", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.trl_worker:
        trl_worker(args.trl_worker[0], int(args.trl_worker[1]), int(args.trl_worker[2]))
        return
    if not args.binary.is_file():
        raise SystemExit(f"no binary at {args.binary}; build it with ninja -C <build dir> bench_mpo")
    if args.steps < 2:
        raise SystemExit("--steps must be >= 2 (the first step is warm-up)")
    import torch
    import transformers
    import trl
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, "
          f"python {platform.python_version()}; threads {args.threads}; {args.steps} steps per side; "
          f"load average {load_average()}")
    threads = str(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    table = []
    with tempfile.TemporaryDirectory(prefix="vlreward_bench_mpo_") as tmp:
        for name in args.configs.split(","):
            checkpoint = pathlib.Path(tmp) / name
            write_checkpoint(name, checkpoint)
            cpp = run([str(args.binary), "--checkpoint", str(checkpoint), "--pairs", str(PAIRS),
                       "--steps", str(args.steps), "--threads", threads], env)
            ref = run([sys.executable, __file__, "--trl-worker", str(checkpoint), str(args.steps), threads], env)
            if abs(cpp["losses"][0] - ref["losses"][0]) > 1e-4 * abs(ref["losses"][0]):
                raise SystemExit(f"{name}: first-step losses differ: C++ {cpp['losses'][0]} TRL {ref['losses'][0]}")
            med = {side: {k: statistics.median(r[k][1:]) for k in ("step_s", "step_cpu_s")}
                   for side, r in (("C++", cpp), ("TRL", ref))}
            work = step_flops(checkpoint, cpp["tokens"], 8)
            for side in med:
                med[side]["gflops"] = work / med[side]["step_s"] / 1e9
            print(f"\n{name}: {cpp['params'] / 1e6:.2f}M params, batch 4 pairs = 8 rows x {cpp['seq_len']} tokens "
                  f"({cpp['tokens']} real), {cpp['patches']} image patches; TRL attention {ref['attn']}, {ref['optim']}; "
                  f"first-step loss C++ {cpp['losses'][0]:.6f} TRL {ref['losses'][0]:.6f}; load average {load_average()}")
            for side, r in (("C++", cpp), ("TRL", ref)):
                print(f"  {side:4s} step wall {[round(t * 1e3, 1) for t in r['step_s']]} ms, "
                      f"cpu {[round(t * 1e3, 1) for t in r['step_cpu_s']]} ms; rss after load "
                      f"{r['rss_after_load_mib']:.0f} MiB, peak {r['peak_rss_mib']:.0f} MiB")
            table.append((name, cpp["params"], med, cpp, ref))

    print("\n| config | params | C++ step ms (cpu) | TRL step ms (cpu) | time C++/TRL (cpu) | C++ peak RSS MiB | "
          "TRL peak RSS MiB | RSS C++/TRL | C++/TRL RSS above loaded | GFLOP/s C++ / TRL |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, params, med, cpp, ref in table:
        c, t = med["C++"], med["TRL"]
        grow_c = cpp["peak_rss_mib"] - cpp["rss_after_load_mib"]
        grow_t = ref["peak_rss_mib"] - ref["rss_after_load_mib"]
        print(f"| {name} | {params / 1e6:.2f}M | {c['step_s'] * 1e3:.1f} ({c['step_cpu_s'] * 1e3:.1f}) | "
              f"{t['step_s'] * 1e3:.1f} ({t['step_cpu_s'] * 1e3:.1f}) | {c['step_s'] / t['step_s']:.2f}x "
              f"({c['step_cpu_s'] / t['step_cpu_s']:.2f}x) | {cpp['peak_rss_mib']:.0f} | {ref['peak_rss_mib']:.0f} | "
              f"{cpp['peak_rss_mib'] / ref['peak_rss_mib']:.2f}x | {grow_c:.0f} / {grow_t:.0f} MiB | "
              f"{c['gflops']:.1f} / {t['gflops']:.1f} |")


if __name__ == "__main__":
    main()
