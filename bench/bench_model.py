#!/usr/bin/env python3
"""Qwen2.5-VL model benchmark: vlreward's C++ model (bench_model) vs transformers on the same weights and inputs.

    .venv-ref/bin/python bench/bench_model.py --binary build-bench/bench/bench_model [--threads 1]

For each config (tiny = tests/fixtures/model/tiny/config.json; small = hidden 512 / 8 layers, see small_config())
the script builds Qwen2_5_VLForConditionalGeneration in fp32 with seeded random weights, saves it with
save_pretrained into a temp dir (nothing is committed) and writes the inputs there: one image (random pixel
values, grid --grid) + a chat-formatted text prompt of --prompt-tokens tokens in all, for batch 1 and batch 4
(4 different prompts of the same length, no padding). The C++ binary loads the same checkpoint and inputs and
serves commands on stdin, so the two sides can alternate run by run (background load on the shared machine then
hits both alike; the side order rotates every round). Three measurements:

  * prefill: forward over the prompt with the images, filling the KV cache, logits at the last position only
    (transformers: model(..., use_cache=True, logits_to_keep=1); C++: forward(logits=false) + lm_logits(last)).
    prefill tokens/s = batch * prompt_tokens / time.
  * decode: after an untimed prefill, the timed loop of new_tokens - 1 greedy cached decode steps
    (transformers: model(next_ids, attention_mask, past_key_values=DynamicCache, cache_position) + argmax, the
    same per-step call generate() makes minus its logits-processor/stopping bookkeeping; C++: decode() + argmax).
    decode tokens/s = batch * (new_tokens - 1) / time.
  * generate: end to end, exactly --new-tokens greedy tokens with no stop token (transformers: model.generate with
    eos_token_id=None; C++: generate() with no stop ids). tokens/s = batch * new_tokens / time.

Each number is the median of --repeat timed rounds after --warmup untimed ones. transformers runs under
torch.inference_mode() with torch.set_num_threads(N), once with attn_implementation="eager" and once with "sdpa";
the C++ binary gets at::set_num_threads(N) (and OMP/OPENBLAS_NUM_THREADS=N, since Debian's LibTorch calls
OpenBLAS). The greedy tokens of every side and measurement must be equal, token for token. Achieved GFLOP/s:
bench/flops.py's matmul FLOPs of each measurement (see measure_flops) per second.
"""
import argparse
import copy
import json
import os
import pathlib
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from safetensors.torch import save_file

import transformers
from transformers import AutoTokenizer, GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import flops  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "fixtures" / "model" / "tiny"
SEED = 20240611
ATTN_IMPLS = ("eager", "sdpa")


def tiny_config() -> Qwen2_5_VLConfig:
    return Qwen2_5_VLConfig.from_pretrained(TINY)


def small_config() -> Qwen2_5_VLConfig:
    """The tiny config (same tokenizer ids, vocab 2048) scaled up: text 512 x 8 layers, vision 256 x 8 blocks."""
    c = Qwen2_5_VLConfig.from_pretrained(TINY)
    t, v = c.text_config, c.vision_config
    t.hidden_size, t.num_hidden_layers, t.intermediate_size = 512, 8, 1408
    t.num_attention_heads, t.num_key_value_heads = 8, 2
    t.layer_types = ["full_attention"] * 8
    t.rope_scaling = dict(t.rope_scaling, mrope_section=[8, 12, 12])  # 2 * sum = head_dim 64
    v.depth, v.hidden_size, v.num_heads, v.intermediate_size, v.out_hidden_size = 8, 256, 4, 704, 512
    v.fullatt_block_indexes = [3, 7]
    return c


CONFIGS = {"tiny": tiny_config, "small": small_config}


