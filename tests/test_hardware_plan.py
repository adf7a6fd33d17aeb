"""Hardware detection and the planner, on CPU and on described GPUs."""
import pytest

from helpers.errors import InputError, NotEnoughMemoryError
from helpers.hardware import Hardware, cpu_hardware, describe_gpu, detect_hardware, find_spec, gpu_specs, roofline_tokens_per_s
from helpers.plan import parse_override, plan

CONSUMER_8GB = Hardware(kind="cuda", name="NVIDIA GeForce RTX 3070", vram_gb=8.0, compute_capability=(8, 6), bf16=True, cpu_cores=8, ram_gb=32)


def test_spec_table_has_the_required_gpus():
    for name in ["T4", "L4", "A10G", "A100-40GB", "A100-80GB", "H100", "H200", "RTX-3090", "RTX-4090"]:
        row = gpu_specs()[name]
        assert row["vram_gb"] > 0 and row["bandwidth_gbps"] > 0 and row["fp16_tflops"] > 0 and row["tdp_w"] > 0


def test_driver_names_match_spec_rows():
    assert find_spec("Tesla T4")["name"] == "T4"
    assert find_spec("NVIDIA A100-SXM4-80GB")["name"] == "A100-80GB"
    assert find_spec("NVIDIA H100 80GB HBM3")["name"] == "H100"
    assert find_spec("Some Unknown GPU") is None


def test_this_machine_is_detected_as_cpu_in_ci():
    hw = detect_hardware()
    assert hw.kind in {"cpu", "cuda"} and hw.cpu_cores >= 1 and hw.ram_gb > 0


def test_cpu_plan_uses_the_embedded_model():
    p = plan("00", cpu_hardware(), override="")
    assert (p.tier, p.model, p.precision, p.device) == ("cpu", "smollm2-135m", "fp32", "cpu")
    assert 0 < p.expected_memory_gb < p.memory_available_gb and p.expected_minutes > 0


