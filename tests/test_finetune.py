"""Lab 03: the dataset, formatting, training, evaluation, adapters."""
import importlib.util
import json

import pytest

from helpers import finetune as ft
from helpers.catalog import get_model
from helpers.errors import DataError, InputError
from helpers.paths import DATASETS


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("generate", DATASETS / "support_desk" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_is_deterministic_and_matches_the_committed_files(generator):
    first, second = generator.generate(), generator.generate()
    assert first == second
    for split, rows in first.items():
        committed = [json.loads(line) for line in (DATASETS / "support_desk" / f"{split}.jsonl").read_text().splitlines()]
        assert committed == rows, f"{split}.jsonl is stale: run python datasets/support_desk/generate.py"


def test_sizes_and_splits_do_not_share_templates():
    train, validation, test = (ft.load_tickets(s) for s in ("train", "validation", "test"))
    assert len(train) >= 2000 and len(test) >= 300
    seen = {t for row in train + validation for t in row["templates"]}
    assert not seen & {t for row in test for t in row["templates"]}


def test_personal_data_spans_and_numbers_are_real(generator):
    rows = ft.load_tickets("train")
    with_pii = [r for r in rows if r["pii_spans"]]
    assert 0.25 < len(with_pii) / len(rows) < 0.45
    for row in with_pii:
        for span in row["pii_spans"]:
            value = row["message"][span["start"]:span["end"]]
            assert value and row["target"]["personal_data"]
            if span["type"] == "iban":
                numeric = "".join(str(int(ch, 36)) for ch in value[4:] + value[:4])
                assert int(numeric) % 97 == 1
            if span["type"] == "card":
                digits = [int(d) for d in value.replace(" ", "")][::-1]
                assert sum(d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(digits)) % 10 == 0
    assert {"simple", "multi_issue"} == {r["difficulty"] for r in rows}


def test_bad_rows_are_all_reported_with_line_numbers(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"message": "ok", "target": {"category": "billing"}}\n'
                     b'{"message": "x", "target": "{not json"}\n'
                     b'{"message": "  ", "target": {}}\n'
                     b'\xff\xfe\n')
    with pytest.raises(DataError) as info:
        ft.load_tickets(path)
    text = info.value.problem
    assert "4 bad row(s)" in text and "training will not start" in text
    for expected in ("line 1: target has no 'priority'", "line 2: field 'target' is not valid JSON",
                     "line 3: field 'message' is missing or empty", "line 4: not valid UTF-8"):
        assert expected in text


def test_formatting_masks_the_prompt(embedded):
    _, tokenizer = embedded
    row = ft.load_tickets("train")[0]
    example = ft.format_example(tokenizer, row)
    answer = [t for t, label in zip(example["input_ids"], example["labels"]) if label != -100]
    assert tokenizer.decode(answer).startswith(ft.target_json(row["target"]))
    first_answer = next(i for i, label in enumerate(example["labels"]) if label != -100)
    assert all(label == -100 for label in example["labels"][:first_answer]) and first_answer > 10


def test_lora_count_matches_peft_and_a_short_run_lowers_the_loss():
    from helpers.models import load_model

    model, tokenizer = load_model("smollm2-135m", precision="fp32", device="cpu")
    config = ft.lora_config(r=4, targets=["q_proj", "v_proj"])
    model = ft.add_lora(model, config)
    trainable, _, _ = ft.trainable_parameters(model)
    assert trainable == ft.lora_parameter_count(get_model("smollm2-135m"), 4, ["q_proj", "v_proj"])
    rows = ft.load_tickets("train")[:2] * 4  # the same two rows each step: the loss must fall (Lab 03 trains for real)
    result = ft.train(model, tokenizer, rows, steps=4, batch_size=2, learning_rate=3e-3, progress=False)
    assert result.losses[-1] < result.losses[0] and result.tokens_per_s > 0


def test_save_reload_merge_give_the_same_logits(tmp_path):
    import torch

    from helpers.models import load_model

    base, tokenizer = load_model("smollm2-135m", precision="fp32", device="cpu")
    config = ft.lora_config(r=4, targets=["q_proj", "v_proj"])
    config.init_lora_weights = False  # random B, so the adapter really changes the output
    torch.manual_seed(0)  # the same random adapter on every run (an unseeded one made the merge error vary)
    model = ft.add_lora(base, config)
    probe = tokenizer(["my router keeps disconnecting"], return_tensors="pt")
    with torch.no_grad():
        expected = model(**probe).logits
    size = ft.save_adapter(model, tmp_path / "adapter")
    assert 0 < size < 5
    reloaded = ft.load_adapter(load_model("smollm2-135m", precision="fp32", device="cpu")[0], tmp_path / "adapter")
    ft.merge_and_export(reloaded, tokenizer, tmp_path / "merged")
    merged, _ = load_model(str(tmp_path / "merged"), precision="fp32", device="cpu")
    with torch.no_grad():
        # merged and unmerged sum the fp32 products in different orders: 3e-6 of the largest logit measured here,
        # the kit's merged tolerance is 3e-5 of it (helpers.finetune.logits_close), a lost adapter moves them by ~8e-2
        assert ft.logits_close(expected, merged(**probe).logits, "float32", merged=True)
        plain = load_model("smollm2-135m", precision="fp32", device="cpu")[0](**probe).logits
    assert not torch.allclose(expected, plain, atol=1e-3)


