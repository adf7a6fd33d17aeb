"""`bash kit gpu-check`: its plan of steps (dry mode), the notebook runner, the summary. The GPU run
itself is recorded in datasets/results/gpu-check/."""
import json

import pytest

from helpers.course import gpu_check
from helpers.hardware import describe_gpu


def test_dry_mode_on_a_big_gpu_runs_both_tiers_and_simulates_the_t4(capsys):
    assert gpu_check.main(["--dry", "--gpu", "H100"]) == 0
    out = capsys.readouterr().out
    for lab in gpu_check.lab_names():
        assert f"[local-gpu] notebook {lab}" in out and f"[colab] notebook {lab}" in out
    assert "OTS_SIMULATE_GPU=T4" in out and "gpu_quant_bench.py" in out and "gpu_qlora_bench.py" in out


def test_steps_plan_each_tier_with_a_stand_in_where_the_model_is_absent():
    steps = gpu_check.plan_steps(describe_gpu("H100"), ["03_lora_finetuning", "01_tco_economics"], ["local-gpu", "colab"],
                                 quick=True, bench=False, model_available=lambda key: key == "smollm2-135m")
    by = {(s.tier, s.name): s.env for s in steps}
    assert by[("local-gpu", "03_lora_finetuning")]["OTS_PLAN"] == "tier=local-gpu,model=smollm2-135m"
    assert "OTS_SIMULATE_GPU" not in by[("local-gpu", "03_lora_finetuning")]
    assert by[("colab", "03_lora_finetuning")]["OTS_SIMULATE_GPU"] == "T4"
    assert by[("colab", "01_tco_economics")]["OTS_PLAN"] == "tier=colab"  # no model, no stand-in
    assert all(env["OTS_QUICK"] == "1" for env in by.values())


def test_on_a_t4_the_colab_tier_is_not_simulated():
    steps = gpu_check.plan_steps(describe_gpu("T4"), ["00_first_open_model"], ["colab"], quick=False, bench=False,
                                 model_available=lambda key: True)
    assert "OTS_SIMULATE_GPU" not in steps[0].env and steps[0].env["OTS_PLAN"] == "tier=colab"


def test_without_a_gpu_it_says_so_and_how_to_dry_run():
    from helpers.errors import NoGPUError

    with pytest.raises(NoGPUError) as info:
        gpu_check.main(["--skip-bench"])
    assert "--dry" in info.value.fix


def test_runner_reports_failures_and_missing_packages_and_runs_on(tmp_path):
    nb = {"cells": [{"cell_type": "code", "source": "x = 1"}, {"cell_type": "markdown", "source": "text"},
                    {"cell_type": "code", "source": ["raise ValueError('boom')"]},
                    {"cell_type": "code", "source": "import a_package_that_is_not_there"},
                    {"cell_type": "code", "source": "%matplotlib inline\ny = x + 1\nassert y == 2"}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "demo.ipynb"
    path.write_text(json.dumps(nb))
    result = gpu_check.run_notebook(path)
    assert (result["cells"], result["ok"], result["failed"]) == (4, 2, 1)
    assert result["failures"][0]["error"] == "ValueError: boom"
    assert "a_package_that_is_not_there is not installed" in result["skipped"][0]["reason"]


def test_summary_counts_passing_notebooks():
    steps = gpu_check.plan_steps(describe_gpu("H100"), ["00_first_open_model", "01_tco_economics"], ["local-gpu"], quick=True,
                                 bench=False, model_available=lambda key: True)
    steps[0].result = {"returncode": 0, "cells": 3, "ok": 3, "failed": 0, "failures": [], "seconds": 1.0}
    steps[1].result = {"returncode": 0, "cells": 3, "ok": 2, "failed": 1, "seconds": 1.0,
                       "failures": [{"cell": 2, "error": "RuntimeError: Float did not match BFloat16"}]}
    record, text = gpu_check.summarise({"date": "2026-11-23", "gpu": "H100"}, steps)
    assert (record["notebooks_passed"], record["notebooks"]) == (1, 2)
    assert "Float did not match BFloat16" in text and "| local-gpu | 00_first_open_model |" in text


def test_recorded_gpu_check_passed_every_notebook_on_both_tiers():
    records = sorted(gpu_check.RESULTS.glob("*.json"))
    assert records, "no gpu-check record committed"
    record = json.loads(records[-1].read_text())
    assert record["notebooks_passed"] == record["notebooks"]
    recorded_labs = {s["name"] for s in record["steps"] if s["kind"] == "notebook"}
    # a lab added after the last GPU session waits for the next one (README's lab table says which)
    assert recorded_labs <= set(gpu_check.lab_names()) and len(recorded_labs) >= 4
    assert record["notebooks"] == 2 * len(recorded_labs)
    assert {s["tier"] for s in record["steps"]} == {"local-gpu", "colab"}


def test_a_16_gb_card_skips_the_plan_it_cannot_hold_and_runs_the_rest(capsys):
    """On a T4, Lab 04's local-gpu plan (three copies of a 7B) does not fit: that step is skipped with the planner's
    reason and its fix, and every other step, the T4 (colab) plan included, is still planned and run."""
    from helpers.course import gpu_check
    from helpers.hardware import describe_gpu

    steps = gpu_check.plan_steps(describe_gpu("T4"), gpu_check.lab_names(), list(gpu_check.TIERS), quick=True, bench=False,
                                 model_available=lambda key: True)
    skipped = [s for s in steps if s.kind == "skipped"]
    assert skipped and all(s.tier == "local-gpu" for s in skipped) and "fix:" in skipped[0].env["reason"]
    assert len([s for s in steps if s.kind == "notebook" and s.tier == "colab"]) == len(gpu_check.lab_names())
    assert gpu_check.main(["--dry", "--gpu", "T4", "--skip-bench"]) == 0
    assert "skipped 04_benchmarking" in capsys.readouterr().out
    record, text = gpu_check.summarise({"date": "d", "gpu": "T4"}, [*skipped])
    assert "does not fit this GPU" in text
