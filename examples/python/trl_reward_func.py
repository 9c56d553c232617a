"""A TRL GRPOTrainer reward function that asks reward-serve, images included (standard library only).

    from trl import GRPOTrainer
    from trl_reward_func import make_reward_func

    trainer = GRPOTrainer(model=..., reward_funcs=[make_reward_func("http://rm-host:8000")], train_dataset=ds, ...)

GRPOTrainer calls a reward function with prompts, completions, completion_ids and every dataset column except
"prompt" as keywords, one entry per completion (a prompt's row repeats for each of its generations); it wants one
float per completion, or None where there is none. The dataset's "image" (one per row) or "images" (a list per
row) column is sent with each sample, so a multimodal reward model sees what the policy saw.

Prompts may be plain strings or conversations ([{"role", "content"}], content a string or parts where
{"type": "image"} marks where the row's next image goes, TRL's VLM format); completions likewise.
"""
import os

from client import image_part, post_json


def _parts(content):
    """Message content as a list of parts."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content)


def _text(content):
    return "".join(p.get("text", "") for p in _parts(content) if p.get("type") == "text")


def _to_sample(prompt, completion, images):
    images = list(images)
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        completion = "".join(_text(m["content"]) for m in completion if m.get("role") == "assistant")
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    system, messages, next_image = None, [], 0
    for message in prompt:
        if message["role"] == "system":
            system = _text(message["content"])
            continue
        content = []
        for part in _parts(message["content"]):
            if part.get("type") == "image":
                if next_image >= len(images):
                    raise ValueError("the prompt has more image placeholders than the row has images")
                content.append(image_part(images[next_image]))
                next_image += 1
            elif part.get("type") == "text":
                content.append({"type": "text", "text": part["text"]})
        messages.append({"role": message["role"], "content": content})
    if next_image < len(images):  # images without placeholders go first in the first user turn
        first_user = next(m for m in messages if m["role"] == "user")
        first_user["content"] = [image_part(i) for i in images[next_image:]] + first_user["content"]
    sample = {"messages": messages, "response": completion}
    if system is not None:
        sample["system"] = system
    return sample


def make_reward_func(url, token_env="VLREWARD_SERVE_TOKEN", timeout=120.0, name="skywork_vl_reward"):
    """A reward function for GRPOTrainer(reward_funcs=[...]) that scores through reward-serve at `url`."""
    endpoint = url.rstrip("/") + "/v1/score"

    def reward_func(prompts, completions, **kwargs):
        n = len(completions)
        if "images" in kwargs and kwargs["images"] is not None:
            rows = [list(i or []) for i in kwargs["images"]]
        elif "image" in kwargs and kwargs["image"] is not None:
            rows = [[i] if i is not None else [] for i in kwargs["image"]]
        else:
            rows = [[] for _ in range(n)]
        samples = [_to_sample(p, c, imgs) for p, c, imgs in zip(prompts, completions, rows)]
        for k, s in enumerate(samples):
            s["id"] = str(k)
        results = post_json(endpoint, {"samples": samples}, token=os.environ.get(token_env), timeout=timeout)["results"]
        return [r.get("score") for r in results]  # None where the server could not score a sample

    reward_func.__name__ = name  # TRL logs each reward under its function's name
    return reward_func


if __name__ == "__main__":
    import json
    import sys

    # Demo: python3 trl_reward_func.py URL IMAGE  — one prompt, two completions, as GRPOTrainer would pass them.
    func = make_reward_func(sys.argv[1])
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the picture?"}]}]
    print(json.dumps(func(prompts=[prompt, prompt], completions=["A chart.", "A cat."],
                          images=[[sys.argv[2]], [sys.argv[2]]])))
