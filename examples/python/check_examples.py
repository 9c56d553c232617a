#!/usr/bin/env python3
"""Runs one Python example against a locally started reward-serve and checks its answers (used by CTest).

    check_examples.py --reward-serve build/reward/reward-serve --fixtures tests/fixtures --example client

The server serves the tiny Skywork-VL model of tests/fixtures on an ephemeral loopback port (read from its startup
line); every example must reproduce the Python reference's scores in tests/fixtures/reward/expected.json (so the
images were sent and used), then the server must stop cleanly on SIGTERM (exit 0). Standard library only.
"""
import argparse
import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOLERANCE = 1e-4  # relative, as tests/test_skywork_vl.cpp compares the same fixtures


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def expect_score(got, want, what):
    check(isinstance(got, (int, float)), f"{what}: no score (got {got!r})")
    check(abs(got - want) <= TOLERANCE * max(1.0, abs(want)), f"{what}: score {got} != reference {want}")


class Server:
    def __init__(self, binary, fixtures, extra=()):
        self.log = []
        command = [binary, "--model", os.path.join(fixtures, "model", "tiny"),
                   "--value-head", os.path.join(fixtures, "reward", "value_head.safetensors"),
                   "--port", "0", "--max-wait-ms", "2", *extra]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port = self._wait_for_port(timeout=120)
        self.url = f"http://127.0.0.1:{port}"
        # Keep draining stderr so the server never blocks on a full pipe.
        threading.Thread(target=lambda: self.log.extend(self.process.stderr), daemon=True).start()

    def _wait_for_port(self, timeout):
        deadline = time.monotonic() + timeout
        for line in self.process.stderr:
            self.log.append(line)
            match = re.search(r"HTTP [^ ;]+:(\d+)", line)
            if match:
                binary = re.search(r"binary [^ ;]+:(\d+)", line)
                self.binary_port = int(binary.group(1)) if binary else None
                return int(match.group(1))
            check(time.monotonic() < deadline, "reward-serve did not report its port in time")
        raise Failure("reward-serve exited before serving:\n" + "".join(self.log))

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise Failure("reward-serve did not stop within 60 s of SIGTERM")
        check(code == 0, f"reward-serve exited with {code} after SIGTERM:\n" + "".join(self.log))


def load_items(fixtures):
    root = os.path.join(fixtures, "reward")
    with open(os.path.join(root, "items.jsonl"), encoding="utf-8") as f:
        items = [json.loads(line) for line in f if line.strip()]
    with open(os.path.join(root, "expected.json"), encoding="utf-8") as f:
        expected = {e["id"]: e for e in json.load(f)["items"]}
    for item in items:
        item["image_paths"] = [os.path.join(root, p) for p in item["images"]]
        item["expected"] = expected[item["id"]]["score"]
        item["text"] = expected[item["id"]]["text"]
    return items


