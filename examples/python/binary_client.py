#!/usr/bin/env python3
"""Score samples through reward-serve's binary port: length-prefixed Protobuf frames (one self-contained file,
standard library only, Python 3.9+; no protobuf package needed).

    reward-serve --model DIR --binary-port 9000 ...
    python3 binary_client.py --host 127.0.0.1 --port 9000 --image cat.png --question "What is this?" --response "A cat."

A frame is a 4-byte big-endian payload length, then a serialized vlreward.serve.ScoreRequest
(plugin/wire/reward_service.proto); the server answers one ScoreResponse frame per request, on the same
connection, which stays open for more. This file writes and reads the few fields it uses by hand: the wire format is
small (varints, length-delimited fields, little-endian doubles). The token, if the server wants one, comes from
the environment (VLREWARD_SERVE_TOKEN by default) and travels in ScoreRequest.auth_token.
"""
import argparse
import json
import os
import socket
import struct
import sys


def _varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number, payload):
    """A length-delimited field (strings, bytes, messages)."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _uint(number, value):
    return _varint(number << 3) + _varint(value) if value else b""


def encode_sample(sample_id, question, response, images=(), system=None, reference=None):
    """A Sample: one user turn [images..., question] and the response to judge. Images are paths or bytes."""
    content = b""
    for image in images:
        if not isinstance(image, (bytes, bytearray)):
            with open(image, "rb") as f:
                image = f.read()
        content += _field(2, _field(2, _field(1, bytes(image))))  # Turn.content = Content{image: Image{data}}
    content += _field(2, _field(1, question))                    # Content{text}
    turn = _field(1, "user") + content
    out = _field(1, str(sample_id))
    if system is not None:
        out += _field(2, system)
    out += _field(3, turn) + _field(4, response)
    if reference is not None:
        out += _field(5, reference)
    return out


def encode_request(samples, request_id=1, deadline_ms=0, token=None):
    out = _uint(1, request_id)
    for sample in samples:
        out += _field(2, sample)
    out += _uint(3, deadline_ms)
    if token:
        out += _field(4, token)
    return out


def _fields(data):
    """(number, wire type, value) for each field of a message: ints for varints, bytes for length-delimited,
    floats for 64-bit fields."""
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        number, kind = key >> 3, key & 7
        if kind == 0:
            value, i = _read_varint(data, i)
        elif kind == 1:
            value, i = struct.unpack_from("<d", data, i)[0], i + 8
        elif kind == 2:
            length, i = _read_varint(data, i)
            value, i = data[i:i + length], i + length
        elif kind == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {kind}")
        yield number, kind, value


def _read_varint(data, i):
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def decode_response(data):
    """A ScoreResponse as a dict: {"request_id", "results": [{"id", "score" | "error", "components"}], "error"?}."""
    out = {"request_id": 0, "results": []}
    for number, _, value in _fields(data):
        if number == 1:
            out["request_id"] = value
        elif number == 2:
            result = {"components": {}}
            for n, _, v in _fields(value):
                if n == 1:
                    result["id"] = v.decode("utf-8")
                elif n == 2:
                    result["score"] = v
                elif n == 3:
                    result["error"] = v.decode("utf-8")
                elif n == 4:
                    entry = dict((k, x) for k, _, x in _fields(v))
                    result["components"][entry.get(1, b"").decode("utf-8")] = entry.get(2, 0.0)
            out["results"].append(result)
        elif number == 3:
            error = {"code": 0, "message": "", "retry_after_ms": 0}
            for n, _, v in _fields(value):
                error[{1: "code", 2: "message", 3: "retry_after_ms"}.get(n, str(n))] = v.decode("utf-8") if n == 2 else v
            out["error"] = error
    return out


class BinaryClient:
    """One connection to the binary port; score() may be called many times."""

    def __init__(self, host, port, token=None, timeout=60.0):
        self.socket = socket.create_connection((host, port), timeout=timeout)
        self.token = token
        self.next_id = 1

    def score(self, samples, deadline_ms=0):
        payload = encode_request(samples, self.next_id, deadline_ms, self.token)
        self.next_id += 1
        self.socket.sendall(struct.pack(">I", len(payload)) + payload)
        length = struct.unpack(">I", self._read(4))[0]
        response = decode_response(self._read(length))
        if "error" in response and response["error"]["code"]:
            raise RuntimeError(f"reward-serve: {response['error']['message']} (code {response['error']['code']})")
        return response["results"]

    def _read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.socket.recv(n - len(data))
            if not chunk:
                raise ConnectionError("reward-serve closed the connection")
            data += chunk
        return data

    def close(self):
        self.socket.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="reward-serve's --binary-port")
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
                    samples.append(encode_sample(item.get("id", n), item["question"], item["response"], images,
                                                 reference=item.get("reference")))
    elif args.question and args.response:
        samples = [encode_sample(i, args.question, r, args.image) for i, r in enumerate(args.response)]
    else:
        parser.error("give --jsonl, or --question with at least one --response")
    client = BinaryClient(args.host, args.port, token=os.environ.get(args.token_env))
    try:
        results = client.score(samples)
    finally:
        client.close()
    for result in results:
        out = {"id": result["id"]}
        out.update({"score": result["score"]} if "score" in result else {"error": result.get("error", "")})
        print(json.dumps(out, ensure_ascii=False))
    return 0 if all("score" in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