def build_model(config: Qwen2_5_VLConfig, attn: str, state=None):
    # Each model gets its own config copy: _from_config records the attention implementation in the config
    # object, and the modules read it at every forward, so a shared config would switch the other model too.
    config = copy.deepcopy(config)
    model = Qwen2_5_VLForConditionalGeneration._from_config(config, attn_implementation=attn,
                                                            torch_dtype=torch.float32)
    if state is None:
        randomize(model)
    else:
        model.load_state_dict(state)
    assert model.config._attn_implementation == attn
    # No stop token: generate() must produce exactly max_new_tokens (and not pick eos up from the model defaults).
    model.generation_config.eos_token_id = None
    return model.eval()


def randomize(model) -> None:
    """Seeded weights with unit-gain fan-in scaling, so activations stay O(1) and greedy steps are not near-ties."""
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith(("norm.weight", "norm1.weight", "norm2.weight", "ln_q.weight")):
                value = 1.0 + 0.1 * torch.randn(p.shape, generator=gen)
            elif name.endswith(".bias"):
                value = 0.1 * torch.randn(p.shape, generator=gen)
            elif name.endswith("embed_tokens.weight"):
                value = torch.randn(p.shape, generator=gen)
            elif name == "lm_head.weight":
                value = torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5
            else:
                value = torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5
            p.copy_(value)