def test_evaluation_scores_a_known_set():
    rows = [{"target": {"category": "billing", "priority": "low", "product": "app", "personal_data": False, "needs_human": False}}] * 4
    good = ft.target_json(rows[0]["target"])
    wrong_priority = good.replace('"low"', '"high"')
    table = ft.evaluate([good, "Sure! " + good + " hope that helps", wrong_priority, "no idea"], rows)
    assert table.loc["valid JSON", "correct"] == 3 and table.loc["priority", "correct"] == 2
    assert table.loc["exact match", "correct"] == 2 and table.loc["category", "rate"] == 0.75
    assert table.loc["exact match", "low"] < 0.5 < table.loc["exact match", "high"]


def test_wilson_interval():
    low, high = ft.wilson_interval(0, 64)
    assert low == 0 and 0.05 < high < 0.06
    low, high = ft.wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)


def test_full_finetune_memory_and_claims():
    table = ft.full_finetune_memory(get_model("qwen2.5-7b"))
    assert table.loc["total", "full fine-tuning"] > 5 * table.loc["total", "QLoRA r=16 (NF4 base)"]
    assert ft.claims.check_c9(get_model("smollm2-135m"), 4_884_480)["verdict"].startswith("does not hold")
    # the same share the lab prints under its model (trainable of all parameters, adapters included): 3.50 %, not 3.63 %
    assert "trains 3.50% of the parameters" in ft.claims.check_c9(get_model("smollm2-135m"), 4_884_480)["evidence"]
    # the CPU tier adapts the top 10 of 30 layers: forward 2N through all, backward 2N x 10/30 -> about 2.7N of 6N
    top = ft.claims.check_c9(get_model("smollm2-135m"), 1_628_160, adapted_layers=10)
    assert abs(top["compute_cut"] - (1 - (2 + 2 * 10 / 30) / 6)) < 1e-9 and "falls by about 56%" in top["verdict"]
    assert "backward through the top 10" in top["evidence"] and "about 2.7N vs 6N" in top["evidence"]
    assert "falls by about a third" in ft.claims.check_c9(get_model("smollm2-135m"), 4_884_480, adapted_layers=30)["verdict"]
    assert ft.claims.check_c10()["verdict"].startswith("holds only if the A100 has 80 GB")


def test_run_settings_shrink_in_quick_mode(monkeypatch):
    from helpers.plan import plan

    full = ft.run_settings(plan("03", override="tier=cpu"))
    monkeypatch.setenv("OTS_QUICK", "1")
    quick = ft.run_settings(plan("03", override="tier=cpu"))
    assert quick.steps < full.steps and quick.eval_rows < full.eval_rows


def test_datasheet_distribution_table_matches_the_files():
    import collections
    import re

    text = (DATASETS / "support_desk" / "README.md").read_text()
    for split in ("train", "validation", "test"):
        rows = ft.load_tickets(split)
        counts = collections.Counter(r["target"]["category"] for r in rows)
        expected = [str(len(rows))] + [str(counts[c]) for c in ft.ALLOWED["category"]]
        line = re.search(rf"^\| {split} \| (.+) \|$", text, re.M).group(1).split(" | ")
        assert line[: len(expected)] == expected, split


def test_packed_rows_give_the_same_loss_as_a_padded_batch(embedded):
    """Padding-free packing is the same objective: no row sees another, the same tokens are scored."""
    import torch

    model, tokenizer = embedded
    examples = [ft.format_example(tokenizer, row) for row in ft.load_tickets("train")[:6]]
    assert len({len(e["input_ids"]) for e in examples}) > 1  # rows of different lengths: the padded batch has padding
    model.config.use_cache = False
    try:
        with torch.no_grad():
            padded = model(**ft.collate(examples, tokenizer.pad_token_id)).loss
            packed_batch = ft.pack(examples, tokenizer.pad_token_id)
            packed = model(**packed_batch).loss
            # and the mask really separates rows: positions that never restart would mix them
            mixed = model(input_ids=packed_batch["input_ids"], labels=packed_batch["labels"]).loss
    finally:
        model.config.use_cache = True
    assert packed_batch["input_ids"].shape[1] == sum(len(e["input_ids"]) for e in examples)
    assert abs(float(packed) - float(padded)) < 1e-4 * float(padded)
    assert abs(float(mixed) - float(padded)) > 1e-3


