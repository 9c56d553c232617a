#!/usr/bin/env python3
"""Reward scoring at Qwen2.5-VL-7B dimensions on a GPU: vlreward (bench_reward) vs transformers (sdpa), both in
bf16 on the same device, the same checkpoint and the same files, in one run.

    python3 bench/gpu_reward.py --binary build-gpu/bench/bench_reward --out OUT_DIR            # GPU, 7B dims
    python3 bench/gpu_reward.py --binary build/bench/bench_reward --dims small --device cpu   # plumbing check
    python3 bench/gpu_reward.py --binary build/bench/bench_reward --device cpu --threads 2 --items 8 --batches 8 \
        --tokens 384 --warmup 0 --repeat 1 --sequential --reward-score build/reward/reward-score --out OUT_DIR
                                                 # 7B at real size on a CPU host (~17 GB of disk and of RAM);
                                                 # add --cli-only --items 1 where bf16 GEMMs are slow

The checkpoint: Qwen2.5-VL-7B-Instruct's exact config.json (tests/fixtures/config/hub_7b.json; --dims small
shrinks the widths and depths, keeping the vocabulary), random bf16 weights, saved by save_pretrained in shards
of --shard-size like the published checkpoint, the tiny fixture's tokenizer and chat template, the 7B image
processor config, and a random value head (value_head.safetensors, TRL's v_head.summary.* keys). Deleted at exit.

The workload: --items requests in reward-score's JSONL format, each with one --image-side² PNG and a response
whose length brings the templated item to about --tokens tokens. One pass scores the whole file in groups of
--batch items (processing, tokenization, forward, value head; images read from disk each pass):
  * transformers: AutoProcessor (padding right) + the backbone (model.model, no lm_head) with
    attn_implementation="sdpa", score = value head at the last real token;
  * C++: bench_reward --serve with the skywork_vl backend, max_batch_size = --batch.
Each side's number is the median of --repeat passes after --warmup; the sides alternate pass by pass.

FLOPs per item (for achieved FLOP/s and MFU): bench/flops.py's scoring_flops (the matmuls of the vision tower and
the decoder). MFU is against --peak-tflops (H200 dense bf16: 989).
Writes OUT_DIR/gpu_reward.md (a markdown table) and OUT_DIR/gpu_reward.json.
"""
import argparse
import gc
import json
import multiprocessing
import resource
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

import transformers

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from cpp_side import CppSide  # noqa: E402
from flops import scoring_flops  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"
TOKENIZER_FILES = ("added_tokens.json", "chat_template.jinja", "merges.txt", "special_tokens_map.json",
                   "tokenizer.json", "tokenizer_config.json", "vocab.json")
WORDS = ("the a picture shows red blue green boxes circles on of and with left right top bottom small large bright "
         "dark sky sea tree house road car person dog cat image region colour shape count answer because").split()
SMALL = {"hidden_size": 1024, "intermediate_size": 2048, "num_hidden_layers": 2, "num_attention_heads": 8,
         "num_key_value_heads": 2,
         "vision_config": {"depth": 2, "hidden_size": 256, "intermediate_size": 512, "num_heads": 4,
                           "out_hidden_size": 1024, "fullatt_block_indexes": [1]}}  # head_dim 128, as mrope_section needs


def model_config(dims: str) -> dict:
    config = json.loads((FIXTURES / "config" / "hub_7b.json").read_text())
    # The special tokens' ids of the tokenizer used here (the tiny fixture's, not the hub's).
    tok = transformers.AutoTokenizer.from_pretrained(FIXTURES / "model" / "tiny")
    for key, token in (("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                       ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"),
                       ("vision_token_id", "<|vision_pad|>"), ("eos_token_id", "<|im_end|>"),
                       ("bos_token_id", "<|endoftext|>")):
        config[key] = tok.convert_tokens_to_ids(token)
    if dims == "small":
        vision = dict(config["vision_config"], **SMALL["vision_config"])
        config.update({k: v for k, v in SMALL.items() if k != "vision_config"})
        config["vision_config"] = vision
    return config