def run(command):
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    check(done.returncode == 0, f"{' '.join(command[:3])}... exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


def check_client(url, items, fixtures):
    out = run([sys.executable, os.path.join(HERE, "client.py"), "--url", url,
               "--jsonl", os.path.join(fixtures, "reward", "items.jsonl")])
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    check(len(lines) == len(items), f"client.py printed {len(lines)} results for {len(items)} samples")
    for item, line in zip(items, lines):
        check(line["id"] == item["id"], f"client.py: result {line} out of order (expected {item['id']})")
        expect_score(line.get("score"), item["expected"], f"client.py {item['id']}")
    # The single-sample command line too.
    first = items[0]
    out = run([sys.executable, os.path.join(HERE, "client.py"), "--url", url, "--image", first["image_paths"][0],
               "--question", first["question"], "--response", first["response"]])
    expect_score(json.loads(out)["score"], first["expected"], "client.py --image")
    return len(items) + 1


class PilLike:
    """What TRL hands over for a decoded image column: an object with PIL's save(fp, format=...). Saving the
    original file's bytes is what a lossless re-encode of the decoded pixels amounts to for the reward model."""

    def __init__(self, path):
        self.path = path

    def save(self, fp, format=None):
        with open(self.path, "rb") as f:
            fp.write(f.read())


HELPERS_BEGIN = "# --- HTTP and image helpers"
HELPERS_END = "# --- end of helpers"


def load_by_path(name):
    """Loads an example the way verl loads a custom reward function: from its file, with nothing beside it
    importable (this directory is taken off sys.path), so a sibling import would fail here as it fails there. Its
    copy of the HTTP and image helpers must be client.py's."""
    path = os.path.join(HERE, name + ".py")
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
    sys.modules.pop("client", None)
    try:
        spec = importlib.util.spec_from_file_location("custom_module_" + name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    with open(path, encoding="utf-8") as f:
        text = f.read()
    with open(os.path.join(HERE, "client.py"), encoding="utf-8") as f:
        client = f.read()
    copy = text[text.index(HELPERS_BEGIN):text.index(HELPERS_END)].split("\n", 1)[1].strip()
    check(copy in client, f"{name}.py: its helpers differ from client.py's (copy them again)")
    return module


def check_trl(url, items, fixtures):
    # The server runs with limits.max_samples_per_request=256 (--set reaches server keys); the function splits.
    func = load_by_path("trl_reward_func").make_reward_func(url, max_samples_per_request=256)
    check(func.__name__ == "skywork_vl_reward", "the reward function needs a name for TRL's logs")
    prompts, completions, images, want = [], [], [], []
    for n, item in enumerate(items):
        content = [{"type": "image"} for _ in item["images"]] + [{"type": "text", "text": item["question"]}]
        prompt = [{"role": "user", "content": content}]
        # Image cells as TRL may pass them: decoded PIL images, raw bytes, paths.
        forms = [PilLike(p) if n % 3 == 0 else (open(p, "rb").read() if n % 3 == 1 else p) for p in item["image_paths"]]
        for completion in (item["response"], [{"role": "assistant", "content": item["response"]}]):  # 2 generations
            prompts.append(prompt)
            completions.append(completion)
            images.append(forms)
            want.append((item["id"], item["expected"]))
    rewards = func(prompts=prompts, completions=completions, completion_ids=[[0]] * len(completions),
                   images=images, solution=[""] * len(completions), trainer_state=None)
    check(len(rewards) == len(completions), f"{len(rewards)} rewards for {len(completions)} completions")
    for reward, (item_id, expected) in zip(rewards, want):
        expect_score(reward, expected, f"trl reward_func {item_id}")
    # A single "image" column and a plain-string prompt (images go first in the user turn).
    one = next(i for i in items if len(i["images"]) == 1)
    rewards = func(prompts=[one["question"]], completions=[one["response"]], image=[PilLike(one["image_paths"][0])])
    expect_score(rewards[0], one["expected"], "trl reward_func with an 'image' column")
    # A GRPO step of 1000 completions in one call: split into requests the server accepts.
    many = [items[n % len(items)] for n in range(1000)]
    rewards = func(prompts=[[{"role": "user", "content": [{"type": "image"} for _ in i["images"]] +
                              [{"type": "text", "text": i["question"]}]}] for i in many],
                   completions=[i["response"] for i in many], images=[i["image_paths"] for i in many])
    check(len(rewards) == 1000, f"{len(rewards)} rewards for 1000 completions")
    for n, (reward, item) in enumerate(zip(rewards, many)):
        expect_score(reward, item["expected"], f"trl reward_func, completion {n} of 1000")
    return len(want) + 1 + 1000


def check_openrlhf(url, items, fixtures):
    for item in items:
        command = [sys.executable, os.path.join(HERE, "openrlhf_get_reward.py"), "--url", url + "/get_reward",
                   "--query", item["text"], "--label", item.get("reference", "")]
        for path in item["image_paths"]:
            command += ["--image", path]
        answer = json.loads(run(command))
        expect_score(answer["rewards"][0], item["expected"], f"/get_reward {item['id']}")
        check(abs(answer["scores"][0] - 1 / (1 + math.exp(-answer["rewards"][0]))) < 1e-9,
              f"/get_reward {item['id']}: scores is not sigmoid(rewards)")
    return len(items)


def check_verl(url, items, fixtures):
    compute_score = load_by_path("verl_reward_fn").compute_score
    keys = set()
    for item in items:
        # reward_model.enable makes verl pass more keywords: they are accepted and ignored.
        out = compute_score("vlreward_fixture", item["response"], item.get("reference"),
                            {"question": item["question"], "images": item["image_paths"]}, url=url,
                            reward_router_address=None)
        keys.add(tuple(sorted(out)))
        expect_score(out["score"], item["expected"], f"verl compute_score {item['id']}")
        if item.get("reference") is not None:
            check(out["exact_match"] == float(item["response"].strip() == item["reference"]),
                  f"verl compute_score {item['id']}: exact_match {out['exact_match']}")
    os.environ["VLREWARD_SERVE_URL"] = url  # the URL from the environment, as without reward_kwargs
    first = items[0]
    out = compute_score("x", first["response"], None, {"prompt": first["question"], "image": first["image_paths"][0]})
    expect_score(out["score"], first["expected"], "verl compute_score via VLREWARD_SERVE_URL")
    keys.add(tuple(sorted(out)))
    check(len(keys) == 1, f"verl compute_score returned different keys for different rows: {sorted(keys)}")
    return len(items) + 1


def check_binary(url, items, fixtures, binary_port=None):
    check(binary_port, "reward-serve reported no binary port")
    out = run([sys.executable, os.path.join(HERE, "binary_client.py"), "--port", str(binary_port),
               "--jsonl", os.path.join(fixtures, "reward", "items.jsonl")])
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    check(len(lines) == len(items), f"binary_client.py printed {len(lines)} results for {len(items)} samples")
    for item, line in zip(items, lines):
        check(line["id"] == item["id"], f"binary_client.py: result {line} out of order (expected {item['id']})")
        expect_score(line.get("score"), item["expected"], f"binary_client.py {item['id']}")
    return len(items)


CHECKS = {"client": check_client, "binary": check_binary, "trl": check_trl, "openrlhf": check_openrlhf, "verl": check_verl}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reward-serve", required=True)
    parser.add_argument("--fixtures", required=True)
    parser.add_argument("--example", required=True, choices=sorted(CHECKS))
    args = parser.parse_args()
    check(sys.version_info >= (3, 9), f"the examples need Python 3.9+, this is {sys.version.split()[0]}")
    items = load_items(args.fixtures)
    extra = {"trl": ["--set", "limits.max_samples_per_request=256"], "binary": ["--binary-port", "0"]}
    server = Server(args.reward_serve, args.fixtures, extra.get(args.example, []))
    try:
        if args.example == "binary":
            count = check_binary(server.url, items, args.fixtures, server.binary_port)
        else:
            count = CHECKS[args.example](server.url, items, args.fixtures)
    finally:
        server.stop()
    print(f"{args.example}: {count} scores match the reference; reward-serve stopped cleanly on SIGTERM")


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
