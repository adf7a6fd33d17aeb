"""Lab 04's peer harnesses: GuideLLM's report read in the kit's terms, the 15 % rule and its repetitions, and the
lm-eval task's scoring and agreement rule. The runs themselves, GuideLLM's sweep and lm_eval on a real
`transformers serve`, are the solution notebook's checked cells, which run in CI (one server, measured once)."""
from __future__ import annotations

import importlib.util
import json
import sys

import pandas as pd
import pytest

from helpers import finetune as ft
from helpers.bench import peers
from helpers.paths import REPO_ROOT


def _request(ttft_ms, itl_ms, tokens, latency):
    return {"time_to_first_token_ms": ttft_ms, "inter_token_latency_ms": itl_ms, "output_tokens": tokens, "request_latency": latency}


def test_guidellm_report_is_read_with_its_itl_as_the_kits_tpot():
    report = {"benchmarks": [{
        "config": {"strategy": {"streams": 2}}, "duration": 4.0,
        "requests": {"successful": [_request(200, 50, 11, 0.7), _request(400, 70, 11, 1.1), _request(300, 60, 1, 0.3)],
                     "errored": [{}], "incomplete": []}}]}
    row = peers.guidellm_rows(report)[0]
    assert row["concurrency"] == 2 and row["requests"] == 4 and row["errors"] == 1
    assert row["requests/s"] == pytest.approx(3 / 4.0) and row["output tokens/s"] == pytest.approx(23 / 4.0)
    assert row["ttft s p50"] == pytest.approx(0.3) and row["e2e s p50"] == pytest.approx(0.7)
    # ITL (last - first token) / (tokens - 1) is the kit's TPOT; a one-token reply has none
    assert row["tpot s p50"] == pytest.approx(0.06)


def test_load_comparison_flags_a_metric_beyond_the_tolerance():
    kit = pd.DataFrame({m: [1.0] for m in peers.LOAD_METRICS}, index=pd.Index([1], name="concurrency"))
    peer = kit.copy()
    peer.loc[1, "ttft s p50"] = 1.25  # kit / GuideLLM = 0.8: outside 15 %
    peer.loc[1, "requests/s"] = 0.9  # 1.11: inside
    table = peers.compare_load(kit, peer)
    assert not table.loc[(1, "ttft s p50"), "within"] and table.loc[(1, "requests/s"), "within"]
    assert table["within"].sum() == len(peers.LOAD_METRICS) - 1


def test_scenario_sends_the_kits_prompts_budget_and_greedy_decoding(tmp_path):
    scenario = peers.guidellm_scenario("http://127.0.0.1:9/v1", "m", tmp_path / "d.json", tmp_path / "o.json", [1, 2], 6, 16)
    backend = scenario["spec"]["backend"]
    assert backend["target"] == "http://127.0.0.1:9" and backend["max_tokens"] == 16
    assert backend["extras"]["body"]["temperature"] == 0.0
    assert scenario["spec"]["profile"]["streams"] == [1, 2] and scenario["spec"]["constraints"][0]["count"] == 6


def test_a_missing_peer_names_the_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "guidellm" else real(name, *a))
    assert peers.peer_status()["guidellm"].startswith("not installed: pip install 'guidellm")
    with pytest.raises(peers.PeerError, match="guidellm is not installed") as error:
        peers.guidellm_sweep("http://127.0.0.1:9/v1", "m", ["hi"], [1], 2, 4, "/tmp/unused")
    assert "pip install" in error.value.fix


def test_a_peer_that_fails_reports_its_last_lines():
    with pytest.raises(peers.PeerError, match=r"a missing tool failed \(exit 1\)") as error:
        peers.run_tool(["this_module_does_not_exist_ots"], "a missing tool", timeout_s=60, progress=False)
    assert "No module named" in str(error.value)


def test_lm_eval_task_scores_like_the_kit_and_uses_the_kits_answer_format():
    sys.path.insert(0, str(peers.LM_EVAL_TASKS))
    try:
        import utils as task
    finally:
        sys.path.pop(0)
    rows = ft.load_tickets("test")[:3]
    replies = [ft.target_json(rows[0]["target"]),  # right
               json.dumps({**rows[1]["target"], "category": "billing" if rows[1]["target"]["category"] != "billing" else "refund"}),
               '{"category": "billing"}']  # not all five keys: wrong everywhere, in both
    kit = ft.row_verdicts(replies, rows)
    for row, reply, verdict in zip(rows, replies, kit):
        scored = task.process_results(row, [reply])
        assert scored == {"valid_json": float(verdict["valid JSON"]), "category": float(verdict["category"]),
                          "product": float(verdict["product"])}
        assert task.doc_to_target(row) == ft.target_json(row["target"])  # few-shot turns show the answer as Lab 03 trains it
    yaml_text = (peers.LM_EVAL_TASKS / "support_desk_triage.yaml").read_text()
    assert "datasets/support_desk/test.jsonl" in yaml_text and (REPO_ROOT / "datasets/support_desk/test.jsonl").exists()


