"""The front `bash kit serve` and `bash kit fleet` answer on: what a small desk's clients reach on 127.0.0.1.

A server behind a support desk takes requests from code the kit did not write. The engines on their own let one request
stall them (a 1 MB prompt, 50 clients at once, a client that hangs up mid-reply), answer a bad field with a bare 500 or
an HTML page, and sample at their own defaults. The gateway stands in front of the server's process (``transformers
serve``, llama.cpp's server, or a fleet's vllm-router) and makes it behave like a service:

- **Only the OpenAI routes.** ``GET /v1/models``, ``GET /health``, ``POST /v1/chat/completions`` and
  ``POST /v1/completions``; anything else is a 404 (``transformers serve``'s ``/reset`` and ``/load_model`` are not
  reachable from outside).
- **Checked before any work.** A body over ``max_body_bytes`` is a 413; ``messages`` must be a non-empty list of
  ``{role, content}``; ``max_tokens`` a whole number >= 1; ``temperature`` 0-2; ``top_p`` in (0, 1]; ``n`` 1 (one
  choice is all these servers make: asking for more is refused, never silently answered with one); the prompt is
  counted with the model's own tokenizer and refused when it leaves no room in the plan's context. Every error is
  OpenAI's JSON shape, ``{"error": {"message", "type", "param", "code"}}``, never a bare 500 or HTML.
- **Bounded work per request.** ``max_tokens`` is capped at what the context leaves (``default_max_tokens`` when the
  client sends none).
- **Greedy by default**: temperature 0 where the client sends none (llama.cpp's server also gets repeat penalty 1): the
  sampling every lab measured with, so the desk's model answers as it did in Lab 03.
- **A bounded queue.** ``in_flight`` requests at the server, ``waiting`` more wait up to ``queue_s``; past that a 429
  with ``Retry-After`` (the queue is full) or a 503 with ``Retry-After`` (waited too long), never a timeout.
- **A client that hangs up stops its generation.** The gateway always asks the server for a stream and closes it when
  its client goes away (``transformers serve`` cancels the generation then); a non-streaming reply is assembled here.
- **The reply names the model the client asked for.**
- **An access log** where the caller asks for one (``access_log``; `bash kit serve` prints it): time, method, route, status
  and seconds per answer, never the messages (they hold customers' personal data).
"""
from __future__ import annotations

import http.client
import json
import math
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .server import HOST, quiet_http_server, read_body

ROUTES_GET = ("/v1/models", "/health")
ROUTES_POST = ("/v1/chat/completions", "/v1/completions")
ROLES = ("system", "user", "assistant", "tool", "developer")


@dataclass
class Limits:
    """What one request may take, and how many may wait (see the module's docstring)."""

    context: int = 2048
    max_body_bytes: int = 1_000_000
    in_flight: int = 4
    waiting: int = 16
    queue_s: float = 30.0
    default_max_tokens: int = 512
    defaults: dict = field(default_factory=lambda: {"temperature": 0.0})
    count_tokens: Callable[[object], int] | None = None  # messages (a list) or a prompt (a string) -> tokens

    @classmethod
    def for_plan(cls, plan, model_dir: str | Path | None, engine: str = "transformers", replicas: int = 1) -> "Limits":
        """The plan's context; ``plan.batch`` requests at each server (a fleet: at each replica), four times as many
        waiting; the model's tokenizer to count prompts; greedy defaults for ``engine``."""
        defaults = {"temperature": 0.0}
        if engine == "llamacpp":  # its server samples at 0.8 with repeat penalty 1.1 unless told otherwise
            defaults["repeat_penalty"] = 1.0
        per_server = max(1, int(getattr(plan, "batch", 4) or 4))
        return cls(context=int(getattr(plan, "context", 2048) or 2048), in_flight=per_server * replicas,
                   waiting=4 * per_server * replicas, defaults=defaults, count_tokens=token_counter(model_dir))


