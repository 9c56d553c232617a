"""vlreward in process: score (images, question, response) with a Skywork-VL reward model, or any of vlreward's
reward backends, from Python — no server, no HTTP, the same scores as reward-score and reward-serve.

    import vlreward
    model = vlreward.RewardModel("/models/Skywork-VL-Reward-7B", device="cuda", dtype="bfloat16")
    model.score([{"question": "What is in the picture?", "response": "A chart.", "images": ["chart.png"]}])

    from trl import GRPOTrainer
    trainer = GRPOTrainer(..., reward_funcs=[vlreward.TrlRewardFunction(model)])

A sample is {"question", "response", "images"?, "system"?, "reference"?, "id"?}, or {"messages": [{"role",
"content": str | [{"type": "text", "text"} | {"type": "image"}]}], "response", "images"?, ...} where each image
placeholder takes the sample's next image (images without placeholders go first in the first user turn). Images are
paths, bytes, PIL images (anything with save(fp, format=...)) or datasets' {"bytes", "path"} cells.
"""
import io
import json
import os

from ._vlreward import Backend as _NativeBackend
from ._vlreward import InputError

__all__ = ["Backend", "RewardModel", "TrlRewardFunction", "InputError"]


def _image_part(image):
    if isinstance(image, (bytes, bytearray)):
        return ("image_bytes", bytes(image))
    if isinstance(image, (str, os.PathLike)):
        return ("image_path", os.fsencode(image))
    if isinstance(image, dict) and (image.get("bytes") or image.get("path")):
        return _image_part(image["bytes"] if image.get("bytes") else image["path"])
    if hasattr(image, "save"):  # a PIL image
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return ("image_bytes", buffer.getvalue())
    raise TypeError(f"cannot score an image of type {type(image).__name__}")


def _text(text):
    return ("text", text.encode("utf-8"))


def _content_parts(content, images):
    if isinstance(content, str):
        return [_text(content)]
    parts = []
    for part in content:
        if part.get("type") == "image":
            if not images:
                raise ValueError("the prompt has more image placeholders than the sample has images")
            parts.append(_image_part(images.pop(0)))
        elif part.get("type") == "text":
            parts.append(_text(part["text"]))
    return parts


def _sample(sample, index):
    images = list(sample.get("images") or ([sample["image"]] if sample.get("image") is not None else []))
    if "messages" in sample:
        turns = [(m["role"], _content_parts(m["content"], images)) for m in sample["messages"]]
    else:
        turns = [("user", [_text(sample.get("question", ""))])]
    if images:  # images without placeholders go first in the first user turn
        first = next(t for t in turns if t[0] == "user")
        first[1][:0] = [_image_part(i) for i in images]
    return {"id": str(sample.get("id", index)), "system": sample.get("system"), "reference": sample.get("reference"),
            "turns": turns, "response": sample["response"]}


class Backend:
    """A reward backend from its config: the same dict as a reward-score --reward YAML (skywork_vl, exact_match,
    regex_match, format, composite, plugin)."""

    def __init__(self, config):
        self._native = _NativeBackend(json.dumps(config))

    @property
    def name(self):
        return self._native.name

    def score_detailed(self, samples):
        """[{"score": float | None, "error": str, "components": {...}}], one per sample, in order."""
        results = self._native.score([_sample(s, i) for i, s in enumerate(samples)])
        return [{"score": s, "error": e, "components": c} for s, e, c in results]

    def score(self, samples):
        """One float per sample (None where the backend could not score it)."""
        return [r["score"] for r in self.score_detailed(samples)]


class RewardModel(Backend):
    """A Skywork-VL style reward model directory (Qwen2.5-VL + value_head.safetensors)."""

    def __init__(self, path, value_head=None, device="cpu", dtype="float32", **options):
        config = {"type": "skywork_vl", "model": os.fspath(path), "device": device, "dtype": dtype, **options}
        if value_head is not None:
            config["value_head"] = os.fspath(value_head)
        super().__init__(config)


class TrlRewardFunction:
    """A GRPOTrainer reward function: given prompts, completions and the dataset's columns (its "image" or "images"
    column goes with each completion), one float per completion (None where unscorable)."""

    def __init__(self, backend, name="skywork_vl_reward"):
        self.backend = backend
        self.__name__ = name  # TRL logs each reward under its function's name

    def __call__(self, prompts, completions, **kwargs):
        n = len(completions)
        if kwargs.get("images") is not None:
            rows = [list(i or []) for i in kwargs["images"]]
        elif kwargs.get("image") is not None:
            rows = [[i] if i is not None else [] for i in kwargs["image"]]
        else:
            rows = [[] for _ in range(n)]
        samples = []
        for k, (prompt, completion, images) in enumerate(zip(prompts, completions, rows)):
            if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
                completion = "".join(m["content"] if isinstance(m["content"], str)
                                     else "".join(p.get("text", "") for p in m["content"])
                                     for m in completion if m.get("role") == "assistant")
            if isinstance(prompt, str):
                prompt = [{"role": "user", "content": prompt}]
            system = next((m["content"] for m in prompt if m["role"] == "system"), None)
            samples.append({"id": str(k), "messages": [m for m in prompt if m["role"] != "system"],
                            "response": completion, "images": images, "system": system})
        return self.backend.score(samples)
