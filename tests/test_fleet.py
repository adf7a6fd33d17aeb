"""The fleet (helpers.deploy.fleet): replicas behind the real vllm-router on loopback, failover with nothing lost, routing
policies compared, the capacity arithmetic (hand-checked), and the plan's data- and tensor-parallel layouts started by
command line with a stand-in `vllm`. The replicas here are the kit's stand-in servers (fast, deterministic); Lab 05
runs the same code on real `transformers serve` replicas (its student copy runs in CI)."""
import json
import math
import os
import sys
import time

import pytest

from helpers.bench.server import free_port, port_freed, port_in_use
from helpers.deploy import fleet as F
from helpers.deploy.upstream import StandInUpstream, UpstreamConfig
from helpers.errors import InputError

pytestmark = pytest.mark.skipif(F.router_cli() is None, reason="vllm-router is not installed (bash kit setup installs it)")


class StandInReplica:
    """A replica made of the stand-in server: killed like a crash (connections cut), restarted on the same port."""

    engine = "stand-in"

    def __init__(self, i, port=None, latency=0.15):
        self.port, self.latency, self.api, self.served = port or free_port(), latency, None, 0

    @property
    def model(self):
        return "desk-model"

    def start(self):
        self.api = StandInUpstream(UpstreamConfig(model="desk-model", median_latency_s=self.latency, latency_sigma=0.1),
                                   port=self.port).start()
        return self

    def kill(self):
        self.stop()

    def stop(self):
        if self.api is not None:
            self.served += len(self.api.seen)
            self.api.stop()
            self.api = None


@pytest.fixture(scope="module")
def fleet():
    with F.Fleet(StandInReplica, replicas=2) as running:
        yield running
    assert not running.router.alive() and not any(port_in_use(p) for p in (running.router.port, *[r.port for r in running.replicas]))


def test_the_router_spreads_requests_over_the_replicas_on_loopback(fleet):
    assert fleet.base_url.startswith("http://127.0.0.1:") and fleet.worker_urls[0].startswith("http://127.0.0.1:")
    before = fleet.metrics()
    for i in range(6):
        ok, error, tokens = F._ask(fleet.base_url, fleet.model, f"ticket {i}", 5, 10)
        assert ok and tokens == 5, error
    sent = F._answered(before, fleet.metrics(), fleet.worker_urls)
    assert sent == [3, 3]  # round_robin
    assert all(fleet.metrics()[url]["healthy"] == 1 for url in fleet.worker_urls)


def test_a_replica_killed_mid_load_loses_nothing_and_rejoins(fleet):
    drill = F.failover(fleet, [f"message {i}" for i in range(5)], requests_per_phase=12, concurrency=4, max_tokens=4, progress=False)
    table = drill.table
    assert drill.lost == 0 and int(table["lost"].sum()) == 0 and int(table["answered"].sum()) == 36
    assert 0 < drill.events["killed"] < drill.events["rejoined"]
    killed, back = table.loc["replica 0 killed"], table.loc["replica 0 back"]
    assert killed["sent to replica 1"] >= 6  # the survivor carried the outage
    assert back["sent to replica 0"] > 0 and back["sent to replica 1"] > 0  # the restarted replica takes requests again
    assert all(not math.isnan(v) for v in table["latency p95 s"])
    ax = F.plot_drill(drill)
    assert ax.get_title().startswith("failover: your fleet")


class CrashingReplica(StandInReplica):
    """A stand-in replica the supervisor can see die (``alive``); ``crash`` cuts it off as a SIGKILL would, behind the
    fleet's back. ``starts_left`` limits how often it starts (a replica that cannot come back)."""

    starts_left = None

    def alive(self):
        return self.api is not None

    def start(self):
        if self.starts_left is not None:
            if self.starts_left <= 0:
                raise RuntimeError("the model folder is gone")
            self.starts_left -= 1
        return super().start()

    def crash(self):
        self.stop()


