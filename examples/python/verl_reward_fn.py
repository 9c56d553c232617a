"""A verl custom reward function that asks reward-serve (standard library only).

verl config:

    custom_reward_function:
      path: examples/python/verl_reward_fn.py
      name: compute_score
      reward_kwargs:            # optional; otherwise $VLREWARD_SERVE_URL
        url: http://rm-host:8000

verl calls compute_score(data_source, solution_str, ground_truth, extra_info=None, **reward_kwargs) once per
response. The question and images come from the dataset row's extra_info: "question" (or "prompt") and "images"
(paths or bytes; a single "image" works too). The answer is a dict: "score" feeds the reward, the other keys are
logged (the server's components, and whether the response matched ground_truth exactly).
"""
import os

from client import post_json, sample


def compute_score(data_source, solution_str, ground_truth, extra_info=None, url=None,
                  token_env="VLREWARD_SERVE_TOKEN", timeout=120.0):
    extra_info = extra_info or {}
    url = url or os.environ.get("VLREWARD_SERVE_URL")
    if not url:
        raise ValueError("compute_score: give reward_kwargs.url or set VLREWARD_SERVE_URL")
    images = extra_info.get("images") or ([extra_info["image"]] if extra_info.get("image") is not None else [])
    question = extra_info.get("question") or extra_info.get("prompt") or ""
    reference = None if ground_truth is None else str(ground_truth)
    body = {"samples": [sample(question, solution_str, images, sample_id=data_source, reference=reference)]}
    result = post_json(url.rstrip("/") + "/v1/score", body, token=os.environ.get(token_env), timeout=timeout)["results"][0]
    if "score" not in result:
        raise RuntimeError(f"reward-serve could not score this response: {result['error']}")
    out = {"score": result["score"]}
    out.update(result.get("components", {}))
    if reference is not None:
        out["exact_match"] = float(solution_str.strip() == reference.strip())
    return out


if __name__ == "__main__":
    import json
    import sys

    # Demo: python3 verl_reward_fn.py URL IMAGE
    print(json.dumps(compute_score("demo", "A chart.", "A chart.",
                                   {"question": "What is in the picture?", "images": [sys.argv[2]]}, url=sys.argv[1])))
