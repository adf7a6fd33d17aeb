"""The capstone's decision memo: inputs traced to their lab run, options with intervals, risks, a computed
recommendation, and the HTML report; with every lab, and with none."""
import pandas as pd
import pytest

from helpers import memo

FULL = {"01": {"api model": {"value": "gpt-4o", "tier": "cpu", "recorded": "2026-11-23T08:00:00"}},
        "04": {"measured efficiency": {"value": 0.5, "tier": "local-gpu", "recorded": "2026-11-23T09:00:00"}},
        "05": {"share paid": {"value": 0.3, "tier": "cpu", "recorded": "2026-11-23T10:00:00"},
               "pii values to paid API (detected kinds)": {"value": 0, "tier": "cpu", "recorded": "2026-11-23T10:00:00"}}}


def test_inputs_name_their_lab_run_or_the_lab_to_run():
    table = memo.inputs(FULL)
    assert table.loc["API model priced", "source"] == "your Lab 01, cpu tier, 2026-11-23"
    assert table.loc["measured share of the bandwidth roofline", "value"] == 0.5
    empty = memo.inputs({})
    assert empty["source"].str.startswith("missing: run Lab").all() and empty["value"].isna().all()


def test_options_use_the_stored_numbers_and_have_intervals():
    summary, draws = memo.options(memo.inputs(FULL), samples=60)
    assert list(summary.index) == ["all-API", "self-hosted", "hybrid"] and len(draws) == 60
    assert (summary["low (5%)"] <= summary["median"]).all() and (summary["median"] <= summary["high (95%)"]).all()
    assert summary.attrs["paid_share"] == 0.3 and summary.attrs["bandwidth_efficiency"] == 0.5
    more_paid = memo.options(memo.inputs({**FULL, "05": {"share paid": {"value": 0.9, "tier": "cpu", "recorded": "x"}}}), samples=60)[0]
    assert more_paid.loc["hybrid", "median"] > summary.loc["hybrid", "median"]  # the router's split moves the hybrid's cost
    assert memo.options(memo.inputs({}), samples=20)[0].attrs["paid_share"] == 0.2  # default, with nothing stored


def test_risks_are_the_verdicts_that_are_not_a_plain_holds():
    claims = pd.DataFrame({"says": ["a", "b", "c", "d"], "lab": ["01"] * 4,
                           "verdict": ["holds", "holds only if x", "does not hold", "cannot tell yet"]}, index=["C1", "C2", "C3", "C4"])
    assert list(memo.risks(claims).index) == ["C2", "C3", "C4"]


def _summary(api, self_hosted, hybrid, spread=0.1):
    frame = pd.DataFrame({"median": [api, self_hosted, hybrid]}, index=["all-API", "self-hosted", "hybrid"])
    frame["low (5%)"], frame["high (95%)"] = frame["median"] * (1 - spread), frame["median"] * (1 + spread)
    frame.attrs["paid_share"] = 0.2
    return frame[["low (5%)", "median", "high (95%)"]]


def test_the_recommendation_follows_the_numbers():
    measured = pd.DataFrame({"value": [0.6, 0]}, index=["ticket category accuracy after LoRA", "detected personal data sent to the paid API"])
    none = pd.DataFrame(columns=["says", "lab", "verdict"])
    assert memo.recommend(_summary(100, 200, 150), measured, none).startswith("No-go")
    go = memo.recommend(_summary(100, 30, 50), measured, none)
    assert go.startswith("Go with the self-hosted option") and "interval lies entirely below" in go and "hybrid costs $20" in go
    assert "intervals overlap" in memo.recommend(_summary(100, 80, 90, spread=0.5), measured, none)
    leaking = measured.copy()
    leaking.loc["detected personal data sent to the paid API", "value"] = 3
    assert "only after fixing the router" in memo.recommend(_summary(100, 30, 50), leaking, none)
    unmeasured = measured.copy()
    unmeasured.loc["ticket category accuracy after LoRA", "value"] = None
    assert "quality has not been measured yet" in memo.recommend(_summary(100, 30, 50), unmeasured, none)


def test_the_report_is_one_self_contained_html_file(tmp_path, monkeypatch):
    monkeypatch.setenv("OTS_RESULTS", str(tmp_path / "results.json"))
    monkeypatch.setenv("OTS_LEDGER", str(tmp_path / "ledger.csv"))
    m = memo.build(samples=30)  # nothing stored, no verdicts: still a memo, naming what is missing
    path = memo.render_html(m)
    text = path.read_text()
    assert path == tmp_path / "decision_memo.html" and "data:image/png;base64," in text
    assert "Missing inputs" in text and "Recommendation" in text and "Risks" in text
    assert "<script" not in text


def test_a_quick_run_writes_its_own_memo(tmp_path, monkeypatch):
    monkeypatch.setenv("OTS_RESULTS", str(tmp_path / "results.json"))
    monkeypatch.setenv("OTS_LEDGER", str(tmp_path / "ledger.csv"))
    monkeypatch.setenv("OTS_QUICK", "1")
    assert memo.render_html(memo.build(samples=30)) == tmp_path / "decision_memo.quick.html"