def write_checkpoint(dims: str, out: pathlib.Path, device: str, shard_size: str, seed: int) -> dict:
    config_dict = model_config(dims)
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(config_dict))
    config = transformers.AutoConfig.from_pretrained(out)
    torch.manual_seed(seed)
    with torch.device(device):
        model = transformers.Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out, max_shard_size=shard_size)
    for name in TOKENIZER_FILES:
        shutil.copy(FIXTURES / "model" / "tiny" / name, out / name)
    shutil.copy(FIXTURES / "images" / "configs" / "qwen2_5_vl_7b_instruct.json", out / "preprocessor_config.json")
    hidden = config_dict["hidden_size"]
    gen = torch.Generator().manual_seed(seed + 7)
    save_file({"v_head.summary.weight": (torch.randn(1, hidden, generator=gen) / hidden ** 0.5).contiguous(),
               "v_head.summary.bias": torch.tensor([0.1])}, str(out / "value_head.safetensors"))
    del model
    return config_dict


def load_processor(checkpoint: pathlib.Path):
    """AutoProcessor as a user gets it; without torchvision (no video processor), the image-only processor of the
    fixture generator."""
    try:
        return transformers.AutoProcessor.from_pretrained(checkpoint)
    except ImportError:
        sys.path.insert(0, str(FIXTURES))
        import gen_model
        return gen_model._load_processor(checkpoint)


def messages(row: dict, image: str) -> list:
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": row["question"]}]},
            {"role": "assistant", "content": [{"type": "text", "text": row["response"]}]}]


