"""The model catalog and the memory estimator."""
import pytest

from helpers.catalog import catalog, estimate_memory, get_model
from helpers.errors import InputError, ModelNotFoundError


def test_catalog_has_the_course_models():
    keys = set(catalog())
    assert {"smollm2-135m", "smollm2-1.7b", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b", "llama3.1-8b", "mistral-7b",
            "gemma2-2b", "gemma2-9b", "mixtral-8x7b", "llama3-70b"} <= keys


@pytest.mark.parametrize("key", sorted(catalog()))
def test_architecture_numbers_match_the_published_parameter_count(key):
    spec = catalog()[key]
    assert spec.parameter_count() / 1e9 == pytest.approx(spec.params_b, rel=0.05)


def test_mixtral_uses_a_fraction_of_its_parameters_per_token():
    spec = get_model("mixtral-8x7b")
    assert 12e9 < spec.active_parameter_count() < 14e9


def test_hand_worked_memory_estimate_for_the_embedded_model():
    spec = get_model("smollm2-135m")
    est = estimate_memory(spec, "bf16", context=1000, batch=2, device="cpu")
    assert est.weights_gb == pytest.approx(spec.parameter_count() * 2 / 1e9)
    # K and V, 30 layers, 3 KV heads of 64, 1000 tokens, 2 sequences, 2 bytes
    assert est.kv_cache_gb == pytest.approx(2 * 30 * 3 * 64 * 1000 * 2 * 2 / 1e9)


def test_quantization_shrinks_linear_layers_only():
    spec = get_model("llama3.1-8b")
    bf16 = estimate_memory(spec, "bf16").weights_gb
    nf4 = estimate_memory(spec, "nf4").weights_gb
    int8 = estimate_memory(spec, "int8").weights_gb
    assert nf4 < int8 < bf16
    # embeddings and head stay in bf16, so 4-bit saves a bit less than 75 %
    assert 0.60 < 1 - nf4 / bf16 < 0.75


def test_estimate_rejects_bad_input():
    with pytest.raises(InputError, match="precision"):
        estimate_memory("smollm2-135m", "int3")
    with pytest.raises(InputError, match="context"):
        estimate_memory("smollm2-135m", "bf16", context=0)
    with pytest.raises(ModelNotFoundError, match="did you mean"):
        get_model("qwen2.5-7")


def test_training_memory_estimate_lands_within_its_stated_factor_of_recorded_peaks(monkeypatch):
    """Issue 25: Lab 03's plan said 0.66 GB (an inference estimate) while training peaked at 3.3 GB. The plan of a
    training lab now predicts training memory, within TRAIN_ESTIMATE_FACTOR of the course's recorded QLoRA runs."""
    from helpers.catalog import TRAIN_ESTIMATE_FACTOR, estimate_memory, estimate_training_memory
    from helpers.hardware import describe_gpu
    from helpers.plan import plan

    from helpers import finetune as ft

    recorded = ft.gpu_qlora_results()
    packed = recorded[recorded["variant"].str.startswith("kit:")]  # the kit's packed runs: 16 rows a step
    assert len(packed) >= 2
    estimate = estimate_training_memory("qwen2.5-7b", "nf4", 1024, 16).total_gb
    for variant, peak in zip(packed["variant"], packed["peak_memory_gb"].astype(float)):
        assert 1 / TRAIN_ESTIMATE_FACTOR <= peak / estimate <= TRAIN_ESTIMATE_FACTOR, (variant, peak, estimate)
    cpu = estimate_training_memory("smollm2-135m", "fp32", 256, 8, device="cpu")
    assert 1 / TRAIN_ESTIMATE_FACTOR <= 3.26 / cpu.total_gb <= TRAIN_ESTIMATE_FACTOR  # Lab 03's measured peak, 2026-12-03
    assert cpu.total_gb > estimate_memory("smollm2-135m", "fp32", 256, 8, device="cpu").total_gb
    assert estimate_training_memory("smollm2-135m", "fp32", 256, 16, device="cpu").overhead_gb > cpu.overhead_gb
    # the CPU tier adapts the top 10 of 30 layers (the plan's adapted_layers): only those keep activations
    top = estimate_training_memory("smollm2-135m", "fp32", 256, 8, device="cpu", adapted_layers=10)
    assert top.weights_gb == cpu.weights_gb and top.overhead_gb == pytest.approx(cpu.overhead_gb / 3)
    assert 1 / TRAIN_ESTIMATE_FACTOR <= 2.01 / top.total_gb <= TRAIN_ESTIMATE_FACTOR  # Lab 03's measured peak, 2026-12-06
    # and Lab 03 holds two copies of the weights at its peak: the full fine-tuning run loads its own beside LoRA's
    assert plan("03").copies == 2 and plan("03").expected_memory_gb == pytest.approx(top.total_gb + top.weights_gb)
    assert 1 / TRAIN_ESTIMATE_FACTOR <= 2.72 / plan("03").expected_memory_gb <= TRAIN_ESTIMATE_FACTOR  # measured 2026-12-07
    assert plan("03").adapted_layers == 10
    assert ("LoRA layers", "the top 10 of 30 (the backward pass stops there)") in plan("03").as_rows()
    monkeypatch.delenv("OTS_PLAN", raising=False)
    l4 = plan("03", describe_gpu("L4"))  # 24 GB: a 7B at batch 16 needs ~45 GB to train; the plan halves the batch
    assert l4.batch < 16 and l4.expected_memory_gb <= l4.memory_available_gb and any("trying batch" in n for n in l4.notes)
