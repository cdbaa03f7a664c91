"""A local HTTP server on 127.0.0.1 speaking the Anthropic Messages and OpenAI chat-completions protocols.

It answers from the images it receives (the dominant colour of the first image's bright pixels),
and takes injected behaviour: a schedule of actions consumed in arrival order ("429", "500", "529",
"timeout", "garbage", "truncated", "malformed", "400", "401"), per-request latency, and it counts
requests in flight. A responder may return (text, {token: log-probability}); a request asking for
`logprobs` (OpenAI) then gets them, unless `logprobs` is switched off (a server that sends none).

Fault mode (`faults=0.3`): a seeded share of requests fails with 429 / 500 / 529 / a timeout (the
server sleeps past the client's timeout) / malformed JSON / a truncated body, the kinds taken in
turn. Whether a request fails depends on its content and on how often it came before, so which
requests fail does not depend on arrival order, and a retry gets a fresh draw. `max_requests` bounds what one test can send: later
requests get a 400 and are counted in `over_limit`. Errors echo the credentials they were sent with
(as careless servers do), so the tests can check that a key never leaves the process.
Used by the explainer, backend and reliability tests and benchmarks/bench_explain.py.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import io
import json
import math
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

FAULTS = ("429", "500", "529", "timeout", "garbage", "truncated")
COLOURS = {"red": (220, 40, 40), "orange": (245, 140, 20), "yellow": (235, 220, 30), "green": (40, 180, 60),
           "cyan": (30, 200, 215), "blue": (45, 75, 230), "purple": (155, 60, 210)}


def colour_of(image) -> str:
    """Name of the colour nearest to the mean of the image's most saturated pixels."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3)
    saturation = arr.max(1) - arr.min(1)
    mean = arr[saturation >= max(saturation.max() - 40, 1)].mean(0)
    return min(COLOURS, key=lambda c: float(((np.array(COLOURS[c]) - mean) ** 2).sum()))


def images_in(body: dict) -> list:
    """Decoded PIL images of a request body, in either protocol."""
    from PIL import Image

    out = []
    for message in body.get("messages", []):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            data = None
            if part.get("type") == "image":
                data = part["source"]["data"]
            elif part.get("type") == "image_url":
                data = part["image_url"]["url"].split(",", 1)[1]
            if data is not None:
                out.append(Image.open(io.BytesIO(base64.b64decode(data))))
    return out


def verdict(p_yes: float) -> tuple[str, dict[str, float]]:
    """A yes/no answer with its first-token log-probabilities (" Yes" / " No"), for judge responders."""
    p = min(max(p_yes, 0.01), 0.99)
    return ("Yes." if p >= 0.5 else "No."), {"Yes": math.log(p), "No": math.log(1 - p)}


def default_responder(body: dict) -> str:
    images = images_in(body)
    if not images:
        return "[LABEL]: a label"
    colour = colour_of(images[0])
    if colour == "purple":  # a colour this fake model never explains properly
        return "I see several shapes but I am not sure."
    if colour == "cyan":
        return "[EXPLANATION]: Cannot explain"
    return f"The highlighted regions are all {colour}.\n[EXPLANATION]: {colour} regions"


