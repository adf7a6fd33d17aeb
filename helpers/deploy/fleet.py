"""The desk's fleet on loopback: several replicas of the plan's local server behind vllm-router.

10M conversations a month is more than one server. A fleet is N replicas of the same model and a load balancer in
front; the kit uses the one vLLM fleets use, **vllm-router** (a Rust binary from the package registry: policies
round_robin, power_of_two, cache_aware, ...; health checks, retries on another replica, a circuit breaker), not a
balancer of its own. Everything listens on 127.0.0.1 and stops by itself (``max_lifetime_s``), on ``stop()``, on
leaving a ``with`` block, at interpreter exit and when the process that started it dies.

    with Fleet.for_plan(plan, model_dir, replicas=2) as fleet:       # the router's URL is an OpenAI base_url
        OpenAI(base_url=fleet.base_url, api_key="-").chat.completions.create(model=fleet.model, ...)
        drill = failover(fleet, prompts)                             # a replica killed mid-load, then restarted
        policies = compare_policies(fleet, prompts, system=...)      # round_robin vs power_of_two vs cache_aware

Replicas of ``transformers serve`` sit behind a thin front each (:class:`~helpers.bench.server.NameProxy`): vllm-router
adds sampling fields to every request that ``transformers serve`` refuses, and the front answers the router's
``/health``. vLLM replicas take the router's requests as they are.

The capacity arithmetic (:func:`peak_requests_per_s`, :func:`replicas_needed`, :func:`capacity_table`) sizes the fleet
for the scenario's peak hour from a measured per-replica goodput, with one spare (N+1).
"""
from __future__ import annotations

import math
import os
import re
import signal
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, KitError

HOST = "127.0.0.1"
POLICIES = ("round_robin", "power_of_two", "cache_aware")
# fields vllm-router 0.1.17 adds to every chat request (its SGLang heritage); transformers serve answers 422 to them
ROUTER_ADDED_FIELDS = frozenset({"skip_special_tokens", "ignore_eos", "stream_reasoning", "separate_reasoning",
                                 "continue_final_message", "no_stop_trim", "return_hidden_states", "include_reasoning"})
# the router checks each replica every second; 2 failed checks take it out, 1 good one brings it back
HEALTH_INTERVAL_S, HEALTH_FAILURES, HEALTH_SUCCESSES = 1, 2, 1
# the fleet's supervisor looks every second; a dead replica is restarted up to 3 times in a row, waiting 1, 2, 4 s
SUPERVISE_EVERY_S, RESTARTS, RESTART_WAIT_S = 1.0, 3, 1.0
# the router's circuit breaker keeps a replica that failed out of the pool this long before it tries it again (its own
# default, 30 s, would leave a replica the supervisor restarted in 2 s idle for half a minute)
CIRCUIT_OPEN_S = 5


class FleetError(KitError):
    """The fleet could not start, or a replica did not come back."""


def _free() -> int:
    from ..bench.server import free_port

    return free_port()


def router_cli() -> str | None:
    """The ``vllm-router`` command beside this Python, or on PATH."""
    import shutil

    beside = Path(sys.executable).with_name("vllm-router")
    return str(beside) if beside.exists() else shutil.which("vllm-router")


def router_command(port: int, worker_urls: list[str], policy: str = "round_robin", metrics_port: int | None = None) -> list[str]:
    """vllm-router on 127.0.0.1 in front of ``worker_urls``: health checks every second, retries on another replica
    (its defaults), the circuit breaker on, its Prometheus metrics on ``metrics_port`` (loopback too)."""
    if policy not in POLICIES + ("random", "consistent_hash"):
        raise InputError(f"unknown routing policy {policy!r}", fix=f"use one of: {', '.join(POLICIES)}")
    if not worker_urls:
        raise InputError("a fleet with no replicas", fix="start at least one replica")
    command = [router_cli() or "vllm-router", "--host", HOST, "--port", str(port), "--worker-urls", *worker_urls,
               "--policy", policy, "--health-check-interval-secs", str(HEALTH_INTERVAL_S),
               "--health-failure-threshold", str(HEALTH_FAILURES), "--health-success-threshold", str(HEALTH_SUCCESSES),
               "--worker-startup-check-interval", "1", "--worker-startup-timeout-secs", "300",
               "--cb-timeout-duration-secs", str(CIRCUIT_OPEN_S), "--log-level", "warning"]
    if metrics_port:
        command += ["--prometheus-host", HOST, "--prometheus-port", str(metrics_port)]
    return command