def token_counter(model_dir: str | Path | None) -> Callable[[object], int] | None:
    """Counts a request's prompt tokens as the server will: the chat template over ``messages``, or the plain text of a
    completion's ``prompt``. None when the folder has no tokenizer (the gateway then estimates 1 token per 3 bytes)."""
    if model_dir is None:
        return None
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    except Exception:  # noqa: BLE001 - a folder without a tokenizer: the estimate serves
        return None

    def count(prompt) -> int:
        if isinstance(prompt, str):
            return len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        messages = [{"role": m["role"], "content": _text(m.get("content"))} for m in prompt]
        try:
            return len(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
        except Exception:  # noqa: BLE001 - a template that refuses this turn order: count the words themselves
            return sum(len(tokenizer(m["content"], add_special_tokens=False)["input_ids"]) + 4 for m in messages)

    return count


def _text(content) -> str:
    """A message's content as text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


class RequestRefused(Exception):
    """A request answered with an error before any work: HTTP status, OpenAI error type, the message, the field."""

    def __init__(self, status: int, kind: str, message: str, param: str | None = None, code: str | None = None,
                 retry_after: int | None = None):
        super().__init__(message)
        self.status, self.kind, self.message, self.param, self.code, self.retry_after = status, kind, message, param, code, retry_after


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate(data, path: str, limits: Limits) -> tuple[dict, int]:
    """The request body as the server gets it (defaults filled, ``max_tokens`` capped), and its prompt tokens; raises
    :class:`RequestRefused` (400) naming the field and what it takes."""
    bad = lambda message, param=None, code=None: RequestRefused(400, "invalid_request_error", message, param, code)  # noqa: E731
    if not isinstance(data, dict):
        raise bad("the request body must be a JSON object")
    data = dict(data)
    if path == "/v1/chat/completions":
        messages = data.get("messages")
        if messages is None:
            raise bad("'messages' is missing: send a list of {role, content} objects", "messages")
        if not isinstance(messages, list) or not messages:
            raise bad("'messages' must be a non-empty list of {role, content} objects", "messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                raise bad(f"messages[{i}] needs a role ({', '.join(ROLES[:3])})", f"messages[{i}].role")
            content = message.get("content")
            if not (isinstance(content, str) or (isinstance(content, list) and all(isinstance(p, dict) for p in content))):
                raise bad(f"messages[{i}].content must be text", f"messages[{i}].content")
        prompt = messages
    else:
        prompt = data.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = data["prompt"] = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise bad("'prompt' must be a non-empty string", "prompt")
    if "n" in data:
        if data["n"] != 1 or not _whole(data["n"]):
            raise bad(f"n = {json.dumps(data['n'])}: this server makes one choice per request; send n separate requests", "n")
        del data["n"]
    if "stream" in data and not isinstance(data["stream"], bool):
        raise bad("'stream' must be true or false", "stream")
    if "temperature" in data and data["temperature"] is not None and not (_number(data["temperature"]) and 0 <= data["temperature"] <= 2):
        raise bad("'temperature' must be a number from 0 to 2", "temperature")
    if "top_p" in data and data["top_p"] is not None and not (_number(data["top_p"]) and 0 < data["top_p"] <= 1):
        raise bad("'top_p' must be a number above 0 and at most 1", "top_p")
    asked = None
    for key in ("max_completion_tokens", "max_tokens"):
        value = data.pop(key, None)
        if value is None:
            continue
        if not _whole(value) or value < 1:
            raise bad(f"'{key}' must be a whole number of at least 1 (got {json.dumps(value)[:40]})", key)
        asked = value if asked is None else min(asked, value)
    tokens = limits.count_tokens(prompt) if limits.count_tokens else len(json.dumps(prompt).encode()) // 3
    room = limits.context - tokens
    if room < 1:
        raise bad(f"the prompt is {tokens:,} tokens and this server's context is {limits.context:,} (prompt and reply "
                  "together): shorten it", "messages" if path.endswith("chat/completions") else "prompt", "context_length_exceeded")
    data["max_tokens"] = min(asked or limits.default_max_tokens, room)
    for key, value in limits.defaults.items():
        if data.get(key) is None:
            data[key] = value
    return data, tokens


class Gateway:
    """The front on ``port`` for the server on ``backend_port`` (see the module's docstring). ``name`` is the model's
    name for clients, ``backend_model`` the server's; ``health``: a callable saying whether the server is up;
    ``access_log``: called with one line per answer (time, method, route, status, seconds to the answer's start), never
    what the request or the reply said: a support desk's messages hold personal data."""

    def __init__(self, port: int, backend_port: int, name: str, backend_model: str, limits: Limits | None = None,
                 health: Callable[[], bool] | None = None, access_log: Callable[[str], None] | None = None):
        from http.server import BaseHTTPRequestHandler

        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def log_request(self, code="-", size="-"):  # send_response calls it once per answer
                if gateway.access_log is not None:
                    route = self.path.split("?")[0] if self.path.split("?")[0] in ROUTES_GET + ROUTES_POST else "(other)"
                    took = time.monotonic() - getattr(self, "began", time.monotonic())
                    status = int(code) if str(getattr(code, "value", code)).isdigit() else code
                    gateway.access_log(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {self.command} {route} {status} {took:.2f}s")

            def do_GET(self):
                self.began = time.monotonic()
                gateway._get(self)

            def do_POST(self):
                self.began = time.monotonic()
                gateway._post(self)

            def _refuse_method(self):
                gateway._error(self, RequestRefused(405, "invalid_request_error", f"{self.command} is not served here"))

            do_PUT = do_DELETE = do_PATCH = do_HEAD = _refuse_method

        self.name, self.backend_model, self.backend_port = name, backend_model, backend_port
        self.limits, self.health, self.access_log = limits or Limits(), health, access_log
        self._slots = threading.Semaphore(self.limits.in_flight)
        self._lock = threading.Lock()
        self.waiting = 0
        self.counts = {"answered": 0, "refused": 0, "queue full": 0, "queue timeout": 0, "cancelled": 0, "server errors": 0}
        self._durations: list[float] = []
        self.server = quiet_http_server((HOST, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        # stop() waits for the serving loop to notice: it looks every 0.05 s (the default 0.5 s made every stop half a second)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> "Gateway":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    # ---------------------------------------------------------------- answers
    def _send(self, handler, status: int, body: dict, headers: dict | None = None) -> None:
        payload = json.dumps(body).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            for key, value in (headers or {}).items():
                handler.send_header(key, str(value))
            handler.end_headers()
            handler.wfile.write(payload)
        except OSError:
            pass  # the client has gone

    def _error(self, handler, refused: RequestRefused) -> None:
        with self._lock:
            self.counts["refused"] += 1
        headers = {"Retry-After": refused.retry_after} if refused.retry_after else {}
        if refused.status in (400, 404, 405, 413):
            handler.close_connection = True  # what the client sent may not all have been read
        self._send(handler, refused.status, {"error": {"message": refused.message, "type": refused.kind,
                                                      "param": refused.param, "code": refused.code}}, headers)

    def _get(self, handler) -> None:
        path = handler.path.split("?")[0].rstrip("/")
        if path == "/v1/models":
            created = int(time.time())
            names = list(dict.fromkeys((self.name, self.backend_model)))
            return self._send(handler, 200, {"object": "list", "data": [{"id": n, "object": "model", "created": created,
                                                                         "owned_by": "own-the-stack"} for n in names]})
        if path == "/health":
            up = self.health() if self.health is not None else self._backend_answers()
            return self._send(handler, 200 if up else 503, {"status": "ok" if up else "down"})
        self._error(handler, RequestRefused(404, "not_found_error", f"{path or '/'} is not served here; the routes are "
                                                                   f"{', '.join(ROUTES_GET + ROUTES_POST)}"))

    def _backend_answers(self) -> bool:
        try:
            with socket.create_connection((HOST, self.backend_port), timeout=1):
                return True
        except OSError:
            return False

    def _retry_after(self) -> int:
        """Seconds until a slot is likely free: the recent requests' mean time times the queue ahead, per slot."""
        recent = self._durations[-20:]
        mean = sum(recent) / len(recent) if recent else 2.0
        return max(1, min(60, math.ceil(mean * (self.waiting + 1) / self.limits.in_flight)))

    def _read(self, handler) -> bytes:
        length = handler.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > self.limits.max_body_bytes:
            raise RequestRefused(413, "invalid_request_error", f"the request is {int(length):,} bytes; this server takes at "
                                 f"most {self.limits.max_body_bytes:,}: shorten the messages", code="request_too_large")
        body = read_body(handler)
        if len(body) > self.limits.max_body_bytes:
            raise RequestRefused(413, "invalid_request_error", f"the request is over {self.limits.max_body_bytes:,} bytes: "
                                 "shorten the messages", code="request_too_large")
        return body

    def _post(self, handler) -> None:
        path = handler.path.split("?")[0].rstrip("/")
        started = time.monotonic()
        try:
            if path not in ROUTES_POST:
                raise RequestRefused(404, "not_found_error", f"{path or '/'} is not served here; the routes are "
                                     f"{', '.join(ROUTES_GET + ROUTES_POST)}")
            body = self._read(handler)
            try:
                data = json.loads(body or b"null")
            except ValueError:
                raise RequestRefused(400, "invalid_request_error", "the request body is not valid JSON") from None
            asked = data.get("model") if isinstance(data, dict) else None
            if asked is not None and asked not in (self.name, self.backend_model):
                raise RequestRefused(404, "invalid_request_error", f"model {str(asked)[:80]!r} is not served here; this "
                                     f"server serves {self.name!r}", "model", "model_not_found")
            data, prompt_tokens = validate(data, path, self.limits)
            self._take_slot(handler)
        except RequestRefused as refused:
            return self._error(handler, refused)
        except _ClientGone:
            with self._lock:
                self.counts["cancelled"] += 1
            return
        try:
            self._relay(handler, path, data, asked or self.name, prompt_tokens)
        finally:
            self._slots.release()
            with self._lock:
                self._durations = self._durations[-50:] + [time.monotonic() - started]

    def _take_slot(self, handler) -> None:
        if self._slots.acquire(blocking=False):
            return
        with self._lock:
            if self.waiting >= self.limits.waiting:
                self.counts["queue full"] += 1
                raise RequestRefused(429, "rate_limit_error", f"the server is busy ({self.limits.in_flight} requests running, "
                                     f"{self.waiting} waiting): retry after the seconds in Retry-After",
                                     code="queue_full", retry_after=self._retry_after())
            self.waiting += 1
        try:
            deadline = time.monotonic() + self.limits.queue_s
            while not self._slots.acquire(timeout=0.25):
                if _client_gone(handler):
                    raise _ClientGone()
                if time.monotonic() > deadline:
                    with self._lock:
                        self.counts["queue timeout"] += 1
                    raise RequestRefused(503, "server_error", f"waited {self.limits.queue_s:.0f} s for the server without a "
                                         "turn: retry after the seconds in Retry-After", code="queue_timeout",
                                         retry_after=self._retry_after())
        finally:
            with self._lock:
                self.waiting -= 1

    # ---------------------------------------------------------------- relaying
    def _relay(self, handler, path: str, data: dict, name: str, prompt_tokens: int) -> None:
        """Ask the server for a stream; pass it on (``stream``) or assemble one reply; stop when the client goes. A reply
        not yet begun for the client is asked again (twice, 0.5 s apart) when the server's connection fails, it answers a 5xx
        or its stream breaks off before the client saw any of it: behind a fleet's router that reaches another replica;
        behind one server, the last error comes back."""
        streamed = bool(data.get("stream"))
        wants_usage = bool((data.get("stream_options") or {}).get("include_usage")) if isinstance(data.get("stream_options"), dict) else False
        forwarded = json.dumps({**data, "model": self.backend_model, "stream": True,
                                "stream_options": {"include_usage": True}}).encode()  # usage counted by the server itself
        failure = "no answer"
        for attempt in range(UPSTREAM_TRIES):
            if attempt:
                time.sleep(0.5)
            connection = http.client.HTTPConnection(HOST, self.backend_port, timeout=600)
            try:
                try:
                    connection.request("POST", path, body=forwarded, headers={"Content-Type": "application/json"})
                    response = connection.getresponse()
                except (OSError, http.client.HTTPException) as error:
                    failure = f"the local server is not answering ({type(error).__name__}): it may be restarting"
                    continue
                if response.status >= 500 and attempt + 1 < UPSTREAM_TRIES:  # a replica that just died: ask again
                    response.read(100_000)
                    failure = f"the local server answered {response.status}"
                    continue
                if response.status != 200:
                    return self._pass_error(handler, response)
                if streamed:
                    return self._stream(handler, response, name, wants_usage)
                return self._assemble(handler, response, path, name, prompt_tokens)
            except _ClientGone:
                with self._lock:
                    self.counts["cancelled"] += 1
                return
            except _Broken as broken:
                failure = str(broken)
            finally:
                connection.close()  # a client gone: closing the stream is what stops the server's generation
        with self._lock:
            self.counts["server errors"] += 1
        self._error(handler, RequestRefused(502, "server_error", failure, code="upstream_down", retry_after=5))

    def _pass_error(self, handler, response) -> None:
        text = response.read(100_000)
        with self._lock:
            self.counts["server errors"] += 1
        try:
            body = json.loads(text)
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                return self._send(handler, response.status, body)
            detail = body.get("detail") if isinstance(body, dict) else None
            message = json.dumps(detail)[:300] if detail is not None else text.decode(errors="replace")[:300]
        except ValueError:
            message = text.decode(errors="replace")[:300]
        status = 400 if response.status == 422 else response.status
        kind = "invalid_request_error" if status < 500 else "server_error"
        self._error(handler, RequestRefused(status, kind, f"the local server refused the request ({response.status}): {message}"))

    def _events(self, response, handler):
        """The server's stream as (payload text, parsed JSON or None for ``[DONE]``), always ending with ``[DONE]`` (some
        servers, transformers serve among them, end with the chunk that carries ``finish_reason``); raises
        :class:`_ClientGone` when the client has left and :class:`_Broken` when the stream ends before a finish."""
        finished = False
        while True:
            try:
                line = response.readline()
            except (OSError, http.client.HTTPException) as error:
                raise _Broken(f"the local server's reply broke off ({type(error).__name__})") from None
            if not line:
                if finished:
                    yield "[DONE]", None
                    return
                raise _Broken("the local server's reply broke off before its end")
            if _client_gone(handler):
                raise _ClientGone()
            text = line.decode(errors="replace").strip()
            if not text.startswith("data:"):
                continue
            payload = text[5:].strip()
            if payload == "[DONE]":
                yield payload, None
                return
            try:
                event = json.loads(payload)
            except ValueError:
                continue
            if isinstance(event, dict):
                finished = finished or any(isinstance(c, dict) and c.get("finish_reason") for c in event.get("choices") or [])
            yield payload, event

    def _stream(self, handler, response, name: str, wants_usage: bool = False) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        try:
            for payload, event in self._events(response, handler):
                if isinstance(event, dict) and event.get("usage") and not event.get("choices") and not wants_usage:
                    continue  # a usage-only chunk the client did not ask for (code reading choices[0] would fail on it)
                if isinstance(event, dict) and "model" in event:
                    event["model"] = name
                    payload = json.dumps(event)
                chunk = f"data: {payload}\n\n".encode()
                handler.wfile.write(f"{len(chunk):X}\r\n".encode() + chunk + b"\r\n")
                handler.wfile.flush()
            handler.wfile.write(b"0\r\n\r\n")
            with self._lock:
                self.counts["answered"] += 1
        except _Broken:  # the client's stream has begun: it ends here, short (the client sees no [DONE])
            with self._lock:
                self.counts["server errors"] += 1
            try:
                handler.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
        except OSError:
            raise _ClientGone() from None

    def _assemble(self, handler, response, path: str, name: str, prompt_tokens: int) -> None:
        parts, finish, usage, first = [], None, None, None
        for _, event in self._events(response, handler):
            if not isinstance(event, dict):
                continue
            if isinstance(event.get("error"), dict):
                with self._lock:
                    self.counts["server errors"] += 1
                return self._send(handler, 502, event)
            first = first or event
            usage = event.get("usage") or usage
            for choice in event.get("choices") or []:
                delta = choice.get("delta") or {}
                parts.append(delta.get("content") or choice.get("text") or "")
                finish = choice.get("finish_reason") or finish
        text = "".join(parts)
        if not usage:
            completion = self.limits.count_tokens(text) if self.limits.count_tokens else len(text.encode()) // 3
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}
        chat = path.endswith("chat/completions")
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish or "stop", "logprobs": None}
                  if chat else {"index": 0, "text": text, "finish_reason": finish or "stop", "logprobs": None})
        first = first or {}
        self._send(handler, 200, {"id": first.get("id", f"ots-{time.time_ns()}"), "object": "chat.completion" if chat else "text_completion",
                                  "created": first.get("created", int(time.time())), "model": name, "choices": [choice], "usage": usage})
        with self._lock:
            self.counts["answered"] += 1


UPSTREAM_TRIES = 3


class _Broken(Exception):
    """The server's connection failed or its stream ended early: nothing was sent to the client yet."""


class _ClientGone(Exception):
    """The client closed its connection: the request is dropped and its generation stopped."""


def _client_gone(handler) -> bool:
    """Whether the client hung up: its socket reads as closed (a live client that sent everything reads as idle)."""
    sock = handler.connection
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


class GatedServer:
    """A :class:`~helpers.bench.server.LocalServer` behind a :class:`Gateway`: what Lab 05 and ``bash kit serve`` start.
    Clients get the gateway's address (:attr:`base_url`) and the name they asked for (:attr:`model`); the server's process
    listens on a port of its own. Everything else (``engine``, ``label``, ``command``, ``log_tail``...) is the server's.
    ``stop()`` stops both; ``start()`` starts both again on the same ports (Lab 05's outage)."""

    def __init__(self, server, name: str | None = None, limits: Limits | None = None, port: int | None = None,
                 access_log: Callable[[str], None] | None = None):
        from .server import free_port

        self.server, self.limits, self.access_log = server, limits or Limits(), access_log
        self.name = name or server.model
        self.port = port or free_port()
        self.gateway: Gateway | None = None

    @classmethod
    def for_plan(cls, plan, model_dir: str | Path, name: str | None = None, port: int | None = None,
                 access_log: Callable[[str], None] | None = None, **options) -> "GatedServer":
        """The plan's server for ``model_dir`` (:meth:`LocalServer.for_plan <helpers.bench.server.LocalServer.for_plan>`,
        ``options`` go there) behind a gateway on ``port`` with the plan's limits; ``name`` is the model's name for
        clients (the server's own id by default); ``access_log`` as :class:`Gateway`'s."""
        from .server import LocalServer

        options.pop("served_name", None)
        server = LocalServer.for_plan(plan, model_dir, **options)
        return cls(server, name, Limits.for_plan(plan, model_dir, server.engine), port, access_log)

    def start(self) -> "GatedServer":
        if not self.server.alive():
            self.server.start()
        if self.gateway is None:
            self.gateway = Gateway(self.port, self.server.port, self.name, self.server.model, self.limits,
                                   health=self.server.healthy, access_log=self.access_log).start()
        return self

    def stop(self, *args, **kwargs) -> None:
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None
        self.server.stop(*args, **kwargs)

    @property
    def base_url(self) -> str:
        self.server.base_url  # noqa: B018 - a server its lifetime stopped starts again here (LocalServer.base_url)
        if self.gateway is None:
            self.start()
        return self.gateway.base_url

    @property
    def model(self) -> str:
        return self.name

    def alive(self) -> bool:
        return self.gateway is not None and self.server.alive()

    def __getattr__(self, attribute):
        if attribute == "server":  # not yet set (copy, pickle): no recursion through __getattr__
            raise AttributeError(attribute)
        return getattr(self.server, attribute)

    def __enter__(self) -> "GatedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
