"""Lab 05's foundations: the stand-in paid API (wire format, latency, faults) and the cost ledger
(idempotent, crash-safe, a budget that concurrent callers cannot overshoot)."""
import os
import signal
import subprocess
import sys
import threading

import pandas as pd
import pytest

from helpers.deploy.ledger import BudgetExceeded, Ledger, sqlite_path
from helpers.deploy.upstream import StandInUpstream, UpstreamConfig
from helpers.errors import InputError

openai = pytest.importorskip("openai")


def client(api, retries=0, timeout=5.0):
    return openai.OpenAI(base_url=api.base_url, api_key="sk-test-not-real", max_retries=retries, timeout=timeout)


# ---------------------------------------------------------------- the stand-in upstream
def test_non_streaming_and_streaming_replies_carry_usage():
    with StandInUpstream(UpstreamConfig(median_latency_s=0.01)) as api:
        c = client(api)
        reply = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "my parcel is late"}], max_tokens=7)
        assert reply.usage.completion_tokens == 7 and reply.usage.prompt_tokens == 4
        assert len(reply.choices[0].message.content.split()) == 7
        chunks = list(c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=5, stream=True,
                                                stream_options={"include_usage": True}))
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert len(text.split()) == 5 and chunks[-1].usage.completion_tokens == 5
        assert [m.id for m in c.models.list().data] == ["stand-in-paid-model"]
        assert len(api.seen) == 2 and api.seen[0]["prompt"] == "my parcel is late" and api.seen[0]["authorization"]


@pytest.mark.parametrize("fault, error", [("429", "RateLimitError"), ("500", "InternalServerError"), ("503", "InternalServerError"),
                                          ("drop", "APIConnectionError"), ("timeout", "APITimeoutError")])
def test_each_fault_looks_like_the_real_api_failing(fault, error):
    config = UpstreamConfig(median_latency_s=0.01, faults={fault: 1.0}, timeout_s=2.0, retry_after_s=0.25)
    with StandInUpstream(config) as api:
        with pytest.raises(getattr(openai, error)) as info:
            client(api, timeout=0.5).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        if fault == "429":
            assert info.value.response.headers["Retry-After"] == "0.25"


def test_fault_shares_and_latency_are_seeded_and_bounded():
    config = UpstreamConfig(median_latency_s=0.0, faults={"500": 0.3}, seed=7)
    with StandInUpstream(config) as api:
        outcomes = []
        for _ in range(60):
            try:
                client(api).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], max_tokens=2)
                outcomes.append("ok")
            except openai.InternalServerError:
                outcomes.append("500")
    assert 8 <= outcomes.count("500") <= 30
    with pytest.raises(InputError):
        UpstreamConfig(faults={"418": 0.1})
    with pytest.raises(InputError):
        UpstreamConfig(faults={"500": 0.7, "503": 0.5})


def test_bad_requests_get_a_400_not_a_crash():
    import urllib.error
    import urllib.request

    with StandInUpstream() as api:
        request = urllib.request.Request(f"{api.base_url}/chat/completions", data=b"not json", method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=5)
        assert info.value.code == 400


