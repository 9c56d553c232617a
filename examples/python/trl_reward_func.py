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

A GRPO step's completions go to the server in requests of at most `max_samples_per_request` samples (the server's
limits.max_samples_per_request, 4096 by default), so any batch size works. One self-contained file, standard
library only: copy it next to the training script, or load it by path.
"""
import base64
import json
import os
import time
import urllib.error
import urllib.request

# --- HTTP and image helpers (the same as client.py's; kept here so this file loads alone, by path) ---------------
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".gif": "image/gif"}


def image_part(image):
    """A /v1/score image part from a path, raw bytes, or an object with PIL's save(fp, format=...)."""
    if isinstance(image, (bytes, bytearray)):
        return {"type": "image", "data": base64.b64encode(bytes(image)).decode("ascii")}
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            data = f.read()
        part = {"type": "image", "data": base64.b64encode(data).decode("ascii")}
        mime = _MIME.get(os.path.splitext(str(image))[1].lower())
        if mime:
            part["mime_type"] = mime
        return part
    if isinstance(image, dict) and (image.get("bytes") or image.get("path")):  # a datasets Image cell, undecoded
        return image_part(image["bytes"] if image.get("bytes") else image["path"])
    if hasattr(image, "save"):  # a PIL image (TRL / datasets decode image columns to these)
        import io

        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return {"type": "image", "data": base64.b64encode(buffer.getvalue()).decode("ascii"), "mime_type": "image/png"}
    raise TypeError(f"cannot send an image of type {type(image).__name__}")


def sample(question, response, images=(), sample_id=None, system=None, reference=None):
    """One /v1/score sample: a user turn [images..., question] and the response to judge."""
    content = [image_part(image) for image in images] + [{"type": "text", "text": question}]
    s = {"messages": [{"role": "user", "content": content}], "response": response}
    if sample_id is not None:
        s["id"] = str(sample_id)
    if system is not None:
        s["system"] = system
    if reference is not None:
        s["reference"] = reference
    return s


def post_json(url, body, token=None, timeout=60.0, retries=3):
    """POST JSON, answer the parsed reply. Retries connection errors and 5xx (503 after its Retry-After), with
    exponential backoff; 4xx are raised at once, since the same request would fail the same way."""
    data = json.dumps(body).encode("utf-8")
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    for attempt in range(retries + 1):
        wait = min(10.0, 0.2 * 2**attempt)
        try:
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")
            if e.code < 500 or attempt == retries:
                raise RuntimeError(f"{url}: HTTP {e.code}: {detail}") from None
            wait = max(wait, float(e.headers.get("Retry-After", 0) or 0))
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            if attempt == retries:
                raise RuntimeError(f"{url}: {e}") from None
        time.sleep(wait)
    raise AssertionError("unreachable")
# --- end of helpers --------------------------------------------------------------------------------------------


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


def make_reward_func(url, token_env="VLREWARD_SERVE_TOKEN", timeout=120.0, name="skywork_vl_reward",
                     max_samples_per_request=4096):
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
        scores = []
        for start in range(0, len(samples), max_samples_per_request):
            chunk = samples[start:start + max_samples_per_request]
            results = post_json(endpoint, {"samples": chunk}, token=os.environ.get(token_env), timeout=timeout)["results"]
            scores.extend(r.get("score") for r in results)  # None where the server could not score a sample
        return scores

    reward_func.__name__ = name  # TRL logs each reward under its function's name
    return reward_func


if __name__ == "__main__":
    import sys

    # Demo: python3 trl_reward_func.py URL IMAGE  — one prompt, two completions, as GRPOTrainer would pass them.
    func = make_reward_func(sys.argv[1])
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the picture?"}]}]
    print(json.dumps(func(prompts=[prompt, prompt], completions=["A chart.", "A cat."],
                          images=[[sys.argv[2]], [sys.argv[2]]])))