def test_the_fleet_restarts_a_replica_that_crashed_under_load_and_loses_nothing(monkeypatch):
    import concurrent.futures

    monkeypatch.setattr(F, "SUPERVISE_EVERY_S", 0.2)  # the same supervisor, looking and retrying sooner
    monkeypatch.setattr(F, "RESTART_WAIT_S", 0.2)

    with F.Fleet(CrashingReplica, replicas=2) as fleet:
        url = fleet.worker_urls[0]
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            asked = [pool.submit(F._ask, fleet.base_url, fleet.model, f"ticket {i}", 4, 30) for i in range(30)]
            time.sleep(0.5)
            fleet.replicas[0].crash()  # not fleet.kill(): nobody tells the fleet
            answers = [a.result() for a in asked]
        assert [ok for ok, _, _ in answers] == [True] * 30, [e for ok, e, _ in answers if not ok]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and fleet.metrics().get(url, {}).get("healthy") != 1 or not fleet.replicas[0].alive():
            time.sleep(0.25)
        assert fleet.replicas[0].alive() and fleet.metrics()[url]["healthy"] == 1  # back, and in the router's pool
        assert any("replica 0" in e and "died" in e for e in fleet.events) and any("back after" in e for e in fleet.events)
        before = fleet.metrics()
        for i in range(40):  # the router's circuit breaker lets it back within its 5 s; 20 s at most
            assert F._ask(fleet.base_url, fleet.model, f"after {i}", 4, 10)[0]
            if F._answered(before, fleet.metrics(), fleet.worker_urls)[0] > 0:
                break
            time.sleep(0.5)
        assert F._answered(before, fleet.metrics(), fleet.worker_urls)[0] > 0  # it takes requests again
        assert fleet.failure is None
        began = time.monotonic()
    assert time.monotonic() - began < 10  # the fleet stops within its grace


def test_a_fleet_whose_replicas_cannot_come_back_says_it_cannot_serve(monkeypatch):
    monkeypatch.setattr(F, "SUPERVISE_EVERY_S", 0.2)  # the same supervisor, looking and retrying sooner
    monkeypatch.setattr(F, "RESTART_WAIT_S", 0.2)

    class Doomed(CrashingReplica):
        starts_left = 1  # the first start only

    with F.Fleet(Doomed, replicas=2, restarts=1) as fleet:
        for replica in fleet.replicas:
            replica.crash()
        deadline = time.monotonic() + 30
        while fleet.failure is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert fleet.failure and "no replica can serve" in fleet.failure
        assert any("gave up after 1 restarts" in e for e in fleet.events)
        ok, error, _ = F._ask(fleet.base_url, fleet.model, "anyone?", 4, 30)
        assert not ok and error.startswith("HTTP 5")  # an answer, not a hang


def test_kit_fleet_exits_1_with_a_message_when_its_fleet_cannot_serve(monkeypatch, capsys):
    """`bash kit fleet` (fleet.main) watches its fleet: when every replica is dead past its restarts it stops everything
    and exits 1 saying so, instead of staying up behind a router that answers 503. Stand-in replicas keep this fast."""
    class Doomed(CrashingReplica):
        starts_left = 1

    started = []

    def stand_in_fleet(p, folder, replicas=None, policy="round_robin", name=None, max_lifetime_s=None, port=None,
                       access_log=None):
        assert access_log is not None  # kit fleet logs each answer (helpers.bench.gateway), as kit serve does
        fleet = F.Fleet(Doomed, replicas=2, restarts=1, policy=policy, port=port, access_log=access_log)
        started.append(fleet)
        original = fleet.start

        def start():
            original()
            for replica in fleet.replicas:
                replica.crash()
            return fleet

        fleet.start = start
        return fleet

    import signal

    monkeypatch.setattr(F.Fleet, "for_plan", staticmethod(stand_in_fleet))
    monkeypatch.setattr(F, "SUPERVISE_EVERY_S", 0.2)  # the same supervisor, looking and retrying sooner
    monkeypatch.setattr(F, "RESTART_WAIT_S", 0.2)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # main's SIGTERM handler is not this test process's
    began = time.monotonic()
    assert F.main(["--minutes", "1", "--port", str(free_port())]) == 1 and time.monotonic() - began < 45
    said = capsys.readouterr().err
    assert "the fleet cannot serve: no replica can serve" in said and "bash kit fleet" in said
    fleet = started[0]
    assert not fleet.router.alive() and not port_in_use(fleet.router.port)


