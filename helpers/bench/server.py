"""A local OpenAI-compatible server on loopback, started and stopped by the kit.

The default is ``transformers serve`` on a model folder (the embedded model's safetensors cache on
the CPU tier): the same weights Labs 00-03 load, behind the same wire format as the paid API. The
plan picks the server once (``Plan.server``): ``vllm serve`` on a big GPU where vLLM is installed,
llama.cpp's server for the embedded model's GGUF file when asked for (``OTS_PLAN='server=llamacpp'``),
``transformers serve`` everywhere else; ``LocalServer.for_plan`` builds the command from the plan.

    with LocalServer.for_plan(plan, model_dir) as server:   # picks a free port on 127.0.0.1
        engine = OpenAIEngine(server.base_url, server.model)

Guarantees: it listens on 127.0.0.1 only; start waits for a health check with a time limit and
reports the server's last log lines if it dies; a port already taken is a clear error naming the
fix; the process (and its children) is stopped on ``stop()``, on leaving the ``with`` block, at
interpreter exit, and by itself ``max_lifetime_s`` after it first answers.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import InputError, KitError

HOST = "127.0.0.1"


class ServerError(KitError):
    """The local server could not start or died."""


_PORTS_GIVEN: set[int] = set()


def quiet_http_server(address, handler):
    """A threading HTTP server for the kit's fronts that prints no traceback when a peer hangs up mid-request (a
    client gone, a server killed in a drill): those are counted and answered where they happen, and a traceback in a
    learner's notebook output reads as a crash. Any other error still prints."""
    from http.server import ThreadingHTTPServer

    class Quiet(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                return
            super().handle_error(request, client_address)

    return Quiet(address, handler)


def free_port() -> int:
    """A free port on loopback for a server the kit starts, drawn at random below the kernel's ephemeral range
    (32768-60999 on Linux). Asking the kernel for port 0 hands out ports from that range, the same one outgoing
    connections take their source ports from: a server restarted on its port could find it held by a client's
    connection, and a client connecting to a stopped server's port can land on itself (TCP's self-connect). Seen
    under two test workers: a router forwarding to a port another process had just been given."""
    import random

    for _ in range(200):
        port = random.SystemRandom().randrange(20000, 32000)  # not the seeded generator a test may have fixed
        if port in _PORTS_GIVEN:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
        _PORTS_GIVEN.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a crowded range: the kernel's choice
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((HOST, port)) == 0


def port_freed(port: int, seconds: float = 10.0) -> bool:
    """Whether ``port`` is free within ``seconds`` (a stopped process's socket closes a moment after it exits)."""
    deadline = time.monotonic() + seconds
    while port_in_use(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not port_in_use(port)


def serve_command(model_dir: str | Path, port: int, device: str = "cpu", dtype: str | None = None,
                  quantization: str | None = None) -> list[str]:
    """``transformers serve`` for ``model_dir`` on loopback (the CLI of the installed transformers), optionally at a
    dtype (``float16`` on a T4, which has no bf16) and with bitsandbytes quantization (``bnb-4bit``: NF4 with double
    quantization, as the kit's loader; ``bnb-8bit``)."""
    cli = Path(sys.executable).with_name("transformers")
    command = [str(cli) if cli.exists() else "transformers", "serve", str(model_dir), "--host", HOST, "--port", str(port),
               "--device", device]
    if dtype:
        command += ["--dtype", dtype]
    if quantization:
        command += ["--quantization", quantization]
    return command


def llamacpp_command(gguf: str | Path, port: int, model_name: str, context: int, threads: int) -> list[str]:
    """llama-cpp-python's OpenAI-compatible server for a GGUF file on loopback, answering to ``model_name`` (the
    name the other servers use for the same model, so client code does not change)."""
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", model_name, "--host", HOST,
            "--port", str(port), "--n_ctx", str(context), "--n_threads", str(threads),
            # its default interrupts the running request when another arrives: queue them instead, as a server should
            "--interrupt_requests", "False"]


# the plan's precision -> transformers serve's bitsandbytes option (it has no FP4: 4-bit is served as NF4)
SERVE_QUANTIZATION = {"nf4": "bnb-4bit", "fp4": "bnb-4bit", "int8": "bnb-8bit"}


def vllm_command(model_dir: str | Path, port: int, dtype: str, max_model_len: int, max_num_seqs: int,
                 gpu_memory_utilization: float, tensor_parallel: int = 1) -> list[str]:
    """``vllm serve`` for ``model_dir`` on loopback, sized by the plan: its dtype, context and batch, and the share
    of GPU memory vLLM may take for weights and its paged KV cache. The model name clients send is the folder's
    path, as with ``transformers serve``, so the same client code talks to either."""
    from ..hardware import vllm_cli

    return [vllm_cli() or "vllm", "serve", str(model_dir), "--host", HOST, "--port", str(port),
            "--served-model-name", str(model_dir), "--dtype", dtype, "--max-model-len", str(max_model_len),
            "--max-num-seqs", str(max_num_seqs), "--gpu-memory-utilization", f"{gpu_memory_utilization:.2f}"] + (
            ["--tensor-parallel-size", str(tensor_parallel)] if tensor_parallel > 1 else [])


# vLLM takes a fixed share of the GPU up front: the plan's estimate for one copy (weights + KV cache at its batch and context)
# with room for CUDA graphs and activations, never below a floor that leaves its KV cache some blocks, nor above
# vLLM's own default (0.9), so the lab's in-process model and a second server (Lab 04) can share the card
VLLM_HEADROOM, VLLM_MIN_SHARE, VLLM_MAX_SHARE = 1.3, 0.2, 0.9
INSTALL_FIX = {"transformers": "pip install 'transformers[serving]' (bash kit setup does)",
               "llamacpp": "pip install 'llama-cpp-python[server]', or OTS_PLAN='server=transformers'",
               "vllm": "pip install vllm on this CUDA machine, or OTS_PLAN='server=transformers' for transformers serve",
               "vllm-router": "pip install 'vllm-router>=0.1.17,<0.2' (bash kit setup installs it)"}


def _gpu_free_fraction(index: int = 0) -> float | None:
    """The share of GPU ``index``'s memory free right now (None without CUDA)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        free, total = torch.cuda.mem_get_info(index)
        return free / total
    except Exception:  # noqa: BLE001 - a driver that cannot say is not a reason to refuse: vLLM will say itself
        return None


def _embedded_gguf(model_dir: str | Path) -> Path | None:
    """The GGUF file to serve for ``model_dir``: the embedded model's own for its converted folder; for Lab 03's merged
    model, the file Lab 03 exported and proved beside it (``gguf_export.proven_gguf``); else None (transformers
    serve then serves the folder even where the plan chose llama.cpp)."""
    from ..finetune.gguf_export import proven_gguf
    from ..models import embedded_gguf_path, ensure_embedded

    gguf = embedded_gguf_path()
    if gguf is None or Path(model_dir).resolve() != ensure_embedded(progress=False).resolve():
        return proven_gguf(model_dir)
    return gguf


SERVED_OWNER = "own-the-stack"


def served_id(model_dir: str | Path, name: str | None = None) -> str:
    """The model id ``transformers serve`` knows a folder by: a repo id in the server's own temporary hub cache
    (``own-the-stack/<name>``), so its ``/v1/models`` lists the model it serves instead of an empty list."""
    import re

    text = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name or Path(model_dir).name)).strip("-.") or "model"
    return f"{SERVED_OWNER}/{text[:80]}"


def link_into_hub_cache(model_dir: str | Path, cache: str | Path, repo_id: str) -> Path:
    """Lay ``model_dir``'s files out as the hub cache lays out a download of ``repo_id`` (symbolic links, nothing
    copied), so an offline server loads the folder by that id and lists it."""
    base = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    revision = "0" * 40
    snapshot = base / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (base / "refs").mkdir(exist_ok=True)
    (base / "refs" / "main").write_text(revision)
    for item in Path(model_dir).resolve().iterdir():
        target = snapshot / item.name
        if not target.exists():
            target.symlink_to(item)
    return snapshot


# How long a lab's server runs after its first answer before it stops by itself (a kernel left open for days does
# not keep it; the server also dies with the kernel): longer than a learner's sitting, and it starts again on use.
LAB_LIFETIME_S = 3 * 3600.0
# How long a stopped server may take to finish its open requests before it is killed: a graceful stop that waits for
# clients (transformers serve ignores a second SIGTERM while it does) left 1 GB processes running for minutes
STOP_GRACE_S = 5.0


class LocalServer:
    """A server process on 127.0.0.1 (``command`` defaults to ``transformers serve <model_dir>``). A ``transformers
    serve`` of a folder serves it under :func:`served_id` (``served_name`` names it), listed by ``/v1/models``."""

    @classmethod
    def for_plan(cls, plan, model_dir: str | Path, **options) -> "LocalServer":
        """The plan's local server for ``model_dir``: ``vllm serve`` sized by the plan where it chose vLLM, llama.cpp's
        server on the embedded GGUF where it chose that (and ``model_dir`` is the embedded model), else ``transformers
        serve`` at the plan's device and precision. ``options`` go to the constructor (port, timeouts)."""
        port = options.pop("port", None) or free_port()
        gguf = _embedded_gguf(model_dir) if plan.server == "llamacpp" else None
        if gguf is not None:  # llama.cpp serves the embedded model's own GGUF file (its 4-bit weights, as shipped)
            threads = int((options.get("env") or {}).get("OMP_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
            command = llamacpp_command(gguf, port, str(model_dir), plan.context, threads)
            return cls(model_dir, port=port, device="cpu", command=command, engine="llamacpp", **options)
        if plan.server != "vllm":  # transformers serve at the plan's precision: the dtype it computes in, its quantization
            command = serve_command(model_dir, port, plan.device, dtype=plan.compute_dtype,
                                    quantization=SERVE_QUANTIZATION.get(plan.precision))
            return cls(model_dir, port=port, device=plan.device, command=command, **options)
        from ..hardware import USABLE_VRAM

        vram_gb = plan.memory_available_gb / USABLE_VRAM
        # the served copy (weights, KV cache, overhead), spread over the GPUs of a tensor-parallel group
        one_copy = (plan.model_memory_gb or plan.expected_memory_gb) / max(1, plan.tensor_parallel)
        share = min(VLLM_MAX_SHARE, max(VLLM_MIN_SHARE, VLLM_HEADROOM * one_copy / vram_gb))
        # vLLM takes its share of the whole card and refuses to start if that much is not free; a fleet's replica checks
        # the GPU it is given (CUDA_VISIBLE_DEVICES in its environment), the lowest of a tensor-parallel group
        visible = str((options.get("env") or {}).get("CUDA_VISIBLE_DEVICES", "0")).split(",")[0]
        free = _gpu_free_fraction(int(visible) if visible.isdigit() else 0)
        if free is not None and share > free - 0.02:
            raise ServerError(f"vLLM would take {share:.0%} of the GPU ({share * vram_gb:.1f} GB) but only {free:.0%} "
                              f"({free * vram_gb:.1f} GB) is free: the notebook's own model or another server holds the rest",
                              fix="stop the other server (server.stop()) or free the in-process model (del model; "
                                  "torch.cuda.empty_cache()), or serve with OTS_PLAN='server=transformers'")
        command = vllm_command(model_dir, port, plan.compute_dtype, plan.context, plan.batch, share, plan.tensor_parallel)
        # vLLM profiles memory and captures CUDA graphs before it answers: minutes on a 7B, not seconds
        options.setdefault("startup_timeout_s", 900.0)
        return cls(model_dir, port=port, device=plan.device, command=command, engine="vllm", **options)

    def __init__(self, model_dir: str | Path | None = None, port: int | None = None, device: str = "cpu",
                 command: list[str] | None = None, model_name: str | None = None, startup_timeout_s: float = 120.0,
                 max_lifetime_s: float = LAB_LIFETIME_S, health_path: str = "/v1/models", engine: str = "transformers",
                 env: dict[str, str] | None = None, served_name: str | None = None):
        if command is None and model_dir is None:
            raise InputError("no model folder to serve", fix="pass model_dir (e.g. helpers.models.ensure_embedded())")
        self.port = port or free_port()
        if port_in_use(self.port):
            raise ServerError(f"port {self.port} on {HOST} is already taken (another server, or a previous run still up)",
                              fix=f"pass port=None to pick a free port, or stop what listens there (lsof -i :{self.port})")
        self.model = model_name or str(model_dir)  # the name a request asks for (llama.cpp's alias, vLLM's folder path)
        self.engine = engine
        self.command = command or serve_command(model_dir, self.port, device)
        self._cache_link = None
        if (engine == "transformers" and model_dir is not None and len(self.command) > 2 and self.command[1] == "serve"
                and self.command[2] == str(model_dir) and model_name is None):
            # transformers serve lists only the hub cache's models: the folder goes into the server's own cache under
            # an id, which requests then ask for (and /v1/models lists)
            self.model = served_id(model_dir, served_name)
            self.command = [self.command[0], "serve", self.model, *self.command[3:]]
            self._cache_link = (Path(model_dir), self.model)
        self.expired = False  # stopped by its lifetime, not by a caller: the next use starts it again (base_url)
        self.startup_timeout_s, self.max_lifetime_s, self.health_path = startup_timeout_s, max_lifetime_s, health_path
        self.env = dict(env or {})  # added to the server's environment (a fleet's replica: its share of the CPU threads)
        self.process: subprocess.Popen | None = None
        self._log = None  # a log file per launch, removed when the server is stopped
        self._hub_cache = tempfile.mkdtemp(prefix="ots-hub-cache-")
        self._deadline: threading.Timer | None = None

    @property
    def label(self) -> str:
        """What serves here, in words ("transformers serve", "vLLM")."""
        from ..plan import SERVERS

        return SERVERS.get(self.engine, self.engine)

    @property
    def base_url(self) -> str:
        """The server's URL. A server its lifetime stopped (a lab left open for hours) starts again here, on the same
        port, with a line saying so: a lab's next cell finds it up instead of refused connections."""
        if self.expired and not self.alive():
            print(f"[kit] the local server had stopped after its {self.max_lifetime_s / 60:.0f}-minute limit (a forgotten "
                  "server does not run for days); starting it again on the same port", flush=True)
            self.expired = False
            self.start()
        return f"http://{HOST}:{self.port}/v1"

    def log_tail(self, lines: int = 15) -> str:
        if self._log is None:
            return ""
        try:
            return "\n".join(Path(self._log.name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self) -> "LocalServer":
        """Start the process and wait until it answers its health check (see :meth:`launch` and :meth:`wait_ready`)."""
        return self.launch().wait_ready()

    def launch(self) -> "LocalServer":
        """Start the process without waiting for it. Call it from the main thread where possible: the parent-death signal
        follows the thread that started the process, so only a server launched there stops when the kernel dies."""
        if shutil.which(self.command[0]) is None and not Path(self.command[0]).exists():
            raise ServerError(f"{self.command[0]!r} is not installed", fix=INSTALL_FIX.get(self.engine, INSTALL_FIX["transformers"]))
        # offline: no hub lookups; an existing cache folder (transformers serve's /v1/models needs one)
        os.makedirs(self._hub_cache, exist_ok=True)  # stop() removed it: a restarted server gets a fresh one
        if self._cache_link is not None and self.command[1:3] == ["serve", self._cache_link[1]]:
            link_into_hub_cache(self._cache_link[0], self._hub_cache, self._cache_link[1])
        env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=self._hub_cache, PYTHONUNBUFFERED="1", **self.env)
        if self._log is None:
            self._log = tempfile.NamedTemporaryFile("w+", prefix="ots-server-", suffix=".log", delete=False)
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                        # the parent-death signal follows the starting *thread*: only the main thread's
                                        preexec_fn=_die_with_parent if sys.platform.startswith("linux")
                                        and _outlives_its_servers(threading.current_thread()) else None)
        atexit.register(self.stop)
        self._launched = time.monotonic()
        return self

    def wait_ready(self) -> "LocalServer":
        """Wait until the launched server answers its health check; its log's last lines if it dies or takes too long."""
        deadline = getattr(self, "_launched", time.monotonic()) + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code, tail = self.process.returncode, self.log_tail()
                self.stop()
                raise ServerError(f"the server exited during start-up (exit code {code}); its last lines:\n{tail}",
                                  fix="read the lines above: a wrong model folder, a missing package or a taken port are the usual causes")
            if self.healthy():
                # the lifetime counts from the first answer: a slow start (a cold disk, a CUDA build of torch
                # importing for 5 s) does not eat the serving time, and start-up has its own limit above
                self._deadline = threading.Timer(self.max_lifetime_s, self._expire)
                self._deadline.daemon = True
                self._deadline.start()
                return self
            time.sleep(0.3)
        tail = self.log_tail()
        self.stop()
        raise ServerError(f"the server did not answer {self.health_path} within {self.startup_timeout_s:.0f} s; its last lines:\n{tail}",
                          fix="raise startup_timeout_s on a slow machine, or check the log above")

    def _expire(self) -> None:
        self.expired = True
        self.stop(expired=True)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.port}{self.health_path}", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, expired: bool = False, grace_s: float = STOP_GRACE_S) -> None:
        """Stop the process (its whole group): SIGTERM, then SIGKILL after ``grace_s`` (a server waiting on its open
        requests ignores a second SIGTERM for minutes). Its log file goes too. A caller's stop is final (``base_url``
        does not restart it)."""
        self.signal_stop(expired)
        self.finish_stop(grace_s)

    def signal_stop(self, expired: bool = False) -> None:
        """The first half of :meth:`stop`: SIGTERM sent, nothing waited for (a fleet signals every process, then waits
        once for all of them)."""
        if not expired:
            self.expired = False
        if self._deadline is not None:
            self._deadline.cancel()
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def finish_stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """The second half of :meth:`stop`: wait up to ``grace_s`` for the process, then SIGKILL its group; remove its
        temporary files."""
        if self.process is not None and self.process.poll() is None:
            try:
                self.process.wait(timeout=max(0.0, grace_s))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(timeout=10)
        shutil.rmtree(self._hub_cache, ignore_errors=True)
        if self._log is not None:
            self._log.close()
            try:
                os.unlink(self._log.name)
            except OSError:
                pass
            self._log = None

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _outlives_its_servers(thread: threading.Thread) -> bool:
    """Whether a server started from ``thread`` may die with it: the main thread, or a thread that lives as long as the
    servers it starts (a fleet's supervisor, marked ``ots_long_lived``). Linux sends the parent-death signal when the
    starting *thread* ends, so a server started from a short-lived thread would die with that thread."""
    return thread is threading.main_thread() or bool(getattr(thread, "ots_long_lived", False))


