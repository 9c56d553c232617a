#!/usr/bin/env python3
"""LoRA MPO step on a Qwen2.5-VL-7B-dimension model cut to 2 decoder layers and 2 vision blocks: vlreward's trainer
(bench_lora) vs TRL 0.28 + PEFT 0.18.1, same checkpoint, pair and settings, each in its own process.

    .venv-ref/bin/python bench/bench_lora.py --binary build/bench/bench_lora [--threads 2] [--steps 3]
    python3 bench/bench_lora.py --binary build-gpu/bench/bench_lora --device cuda --dims 7b --tokens 2048   # GPU

--dims: cut (the default above), 7b (all 28 layers and 32 blocks: 8.3 B parameters) or small (hidden 512, for a
dry run). On CUDA both sides run bf16 autocast and report the allocator's peak; the achieved TFLOP/s and MFU use
bench/flops.py's matmul FLOPs of the step (policy forward + backward to the inputs + reference forward; lm_head over
the completion positions for the C++ side, over every position for TRL) against --peak-tflops.

The model: Qwen2.5-VL-7B's config.json (configs/qwen2_5_vl_7b: hidden 3584, intermediate 18944, 28/4 heads,
vocabulary 152064; vision 1280 x 3420) with 2 decoder layers and 2 vision blocks, the tiny fixture's special-token
ids and tokenizer (its ids are a subset of the vocabulary), seeded normal(0, 0.02) weights saved in bfloat16
(1.6 B parameters). The pair: one 448 x 448 image (1024 patches, 256 image tokens) and text making each row about
1024 tokens. Both sides: bf16 base frozen, float32 rsLoRA adapters r 16 (alpha 32, no dropout, B = 0 at the start
so both first-step losses are the base model's) on every decoder projection; MPO loss (sigmoid 0.8, bco_pair 0.2,
sft 1.0, beta 0.1); the reference is the base with the adapters disabled; AdamW; micro-batch of one pair.

  * TRL: DPOTrainer on a PeftModel (gen_lora.py's image-fixed trainer), sdpa attention, in a subprocess.
  * C++: bench_lora (MpoTrainer.optimizer_step with lora:), without and with gradient checkpointing.

Reported: the median step time after the first (warm-up) step, wall and CPU, the peak resident set (VmHWM) and
the resident set before/after loading; for the C++ runs also `mpo-train --plan`'s total for the same micro-batch
against the measured peak above the pre-load resident set.
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
TINY = FIXTURES / "model" / "tiny"
sys.path.insert(0, str(ROOT / "bench"))
from bench_mpo import PROCESSOR_FILES, load_average, peak_rss_mib, rss_mib, run  # noqa: E402

TARGETS = r"model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
WORDS = ("the red square sits left of two blue circles while a green triangle points up near the top edge of "
         "the picture and small grey dots fill the background").split()


def write_checkpoint(directory: pathlib.Path, dims: str, device: str = "cpu") -> None:
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    config = json.loads((ROOT / "configs" / "qwen2_5_vl_7b" / "config.json").read_text())
    tiny = json.loads((TINY / "config.json").read_text())
    for key in ("bos_token_id", "eos_token_id", "pad_token_id", "image_token_id", "video_token_id",
                "vision_start_token_id", "vision_end_token_id"):
        config[key] = tiny[key]
    config.pop("vision_token_id", None)
    if dims != "7b":
        config["num_hidden_layers"] = 2
        config["vision_config"]["depth"] = 2
        config["vision_config"]["fullatt_block_indexes"] = [1]
    if dims == "small":
        config.update(hidden_size=512, intermediate_size=1408, num_attention_heads=8, num_key_value_heads=2)
        config["rope_scaling"]["mrope_section"] = [8, 12, 12]
        config["vision_config"].update(hidden_size=256, intermediate_size=512, num_heads=4, out_hidden_size=512)
    config["torch_dtype"] = "bfloat16"
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):  # a 7B model initialises in seconds on a GPU, minutes on the host
        model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**config))
    torch.set_default_dtype(torch.float32)
    model.save_pretrained(directory, safe_serialization=True)
    for f in PROCESSOR_FILES:
        if (TINY / f).is_file():
            shutil.copyfile(TINY / f, directory / f)


def write_pair(directory: pathlib.Path, checkpoint: pathlib.Path, tokens: int) -> pathlib.Path:
    """One pair whose chosen row has about `tokens` tokens (prompt with one 448 x 448 image + completion)."""
    import numpy as np
    from PIL import Image
    sys.path.insert(0, str(FIXTURES))
    import gen_model
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (448, 448, 3), dtype=np.uint8)).save(directory / "image.png")
    processor = gen_model._load_processor(checkpoint)
    chosen = " ".join(WORDS[i % len(WORDS)] for i in range(60)) + "."
    rejected = " ".join(WORDS[(i * 7) % len(WORDS)] for i in range(60)) + "."
    words = 10
    while True:
        question = " ".join(WORDS[i % len(WORDS)] for i in range(words)) + "?"
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
                    {"role": "assistant", "content": chosen}]
        text = processor.apply_chat_template(messages, tokenize=False)
        n = len(processor(images=[Image.open(directory / "image.png")], text=text)["input_ids"][0])
        if n >= tokens:
            break
        words += max(1, (tokens - n) // 2)
    pairs = directory / "pair.jsonl"
    pairs.write_text(json.dumps({"id": "p0", "images": ["image.png"], "question": question, "chosen": chosen,
                                 "rejected": rejected}) + "\n")
    return pairs


def trl_worker(checkpoint: str, pairs: str, steps: int, threads: int, device: str) -> None:
    import torch
    torch.set_num_threads(threads)
    sys.path.insert(0, str(FIXTURES))
    import transformers
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from PIL import Image
    from transformers import Qwen2_5_VLForConditionalGeneration, TrainerCallback
    from trl import DPOConfig
    import gen_lora
    import gen_model
    import gen_mpo_step
    transformers.logging.set_verbosity_error()
    p = json.loads(pathlib.Path(pairs).read_text().splitlines()[0])
    root = pathlib.Path(pairs).parent
    rows = {"images": [[Image.open(root / i).convert("RGB") for i in p["images"]]],
            "prompt": [[{"role": "user", "content": [{"type": "image"}] * len(p["images"]) +
                         [{"type": "text", "text": p["question"]}]}]],
            "chosen": [[{"role": "assistant", "content": p["chosen"]}]],
            "rejected": [[{"role": "assistant", "content": p["rejected"]}]]}

    class Timer(TrainerCallback):
        def __init__(self):
            self.wall, self.cpu = [], []

        def on_step_begin(self, args, state, control, **kwargs):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            self.wall.append(time.perf_counter() - self.t0)
            self.cpu.append(time.process_time() - self.c0)

    rss_before = rss_mib()
    processor = gen_model._load_processor(pathlib.Path(checkpoint))
    cuda = device.startswith("cuda")
    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.bfloat16)
    if cuda:
        base.to(device)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, use_rslora=True,
                                            target_modules=TARGETS))
    # No truncation (DPOConfig's max_length 1024 would cut the image tokens off the prompt).
    config = dict(gen_lora.CONFIG, per_device_train_batch_size=1, gradient_accumulation_steps=1, max_steps=steps,
                  learning_rate=1e-4, lr_scheduler_type="constant", max_length=None, max_prompt_length=None,
                  max_completion_length=None)
    with tempfile.TemporaryDirectory() as out:
        config.update(bf16=cuda)
        args = DPOConfig(output_dir=out, report_to=[], logging_steps=1, save_strategy="no", use_cpu=not cuda,
                         disable_tqdm=True, **config)
        timer = Timer()
        trainer = gen_lora._LoraDPOTrainer(
            model=model, ref_model=None, args=args, train_dataset=Dataset.from_dict(rows), processing_class=processor,
            data_collator=gen_mpo_step._Collator(pad_token_id=processor.tokenizer.pad_token_id), callbacks=[timer])
        trainer.remove_callback(transformers.PrinterCallback)
        rss_loaded = rss_mib()
        gpu_loaded = torch.cuda.memory_allocated() / 2**20 if cuda else None
        trainer.train()
    losses = [float(c["loss"]) for c in trainer.captured["losses"]]
    result = {"step_s": timer.wall, "step_cpu_s": timer.cpu, "losses": losses,
              "attn": base.config._attn_implementation, "rss_before_load_mib": rss_before,
              "rss_after_load_mib": rss_loaded, "peak_rss_mib": peak_rss_mib()}
    if cuda:
        result.update(gpu_after_load_mib=gpu_loaded, gpu_peak_mib=torch.cuda.max_memory_allocated() / 2**20)
    print(json.dumps(result))


def step_flops(checkpoint: pathlib.Path, rows_tokens: int, patches: int, lm_head_positions: int) -> float:
    """Matmul FLOPs of one LoRA MPO step on one pair (2 rows): the policy's forward and its backward to the inputs
    (the frozen base computes no weight gradients; the adapters' are negligible), and the reference forward: three
    forwards of the vision tower and the decoder, lm_head over `lm_head_positions` per forward."""
    import flops
    config = json.loads((checkpoint / "config.json").read_text())
    decoder = 2.0 * flops.decoder_linear_params(config) * 2 * rows_tokens + 2 * flops.causal_attention_flops(config, rows_tokens)
    vision = 2 * flops.vision_flops(config, patches)
    return 3 * (decoder + vision + flops.lm_head_flops(config, lm_head_positions))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", type=pathlib.Path, default=ROOT / "build" / "bench" / "bench_lora")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="optimizer steps per side (the first is warm-up)")
    ap.add_argument("--tokens", type=int, default=1024, help="tokens of the chosen row")
    ap.add_argument("--dims", choices=["cut", "7b", "small"], default="cut")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="the device's dense bf16 peak, for MFU (H100/H200)")
    ap.add_argument("--out", type=pathlib.Path, help="also write the table to OUT/bench_lora.md")
    ap.add_argument("--trl-worker", nargs="+", metavar="CHECKPOINT PAIRS STEPS THREADS [DEVICE]",
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.trl_worker:
        w = args.trl_worker
        trl_worker(w[0], w[1], int(w[2]), int(w[3]), w[4] if len(w) > 4 else "cpu")
        return
    if not args.binary.is_file():
        raise SystemExit(f"no binary at {args.binary}; build it with ninja -C <build dir> bench_lora")
    if args.steps < 2:
        raise SystemExit("--steps must be >= 2 (the first step is warm-up)")
    import peft
    import torch
    import transformers
    import trl
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, "
          f"peft {peft.__version__}, python {platform.python_version()}; threads {args.threads}; {args.steps} steps "
          f"per side; load average {load_average()}")
    threads = str(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    with tempfile.TemporaryDirectory(prefix="vlreward_bench_lora_") as tmp:
        checkpoint = pathlib.Path(tmp) / "model"
        write_checkpoint(checkpoint, args.dims, args.device)
        pairs = write_pair(pathlib.Path(tmp), checkpoint, args.tokens)
        runs = {}
        for name, extra in (("C++", []), ("C++ checkpointed", ["--gradient-checkpointing"])):
            runs[name] = run([str(args.binary), "--checkpoint", str(checkpoint), "--pairs", str(pairs),
                              "--steps", str(args.steps), "--threads", threads, "--device", args.device] + extra, env)
        runs["TRL + PEFT"] = run([sys.executable, __file__, "--trl-worker", str(checkpoint), str(pairs),
                                  str(args.steps), threads, args.device], env)
        cpp, ref = runs["C++"], runs["TRL + PEFT"]
        work = {name: step_flops(checkpoint, cpp["tokens_per_row"], cpp["image_patches"],
                                 2 * (cpp["completion_tokens"] if name.startswith("C++") else cpp["tokens_per_row"]))
                for name in runs}
    print(f"\n{cpp['params'] / 1e9:.3f} B params ({cpp['trainable'] / 1e6:.1f} M trainable), one pair = 2 rows x "
          f"{cpp['tokens_per_row']} tokens ({cpp['image_patches']} image patches, {cpp['completion_tokens']} completion "
          f"tokens); TRL attention {ref['attn']}; first-step loss C++ {cpp['losses'][0]:.6f} TRL {ref['losses'][0]:.6f}")
    if abs(cpp["losses"][0] - ref["losses"][0]) > 2e-2 * abs(ref["losses"][0]):
        raise SystemExit("first-step losses differ by more than bf16 rounding")
    cuda = args.device.startswith("cuda")
    memory = "gpu_peak_mib" if cuda else "peak_rss_mib"
    lines = [f"| run | step s (cpu s) | time vs TRL | pairs/s | TFLOP/s{' (MFU)' if cuda else ''} | "
             f"peak {'GPU' if cuda else 'RSS'} MiB | memory vs TRL | measured MiB | plan MiB | plan / measured |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    t_ref = statistics.median(ref["step_s"][1:])
    for name, r in runs.items():
        wall, cpu_s = statistics.median(r["step_s"][1:]), statistics.median(r["step_cpu_s"][1:])
        # What the plan estimates: on CUDA the allocator's peak; on the CPU the peak above the pre-load resident set.
        measured = r[memory] if cuda else r["peak_rss_mib"] - r["rss_before_load_mib"]
        plan = f"{r['plan_total_mib']:.0f} | {r['plan_total_mib'] / measured:.2f}" if "plan_total_mib" in r else "– | –"
        tflops = work[name] / wall / 1e12
        mfu = f" ({100 * tflops / args.peak_tflops:.1f} %)" if cuda else ""
        lines.append(f"| {name} | {wall:.2f} ({cpu_s:.2f}) | {wall / t_ref:.2f}x | {1 / wall:.3f} | {tflops:.2f}{mfu} | "
                     f"{r[memory]:.0f} | {r[memory] / ref[memory]:.2f}x | {measured:.0f} | {plan} |")
    print("\n" + "\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_lora.md").write_text(f"### LoRA MPO step ({args.dims}, {args.device})\n\n" + "\n".join(lines) + "\n")
    for name, r in runs.items():
        print(f"  {name}: steps {[round(t, 2) for t in r['step_s']]} s, losses {[round(l, 5) for l in r['losses']]}, "
              f"rss before/after load {r['rss_before_load_mib']:.0f}/{r['rss_after_load_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