def test_routing_policies_run_the_same_load_with_a_shared_system_prompt(fleet):
    table = F.compare_policies(fleet, ["parcel late", "refund please", "app crashes"], system="You triage tickets. " * 40,
                               requests=6, concurrency=3, max_tokens=4, progress=False)
    assert list(table.index) == list(F.POLICIES) and (table["errors"] == 0).all()
    shares = table[["replica 0 share", "replica 1 share"]].sum(axis=1)
    assert ((shares - 1).abs() < 1e-9).all() and (table["ttft s p50"] > 0).all()
    assert fleet.policy == F.POLICIES[-1]
    with pytest.raises(InputError):
        F.compare_policies(fleet, ["x"], system="")
    with pytest.raises(InputError):
        fleet.set_policy("fastest")
    fleet.set_policy("round_robin")


def test_bad_fleets_are_clear_errors():
    with pytest.raises(InputError):
        F.Fleet(StandInReplica, replicas=0)
    with pytest.raises(InputError):
        F.Fleet(StandInReplica, policy="least_busy")
    with pytest.raises(InputError):
        F.router_command(free_port(), [], "round_robin")


def test_metrics_are_read_per_replica():
    text = ('vllm_router_processed_requests_total{worker="http://127.0.0.1:1"} 7\n'
            'vllm_router_worker_health{worker="http://127.0.0.1:1"} 0\n'
            'vllm_router_retries_total{route="/v1/chat/completions"} 3\n# HELP x\nvllm_router_active_workers 2\n')
    parsed = F.parse_metrics(text)
    assert parsed["http://127.0.0.1:1"] == {"requests": 7.0, "healthy": 0.0} and parsed["router"]["retries"] == 3.0


# ---------------------------------------------------------------- capacity, by hand
def test_peak_requests_and_replicas_by_hand():
    # 10M conversations a month over 730 h = 13,698.6 an hour; x2.5 at the peak = 34,246.6; x3 turns / 3600 s = 28.539 requests/s
    peak = F.peak_requests_per_s(10_000_000, 3, 2.5)
    assert peak == pytest.approx(28.5388, rel=1e-4)
    sized = F.replicas_needed(0.25, peak)  # 114.2 -> 115 replicas for the peak, one spare: 116
    assert (sized["replicas for the peak"], sized["spare"], sized["replicas"]) == (115, 1, 116)
    exact = F.replicas_needed(2.0, 4.0, spare=0)  # exactly two: no third for rounding
    assert exact["replicas"] == 2
    assert F.replicas_needed(10.0, 0.5)["replicas"] == 2  # even a tiny peak needs one, and the spare
    for bad in [dict(per_replica_rps=0, peak_rps=1), dict(per_replica_rps=-1, peak_rps=1), dict(per_replica_rps=1, peak_rps=1, spare=-1),
                dict(per_replica_rps="2", peak_rps=1)]:
        with pytest.raises(InputError):
            F.replicas_needed(**bad)
    with pytest.raises(InputError):
        F.peak_requests_per_s(10_000_000, 3, 0.5)  # a peak below the average


def test_the_paper_row_is_lab01s_gpu_count_plus_the_spare():
    from helpers import tco

    inputs = tco.default_inputs()
    table = F.capacity_table(inputs, measured_rps=0.5, measured_label="2 CPU replicas here")
    paper = table.iloc[0]
    assert paper["replicas for the peak"] == tco.outcome(inputs)["gpus"] and paper["replicas"] == paper["replicas for the peak"] + 1
    measured = table.iloc[1]
    assert measured["replicas for the peak"] == math.ceil(measured["peak requests/s"] / 0.5)
    assert table.attrs["paper per replica / measured"] == pytest.approx(paper["goodput per replica requests/s"] / 0.5)
    assert len(F.capacity_table(inputs, None, "-")) == 1


