#!/usr/bin/env python3
"""Reward scoring benchmark: vlreward's Skywork-VL backend (bench_reward) vs transformers + TRL's value head.

    .venv-ref/bin/python bench/bench_reward.py --binary build-rbench/bench/bench_reward [--threads 1]

For each config (tiny and small, the same as bench_model.py's, whose helpers this script imports) the script
builds Qwen2_5_VLForConditionalGeneration in fp32 with seeded random weights, saves it with save_pretrained into a
temp dir together with the tiny checkpoint's tokenizer, chat template and preprocessor config, and writes a random
value head (value_head.safetensors, TRL's v_head.summary.* keys) beside it. Nothing is committed.

The workload (the same files for both sides): --items requests in reward-score's JSONL format
({"id", "images": [relative paths], "question", "response"}), each with 1 or 2 generated images (PNG and JPEG,
--min-side..--max-side pixels per side) and a response of 1 to ~160 words. One pass scores the whole file:

  * reference (the Skywork-VL-Reward model card recipe, as tests/fixtures/gen_reward.py runs it): read the JSONL,
    then for each group of --batch requests in file order: apply_chat_template (no system message, no generation
    prompt), PIL Image.open of each image, Qwen2_5_VLProcessor (slow Qwen2VLImageProcessor, as the checkpoint
    defines it) with padding=True, padding_side="right"; TRL AutoModelForCausalLMWithValueHead forward
    (trl.experimental.ppo, trl 0.28); score = value[b, sum(attention_mask[b]) - 1]. Under torch.inference_mode(),
    with attn_implementation "eager" and "sdpa" (two reference sides).
  * C++: bench_reward --serve with the registry config {"type": "skywork_vl", ...}, max_batch_size = --batch and
    an unlimited token budget; one pass reads the JSONL and calls backend->score() per group of --batch requests
    (image decode, preprocessing, tokenization, forward, value head all inside). By default the backend then
    forwards together only requests of near-equal length (max_padding_fraction, 0.05 on CPU); a variant such as
    --cpp-variant 'padded={"max_padding_fraction": 1e9}' forwards each group of --batch as one right-padded batch,
    exactly the reference's groups.

torch.set_num_threads(N) for the reference; at::set_num_threads(N) and OMP/OPENBLAS_NUM_THREADS=N for the C++
process. Each number is the median of --repeat timed passes after --warmup untimed ones; the sides alternate pass by
pass and the order rotates each round, so background load on the shared machine hits all of them alike. Process
CPU times are reported too. The C++ scores must agree with both reference sides: |cpp - ref| <= --tolerance x
max(|ref|, rms(ref scores)) for every item (the rms floor keeps a score that happens to be near 0 from making the
relative error meaningless). Achieved GFLOP/s: bench/flops.py's matmul FLOPs of every item (vision tower +
decoder over its real tokens; padding not counted) per second of a pass.
"""
import argparse
import json
import os
import pathlib
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import transformers

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_model import CONFIGS, ROOT, SEED, TINY, build_model, load_average  # noqa: E402
from cpp_side import CppSide  # noqa: E402
from flops import gflops, scoring_flops  # noqa: E402

sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
import gen_model  # noqa: E402  (the image-only Qwen2_5_VLProcessor workaround, the deterministic test images)

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
from trl.experimental.ppo import AutoModelForCausalLMWithValueHead  # noqa: E402

ATTN_IMPLS = ("eager", "sdpa")
# The tiny checkpoint's files besides the weights and the model config: tokenizer, chat template, image processor.
PROCESSOR_FILES = ("added_tokens.json", "chat_template.jinja", "merges.txt", "preprocessor_config.json",
                   "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.json")
WORDS = ("the a picture shows red blue green boxes circles on of and with left right top bottom small large bright "
         "dark sky sea tree house road car person dog cat image region colour shape count answer because").split()


def write_checkpoint(config, checkpoint: pathlib.Path, attn: str = "eager"):
    model = build_model(config, attn)
    model.save_pretrained(checkpoint, safe_serialization=True)
    for name in PROCESSOR_FILES:
        shutil.copy(TINY / name, checkpoint / name)
    hidden = config.text_config.hidden_size
    gen = torch.Generator().manual_seed(SEED + 7)
    head = {"v_head.summary.weight": (torch.randn(1, hidden, generator=gen) / hidden ** 0.5).contiguous(),
            "v_head.summary.bias": torch.tensor([0.1])}
    save_file(head, checkpoint / "value_head.safetensors", metadata={"format": "pt"})
    return model


