"""A verl custom reward function that asks reward-serve (one self-contained file, standard library only).

verl config (verl loads this file by path; nothing else needs to be importable):

    custom_reward_function:
      path: /path/to/verl_reward_fn.py
      name: compute_score
      reward_kwargs:            # optional; otherwise $VLREWARD_SERVE_URL
        url: http://rm-host:8000

verl calls compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) once per response
(with reward_model.enable it passes more keywords; they are ignored). The question and images come from the
dataset row's extra_info: "question" (or "prompt") and "images" (paths, bytes or {"bytes"/"path"} cells; a single
"image" works too). Every call returns the same keys, which verl's agent loop requires: "score" feeds the reward,
"exact_match" is 1.0/0.0 (0.0 without a ground truth, with "has_ground_truth" 0.0 saying so), then the server's
components.
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


def compute_score(data_source, solution_str, ground_truth, extra_info=None, url=None,
                  token_env="VLREWARD_SERVE_TOKEN", timeout=120.0, **kwargs):
    extra_info = extra_info or {}
    url = url or os.environ.get("VLREWARD_SERVE_URL")
    if not url:
        raise ValueError("compute_score: give reward_kwargs.url or set VLREWARD_SERVE_URL")
    images = extra_info.get("images") or ([extra_info["image"]] if extra_info.get("image") is not None else [])
    question = extra_info.get("question") or extra_info.get("prompt") or ""
    if not isinstance(question, str):  # a chat prompt: the last user message's text
        question = next((m.get("content", "") for m in reversed(question) if m.get("role") == "user"), "")
        question = question if isinstance(question, str) else "".join(p.get("text", "") for p in question)
    reference = None if ground_truth is None else str(ground_truth)
    content = [image_part(image) for image in images] + [{"type": "text", "text": question}]
    sample = {"id": str(data_source), "messages": [{"role": "user", "content": content}], "response": solution_str}
    if reference is not None:
        sample["reference"] = reference
    result = post_json(url.rstrip("/") + "/v1/score", {"samples": [sample]}, token=os.environ.get(token_env),
                       timeout=timeout)["results"][0]
    if "score" not in result:
        raise RuntimeError(f"reward-serve could not score this response: {result['error']}")
    out = {"score": result["score"],
           "exact_match": float(reference is not None and solution_str.strip() == reference.strip()),
           "has_ground_truth": float(reference is not None)}
    out.update(result.get("components", {}))
    return out


if __name__ == "__main__":
    import sys

    # Demo: python3 verl_reward_fn.py URL IMAGE
    print(json.dumps(compute_score("demo", "A chart.", "A chart.",
                                   {"question": "What is in the picture?", "images": [sys.argv[2]]}, url=sys.argv[1])))
