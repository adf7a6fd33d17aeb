"""Every OTS_PLAN field reaches the code that uses it, in every lab that uses it (issue 12).

Each test sets the override the way a learner does (the environment variable) and asks the lab's own
helper what it will run: the plan decides once, the labs follow."""
import pytest

from helpers.hardware import Hardware
from helpers.plan import plan

# a CPU with room for every tier's sizes: what reaches the labs must not depend on the test machine's memory
# (a GPU tier forced onto a smaller machine steps its batch down, as the plan's memory fallback should)
ROOMY_CPU = Hardware(kind="cpu", name="test CPU", cpu_cores=2, ram_gb=64.0)


@pytest.fixture
def cpu(monkeypatch):
    def make(lab, override):
        monkeypatch.setenv("OTS_PLAN", override)
        return plan(lab, ROOMY_CPU)
    return make


def test_batch_reaches_lab03_training_and_lab04_sweeps_and_the_memory_estimate(cpu):
    from helpers import finetune as ft
    from helpers.bench.compare import bench_settings

    small, large = cpu("03", "tier=cpu,batch=2"), cpu("03", "tier=cpu,batch=16")
    assert (ft.run_settings(small).batch_size, ft.run_settings(large).batch_size) == (2, 16)
    assert small.expected_memory_gb < large.expected_memory_gb
    assert max(bench_settings(cpu("04", "tier=cpu,batch=2")).batches) == 2
    assert max(bench_settings(cpu("04", "tier=cpu,batch=2")).concurrencies) == 2
    assert max(bench_settings(cpu("04", "tier=cpu,batch=8")).batches) == 8


def test_context_reaches_the_plan_estimate_and_lab02s_memory_table(cpu):
    from helpers.catalog import estimate_memory

    short, long = cpu("02", "tier=cpu,context=512"), cpu("02", "tier=cpu,context=8192")
    assert (short.context, long.context) == (512, 8192)
    assert short.expected_memory_gb < long.expected_memory_gb
    # Lab 02's estimate cell: estimate_memory(p.model, precision, p.context, p.batch)
    assert estimate_memory(long.model, "fp32", long.context, long.batch).kv_cache_gb > \
        estimate_memory(short.model, "fp32", short.context, short.batch).kv_cache_gb


@pytest.mark.parametrize("lab", ["00", "02", "03", "04"])
def test_model_and_precision_reach_the_loader_in_every_lab_that_loads_a_model(cpu, lab, monkeypatch):
    """``load_model(plan=p)`` is what every lab's loading cell calls: the plan's model, precision and
    device must be what reaches transformers (the download itself is replaced by a recorder)."""
    import types

    import torch
    import transformers

    from helpers import models

    p = cpu(lab, "tier=cpu,model=qwen2.5-1.5b,precision=bf16")
    assert (p.model, p.precision) == ("qwen2.5-1.5b", "bf16")
    calls = {}

    def resolve(ref):
        calls["ref"] = ref
        return types.SimpleNamespace(location="recorded-location", source="local")

    def model_from_pretrained(location, **kwargs):
        calls["model"] = (location, kwargs)
        return types.SimpleNamespace(eval=lambda: None)

    monkeypatch.setattr(models, "resolve_model", resolve)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda location, **kw: types.SimpleNamespace(pad_token="x"))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model_from_pretrained)
    models.load_model(plan=p)
    assert calls["ref"] == "qwen2.5-1.5b"
    location, kwargs = calls["model"]
    assert location == "recorded-location" and kwargs["dtype"] == torch.bfloat16 and kwargs["device_map"] == "cpu"


def test_precision_reaches_lab02s_reference_and_lab03s_training_choices(cpu):
    from helpers import finetune as ft
    from helpers import quantize as q

    p = cpu("03", "tier=cpu,precision=nf4")
    assert p.precision == "nf4"
    assert ft.training_choices(p, 64).__dict__ is not None
    assert q.precisions_for(cpu("02", "tier=cpu"))[0] == "fp32"


def test_tier_reaches_the_sizes_every_lab_uses(cpu):
    from helpers import finetune as ft
    from helpers.bench.compare import bench_settings
    from helpers.hardware import describe_gpu

    t4 = describe_gpu("T4", ram_gb=12.7, cpu_cores=2)
    # sizes follow the plan's device: a GPU tier forced on a CPU-only machine still trains and benchmarks at CPU sizes
    assert ft.run_settings(cpu("03", "tier=colab")).steps == ft.run_settings(cpu("03", "tier=cpu")).steps
    assert bench_settings(cpu("04", "tier=colab")) == bench_settings(cpu("04", "tier=cpu"))
    assert ft.run_settings(plan("03", t4, override="tier=colab")).steps > ft.run_settings(cpu("03", "tier=cpu")).steps
    lab04_t4 = plan("04", t4, override="tier=colab")
    assert bench_settings(lab04_t4).quality_rows > bench_settings(cpu("04", "tier=cpu")).quality_rows and bench_settings(lab04_t4).compile
