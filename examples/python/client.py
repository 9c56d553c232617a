#!/usr/bin/env python3
"""Score samples with images through reward-serve's POST /v1/score (standard library only, Python 3.9+).

    python3 client.py --url http://127.0.0.1:8000 --image cat.png --question "What is this?" --response "A cat."
    python3 client.py --url http://127.0.0.1:8000 --jsonl items.jsonl     # {"id", "images": [paths], "question", "response"}

Prints one JSON line per sample: {"id", "score"} or {"id", "error"}. Images are read here and sent as base64, so
the server needs no access to this machine's files. The token, if the server wants one, comes from the
environment (VLREWARD_SERVE_TOKEN by default), never from the command line.
"""
import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request

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


def score(url, samples, token=None, timeout=60.0):
    """Scores samples (from sample()); answers the server's results, one per sample, in order."""
    return post_json(url.rstrip("/") + "/v1/score", {"samples": list(samples)}, token=token, timeout=timeout)["results"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="reward-serve base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--token-env", default="VLREWARD_SERVE_TOKEN", help="environment variable holding the token")
    parser.add_argument("--jsonl", help="samples, one JSON object a line; image paths relative to the file")
    parser.add_argument("--image", action="append", default=[], help="image file (repeatable)")
    parser.add_argument("--question")
    parser.add_argument("--response", action="append", default=[], help="response to score (repeatable)")
    args = parser.parse_args(argv)

    samples = []
    if args.jsonl:
        root = os.path.dirname(os.path.abspath(args.jsonl))
        with open(args.jsonl, encoding="utf-8") as f:
            for n, line in enumerate(f):
                if line.strip():
                    item = json.loads(line)
                    images = [os.path.join(root, p) for p in item.get("images", [])]
                    samples.append(sample(item["question"], item["response"], images, item.get("id", n),
                                          reference=item.get("reference")))
    elif args.question and args.response:
        samples = [sample(args.question, r, args.image, i) for i, r in enumerate(args.response)]
    else:
        parser.error("give --jsonl, or --question with at least one --response")

    results = score(args.url, samples, token=os.environ.get(args.token_env))
    for result in results:
        out = {"id": result["id"]}
        out.update({"score": result["score"]} if "score" in result else {"error": result["error"]})
        print(json.dumps(out, ensure_ascii=False))
    return 0 if all("score" in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
