"""A faithful stand-in for a paid chat-completions API, on loopback, for Lab 05 and its tests.

It speaks the OpenAI wire format the official client expects: ``POST /v1/chat/completions``
(non-streaming JSON with ``usage``, or server-sent events ending in ``data: [DONE]``, with a final
usage chunk when ``stream_options.include_usage`` is set) and ``GET /v1/models``. Each request
waits a latency drawn from a seeded log-normal distribution, and a configurable share of requests
fails the ways real APIs fail: 429 with ``Retry-After``, 500, 503, a timeout (the answer comes too
late), a dropped connection, and garbage (a 200 whose body is an HTML page, as from a misconfigured proxy). Every request is recorded (``server.seen``), so a test can prove
what left the machine.

Nothing here is a model: the reply is a fixed, deterministic sentence whose length follows
``max_tokens``; token counts are words, which is all the router and the ledger need.
"""
from __future__ import annotations

import json
import math
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable  # noqa: F401 - named in UpstreamConfig's annotation

from ..errors import InputError

HOST = "127.0.0.1"
FAULTS = ("429", "500", "503", "timeout", "drop", "garbage")


@dataclass
class UpstreamConfig:
    """Latency (log-normal: median and spread) and fault shares (each a probability per request)."""

    model: str = "stand-in-paid-model"
    median_latency_s: float = 0.05
    latency_sigma: float = 0.5
    faults: dict[str, float] = field(default_factory=dict)
    retry_after_s: float = 0.05
    timeout_s: float = 5.0  # how long a "timeout" fault holds the request before answering
    seed: int = 0
    # the reply for a prompt (the system and user messages joined); None: the fixed sentence. Tests use it to stand in
    # for a model that answers the desk's task, right or wrong as they choose
    answer: Callable[[str], str] | None = None
    # how usage counts prompt tokens: "words" (the default), or "bytes": every UTF-8 byte of every message plus 4 per
    # message for the chat format (more than any real tokenizer: the budget tests' worst case)
    tokens: str = "words"

    def __post_init__(self):
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise InputError(f"unknown fault kind(s) {sorted(unknown)}", fix=f"use any of {', '.join(FAULTS)}")
        if sum(self.faults.values()) > 1 or any(v < 0 for v in self.faults.values()):
            raise InputError(f"fault shares {self.faults} must be >= 0 and add up to at most 1", fix="lower the shares")