def test_answer_only_logits_give_the_models_own_loss_and_gradients(embedded):
    """The training loss built from the scored positions' logits only is the model's full loss, in value and in
    the gradient that reaches the layers under the vocabulary projection, packed or padded; and it projects far
    fewer positions."""
    import torch

    model, tokenizer = embedded
    examples = [ft.format_example(tokenizer, row) for row in ft.load_tickets("train")[:2]]
    norm = model.model.norm.weight  # the last weight before the projection: its gradient sees every scored logit
    model.config.use_cache = False
    norm.requires_grad_(True)
    try:
        for batch in (ft.pack(examples, tokenizer.pad_token_id), ft.collate(examples, tokenizer.pad_token_id)):
            full = model(**batch).loss
            (full_grad,) = torch.autograd.grad(full, norm)
            fast = ft.answer_logits_loss(model, batch)
            (fast_grad,) = torch.autograd.grad(fast, norm)
            assert abs(fast.item() - full.item()) < 1e-5 * full.item()
            assert torch.allclose(fast_grad, full_grad, rtol=1e-3, atol=1e-7)
        scored = int((batch["labels"][:, 1:] != -100).any(dim=0).sum())
        assert scored < batch["input_ids"].shape[1] / 2  # the prompt, most of each row, is never projected
    finally:
        norm.requires_grad_(False)
        model.config.use_cache = True