def write_items(out: pathlib.Path, processor, n: int, side: int, tokens: int, seed: int) -> list:
    """Items of about `tokens` templated tokens each (the image's tokens included); returns their token counts."""
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True)
    response = lambda i, words: " ".join(WORDS[(i + k) % len(WORDS)] for k in range(words))  # noqa: E731
    # Tokens grow linearly with the response's words: two probes give the word count that reaches the target.
    probe = {"question": "What does the picture show?", "images": ["images/0.png"]}
    rows, counts = [], []
    for i in range(n):
        pixels = rng.integers(0, 256, size=(side // 8, side // 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((side, side), Image.NEAREST).save(out / "images" / f"{i}.png")
        if i == 0:
            c64 = item_tokens(processor, dict(probe, response=response(0, 64)), out)
            c128 = item_tokens(processor, dict(probe, response=response(0, 128)), out)
            words = max(1, 64 + round((tokens - c64) * 64 / max(c128 - c64, 1)))
        row = {"id": f"item{i}", "images": [f"images/{i}.png"], "question": probe["question"],
               "response": response(i, words)}
        rows.append(row)
        counts.append(item_tokens(processor, row, out))
    with open(out / "items.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return counts


def item_tokens(processor, row: dict, root: pathlib.Path) -> int:
    text = processor.apply_chat_template(messages(row, str(root / row["images"][0])), tokenize=False)
    image = Image.open(root / row["images"][0]).convert("RGB")
    return int(processor(text=[text], images=[image], return_tensors="pt")["input_ids"].shape[1])


class Reference:
    """transformers: processor + backbone (sdpa) + value head, score at the last real token."""

    def __init__(self, checkpoint: pathlib.Path, device: str, items: pathlib.Path, batch: int):
        self.processor = load_processor(checkpoint)
        model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(
            checkpoint, dtype=torch.bfloat16, attn_implementation="sdpa").to(device).eval()
        self.backbone = model.model
        from safetensors.torch import load_file
        head = load_file(str(checkpoint / "value_head.safetensors"))
        self.head_w = head["v_head.summary.weight"].to(device, torch.bfloat16)
        self.head_b = head["v_head.summary.bias"].to(device, torch.bfloat16)
        self.device, self.items, self.batch = device, items, batch

    @torch.inference_mode()
    def __call__(self) -> dict:
        start = time.perf_counter()
        rows = [json.loads(line) for line in open(self.items)]
        scores = []
        for b in range(0, len(rows), self.batch):
            group = rows[b:b + self.batch]
            texts = [self.processor.apply_chat_template(messages(r, str(self.items.parent / r["images"][0])),
                                                        tokenize=False) for r in group]
            images = [Image.open(self.items.parent / r["images"][0]).convert("RGB") for r in group]
            inputs = self.processor(text=texts, images=images, padding=True, padding_side="right",
                                    return_tensors="pt").to(self.device)
            hidden = self.backbone(**inputs).last_hidden_state
            last = inputs["attention_mask"].sum(1) - 1
            values = hidden[torch.arange(hidden.shape[0], device=hidden.device), last] @ self.head_w.T + self.head_b
            scores.extend(values.float().squeeze(-1).cpu().tolist())
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        return {"s": time.perf_counter() - start, "scores": scores}


def max_rss_self() -> int:
    """Peak resident set size of this process in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_reward_score(binary: pathlib.Path, work: pathlib.Path, device: str, batch: int, threads: int,
                     reference: list) -> dict:
    """reward-score as a user runs it, on the benchmark's checkpoint and items. Its peak RSS is read from
    /proc/PID/status (VmHWM, the high-water mark of its own address space) while it runs: a child's ru_maxrss
    would include this Python process's pages, copied at fork."""
    import os
    import subprocess
    out = work / "reward_score.jsonl"
    cmd = [str(binary), "--model", str(work / "ckpt"), "--dtype", "bfloat16", "--device", device,
           "--batch-size", str(batch), "--input", str(work / "data" / "items.jsonl"), "--output", str(out),
           "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    peak = 0
    while proc.poll() is None:
        try:
            for line in open(f"/proc/{proc.pid}/status"):
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except (FileNotFoundError, ProcessLookupError):
            pass
        time.sleep(0.05)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"reward-score exited with {proc.returncode}: {' '.join(cmd)}")
    by_id = {r["id"]: r["score"] for r in map(json.loads, open(out))}
    scores = [by_id[json.loads(line)["id"]] for line in open(work / "data" / "items.jsonl")]
    a, b = np.array(scores), np.array(reference)
    diff = float(np.max(np.abs(a - b)) / max(float(np.sqrt(np.mean(b * b))), 1e-12))
    return {"side": "reward-score", "s": wall, "peak_rss_gib": peak / 2**30,
            "score_max_rel_diff": diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", type=pathlib.Path, required=True)
    ap.add_argument("--out", type=pathlib.Path, required=True)
    ap.add_argument("--dims", choices=("7b", "small"), default="7b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--items", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=1024, help="templated tokens per item, image included")
    ap.add_argument("--image-side", type=int, default=448)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=8, help="CPU threads for preprocessing on each side")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the device")
    ap.add_argument("--shard-size", default="4GB")
    ap.add_argument("--workdir", type=pathlib.Path, help="where the checkpoint goes (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--reward-score", type=pathlib.Path, metavar="BINARY",
                    help="also run the reward-score CLI once over the items (load + score in one process) and report "
                         "its wall time and peak RSS against the weights' size")
    ap.add_argument("--cli-only", action="store_true",
                    help="with --reward-score: skip the bench_reward server side (transformers and the CLI only; "
                         "for hosts where one 7B pass takes many minutes)")
    ap.add_argument("--sequential", action="store_true",
                    help="load one side at a time (host RAM for one model only); default: both, passes alternating")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="gpu_reward_", dir=args.workdir))
    try:
        t0 = time.perf_counter()
        # In a child process, so this process's peak RSS measures the reference alone.
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            config = pool.apply(write_checkpoint, (args.dims, work / "ckpt", args.device, args.shard_size, args.seed))
        weights = sum(p.stat().st_size for p in (work / "ckpt").glob("model*.safetensors"))
        print(f"checkpoint: {weights / 2**30:.2f} GiB in {time.perf_counter() - t0:.1f} s", flush=True)
        processor = load_processor(work / "ckpt")
        counts = write_items(work / "data", processor, args.items, args.image_side, args.tokens, args.seed)
        merged = (args.image_side // 28) ** 2
        patches = merged * 4
        flops = sum(scoring_flops(config, c, [patches]) for c in counts)
        tokens = sum(counts)
        print(f"items: {args.items}, {tokens} tokens ({min(counts)}..{max(counts)} each, {merged} image tokens)",
              flush=True)
        rows = []
        cpp_config = {"type": "skywork_vl", "model": str(work / "ckpt"), "dtype": "bfloat16", "device": args.device}
        items = work / "data" / "items.jsonl"
        for batch in [int(b) for b in args.batches.split(",")]:
            config = dict(cpp_config, max_batch_size=batch, max_batch_tokens=batch * (max(counts) + 64))
            factories = {"transformers": lambda: Reference(work / "ckpt", args.device, items, batch),
                         "vlreward": lambda: CppSide(args.binary, config, items, batch, args.threads)}
            if args.cli_only:
                del factories["vlreward"]
            times, scores, load, peak = {n: [] for n in factories}, {}, {}, {}

            def run(name, side, i):
                out = side()
                scores[name] = out["scores"]
                if i >= args.warmup:
                    times[name].append(out["s"])

            def close(name, side):
                peak[name] = side.peak_rss() if name == "vlreward" else max_rss_self()
                if name == "vlreward":
                    side.close()
                if args.device.startswith("cuda"):
                    torch.cuda.empty_cache()

            if args.sequential:  # one side in memory at a time (a 7B model twice does not fit in host RAM)
                for name, make in factories.items():
                    t0 = time.perf_counter()
                    side = make()
                    load[name] = time.perf_counter() - t0
                    for i in range(args.warmup + args.repeat):
                        run(name, side, i)
                    close(name, side)
                    del side
                    gc.collect()
            else:  # both loaded; passes alternate so background load hits both alike
                sides = {}
                for name, make in factories.items():
                    t0 = time.perf_counter()
                    sides[name] = make()
                    load[name] = time.perf_counter() - t0
                for i in range(args.warmup + args.repeat):
                    for name in (list(sides) if i % 2 == 0 else list(reversed(sides))):
                        run(name, sides[name], i)
                for name, side in sides.items():
                    close(name, side)
                del sides
                gc.collect()
            b = np.array(scores["transformers"])
            agreement = float("nan")
            if "vlreward" in scores:
                a = np.array(scores["vlreward"])
                agreement = float(np.max(np.abs(a - b)) / max(float(np.sqrt(np.mean(b * b))), 1e-12))
            for name in factories:
                s = statistics.median(times[name])
                rows.append({"batch": batch, "side": name, "s": s, "items_per_s": args.items / s,
                             "tokens_per_s": tokens / s, "tflops": flops / s / 1e12,
                             "mfu": flops / s / 1e12 / args.peak_tflops, "load_s": load[name],
                             "peak_rss_gib": peak[name] / 2**30, "weights_gib": weights / 2**30,
                             "score_max_rel_diff": agreement})
            if "vlreward" in times:
                rows[-1]["speedup"] = statistics.median(times["transformers"]) / statistics.median(times["vlreward"])
            print(json.dumps(rows[-len(factories):]), flush=True)
        if args.reward_score:
            cli = run_reward_score(args.reward_score, work, args.device, max(int(b) for b in args.batches.split(",")),
                                   args.threads, scores["transformers"])
            # End to end against end to end: the CLI's wall time holds its load, so transformers' load is added.
            reference_s = load["transformers"] + statistics.median(times["transformers"])
            cli.update(weights_gib=weights / 2**30, rss_over_weights=cli["peak_rss_gib"] * 2**30 / weights,
                       items_per_s=args.items / cli["s"], transformers_load_and_score_s=reference_s,
                       speedup_end_to_end=reference_s / cli["s"])
            print(json.dumps(cli), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    lines = [f"Reward scoring, {args.dims} dims, bf16, {device_name}, torch {torch.__version__}, transformers "
             f"{transformers.__version__}; {args.items} items of ~{args.tokens} tokens with one "
             f"{args.image_side}x{args.image_side} image; median of {args.repeat} passes; weights "
             f"{rows[0]['weights_gib']:.2f} GiB.", "",
             "| batch | side | items/s | tokens/s | TFLOP/s | MFU | vlreward / transformers | load s | peak RSS GiB "
             "| score max rel diff |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['speedup']:.2f}x" if "speedup" in r else ""
        lines.append(f"| {r['batch']} | {r['side']} | {r['items_per_s']:.2f} | {r['tokens_per_s']:.0f} | "
                     f"{r['tflops']:.3g} | {100 * r['mfu']:.1f}% | {ratio} | {r['load_s']:.1f} | {r['peak_rss_gib']:.2f} | "
                     f"{r['score_max_rel_diff']:.2e} |")
    if args.reward_score:
        lines += ["", f"`reward-score` CLI, one process (load + score {args.items} items): {cli['s']:.1f} s wall, "
                  f"{cli['items_per_s']:.3f} items/s including the load, peak RSS {cli['peak_rss_gib']:.2f} GiB = "
                  f"{cli['rss_over_weights']:.3f}x the weights; transformers load + score "
                  f"{cli['transformers_load_and_score_s']:.1f} s, so {cli['speedup_end_to_end']:.2f}x end to end; "
                  f"scores max rel diff vs transformers {cli['score_max_rel_diff']:.2e}."]
    (args.out / "gpu_reward.md").write_text("\n".join(lines) + "\n")
    (args.out / "gpu_reward.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