class FakeLMMServer:
    def __init__(self, latency: float = 0.0, responder=default_responder, timeout_sleep: float = 1.5,
                 faults: float = 0.0, fault_seed: int = 0, max_requests: int | None = None):
        self.latency = latency
        self.responder = responder
        self.timeout_sleep = timeout_sleep
        self.faults = faults
        self.fault_seed = fault_seed
        self.max_requests = max_requests
        self.over_limit = 0
        self.injected = 0
        self.logprobs = True
        self.seen: collections.Counter[str] = collections.Counter()
        self.schedule: collections.deque[str] = collections.deque()
        self.log: list[dict] = []          # one entry per request: path, digest, action
        self.inflight = 0
        self.max_inflight = 0
        self.lock = threading.Lock()
        self.headers_seen: list[dict] = []
        self.keep_bodies = True
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FakeLMMServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def inject(self, *actions: str) -> None:
        self.schedule.extend(actions)

    def digests(self) -> list[str]:
        return [e["digest"] for e in self.log]

    def count(self, action: str) -> int:
        return sum(1 for e in self.log if e["action"] == action)

    def answered(self) -> set[str]:
        """Digests of the requests that got a proper answer (what a client paid for)."""
        return {e["digest"] for e in self.log if e["action"] == "ok"}

    def fault_for(self, digest: str) -> str:
        """A fault (the next kind in turn) or "ok", drawn for this request's `seen[digest]`-th arrival."""
        if random.Random(f"{self.fault_seed}:{digest}:{self.seen[digest]}").random() >= self.faults:
            return "ok"
        self.injected += 1
        return FAULTS[(self.injected - 1) % len(FAULTS)]

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers
            disable_nagle_algorithm = True  # headers and body go out at once (no delayed-ACK stalls)

            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                body = json.loads(raw)
                digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
                with server.lock:
                    if server.max_requests is not None and len(server.log) >= server.max_requests:
                        action = "limit"
                        server.over_limit += 1
                    elif server.schedule:
                        action = server.schedule.popleft()
                    else:
                        action = server.fault_for(digest)
                    server.seen[digest] += 1
                    server.log.append({"path": self.path, "action": action, "model": body.get("model"),
                                       "body": body if server.keep_bodies else None, "digest": digest})
                    server.headers_seen.append(dict(self.headers))
                    server.inflight += 1
                    server.max_inflight = max(server.max_inflight, server.inflight)
                try:
                    if server.latency:
                        time.sleep(server.latency)
                    self._answer(action, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with server.lock:
                        server.inflight -= 1

            def _answer(self, action, body):
                if action == "timeout":
                    time.sleep(server.timeout_sleep)
                    action = "ok"
                if action == "limit":
                    action = "400"
                if action in ("429", "500", "529", "401", "400"):
                    status = int(action)
                    echo = self.headers.get("x-api-key") or self.headers.get("authorization") or ""
                    message = f"injected {status}" + (f" (request sent with credentials {echo})" if status in (400, 401)
                                                      else "")
                    payload = {"type": "error", "error": {"type": "test_error", "message": message}}
                    headers = {"retry-after": "0"} if status == 429 else {}
                    return self._send(status, json.dumps(payload).encode(), headers)
                if action == "garbage":
                    return self._send(200, b"<html>proxy error</html>{", {})
                text = "Hmm." if action == "malformed" else server.responder(body)
                text, logprobs = text if isinstance(text, tuple) else (text, None)
                if self.path.endswith("/messages"):
                    out = {"id": "msg_test", "type": "message", "role": "assistant", "model": body["model"],
                           "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                           "stop_sequence": None, "usage": {"input_tokens": 100, "output_tokens": 10,
                                                            "cache_read_input_tokens": 50}}
                elif self.path.endswith("/chat/completions"):
                    out = {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body["model"],
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": text}}],
                           "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}}
                    if body.get("logprobs") and server.logprobs and logprobs:
                        top = sorted(logprobs.items(), key=lambda kv: -kv[1])[:body.get("top_logprobs", 20)]
                        entry = {"token": top[0][0], "logprob": top[0][1], "bytes": None,
                                 "top_logprobs": [{"token": t, "logprob": v, "bytes": None} for t, v in top]}
                        out["choices"][0]["logprobs"] = {"content": [entry]}
                else:
                    return self._send(404, b'{"error": {"message": "no such route"}}', {})
                data = json.dumps(out).encode()
                if action == "truncated":  # headers promise the whole body; half arrives, then the line drops
                    self.close_connection = True
                    return self._send(200, data, {}, cut=len(data) // 2)
                self._send(200, data, {})

            def _send(self, status, data, headers, cut=None):
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data if cut is None else data[:cut])
                self.wfile.flush()

        return Handler


def main() -> None:
    """Serve in a process of its own (the benchmark keeps the server's CPU apart from the client's)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--constant", action="store_true", help="answer without decoding images (cheap)")
    args = parser.parse_args()
    responder = (lambda body: "[EXPLANATION]: red regions") if args.constant else default_responder
    server = FakeLMMServer(latency=args.latency, responder=responder).start()
    print(server.url, flush=True)
    try:
        for line in sys.stdin:  # serve until stdin closes
            if line.strip() == "stats":
                print(json.dumps({"requests": len(server.log), "max_inflight": server.max_inflight}), flush=True)
                server.log.clear()
                server.max_inflight = 0
    finally:
        server.stop()


if __name__ == "__main__":
    main()