def test_a_mac_gpu_is_named_and_the_plan_says_why_it_is_not_used(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    hw = detect_hardware()
    assert hw.kind == "cpu" and "Apple GPU (MPS) found, not used" in hw.summary()
    p = plan("02", hw, override="")
    assert p.device == "cpu" and any("Apple GPU (MPS) found but not used" in note and "CUDA" in note for note in p.notes)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert not any("MPS" in note for note in plan("02", cpu_hardware(), override="").notes)


def test_t4_plan_falls_back_to_fp16_and_says_why():
    p = plan("00", describe_gpu("T4"), override="precision=bf16")
    assert p.tier == "colab" and p.precision == "fp16"
    assert any("no bf16" in note for note in p.notes)


def test_t4_default_models_are_ungated_and_fit():
    from helpers.catalog import get_model

    for lab in ["00", "02", "03", "04", "05"]:
        p = plan(lab, describe_gpu("T4"), override="")
        assert not get_model(p.model).gated
        assert p.expected_memory_gb <= 16 * 0.9


def test_consumer_8gb_gpu_gets_a_quantized_7b_and_a_note_about_unknown_speed():
    p = plan("02", CONSUMER_8GB, override="")
    assert p.tier == "colab" and p.precision == "nf4"
    assert p.expected_memory_gb <= 8 * 0.9
    assert any("not in datasets/gpu_specs.csv" in note for note in p.notes)


@pytest.mark.parametrize("gpu", ["A100-80GB", "H100"])
def test_big_gpus_run_7b_in_bf16(gpu):
    p = plan("02", describe_gpu(gpu), override="")
    assert (p.tier, p.model, p.precision) == ("local-gpu", "qwen2.5-7b", "bf16")


def test_memory_fallback_steps_down_precision_with_notes():
    p = plan("02", describe_gpu("A100-40GB"), override="model=mixtral-8x7b,precision=bf16")
    assert p.precision == "nf4"
    assert sum("trying" in note for note in p.notes) == 2


@pytest.mark.parametrize("gpu", ["RTX-4090", "L4", "A10G", "A100-40GB"])
def test_every_lab_fits_a_24_to_40_gb_gpu_by_smaller_batches_first_then_precision(gpu):
    """Labs 04-05 at the local-gpu tier's batch once asked more than a 24 GB card has (the plan raised): batches are
    halved to 4 before the precision drops, each step a note, and Lab 04 counts its three copies of the weights."""
    from helpers.catalog import estimate_memory

    for lab in ["00", "02", "03", "04", "05"]:
        p = plan(lab, describe_gpu(gpu), override="")
        assert p.expected_memory_gb <= p.memory_available_gb, (lab, p.expected_memory_gb)
    lab05 = plan("05", describe_gpu(gpu), override="")
    steps = [note for note in lab05.notes if "trying" in note]
    assert all("trying batch" in note for note in steps) and lab05.precision == "bf16" and lab05.batch >= 4
    lab04 = plan("04", describe_gpu(gpu), override="")
    one = estimate_memory(lab04.model, lab04.precision, lab04.context, lab04.batch)
    assert lab04.copies == 3 and lab04.expected_memory_gb == pytest.approx(one.total_gb + 2 * one.weights_gb)
    assert ("3 copies of the weights" in dict(lab04.as_rows())["expected memory"])


def test_model_that_never_fits_is_a_clear_error():
    with pytest.raises(NotEnoughMemoryError, match="pick a smaller model"):
        plan("02", describe_gpu("T4"), override="model=llama3-70b")


def test_env_var_overrides_the_plan(monkeypatch):
    monkeypatch.setenv("OTS_PLAN", "tier=cpu,batch=4")
    p = plan("00", describe_gpu("H100"))
    assert p.tier == "cpu" and p.batch == 4 and p.device == "cpu"
    assert any("OTS_PLAN" in note for note in p.notes)


def test_bad_override_names_the_fix():
    with pytest.raises(InputError, match="unknown key"):
        parse_override("gpu=h100")
    with pytest.raises(InputError, match="unknown precision"):
        parse_override("precision=int3")


def test_unknown_lab():
    with pytest.raises(InputError, match="no plan for lab"):
        plan("42", cpu_hardware(), override="")


def test_plan_prints_as_a_table():
    text = str(plan("00", describe_gpu("T4"), override=""))
    assert "expected memory" in text and "qwen2.5-1.5b" in text
    assert "<table" in plan("00", cpu_hardware(), override="")._repr_html_()


def test_roofline():
    assert roofline_tokens_per_s(320, 3.2e9) == pytest.approx(100.0)
    with pytest.raises(InputError):
        roofline_tokens_per_s(0, 1)


def test_compute_dtype_comes_from_the_plan():
    from helpers.hardware import cpu_hardware, describe_gpu
    from helpers.plan import plan

    assert plan("03", describe_gpu("T4"), "").compute_dtype == "float16"  # NF4 base, T4: fp16 compute
    assert plan("03", describe_gpu("A100-80GB"), "").compute_dtype == "bfloat16"
    assert plan("00", describe_gpu("T4"), "").precision == "fp16"
    assert plan("00", cpu_hardware(), "tier=cpu").compute_dtype == "float32"
    assert plan("02", cpu_hardware(), "tier=cpu,precision=nf4").compute_dtype == "float32"  # CPUs: no fast bf16 matmul


def test_simulated_gpu_needs_a_real_one(monkeypatch):
    from helpers.hardware import detect_hardware

    monkeypatch.setenv("OTS_SIMULATE_GPU", "T4")
    assert not detect_hardware().has_gpu  # no CUDA here: nothing to simulate on, the CPU is described


def test_explicit_arguments_win_over_the_plan(monkeypatch):
    import dataclasses

    from helpers import models
    from helpers.plan import plan

    seen = {}
    monkeypatch.setattr(models, "_check_precision", lambda precision, device: seen.update(precision=precision, device=device))
    monkeypatch.setattr(models, "resolve_model", lambda ref: (_ for _ in ()).throw(RuntimeError(ref)))
    p = dataclasses.replace(plan("03", override="tier=cpu"), precision="nf4")
    with pytest.raises(RuntimeError, match="qwen2.5-0.5b"):
        models.load_model("qwen2.5-0.5b", precision="int8", device="cpu", plan=p)
    assert seen == {"precision": "int8", "device": "cpu"}
    with pytest.raises(RuntimeError, match="smollm2-135m"):
        models.load_model(plan=p)
    assert seen == {"precision": "nf4", "device": "cpu"}


def test_plan_errors_and_slow_overrides_name_ots_plan():
    from helpers.errors import InputError
    from helpers.hardware import cpu_hardware
    from helpers.plan import plan

    with pytest.raises(InputError) as error:
        plan("02", cpu_hardware(), override="model=llama-9000")
    assert "OTS_PLAN asks for model 'llama-9000'" in error.value.problem and "drop model= from OTS_PLAN" in error.value.fix
    with pytest.raises(InputError, match="not a positive whole number"):
        plan("02", cpu_hardware(), override="batch=abc")
    forced = plan("03", cpu_hardware(), override="tier=colab")
    assert forced.device == "cpu" and any("To undo: unset OTS_PLAN" in note for note in forced.notes)
    assert not any("To undo" in note for note in plan("03", cpu_hardware(), override="tier=cpu").notes)
