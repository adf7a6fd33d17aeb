"""The learner's results store: saved by one lab, read by the next, never silently lost."""
import json

import pytest

from helpers import results
from helpers.errors import InputError
from helpers.hardware import cpu_hardware
from helpers.plan import plan


def test_save_then_get_with_units_and_where_it_came_from(tmp_path):
    path = tmp_path / "results.json"
    p = plan("02", cpu_hardware(), override="tier=cpu")
    results.save("02", {"decode tokens/s fp32": 41.5, "best precision": "int8"}, units={"decode tokens/s fp32": "tokens/s"}, plan=p, path=path)
    results.save(2, {"decode tokens/s fp32": 43.0}, path=path)  # saved again: replaced, the other kept
    assert results.get("02", "decode tokens/s fp32", path=path) == 43.0
    assert results.get("02_quantized_inference", "best precision", path=path) == "int8"
    stored = json.loads(path.read_text())["02"]["best precision"]
    assert stored["tier"] == "cpu" and stored["hardware"] == p.hardware and stored["recorded"]
    frame = results.table(path)
    assert frame.loc[("02", "decode tokens/s fp32"), "value"] == 43.0


def test_missing_value_names_the_lab_to_run_or_takes_a_default(tmp_path):
    path = tmp_path / "results.json"
    with pytest.raises(InputError) as info:
        results.get("03", "category accuracy after", path=path)
    assert "run Lab 03" in info.value.fix
    assert results.get("03", "category accuracy after", default=None, path=path) is None


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), [1, 2], {"a": 1}])
def test_values_that_cannot_be_results_are_refused(tmp_path, bad):
    with pytest.raises(InputError):
        results.save("01", {"x": bad}, path=tmp_path / "r.json")


def test_a_corrupt_store_is_reported_not_reset(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("{not json")
    with pytest.raises(InputError) as info:
        results.save("01", {"x": 1.0}, path=path)
    assert "move it aside" in info.value.fix and path.read_text() == "{not json"


def test_numpy_scalars_are_saved_as_numbers(tmp_path):
    import numpy as np

    path = tmp_path / "r.json"
    results.save("04", {"ttft p50 s": np.float64(0.25), "requests": np.int64(12)}, path=path)
    assert results.get("04", "requests", path=path) == 12 and isinstance(results.get("04", "ttft p50 s", path=path), float)


def test_artifacts_are_kept_whole_and_quick_runs_apart(tmp_path, monkeypatch):
    from helpers import results

    monkeypatch.setenv("OTS_RESULTS", str(tmp_path / "store" / "results.json"))
    assert results.artifact("03", "merged") is None
    first = tmp_path / "first"
    first.mkdir()
    (first / "config.json").write_text("1")
    (first / "old-only.txt").write_text("x")
    kept = results.keep_artifact("03", "merged", first)
    assert kept == tmp_path / "store" / "artifacts" / "03" / "merged" and (kept / "config.json").read_text() == "1"
    assert not first.exists()  # moved, not copied: no half-gigabyte model left behind in a temp folder per run
    second = tmp_path / "second"
    second.mkdir()
    (second / "config.json").write_text("2")
    results.keep_artifact(3, "merged", second)
    # replaced whole: nothing of the old folder survives, no staging folders are left behind
    assert sorted(p.name for p in kept.iterdir()) == ["config.json"] and (kept / "config.json").read_text() == "2"
    assert [p.name for p in kept.parent.iterdir()] == ["merged"]
    assert results.artifact("03", "merged", quick=True) is None
    assert not second.exists()  # sources are moved, not copied


_WRITER = """
import sys
from pathlib import Path
from helpers import ledger, results
store, claims, worker = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
for i in range(20):
    results.save("0" + worker, {f"value {i}": i}, path=store)
for claim in list(ledger.seed_claims())[:10]:
    ledger.record(claim, "holds", f"worker {worker}", "0" + worker, path=claims)
"""


def test_labs_saving_at_once_keep_every_value(tmp_path):
    """CI's two workers (or a learner's two notebooks) save at the same time: no write may lose another's."""
    import subprocess
    import sys

    from helpers import ledger
    from helpers.paths import REPO_ROOT

    store, claims = tmp_path / "results.json", tmp_path / "ledger.csv"
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(store), str(claims), str(w)], cwd=REPO_ROOT)
               for w in range(1, 5)]
    assert all(w.wait(timeout=120) == 0 for w in writers)
    saved = results.load(store)
    assert {lab: len(values) for lab, values in saved.items()} == {f"0{w}": 20 for w in range(1, 5)}
    rows = ledger._read(claims)
    assert len(rows) == 40 and {r["lab"] for r in rows} == {"01", "02", "03", "04"}


def test_quick_runs_write_beside_the_full_store_and_read_over_it(tmp_path, monkeypatch):
    """CI's student copies run CI-sized: their numbers must not replace a full run's, which the capstone quotes."""
    from helpers import ledger

    monkeypatch.setenv("OTS_RESULTS", str(tmp_path / "results.json"))
    monkeypatch.setenv("OTS_LEDGER", str(tmp_path / "ledger.csv"))
    results.save("03", {"category accuracy after": 0.5, "steps": 12})
    ledger.record("C12", "holds", "full run", "03")
    monkeypatch.setenv("OTS_QUICK", "1")
    results.save("03", {"category accuracy after": 0.1})
    ledger.record("C12", "cannot tell yet", "quick run", "03")
    assert results.results_path() == tmp_path / "results.quick.json"
    assert results.get("03", "category accuracy after") == 0.1 and results.get("03", "steps") == 12
    assert ledger.table().loc["C12", "evidence"] == "quick run"
    monkeypatch.delenv("OTS_QUICK")
    assert results.get("03", "category accuracy after") == 0.5
    assert ledger.table().loc["C12", "evidence"] == "full run"
    assert results.artifacts_dir("03") == tmp_path / "artifacts" / "03"
