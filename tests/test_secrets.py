"""Secrets never land in outputs: no key-shaped string in anything the repository ships, and an API key given to
the router stays out of its ledger, its errors and what it prints, even when every call fails."""
import re
import secrets
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# key shapes of the services a learner may use: OpenAI / Anthropic-style, Hugging Face, AWS, bearer headers, PEM keys
KEY_SHAPES = re.compile(r"sk-(?:ant-)?[A-Za-z0-9_-]{20,}|hf_[A-Za-z0-9]{30,}|AKIA[0-9A-Z]{16}|Bearer\s+[A-Za-z0-9._~+/-]{20,}|"
                        r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
SHIPPED = (".ipynb", ".py", ".csv", ".json", ".jsonl", ".md", ".toml", ".yml", ".yaml", ".txt", ".cfg", ".sh")


def key_shaped(text: str) -> list[str]:
    return KEY_SHAPES.findall(text)


def test_the_key_patterns_catch_what_they_are_for():
    planted = ["sk-" + "a1B2" * 6, "sk-ant-api03-" + "x" * 24, "hf_" + "Ab3" * 11, "AKIA" + "ABCDEFGHIJKLMNOP",
               "Authorization: Bearer " + "eyJhbGciOi" * 3, "-----BEGIN RSA PRIVATE KEY-----"]
    assert all(key_shaped(f"output: {p} end") for p in planted)
    # what the kit itself writes in examples and tests must not look like a key
    assert not key_shaped("api_key='not-needed-on-loopback' sk-test-not-real OTS_STANDIN_KEY hf_hub_download")


def test_nothing_the_repository_ships_holds_a_key():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    found = {}
    for name in files:
        if name.endswith(SHIPPED) and name != "tests/test_secrets.py":
            hits = key_shaped((ROOT / name).read_text(errors="replace"))
            if hits:
                found[name] = hits[:3]
    assert not found, f"key-shaped strings in shipped files (notebook outputs included): {found}"


def test_a_key_given_to_the_router_stays_out_of_its_ledger_errors_and_output(tmp_path, monkeypatch, capfd, caplog):
    from helpers.bench.server import free_port
    from helpers.deploy.ledger import Ledger
    from helpers.deploy.router import Router, load_policy
    from helpers.deploy.upstream import StandInUpstream, UpstreamConfig

    key = "sk-" + secrets.token_urlsafe(32)
    monkeypatch.setenv("OTS_TEST_SECRET_KEY", key)
    policy_file = ROOT / "datasets" / "deploy" / "policy.toml"
    db = tmp_path / "ledger.db"
    with StandInUpstream(UpstreamConfig(median_latency_s=0.0, faults={"500": 1.0})) as paid:
        down = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: the local side is down
        policy = load_policy(policy_file, {"local": {"base_url": down, "model": "local"},
                                           "paid": {"base_url": paid.base_url, "api_key_env": "OTS_TEST_SECRET_KEY"},
                                           "resilience": {"max_retries": 1, "backoff_initial_s": 0.01, "backoff_max_s": 0.02}})
        router = Router(policy, Ledger(f"sqlite:///{db}", monthly_cap_usd=1.0), difficulty=lambda m: 0.9)
        answers = [router.handle(f"r{i}", message, max_tokens=4) for i, message in
                   enumerate(["I have several problems with my order and my bill", "Where is my parcel?"])]
        assert paid.seen and all(seen["authorization"] for seen in paid.seen)  # a key did go out, to the API itself
    assert all(a.outcome == "failed" for a in answers)
    rows = Ledger(f"sqlite:///{db}").rows()
    printed = capfd.readouterr()
    leaks = {"ledger rows": key in rows.to_csv(), "ledger file": key.encode() in b"".join(p.read_bytes() for p in tmp_path.glob("ledger.db*")),
             "answers": any(key in repr(a) for a in answers), "policy": key in repr(policy),
             "stdout/stderr": key in printed.out + printed.err, "logs": key in caplog.text}
    assert not any(leaks.values()), leaks
