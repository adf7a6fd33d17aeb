"""The trusted scoring pass: what a submission's kernel reports is data; the kit's unpatched code judges it.

These run the export and the scoring in this process (no sandbox, no otter run): the grading round trip
through both is tests/test_grading.py."""
import json
import types

import nbformat
import pytest

from helpers.course import autograder_zip, trusted
from helpers.course.labs import SOLUTIONS

QUESTION = "In one sentence, what does a support desk do?"
TICKET = "Hello, I cannot log in to my account since this morning. Please help!"


def _grading(lab):
    solution = nbformat.read(SOLUTIONS / f"{lab}.ipynb", as_version=4)
    imports, functions = trusted.solution_bindings(solution)
    return trusted.grading_spec(solution, autograder_zip(lab), lab), imports, functions


def _score(lab, namespace, provided, tmp_path):
    """Export from ``namespace`` as the sandbox would, then score in the trusted pass."""
    spec, imports, functions = _grading(lab)
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    trusted.export_answers(str(tmp_path / "spec.json"), str(tmp_path / "answers.json"), namespace)
    answers = trusted.read_answers(tmp_path / "answers.json")
    return trusted.score_answers(autograder_zip(lab), answers, imports, functions, provided,
                                 {name: trusted.lab_context(lab)[name] for name in spec["context"]})


def test_the_sandbox_gets_no_hidden_test_and_no_expected_value(tmp_path):
    for lab in ("00_first_open_model", "03_lora_finetuning", "05_hybrid_deployment"):
        spec, _, functions = _grading(lab)
        public = trusted.public_autograder(autograder_zip(lab), tmp_path / f"{lab}.zip")
        for test in trusted._tests_in_zip(public).values():
            assert all(not case.get("hidden") for suite in test["suites"] for case in suite["cases"])
        assert any(case.get("hidden") for test in trusted._tests_in_zip(autograder_zip(lab)).values()
                   for suite in test["suites"] for case in suite["cases"])
        hidden_code = [trusted.case_source(case["code"]) for test in trusted._tests_in_zip(autograder_zip(lab)).values()
                       for suite in test["suites"] for case in suite["cases"] if case.get("hidden")]
        text = json.dumps(spec)
        assert "assert" not in text and not any(line in text for code in hidden_code for line in code.splitlines()
                                                if line.startswith("assert"))
    spec, _, functions = _grading("03_lora_finetuning")
    assert spec["functions"] == ["mask_prompt"] and "tokenizer" in spec["provided"] and "ft" not in spec["data"]
    assert "mask_prompt([1, 2, 3], 3)" in spec["probes"]["q3"]  # inputs travel, expected outputs do not


def test_a_patched_kit_and_a_forged_reply_score_zero(embedded, tmp_path):
    """The attack of issue 13: the kernel replaces helpers.models.chat and answers "x"."""
    from helpers.models import chat

    model, tokenizer = embedded
    right = chat(model, tokenizer, QUESTION, max_new_tokens=30)
    fake_models = types.SimpleNamespace(chat=lambda *args, **kwargs: "x")
    base = {"TICKET": TICKET, "QUESTION": QUESTION, "n_tokens": ..., "tokens_per_word": ..., "model": "forged", "tokenizer": "forged"}
    scores, messages = _score("00_first_open_model", {**base, "reply": "x", "_chat": fake_models.chat, "chat": fake_models.chat},
                              {"model": model, "tokenizer": tokenizer}, tmp_path)
    assert scores == {"q1": 0.0, "q2": 0.0} and "greedy decoding" in messages["q2"][0]
    scores, _ = _score("00_first_open_model", {**base, "reply": right}, {"model": model, "tokenizer": tokenizer}, tmp_path)
    assert scores["q2"] == 2.0


def test_kit_names_are_the_kits_whatever_the_kernel_bound_them_to(tmp_path):
    """Lab 01: the kernel swaps `tco` for a module that agrees with its answers; the expected values still come from the kit."""
    from helpers import tco

    inputs = tco.default_inputs()
    workload, _, host, horizon = tco.from_inputs(inputs)
    fake = types.SimpleNamespace(**{name: getattr(tco, name) for name in dir(tco) if not name.startswith("_")})
    fake.api_cost = lambda *args, **kwargs: types.SimpleNamespace(monthly={"API fees": 1000.0})
    namespace = {"tco": fake, "inputs": inputs, "workload": workload, "host": host, "horizon": horizon,
                 "my_monthly_api_fees": 1000.0, "mini_break_even": ..., "biggest_lever": ..., "biggest_swing": ...}
    scores, messages = _score("01_tco_economics", namespace, {}, tmp_path)
    assert scores["q1"] == 0.0 and messages["q1"][0].startswith("✗ not gpt-4o-mini's monthly fees")
    namespace["my_monthly_api_fees"] = tco.api_cost(tco.Workload(2_000_000, 900, 250), "gpt-4o-mini").monthly["API fees"]
    assert _score("01_tco_economics", namespace, {}, tmp_path)[0]["q1"] == 2.0