def test_quality_agreement_is_the_interval_and_row_by_row():
    rows = ft.load_tickets("test")[:4]
    replies = [ft.target_json(r["target"]) for r in rows[:2]] + ["no", "no"]
    kit = ft.evaluate(replies, rows)
    verdicts = dict(zip((r["id"] for r in rows), ft.row_verdicts(replies, rows)))
    per_row = {r["id"]: {"valid_json": float(i < 2), "category": float(i < 2), "product": float(i < 2)} for i, r in enumerate(rows)}
    agree = peers.compare_quality(kit, verdicts, {"scores": {"valid_json": 0.5, "category": 0.5, "product": 0.5}, "per_row": per_row, "rows": 4})
    assert agree["agree"].all() and set(agree["same verdict rows"]) == {"4/4"}
    far = peers.compare_quality(kit, verdicts, {"scores": {"valid_json": 1.0, "category": 0.0, "product": 0.5}, "per_row": per_row, "rows": 4})
    assert list(far["agree"]) == [False, False, True]


def test_quick_mode_skips_the_peer_runs_and_says_so(capsys):
    from helpers.bench.compare import bench_settings
    from helpers.plan import plan

    table, attempts = peers.cross_check_load(None, ["hi"], [1], 2, 4, "/unused", attempts=0)
    assert attempts == 0 and table.empty and "skipped in quick mode" in capsys.readouterr().out
    quality, what = peers.quality_cross_check_for(plan("04", override="tier=cpu"), None, None, None, 0, "/unused")
    assert quality.empty and "skipped in quick mode" in what and bool(quality["agree"].all())
    assert bench_settings(plan("04", override="tier=cpu")).peer_rows > 0


def test_lm_eval_command_keeps_keys_off_the_command_line(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-do-not-print")
    command = peers.lm_eval_command("http://127.0.0.1:9/v1", "m", 4, REPO_ROOT / "out", ft.SHORT_PROMPT, few_shot=2)
    assert "sk-secret" not in " ".join(command)
    assert command[command.index("--limit") + 1] == "4" and "--fewshot_as_multiturn" in command
    assert "base_url=http://127.0.0.1:9/v1/chat/completions" in command[command.index("--model_args") + 1]


def test_lm_eval_entry_point_indexes_only_the_kits_tasks():
    """The kit runs lm_eval's own CLI through helpers.bench.lm_eval_main: the kit's task is found, lm_eval's
    thousands of built-in tasks are not indexed (9 s a start on the CI machine)."""
    import subprocess
    import sys

    probe = ("from helpers.bench.lm_eval_main import TaskManager, index_only_included_tasks\n"
             "folder = {!r}\n"
             "index_only_included_tasks()\n"
             "print('after', TaskManager(include_path=folder).all_tasks)").format(str(peers.LM_EVAL_TASKS))
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    # without the entry point's setting the index also holds lm_eval's own tasks (hellaswag, mmlu, ...)
    assert out.stdout.strip().splitlines()[-1] == f"after {[peers.LM_EVAL_TASK]}"
    assert peers.lm_eval_command("http://127.0.0.1:9/v1", "m", 4, REPO_ROOT / "out", ft.SHORT_PROMPT)[0] == "helpers.bench.lm_eval_main"


def test_repetitions_keep_each_metrics_best_agreement(monkeypatch, tmp_path):
    """A metric that agrees in one repetition is not failed by noise in another; one that never agrees fails."""
    import helpers.bench.sweep as sweep_module

    index = pd.Index([1], name="concurrency")
    kits = iter([{"requests/s": 1.0, "tpot s p50": 1.3}, {"requests/s": 1.4, "tpot s p50": 1.0}])
    monkeypatch.setattr(sweep_module, "sweep", lambda *a, **k: (pd.DataFrame({m: [1.0] for m in peers.LOAD_METRICS} | next(kits), index=index), []))
    monkeypatch.setattr(peers, "guidellm_sweep", lambda *a, **k: pd.DataFrame({m: [1.0] for m in peers.LOAD_METRICS}, index=index))

    class Engine:
        name, base_url, model = "served", "http://127.0.0.1:9/v1", "m"

    table, attempts = peers.cross_check_load(Engine(), ["hi"], [1], 2, 4, tmp_path, attempts=2, progress=False)
    assert attempts == 2 and table["within"].all()
    assert table.loc[(1, "requests/s"), "attempt"] == 1 and table.loc[(1, "tpot s p50"), "attempt"] == 2
    kits = iter([{"tpot s p50": 1.3}, {"tpot s p50": 1.4}])
    table, _ = peers.cross_check_load(Engine(), ["hi"], [1], 2, 4, tmp_path, attempts=2, progress=False)
    assert not table.loc[(1, "tpot s p50"), "within"]
