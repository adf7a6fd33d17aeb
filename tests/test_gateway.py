"""The gateway in front of `bash kit serve` and `bash kit fleet` (helpers.bench.gateway), against a stand-in server that
streams like `transformers serve` (chunks, then a last chunk with finish_reason and usage, no [DONE]) and records what it
was sent and whether its client hung up. Everything on 127.0.0.1; every server here is stopped by its test."""
import http.client
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers.bench.gateway import Gateway, Limits

HOST = "127.0.0.1"


class StreamingServer:
    """Streams ``chunks`` words, ``delay`` s apart; ``break_after``: cut the connection after that many (``breaks``
    times); ``status``: answer that status with ``error_body`` instead."""

    def __init__(self, chunks=4, delay=0.0, break_after=None, breaks=10**6, status=200, error_body=b""):
        self.chunks, self.delay, self.break_after, self.breaks = chunks, delay, break_after, breaks
        self.status, self.error_body = status, error_body
        self.bodies, self.written, self.cancelled = [], [], 0
        self.lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with backend.lock:
                    backend.bodies.append({"path": self.path, **body})
                if backend.status != 200:
                    self.send_response(backend.status)
                    self.send_header("Content-Length", str(len(backend.error_body)))
                    self.end_headers()
                    self.wfile.write(backend.error_body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                sent = 0
                try:
                    for i in range(backend.chunks):
                        if backend.break_after is not None and i == backend.break_after and backend.breaks > 0:
                            backend.breaks -= 1
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        time.sleep(backend.delay)
                        event = {"id": "x1", "created": 1, "model": "server-name", "choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}]}
                        self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                        self.wfile.flush()
                        sent += 1
                    final = {"id": "x1", "created": 1, "model": "server-name", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 7, "completion_tokens": backend.chunks, "total_tokens": 7 + backend.chunks}}
                    self.wfile.write(f"data: {json.dumps(final)}\n\n".encode())
                    self.wfile.flush()
                except OSError:
                    with backend.lock:
                        backend.cancelled += 1
                finally:
                    with backend.lock:
                        backend.written.append(sent)

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def words(prompt):
    return len(prompt.split()) if isinstance(prompt, str) else sum(len(m["content"].split()) + 3 for m in prompt)


@pytest.fixture
def front():
    """A gateway (context 100 tokens, 2 at a time, 2 waiting) in front of a stand-in server; both stopped after."""
    started = []

    def make(backend=None, **limits):
        backend = backend or StreamingServer()
        gateway = Gateway(0, backend.port, "desk-model", "server-name",
                          Limits(**{"context": 100, "in_flight": 2, "waiting": 2, "queue_s": 5.0, "count_tokens": words, **limits})).start()
        started.append((gateway, backend))
        return gateway, backend

    yield make
    for gateway, backend in started:
        gateway.stop()
        backend.stop()


def post(gateway, body, path="/v1/chat/completions", timeout=30):
    connection = http.client.HTTPConnection(HOST, gateway.port, timeout=timeout)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    connection.request("POST", path, body=data, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    raw = response.read()
    connection.close()
    return response.status, dict(response.getheaders()), raw


def ok_body(**extra):
    return {"model": "desk-model", "messages": [{"role": "user", "content": "where is my parcel"}], **extra}


@pytest.mark.parametrize("body, field", [
    ({"model": "desk-model"}, "messages"),
    ({"model": "desk-model", "messages": []}, "messages"),
    ({"model": "desk-model", "messages": "hello"}, "messages"),
    ({"model": "desk-model", "messages": [{"content": "hi"}]}, "messages[0].role"),
    ({"model": "desk-model", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    (ok_body(max_tokens=0), "max_tokens"),
    (ok_body(max_tokens=-1), "max_tokens"),
    (ok_body(max_tokens="ten"), "max_tokens"),
    (ok_body(max_tokens=True), "max_tokens"),
    (ok_body(max_completion_tokens=2.5), "max_completion_tokens"),
    (ok_body(temperature=-0.1), "temperature"),
    (ok_body(temperature="hot"), "temperature"),
    (ok_body(top_p=0), "top_p"),
    (ok_body(n=2), "n"),
    (ok_body(stream="yes"), "stream"),
    ([1, 2], None),
])
def test_a_bad_request_is_a_400_in_openais_shape_and_never_reaches_the_server(front, body, field):
    gateway, backend = front()
    status, headers, raw = post(gateway, body)
    error = json.loads(raw)["error"]
    assert status == 400 and headers["Content-Type"] == "application/json", raw
    assert error["type"] == "invalid_request_error" and error["param"] == field and error["message"]
    assert backend.bodies == []


def test_not_json_too_big_too_long_unknown_model_and_other_routes_are_refused_clearly(front):
    gateway, backend = front()
    assert post(gateway, b"{not json")[0] == 400
    status, _, raw = post(gateway, b"x" * 1_100_000)
    assert status == 413 and json.loads(raw)["error"]["code"] == "request_too_large"
    long = {"model": "desk-model", "messages": [{"role": "user", "content": "word " * 200}]}
    status, _, raw = post(gateway, long)
    assert status == 400 and json.loads(raw)["error"]["code"] == "context_length_exceeded" and "100" in json.loads(raw)["error"]["message"]
    status, _, raw = post(gateway, {**ok_body(), "model": "gpt-4o"})
    assert status == 404 and json.loads(raw)["error"]["code"] == "model_not_found" and "desk-model" in json.loads(raw)["error"]["message"]
    for path in ("/reset", "/load_model", "/v1/responses"):
        status, _, raw = post(gateway, ok_body(), path=path)
        assert status == 404 and "not served here" in json.loads(raw)["error"]["message"]
    connection = http.client.HTTPConnection(HOST, gateway.port, timeout=5)
    connection.request("GET", "/docs")
    response = connection.getresponse()
    assert response.status == 404 and json.loads(response.read())["error"]
    assert backend.bodies == []


def test_the_server_gets_greedy_bounded_requests_and_the_reply_names_the_model_asked_for(front):
    gateway, backend = front()
    status, _, raw = post(gateway, ok_body(max_tokens=10**6, n=1))
    reply = json.loads(raw)
    assert status == 200 and reply["model"] == "desk-model" and reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"]["content"] == "w0 w1 w2 w3 " and reply["choices"][0]["finish_reason"] == "stop"
    assert reply["usage"] == {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
    sent = backend.bodies[-1]
    prompt = words([{"role": "user", "content": "where is my parcel"}])
    assert sent["temperature"] == 0.0 and sent["max_tokens"] == 100 - prompt and sent["stream"] is True
    assert sent["model"] == "server-name" and "n" not in sent
    post(gateway, ok_body(max_completion_tokens=5, temperature=0.7))
    assert backend.bodies[-1]["max_tokens"] == 5 and backend.bodies[-1]["temperature"] == 0.7
    assert "max_completion_tokens" not in backend.bodies[-1]
    post(gateway, ok_body())
    assert backend.bodies[-1]["max_tokens"] == min(512, 100 - prompt)


def test_llamacpps_server_also_gets_repeat_penalty_1():
    assert Limits.for_plan(None, None, "llamacpp").defaults == {"temperature": 0.0, "repeat_penalty": 1.0}
    assert Limits.for_plan(None, None, "transformers").defaults == {"temperature": 0.0}


def test_a_streamed_reply_passes_chunk_by_chunk_with_the_asked_name_and_ends_with_done(front):
    gateway, _ = front()
    status, headers, raw = post(gateway, ok_body(stream=True))
    events = [line[5:].strip() for line in raw.decode().splitlines() if line.startswith("data:")]
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    assert events[-1] == "[DONE]" and len(events) == 4 + 2
    assert all(json.loads(e)["model"] == "desk-model" for e in events[:-1])


def test_a_full_queue_answers_429_and_a_long_wait_503_both_with_retry_after(front):
    gateway, backend = front(StreamingServer(chunks=4, delay=0.25), in_flight=1, waiting=1, queue_s=30)
    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(lambda _: post(gateway, ok_body()), range(5)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200, 200, 429, 429, 429], statuses
    for status, headers, raw in results:
        if status == 429:
            assert int(headers["Retry-After"]) >= 1 and json.loads(raw)["error"]["code"] == "queue_full"
    gateway, backend = front(StreamingServer(chunks=4, delay=0.5), in_flight=1, waiting=4, queue_s=0.5)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: post(gateway, ok_body()), range(2)))
    late = [r for r in results if r[0] == 503]
    assert len(late) == 1 and int(late[0][1]["Retry-After"]) >= 1 and json.loads(late[0][2])["error"]["code"] == "queue_timeout"


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_hangs_up_stops_its_generation(front, stream):
    gateway, backend = front(StreamingServer(chunks=60, delay=0.05))
    client = socket.create_connection((HOST, gateway.port))
    body = json.dumps(ok_body(stream=stream)).encode()
    client.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    time.sleep(0.4)
    client.close()
    deadline = time.monotonic() + 5
    while not backend.written and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.written and backend.written[0] < 30, backend.written  # 60 chunks would take 3 s
    assert backend.cancelled == 1 and gateway.counts["cancelled"] == 1


def test_a_broken_reply_is_asked_again_and_a_dead_server_is_a_json_502(front):
    gateway, backend = front(StreamingServer(chunks=4, break_after=2, breaks=1))
    status, _, raw = post(gateway, ok_body())
    assert status == 200 and json.loads(raw)["choices"][0]["message"]["content"] == "w0 w1 w2 w3 " and len(backend.bodies) == 2
    gateway, backend = front(StreamingServer(chunks=4, break_after=1))
    status, headers, raw = post(gateway, ok_body())
    assert status == 502 and json.loads(raw)["error"]["code"] == "upstream_down" and headers["Retry-After"] == "5"
    backend.stop()
    status, headers, raw = post(gateway, ok_body())
    assert status == 502 and headers["Content-Type"] == "application/json" and "not answering" in json.loads(raw)["error"]["message"]


def test_the_servers_own_refusal_comes_back_as_json(front):
    gateway, _ = front(StreamingServer(status=422, error_body=b'{"detail": "Unexpected fields in the request: {\'seed2\'}"}'))
    status, _, raw = post(gateway, ok_body())
    assert status == 400 and "Unexpected fields" in json.loads(raw)["error"]["message"]
    gateway, _ = front(StreamingServer(status=500, error_body=b"<html>Internal Server Error</html>"))
    status, _, raw = post(gateway, ok_body())
    assert status == 500 and json.loads(raw)["error"]["type"] == "server_error"


def test_the_access_log_has_a_line_per_answer_and_never_what_was_asked():
    """`bash kit serve` prints one line per request (time, method, route, status, seconds): what an operator needs
    to see a burst of 429s or a slow hour, and nothing of the messages, which hold customers' personal data."""
    backend = StreamingServer()
    lines = []
    gateway = Gateway(0, backend.port, "desk-model", "server-name", Limits(context=100, count_tokens=words),
                      access_log=lines.append).start()
    try:
        secret = "my card 4111 1111 1111 1111 was charged twice"
        assert post(gateway, ok_body(messages=[{"role": "user", "content": secret}]))[0] == 200
        assert post(gateway, ok_body(max_tokens=0))[0] == 400
        assert post(gateway, {}, "/reset?token=abc")[0] == 404
    finally:
        gateway.stop()
        backend.stop()
    assert len(lines) == 3, lines
    assert [line.split()[1:4] for line in lines] == [["POST", "/v1/chat/completions", "200"],
                                                     ["POST", "/v1/chat/completions", "400"], ["POST", "(other)", "404"]]
    assert all(line.split()[4].endswith("s") and float(line.split()[4][:-1]) >= 0 for line in lines)
    assert not any("4111" in line or "card" in line or "reset" in line or "abc" in line for line in lines)


def test_a_server_killed_mid_reply_cuts_the_stream_behind_the_name_proxy_without_a_traceback(capfd):
    """Lab 05's failover drill kills a replica mid-reply behind its name proxy; the proxy printed a traceback
    (IncompleteRead) into the learner's notebook. The reply is now cut off unfinished, which the router retries, quietly."""
    import socketserver

    from helpers.bench.server import NameProxy

    class Dies(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.recv(65536)
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"6\r\ndata: \r\n")  # one chunk, then the process is gone
            self.request.shutdown(socket.SHUT_RDWR)

    backend = socketserver.ThreadingTCPServer((HOST, 0), Dies)
    threading.Thread(target=backend.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    proxy = NameProxy(0, backend.server_address[1], "desk-model", "/models/desk").start()
    try:
        connection = http.client.HTTPConnection(HOST, proxy.server.server_address[1], timeout=10)
        connection.request("POST", "/v1/chat/completions", body=json.dumps(ok_body(stream=True)).encode(),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200
        with pytest.raises(http.client.IncompleteRead):  # cut off: no last chunk, so nobody takes it for a whole reply
            response.read()
        connection.close()
        time.sleep(0.3)
    finally:
        proxy.stop()
        backend.shutdown()
        backend.server_close()
    assert "Traceback" not in capfd.readouterr().err
