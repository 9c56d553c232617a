#!/usr/bin/env python3
"""Tokenizer benchmark: vlreward's C++ Tokenizer vs HF `tokenizers` (Python binding) on the same text.

    .venv-ref/bin/python bench/bench_tokenizer.py --binary build/bench/bench_tokenizer

Generates ~1.3 MB of mixed text deterministically, trains a 32k-vocab Qwen2-style byte-level BPE on it (in a temp
dir, nothing is committed), adds the 22 Qwen added tokens, then times both implementations on the same lines:
  * loop:  one encode() call per line, one thread on both sides;
  * batch: encode_batch() over all lines; HF uses its rayon pool (all cores unless RAYON_NUM_THREADS is set), the
           C++ side gets --threads (default: os.cpu_count(), the same count).
Checks the ids are identical, prints MB/s for each side and the C++/HF ratio. Best of --repeat runs.
"""
import argparse
import json
import os
import pathlib
import random
import subprocess
import sys
import tempfile
import time

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
           "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
NON_SPECIAL = ["<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
               "<|repo_name|>", "<|file_sep|>"]


def make_text(target_bytes: int) -> str:
    rng = random.Random(20240531)
    syllables = [a + b for a in "bcdfghjklmnprstvwyz" for b in ["a", "e", "i", "o", "u", "ar", "en", "ing", "ou", "th"]]
    words = ["".join(rng.choice(syllables) for _ in range(rng.choice([1, 1, 2, 2, 3, 4]))) for _ in range(6000)]
    zipf = [1.0 / (i + 1) for i in range(len(words))]
    common = "the of and to in is it that for was on are with as I his they be at one have this from".split()
    cjk = [chr(c) for c in range(0x4E00, 0x4E00 + 1500)]
    arabic = "مرحبا بالعالم هذه جملة عربية للاختبار والكتابة من اليمين".split()
    emoji = ["😀", "🎉", "👍🏽", "👨\u200d👩\u200d👧", "❤\ufe0f", "🚀", "🐱"]
    code = ["def f(x):", "    return x + 1", "for (int i = 0; i < n; ++i) {", "\tsum += a[i];", "}", "x = {'k': [1, 2]}",
            "if (ptr != nullptr && ptr->ok()) return;"]
    lines, size = [], 0
    while size < target_bytes:
        kind = rng.random()
        if kind < 0.55:
            n = rng.randint(8, 40)
            ws = rng.choices(words, weights=zipf, k=n)
            for i in range(n):
                if rng.random() < 0.3:
                    ws[i] = rng.choice(common)
                if rng.random() < 0.05:
                    ws[i] = ws[i].capitalize() + rng.choice(["'s", "'ll", "'ve", ",", ".", "!"])
            line = " ".join(ws) + rng.choice([".", "?", "!", ":"])
        elif kind < 0.70:
            line = rng.choice(code) + ("  # " + " ".join(rng.choices(words, k=4)) if rng.random() < 0.3 else "")
        elif kind < 0.78:
            line = " ".join(str(rng.randrange(10 ** rng.randint(1, 12))) for _ in range(rng.randint(3, 12))) + \
                f" {rng.random():.6f}"
        elif kind < 0.90:
            line = "".join(rng.choice(cjk) for _ in range(rng.randint(10, 60))) + "。"
        elif kind < 0.95:
            line = " ".join(rng.choice(arabic) for _ in range(rng.randint(4, 14)))
        else:
            line = " ".join(rng.choice(emoji + words[:50]) for _ in range(rng.randint(4, 14)))
        if rng.random() < 0.05:
            line = "  " * rng.randint(1, 4) + line + "\t" * rng.randint(0, 2)
        if rng.random() < 0.03:
            line = "<|im_start|>user " + line + "<|im_end|>"
        lines.append(line)
        size += len(line.encode("utf-8")) + 1
    return "\n".join(lines)


def train(text_lines, vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(text_lines, trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in NON_SPECIAL])
    return tok


def best_of(repeat: int, fn):
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def read_ids(path: pathlib.Path) -> list:
    data = np.fromfile(path, dtype="<i4")
    out, i = [], 0
    while i < len(data):
        n = int(data[i])
        out.append(data[i + 1:i + 1 + n].tolist())
        i += 1 + n
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default="build/bench/bench_tokenizer", help="path of the bench_tokenizer binary")
    parser.add_argument("--megabytes", type=float, default=1.3)
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="C++ encode_batch threads")
    args = parser.parse_args()

    text = make_text(int(args.megabytes * 1e6))
    lines = text.split("\n")
    megabytes = len(text.encode("utf-8")) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        t0 = time.perf_counter()
        tok = train(lines, args.vocab_size)
        print(f"trained {tok.get_vocab_size()}-token tokenizer in {time.perf_counter() - t0:.1f}s "
              f"on {megabytes:.2f} MB, {len(lines)} lines")
        tok.save(str(tmp / "tokenizer.json"))
        (tmp / "text.txt").write_text(text, encoding="utf-8")
        tok = Tokenizer.from_file(str(tmp / "tokenizer.json"))

        hf_loop, hf_ids = best_of(args.repeat, lambda: [tok.encode(line).ids for line in lines])
        hf_batch, hf_batch_ids = best_of(args.repeat, lambda: [e.ids for e in tok.encode_batch(lines)])
        assert hf_ids == hf_batch_ids

        cmd = [args.binary, "--tokenizer", str(tmp / "tokenizer.json"), "--text", str(tmp / "text.txt"),
               "--ids-out", str(tmp / "ids.bin"), "--threads", str(args.threads), "--repeat", str(args.repeat)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        cpp = json.loads(proc.stdout)
        cpp_ids = read_ids(tmp / "ids.bin")

    mismatched = [i for i, (a, b) in enumerate(zip(hf_ids, cpp_ids)) if a != b]
    if len(cpp_ids) != len(hf_ids) or mismatched:
        print(f"IDS DIFFER: {len(mismatched)} of {len(hf_ids)} lines (C++ gave {len(cpp_ids)} lines); "
              f"first: {lines[mismatched[0]]!r}" if mismatched else "line count differs")
        return 1
    n_ids = sum(len(x) for x in hf_ids)
    hf_threads = os.environ.get("RAYON_NUM_THREADS", os.environ.get("RAYON_RS_NUM_THREADS", str(os.cpu_count())))
    print(f"ids identical: {len(hf_ids)} lines, {n_ids} ids")
    print(f"{'mode':<8}{'HF MB/s':>10}{'C++ MB/s':>10}{'C++/HF':>8}   threads (HF / C++)")
    for mode, hf_s, cpp_s, threads in [("loop", hf_loop, cpp["loop_seconds"], ("1", "1")),
                                       ("batch", hf_batch, cpp["batch_seconds"], (hf_threads, str(cpp["threads"])))]:
        print(f"{mode:<8}{megabytes / hf_s:>10.2f}{megabytes / cpp_s:>10.2f}{hf_s / cpp_s:>8.2f}x   "
              f"{threads[0]} / {threads[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
