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