def _reply_words(prompt: str, max_tokens: int) -> list[str]:
    base = ("Thanks for reaching out. We have looked at your request and will follow up shortly with the next steps "
            "and any details we still need from you.").split()
    words = (base * (max_tokens // len(base) + 1))[:max(1, max_tokens)]
    return words


class StandInUpstream:
    """``with StandInUpstream(UpstreamConfig(faults={"429": 0.1})) as api: OpenAI(base_url=api.base_url, ...)``"""

    stand_in = True  # its answers are a fixed sentence: never scored as quality
    provenance = "the kit's stand-in"

    def __init__(self, config: UpstreamConfig | None = None, port: int = 0):
        self.config = config or UpstreamConfig()
        self._random = random.Random(self.config.seed)
        self._lock = threading.Lock()
        self.seen: list[dict] = []
        self._connections: set = set()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet: the ledger is the log
                pass

            def setup(self):
                super().setup()
                with upstream._lock:
                    upstream._connections.add(self.connection)

            def finish(self):
                with upstream._lock:
                    upstream._connections.discard(self.connection)
                super().finish()

            def do_GET(self):
                if self.path.rstrip("/") == "/v1/models":
                    upstream._json(self, 200, {"object": "list", "data": [{"id": upstream.config.model, "object": "model"}]})
                elif self.path.rstrip("/") == "/health":  # what a load balancer checks (vllm-router, in a fleet)
                    upstream._json(self, 200, {"status": "ok"})
                else:
                    upstream._json(self, 404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

            def do_POST(self):
                upstream._chat(self)

        self._server = ThreadingHTTPServer((HOST, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle
    @property
    def model(self) -> str:
        return self.config.model

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def start(self) -> "StandInUpstream":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop like a crashed server: no new connections, and the open keep-alive ones are cut too."""
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            open_connections = list(self._connections)
        for connection in open_connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> "StandInUpstream":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------- behaviour
    def _draw(self) -> tuple[float, str | None]:
        with self._lock:
            latency = self.config.median_latency_s * math.exp(self.config.latency_sigma * self._random.gauss(0, 1))
            roll, fault, acc = self._random.random(), None, 0.0
            for kind, share in self.config.faults.items():
                acc += share
                if roll < acc:
                    fault = kind
                    break
        return latency, fault

    @staticmethod
    def _json(handler, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _chat(self, handler) -> None:
        from ..bench.server import read_body

        try:  # the body is read whatever the path: left unread on a kept-alive connection it would be misread as the next request
            raw = read_body(handler)
        except ValueError:
            handler.close_connection = True
            return self._json(handler, 400, {"error": {"message": "malformed chunked body", "type": "invalid_request_error"}})
        if handler.path.rstrip("/") != "/v1/chat/completions":
            return self._json(handler, 404, {"error": {"message": f"no route {handler.path}", "type": "not_found"}})
        try:
            request = json.loads(raw or b"{}")
            messages = request["messages"]
            prompt = " ".join(str(m.get("content", "")) for m in messages)
        except (ValueError, KeyError, TypeError, AttributeError):
            return self._json(handler, 400, {"error": {"message": "body must be JSON with a messages list", "type": "invalid_request_error"}})
        latency, fault = self._draw()
        with self._lock:
            self.seen.append({"model": request.get("model"), "prompt": prompt, "fault": fault, "stream": bool(request.get("stream")),
                              "authorization": bool(handler.headers.get("Authorization")),
                              "temperature": request.get("temperature")})
        if fault == "drop":
            handler.close_connection = True
            handler.connection.shutdown(2)  # the socket closes with no response: the client sees a dropped connection
            return
        if fault == "timeout":
            time.sleep(self.config.timeout_s)
        else:
            time.sleep(latency)
        if fault == "429":
            return self._json(handler, 429, {"error": {"message": "rate limited", "type": "rate_limit_error"}},
                              {"Retry-After": f"{self.config.retry_after_s:g}"})
        if fault == "garbage":
            data = b"<html><body>Welcome to nginx!</body></html>"
            handler.send_response(200)
            handler.send_header("Content-Type", "text/html")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return
        if fault in ("500", "503"):
            return self._json(handler, int(fault), {"error": {"message": "upstream error", "type": "server_error"}})
        if self.config.answer is not None:
            words = str(self.config.answer(prompt)).split(" ")
        else:
            words = _reply_words(prompt, int(request.get("max_tokens") or 32))
        prompt_tokens = (sum(len(str(m.get("content", "")).encode()) + 4 for m in messages) if self.config.tokens == "bytes"
                         else len(prompt.split()))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words), "total_tokens": prompt_tokens + len(words)}
        base = {"id": f"chatcmpl-{len(self.seen)}", "created": int(time.time()), "model": request.get("model") or self.config.model}
        if not request.get("stream"):
            return self._json(handler, 200, {**base, "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": " ".join(words)}, "finish_reason": "stop"}]})
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        chunk = {**base, "object": "chat.completion.chunk"}

        def send(payload):
            handler.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
            handler.wfile.flush()

        send({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
        for i, word in enumerate(words):
            send({**chunk, "choices": [{"index": 0, "delta": {"content": (" " if i else "") + word}, "finish_reason": None}]})
        send({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (request.get("stream_options") or {}).get("include_usage"):
            send({**chunk, "choices": [], "usage": usage})
        handler.wfile.write(b"data: [DONE]\n\n")
        handler.wfile.flush()


def published_latency(model: str = "gpt-4o-mini") -> dict:
    """The paid API's published latency (``datasets/deploy/api_latency.csv``): TTFT in s and output tokens/s,
    each with its source and date."""
    from ..data import load_rows

    rows = [r for r in load_rows("deploy/api_latency.csv", optional_numeric=["ttft_s", "output_tokens_per_s"]) if r["model"] == model]
    found = {key: next((r for r in rows if r[key] not in ("", None)), None) for key in ("ttft_s", "output_tokens_per_s")}
    missing = [key for key, row in found.items() if row is None]
    if missing:
        raise InputError(f"no published {', '.join(missing)} for {model!r} in datasets/deploy/api_latency.csv",
                         fix="add a dated, sourced row for it, or calibrate the stand-in for a model listed there")
    return {key: {"value": float(row[key]), "source": row["source"], "date": row["date"]} for key, row in found.items()}


def calibrated_config(model: str = "gpt-4o-mini", reply_tokens: int = 32, faults: dict[str, float] | None = None,
                      seed: int = 0, speedup: float = 1.0) -> UpstreamConfig:
    """A stand-in whose median latency is the published one for ``model``: TTFT + ``reply_tokens`` / output speed.
    ``speedup`` > 1 compresses time (the at-scale drill), never the reported calibration."""
    published = published_latency(model)
    median = published["ttft_s"]["value"] + reply_tokens / published["output_tokens_per_s"]["value"]
    return UpstreamConfig(model=model, median_latency_s=median / speedup, latency_sigma=0.3, faults=dict(faults or {}), seed=seed)



# ---------------------------------------------------------------- the paid side: a real endpoint, or the stand-in
PAID_ENV = {"model": "OTS_PAID_MODEL", "base_url": "OTS_PAID_BASE_URL", "key_env": "OTS_PAID_KEY_ENV", "price_model": "OTS_PAID_PRICE_MODEL"}
DEFAULT_PAID_URL, DEFAULT_KEY_ENV = "https://api.openai.com/v1", "OPENAI_API_KEY"


@dataclass
class RealEndpoint:
    """A real OpenAI-compatible paid API, configured by environment variables only (:func:`paid_upstream`). The key
    stays in the environment: this object holds the variable's *name*, never its value."""

    base_url: str
    model: str
    api_key_env: str
    price_model: str
    stand_in = False

    @property
    def provenance(self) -> str:
        return f"measured: {self.model} at {self.base_url}"

    def start(self) -> "RealEndpoint":
        return self

    def stop(self) -> None:  # nothing of ours runs: the API is someone else's server
        pass


def paid_upstream(reply_tokens: int = 32, seed: int = 0, latency_model: str = "gpt-4o-mini", environ=None):
    """The paid upstream Lab 05 routes to: a real endpoint when ``OTS_PAID_MODEL`` is set (with ``OTS_PAID_BASE_URL``,
    default OpenAI's, the key in the variable ``OTS_PAID_KEY_ENV`` names, default ``OPENAI_API_KEY``, and the price row
    ``OTS_PAID_PRICE_MODEL``, default the model), else the stand-in calibrated to ``latency_model``'s published latency,
    started. Either has ``base_url``, ``model``, ``stand_in``, ``provenance`` and ``stop()``."""
    import os

    environ = os.environ if environ is None else environ
    model = environ.get(PAID_ENV["model"], "").strip()
    if not model:
        config = calibrated_config(latency_model, reply_tokens=reply_tokens, seed=seed)
        upstream = StandInUpstream(config).start()
        published = published_latency(latency_model)["ttft_s"]
        upstream.provenance = (f"stand-in calibrated to {latency_model}'s published latency ({published['source']}, {published['date']}); "
                               f"set {PAID_ENV['model']} and a key to measure a real API")
        return upstream
    key_env = environ.get(PAID_ENV["key_env"], DEFAULT_KEY_ENV).strip() or DEFAULT_KEY_ENV
    if not environ.get(key_env):
        raise InputError(f"{PAID_ENV['model']}={model} asks for a real paid API, but the environment variable {key_env} "
                         "that should hold its key is empty",
                         fix=f"export {key_env}=... in the shell that starts Jupyter (never in a notebook cell or a file), "
                             f"or unset {PAID_ENV['model']} to use the stand-in")
    price_model = environ.get(PAID_ENV["price_model"], model).strip() or model
    from ..tco import get_api_price

    try:
        get_api_price(price_model)
    except InputError as error:
        raise InputError(f"no price for {price_model!r} in Lab 01's dated snapshot, so the ledger could not bill it ({error.problem})",
                         fix=f"export {PAID_ENV['price_model']}= a model listed in datasets/tco/api_prices.csv with the same prices") from None
    base_url = environ.get(PAID_ENV["base_url"], DEFAULT_PAID_URL).strip() or DEFAULT_PAID_URL
    return RealEndpoint(base_url.rstrip("/"), model, key_env, price_model)


def paid_prompts(paid, router) -> list[str]:
    """What reached the paid side, for the personal-data audit: the stand-in's own record of every request it received
    (independent of the router's code), or, for a real API, every prompt the router put on the wire to it."""
    if getattr(paid, "stand_in", True) and hasattr(paid, "seen"):
        return [seen["prompt"] for seen in paid.seen]
    return list(router.sent["paid"])