# ---------------------------------------------------------------- the ledger
def test_rows_are_idempotent_and_totals_add_up(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    assert ledger.record("r1", "local", "personal data", "ok", tokens_in=10, tokens_out=5)
    assert ledger.record("r2", "paid", "hard", "ok", cost_usd=0.002, tokens_in=20, tokens_out=8)
    assert not ledger.record("r1", "local", "personal data", "ok", tokens_in=10, tokens_out=5)  # a rerun records nothing new
    totals = ledger.totals()
    assert totals == {"requests": 2, "cost_usd": pytest.approx(0.002), "tokens_in": 30, "tokens_out": 13}
    rows = ledger.rows()
    assert list(rows["request_id"]) == ["r1", "r2"] and rows["cost_usd"].sum() == pytest.approx(totals["cost_usd"])


def test_ledger_urls_other_than_sqlite_or_postgresql_name_the_fix(tmp_path):
    assert sqlite_path(f"sqlite:///{tmp_path}/x.db") == tmp_path / "x.db"
    with pytest.raises(InputError) as info:
        Ledger("mysql://localhost/ledger")
    assert "sqlite:///" in info.value.fix and "postgresql://" in info.value.fix
    with pytest.raises(InputError) as info:  # nothing listens there: the error names what to check
        Ledger("postgresql://nobody@127.0.0.1:9/ledger", timeout_s=2)
    assert "cannot reach the PostgreSQL ledger" in str(info.value) and "host, port" in info.value.fix


# ---------------------------------------------------------------- a shared PostgreSQL ledger
@pytest.fixture(scope="module")
def postgres():
    """A real PostgreSQL 16 server from the ``pgserver`` wheel, on a Unix socket in a short temp folder (no TCP at
    all), stopped and deleted after the module."""
    import tempfile

    import sys

    pgserver = pytest.importorskip("pgserver", reason="pgserver is not installed: it comes with the tests extra (bash kit test)"
                                   + (", which leaves it out on Python 3.13+ (no wheel)" if sys.version_info >= (3, 13) else ""))
    server = pgserver.get_server(tempfile.mkdtemp(prefix="ots-pg-"), cleanup_mode="delete")
    yield server
    server.cleanup()


def fresh_database(server, name):
    import psycopg

    with psycopg.connect(server.get_uri(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    return server.get_uri(name)


def test_postgresql_ledger_is_idempotent_and_adds_up(postgres):
    ledger = Ledger(fresh_database(postgres, "ledger_rows"))
    assert ledger.record("r1", "local", "personal data", "answered", tokens_in=10, tokens_out=5)
    assert ledger.record("r2", "paid", "hard", "answered", cost_usd=0.002, tokens_in=20, tokens_out=8)
    assert not ledger.record("r1", "local", "personal data", "answered", tokens_in=10, tokens_out=5)
    assert ledger.totals() == {"requests": 2, "cost_usd": pytest.approx(0.002), "tokens_in": 30, "tokens_out": 13}
    assert list(ledger.rows()["request_id"]) == ["r1", "r2"] and ledger.seen("r2") and not ledger.seen("r3")


SHARED_ROUTER = r"""
import sys
from helpers.deploy.ledger import BudgetExceeded, Ledger
ledger = Ledger(sys.argv[1], monthly_cap_usd=1.0)
granted = 0
for i in range(40):
    try:
        held = ledger.reserve(f"{sys.argv[2]}-{i}", 0.03)
    except BudgetExceeded:
        continue
    ledger.settle(held, 0.03)
    ledger.record(f"{sys.argv[2]}-{i}", "paid", "hard", "answered", cost_usd=0.03)
    granted += 1
print(granted)
"""


def test_routers_in_several_processes_share_one_postgresql_budget(postgres):
    url = fresh_database(postgres, "ledger_shared")
    Ledger(url)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    routers = [subprocess.Popen([sys.executable, "-c", SHARED_ROUTER, url, f"router{k}"], stdout=subprocess.PIPE, text=True, env=env)
               for k in range(3)]
    granted = [int(p.communicate(timeout=120)[0]) for p in routers]
    ledger = Ledger(url, monthly_cap_usd=1.0)
    assert sum(granted) == 33 and ledger.spent() == pytest.approx(0.99) and ledger.reserved() == 0  # floor(1.00 / 0.03), never more
    assert ledger.totals()["requests"] == 33 and ledger.rows()["cost_usd"].sum() == pytest.approx(0.99)


def test_a_killed_writer_loses_no_acknowledged_postgresql_row(postgres):
    acknowledged, recorded = kill_a_writer(fresh_database(postgres, "ledger_kill"), after=100)
    assert {f"r{i}" for i in range(acknowledged + 1)} <= recorded


def test_the_router_writes_to_a_postgresql_ledger_from_the_policy_url(postgres, tmp_path):
    from helpers.deploy.router import Router, load_policy

    os.environ.setdefault("OTS_TEST_PAID_KEY", "sk-test-not-real")
    url = fresh_database(postgres, "ledger_router")
    with StandInUpstream(UpstreamConfig(median_latency_s=0.0)) as local, StandInUpstream(UpstreamConfig(median_latency_s=0.0)) as paid:
        policy = load_policy(POLICY, {"local": {"base_url": local.base_url, "model": "local"},
                                      "paid": {"base_url": paid.base_url, "api_key_env": "OTS_TEST_PAID_KEY"}})
        router = Router(policy, Ledger(url, monthly_cap_usd=1.0), difficulty=lambda m: 0.9 if "several" in m else 0.1)
        answers = [router.handle(f"q{i}", m, max_tokens=4) for i, m in enumerate(["Where is my parcel?", "I have several problems"])]
    assert [a.route for a in answers] == ["local", "paid"]
    rows = Ledger(url).rows().set_index("request_id")
    assert rows.loc["q1", "cost_usd"] > 0 and Ledger(url).spent() == pytest.approx(rows["cost_usd"].sum())


def test_concurrent_reservations_never_overshoot_the_cap(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", monthly_cap_usd=1.0)
    granted, refused = [], []

    def call(i):
        try:
            reservation = ledger.reserve(f"r{i}", 0.03)
        except BudgetExceeded:
            refused.append(i)
            return
        granted.append(i)
        ledger.settle(reservation, 0.03)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 33 and len(refused) == 27  # floor(1.00 / 0.03)
    assert ledger.spent() == pytest.approx(0.99) and ledger.reserved() == 0


def test_settling_a_failed_call_releases_its_hold(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", monthly_cap_usd=0.05)
    held = ledger.reserve("a", 0.05)
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve("b", 0.01)
    assert "monthly cap" in str(info.value) and "serve it locally" in info.value.fix
    ledger.settle(held, 0.0)  # the call failed: nothing billed
    ledger.reserve("b", 0.01)


WRITER = r"""
import sys
from helpers.deploy.ledger import Ledger
ledger = Ledger(sys.argv[1])
i = 0
while True:
    ledger.record(f"r{i}", "local", "routine", "ok", tokens_in=1)
    print(i, flush=True)  # acknowledged: the row is committed before this line is written
    i += 1
"""


def kill_a_writer(url, after):
    """Start WRITER on ``url``, kill -9 it once it acknowledged ``after`` rows; (last acknowledged, ids recorded)."""
    Ledger(url)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, url], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    acknowledged = -1
    for line in writer.stdout:
        acknowledged = int(line)
        if acknowledged >= after:
            break
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=10)
    return acknowledged, set(Ledger(url).rows()["request_id"])


def test_a_killed_writer_loses_no_acknowledged_row(tmp_path):
    acknowledged, recorded = kill_a_writer(f"sqlite:///{tmp_path / 'ledger.db'}", after=200)
    assert {f"r{i}" for i in range(acknowledged + 1)} <= recorded


# ---------------------------------------------------------------- personal data
def test_pii_recall_on_the_labelled_dataset_meets_the_goal():
    from helpers import finetune as ft
    from helpers.deploy import pii

    table = pii.evaluate(ft.load_tickets("test"))
    assert (table["recall"] >= 0.95).all(), table
    assert (table["precision"] >= 0.9).all(), table


def test_pii_on_messages_the_dataset_never_produced():
    """The kit's hand-written set (several countries' formats, checksum-valid examples, number-heavy clean messages):
    recall >= 0.95 per kind, and every false positive listed (none today)."""
    from helpers.deploy import pii

    rows = pii.written_set()
    assert len(rows) >= 25 and sum(1 for r in rows if not r["pii_spans"]) >= 6  # clean messages are part of the set
    table = pii.evaluate(rows)
    assert (table["recall"] >= 0.95).all(), table
    assert pii.false_positives(rows) == [], pii.false_positives(rows)
    assert pii.find_pii("invoice INV-2026-000451 and order SKU4481-2290") == []  # codes are not phone numbers


def test_redaction_never_keeps_the_value():
    from helpers.deploy import pii

    text = "Call me on (555) 314-9607 or +49 151 6807219, mail ines.rossi@mail.com, IBAN DE89370400440532013000, card 4111 1111 1111 1111"
    redacted = pii.redact(text)
    for value in ("314-9607", "6807219", "ines.rossi", "DE8937", "4111 1111"):
        assert value not in redacted, redacted
    assert {"<PHONE>", "<EMAIL>", "<IBAN>", "<CARD>"} <= set(redacted.replace(",", " ").split())
    assert pii.find_pii("Order 12345 shipped on 2024-05-01, version 2.3.4, room 101") == []


# ---------------------------------------------------------------- the router
POLICY = __import__("pathlib").Path(__file__).resolve().parent.parent / "datasets" / "deploy" / "policy.toml"


def make_router(tmp_path, local, paid, cap=50.0, difficulty=None, **routing):
    from helpers.deploy.router import Router, load_policy

    os.environ.setdefault("OTS_TEST_PAID_KEY", "sk-test-not-real")
    policy = load_policy(POLICY, {"local": {"base_url": local.base_url, "model": "local"},
                                  "paid": {"base_url": paid.base_url, "api_key_env": "OTS_TEST_PAID_KEY"},
                                  "budget": {"monthly_cap_usd": cap},
                                  "resilience": {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "breaker_cooldown_s": 0.5},
                                  "routing": routing})
    return Router(policy, Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", monthly_cap_usd=cap), difficulty=difficulty)


def test_personal_data_stays_local_even_when_local_is_down(tmp_path):
    with StandInUpstream(UpstreamConfig(median_latency_s=0.0, faults={"503": 1.0}, seed=1)) as local, \
            StandInUpstream(UpstreamConfig(median_latency_s=0.0)) as paid:
        router = make_router(tmp_path, local, paid)
        answer = router.handle("a", "My card 4111 1111 1111 1111 was charged twice")
        assert answer.outcome == "failed" and "never sent to the paid API" in answer.error
        routine = router.handle("b", "How do I reset my router?")
        assert routine.route == "paid" and routine.fallbacks == ["paid"] and "fallback" in routine.reason
    assert not any("4111" in seen["prompt"] for seen in paid.seen)
    rows = router.ledger.rows().set_index("request_id")
    assert rows.loc["a", "outcome"] == "failed" and rows.loc["b", "route"] == "paid" and rows.loc["b", "cost_usd"] > 0


def test_hard_requests_go_to_the_paid_api_and_are_billed_at_snapshot_prices(tmp_path):
    from helpers import tco

    with StandInUpstream(UpstreamConfig(median_latency_s=0.0)) as local, StandInUpstream(UpstreamConfig(median_latency_s=0.0)) as paid:
        router = make_router(tmp_path, local, paid, difficulty=lambda m: 0.9 if "several" in m else 0.1)
        hard = router.handle("h", "I have several problems with billing and my account", max_tokens=10)
        easy = router.handle("e", "Where is my parcel?", max_tokens=10)
    assert (hard.route, easy.route) == ("paid", "local")
    price = tco.get_api_price("gpt-4o-mini")
    row = router.ledger.rows().set_index("request_id").loc["h"]
    assert row["cost_usd"] == pytest.approx(row["tokens_in"] * price.input / 1e6 + row["tokens_out"] * price.output / 1e6)
    assert router.handle("h", "I have several problems", max_tokens=10).outcome == "duplicate"  # idempotent rerun


def test_retries_honour_retry_after_then_succeed(tmp_path):
    with StandInUpstream(UpstreamConfig(median_latency_s=0.0, faults={"429": 0.5}, retry_after_s=0.02, seed=3)) as local, \
            StandInUpstream() as paid:
        router = make_router(tmp_path, local, paid, fallback_local_to_paid=False)
        answers = [router.handle(f"r{i}", "Where is my parcel?", max_tokens=4) for i in range(20)]
    assert all(a.outcome == "answered" and a.route == "local" for a in answers)
    assert sum(a.retries for a in answers) > 0


def test_missing_key_and_bad_policy_name_the_fix(tmp_path, monkeypatch):
    from helpers.deploy.router import load_policy, policy_from_dict

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with StandInUpstream() as local:
        from helpers.deploy.router import Router

        with pytest.raises(InputError) as info:
            Router(load_policy(POLICY, {"local": {"base_url": local.base_url}}), Ledger(f"sqlite:///{tmp_path / 'l.db'}"))
        assert "OPENAI_API_KEY" in str(info.value) and "never write the key" in info.value.fix
    bad = tmp_path / "bad.toml"
    bad.write_text("[local]\nbase_url = http://x\n")
    with pytest.raises(InputError) as info:
        load_policy(bad)
    assert "line 2" in str(info.value)
    with pytest.raises(InputError) as info:
        policy_from_dict({"local": {"base_url": "x", "model": "m"}, "routing": {"hard_treshold": 0.5}})
    assert "hard_treshold" in str(info.value) and "hard_threshold" in info.value.fix
    with pytest.raises(InputError) as info:
        policy_from_dict({"local": {"base_url": "x", "model": "m"}, "budget": {"monthly_cap_usd": "lots"}})
    assert "monthly_cap_usd" in str(info.value)


def test_reliability_1000_requests_at_concurrency_50_with_faults_and_a_local_restart(tmp_path):
    """The issue's reliability figure: 0 lost, 0 personal data to the paid API, budget never exceeded,
    the ledger's totals equal the sum of its rows, in <= 60 s on 2 cores."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from helpers import finetune as ft
    from helpers.deploy.pii import find_pii

    messages = [row["message"] for row in ft.load_tickets("train")[:1000]]
    cap = 0.02  # small enough that the budget binds during the run
    start = time.perf_counter()
    paid = StandInUpstream(UpstreamConfig(median_latency_s=0.01, faults={"500": 0.1, "429": 0.05, "drop": 0.05}, seed=11)).start()
    local = StandInUpstream(UpstreamConfig(median_latency_s=0.01, seed=12)).start()
    port = local.port
    try:
        router = make_router(tmp_path, local, paid, cap=cap, difficulty=lambda m: 0.9 if len(m) > 160 else 0.1)

        def restart_local():
            nonlocal local
            time.sleep(1.0)
            local.stop()
            time.sleep(0.5)
            local = StandInUpstream(UpstreamConfig(median_latency_s=0.01, seed=13), port=port).start()

        restarter = __import__("threading").Thread(target=restart_local)
        restarter.start()
        with ThreadPoolExecutor(max_workers=50) as pool:
            answers = list(pool.map(lambda i: router.handle(f"req-{i}", messages[i], max_tokens=16), range(len(messages))))
        restarter.join()
    finally:
        paid.stop()
        local.stop()
    elapsed = time.perf_counter() - start
    rows = router.ledger.rows()
    assert len(answers) == len(rows) == 1000 and set(rows["request_id"]) == {f"req-{i}" for i in range(1000)}  # 0 lost
    assert all(a.outcome in ("answered", "failed") for a in answers)
    assert all(a.error for a in answers if a.outcome == "failed")  # a failure says why
    assert router.sent_to_paid_with_pii == 0 and not any(find_pii(seen["prompt"]) for seen in paid.seen)
    assert router.ledger.spent() <= cap + 1e-9 and router.ledger.reserved() == pytest.approx(0)
    assert rows["cost_usd"].sum() == pytest.approx(router.ledger.totals()["cost_usd"]) == pytest.approx(router.ledger.spent())
    assert (rows["route"] == "paid").any() and (rows["route"] == "local").any()
    assert elapsed <= 60, f"{elapsed:.0f} s"


# ---------------------------------------------------------------- difficulty
def test_difficulty_score_beats_the_baseline_on_held_out_templates():
    from helpers import finetune as ft
    from helpers.deploy import difficulty

    model = difficulty.fit(ft.load_tickets("train"))
    result = difficulty.accuracy(model, ft.load_tickets("test"))
    # the test split uses other templates and other connecting phrases than training
    assert result["low"] > result["always-simple baseline"], result
    assert 0 <= model("Where is my parcel?") < 0.5
    with pytest.raises(InputError):
        difficulty.fit([r for r in ft.load_tickets("train") if r["difficulty"] == "simple"])


def test_the_router_escalates_with_the_learned_score(tmp_path):
    from helpers import finetune as ft
    from helpers.deploy import difficulty

    model = difficulty.fit(ft.load_tickets("train"))
    hard = next(r["message"] for r in ft.load_tickets("test") if r["difficulty"] == "multi_issue" and not r["pii_spans"] and model(r["message"]) >= 0.5)
    with StandInUpstream(UpstreamConfig(median_latency_s=0.0)) as local, StandInUpstream(UpstreamConfig(median_latency_s=0.0)) as paid:
        router = make_router(tmp_path, local, paid, difficulty=model)
        assert router.handle("hard", hard, max_tokens=4).route == "paid"
        assert router.handle("easy", "Where is my parcel?", max_tokens=4).route == "local"


def test_rules_route_by_words_but_never_move_personal_data(tmp_path):
    from helpers.deploy.router import policy_from_dict

    with StandInUpstream(UpstreamConfig(median_latency_s=0.0)) as local, StandInUpstream(UpstreamConfig(median_latency_s=0.0)) as paid:
        router = make_router(tmp_path, local, paid)  # the shipped policy has a "legal threats" rule to the paid API
        legal = router.handle("l", "I will take legal action about this charge", max_tokens=4)
        private = router.handle("p", "My lawyer is at ines.rossi@mail.com", max_tokens=4)
    assert legal.route == "paid" and legal.reason == "rule: legal threats"
    assert private.route == "local" and private.reason == "personal data stays local"
    base = {"local": {"base_url": "x", "model": "m"}}
    with pytest.raises(InputError) as info:
        policy_from_dict({**base, "rules": [{"name": "r", "contains": ["a"], "route": "gpu-cluster"}]})
    assert "unknown upstream 'gpu-cluster'" in str(info.value) and "local" in info.value.fix
    with pytest.raises(InputError) as info:
        policy_from_dict({**base, "rules": [{"name": "r", "contains": [], "route": "local"}]})
    assert "contains" in str(info.value)


def test_an_upstream_answering_garbage_is_named_and_nothing_is_lost(tmp_path):
    with StandInUpstream(UpstreamConfig(median_latency_s=0.0, faults={"garbage": 1.0})) as local, \
            StandInUpstream(UpstreamConfig(median_latency_s=0.0, faults={"garbage": 1.0})) as paid:
        router = make_router(tmp_path, local, paid)
        answer = router.handle("g", "Where is my parcel?", max_tokens=4)
    assert answer.outcome == "failed" and "not an OpenAI chat completion" in answer.error and "/v1" in answer.error
    assert router.ledger.rows().set_index("request_id").loc["g", "outcome"] == "failed"


LEAKY = """
def leaky_decide(message):
    sensitive = bool(find_pii(message))
    hard = difficulty(message) >= 0.5
    order = ["paid", "local"] if hard and not sensitive else ["local", "paid"]
    return order, "leaky", False
"""


def test_the_guard_stops_a_leaky_decision_and_without_it_the_audit_sees_the_leak(tmp_path):
    from helpers.deploy import traffic
    from helpers.deploy.pii import find_pii

    scope = {"find_pii": find_pii, "difficulty": lambda m: 0.1}
    exec(LEAKY, scope)
    message = "Please call me back on (555) 314-9607 about my order"
    day = [traffic.Request("x", 0.0, message, ["(555) 314-9607"], "simple", ("phone",))]
    for guard in (True, False):
        with StandInUpstream(UpstreamConfig(median_latency_s=0.0, faults={"503": 1.0})) as local, \
                StandInUpstream(UpstreamConfig(median_latency_s=0.0)) as paid:
            router = make_router(tmp_path / str(guard), local, paid)
            router.guard, router.decide = guard, scope["leaky_decide"]
            answer = router.handle("x", message, max_tokens=4)
        audit = traffic.pii_audit(day, [seen["prompt"] for seen in paid.seen])
        if guard:
            assert answer.outcome == "failed" and "blocked" in answer.error and audit.loc["phone", "reached the paid API"] == 0
        else:
            assert answer.route == "paid" and audit.loc["phone", "reached the paid API"] == 1 and router.sent_to_paid_with_pii == 1


# ---------------------------------------------------------------- the simulated day
def test_the_day_follows_the_scenario_peak_and_is_seeded():
    from helpers import finetune as ft
    from helpers.deploy import traffic

    shares = traffic.hourly_shares(2.5)
    assert sum(shares) == pytest.approx(1) and max(shares) * 24 == pytest.approx(2.5)
    assert shares.index(max(shares)) in (12, 13) and traffic.hourly_shares(1.0) == pytest.approx([1 / 24] * 24)
    with pytest.raises(InputError):
        traffic.hourly_shares(9.0)
    rows = ft.load_tickets("test")
    day = traffic.sample_day(rows, 500, 2.5, seed=4)
    assert [r.at_s for r in day] == sorted(r.at_s for r in day) and day == traffic.sample_day(rows, 500, 2.5, seed=4)
    busy = sum(9 <= r.hour < 17 for r in day) / len(day)
    assert busy > 0.5  # business hours carry most of the day
    assert any(r.pii_values for r in day) and all(v in r.message for r in day for v in r.pii_values)
    assert all(len(r.pii_kinds) == len(r.pii_values) for r in day)


def test_replaying_a_day_with_an_outage_loses_nothing_and_bills_it(tmp_path):
    from helpers import finetune as ft
    from helpers.deploy import traffic

    day = traffic.sample_day(ft.load_tickets("test"), 120, 2.5, seed=1)
    paid = StandInUpstream(UpstreamConfig(median_latency_s=0.0, faults={"500": 0.2}, seed=2)).start()
    local = StandInUpstream(UpstreamConfig(median_latency_s=0.0, seed=3)).start()
    port = local.port
    holder = {"local": local}

    def outage():
        holder["local"].stop()

    def restart():
        holder["local"] = StandInUpstream(UpstreamConfig(median_latency_s=0.0, seed=4), port=port).start()

    try:
        router = make_router(tmp_path, local, paid, difficulty=lambda m: 0.9 if len(m) > 160 else 0.1)
        table = traffic.replay(router, day, concurrency=8, max_tokens=8, events={12.0: outage, 14.0: restart}, progress=False)
    finally:
        paid.stop()
        holder["local"].stop()
    rows = router.ledger.rows()
    assert len(table) == len(rows) == 120 and set(table["outcome"]) <= {"answered", "failed"}
    outage_hours = table[(table["hour"] >= 12) & (table["hour"] < 14)]
    detected = outage_hours["pii_kinds"].str.contains("email|phone|iban|card")
    assert (outage_hours[~outage_hours["has_pii"]]["route"] == "paid").all()  # routine traffic fell back
    assert (outage_hours[detected]["outcome"] == "failed").all()  # personal data waited: never sent
    audit = traffic.pii_audit(day, [s["prompt"] for s in paid.seen])
    assert audit[audit["detected by the router"]]["reached the paid API"].sum() == 0 and audit["values"].sum() > 0
    figures = traffic.report(table, rows, (0.15, 0.6), scale=1000)
    assert figures["lost"] == 0 and figures["day_hybrid_usd"] < figures["day_all_api_usd"]
    assert figures["day_hybrid_usd"] == pytest.approx(rows["cost_usd"].sum() * 1000)
    assert set(figures["latency"].index) <= {"local", "paid"} and figures["hourly"].shape == (24, 2)


# ---------------------------------------------------------------- the desk's model, the desk's task, quality per route
def _oracle(rows, wrong_every=0):
    """A stand-in model for the triage task: the right JSON for each known message, the wrong category on every
    ``wrong_every``-th message (0: never)."""
    import json

    from helpers import finetune as ft

    answers = {}
    for i, row in enumerate(rows):
        target = dict(row["target"])
        if wrong_every and i % wrong_every == 0:
            target["category"] = "billing" if target["category"] != "billing" else "refund"
        answers[row["message"]] = ft.target_json(target)
    return lambda prompt: next((answer for message, answer in answers.items() if prompt.endswith(message)), json.dumps({"no": "idea"}))


def test_the_desk_model_is_lab03s_tuned_model_or_the_base_named_with_lab03(tmp_path, monkeypatch):
    import json
    import shutil

    from helpers import results
    from helpers.bench.server import LocalServer
    from helpers.catalog import get_model
    from helpers.deploy import desk
    from helpers.finetune.lora import SHORT_PROMPT, SYSTEM_PROMPT
    from helpers.hardware import describe_gpu
    from helpers.plan import plan

    monkeypatch.setenv("OTS_RESULTS", str(tmp_path / "results.json"))
    p = plan("05", override="tier=cpu")
    base = desk.desk_model(p)
    assert not base.tuned and base.system_prompt == SYSTEM_PROMPT and "run Lab 03" in base.note
    merged = results.artifacts_dir("03") / "merged"
    merged.mkdir(parents=True)
    spec = get_model("smollm2-135m")
    (merged / "config.json").write_text(json.dumps({"num_hidden_layers": spec.layers, "hidden_size": spec.hidden, "vocab_size": spec.vocab}))
    tuned = desk.desk_model(p)
    assert tuned.tuned and tuned.folder == merged and tuned.system_prompt == SHORT_PROMPT and "Lab 03" in tuned.note
    (merged / "config.json").write_text(json.dumps({"num_hidden_layers": 28, "hidden_size": 3584, "vocab_size": 152064}))
    other = desk.desk_model(p)  # tuned from another base than the plan's: not served as the desk's model
    assert not other.tuned and "another base" in other.note

    # a big GPU with vLLM: the plan's vllm serve serves the merged folder as it is, under its own name
    qwen = get_model("qwen2.5-7b")
    (merged / "config.json").write_text(json.dumps({"num_hidden_layers": qwen.layers, "hidden_size": qwen.hidden, "vocab_size": qwen.vocab}))
    cli = tmp_path / "bin" / "vllm"
    cli.parent.mkdir()
    cli.write_text("#!/bin/sh\nexit 0\n")
    cli.chmod(0o755)
    monkeypatch.setenv("PATH", f"{cli.parent}:{os.environ['PATH']}")
    gpu_plan = plan("05", describe_gpu("A100-80GB"), override="model=qwen2.5-7b")
    assert gpu_plan.server == "vllm"
    deployed = desk.desk_model(gpu_plan)
    assert deployed.tuned
    import helpers.bench.server as serving

    monkeypatch.setattr(serving, "_gpu_free_fraction", lambda index=0: None)
    command = LocalServer.for_plan(gpu_plan, deployed.folder).command
    assert command[1:3] == ["serve", str(merged)] and command[command.index("--served-model-name") + 1] == str(merged)
    shutil.rmtree(merged)


def _triage_router(tmp_path, local, paid, local_stand_in=False, paid_stand_in=True, key_env="OTS_TEST_PAID_KEY"):
    from helpers.deploy.ledger import Ledger
    from helpers.deploy.router import Router, load_policy
    from helpers.finetune.lora import SHORT_PROMPT, SYSTEM_PROMPT

    os.environ.setdefault("OTS_TEST_PAID_KEY", "sk-test-not-real")
    policy = load_policy(POLICY, {"local": {"base_url": local.base_url, "model": "local", "system_prompt": SHORT_PROMPT, "stand_in": local_stand_in},
                                  "paid": {"base_url": paid.base_url, "api_key_env": key_env, "system_prompt": SYSTEM_PROMPT,
                                           "stand_in": paid_stand_in},
                                  "resilience": {"backoff_initial_s": 0.01, "backoff_max_s": 0.05}})
    return Router(policy, Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", monthly_cap_usd=50.0),
                  difficulty=lambda m: 0.9 if len(m) > 150 else 0.1)


def test_the_day_is_the_desks_task_scored_per_route_and_a_stand_in_is_not_measured(tmp_path):
    from helpers import finetune as ft
    from helpers.deploy import desk, traffic

    rows = ft.load_tickets("test")
    day = traffic.sample_day(rows, 40, 2.5, seed=3)
    assert all(r.target is not None for r in day)
    with StandInUpstream(UpstreamConfig(median_latency_s=0.0, answer=_oracle(rows, wrong_every=4))) as local, \
            StandInUpstream(UpstreamConfig(median_latency_s=0.0)) as paid:
        router = _triage_router(tmp_path, local, paid)
        table = traffic.replay(router, day, concurrency=4, max_tokens=40, progress=False)
        desk.ask(local.base_url, local.model, "Where is my parcel?")  # Lab 05's first call, greedy too
        assert local.seen[-1]["temperature"] == 0.0
        local.seen.pop()
    assert all(prompt.startswith(ft.SHORT_PROMPT) for prompt in router.sent["local"])  # the tuned model's own prompt
    assert all(seen["prompt"].startswith(ft.SYSTEM_PROMPT) for seen in paid.seen)  # the schema for a general model
    # greedy on both routes, as the labs measured (a server's own default may sample: llama.cpp's is 0.8)
    assert {seen["temperature"] for seen in local.seen + paid.seen} == {0.0}
    figures = traffic.report(table, router.ledger.rows(), (0.15, 0.6), scale=100)
    quality = figures["quality"]
    local_rows = table[(table["route"] == "local") & (table["outcome"] == "answered")]
    wrong = {row["message"] for i, row in enumerate(rows) if i % 4 == 0}
    expected = sum(r.message not in wrong for r in day if r.request_id in set(local_rows["request_id"]))
    assert quality.loc["local", "status"] == "measured" and quality.loc["local", "scored"] == len(local_rows) > 10
    assert quality.loc["local", "correct"] == expected and quality.loc["local", "low"] < quality.loc["local", "accuracy"] < 1
    assert quality.loc["paid", "status"] == desk.NOT_MEASURED and pd.isna(quality.loc["paid", "accuracy"])
    ledger = router.ledger.rows().set_index("request_id")
    assert ledger.loc[local_rows["request_id"], "correct"].sum() == expected
    assert ledger[ledger["route"] == "paid"]["correct"].isna().all()  # a stand-in's sentence is never scored as a 0
    values, _ = traffic.key_results(figures, traffic.monthly_bills(figures), traffic.pii_audit(day, traffic_prompts(paid)))
    assert values["local accuracy rate"] == pytest.approx(expected / len(local_rows)) and values["paid accuracy status"] == desk.NOT_MEASURED
    assert "all accuracy rate" not in values and values["pii values in the day"] == sum(len(r.pii_values) for r in day)

    # the same day where the paid side answers the task (a real endpoint): now both routes are measured
    with StandInUpstream(UpstreamConfig(median_latency_s=0.0, answer=_oracle(rows, wrong_every=4))) as local, \
            StandInUpstream(UpstreamConfig(median_latency_s=0.0, answer=_oracle(rows))) as paid:
        router = _triage_router(tmp_path / "real", local, paid, paid_stand_in=False)
        table = traffic.replay(router, day, concurrency=4, max_tokens=40, progress=False)
    quality = traffic.report(table, router.ledger.rows(), (0.15, 0.6), scale=100)["quality"]
    assert quality.loc["paid", "status"] == "measured" and quality.loc["paid", "accuracy"] == 1.0


def traffic_prompts(paid):
    return [seen["prompt"] for seen in paid.seen]


def test_a_real_paid_api_is_configured_by_environment_only_and_its_key_never_shows(tmp_path, monkeypatch, capsys):
    from helpers import finetune as ft
    from helpers.deploy import desk, traffic
    from helpers.deploy.upstream import RealEndpoint, paid_prompts, paid_upstream

    secret = "-".join(["sk", "live", "do", "not", "print", "4242"])  # built here: no key-shaped string in the repository
    with pytest.raises(InputError) as missing:
        paid_upstream(environ={"OTS_PAID_MODEL": "gpt-4o-mini"})
    assert "OPENAI_API_KEY" in missing.value.problem and "never in a notebook cell" in missing.value.fix
    with pytest.raises(InputError) as unpriced:
        paid_upstream(environ={"OTS_PAID_MODEL": "my-own-model", "OPENAI_API_KEY": secret})
    assert "OTS_PAID_PRICE_MODEL" in unpriced.value.fix and secret not in str(unpriced.value)
    stand_in = paid_upstream(environ={})
    try:
        assert stand_in.stand_in and "published latency" in stand_in.provenance
    finally:
        stand_in.stop()

    rows = ft.load_tickets("test")
    day = traffic.sample_day(rows, 24, 2.5, seed=5)
    monkeypatch.setenv("OTS_TEST_REAL_KEY", secret)
    with StandInUpstream(UpstreamConfig(median_latency_s=0.0, faults={"503": 1.0})) as local, \
            StandInUpstream(UpstreamConfig(median_latency_s=0.0, answer=_oracle(rows))) as api:
        real = paid_upstream(environ={"OTS_PAID_MODEL": "gpt-4o-mini", "OTS_PAID_BASE_URL": api.base_url,
                                      "OTS_PAID_KEY_ENV": "OTS_TEST_REAL_KEY", "OTS_TEST_REAL_KEY": secret})
        assert isinstance(real, RealEndpoint) and not real.stand_in and secret not in repr(real)
        overrides = desk.policy_overrides(local, real, desk.DeskModel(tmp_path, True, ft.SHORT_PROMPT, "test"), "gpt-4o", 1.0)
        assert overrides["paid"]["api_key_env"] == "OTS_TEST_REAL_KEY" and secret not in str(overrides)
        from helpers.deploy.ledger import Ledger
        from helpers.deploy.router import Router, load_policy

        router = Router(load_policy(POLICY, overrides), Ledger(f"sqlite:///{tmp_path / 'l.db'}", monthly_cap_usd=1.0))
        table = traffic.replay(router, day, concurrency=4, max_tokens=40, progress=False)  # local down: routine traffic goes paid
    assert all(seen["authorization"] for seen in api.seen)
    figures = traffic.report(table, router.ledger.rows(), (0.15, 0.6), scale=100)
    assert figures["quality"].loc["paid", "status"] == "measured" and figures["quality"].loc["paid", "accuracy"] == 1.0
    audit = traffic.pii_audit(day, paid_prompts(real, router))  # a real API: what the router put on the wire to it
    assert audit[audit["detected by the router"].astype(bool)]["reached the paid API"].sum() == 0
    values, _ = traffic.key_results(figures, traffic.monthly_bills(figures), audit, paid=real)
    assert values["paid upstream"].startswith("measured: gpt-4o-mini")
    everything = " ".join([str(values), table.to_csv(), router.ledger.rows().to_csv(), capsys.readouterr().out, str(figures)])
    assert secret not in everything


def _luhn_complete(prefix: str, length: int = 16, fill: str = "4817302659") -> str:
    """A card-shaped number starting with ``prefix`` whose last digit makes the Luhn checksum right."""
    body = (prefix + fill * 2)[: length - 1]

    def luhn_sum(digits: str) -> int:
        total = 0
        for i, d in enumerate(reversed(digits)):
            d = int(d) * (2 if i % 2 == 1 else 1)
            total += d - 9 if d > 9 else d
        return total

    check = next(c for c in "0123456789" if luhn_sum(body + c) % 10 == 0)
    text = body + check
    return " ".join(text[i:i + 4] for i in range(0, length, 4))


@pytest.mark.parametrize("prefix", ["2221", "2300", "2599", "2720"])
def test_mastercard_2_series_cards_are_found_and_dates_are_not_phones(prefix):
    from helpers.deploy import pii

    card = _luhn_complete(prefix + "00")
    assert [f.kind for f in pii.find_pii(f"I was charged twice on {card}, please refund")] == ["card"]
    wrong_check = card[:-1] + str((int(card[-1]) + 1) % 10)
    assert pii.find_pii(f"reference {wrong_check}") == []  # Luhn still decides
    assert pii.find_pii(_luhn_complete("2800") + " is an order number") == []  # outside 2221-2720
    for date in ("12.05.2024", "05/12/2024", "2024-05-12"):
        assert pii.find_pii(f"It was delivered on {date} but broken") == [], date


def test_a_burst_of_first_requests_builds_the_analyzer_once(monkeypatch):
    import threading

    from helpers.deploy import pii

    builds = []
    real = pii._build_analyzer
    monkeypatch.setattr(pii, "_ANALYZER", None)
    monkeypatch.setattr(pii, "_build_analyzer", lambda: builds.append(1) or real())
    got = []
    threads = [threading.Thread(target=lambda: got.append(pii.analyzer())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1 and len({id(a) for a in got}) == 1


def test_the_budget_is_a_ceiling_even_when_the_api_counts_every_byte(tmp_path):
    """The reservation is an upper bound (bytes, chat overhead, max_tokens), so settling never passes the cap, even
    against an upstream that bills more tokens than any real tokenizer makes."""
    from helpers.deploy.ledger import Ledger
    from helpers.deploy.router import Router, load_policy

    os.environ.setdefault("OTS_TEST_PAID_KEY", "sk-test-not-real")
    message = "I have several problems: my invoice is wrong, the app crashes and my parcel is late. " * 3
    with StandInUpstream(UpstreamConfig(median_latency_s=0.0)) as local, \
            StandInUpstream(UpstreamConfig(median_latency_s=0.002, tokens="bytes", seed=3)) as paid:
        policy = load_policy(POLICY, {"local": {"base_url": local.base_url, "model": "local"},
                                      "paid": {"base_url": paid.base_url, "api_key_env": "OTS_TEST_PAID_KEY", "system_prompt": "Triage it."},
                                      "routing": {"fallback_paid_to_local": False}})
        router = Router(policy, Ledger(f"sqlite:///{tmp_path / 'l.db'}"), difficulty=lambda m: 1.0)
        one = router._estimate(message, 16)
        policy.monthly_cap_usd = router.ledger.cap = one * 40.5  # room for about 40 paid calls
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(30) as pool:
            answers = list(pool.map(lambda i: router.handle(f"r{i}", message, max_tokens=16), range(120)))
    spent = router.ledger.spent()
    assert spent <= router.ledger.cap + 1e-12, (spent, router.ledger.cap)
    answered = sum(a.outcome == "answered" for a in answers)
    assert 30 <= answered < 120 and any("cap" in a.error for a in answers if a.outcome == "failed")
    rows = router.ledger.rows()
    assert (rows.loc[rows["route"] == "paid", "cost_usd"] <= one + 1e-12).all()  # no call cost more than its reservation


def test_the_policys_cap_applies_and_a_renamed_section_is_named(tmp_path):
    from helpers.deploy.ledger import Ledger
    from helpers.deploy.router import Router, load_policy, policy_from_dict

    os.environ.setdefault("OTS_TEST_PAID_KEY", "sk-test-not-real")
    with StandInUpstream(UpstreamConfig(median_latency_s=0.0, faults={"503": 1.0})) as local, \
            StandInUpstream(UpstreamConfig(median_latency_s=0.0)) as paid:
        policy = load_policy(POLICY, {"local": {"base_url": local.base_url}, "budget": {"monthly_cap_usd": 0.0},
                                      "paid": {"base_url": paid.base_url, "api_key_env": "OTS_TEST_PAID_KEY"}})
        router = Router(policy, Ledger(f"sqlite:///{tmp_path / 'l.db'}"))  # a ledger built without a cap of its own
        answer = router.handle("x", "How do I reset my router?")
    assert answer.outcome == "failed" and "cap" in answer.error and paid.seen == []
    with pytest.raises(InputError) as renamed:
        policy_from_dict({"local": {"base_url": "x", "model": "m"}, "paid_api": {"base_url": "y", "model": "n"},
                          "rules": [{"name": "legal", "contains": ["lawyer"], "route": "paid"}]})
    assert "unknown section(s) ['paid_api']" in renamed.value.problem and "renamed" in renamed.value.fix


def test_an_empty_day_is_refused_by_name_not_a_key_error(tmp_path):
    import pandas as pd

    from helpers.deploy import traffic

    with pytest.raises(InputError) as empty:
        traffic.replay(object(), [], progress=False)
    assert "empty day" in empty.value.problem
    with pytest.raises(InputError) as report:
        traffic.report(pd.DataFrame(columns=["request_id"]), pd.DataFrame(), (0.15, 0.6), scale=100)
    assert "empty" in report.value.problem


def test_names_and_addresses_are_found_where_a_ner_pipeline_is_installed(tmp_path, monkeypatch):
    """With a spaCy pipeline that has NER (here a small one the test builds: an entity ruler), Presidio's spaCy
    recognizer adds names and addresses; without one they are not claimed (the lab measures the gap)."""
    import spacy

    from helpers.deploy import pii

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "PERSON", "pattern": "Ines Rossi"}, {"label": "PERSON", "pattern": "Tomasz Nowak"},
                        {"label": "FAC", "pattern": "14 Harbour Lane"}])
    folder = tmp_path / "ner-pipeline"
    nlp.to_disk(folder)
    monkeypatch.setattr(pii, "_ANALYZER", None)
    monkeypatch.setattr(pii, "_NER", {"model": None})
    monkeypatch.setenv(pii.NER_ENV, str(folder))
    text = "Hi, this is Ines Rossi, please send the replacement to 14 Harbour Lane, or mail ines.rossi@mail.com"
    found = {(f.kind, text[f.start:f.end]) for f in pii.find_pii(text)}
    assert ("name", "Ines Rossi") in found and ("address", "14 Harbour Lane") in found and ("email", "ines.rossi@mail.com") in found
    assert set(pii.kinds()) == {"email", "phone", "iban", "card", "name", "address"}
    assert "<NAME>" in pii.redact(text) and "Ines Rossi" not in pii.redact(text)
    monkeypatch.setattr(pii, "_ANALYZER", None)
    monkeypatch.setenv(pii.NER_ENV, "none")  # turned off: names are not claimed
    assert not any(f.kind == "name" for f in pii.find_pii(text)) and "name" not in pii.kinds()
    monkeypatch.setenv(pii.NER_ENV, str(tmp_path / "missing"))
    with pytest.raises(InputError, match="OTS_PII_SPACY_MODEL"):
        pii.ner_model()
    monkeypatch.setattr(pii, "_ANALYZER", None)  # the next test builds the default analyzer again