def test_rebinding_the_lessons_inputs_cannot_move_the_expected_value(tmp_path):
    """The Lab 01 attack of issue 24: a notebook rebinds one input (a nearly free GPU) and answers consistently with it.
    No test reads the notebook's inputs any more, so the consistent wrong answer scores nothing."""
    from helpers import tco

    cheap = tco.default_inputs() | {"usd_per_gpu_hour": 0.05}
    workload, _, host, horizon = tco.from_inputs(cheap)
    wrong = tco.break_even_volume(workload, "gpt-4.1-mini", host, horizon, cheap["api_engineer_fte"])
    namespace = {"tco": tco, "inputs": cheap, "workload": workload, "host": host, "horizon": horizon,
                 "my_monthly_api_fees": ..., "mini_break_even": wrong, "biggest_lever": ..., "biggest_swing": ...}
    scores, messages = _score("01_tco_economics", namespace, {}, tmp_path)
    assert scores["q2"] == 0.0 and messages["q2"]
    spec, _, _ = _grading("01_tco_economics")
    assert not {"inputs", "workload", "host", "horizon"} & set(spec["data"])  # never even exported


def test_a_test_reading_a_rebindable_name_cannot_be_built(tmp_path):
    """The guard behind the rule: an autograder whose tests read a notebook name that is neither an answer nor declared
    measured context is refused when it is built."""
    import zipfile

    solution = nbformat.read(SOLUTIONS / "01_tco_economics.ipynb", as_version=4)
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("tests/q9.py", "OK_FORMAT = True\ntest = {'name': 'q9', 'points': 1, 'suites': [{'cases': [{'code': "
                                        "'>>> assert mini_break_even == inputs[\"x\"]', 'hidden': True, 'locked': False}], "
                                        "'scored': True, 'setup': '', 'teardown': '', 'type': 'doctest'}]}\n")
    with pytest.raises(RuntimeError, match="inputs"):
        trusted.grading_spec(solution, bad, "01_tco_economics")


def test_a_forged_measured_table_is_refused_by_name(tmp_path):
    import pandas as pd

    forged = pd.DataFrame({"perplexity": [30.0]}, index=["nf4"])  # no baseline row: made to fit an answer
    namespace = {"table": forged, "nf4_increase": 0.0, "why": "a", "predicted_gb": ..., "largest_on_l4": ...}
    scores, messages = _score("02_quantized_inference", namespace, {}, tmp_path)
    assert scores["q3"] == 0.0 and "table is not what this lab measures" in messages["q3"][0]


def _mask_right(ids, n):
    return [-100] * n + list(ids[n:])


def _mask_in_place(ids, n):
    for i in range(n):
        ids[i] = -100
    return ids


class _AlwaysEqual(list):
    def __eq__(self, other):
        return True


@pytest.mark.parametrize("function, kit_patched, points, says", [
    (_mask_right, False, 2.0, None),
    (lambda ids, n: [-100] * (n + 1) + list(ids[n + 1:]), False, 0.0, "off by one"),
    (lambda ids, n: _AlwaysEqual(), False, 0.0, "mask exactly"),  # an object that claims to equal anything
    (_mask_in_place, False, 0.0, "changed the list"),  # the change to its input is replayed in the grader too
    (..., False, 0.0, "not done yet"),
    (_mask_right, True, 0.0, "was not called the way the checks call it"),  # the kit's example builder patched in the kernel
])
def test_a_learner_function_is_judged_on_its_recorded_calls(embedded, tmp_path, function, kit_patched, points, says):
    from helpers import finetune as ft

    _, tokenizer = embedded
    test_rows = ft.load_tickets("test")
    kit = ft
    if kit_patched:
        kit = types.SimpleNamespace(format_example=lambda tok, row: {"input_ids": [1, 2, 3], "labels": [-100, 2, 3]})
    namespace = {"mask_prompt": function, "ft": kit, "tokenizer": tokenizer, "test": test_rows,
                 "lora_params": ..., "json_gain": ..., "category_after_low": ..., "after": ..., "zero_shot": ...}
    scores, messages = _score("03_lora_finetuning", namespace, {"tokenizer": tokenizer}, tmp_path)
    assert scores["q3"] == points, messages
    if says:
        assert says in messages["q3"][0]


def test_forged_or_broken_reports_are_data_never_code(tmp_path):
    path = tmp_path / "answers.json"
    path.write_text("{not json")
    assert trusted.read_answers(path) == {}
    assert trusted.read_answers(tmp_path / "missing.json") == {}
    forged = trusted._rebuild({"__dataclass__": ["os", "system"], "fields": {"command": "touch /tmp/owned"}})
    assert isinstance(forged, trusted.Unavailable)
    with pytest.raises(TypeError, match="not gradable"):
        forged.anything
    assert trusted._rebuild({"__tuple__": [1, {"__ellipsis__": True}, {"__float__": "nan"}]})[1] is ...
    frame = trusted._rebuild(trusted._plain(__import__("pandas").DataFrame({"rate": [0.5]}, index=["category"])))
    assert frame.loc["category", "rate"] == 0.5


def test_a_subpackage_imported_by_attribute_resolves_in_a_fresh_process():
    """The scoring process starts cold: ``from helpers import tco`` must resolve though nothing imported helpers.tco yet
    (a test reading `tco` would otherwise fail for every student)."""
    import subprocess
    import sys

    from helpers.paths import REPO_ROOT

    code = ("import sys; from helpers.course.trusted import trusted_import; assert 'helpers.tco' not in sys.modules; "
            "print(trusted_import('helpers', 'tco').__name__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "helpers.tco", out.stderr[-500:]