def _die_with_parent() -> None:
    """In the server's process, before it runs (Linux): SIGKILL when the process that started it dies, so a killed
    kernel or a killed ``bash kit serve`` never leaves a server holding the port and its memory. SIGKILL, not SIGTERM: a
    server with requests open waits for them on SIGTERM (minutes), and nobody is left to ask for those replies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def read_body(handler) -> bytes:
    """A request's body as ``http.server`` handlers get it: by Content-Length, or chunk by chunk where the client sends
    ``Transfer-Encoding: chunked`` (vllm-router does for long requests; reading only Content-Length there would leave
    the body in the socket to be misread as the next request)."""
    if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
        parts = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers, then the blank line
                    pass
                return b"".join(parts)
            parts.append(handler.rfile.read(size))
            handler.rfile.readline()  # the CRLF after each chunk
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


class NameProxy:
    """A thin front on 127.0.0.1 for a server that knows its model only by a folder path (``transformers serve``): it
    answers ``/v1/models`` with the model's catalog name (and the path), takes either name in a request, and passes
    everything else through unchanged, streamed responses chunk by chunk.

    For a fleet (``helpers.deploy.fleet``) it also answers ``/health`` from ``health`` (a callable: is the server
    behind it up) and removes ``drop_fields`` from request bodies: vllm-router adds sampling fields of its own to every
    request, which ``transformers serve`` refuses with a 422 (it accepts only the fields it knows)."""

    def __init__(self, port: int, backend_port: int, name: str, backend_model: str, drop_fields: frozenset = frozenset(),
                 health=None):
        from http.server import BaseHTTPRequestHandler

        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet: the backend's log is the server's log
                pass

            def do_GET(self):
                if self.path.rstrip("/") == "/v1/models":
                    return proxy._models(self)
                if self.path.rstrip("/") == "/health" and proxy.health is not None:
                    return proxy._health(self)
                proxy._forward(self, None)

            def do_POST(self):
                proxy._forward(self, read_body(self))

        self.name, self.backend_model, self.backend_port = name, backend_model, backend_port
        self.drop_fields, self.health = frozenset(drop_fields), health
        self.server = quiet_http_server((HOST, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> "NameProxy":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _models(self, handler) -> None:
        import json

        created = int(time.time())
        body = json.dumps({"object": "list", "data": [{"id": model, "object": "model", "created": created, "owned_by": "own-the-stack"}
                                                      for model in (self.name, self.backend_model)]}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _health(self, handler) -> None:
        up = bool(self.health())
        body = b'{"status":"ok"}' if up else b'{"status":"down"}'
        handler.send_response(200 if up else 503)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _forward(self, handler, body: bytes | None) -> None:
        import http.client
        import json

        if body:
            try:
                data = json.loads(body)
                if isinstance(data, dict) and (data.get("model") == self.name or self.drop_fields & data.keys()):
                    if data.get("model") == self.name:
                        data["model"] = self.backend_model
                    for key in self.drop_fields & data.keys():
                        del data[key]
                    body = json.dumps(data).encode()
            except ValueError:
                pass  # not JSON: the backend answers it as it would
        connection = http.client.HTTPConnection(HOST, self.backend_port, timeout=600)
        started = False
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("host", "content-length", "connection")}
            if body is not None:
                headers["Content-Length"] = str(len(body))
            connection.request(handler.command, handler.path, body=body, headers=headers)
            response = connection.getresponse()
            handler.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    handler.send_header(key, value)
            handler.send_header("Transfer-Encoding", "chunked")
            handler.send_header("Connection", "close")
            handler.end_headers()
            started = True
            while True:
                chunk = response.read1(65536) if hasattr(response, "read1") else response.read(65536)
                if not chunk:
                    break
                handler.wfile.write(f"{len(chunk):X}\r\n".encode() + chunk + b"\r\n")
                handler.wfile.flush()
            handler.wfile.write(b"0\r\n\r\n")
        except (OSError, http.client.HTTPException) as error:
            if started:  # the server died mid-reply: the reply is cut off unfinished (no last chunk), which the router
                handler.close_connection = True  # sees as a failed request and retries elsewhere; no traceback printed
                return
            try:  # JSON, as every answer of an OpenAI endpoint (send_error would write an HTML page)
                payload = json.dumps({"error": {"message": f"the local server did not answer ({type(error).__name__})",
                                                "type": "server_error", "param": None, "code": "upstream_down"}}).encode()
                handler.send_response(502)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(payload)))
                handler.end_headers()
                handler.wfile.write(payload)
            except OSError:
                pass
        finally:
            connection.close()
            handler.close_connection = True


def serving_command_line(prog: str, description: str, argv: list[str] | None, options=None):
    """What ``bash kit serve`` and ``bash kit fleet`` share: --port, --model and --minutes (``options`` adds more to the
    parser), the port checked free, the plan's Lab 05 model resolved to a folder, and SIGTERM / SIGHUP turned into
    Ctrl-C, so a supervisor or a closed terminal stops the servers too. Returns (args, plan, model key, folder)."""
    import argparse

    from ..models import ensure_embedded, resolve_model
    from ..plan import plan

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default=None, help="catalog key or hub id (default: the plan's model for Lab 05)")
    parser.add_argument("--minutes", type=float, default=60.0, help="stop by itself after this long (default 60)")
    if options is not None:
        options(parser)
    args = parser.parse_args(argv)
    p = plan("05")
    key = args.model or p.model
    folder = ensure_embedded(progress=True) if key == "smollm2-135m" else resolve_model(key).location

    def interrupted(signum, frame):  # SIGTERM (kill, a supervisor) and SIGHUP (a closed terminal) stop it like Ctrl-C:
        raise KeyboardInterrupt  # the server, in a session of its own, would otherwise outlive this process on the port

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupted)
    if port_in_use(args.port):
        raise ServerError(f"port {args.port} on {HOST} is already taken", fix=f"pass --port with a free port, or stop what listens there (lsof -i :{args.port})")
    return args, p, key, folder


def main(argv: list[str] | None = None) -> int:
    """``bash kit serve [--port N] [--model KEY] [--minutes M]``: the plan's local model on 127.0.0.1 until Ctrl-C
    or the time limit (Lab 05's local upstream outside a notebook), behind the kit's gateway
    (:mod:`helpers.bench.gateway`: checked requests, bounded work and queue, greedy defaults). Exits 1 with the server's
    last lines if the server dies."""
    from .gateway import GatedServer

    args, p, key, folder = serving_command_line("bash kit serve", main.__doc__, argv)
    # the server listens on a port of its own; the gateway answers on --port, so /v1/models names the model by its
    # catalog key and a client may ask for it by that name
    # one line per request on stderr (time, route, status, seconds), never what was asked or answered
    served = GatedServer.for_plan(p, folder, name=key, port=args.port, max_lifetime_s=args.minutes * 60,
                                  access_log=lambda line: print(line, file=sys.stderr, flush=True))
    server = served.server
    try:
        served.start()
        print(f"serving {key} with {server.label} at http://{HOST}:{args.port}/v1 (model name: {key}, or {server.model}; the "
              f"server itself on port {server.port}); stops after {args.minutes:g} min, on Ctrl-C, SIGTERM or SIGHUP", flush=True)
        while server.alive():
            time.sleep(1.0)
        if not server.expired:
            code = server.process.returncode if server.process is not None else None
            print(f"[kit] the server died (exit code {code}); its last lines:\n{server.log_tail()}\n"
                  "Start it again with bash kit serve; if it dies again, the lines above say why.", file=sys.stderr, flush=True)
            return 1
        print(f"[kit] stopped after its {args.minutes:g}-minute limit", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        served.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
