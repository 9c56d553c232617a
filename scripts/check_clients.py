#!/usr/bin/env python3
"""The RL engines' own reward clients against reward-serve, with image rows (run by scripts/check-clients; needs
the reference environment with the pinned OpenRLHF, verl and TRL installed without their heavy dependencies).

What runs unchanged: OpenRLHF 0.11.2's SingleTurnAgentExecutor.execute (its VLM tokenization, its decode of the
rollout, its /get_reward request), verl 0.9.1's RewardLoopWorker.compute_score_disrm (its chat template, its
/classify and /v1/embeddings requests), and TRL's GRPO reward-function call shape with examples/python's function.
Stand-ins (printed below): the vLLM engine that "generates" the fixture response, vLLM's SamplingParams, ray (not
installed; nothing of it runs), and the RewardLoopWorker's constructor (its attributes are set directly).

The server gets the training prompts with their images (--prompts), since OpenRLHF and verl send none. Every score
must equal reward-score's on the same item.
"""
import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
STAND_INS = []


def stand_in(text):
    STAND_INS.append(text)


class Server:
    def __init__(self, binary, model, value_head, prompts):
        command = [binary, "--model", model, "--value-head", value_head, "--port", "0", "--prompts", prompts,
                   "--max-wait-ms", "2"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log = []
        for line in self.process.stderr:
            self.log.append(line)
            match = re.search(r"HTTP [^ ;]+:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                break
        else:
            raise RuntimeError("reward-serve exited:\n" + "".join(self.log))
        threading.Thread(target=lambda: self.log.extend(self.process.stderr), daemon=True).start()

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=60)


def openrlhf_scores(port, processor, items):
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    class SamplingParams:  # vLLM's, as far as execute() reads it
        max_tokens = 64
        logprobs = None

    stand_in("vllm.SamplingParams: max_tokens=64, logprobs=None")

    class Engine:  # vLLM's engine: "generates" the fixture response
        def __init__(self, response_ids):
            self.response_ids = response_ids

        async def generate(self, prompt_token_ids, params, multi_modal_data=None):
            out = type("Completion", (), {"token_ids": self.response_ids, "finish_reason": "stop", "logprobs": None})
            return type("RequestOutput", (), {"outputs": [out]})

    stand_in("vLLM engine: generate() returns the fixture response's tokens")
    executor = SingleTurnAgentExecutor(f"http://127.0.0.1:{port}/get_reward")
    scores = []
    for item in items:
        response_ids = processor.tokenizer.encode(item["response"] + "<|im_end|>", add_special_tokens=False)
        output = asyncio.run(executor.execute(item["prompt_text"], item.get("reference"), SamplingParams(), 8192,
                                              processor, Engine(response_ids), images=item["image_paths"]))
        reward = output["reward"]  # the server's "rewards" list for this one query, or None when the call failed
        scores.append(reward[0] if isinstance(reward, list) else reward)
    return scores


def install_ray_stand_in():
    """verl imports ray at module level; nothing of ray runs here, so a module whose every attribute is a no-op
    stands in for it (and its submodules)."""
    import types

    class Anything:
        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, *args, **kwargs):
            return self

        def __getattr__(self, name):
            return Anything()

    def remote(*args, **kwargs):
        return args[0] if args and callable(args[0]) and not kwargs else (lambda f: f)

    for name in ["ray", "ray.actor", "ray.util", "ray.util.placement_group", "ray.util.scheduling_strategies",
                 "ray.experimental", "ray.experimental.state", "ray.experimental.state.api", "ray._private",
                 "ray._private.worker", "ray.exceptions", "ray.runtime_context", "ray.util.state"]:
        module = types.ModuleType(name)
        module.__file__ = __file__
        module.__path__ = []
        module.__getattr__ = lambda attribute: Anything()
        sys.modules[name] = module
    sys.modules["ray"].remote = remote
    stand_in("ray: a module whose attributes are no-ops (ray is not installed; nothing of it runs)")


def verl_scores(port, tokenizer, items, engine):
    if "ray" not in sys.modules:
        install_ray_stand_in()
    import torch
    from omegaconf import OmegaConf

    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.protocol import DataProto

    worker = object.__new__(RewardLoopWorker)
    worker.config = OmegaConf.create({"reward": {"reward_model": {"rollout": {"name": engine}, "model_path": "rm"}}})
    worker.reward_router_address = f"127.0.0.1:{port}"
    worker.input_tokenizer = worker.reward_model_tokenizer = tokenizer
    stand_in(f"RewardLoopWorker.__init__ ({engine}): config, router address and tokenizers set directly")
    scores = []
    for item in items:
        response = tokenizer.encode(item["response"] + tokenizer.eos_token, add_special_tokens=False)
        prompt = tokenizer.encode("x", add_special_tokens=False)
        data = DataProto.from_dict(
            tensors={"responses": torch.tensor([response]),
                     "attention_mask": torch.ones(1, len(prompt) + len(response), dtype=torch.long)},
            non_tensors={"raw_prompt": [item["messages"]]})
        scores.append(asyncio.run(worker.compute_score_disrm(data))["reward_score"])
    return scores


