#!/usr/bin/env python3
"""Call reward-serve's POST /get_reward the way OpenRLHF's remote reward client does (standard library only).

OpenRLHF (--reward.remote_url http://host:port/get_reward) posts, per sample,
    {"query": [prompt + response as the policy decoded them, special tokens kept], "prompts": [prompt], "labels": [label]}
with a 180 s timeout, trying 5 times 1 s apart, and reads "rewards" (advantages), "scores" (dynamic filtering) and
"extra_logs" (logged). reward-serve re-renders the policy's ChatML with the reward model's own template. Its
extension: "images", one list per query (base64 / data URI), which stock OpenRLHF does not send.

    python3 openrlhf_get_reward.py --url http://127.0.0.1:8000/get_reward --query "<|im_start|>user..." [--image x.png]

Prints the server's answer as one JSON line.
"""
import argparse
import base64
import json
import sys
import time
import urllib.error
import urllib.request


def get_reward(url, query, prompt="", label="", images=(), timeout=180.0, tries=5):
    body = {"query": [query], "prompts": [prompt], "labels": [label]}
    if images:
        body["images"] = [[base64.b64encode(open(path, "rb").read()).decode("ascii") for path in images]]
    data = json.dumps(body).encode("utf-8")
    last = None
    for _ in range(tries):  # OpenRLHF: a fixed 1 s pause between tries, whatever the error
        try:
            request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                answer = json.loads(reply.read())
            if "rewards" not in answer:
                raise ValueError(f"'rewards' not in {answer}")
            return answer
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}: {e.read().decode('utf-8', 'replace')}"
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError) as e:
            last = str(e)
        time.sleep(1)
    raise RuntimeError(f"{url}: no reward after {tries} tries; last error: {last}")


def main(argv=None):
    parser = argparse.ArgumentParser(description="call /get_reward as OpenRLHF does")
    parser.add_argument("--url", required=True, help="http://host:port/get_reward")
    parser.add_argument("--query", required=True, help="prompt + response, chat-templated by the policy")
    parser.add_argument("--prompt", default="")
    parser.add_argument("--label", default="")
    parser.add_argument("--image", action="append", default=[], help="image file for the query (repeatable)")
    args = parser.parse_args(argv)
    print(json.dumps(get_reward(args.url, args.query, args.prompt, args.label, args.image)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
