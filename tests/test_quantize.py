"""Lab 02: precisions on the embedded model, the estimator against measurements, what fits where."""
import subprocess
import sys

import pytest

from helpers import quantize as q
from helpers.catalog import catalog, estimate_memory, get_model
from helpers.errors import KitError, UnsupportedPrecisionError
from helpers.models import load_gguf, load_model, weights_bytes


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8", "nf4"])
def test_estimator_matches_measured_weights_within_10_percent(precision):
    model, _ = load_model("smollm2-135m", precision=precision, device="cpu")
    predicted = estimate_memory("smollm2-135m", precision, 1024, 1, device="cpu").weights_gb
    assert weights_bytes(model) / 1e9 == pytest.approx(predicted, rel=0.10)


def test_quantized_model_still_answers_and_perplexity_orders(embedded):
    model, tokenizer = embedded
    text = q.heldout_text()[:1200]  # a third of the article: enough to order the precisions, a third of the time
    full = q.perplexity(model, tokenizer, text)
    nf4_model, nf4_tokenizer = load_model("smollm2-135m", precision="nf4", device="cpu")
    assert 1 < full < q.perplexity(nf4_model, nf4_tokenizer, text)
    assert q.perplexity(model, tokenizer, "the cat sat on the mat. " * 40) < full  # repetition is easy to predict


def test_agreement():
    assert q.agreement(["a", "b"], ["a", "c"]) == 0.5
    with pytest.raises(KitError):
        q.agreement(["a"], ["a", "b"])


def test_decode_speed_and_roofline(embedded):
    model, tokenizer = embedded
    speed = q.decode_speed(model, tokenizer, new_tokens=8)
    assert speed.decode_tokens_per_s > 0 and speed.time_to_first_token_s > 0 and speed.new_tokens == 8
    bound, share = q.roofline_share(speed.decode_tokens_per_s, 20.0, 0.538e9)
    assert bound == pytest.approx(20e9 / 0.538e9) and share > 0


def test_gguf_only_for_models_that_ship_one():
    # loading the embedded GGUF itself (about 17 s of dequantizing) runs in Lab 02's notebooks, solution and lab
    with pytest.raises(UnsupportedPrecisionError, match="GGUF"):
        load_gguf("qwen2.5-7b")


@pytest.mark.skipif(q.llama_cpp_available(), reason="llama-cpp-python installed")
def test_llama_cpp_absent_is_explained():
    with pytest.raises(KitError, match=r"\[llamacpp\]"):
        q.llama_cpp_decode()


def test_fits_table_is_monotonic_in_precision_and_gpu_size():
    table = q.fits_table(context=4096)
    for key in catalog():
        counts = [table.loc[(key, p), "A100-40GB"] for p in ("bf16", "int8", "nf4")]
        assert counts == sorted(counts, reverse=True)
        assert table.loc[(key, "bf16"), "A100-80GB"] <= table.loc[(key, "bf16"), "A100-40GB"]


def test_largest_model_that_fits():
    assert q.largest_model_that_fits("H100", "nf4") == "llama3-70b"  # about 42 GB in 4-bit
    assert get_model(q.largest_model_that_fits("T4", "bf16")).params_b < 7


def test_default_models_on_every_tier_are_ungated():
    from helpers.plan import tier_defaults

    for row in tier_defaults().values():
        if row["model"] != "-":
            assert not get_model(row["model"]).gated, row


def test_claim_checks_give_verdicts():
    for check in (q.claims.check_c6(), q.claims.check_c7(), q.claims.check_c8()):
        assert check["verdict"].startswith(("holds", "does not hold")) and check["evidence"]
    assert q.claims.check_c8()["verdict"].startswith("holds only if quantized")


def test_gpu_bench_script_runs_on_cpu_with_random_weights(tmp_path):
    out = tmp_path / "results.csv"
    result = subprocess.run([sys.executable, "scripts/gpu_quant_bench.py", "--model", "smollm2-135m", "--device", "cpu",
                             "--precisions", "fp32", "--prompt-tokens", "16", "--new-tokens", "4", "--repeats", "1", "--no-static",
                             "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    text = out.read_text()
    assert "smollm2-135m,fp32,dynamic" in text and "random weights" in text


@pytest.mark.parametrize("key", ["qwen2.5-7b", "llama3.1-8b", "mistral-7b", "smollm2-135m"])
def test_random_model_configs_reproduce_the_catalog_architecture(key):
    import torch
    from transformers import AutoModelForCausalLM

    from helpers.random_models import config_for

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config_for(key))
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(get_model(key).parameter_count(), rel=0.005)


def test_claims_c6_c8_take_the_learners_exercise_answers():
    from helpers import quantize as q

    base6, base8 = q.claims.check_c6(), q.claims.check_c8()
    assert "finish exercise 2" in base6["evidence"] and "finish exercise 1" in base8["evidence"]
    fits = q.claims.check_c8(your_load_gb=10.0)
    assert fits["verdict"] == base8["verdict"] and "10.0 GB" in fits["evidence"]
    assert "one conversation at a time" in q.claims.check_c8(your_load_gb=30.0)["verdict"]
    assert "more than an 8B model needs" in q.claims.check_c6(your_largest_on_l4="gemma2-9b")["verdict"]
    assert q.claims.check_c6(your_largest_on_l4="smollm2-135m")["verdict"] == base6["verdict"]
    assert "not a catalog key" in q.claims.check_c6(your_largest_on_l4="llama-9000")["evidence"]
