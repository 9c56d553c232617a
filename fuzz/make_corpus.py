#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (fuzz/corpus/<target>/), committed: small valid and near-valid inputs
from the test fixtures and hand-built ones. Python standard library only.

    python3 fuzz/make_corpus.py            # rewrites every seed (inputs libFuzzer found and we kept stay)

Crash inputs found by fuzzing are committed beside the seeds as regression cases (named crash-*), and survive
a rerun of this script.
"""
import base64
import json
import pathlib
import shutil
import struct

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
CORPUS = ROOT / "fuzz" / "corpus"


def write(target: str, name: str, data) -> None:
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors: dict, metadata=None, data_pad: int = 0) -> bytes:
    header, blobs, offset = {}, b"", 0
    for name, (dtype, shape, blob) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs += blob
        offset += len(blob)
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blobs + b"\0" * data_pad


def varint(n: int) -> bytes:
    out = b""
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def field(number: int, value) -> bytes:
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    value = value if isinstance(value, bytes) else value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def proto_sample(sample_id: str, question: str, response: str, image: bytes = b"", system: str = None) -> bytes:
    content = field(1, question)
    turn = field(1, "user") + field(2, content)
    if image:
        turn += field(2, field(2, field(1, image) + field(2, "image/png")))
    out = field(1, sample_id) + field(3, turn) + field(4, response)
    if system is not None:
        out += field(2, system)
    return out + field(6, field(1, "k") + field(2, "v"))


def http(method: str, target: str, body: str = "", headers: str = "") -> str:
    return (f"{method} {target} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Length: {len(body.encode())}\r\n"
            f"Content-Type: application/json\r\n\r\n{body}")


def main() -> None:
    for directory in CORPUS.glob("*"):
        for seed in directory.glob("seed-*"):
            seed.unlink()
    tiny_png = (FIXTURES / "images" / "inputs" / "rgb_28x28.png").read_bytes()
    png64 = base64.b64encode(tiny_png).decode()

    # safetensors
    f32 = struct.pack("<4f", 1, 2, 3, 4)
    write("safetensors_header", "seed-two-tensors", safetensors(
        {"a": ("F32", [2, 2], f32), "b": ("BF16", [3], b"\x80\x3f" * 3)}, {"format": "pt"}))
    write("safetensors_header", "seed-empty-header", safetensors({}))
    write("safetensors_header", "seed-scalar-and-empty", safetensors(
        {"s": ("I64", [], struct.pack("<q", 7)), "e": ("F16", [0, 3], b"")}))
    write("safetensors_header", "seed-trailing-bytes", safetensors({"a": ("U8", [2], b"\1\2")}, data_pad=5))
    write("safetensors_header", "seed-value-head", (FIXTURES / "reward" / "value_head.safetensors").read_bytes())

    # config.json
    write("qwen_config", "seed-tiny", (FIXTURES / "model" / "tiny" / "config.json").read_bytes())
    write("qwen_config", "seed-hub-7b", (FIXTURES / "config" / "hub_7b.json").read_bytes())
    tiny = json.loads((FIXTURES / "model" / "tiny" / "config.json").read_text())
    nested = dict(tiny)
    nested["text_config"] = {k: tiny[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size") if k in tiny}
    write("qwen_config", "seed-nested-text", json.dumps(nested))

    # tokenizer.json
    write("tokenizer_json", "seed-tiny", (FIXTURES / "model" / "tiny" / "tokenizer.json").read_bytes())
    minimal = {"version": "1.0", "added_tokens": [{"id": 5, "content": "<|im_start|>", "special": True,
                                                   "single_word": False, "lstrip": False, "rstrip": False,
                                                   "normalized": False}],
               "normalizer": None, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False,
                                                     "trim_offsets": True, "use_regex": True},
               "model": {"type": "BPE", "vocab": {"H": 0, "e": 1, "l": 2, "o": 3, "He": 4}, "merges": ["H e"]}}
    write("tokenizer_json", "seed-minimal", json.dumps(minimal))

    # tokenizer encode
    for i, text in enumerate(["Hello, world!", "<|im_start|>user\nWhat is 12+30?<|im_end|>\n",
                              "数字と文字 😀 café   spaces\t\ttabs\n\n", "don't won't I'll 1234567890",
                              "\u0065\u0301 combining", "<|image_pad|><|vision_start|> partial <|im_", ""]):
        write("tokenizer_encode", f"seed-{i}", text)
    write("tokenizer_encode", "seed-invalid-utf8", b"abc\xff\xfe\xc3(def")

    # chat template messages
    write("chat_template", "seed-text", json.dumps([{"role": "user", "content": "Hi"},
                                                    {"role": "assistant", "content": "Hello!"}]))
    write("chat_template", "seed-parts", json.dumps([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"},
                                     {"type": "video"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A box."}]}]))

    # images
    for name in ("rgb_28x28.png", "bit1_64x64.png", "gray2_interlaced_30x30.png", "p4_short_palette_50x50.png",
                 "jpeg_420_47x69.jpg", "jpeg_cmyk_40x40.jpg", "jpeg_gray_60x40.jpg"):
        write("image_decode", f"seed-{name}", (FIXTURES / "images" / "inputs" / name).read_bytes())
    for name in ("corrupt_crc.png", "corrupt_middle.jpg", "huge_header.png"):
        write("image_decode", f"seed-{name}", (FIXTURES / "images" / "errors" / name).read_bytes())

    # JSON requests: the first byte picks the route (0 /v1/score, 1 /get_reward, 2 /classify)
    score = {"samples": [{"id": "a", "question": "What is shown?", "images": [png64], "response": "A box.",
                          "reference": "box", "metadata": {"k": "v"}},
                         {"id": 2, "system": "Be fair.", "messages": [
                             {"role": "user", "content": [{"type": "image", "image": "data:image/png;base64," + png64},
                                                          {"type": "text", "text": "Colour?"}]}],
                          "response": "Red."}], "deadline_ms": 1000}
    write("request_json", "seed-score", b"\0" + json.dumps(score).encode())
    chatml = ("<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|>"
              "<|vision_end|>What is it?<|im_end|>\n<|im_start|>assistant\nA cat.<|im_end|>")
    write("request_json", "seed-get-reward", b"\1" + json.dumps(
        {"query": [chatml, "plain text"], "prompts": ["", "plain"], "labels": ["cat", "x"],
         "images": [[png64], []]}).encode())
    write("request_json", "seed-classify", b"\2" + json.dumps(
        {"model": "m", "input": chatml, "activation": True, "images": [png64]}).encode())

    # binary frames: ScoreRequest{request_id, samples, deadline_ms, auth_token}
    request = field(1, 7) + field(2, proto_sample("s1", "Q?", "A.", tiny_png, system="sys")) + \
        field(2, proto_sample("s2", "Q2?", "B.")) + field(3, 500) + field(4, "token")
    write("frames", "seed-two-requests", frame(request) + frame(field(1, 8) + field(2, proto_sample("x", "q", "r"))))
    write("frames", "seed-empty-frame", frame(b""))
    write("frames", "seed-announced-large", struct.pack(">I", 1 << 30) + b"\x08\x01")

    # HTTP
    write("http_request", "seed-score", http("POST", "/v1/score", json.dumps(score)))
    write("http_request", "seed-get-reward-auth", http("POST", "/get_reward?x=1", json.dumps({"query": ["q"]}),
                                                       "Authorization: Bearer abc\r\nConnection: keep-alive\r\n"))
    write("http_request", "seed-chunked", "POST /classify HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                                          "d\r\n{\"input\": \"x\"\r\n1\r\n}\r\n0\r\n\r\n")
    write("http_request", "seed-get", "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
    write("http_request", "seed-expect", http("POST", "/v1/embeddings", json.dumps({"input": ["a", "b"]}),
                                              "Expect: 100-continue\r\n"))

    # YAML / JSON configs
    write("yaml_config", "seed-reward-train", (ROOT / "configs" / "reward_train_tiny.yaml").read_bytes())
    write("yaml_config", "seed-server", "host: 127.0.0.1\nhttp_port: 0\nlimits: {max_body_bytes: 1024}\n"
                                        "batching:\n  max_batch_size: 4\n  max_queue_bytes: 4096\n")
    write("yaml_config", "seed-anchors", "a: &x {b: [1, 2.5, true, null, ~]}\nc: *x\nd: !!str 12\ne: |\n  text\n")
    write("yaml_config", "seed-json", json.dumps({"model": {"path": "m"}, "stages": [{"data": "d.jsonl"}]}))


if __name__ == "__main__":
    main()