# ---------------------------------------------------------------- the GPU tier's layouts
FAKE_VLLM = """#!{python}
# stands in for `vllm serve`: records its arguments and the GPUs it was given, answers /health and chat requests
import http.server, json, os, sys
args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
open(os.path.join({folder!r}, f"{{port}}.json"), "w").write(json.dumps({{"argv": args, "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}}))
class H(http.server.BaseHTTPRequestHandler):
    def reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
    def do_GET(self):
        self.reply({{"data": []}} if self.path == "/v1/models" else {{"status": "ok"}})
    def do_POST(self):
        asked = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        usage = {{"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        if not asked.get("stream"):
            return self.reply({{"choices": [{{"index": 0, "message": {{"role": "assistant", "content": "ok"}}, "finish_reason": "stop"}}],
                               "usage": usage}})
        self.send_response(200); self.send_header("Content-Type", "text/event-stream"); self.end_headers()
        for event in ({{"choices": [{{"index": 0, "delta": {{"content": "ok"}}, "finish_reason": "stop"}}]}}, {{"choices": [], "usage": usage}}):
            self.wfile.write(("data: " + json.dumps(event) + "\\n\\n").encode())
        self.wfile.write(b"data: [DONE]\\n\\n"); self.close_connection = True
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((args[args.index("--host") + 1], port), H).serve_forever()
"""


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    import helpers.bench.server as serving

    cli = tmp_path / "bin" / "vllm"
    cli.parent.mkdir()
    cli.write_text(FAKE_VLLM.format(python=sys.executable, folder=str(tmp_path)))
    cli.chmod(0o755)
    monkeypatch.setenv("PATH", f"{cli.parent}:{os.environ['PATH']}")
    monkeypatch.setattr(serving, "_gpu_free_fraction", lambda index=0: None)
    return tmp_path


@pytest.mark.parametrize("gpu, gpus, model, replicas, tp, server", [
    ("H100", 8, "qwen2.5-7b", 8, 1, "vllm"),        # fits one GPU: one copy per GPU (data parallel)
    ("H100", 8, "llama3-70b", 2, 4, "vllm"),        # 70B at bf16 with its KV cache: four GPUs a copy, two copies
    ("H100", 1, "qwen2.5-7b", 1, 1, "vllm"),
    ("L4", 4, "qwen2.5-7b", 2, 2, "vllm"),          # 24 GB cards: two per copy
    ("A100-80GB", 2, "llama3-70b", 2, 1, "transformers"),  # too big at 16 bits for the node: 4-bit, one per GPU
    ("T4", 1, "qwen2.5-1.5b", 2, 1, "transformers"),  # Colab: two copies fit the one GPU, so one can fail over
    ("L4", 1, "qwen2.5-7b", 1, 1, "vllm"),  # one copy fills it: one replica, and the plan says the drill cannot fail over
])
def test_the_plan_picks_data_and_tensor_parallel_layouts(fake_vllm, gpu, gpus, model, replicas, tp, server):
    from helpers.hardware import describe_gpu
    from helpers.plan import plan

    p = plan("05", describe_gpu(gpu, gpus=gpus), override=f"model={model}")
    assert (p.replicas, p.tensor_parallel, p.server) == (replicas, tp, server)
    assert dict(p.as_rows())["fleet"].startswith(f"{replicas} replica")
    if tp > 1:
        assert any("tensor parallel" in note for note in p.notes) and plan("04", describe_gpu(gpu, gpus=gpus),
                                                                             override=f"model={model}").replicas == 1
    if gpus == 1:
        assert any(("share this GPU" if replicas == 2 else "nothing to fail over") in note for note in p.notes)


def test_cpu_plan_runs_two_replicas_and_says_they_share_the_cores():
    from helpers.plan import plan

    p = plan("05", override="tier=cpu")
    assert (p.replicas, p.tensor_parallel) == (2, 1) and any("share them" in note for note in p.notes)
    assert plan("04", override="tier=cpu").replicas == 1 and "fleet" not in dict(plan("04", override="tier=cpu").as_rows())


def test_two_replicas_on_one_gpu_share_it(fake_vllm):
    from helpers.hardware import describe_gpu
    from helpers.plan import plan

    p = plan("05", describe_gpu("H100"), override="model=qwen2.5-1.5b")
    assert p.server == "vllm" and p.replicas == 2
    with F.Fleet.for_plan(p, "/models/qwen") as running:
        seen = [json.loads((fake_vllm / f"{r.port}.json").read_text()) for r in running.replicas]
    assert [s["gpus"] for s in seen] == ["0", "0"] and all("--tensor-parallel-size" not in s["argv"] for s in seen)
    shares = [float(s["argv"][s["argv"].index("--gpu-memory-utilization") + 1]) for s in seen]
    assert sum(shares) <= 0.9 + 1e-9  # both fit on the card together