def reward_model(backbone, head_path: pathlib.Path):
    """The model card's wrapping: TRL's value-head model around the backbone, the head loaded strictly."""
    model = AutoModelForCausalLMWithValueHead.from_pretrained(backbone)
    result = model.load_state_dict(load_file(head_path), strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    model.requires_grad_(False)
    return model.eval()


def write_items(out: pathlib.Path, n: int, min_side: int, max_side: int) -> pathlib.Path:
    """n requests, alternating 1 and 2 images (half PNG, half JPEG), questions and responses of varied length."""
    rng = random.Random(SEED)
    (out / "images").mkdir()
    rows = []
    for i in range(n):
        images = []
        for k in range(1 + i % 2):
            h, w = rng.randint(min_side, max_side), rng.randint(min_side, max_side)
            name = f"images/{i:03d}_{k}." + ("png" if (i + k) % 2 == 0 else "jpg")
            img = gen_model._image(SEED + 100 * i + k, h, w)
            img.save(out / name, **({"format": "PNG"} if name.endswith("png") else
                                    {"format": "JPEG", "quality": 90}))
            images.append(name)
        words = lambda count: " ".join(rng.choice(WORDS) for _ in range(count))  # noqa: E731
        response_words = rng.choice((1, 4, 12, 30, 60, 100, 160))
        rows.append({"id": f"item{i:03d}", "images": images, "question": words(rng.randint(5, 25)).capitalize() + "?",
                     "response": words(response_words).capitalize() + "."})
    path = out / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def messages(row) -> list:
    """The model card's conversation: user [images..., question], then the response; no system message."""
    return [{"role": "user", "content": [{"type": "image"} for _ in row["images"]] +
             [{"type": "text", "text": row["question"]}]},
            {"role": "assistant", "content": row["response"]}]


class PythonSide:
    """The reference pipeline on one model (one attention implementation)."""

    def __init__(self, model, processor, items: pathlib.Path, batch: int):
        self.model, self.processor, self.items, self.batch = model, processor, items, batch

    @torch.inference_mode()
    def __call__(self) -> dict:
        start, cpu = time.perf_counter(), time.process_time()
        rows = [json.loads(line) for line in self.items.read_text().splitlines() if line.strip()]
        root, scores = self.items.parent, []
        for i in range(0, len(rows), self.batch):
            group = rows[i:i + self.batch]
            texts = [self.processor.apply_chat_template(messages(r), tokenize=False, add_generation_prompt=False)
                     for r in group]
            images = [Image.open(root / p) for r in group for p in r["images"]]
            kwargs = dict(text=texts, padding=True, padding_side="right", return_tensors="pt")
            if images:
                kwargs["images"] = images
            inputs = self.processor(**kwargs)
            values = self.model(**inputs, return_dict=True, use_cache=False)[-1]
            last = inputs["attention_mask"].sum(dim=-1, keepdim=True) - 1
            scores += values.gather(dim=-1, index=last).squeeze(-1).tolist()
        s = time.perf_counter() - start
        return {"items": len(scores), "s": s, "cpu_s": time.process_time() - cpu, "scores": scores}


def max_relative_error(got, ref) -> float:
    floor = float(np.sqrt(np.mean(np.square(ref))))
    return max(abs(g - r) / max(abs(r), floor) for g, r in zip(got, ref))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", type=pathlib.Path, default=ROOT / "build" / "bench" / "bench_reward")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--configs", default="tiny,small")
    ap.add_argument("--batches", default="8", help="requests per forward, comma-separated (e.g. 1,8)")
    ap.add_argument("--items", type=int, default=32)
    ap.add_argument("--min-side", type=int, default=160)
    ap.add_argument("--max-side", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--cpp-variant", action="append", default=[], metavar="NAME=JSON",
                    help="another C++ side with these backend config keys on top, e.g. "
                         "'padded={\"max_padding_fraction\": 1e9}' (the reference's padded groups exactly)")
    ap.add_argument("--json", type=pathlib.Path, help="also write all raw timings here")
    args = ap.parse_args()
    variants = {"C++": {}}
    for spec in args.cpp_variant:
        name, _, overrides = spec.partition("=")
        variants[f"C++ {name}"] = json.loads(overrides)
    if not args.binary.is_file():
        raise SystemExit(f"no binary at {args.binary}; build it with ninja -C <build dir> bench_reward")

    import trl
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=UserWarning)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}; "
          f"threads {args.threads}; load average {load_average()}")

    rows, raw = [], {}
    with tempfile.TemporaryDirectory(prefix="vlreward_bench_reward_") as tmp:
        tmp = pathlib.Path(tmp)
        items = write_items(tmp, args.items, args.min_side, args.max_side)
        for name in args.configs.split(","):
            config = CONFIGS[name]()
            checkpoint = tmp / name
            backbones = {"eager": write_checkpoint(config, checkpoint)}
            backbones["sdpa"] = build_model(config, "sdpa", backbones["eager"].state_dict())
            params = sum(p.numel() for p in backbones["eager"].parameters())
            models = {attn: reward_model(b, checkpoint / "value_head.safetensors") for attn, b in backbones.items()}
            processor = gen_model._load_processor(checkpoint)
            tokens, flops = [], 0.0
            for text, images in _texts_and_images(processor, items):
                inputs = processor(text=[text], images=images or None, return_tensors="pt")
                tokens.append(int(inputs["input_ids"].shape[1]))
                patches = [int(g.prod()) for g in inputs["image_grid_thw"]] if images else []
                flops += scoring_flops(config, tokens[-1], patches)
            for batch in (int(b) for b in args.batches.split(",")):
                label = f"{name} ({params / 1e6:.2f}M params) batch {batch}"
                print(f"\n{label}: {args.items} items, {sum(tokens)} tokens in all ({min(tokens)}..{max(tokens)} "
                      f"per item), {flops / 1e9:.1f} GFLOP per pass; load average {load_average()}", flush=True)
                cpp_config = {"type": "skywork_vl", "model": str(checkpoint), "dtype": "float32",
                              "max_batch_size": batch, "max_batch_tokens": 1 << 30}
                sides = {side: CppSide(args.binary, dict(cpp_config, **overrides), items, batch, args.threads)
                         for side, overrides in variants.items()}
                cpp_sides = list(sides)
                for attn in ATTN_IMPLS:
                    sides[f"HF {attn}"] = PythonSide(models[attn], processor, items, batch)
                order = list(sides)
                times = {side: [] for side in sides}
                cpu_times = {side: [] for side in sides}
                scores = {}
                for rnd in range(args.warmup + args.repeat):
                    for side in order[rnd % len(order):] + order[:rnd % len(order)]:
                        res = sides[side]()
                        assert res["items"] == args.items, (side, res["items"])
                        scores[side] = res["scores"]
                        if rnd >= args.warmup:
                            times[side].append(res["s"])
                            cpu_times[side].append(res["cpu_s"])
                for side in cpp_sides:
                    sides[side].close()
                for cpp_side in cpp_sides:
                    errors = {side: max_relative_error(scores[cpp_side], scores[side]) for side in sides
                              if side not in cpp_sides}
                    for side, err in errors.items():
                        if not err <= args.tolerance:
                            raise SystemExit(f"{label}: {cpp_side} scores differ from {side}: max relative error "
                                             f"{err:.2e} > {args.tolerance:.0e}\n  {cpp_side}: {scores[cpp_side]}\n"
                                             f"  {side}: {scores[side]}")
                    print(f"  scores agree: {cpp_side} vs " + ", ".join(f"{s} max rel. error {e:.1e}"
                                                                      for s, e in errors.items()))
                for side in sides:
                    print(f"  {side:8s} {statistics.median(times[side]) * 1e3:9.1f} ms "
                          f"{[round(t * 1e3, 1) for t in times[side]]}  cpu "
                          f"{statistics.median(cpu_times[side]) * 1e3:9.1f} ms "
                          f"{[round(t * 1e3, 1) for t in cpu_times[side]]}")
                ips = {side: args.items / statistics.median(times[side]) for side in sides}
                cpu = {side: statistics.median(cpu_times[side]) for side in sides}
                rows.append((name, batch, ips, cpu, {side: gflops(flops, statistics.median(times[side])) for side in sides}))
                raw[f"{name}_b{batch}"] = {"wall_s": times, "cpu_s": cpu_times, "scores": scores}

    print(f"\nthreads {args.threads}; {args.items} items; median of {args.repeat} after {args.warmup} warm-up; "
          f"load average at end {load_average()}\n")
    print("| config | batch | C++ side | C++ items/s | HF eager items/s | HF sdpa items/s | C++/eager | C++/sdpa | "
          "CPU s C++ / eager / sdpa | GFLOP/s C++ / sdpa |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, batch, ips, cpu, rate in rows:
        e, s = ips["HF eager"], ips["HF sdpa"]
        for side in variants:
            c = ips[side]
            print(f"| {name} | {batch} | {side} | {c:.1f} | {e:.1f} | {s:.1f} | {c / e:.2f}x | {c / s:.2f}x | "
                  f"{cpu[side]:.2f} / {cpu['HF eager']:.2f} / {cpu['HF sdpa']:.2f} | "
                  f"{rate[side]:.1f} / {rate['HF sdpa']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1) + "\n")


def _texts_and_images(processor, items: pathlib.Path):
    """Each item's rendered text and images (for the token counts printed above the timings)."""
    for line in items.read_text().splitlines():
        row = json.loads(line)
        text = processor.apply_chat_template(messages(row), tokenize=False, add_generation_prompt=False)
        yield text, [Image.open(items.parent / p) for p in row["images"]]


if __name__ == "__main__":
    main()