def trl_scores(port, items):
    sys.path.insert(0, os.path.join(REPO, "examples", "python"))
    from trl_reward_func import make_reward_func

    func = make_reward_func(f"http://127.0.0.1:{port}")
    many = [items[n % len(items)] for n in range(1000)]
    return func(prompts=[i["messages"] for i in many], completions=[i["response"] for i in many],
                images=[i["image_paths"] for i in many]), many


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reward-serve", required=True)
    parser.add_argument("--reward-score", required=True)
    parser.add_argument("--fixtures", required=True)
    args = parser.parse_args()
    import pathlib

    from transformers import AutoTokenizer

    sys.path.insert(0, args.fixtures)
    from gen_model import _load_processor  # the fixtures' processor loader (no torchvision: no video processor)

    args.fixtures = os.path.abspath(args.fixtures)
    root = os.path.join(args.fixtures, "reward")
    model = os.path.join(args.fixtures, "model", "tiny")
    value_head = os.path.join(root, "value_head.safetensors")
    processor = _load_processor(pathlib.Path(model))
    tokenizer = AutoTokenizer.from_pretrained(model)
    with open(os.path.join(root, "items.jsonl"), encoding="utf-8") as f:
        items = [json.loads(line) for line in f if line.strip()]
    items = [i for i in items if i["images"]]  # the rows the stock clients could not score
    for item in items:
        item["image_paths"] = [os.path.join(root, p) for p in item["images"]]
        # verl's raw_prompt and TRL's prompt: image parts then the question; OpenRLHF's prompt: that, templated.
        item["messages"] = [{"role": "user", "content": [{"type": "image"} for _ in item["images"]] +
                                                        [{"type": "text", "text": item["question"]}]}]
        item["prompt_text"] = processor.apply_chat_template(item["messages"], add_generation_prompt=True, tokenize=False)

    with tempfile.TemporaryDirectory() as tmp:
        prompts = os.path.join(tmp, "train.jsonl")
        with open(prompts, "w", encoding="utf-8") as f:
            for item in items:  # the training data the engine reads, in verl's row shape
                f.write(json.dumps({"prompt": item["messages"], "images": item["image_paths"]}) + "\n")
        out = os.path.join(tmp, "scores.jsonl")
        subprocess.run([args.reward_score, "--input", os.path.join(root, "items.jsonl"), "--output", out,
                        "--model", model, "--value-head", value_head, "--batch-size", "1"], check=True,
                       capture_output=True)
        with open(out, encoding="utf-8") as f:
            expected = {r["id"]: r["score"] for r in map(json.loads, f)}
        server = Server(args.reward_serve, model, value_head, prompts)
        rows = []
        try:
            for name, run in [("OpenRLHF 0.11.2 /get_reward", lambda: openrlhf_scores(server.port, processor, items)),
                              ("verl 0.9.1 /classify (vllm)", lambda: verl_scores(server.port, tokenizer, items, "vllm")),
                              ("verl 0.9.1 /v1/embeddings (sglang)",
                               lambda: verl_scores(server.port, tokenizer, items, "sglang"))]:
                start = time.monotonic()
                try:
                    scores = run()
                    error = ""
                except Exception as e:  # the table says what broke
                    scores, error = [None] * len(items), f"{type(e).__name__}: {e}"
                ok = sum(1 for s, i in zip(scores, items)
                         if s is not None and abs(s - expected[i["id"]]) <= 1e-5 * max(1.0, abs(expected[i["id"]])))
                rows.append((name, ok, len(items), time.monotonic() - start, error))
            start = time.monotonic()
            scores, many = trl_scores(server.port, items)
            ok = sum(1 for s, i in zip(scores, many) if s is not None and abs(s - expected[i["id"]]) <= 1e-5 * max(1.0, abs(expected[i["id"]])))
            rows.append(("TRL GRPO reward function, 1000 completions in one call", ok, len(many),
                         time.monotonic() - start, ""))
        finally:
            server.stop()

    print("| client (unmodified) | image rows scored at parity with reward-score | seconds |")
    print("|---|---|---|")
    for name, ok, n, seconds, error in rows:
        print(f"| {name} | {ok}/{n} ({100.0 * ok / n:.0f} %){' — ' + error if error else ''} | {seconds:.1f} |")
    print("\nStand-ins: " + "; ".join(dict.fromkeys(STAND_INS)))
    return 0 if all(ok == n for _, ok, n, _, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
