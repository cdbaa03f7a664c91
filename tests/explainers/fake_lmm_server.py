"""A local HTTP server on 127.0.0.1 speaking the Anthropic Messages and OpenAI chat-completions protocols.

It answers from the images it receives (the dominant colour of the first image's bright pixels),
and takes injected behaviour: a schedule of actions consumed in arrival order ("429", "500", "529",
"timeout", "garbage", "malformed", "401"), per-request latency, and it counts requests in flight.
Used by the explainer tests and benchmarks/bench_explain.py.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

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
    def __init__(self, latency: float = 0.0, responder=default_responder, timeout_sleep: float = 1.5):
        self.latency = latency
        self.responder = responder
        self.timeout_sleep = timeout_sleep
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
                with server.lock:
                    action = server.schedule.popleft() if server.schedule else "ok"
                    server.log.append({"path": self.path, "action": action, "model": body.get("model"),
                                       "body": body if server.keep_bodies else None,
                                       "digest": hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()})
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
                if action in ("429", "500", "529", "401", "400"):
                    status = int(action)
                    echo = self.headers.get("x-api-key") or self.headers.get("authorization") or ""
                    message = f"injected {status}" + (f" (bad request sent with credentials {echo})" if status == 400 else "")
                    payload = {"type": "error", "error": {"type": "test_error", "message": message}}
                    headers = {"retry-after": "0"} if status == 429 else {}
                    return self._send(status, json.dumps(payload).encode(), headers)
                if action == "garbage":
                    return self._send(200, b"<html>proxy error</html>{", {})
                text = "Hmm." if action == "malformed" else server.responder(body)
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
                else:
                    return self._send(404, b'{"error": {"message": "no such route"}}', {})
                self._send(200, json.dumps(out).encode(), {})

            def _send(self, status, data, headers):
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

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