def test_a_tensor_parallel_fleet_starts_each_copy_on_its_own_gpus(fake_vllm):
    from helpers.hardware import describe_gpu
    from helpers.plan import plan

    p = plan("05", describe_gpu("H100", gpus=8), override="model=llama3-70b")
    with F.Fleet.for_plan(p, "/models/llama-70b") as running:
        seen = [json.loads((fake_vllm / f"{r.port}.json").read_text()) for r in running.replicas]
        ok, error, _ = F._ask(running.base_url, running.model, "hello", 2, 10)
        assert ok, error
    assert [s["gpus"] for s in seen] == ["0,1,2,3", "4,5,6,7"]
    for s in seen:
        argv = s["argv"]
        assert argv[argv.index("--tensor-parallel-size") + 1] == "4" and argv[argv.index("--host") + 1] == "127.0.0.1"
    assert all(not r.alive() for r in running.replicas) and not running.router.alive()


def test_lab05_keeps_the_fleets_figures_and_says_when_nothing_met_the_slo():
    import pandas as pd

    from helpers import tco

    inputs = tco.default_inputs()
    policies = pd.DataFrame({"policy": ["round_robin", "cache_aware"], "requests": [8, 8], "errors": [0, 0],
                             "ttft s p50": [0.9, 0.6], "goodput requests/s": [0.8, 1.2], "output tokens/s": [9.0, 11.0],
                             "replica 0 share": [0.5, 1.0], "replica 1 share": [0.5, 0.0]}).set_index("policy")
    capacity = F.lab_capacity(inputs, policies, 2, "2 replicas here")
    assert capacity.iloc[1]["goodput per replica requests/s"] == pytest.approx(0.6)  # the best policy's goodput over 2 replicas
    assert "cache_aware" in F.read_policies(policies).split(";")[0] and "cache_aware: 100%/0%" in F.read_policies(policies)
    table = pd.DataFrame([{"phase": p, "requests": 4, "answered": 4, "lost": 0, "latency p50 s": 0.5, "latency p95 s": lat,
                           "sent to replica 0": s0, "sent to replica 1": s1, "router retries": r}
                          for p, lat, s0, s1, r in (("all replicas up", 0.6, 2, 2, 0), ("replica 0 killed", 1.2, 3, 4, 3),
                                                    ("replica 0 back", 0.7, 2, 2, 0))]).set_index("phase")
    drill = F.Drill([F.Answer("x", 0.0, 0.5, True)] * 12, {"killed": 2.0, "rejoined": 12.5}, table)
    words = F.read_drill(drill)
    assert "0 lost" in words and "took 4 of 4" in words and "retried 3" in words and "(2.0x)" in words and "10 s after" in words
    values, units = F.key_results(drill, policies, capacity, 2)
    assert values["fleet failover lost"] == 0 and values["fleet spare"] == 1 and values["fleet rejoin s"] == pytest.approx(10.5)
    assert values["fleet best policy (ttft)"] == "cache_aware" and units["fleet rejoin s"] == "s"
    assert values["fleet paper replicas for the peak (N+1)"] == tco.outcome(inputs)["gpus"] + 1
    too_slow = F.lab_capacity(inputs, policies.assign(**{"goodput requests/s": 0.0}), 2, "2 replicas here")
    assert len(too_slow) == 1 and "no request met the SLO" in too_slow.attrs["measured"]


def test_the_router_stops_when_the_process_that_started_it_dies(tmp_path):
    """A killed kernel must not leave the router holding its port (the replicas' servers get the same signal)."""
    import signal
    import subprocess

    script = tmp_path / "start.py"
    script.write_text(f"""
import sys, time
sys.path[:0] = [{os.getcwd()!r}, {os.path.dirname(__file__)!r}]
from test_fleet import StandInReplica
from helpers.deploy.fleet import Fleet
fleet = Fleet(StandInReplica, replicas=2).start(progress=False)
print(fleet.router.port, flush=True)
time.sleep(120)
""")
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(process.stdout.readline())
        assert port_in_use(port)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert port_freed(port, 10), "the router outlived the process that started it"
    finally:
        process.kill()


def test_the_capacity_reads_in_words_from_its_own_table():
    from helpers import tco

    inputs = tco.default_inputs()
    table = F.capacity_table(inputs, 0.5, "2 CPU replicas")
    words = F.read_capacity(table)
    paper, measured = table.iloc[0], table.iloc[1]
    assert f"needs {int(measured['replicas'])} replicas like yours ({int(measured['replicas for the peak'])} + 1 spare)" in words
    assert f"or {int(paper['replicas'])} GPUs on paper" in words and f"{table.attrs['paper per replica / measured']:,.1f}x" in words
    assert table["replicas"].dtype.kind == "i"