def make_inputs(config, tok, batch: int, prompt_tokens: int, grid, seed: int) -> dict:
    """`batch` chat prompts of exactly prompt_tokens ids, each with one image of `grid` (t, h, w) patches."""
    rng = random.Random(seed)
    merge = config.vision_config.spatial_merge_size
    image_tokens = grid[0] * grid[1] * grid[2] // (merge * merge)
    head = tok.encode("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                      "<|vision_start|>", add_special_tokens=False)
    tail = tok.encode("<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
    text_len = prompt_tokens - len(head) - image_tokens - 1 - len(tail)
    if text_len < 1:
        raise SystemExit(f"--prompt-tokens {prompt_tokens} leaves no room for text after {image_tokens} image tokens")
    words = "the a picture shows red blue green boxes circles on of and with left right top bottom small large " \
            "bright dark sky sea tree house road car person dog cat what where how many describe count".split()
    rows = []
    for _ in range(batch):
        text = []
        while len(text) < text_len:
            text += tok.encode(" " + " ".join(rng.choice(words) for _ in range(20)), add_special_tokens=False)
        rows.append(head + [config.image_token_id] * image_tokens + [config.vision_end_token_id] + text[:text_len]
                    + tail)
    gen = torch.Generator().manual_seed(seed)
    patch_dim = config.vision_config.in_channels * config.vision_config.temporal_patch_size * \
        config.vision_config.patch_size ** 2
    ids = torch.tensor(rows, dtype=torch.int64)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "pixel_values": torch.randn(batch * grid[0] * grid[1] * grid[2], patch_dim, generator=gen),
            "image_grid_thw": torch.tensor([list(grid)] * batch, dtype=torch.int64)}


class HFSide:
    """transformers on one model (one attention implementation)."""

    def __init__(self, model, new_tokens: int):
        self.model, self.new_tokens = model, new_tokens
        self.cfg = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=new_tokens, eos_token_id=None,
                                    pad_token_id=model.config.text_config.pad_token_id, bos_token_id=None,
                                    temperature=None, top_p=None, top_k=None)

    @torch.inference_mode()
    def __call__(self, what: str, inputs: dict) -> dict:
        model, prompt = self.model, inputs["input_ids"].shape[1]
        if what == "prefill":
            start, cpu = time.perf_counter(), time.process_time()
            model(**inputs, use_cache=True, logits_to_keep=1)
            return {"s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu}
        if what == "decode":
            out = model(**inputs, use_cache=True, logits_to_keep=1)
            cache, mask = out.past_key_values, inputs["attention_mask"]
            tokens = [out.logits[:, -1].argmax(-1, keepdim=True)]
            start, cpu = time.perf_counter(), time.process_time()
            for step in range(1, self.new_tokens):
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
                out = model(input_ids=tokens[-1], attention_mask=mask, past_key_values=cache, use_cache=True,
                            cache_position=torch.tensor([prompt + step - 1]), logits_to_keep=1)
                tokens.append(out.logits[:, -1].argmax(-1, keepdim=True))
            return {"s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu,
                    "tokens": torch.cat(tokens, dim=1).tolist()}
        if what == "generate":
            start, cpu = time.perf_counter(), time.process_time()
            seq = model.generate(**inputs, generation_config=self.cfg)
            s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
            assert seq.shape[1] == prompt + self.new_tokens, f"generate stopped after {seq.shape[1] - prompt} tokens"
            return {"s": s, "cpu_s": cpu_s, "tokens": seq[:, prompt:].tolist()}
        raise ValueError(what)


class CppSide:
    """The bench_model binary, loaded once per config, answering one command per line."""

    def __init__(self, binary, checkpoint, inputs_file, threads: int, new_tokens: int):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
        cmd = [str(binary), "--checkpoint", str(checkpoint), "--inputs", str(inputs_file), "--threads", str(threads),
               "--new-tokens", str(new_tokens)]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"bench_model exited ({self.proc.wait()})")
        out = json.loads(line)
        if "error" in out:
            raise SystemExit(f"bench_model: {out['error']}")
        return out

    def __call__(self, what: str, case: str) -> dict:
        self.proc.stdin.write(f"{what} {case}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait()


MEASURES = ("prefill", "decode", "generate")


def measure_flops(what: str, config, batch: int, prompt: int, new_tokens: int, grid) -> float:
    """bench/flops.py's matmul FLOPs of one measurement: prefill = the image + the prompt + lm_head at the last
    position; decode = new_tokens - 1 cached steps with lm_head; generate = both."""
    patches = grid[0] * grid[1] * grid[2]
    prefill = flops.prefill_flops(config, prompt) + flops.vision_flops(config, patches) + flops.lm_head_flops(config, 1)
    steps = range(prompt, prompt + new_tokens - 1)
    decode = sum(flops.decode_step_flops(config, ctx + 1) + flops.lm_head_flops(config, 1) for ctx in steps)
    return batch * {"prefill": prefill, "decode": decode, "generate": prefill + decode}[what]


def tokens_per_s(what: str, times, batch: int, prompt: int, new_tokens: int) -> float:
    count = {"prefill": prompt, "decode": new_tokens - 1, "generate": new_tokens}[what]
    return batch * count / statistics.median(times)


def load_average() -> str:
    try:
        return " ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", type=pathlib.Path, default=ROOT / "build" / "bench" / "bench_model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--configs", default="tiny,small")
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--prompt-tokens", type=int, default=384)
    ap.add_argument("--grid", default="1,24,32", help="image grid t,h,w in patches (24x32 -> 192 image tokens)")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=pathlib.Path, help="also write all raw timings here")
    args = ap.parse_args()
    if not args.binary.is_file():
        raise SystemExit(f"no binary at {args.binary}; build it with ninja -C <build dir> bench_model")
    grid = tuple(int(x) for x in args.grid.split(","))

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(TINY)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, python {platform.python_version()}; "
          f"threads {args.threads} (torch.set_num_threads / at::set_num_threads); load average {load_average()}")

    rows, raw = [], {}
    with tempfile.TemporaryDirectory(prefix="vlreward_bench_model_") as tmp:
        tmp = pathlib.Path(tmp)
        for name in args.configs.split(","):
            config = CONFIGS[name]()
            checkpoint = tmp / name
            models = {"eager": build_model(config, "eager")}
            models["eager"].save_pretrained(checkpoint, safe_serialization=True)
            state = models["eager"].state_dict()
            models["sdpa"] = build_model(config, "sdpa", state)
            params = sum(p.numel() for p in models["eager"].parameters())
            tensors = {}
            cases = {}
            for batch in (int(b) for b in args.batches.split(",")):
                inputs = make_inputs(config, tok, batch, args.prompt_tokens, grid, SEED + batch)
                case = f"b{batch}"
                cases[case] = (batch, inputs)
                tensors.update({f"{case}.{k}": v.contiguous() for k, v in inputs.items() if k != "attention_mask"})
            inputs_file = tmp / f"{name}_inputs.safetensors"
            save_file(tensors, inputs_file)
            cpp = CppSide(args.binary, checkpoint, inputs_file, args.threads, args.new_tokens)
            sides = {"C++": lambda what, case, inputs: cpp(what, case)}
            for attn in ATTN_IMPLS:
                sides[f"HF {attn}"] = lambda what, case, inputs, hf=HFSide(models[attn], args.new_tokens): \
                    hf(what, inputs)
            order = list(sides)
            for case, (batch, inputs) in cases.items():
                label = f"{name} ({params / 1e6:.2f}M params) batch {batch}"
                print(f"\n{label}: prompt {args.prompt_tokens} tokens incl. image, {args.new_tokens} new tokens; "
                      f"load average {load_average()}", flush=True)
                times = {side: {what: [] for what in MEASURES} for side in sides}
                cpu_times = {side: {what: [] for what in MEASURES} for side in sides}
                for rnd in range(args.warmup + args.repeat):
                    for what in MEASURES:
                        for side in order[rnd % len(order):] + order[:rnd % len(order)]:
                            res = sides[side](what, case, inputs)
                            if rnd >= args.warmup:
                                times[side][what].append(res["s"])
                                cpu_times[side][what].append(res["cpu_s"])
                            if "tokens" in res:
                                times[side].setdefault("tokens", {})[what] = res["tokens"]
                reference = times["C++"]["tokens"]["generate"]
                for side in sides:
                    for what, got in times[side].pop("tokens").items():
                        if got != reference:
                            raise SystemExit(f"{label}: {side} {what} greedy tokens differ from C++ generate():\n"
                                             f"  C++ generate: {reference}\n  {side} {what}: {got}")
                print(f"  greedy tokens equal: C++ decode/generate == HF eager/sdpa decode/generate "
                      f"({batch} x {args.new_tokens})")
                for side in sides:
                    print(f"  {side:9s} " + "  ".join(
                        f"{what} {statistics.median(times[side][what]) * 1e3:8.1f} ms "
                        f"{[round(t * 1e3, 1) for t in times[side][what]]}" for what in MEASURES))
                    print(f"  {'(cpu)':9s} " + "  ".join(
                        f"{what} {statistics.median(cpu_times[side][what]) * 1e3:8.1f} ms "
                        f"{[round(t * 1e3, 1) for t in cpu_times[side][what]]}" for what in MEASURES))
                tps = {side: {what: tokens_per_s(what, times[side][what], batch, args.prompt_tokens, args.new_tokens)
                              for what in MEASURES} for side in sides}
                rate = {side: {what: flops.gflops(measure_flops(what, config, batch, args.prompt_tokens,
                                                                args.new_tokens, grid),
                                                  statistics.median(times[side][what]))
                               for what in MEASURES} for side in sides}
                rows.append((name, batch, tps, rate))
                raw[f"{name}_b{batch}"] = {"wall_s": times, "cpu_s": cpu_times}
            cpp.close()

    print(f"\nthreads {args.threads}; prompt {args.prompt_tokens} tokens (image grid {args.grid}); "
          f"{args.new_tokens} new tokens; median of {args.repeat} after {args.warmup} warm-up; "
          f"load average at end {load_average()}\n")
    print("| config | batch | measure | C++ tok/s | HF eager tok/s | HF sdpa tok/s | C++/eager | C++/sdpa | "
          "GFLOP/s C++ / sdpa |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, batch, tps, rate in rows:
        for what in MEASURES:
            c, e, s = tps["C++"][what], tps["HF eager"][what], tps["HF sdpa"][what]
            print(f"| {name} | {batch} | {what} | {c:.0f} | {e:.0f} | {s:.0f} | {c / e:.2f}x | {c / s:.2f}x | "
                  f"{rate['C++'][what]:.1f} / {rate['HF sdpa'][what]:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1) + "\n")


if __name__ == "__main__":
    main()