def test_shared_prompt_start_is_computed_once_with_the_same_replies(embedded):
    """Prefix caching in ``predict``: the few-shot turns every prompt shares run once, each row's own tokens after
    them, and every row's greedy reply is the one its prompt gets alone, unpadded (fp32)."""
    import torch

    model, tokenizer = embedded
    test, train = ft.load_tickets("test")[:2], ft.load_tickets("train")[:2]
    rows = [tokenizer(tokenizer.apply_chat_template(ft.prompt_messages(r["message"], train), add_generation_prompt=True,
                                                    tokenize=False), add_special_tokens=False)["input_ids"] for r in test]
    shared = ft.shared_prefix_length(rows)
    assert shared > 0.7 * max(len(r) for r in rows)  # the few-shot turns are most of each prompt
    alone = []
    for row in rows:
        with torch.no_grad():
            out = model.generate(torch.tensor([row]), max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        alone.append(tokenizer.decode(out[0, len(row):], skip_special_tokens=True))
    for min_shared in (32, 10_000):  # the prefix shared, and a plain left-padded batch
        replies = ft.generate_sharing_prefix(model, rows, tokenizer.pad_token_id, 8, min_shared=min_shared)
        assert tokenizer.batch_decode(replies, skip_special_tokens=True) == alone
    assert ft.shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # every row keeps a token of its own


def test_steps_fill_a_token_budget_or_a_row_count():
    rows = [{"input_ids": [0] * n} for n in (50, 60, 70, 80, 90, 100) * 10]
    by_rows = ft.make_steps(rows, rows_per_step=4, token_budget=None, steps=5)
    assert [len(group) for group in by_rows] == [4] * 5
    by_tokens = ft.make_steps(rows, rows_per_step=4, token_budget=400, steps=8)
    assert len(by_tokens) == 8
    assert all(sum(len(r["input_ids"]) for r in group) <= 400 for group in by_tokens)
    assert sum(len(group) for group in by_tokens) > 8 * 4  # short rows: more than 4 rows a step


@pytest.mark.parametrize("precision", ["bf16", "fp16", "nf4"])
def test_adapter_roundtrip_at_gpu_dtypes(precision, tmp_path):
    """The round trip Lab 03 runs on the GPU tiers (bf16 and fp16 compute, NF4 and 16-bit bases),
    here with the same dtypes on CPU: logits of different dtypes are compared in float32."""
    import dataclasses

    from helpers.plan import plan
    from helpers.models import load_model

    import torch

    torch.manual_seed(0)
    compute = "float16" if precision == "fp16" else "bfloat16"
    p = dataclasses.replace(plan("03", override="tier=cpu"), precision=precision, compute_dtype=compute)
    base, tokenizer = load_model(plan=p)
    probe = tokenizer(["Hi, my router keeps disconnecting."], return_tensors="pt")
    with torch.no_grad():
        plain = base(**probe).logits
    config = ft.lora_config(r=4, targets=["q_proj", "v_proj"])
    config.init_lora_weights = False  # random B: the adapter really changes the output ...
    model = ft.add_lora(base, config, quantized=precision == "nf4")
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.mul_(0.1)  # ... by a trained adapter's order of magnitude (about 8 % of the largest logit)
        adapted = model(**probe).logits
    # the check can fail: the adapter moves the logits by more than the merge tolerance
    assert not ft.logits_close(plain, adapted, compute, merged=True)
    result = ft.adapter_roundtrip(model, tokenizer, p, tmp_path)
    assert result["reload_same"] and result["merge_same"], result
    assert result["merged_precision"] == ("fp16" if precision == "fp16" else "bf16")
    assert next(result["merged_model"].parameters()).dtype == getattr(__import__("torch"), compute)


def test_logits_close_compares_across_dtypes():
    import torch

    a = torch.linspace(-20, 20, 1000)
    assert ft.logits_close(a, a.to(torch.bfloat16), "bfloat16")
    assert not ft.logits_close(a, a + 1.0, "bfloat16")
    assert ft.logits_close(a, a + 1e-5, "float32") and not ft.logits_close(a, a + 1e-2, "float32")


def _table(rate, low, high):
    import pandas as pd

    return pd.DataFrame({"rate": [rate], "low": [low], "high": [high]}, index=["category"])


def test_claims_c9_c12_follow_the_learners_measurements():
    from helpers.plan import plan

    spec, p = get_model("smollm2-135m"), plan("03", override="tier=cpu")
    before, good, bad = _table(0.1, 0.03, 0.25), _table(0.6, 0.43, 0.75), _table(0.0, 0.0, 0.02)
    assert "quality rose" in ft.claims.check_c9(spec, 4_884_480, before, good)["verdict"]
    assert "quality fell" in ft.claims.check_c9(spec, 4_884_480, before, bad)["verdict"]
    assert "not measured" in ft.claims.check_c9(spec, 4_884_480)["evidence"]
    assert ft.claims.check_c12(before, before, good, p)["verdict"].startswith("holds in part")
    assert ft.claims.check_c12(before, before, bad, p)["verdict"].startswith("does not hold here")
    # the learner's exercise-2 reading is the bar when given: a low reading turns the verdict
    low_reading = ft.claims.check_c12(before, before, good, p, your_after_low=0.2)
    assert low_reading["verdict"].startswith("does not hold here") and "your exercise 2" in low_reading["evidence"]


def test_claim_c11_hours_come_from_the_recorded_gpu_run_when_there_is_one():
    result = ft.TrainResult(steps=4, seconds=10.0, examples_seen=32, tokens_seen=3200, step_seconds=[2.5] * 4, step_tokens=[800] * 4)
    spec = get_model("smollm2-135m")
    recorded = ft.gpu_qlora_results()
    from_run = ft.claims.check_c11(result, spec, 1000, recorded=recorded)
    from_sheet = ft.claims.check_c11(result, spec, 1000)
    assert "recorded" in from_run["evidence"] and "spec sheet" in from_sheet["evidence"]
    slower = recorded.assign(tokens_per_s=recorded["tokens_per_s"] / 100)  # a GPU 100x slower turns hours into days
    assert from_run["verdict"].startswith("holds") and ft.claims.check_c11(result, spec, 1000, recorded=slower)["corpus_hours"] > 48


@pytest.mark.parametrize("platform, ru_maxrss, gb", [("linux", 3_300_000, 3.3), ("darwin", 3_300_000_000, 3.3)])
def test_cpu_peak_memory_is_in_gigabytes_on_linux_and_macos(monkeypatch, platform, ru_maxrss, gb):
    """getrusage reports kilobytes on Linux and bytes on macOS: a Mac learner must not read 3,300 TB."""
    import resource
    import sys
    from types import SimpleNamespace

    from helpers.finetune.lora import peak_memory_gb

    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(resource, "getrusage", lambda who: SimpleNamespace(ru_maxrss=ru_maxrss))
    assert peak_memory_gb("cpu") == pytest.approx(gb)


def test_a_baseline_that_cannot_write_json_still_scores_on_the_lenient_category():
    """Issue 25: an untuned model scored 0 on every strict metric, so "better beyond both intervals" was trivially true.
    The lenient category (named anywhere in the reply) gives the baseline a score it can earn, and the claims use it."""
    rows = [{"message": "m", "target": {"category": c, "priority": "low", "product": "app", "personal_data": False, "needs_human": False}}
            for c in ("refund", "technical_issue", "shipping", "billing")]
    replies = ["This is a refund request.", "Looks like a technical issue with the app", "Category: billing", "I cannot tell"]
    table = ft.evaluate(replies, rows)
    assert table.loc["valid JSON", "rate"] == 0 and table.loc["category", "rate"] == 0
    assert table.loc["category (lenient)", "correct"] == 2  # refund, technical issue; billing is the wrong category there
    assert ft.named_category('{"category": "account_access", "priority": "high"}') == "account_access"
    assert ft.named_category("billing or refund?") == "billing" and ft.named_category("no idea") is None
    spec = get_model("smollm2-135m")
    evidence = ft.claims.check_c9(spec, 4_884_480, table, table)["evidence"]
    assert "category named (lenient" in evidence and "50% before" in evidence


def _row(category, priority="low", product="app", personal=False, human=False, message="m"):
    return {"message": message, "target": {"category": category, "priority": priority, "product": product,
                                           "personal_data": personal, "needs_human": human}}


def test_why_the_untuned_model_scores_zero_is_read_off_its_replies():
    rows = [_row("refund"), _row("billing"), _row("shipping")]
    replies = ["Sure! This is a refund request.", '{"category": "billing"}', "I cannot tell"]
    text = ft.untuned_reading(replies, rows)
    assert text.startswith("0 of 3 replies parse as JSON with the five fields (1 contain a brace at all)")
    assert "2 of 3 name the right category" in text and "'Sure! This is a refund request.'" in text


def test_a_text_classifier_baseline_learns_from_the_training_rows_and_scores_like_a_model():
    """The baseline that can score: trained on the training rows only, its guesses are the schema's JSON, so evaluate()
    scores them; on messages made of its training words it gets the fields right, and it never sees the test targets."""
    words = {"refund": "money back refund please", "shipping": "parcel late delivery tracking", "billing": "invoice charged twice"}
    train = [_row(c, priority="high" if c == "shipping" else "low", personal=c == "billing", message=f"{text} {i}")
             for i in range(6) for c, text in words.items()]
    test = [_row("refund", message="I want my money back"), _row("shipping", priority="high", message="where is my parcel"),
            _row("billing", personal=True, message="the invoice charged me twice")]
    guesses = ft.text_classifier_baseline(train, test)
    table = ft.evaluate(guesses, test)
    assert table.loc["valid JSON", "rate"] == 1.0 and table.loc["category", "rate"] == 1.0 and table.loc["exact match", "rate"] == 1.0
    wrong = [dict(r, target=dict(r["target"], category="refund")) for r in test]  # targets on the test rows are never read
    assert ft.text_classifier_baseline(train, wrong) == guesses
    with pytest.raises(InputError, match="training rows"):
        ft.text_classifier_baseline([], test)


def test_versus_says_ahead_behind_or_within_the_noise():
    import pandas as pd

    after = pd.DataFrame({"rate": [0.9, 0.5, 0.2], "low": [0.8, 0.3, 0.1], "high": [0.95, 0.7, 0.3]}, index=["category", "priority", "product"])
    base = pd.DataFrame({"rate": [0.5, 0.55, 0.8], "low": [0.4, 0.35, 0.7], "high": [0.6, 0.75, 0.9]}, index=["category", "priority", "product"])
    lines = ft.versus(after, base)
    assert lines[0].endswith("ahead beyond both intervals") and lines[1].endswith("within the noise (the intervals overlap)")
    assert lines[2].endswith("behind beyond both intervals") and len(lines) == 3  # exact match absent: skipped
    c12 = ft.claims.check_c12(after.assign(**{}), after, after.assign(rate=[0.9, 0.5, 0.2]),
                              type("P", (), {"model": "m"})(), baseline=base)
    assert "text classifier" in c12["evidence"] and "ahead of a plain text classifier" in c12["verdict"]


@pytest.mark.parametrize("stopped, says", [(100 * [True], "passes, beyond its interval"),
                                           (31 * [True] + [False], "passes on the point estimate, not yet beyond"),
                                           (28 * [True] + 4 * [False], "fails")])
def test_the_stop_bar_is_passed_beyond_the_interval_or_on_the_point_estimate(stopped, says):
    replies = ft.Predictions(["x"] * len(stopped))
    replies.stopped = stopped
    assert says in ft.stop_sentence(ft.stop_share(replies))


def test_the_recorded_learning_curve_is_read_plotted_and_judged_against_the_bar():
    """Issue 36: Lab 03 shows the course's recorded CPU learning curves beside the learner's run; a point clears the
    desk's bar only when its interval's low end does (the memo's rule), and the sentence says which run and when."""
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    curve = ft.learning_curve_results()
    assert curve is not None and {"category", "priority", "exact match"} <= set(curve["metric"])
    assert (curve["n"] >= 128).all() and ((curve["high"] - curve["low"]) / 2 < 0.10).all()  # narrower than +-10 points
    assert curve["run"].str.contains("AMD EPYC|Intel").all() and curve["run"].str.contains("2026-").all()
    rows = pd.DataFrame([
        {"metric": "category", "training minutes": 3.0, "rate": 0.80, "low": 0.72, "high": 0.86, "run": "A"},
        {"metric": "category", "training minutes": 7.5, "rate": 0.93, "low": 0.87, "high": 0.96, "run": "B"},
        {"metric": "category", "training minutes": 12.0, "rate": 0.95, "low": 0.90, "high": 0.98, "run": "B"},
        {"metric": "priority", "training minutes": 1.0, "rate": 0.99, "low": 0.98, "high": 1.0, "run": "C"}])
    said = ft.curve_reading(rows, 0.85, budget_minutes=8)
    assert said.startswith("within 8 minutes of training the best recorded category is 93% (87%-96%) after 7.5 min (B), which clears")
    assert "the best of any recorded run is 95% (90%-98%) after 12.0 min (B)" in said
    assert "reaches, within its interval," in ft.curve_reading(rows, 0.85, budget_minutes=4)  # 80% (72-86%) only
    assert "stays below" in ft.curve_reading(rows, 0.90, budget_minutes=4)
    assert ft.curve_reading(rows, 0.85, budget_minutes=0.5).startswith("no recorded run stopped within 0.5 minutes")
    mine = pd.DataFrame({"rate": [0.5], "low": [0.33], "high": [0.67], "n": [32]}, index=["category"])
    ax = ft.plot_learning_curve(curve, 0.85, mine=(1.2, mine))
    labels = ax.get_legend_handles_labels()[1]
    assert "the desk's bar (85%)" in labels and "your run (32 test rows)" in labels
    assert sum(label.startswith("course's run:") for label in labels) == curve["run"].nunique()
    assert curve["run"].str.contains(r"\d+ test rows").all()


def test_the_tuned_model_is_judged_against_the_bar_by_the_memos_rule():
    import pandas as pd

    def table(rate, low, high, n=128):
        return pd.DataFrame({"rate": [rate], "low": [low], "high": [high], "n": [n]}, index=["category"])

    assert ft.bar_sentence(table(0.72, 0.64, 0.79), 0.85) == (
        "your tuned model's category: 72% (64%-79%) on 128 held-out tickets; against the desk's 85% bar it fails: "
        "the whole interval is below it")
    assert "is unclear" in ft.bar_sentence(table(0.80, 0.55, 0.93, 15), 0.85)
    assert "passes" in ft.bar_sentence(table(0.93, 0.85, 0.97), 0.85)  # the low end at the bar passes, as in the memo
    assert "fails" in ft.bar_sentence(table(0.84, 0.80, 0.849), 0.85)


def test_full_finetuning_trains_only_the_top_layers_and_refuses_a_quantized_or_adapted_model():
    import torch

    from helpers.models import load_model

    model, tokenizer = load_model("smollm2-135m", precision="fp32", device="cpu")
    lower = model.model.layers[19].self_attn.q_proj.weight.detach().clone()
    top = model.model.layers[29].mlp.down_proj.weight.detach().clone()
    head = model.lm_head.weight.detach().clone()
    model = ft.unfreeze_top_layers(model, 10)
    trainable, total, _ = ft.trainable_parameters(model)
    per_layer = sum(w.numel() for w in model.model.layers[0].parameters())
    assert trainable == 10 * per_layer and not model.training
    rows = ft.load_tickets("train")[:2] * 2
    result = ft.train(model, tokenizer, rows, steps=2, batch_size=2, learning_rate=2e-4, progress=False)
    assert result.steps == 2 and len(result.losses) == 2
    assert torch.equal(model.model.layers[19].self_attn.q_proj.weight, lower)  # below the top 10: frozen
    assert torch.equal(model.lm_head.weight, head)  # the tied embeddings and head: frozen
    assert not torch.equal(model.model.layers[29].mlp.down_proj.weight, top)  # the top layers' own weights moved
    adapted = ft.add_lora(load_model("smollm2-135m", precision="fp32", device="cpu")[0], ft.lora_config(r=4, targets=["q_proj"]))
    with pytest.raises(InputError, match="fresh copy"):
        ft.unfreeze_top_layers(adapted, 10)


def test_the_yardstick_compares_lora_with_full_finetuning_and_c9_reads_it():
    from types import SimpleNamespace

    spec = get_model("smollm2-135m")
    lora_run = SimpleNamespace(steps=96, seconds=252.0, step_seconds=[9.0, 5.0] + [2.6] * 94)
    full_run = SimpleNamespace(steps=96, seconds=270.0, step_seconds=[9.0, 5.0] + [2.8] * 94)
    def scores(rate, low, high):
        import pandas as pd

        return pd.DataFrame({"rate": [rate, 0.8, 0.4], "low": [low, 0.75, 0.35], "high": [high, 0.84, 0.45], "n": [400] * 3},
                            index=["category", "priority", "exact match"])

    lora, full, close = scores(0.74, 0.70, 0.79), scores(0.86, 0.82, 0.89), scores(0.80, 0.76, 0.84)
    side = ft.yardstick(lora_run, lora, full_run, full, 1_628_160, 35_390_400)
    assert list(side.index) == ["LoRA", "full fine-tuning"] and side.loc["LoRA", "s per step"] == pytest.approx(2.6)
    said = ft.yardstick_reading(side)
    assert "LoRA did not keep full fine-tuning's quality" in said and "400 held-out rows" in said
    assert "0.93x the time" in said and "4.6% as many weights" in said
    assert "kept full fine-tuning's quality within" in ft.yardstick_reading(ft.yardstick(lora_run, close, full_run, full, 1, 2))
    assert "did better" in ft.yardstick_reading(ft.yardstick(lora_run, full, full_run, lora, 1, 2))
    lost = ft.claims.check_c9(spec, 1_628_160, _table(0.0, 0.0, 0.01), lora, adapted_layers=10, full=full, step_ratio=0.93)
    assert "LoRA did not keep full fine-tuning's quality" in lost["verdict"] and "does not hold either" in lost["verdict"]
    assert "full fine-tuning of the same layers on the same rows: 86%" in lost["evidence"] and "0.93x" in lost["evidence"]
    kept = ft.claims.check_c9(spec, 1_628_160, _table(0.0, 0.0, 0.01), close, adapted_layers=10, full=full)
    assert "LoRA kept full fine-tuning's quality" in kept["verdict"]


def test_the_plan_runs_and_deploys_full_finetuning_only_where_the_base_is_not_quantized(monkeypatch):
    from helpers.plan import plan

    cpu = ft.run_settings(plan("03", override="tier=cpu"))
    assert cpu.full_finetune and cpu.deploy == "full" and cpu.full_learning_rate < cpu.learning_rate / 10
    assert ft.tuned_by(cpu, 30) == "full fine-tuning of the top 10 of 30 layers"
    assert ft.tuned_by(cpu, 30, "lora") == "LoRA adapters on the top 10 of 30 layers"
    monkeypatch.setenv("OTS_QUICK", "1")
    assert ft.run_settings(plan("03", override="tier=cpu")).full_finetune  # CI runs the same cells, smaller
    monkeypatch.delenv("OTS_QUICK")
    colab = plan("03", override="tier=colab")
    gpu = ft.run_settings(colab)
    assert not gpu.full_finetune and gpu.deploy == "lora" and ft.tuned_by(gpu, 28) == "LoRA adapters on all 28 layers"
    assert "skips full fine-tuning" in ft.full_skip_reason(colab) and "nf4" in ft.full_skip_reason(colab)


def test_several_runs_of_the_learner_are_stars_on_the_curve():
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    curve = pd.DataFrame([{"metric": "category", "training minutes": 3.0, "rate": 0.8, "low": 0.72, "high": 0.86, "run": "A"}])
    mine = pd.DataFrame({"rate": [0.7], "low": [0.6], "high": [0.8], "n": [400]}, index=["category"])
    ax = ft.plot_learning_curve(curve, 0.85, mine=[("your LoRA run", 4.2, mine), ("your full fine-tuning", 4.5, mine)])
    labels = ax.get_legend_handles_labels()[1]
    assert "your LoRA run (400 test rows)" in labels and "your full fine-tuning (400 test rows)" in labels


def test_the_recorded_recipe_search_names_each_runs_recipe():
    search = ft.recipe_search_results()
    assert list(search.columns[:3]) == ["training minutes", "category", "category low"]
    assert search.index.str.contains(r"^full weights of (?:top \d+ of 30|all) layers, \d+ steps, lr ").all()
    assert search.index.str.contains("400 test rows").all() and search.index.str.contains("NEFTune 5").any()
    assert search.index.str.contains(", seed 1, ").any() and not search.index.str.contains("seed 0").any()
    assert (search["category low"] <= search["category"]).all() and search["category"].is_monotonic_decreasing


def test_errors_are_grouped_by_the_held_out_phrasing_worst_first():
    """Hand-made replies on real test rows: one phrasing all wrong, another half wrong, invalid JSON counted as no
    answer; the reading's counts and the rate 'with those phrasings right' are worked out by hand below."""
    rows = ft.load_tickets("test")
    by = {}
    for row in rows:
        by.setdefault(row["templates"][0], []).append(row)
    (a, rows_a), (b, rows_b), (c, rows_c) = sorted(by.items())[:3]
    picked = rows_a[:4] + rows_b[:4] + rows_c[:2]
    wrong_cat = "refund" if rows_a[0]["target"]["category"] != "refund" else "billing"

    def reply(row, category):
        return ft.target_json({**row["target"], "category": category})

    replies = ([reply(r, wrong_cat) for r in rows_a[:4]] + [reply(r, r["target"]["category"]) for r in rows_b[:2]]
               + ["not json", "{}"] + [reply(r, r["target"]["category"]) for r in rows_c[:2]])
    table = ft.errors_by_phrasing(replies, picked)
    assert list(table.index[:2]) == [a, b] and table.loc[a, "right"] == 0 and table.loc[b, "right"] == 0.5
    assert table.loc[a, "mostly read as"] == wrong_cat and table.loc[b, "mostly read as"] == "None"
    assert table.loc[c, "right"] == 1 and table.loc[c, "share of errors"] == 0 and table["share of errors"].sum() == pytest.approx(1)
    assert table.loc[a, "share of errors"] == pytest.approx(4 / 6)
    reading = ft.phrasing_reading(table, worst=1)
    # 6 of 10 wrong: rate 40 %; the worst phrasing holds 4 of them (67 %); with it right, 8 of 10 = 80 %
    assert "4 of the 6 errors (67%) sit in 1 of 3 phrasings" in reading and "Rate now 40%" in reading and "would be 80%" in reading
    # with a bar: the phrasing under half right (a: 4 rows) caps the rate at 6 of 10, whose 95 % interval starts at 31 %
    capped = ft.phrasing_reading(table, worst=1, bar=0.5)
    assert "The 1 phrasing misread on most of their rows cap the rate at 60% (95 % interval from 31%)" in capped
    assert capped.endswith("a model that misreads them cannot pass on these rows.") and capped.startswith(reading)
    # at a 25 % bar the ceiling passes: 6 of 10 has its low end at 31 %, 5 of 10 at 24 %: room for no other error on
    # the 6 rows of the other phrasings; at 15 %, 4 of 10 (17 %) still passes and 3 of 10 (11 %) does not: room for 2
    assert ft.phrasing_reading(table, bar=0.25).endswith("only with at most 0 other errors on the other 6 rows.")
    assert ft.phrasing_reading(table, bar=0.15).endswith("only with at most 2 other errors on the other 6 rows.")
    assert ft.phrasing_reading(ft.errors_by_phrasing([reply(r, r["target"]["category"]) for r in picked], picked)) == \
        "no errors on 10 held-out rows"
    with pytest.raises(InputError, match="templates"):
        ft.errors_by_phrasing(["x"], [{"message": "hi", "target": rows[0]["target"]}])
    with pytest.raises(InputError, match="predictions for"):
        ft.errors_by_phrasing(replies[:3], picked)


def test_tail_average_ends_with_the_mean_of_the_last_steps_weights_and_survives_a_resume(tmp_path):
    """``train(average=...)``'s callback, driven step by step: the weights after steps 3 and 4 of 4 are
    averaged (the last half of 4 steps), a frozen weight is left alone, and the running mean saved with a checkpoint at step 3 and loaded into a
    fresh callback (a resumed session) ends with the same mean."""
    import types

    import torch

    model = torch.nn.Linear(2, 2)
    model.bias.requires_grad = False
    frozen = model.bias.detach().clone()

    def run(callback, steps, start_at=1):
        for step in range(start_at, steps + 1):
            with torch.no_grad():
                model.weight.fill_(float(step))
            state = types.SimpleNamespace(global_step=step)
            callback.on_step_end(None, state, None)
            if step == 3:
                (tmp_path / "checkpoint-3").mkdir(exist_ok=True)
                callback.on_save(None, state, None)

    whole = ft.TailAverage(model, 4, 0.5, folder=tmp_path)
    run(whole, 4)
    whole.apply()
    assert torch.allclose(model.weight, torch.full((2, 2), 3.5)) and torch.equal(model.bias, frozen)
    resumed = ft.TailAverage(model, 4, 0.5, folder=tmp_path)
    resumed.load(tmp_path / "checkpoint-3")
    run(resumed, 4, start_at=4)
    resumed.apply()
    assert torch.allclose(model.weight, torch.full((2, 2), 3.5))
    untouched = ft.TailAverage(model, 4, 0.5)
    untouched.apply()  # nothing averaged yet: the model keeps its weights
    assert torch.allclose(model.weight, torch.full((2, 2), 3.5))


def test_the_courses_errors_by_phrasing_read_as_a_run_per_column(tmp_path):
    import pandas as pd

    assert ft.phrasing_results(tmp_path / "missing.csv") is None
    rows = [{"phrasing": p, "right": r, "seed": s, "average": a, "date": "2026-12-07"}
            for p, by_run in (("a/1", (0.0, 0.1)), ("b/2", (0.9, 1.0)), ("c/3", (0.5, 0.4)))
            for (s, a), r in zip(((None, None), (1, 0.5)), by_run)]
    pd.DataFrame(rows).to_csv(tmp_path / "errors.csv", index=False)
    table = ft.phrasing_results(tmp_path / "errors.csv", shown=2)
    assert list(table.index) == ["a/1", "c/3"]  # worst on average first, the best left out
    assert list(table.columns) == ["seed 0 (2026-12-07)", "seed 1, mean of last 50% (2026-12-07)"]
    assert table.loc["c/3", "seed 1, mean of last 50% (2026-12-07)"] == 0.4


def test_training_with_average_ends_with_the_mean_of_the_last_steps_weights():
    """End to end through the Trainer: 3 steps with average=0.67 end with the mean of the weights after steps 2 and 3
    (recorded by a callback passed in beside it), not with step 3's own weights."""
    import torch
    from transformers import TrainerCallback

    from helpers.models import load_model

    model, tokenizer = load_model("smollm2-135m", precision="fp32", device="cpu")
    model = ft.unfreeze_top_layers(model, 1)
    weight = model.model.layers[-1].mlp.down_proj.weight
    after = []

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            after.append(weight.detach().clone())

    ft.train(model, tokenizer, ft.load_tickets("train")[:6], steps=3, batch_size=2, learning_rate=1e-3, progress=False,
             average=0.67, callbacks=[Record()])
    assert len(after) == 3 and not torch.equal(after[1], after[2])
    assert torch.allclose(weight, (after[1] + after[2]) / 2, atol=1e-7) and not torch.allclose(weight, after[2], atol=1e-7)
