#!/usr/bin/env python3
"""Checks the vlreward Python package against reward-score on the test fixtures (run by CTest with the system
python3; standard library only besides the package itself).

    check_module.py --package build/python --reward-score build/reward/reward-score --fixtures tests/fixtures

The in-process scores must equal reward-score's on the same items (rel <= 1e-6, the same batch size) and the Python
reference's (rel <= 1e-4, as tests/test_skywork_vl.cpp), whichever form the images take; the TRL reward function,
a rule backend and the per-item errors are checked too.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile


class PilLike:
    """An object with PIL's save(fp, format=...): what TRL passes for a decoded image column."""

    def __init__(self, path):
        self.path = path

    def save(self, fp, format=None):
        with open(self.path, "rb") as f:
            fp.write(f.read())


def rel(a, b):
    return abs(a - b) / max(1.0, abs(b))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--package", required=True)
    parser.add_argument("--reward-score", required=True)
    parser.add_argument("--fixtures", required=True)
    args = parser.parse_args()
    sys.path.insert(0, args.package)
    import vlreward

    root = os.path.join(args.fixtures, "reward")
    model_dir = os.path.join(args.fixtures, "model", "tiny")
    value_head = os.path.join(root, "value_head.safetensors")
    with open(os.path.join(root, "items.jsonl"), encoding="utf-8") as f:
        items = [json.loads(line) for line in f if line.strip()]
    with open(os.path.join(root, "expected.json"), encoding="utf-8") as f:
        reference = {e["id"]: e["score"] for e in json.load(f)["items"]}

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "scores.jsonl")
        subprocess.run([args.reward_score, "--input", os.path.join(root, "items.jsonl"), "--output", out,
                        "--model", model_dir, "--value-head", value_head, "--batch-size", "8"],
                       check=True, capture_output=True)
        with open(out, encoding="utf-8") as f:
            cli = {r["id"]: r["score"] for r in map(json.loads, f)}

    model = vlreward.RewardModel(model_dir, value_head=value_head)
    assert model.name == "skywork_vl", model.name
    failures = []
    for form in ("path", "bytes", "pil"):
        samples = []
        for n, item in enumerate(items):
            paths = [os.path.join(root, p) for p in item["images"]]
            images = paths if form == "path" else [open(p, "rb").read() for p in paths] if form == "bytes" \
                else [PilLike(p) for p in paths]
            samples.append({"id": item["id"], "question": item["question"], "response": item["response"],
                            "images": images})
        worst_cli = worst_reference = 0.0
        for start in range(0, len(samples), 8):  # reward-score's batches, so batch composition matches
            for item, score in zip(items[start:start + 8], model.score(samples[start:start + 8])):
                worst_cli = max(worst_cli, rel(score, cli[item["id"]]))
                worst_reference = max(worst_reference, rel(score, reference[item["id"]]))
        print(f"images as {form}: max rel vs reward-score {worst_cli:.2e}, vs the Python reference {worst_reference:.2e}")
        if worst_cli > 1e-6:
            failures.append(f"images as {form}: {worst_cli:.2e} from reward-score")
        if worst_reference > 1e-4:
            failures.append(f"images as {form}: {worst_reference:.2e} from the Python reference")

    # The TRL reward function: conversational prompts with image placeholders, an "images" column.
    func = vlreward.TrlRewardFunction(model)
    one = [i for i in items if len(i["images"]) == 1][:3]
    prompts = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": i["question"]}]}] for i in one]
    rewards = func(prompts=prompts, completions=[[{"role": "assistant", "content": i["response"]}] for i in one],
                   images=[[os.path.join(root, i["images"][0])] for i in one], completion_ids=None)
    for item, reward in zip(one, rewards):
        if rel(reward, reference[item["id"]]) > 1e-4:
            failures.append(f"TrlRewardFunction {item['id']}: {reward} vs {reference[item['id']]}")
    if func.__name__ != "skywork_vl_reward":
        failures.append("TrlRewardFunction needs a __name__ for TRL's logs")

    # Any backend by config; a bad item fails alone; a bad config names its key.
    rule = vlreward.Backend({"type": "exact_match"})
    got = rule.score([{"question": "q", "response": "B", "reference": "B"},
                      {"question": "q", "response": "A", "reference": "B"}])
    if got != [1.0, 0.0]:
        failures.append(f"exact_match: {got}")
    bad = model.score_detailed([{"question": "q", "response": "r", "images": [b"not an image"]},
                                {"question": items[0]["question"], "response": items[0]["response"],
                                 "images": [os.path.join(root, items[0]["images"][0])]}])
    if bad[0]["score"] is not None or not bad[0]["error"] or bad[1]["score"] is None:
        failures.append(f"a bad image must fail its item alone: {bad}")
    try:
        vlreward.Backend({"type": "exact_match", "colour": 1})
        failures.append("an unknown config key was accepted")
    except ValueError as e:
        if "colour" not in str(e):
            failures.append(f"the config error does not name the key: {e}")

    if failures:
        print("FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print("vlreward package: scores equal reward-score's; TRL function, rule backend and errors as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