# ---------------------------------------------------------------- replicas
class ServedReplica:
    """One replica: the plan's local server on a port of its own, behind a front (``transformers serve``, llama.cpp)
    or not (vLLM). ``kill()`` is a crash (SIGKILL, front gone); ``start()`` brings it back on the same port."""

    def __init__(self, plan, model_dir, name: str, port: int | None = None, max_lifetime_s: float = 1800.0, threads: int | None = None,
                 index: int = 0):
        from ..bench.server import free_port

        self.plan, self.model_dir, self.name, self.max_lifetime_s = plan, model_dir, name, max_lifetime_s
        if plan.device == "cuda":  # its own GPU, or its own group of GPUs for a tensor-parallel copy
            tp, gpus = max(1, plan.tensor_parallel), max(1, getattr(plan, "gpus", 1) or 1)
            first = (index * tp) % gpus  # more replicas than GPU groups (two on one GPU): they take the GPUs in turn
            self.env = {"CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in range(first, first + tp))}
        else:  # on a CPU the replicas share the cores: each gets its share of threads, not all of them (oversubscribed
            # threads spin against each other and every replica gets slower)
            self.env = {"OMP_NUM_THREADS": str(threads)} if threads else {}
        self.port = port or free_port()  # what the router sends to
        self.server = None
        self.front = None

    def start(self) -> "ServedReplica":
        return self.launch().ready()

    def launch(self) -> "ServedReplica":
        """Start the server's process, not waiting for it (the fleet launches every replica from the main thread, so each
        gets the parent-death signal, then waits for them together)."""
        from ..bench.server import LocalServer, free_port

        direct = self.plan.server == "vllm"  # vLLM takes the router's fields and answers /health itself
        named = {} if direct else {"served_name": self.name}  # transformers serve lists the model by the fleet's name
        self.server = LocalServer.for_plan(self.plan, self.model_dir, port=self.port if direct else free_port(),
                                           max_lifetime_s=self.max_lifetime_s, env=self.env, **named).launch()
        return self

    def ready(self) -> "ServedReplica":
        """Wait for the launched server, then open its front on the replica's port."""
        from ..bench.server import NameProxy

        self.server.wait_ready()
        if self.plan.server != "vllm":
            self.front = NameProxy(self.port, self.server.port, self.name, self.server.model, drop_fields=ROUTER_ADDED_FIELDS,
                                   health=self.server.healthy).start()
        return self

    @property
    def model(self) -> str:
        return self.name if self.front is not None else (self.server.model if self.server else self.name)

    @property
    def engine(self) -> str:
        return self.server.label if self.server else "-"

    def alive(self) -> bool:
        return self.server is not None and self.server.alive()

    def kill(self) -> None:
        """A crash, not a shutdown: SIGKILL to the server's process group, its front closed with the connections."""
        if self.server is not None and self.server.process is not None and self.server.process.poll() is None:
            try:
                os.killpg(self.server.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.server.process.wait(timeout=10)
        self.stop()

    def stop(self) -> None:
        if self.front is not None:
            self.front.stop()
            self.front = None
        if self.server is not None:
            self.server.stop()


# ---------------------------------------------------------------- the fleet
class Fleet:
    """``replicas`` copies of a server behind vllm-router; see the module's docstring."""

    @classmethod
    def for_plan(cls, plan, model_dir, replicas: int | None = None, policy: str = "round_robin", name: str | None = None,
                 max_lifetime_s: float = 1800.0, port: int | None = None, access_log=None) -> "Fleet":
        """The plan's local server (``LocalServer.for_plan``) ``replicas`` times (default: the plan's ``replicas``);
        ``access_log`` as the gateway's (:class:`helpers.bench.gateway.Gateway`)."""
        from ..bench.gateway import Limits

        count = replicas or getattr(plan, "replicas", 2) or 2
        label = name or plan.model or "local-model"
        threads = max(1, (os.cpu_count() or 1) // count)
        engine = "llamacpp" if plan.server == "llamacpp" else plan.server
        return cls(lambda i, port=None: ServedReplica(plan, model_dir, label, port=port, max_lifetime_s=max_lifetime_s,
                                                      threads=threads, index=i),
                   count, policy=policy, max_lifetime_s=max_lifetime_s, port=port,
                   limits=Limits.for_plan(plan, model_dir, engine, replicas=count), access_log=access_log)

    def __init__(self, make_replica, replicas: int = 2, policy: str = "round_robin", max_lifetime_s: float = 1800.0,
                 port: int | None = None, limits=None, heal: bool = True, restarts: int = RESTARTS, access_log=None):
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise InputError(f"replicas = {replicas!r}: a fleet needs at least one", fix="e.g. replicas=2")
        if policy not in POLICIES + ("random", "consistent_hash"):
            raise InputError(f"unknown routing policy {policy!r}", fix=f"use one of: {', '.join(POLICIES)}")
        self.make_replica, self.count, self.policy, self.max_lifetime_s = make_replica, replicas, policy, max_lifetime_s
        self.port = port  # the gateway's port, what clients reach (None: a free one)
        self.replicas: list = []
        self.router = None
        self.gateway = None
        self.router_port: int | None = None
        self.limits = limits  # the gateway's (helpers.bench.gateway.Limits); None: its defaults
        self.access_log = access_log  # the gateway's: a line per answer, none of its content
        self.metrics_port: int | None = None
        self.heal, self.restarts = heal, restarts
        self.events: list[str] = []  # what the fleet's supervisor did, a dated line each (also printed)
        self.failure: str | None = None  # set when the fleet cannot serve: every replica dead past its restarts, or the router
        self._held: set[int] = set()  # replicas a caller killed on purpose (a drill): not the supervisor's to restart
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self, progress: bool = True) -> "Fleet":
        if router_cli() is None:
            from ..bench.server import INSTALL_FIX

            raise FleetError("vllm-router is not installed", fix=INSTALL_FIX["vllm-router"])
        from tqdm.auto import tqdm

        self.replicas = [self.make_replica(i) for i in range(self.count)]
        try:
            # launched from this thread (each gets the parent-death signal), then waited for: they boot side by side
            for replica in self.replicas:
                if hasattr(replica, "launch"):
                    replica.launch()
            for replica in tqdm(self.replicas, desc="starting replicas", disable=not progress):
                replica.ready() if hasattr(replica, "ready") else replica.start()
            self._start_router()
            from ..bench.gateway import Gateway

            # clients reach the gateway (checked requests, bounded queue, greedy defaults, JSON errors), which reaches
            # the router; a router restarted with another policy keeps its port, so the gateway stays
            self.gateway = Gateway(self.port or _free(), self.router.port, self.model, self.model, self.limits,
                                   health=lambda: self.router is not None and self.router.healthy(),
                                   access_log=self.access_log).start()
            if self.heal:
                self._stopping.clear()
                self._supervisor = threading.Thread(target=self._supervise, name="fleet-supervisor", daemon=True)
                self._supervisor.ots_long_lived = True  # it launches restarted servers: they die with it (see LocalServer.launch)
                self._supervisor.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_router(self) -> None:
        self.metrics_port = _free()
        if self.router_port is None:
            self.router_port = _free()
        else:  # a new policy: the same port, so the gateway in front keeps reaching it
            from ..bench.server import port_freed

            port_freed(self.router_port, 10)
        self.router = self.router_over(range(self.count), self.policy, port=self.router_port, metrics_port=self.metrics_port)

    # ---------------------------------------------------------------- healing
    def _note(self, line: str) -> None:
        stamped = f"[fleet {time.strftime('%H:%M:%S')}] {line}"
        self.events.append(stamped)
        print(stamped, file=sys.stderr, flush=True)

    def _supervise(self) -> None:
        """Every second: a replica whose process died (not one a caller killed) is restarted on its port, up to
        ``restarts`` times in a row with a doubling wait; past that it is given up, and when no replica is left, or the
        router died, :attr:`failure` says so (``bash kit fleet`` then exits 1)."""
        failed: set[int] = set()
        tries = dict.fromkeys(range(self.count), 0)
        while not self._stopping.wait(SUPERVISE_EVERY_S):
            if self.router is not None and not self.router.alive() and not self.router.expired:
                self.failure = "the router died; its last lines:\n" + self.router.log_tail()
                self._note(self.failure)
                return
            for index, replica in enumerate(self.replicas):
                if index in self._held or index in failed or self._stopping.is_set():
                    continue
                alive = getattr(replica, "alive", None)
                if alive is None or alive():
                    tries[index] = 0 if alive is not None else tries[index]
                    continue
                tries[index] += 1
                code = getattr(getattr(getattr(replica, "server", None), "process", None), "returncode", None)
                if tries[index] > self.restarts:
                    failed.add(index)
                    self._note(f"replica {index} (port {replica.port}) gave up after {self.restarts} restarts")
                    if len(failed) == self.count:
                        self.failure = f"no replica can serve: all {self.count} died and did not come back"
                        self._note(self.failure)
                        return
                    continue
                wait = RESTART_WAIT_S * 2 ** (tries[index] - 1)
                self._note(f"replica {index} (port {replica.port}) died (exit code {code}); restarting in {wait:g} s "
                           f"(try {tries[index]} of {self.restarts})")
                if self._stopping.wait(wait):
                    return
                began = time.monotonic()
                try:
                    replica.stop()
                    replica.start()
                    self._note(f"replica {index} back after {time.monotonic() - began:.1f} s")
                except Exception as error:  # noqa: BLE001 - counted as a failed try; the next round tries again
                    self._note(f"replica {index} did not start: {type(error).__name__}: {str(error)[:200]}")

    def router_over(self, indices, policy: str | None = None, port: int | None = None, metrics_port: int | None = None):
        """A started vllm-router in front of the replicas at ``indices`` only (``bash kit bench-fleet`` compares one
        replica with all of them through the same router); the caller stops it."""
        from ..bench.server import LocalServer

        port = port or _free()
        command = router_command(port, [self.worker_urls[i] for i in indices], policy or self.policy, metrics_port or _free())
        return LocalServer(command=command, port=port, model_name=self.model, health_path="/health", engine="vllm-router",
                           startup_timeout_s=120.0, max_lifetime_s=self.max_lifetime_s).start()

    def set_policy(self, policy: str) -> None:
        """Restart the router with another policy; the replicas keep running."""
        if policy not in POLICIES + ("random", "consistent_hash"):
            raise InputError(f"unknown routing policy {policy!r}", fix=f"use one of: {', '.join(POLICIES)}")
        if self.router is not None:
            self.router.stop()
        self.policy = policy
        self._start_router()

    def stop(self) -> None:
        """Stop everything within about :data:`~helpers.bench.server.STOP_GRACE_S` seconds: every process is signalled
        at once, then each gets what is left of the grace before it is killed."""
        self._stopping.set()
        if self.gateway is not None:
            self.gateway.stop()
        servers = [self.router] + [getattr(r, "server", None) for r in self.replicas]
        for server in servers:
            if server is not None and hasattr(server, "signal_stop"):
                server.signal_stop()
        if self.router is not None:
            self.router.stop()
        for replica in self.replicas:
            try:
                replica.stop()
            except Exception:  # noqa: BLE001 - stop the others whatever one of them does
                pass
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=10)

    def __enter__(self) -> "Fleet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------- what it is
    @property
    def worker_urls(self) -> list[str]:
        return [f"http://{HOST}:{r.port}" for r in self.replicas]

    @property
    def base_url(self) -> str:
        """The router's OpenAI base URL: what Lab 05's local upstream points at."""
        if self.router is None:
            raise FleetError("the fleet is not started", fix="fleet.start() (or use it in a with block)")
        return self.gateway.base_url if self.gateway is not None else self.router.base_url

    @property
    def model(self) -> str:
        return self.replicas[0].model if self.replicas else "local-model"

    def kill(self, index: int) -> None:
        """Crash replica ``index`` (SIGKILL): the router finds out from failed requests and health checks. The supervisor
        leaves it to the caller's :meth:`restart` (a drill times that)."""
        self._held.add(index)
        self.replicas[index].kill()

    def restart(self, index: int, timeout_s: float = 180.0, launched: bool = False) -> float:
        """Start replica ``index`` again on its port (``launched``: its process was already launched with
        ``replicas[index].launch()``) and wait until the router counts it healthy; the seconds it took."""
        began = time.monotonic()
        replica = self.replicas[index]
        if launched:
            replica.ready()
        elif hasattr(replica, "launch"):
            replica.launch().ready()
        else:
            replica.start()
        url = self.worker_urls[index]
        while time.monotonic() - began < timeout_s:
            if self.metrics().get(url, {}).get("healthy") == 1:
                self._held.discard(index)
                return time.monotonic() - began
            time.sleep(0.25)
        raise FleetError(f"replica {index} started but the router did not take it back within {timeout_s:.0f} s",
                         fix="read the router's log (fleet.router.log_tail())")

    def metrics(self) -> dict[str, dict[str, float]]:
        """Per replica URL, from the router's Prometheus metrics: ``requests`` it was sent (``processed``), ``healthy``
        (1/0); and under the key ``"router"``: ``retries``."""
        with urllib.request.urlopen(f"http://{HOST}:{self.metrics_port}/metrics", timeout=5) as response:
            return parse_metrics(response.read().decode())

    def describe(self) -> str:
        engine = self.replicas[0].engine if self.replicas else "-"
        return (f"{self.count} x {engine} replicas of {self.model} behind vllm-router ({self.policy}) at {self.base_url}; "
                f"replicas on ports {', '.join(str(r.port) for r in self.replicas)}")


_METRIC = re.compile(r'^(vllm_router_[a-z_]+)\{([^}]*)\}\s+([0-9.eE+-]+)$|^(vllm_router_[a-z_]+)\s+([0-9.eE+-]+)$')


def parse_metrics(text: str) -> dict[str, dict[str, float]]:
    """The router's Prometheus text -> {worker URL: {"requests": n sent there (a request retried elsewhere counts at
    both), "healthy": 0/1}, "router": {"retries": n}}."""
    out: dict[str, dict[str, float]] = {"router": {"retries": 0.0}}
    for line in text.splitlines():
        match = _METRIC.match(line.strip())
        if not match:
            continue
        name, labels, value = (match.group(1), match.group(2), match.group(3)) if match.group(1) else (match.group(4), "", match.group(5))
        worker = re.search(r'worker="([^"]+)"', labels or "")
        if name == "vllm_router_processed_requests_total" and worker:
            out.setdefault(worker.group(1), {})["requests"] = float(value)
        elif name == "vllm_router_worker_health" and worker:
            out.setdefault(worker.group(1), {})["healthy"] = float(value)
        elif name == "vllm_router_retries_total":
            out["router"]["retries"] += float(value)
    return out


def _answered(before: dict, after: dict, urls: list[str]) -> list[int]:
    return [int(after.get(u, {}).get("requests", 0) - before.get(u, {}).get("requests", 0)) for u in urls]


# ---------------------------------------------------------------- load
@dataclass
class Answer:
    """One request through the router: when it left and came back (seconds from the load's start), and how."""

    phase: str
    sent_s: float
    latency_s: float
    ok: bool
    error: str = ""
    tokens: int = 0


def _ask(base_url: str, model: str, prompt: str, max_tokens: int, timeout_s: float, system: str = "") -> tuple[bool, str, int]:
    """One non-streamed chat request with no client retries: a loss shows as a loss. (ok, error, output tokens)"""
    import json

    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    body = json.dumps({"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0}).encode()
    request = urllib.request.Request(f"{base_url}/chat/completions", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            data = json.loads(response.read())
        return True, "", int((data.get("usage") or {}).get("completion_tokens") or 0)
    except urllib.error.HTTPError as error:
        return False, f"HTTP {error.code}", 0
    except (urllib.error.URLError, OSError, ValueError) as error:
        return False, f"{type(error).__name__}", 0


@dataclass
class Drill:
    """A failover drill's record: every answer, the events' times, and the per-phase table."""

    answers: list[Answer]
    events: dict[str, float]
    table: object = None
    replicas: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return sum(not a.ok for a in self.answers)


def failover(fleet: Fleet, prompts: list[str], victim: int = 0, requests_per_phase: int = 12, concurrency: int = 4,
             max_tokens: int = 16, timeout_s: float = 120.0, progress: bool = True) -> Drill:
    """Three phases through the router, ``requests_per_phase`` each at ``concurrency`` in flight: all replicas up;
    replica ``victim`` killed (SIGKILL) just after the phase's first requests left, and restarted while the phase runs;
    after the router has taken it back. Requests are not retried by the client: every loss is the fleet's. A fleet of
    one replica (a GPU that holds only one copy) runs the drill too: what arrives while it restarts is lost, which is
    what the spare of N+1 is for.
    Per phase: requests, answered, lost, latency p50/p95, what each replica answered and the router's retries."""
    import pandas as pd
    from tqdm.auto import tqdm

    if not prompts:
        raise InputError("no prompts for the drill", fix="pass a list of messages (e.g. tickets from the test split)")
    urls = fleet.worker_urls
    began = time.perf_counter()
    answers: list[Answer] = []
    events: dict[str, float] = {}
    rows = []
    bar = tqdm(total=3 * requests_per_phase, desc="failover drill", disable=not progress)

    def one(phase: str, i: int) -> Answer:
        sent = time.perf_counter()
        ok, error, tokens = _ask(fleet.base_url, fleet.model, prompts[i % len(prompts)], max_tokens, timeout_s)
        bar.update(1)
        return Answer(phase, sent - began, time.perf_counter() - sent, ok, error, tokens)

    def phase(name: str, during=None) -> None:
        before = fleet.metrics()
        with ThreadPoolExecutor(concurrency) as pool:
            futures = [pool.submit(one, name, i) for i in range(requests_per_phase)]
            if during is not None:
                during()
            done = [f.result() for f in futures]
        after = fleet.metrics()
        answers.extend(done)
        latencies = sorted(a.latency_s for a in done if a.ok)
        rows.append({"phase": name, "requests": len(done), "answered": sum(a.ok for a in done), "lost": sum(not a.ok for a in done),
                     "latency p50 s": _pct(latencies, 50), "latency p95 s": _pct(latencies, 95),
                     **{f"sent to replica {k}": n for k, n in enumerate(_answered(before, after, urls))},
                     "router retries": int(after["router"]["retries"] - before["router"]["retries"])})

    restarted: dict[str, object] = {}

    def crash_and_restart() -> None:
        time.sleep(0.3)  # the phase's first requests are on their way (some of them to the victim)
        fleet.kill(victim)
        events["killed"] = time.perf_counter() - began
        replica = fleet.replicas[victim]
        launched = hasattr(replica, "launch")
        if launched:  # from this thread, so the restarted server has the parent-death signal too
            replica.launch()

        def back():
            try:
                fleet.restart(victim, launched=launched)
                events["rejoined"] = time.perf_counter() - began
            except Exception as error:  # noqa: BLE001 - reported below, the drill still ends cleanly
                restarted["error"] = error

        restarted["thread"] = threading.Thread(target=back, daemon=True)
        restarted["thread"].start()

    try:
        phase("all replicas up")
        phase(f"replica {victim} killed", during=crash_and_restart)
        restarted["thread"].join(timeout=240)
        if "error" in restarted or "rejoined" not in events:
            raise FleetError(f"replica {victim} did not rejoin: {restarted.get('error', 'timed out')}",
                             fix="read fleet.replicas[i].server.log_tail() and fleet.router.log_tail()")
        phase(f"replica {victim} back")
    finally:
        bar.close()
    table = pd.DataFrame(rows).set_index("phase")
    return Drill(answers, events, table, urls)


def _pct(values: list[float], q: float) -> float:
    from ..bench.metrics import percentile

    return percentile(values, q) if values else math.nan


def plot_drill(drill: Drill, ax=None):
    """Each request's latency against when it was sent, coloured by phase, with the crash and the rejoin marked."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(7, 3))[1]
    for name in dict.fromkeys(a.phase for a in drill.answers):
        mine = [a for a in drill.answers if a.phase == name]
        ax.scatter([a.sent_s for a in mine if a.ok], [a.latency_s for a in mine if a.ok], s=14, label=name)
        lost = [a for a in mine if not a.ok]
        if lost:
            ax.scatter([a.sent_s for a in lost], [a.latency_s for a in lost], marker="x", color="red", label=f"{name}: lost")
    for event, at in drill.events.items():
        ax.axvline(at, color="grey", linestyle="--")
        ax.annotate(f"replica {event}", (at, ax.get_ylim()[1]), rotation=90, va="top", ha="right", fontsize=8)
    ax.set_xlabel("sent at (s from the drill's start)")
    ax.set_ylabel("latency (s)")
    ax.set_title("failover: your fleet, measured here")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    return ax


def compare_policies(fleet: Fleet, prompts: list[str], system: str, policies: tuple[str, ...] = POLICIES,
                     requests: int = 16, concurrency: int = 4, max_tokens: int = 16, slo=None, progress: bool = True):
    """The same streamed load under each routing policy: every request shares ``system`` (the desk's long system
    prompt) and carries its own ticket. Per policy: TTFT p50/p95, output tokens/s, goodput at ``slo``, errors and the
    share of requests each replica answered (the router's metrics)."""
    import pandas as pd
    from tqdm.auto import tqdm

    from ..bench.engines import OpenAIEngine
    from ..bench.metrics import summarize
    from ..bench.sweep import run_level

    if not system:
        raise InputError("no shared system prompt", fix="pass the desk's system prompt (desk.system_prompt)")
    rows = []
    for policy in tqdm(policies, desc="routing policies", disable=not progress):
        fleet.set_policy(policy)
        engine = OpenAIEngine(fleet.base_url, fleet.model, name=f"fleet ({policy})", system=system)
        before = fleet.metrics()
        records = run_level(engine, prompts, concurrency, requests, max_tokens)
        after = fleet.metrics()
        row = summarize(records, slo=slo)
        answered = _answered(before, after, fleet.worker_urls)
        total = max(1, sum(answered))
        rows.append({"policy": policy, "requests": row["requests"], "errors": row["errors"], "ttft s p50": row["ttft s p50"],
                     "ttft s p95": row["ttft s p95"], "output tokens/s": row["output tokens/s"],
                     "goodput requests/s": row["goodput requests/s"],
                     **{f"replica {k} share": n / total for k, n in enumerate(answered)}})
    return pd.DataFrame(rows).set_index("policy")


# ---------------------------------------------------------------- capacity
def peak_requests_per_s(conversations_per_month: float, turns_per_conversation: float, peak_to_average: float) -> float:
    """Requests a second in the peak hour: every turn of a conversation is one request to the model."""
    from ..tco.costs import HOURS_PER_MONTH

    for name, value in (("conversations_per_month", conversations_per_month), ("turns_per_conversation", turns_per_conversation),
                        ("peak_to_average", peak_to_average)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise InputError(f"{name} = {value!r}: must be a positive number", fix=f"pass {name} > 0")
    if peak_to_average < 1:
        raise InputError(f"peak_to_average = {peak_to_average}: the peak cannot be below the average", fix="pass a ratio >= 1")
    return conversations_per_month / HOURS_PER_MONTH * peak_to_average * turns_per_conversation / 3600


def replicas_needed(per_replica_rps: float, peak_rps: float, spare: int = 1) -> dict[str, float]:
    """Replicas that serve ``peak_rps`` at ``per_replica_rps`` each (goodput at the SLO, so every answered request met
    it), plus ``spare`` so the peak still holds with one replica down (N+1)."""
    for name, value in (("per_replica_rps", per_replica_rps), ("peak_rps", peak_rps)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise InputError(f"{name} = {value!r}: requests a second, a number >= 0", fix=f"pass {name} in requests/s")
    if isinstance(spare, bool) or not isinstance(spare, int) or spare < 0:
        raise InputError(f"spare = {spare!r}: whole replicas held in reserve", fix="e.g. spare=1 (N+1)")
    if per_replica_rps == 0:
        raise InputError("no request met the SLO on one replica (goodput 0): no number of replicas serves this peak",
                         fix="a faster replica (a GPU, a smaller model, a shorter reply) or a looser SLO")
    for_peak = max(1, math.ceil(peak_rps / per_replica_rps - 1e-9))
    return {"peak requests/s": peak_rps, "goodput per replica requests/s": per_replica_rps, "replicas for the peak": for_peak,
            "spare": spare, "replicas": for_peak + spare}


def capacity_table(inputs: dict, measured_rps: float | None, measured_label: str, spare: int = 1):
    """The fleet for the scenario's peak hour, two ways, side by side: from the per-replica goodput measured here
    (``measured_rps``, requests/s at the SLO; ``measured_label`` says whose and on what) and from Lab 01's paper
    estimate for its GPU (the roofline at the bandwidth efficiency in ``inputs``). Replicas with ``spare`` in reserve,
    and the ratio paper / measured per replica. The two describe different machines unless the measured replica is
    Lab 01's GPU and model: the table says which."""
    import pandas as pd

    from .. import tco

    workload, _, host, _ = tco.from_inputs(inputs)
    peak = peak_requests_per_s(inputs["conversations_per_month"], inputs["turns_per_conversation"], inputs["peak_to_average"])
    # conversations per GPU-hour -> requests/s, at Lab 01's utilisation target: the same GPUs as tco.gpus_needed
    paper_rps = host.capacity(workload) * host.utilisation_target * inputs["turns_per_conversation"] / 3600
    rows = {f"paper: 1 x {host.gpu}, {host.model} at {host.precision} (Lab 01's roofline at "
            f"{inputs['bandwidth_efficiency']:.0%} of bandwidth, {host.utilisation_target:.0%} utilisation)":
            replicas_needed(paper_rps, peak, spare)}
    if measured_rps is not None:
        rows[f"measured: {measured_label}"] = replicas_needed(measured_rps, peak, spare)
    table = pd.DataFrame(rows).T.astype({"replicas for the peak": int, "spare": int, "replicas": int})
    table.attrs["paper per replica / measured"] = paper_rps / measured_rps if measured_rps else math.nan
    return table


def read_capacity(table) -> str:
    """The capacity table in words: the replicas each row needs, and the ratio, computed from the table."""
    if "measured" in table.attrs:
        return table.attrs["measured"]
    paper, measured = table.iloc[0], table.iloc[1]
    return (f"At the peak ({paper['peak requests/s']:.1f} requests/s) the desk needs {int(measured['replicas'])} replicas like "
            f"yours ({int(measured['replicas for the peak'])} + {int(measured['spare'])} spare) or {int(paper['replicas'])} GPUs "
            f"on paper ({int(paper['replicas for the peak'])} + {int(paper['spare'])} spare): one GPU on paper answers "
            f"{table.attrs['paper per replica / measured']:,.1f}x what one of your replicas answered within the SLO.")


# ---------------------------------------------------------------- Lab 05's section
@dataclass(frozen=True)
class FleetSettings:
    """How big the lab's fleet runs are on the plan's device."""

    requests_per_phase: int
    concurrency: int
    max_tokens: int
    policy_requests: int

    @property
    def failover(self) -> dict:
        return {"requests_per_phase": self.requests_per_phase, "concurrency": self.concurrency, "max_tokens": self.max_tokens}

    @property
    def policies(self) -> dict:
        return {"requests": self.policy_requests, "concurrency": self.concurrency, "max_tokens": self.max_tokens}


def fleet_settings(plan) -> FleetSettings:
    """A CPU's replicas answer a few requests a second between them; a GPU's, hundreds."""
    if plan.quick:
        return FleetSettings(requests_per_phase=4, concurrency=2, max_tokens=4, policy_requests=4)
    if plan.device == "cpu":
        return FleetSettings(requests_per_phase=8, concurrency=4, max_tokens=12, policy_requests=8)
    return FleetSettings(requests_per_phase=64, concurrency=16, max_tokens=64, policy_requests=96)


def read_drill(drill: Drill) -> str:
    """The drill in words, computed from its table."""
    table = drill.table
    names = list(table.index)
    up, down, back = (table.loc[n] for n in names)
    outage = drill.events["rejoined"] - drill.events["killed"]
    survivor = [c for c in table.columns if c.startswith("sent to replica")][1:]
    if not survivor:
        return (f"{int(table['requests'].sum())} requests, {drill.lost} lost: with one replica there is nothing to fail over "
                f"to, so what arrived in the {outage:.0f} s it took to restart was lost or waited. A spare replica (N+1) is "
                "what keeps the desk answering.")
    return (f"{int(table['requests'].sum())} requests, {drill.lost} lost. With a replica down the survivor(s) took "
            f"{int(sum(down[c] for c in survivor))} of {int(down['requests'])} requests; the router retried "
            f"{int(down['router retries'])} on another replica. p95 latency {up['latency p95 s']:.2f} s with all replicas up, "
            f"{down['latency p95 s']:.2f} s during the failure ({down['latency p95 s'] / up['latency p95 s']:.1f}x), "
            f"{back['latency p95 s']:.2f} s after the replica rejoined ({outage:.0f} s after the crash: its restart time).")


def read_policies(table) -> str:
    """Which policy did best on TTFT and throughput here, and how each spread the load, in words from the table."""
    share = [c for c in table.columns if c.endswith(" share")]
    spread = "; ".join(f"{policy}: " + "/".join(f"{table.loc[policy, c]:.0%}" for c in share) for policy in table.index)
    fastest = table["ttft s p50"].idxmin()
    busiest = table["output tokens/s"].idxmax()
    ratio = table["ttft s p50"].max() / table["ttft s p50"].min()
    return (f"lowest TTFT p50: {fastest}; highest output tokens/s: {busiest}; slowest over fastest TTFT p50: {ratio:.2f}x. "
            f"Share of requests per replica: {spread}.")


def costed_inputs(store: dict | None = None) -> dict:
    """The inputs the capstone prices self-hosting with: Lab 01's choices (``tco.lab01_inputs``) and the bandwidth
    efficiency Lab 04 measured or read from a recorded run, so the fleet's paper row counts the capstone's GPUs."""
    from .. import results, tco

    store = results.load() if store is None else store
    inputs = tco.lab01_inputs(store)
    efficiency = store.get("04", {}).get("measured efficiency", {}).get("value")
    if isinstance(efficiency, (int, float)) and not isinstance(efficiency, bool) and math.isfinite(efficiency):
        inputs["bandwidth_efficiency"] = min(max(float(efficiency), 0.01), 1.0)
    return inputs


def lab_capacity(inputs: dict, policies, replicas: int, label: str):
    """Lab 05's capacity table: the measured per-replica goodput (the best policy's goodput over the fleet's replicas),
    and where nothing met the SLO, the same from throughput with the SLO ignored (labelled so)."""
    best = float(policies["goodput requests/s"].max()) / replicas
    if best > 0:
        return capacity_table(inputs, best, f"{label}, goodput at the SLO")
    answered = policies["output tokens/s"].max()
    table = capacity_table(inputs, None, label)
    table.attrs["measured"] = (f"no request met the SLO on {label}: at this SLO no number of these replicas serves the "
                               f"peak (they answered {answered:.1f} output tokens/s in all, every request too late)")
    return table


def key_results(drill: Drill, policies, capacity, replicas: int) -> tuple[dict, dict]:
    """What Lab 05 keeps of its fleet for the capstone: nothing lost, the outage, the policies, the replicas needed."""
    values = {"fleet replicas": replicas, "fleet failover lost": drill.lost,
              "fleet failover requests": int(drill.table["requests"].sum()),
              "fleet rejoin s": drill.events["rejoined"] - drill.events["killed"],
              "fleet best policy (ttft)": str(policies["ttft s p50"].idxmin())}
    values["fleet spare"] = int(capacity.iloc[0]["spare"])
    for label, row in capacity.iterrows():
        kind = "paper" if label.startswith("paper") else "measured"
        values[f"fleet {kind} replicas for the peak (N+1)"] = int(row["replicas"])
        values[f"fleet {kind} goodput per replica requests/s"] = float(row["goodput per replica requests/s"])
    ratio = capacity.attrs.get("paper per replica / measured")
    if ratio is not None and not math.isnan(ratio):
        values["fleet paper / measured per replica"] = float(ratio)
    units = {"fleet rejoin s": "s", "fleet measured goodput per replica requests/s": "requests/s",
             "fleet paper goodput per replica requests/s": "requests/s"}
    return values, units


def main(argv: list[str] | None = None) -> int:
    """``bash kit fleet [--replicas N] [--port P] [--policy NAME] [--minutes M]``: the plan's fleet on 127.0.0.1 (the
    router on --port) until Ctrl-C, SIGTERM, SIGHUP or the time limit. Lab 05's local upstream can point at it."""
    from ..bench.server import serving_command_line

    def options(parser):
        parser.add_argument("--replicas", type=int, default=None, help="default: the plan's (2 on a CPU, one per GPU)")
        parser.add_argument("--policy", default="round_robin", choices=POLICIES)

    args, p, key, folder = serving_command_line("bash kit fleet", main.__doc__, argv, options)
    fleet = Fleet.for_plan(p, folder, replicas=args.replicas, policy=args.policy, name=key, max_lifetime_s=args.minutes * 60,
                           port=args.port, access_log=lambda line: print(line, file=sys.stderr, flush=True))
    try:
        fleet.start()
        print(f"{fleet.describe()}; model name: {fleet.model}; stops after {args.minutes:g} min, on Ctrl-C, SIGTERM or SIGHUP",
              flush=True)
        while fleet.failure is None and fleet.router.alive():
            time.sleep(1.0)
        if fleet.failure is not None or not fleet.router.expired:
            print(f"[kit] the fleet cannot serve: {fleet.failure or 'the router stopped'}. Start it again with bash kit "
                  "fleet; the lines above say what died.", file=sys.stderr, flush=True)
            return 1
    except KeyboardInterrupt:
        pass
    finally:
        fleet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
