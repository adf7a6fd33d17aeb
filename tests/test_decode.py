"""Batch-1 decode on the CPU with fewer bytes per token (issue 27): the lean loop's 4-bit and weight-only int8 paths
against the fp32 model (stated tolerances), their bytes by hand, the step breakdown's arithmetic, the bytes-vs-speed
table, and clear errors where a kernel is missing. Speeds are the benchmark's business (`bash kit bench-decode`),
not a test's: nothing here depends on how fast this CPU's kernels are."""
import json

import pandas as pd
import pytest

from helpers.errors import InputError

# The stated tolerances of the 4-bit path against the fp32 model, on the desk's first test tickets, 8-token greedy
# replies (measured: max logit gap 0.73, top-1 agreement 93 %, same reply on 4-5 of 8, with PyTorch's AVX-512 and
# AVX2 kernels alike; weight-only int8: 1.7, 92 %, 4 of 8). A 135M model's replies have many near-ties (top-two
# margins under 0.1 are common), so which replies keep every token depends on the CPU's bf16 rounding: the bar
# leaves room for that, and still rejects the dynamic int8 path (8-bit activations: 37 %, 0 of 8; see the README).
MAX_LOGIT_GAP = 2.5
TOP1_AGREEMENT = 0.85
SAME_REPLY = 2 / 8


@pytest.fixture(scope="module")
def int4_engine(embedded):
    from helpers.bench.lean import LeanEngine

    return LeanEngine(*embedded, weights="int4", max_length=256)


@pytest.fixture(scope="module")
def tiny_llama():
    """A two-layer Llama with random weights (the loop's code paths without the embedded model's build time)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=256, max_position_embeddings=128)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def reference(embedded):
    from helpers import paths
    from helpers.bench.lean import reference_replies

    tickets = [json.loads(line)["message"] for line in paths.dataset("support_desk/test.jsonl").read_text().splitlines()[:8]]
    return reference_replies(*embedded, tickets, reply_tokens=8)


def test_4bit_codes_round_trip_exactly_and_bound_the_error_elsewhere():
    """Weights already on a 4-bit grid (a Q4_1 file's, dequantized) come back as the same codes; any other weight is
    within half a step of its group's grid."""
    import torch

    from helpers.bench.lean import dequantize_int4, quantize_int4

    torch.manual_seed(0)
    codes = torch.randint(0, 16, (4, 64), dtype=torch.int32)
    codes[:, 0], codes[:, 32], codes[:, 1], codes[:, 33] = 0, 0, 15, 15  # every group spans the whole grid
    scale, low = torch.rand(4, 2) * 0.1 + 0.01, torch.randn(4, 2)
    weight = codes.float() * scale.repeat_interleave(32, 1) + low.repeat_interleave(32, 1)
    got, scales_and_zeros = quantize_int4(weight)
    assert torch.equal(got, codes)
    assert scales_and_zeros.shape == (2, 4, 2)  # (groups, rows, scale and zero): the packed-int4 matmul's layout
    assert torch.allclose(dequantize_int4(got, scales_and_zeros), weight, atol=1e-5)
    other = torch.randn(3, 32)
    step = (other.amax(1) - other.amin(1)) / 15
    error = (dequantize_int4(*quantize_int4(other)) - other).abs().amax(1)
    assert bool((error <= step / 2 + 1e-6).all())
    # by hand: 0, 0.1, ..., 1.5 (a 16-step ramp) -> scale 0.1, codes 0..15, zero = 0 + 8 * 0.1
    ramp = torch.arange(32).float().remainder(16).mul(0.1)[None]
    codes, scales_and_zeros = quantize_int4(ramp)
    assert codes[0, :16].tolist() == list(range(16))
    assert scales_and_zeros[0, 0].tolist() == pytest.approx([0.1, 0.8])
    with pytest.raises(InputError, match="groups of 32") as error:
        quantize_int4(torch.randn(2, 40))
    assert "int8" in error.value.fix


def test_low_bit_linears_compute_the_product_of_their_own_weights():
    """The packed-int4 and weight-only int8 modules compute x @ W.T + b for the weights they stand for (bf16
    activations: within bf16's rounding), for one token and for a prompt's worth."""
    import torch

    from helpers.bench.lean import _linear, _module_bytes, dequantize_int4, quantize_int4

    torch.manual_seed(1)
    weight, bias = torch.randn(96, 64) * 0.05, torch.randn(96) * 0.1
    for shape in ((1, 1, 64), (1, 5, 64)):
        x = torch.randn(*shape)
        four = _linear(weight, bias, "int4")
        expected = x @ dequantize_int4(*quantize_int4(weight)).T + bias
        assert torch.allclose(four(x), expected, rtol=0.02, atol=0.02), float((four(x) - expected).abs().max())
        eight = _linear(weight, bias, "int8w")
        assert torch.allclose(eight(x), x @ weight.T + bias, rtol=0.03, atol=0.03)
    # bytes by hand: 4 bits a weight + a bf16 scale and zero per 32; 1 byte a weight + a bf16 scale per row
    assert _module_bytes(four) == 96 * 64 // 2 + 96 * (64 // 32) * 2 * 2
    assert _module_bytes(eight) == 96 * 64 + 96 * 2


@pytest.mark.parametrize("weights", ["int4", "auto"])
def test_4bit_lean_loop_follows_the_fp32_model_within_the_stated_tolerance(embedded, reference, int4_engine, weights):
    from helpers.bench.lean import ROLES, LeanEngine, fidelity

    engine = int4_engine if weights == "int4" else LeanEngine(*embedded, weights=weights, max_length=256)
    check = fidelity(engine, reference)
    assert check["max logit gap"] <= MAX_LOGIT_GAP, check
    assert check["top-1 agreement"] >= TOP1_AGREEMENT, check
    assert check["same greedy reply"] >= SAME_REPLY, check
    kinds = {engine.kinds[role] for role in ROLES}
    assert kinds <= ({"int4"} if weights == "int4" else {"int4", "int8w"}), engine.kinds
    assert engine.kinds["head"] == "int8w" and engine.scripted
    # the layers keep the model file's own 4-bit values: every RMSNorm weight applied to the activations instead
    layer = engine.stack.layers[0]
    assert (layer.norm1 is not None) == (engine.kinds["qkv"] == "int4")
    record = engine.run("A customer asks where their parcel is.", max_tokens=4)
    assert record.ok and record.output_tokens == 4


def test_4bit_lean_loop_reads_the_bytes_of_the_4bit_file(embedded, int4_engine):
    """4-bit projections and an 8-bit vocabulary projection: the bytes the embedded Q4_1 GGUF file holds, within
    the scales' few percent (the file's scales are fp16 per 32, the vocabulary's Q8_0 has one per 32 too)."""
    from helpers.bench.decode import gguf_bytes_per_token
    from helpers.models import embedded_gguf_path

    model, engine = embedded[0], int4_engine
    config = model.config
    hidden, inner, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (hidden // config.num_attention_heads)
    per_layer = hidden * (hidden + 2 * kv) + hidden * hidden + 2 * inner * hidden + inner * hidden
    vocabulary = config.vocab_size * hidden
    by_hand = layers * per_layer * (0.5 + 4 / 32) + vocabulary + config.vocab_size * 2
    assert engine.weights_bytes() == pytest.approx(by_hand, rel=1e-9)
    assert engine.weights_bytes() == pytest.approx(gguf_bytes_per_token(embedded_gguf_path()), rel=0.03)


def test_missing_kernels_name_the_fix(embedded, tiny_llama, monkeypatch):
    import torch

    from helpers.bench import lean

    embedded = (tiny_llama, embedded[1])
    monkeypatch.setattr(lean, "int4_available", lambda: "this PyTorch has no _weight_int4pack_mm_for_cpu (added in PyTorch 2.5)")
    with pytest.raises(InputError, match="_weight_int4pack_mm_for_cpu") as error:
        lean.LeanEngine(*embedded, weights="int4", max_length=64)
    assert "int8" in error.value.fix
    auto = lean.LeanEngine(*embedded, weights="auto", max_length=64)  # no 4-bit kernel: the 8-bit weights, said so
    assert {auto.kinds[role] for role in lean.ROLES} == {"int8w"} and "int8w" in auto.name
    monkeypatch.delattr(torch.ops.aten, "_weight_int8pack_mm", raising=False)
    if not hasattr(torch.ops.aten, "_weight_int8pack_mm"):
        with pytest.raises(InputError, match="_weight_int8pack_mm"):
            lean._linear(torch.randn(8, 32), None, "int8w")
    with pytest.raises(InputError, match="unknown weights") as error:
        lean.LeanEngine(*embedded, weights="nf4")
    assert "int4" in error.value.fix


def test_step_breakdown_adds_up_to_the_step(int4_engine):
    from helpers.bench.lean import format_breakdown, step_breakdown

    engine = int4_engine
    rows = step_breakdown(engine, position=16, rounds=2)
    parts = {row["part"]: row for row in rows}
    whole = parts.pop("whole step")
    assert list(parts)[:5] == ["qkv projections", "o projections", "gate_up projections", "down projections", "vocabulary projection"]
    assert sum(row["ms per token"] for row in parts.values()) >= whole["ms per token"] * 0.999  # the rest is what is left
    assert all(row["ms per token"] >= 0 for row in parts.values())
    assert sum(row["MB read"] for row in parts.values()) == pytest.approx(whole["MB read"]) == pytest.approx(engine.weights_bytes() / 1e6)
    text = format_breakdown(rows, "int4")
    assert "the rest" in text and "whole step" in text
    with pytest.raises(InputError, match="position"):
        step_breakdown(engine, position=300)


def test_ladder_table_by_hand():
    """Bytes, bandwidth and same-round ratios: 2 engines, 3 rounds, numbers checked by hand."""
    from helpers.bench.decode import ladder_table, read_ladder, same_rounds

    speeds = iter([10.0, 40.0, 12.0, 36.0, 8.0, 44.0])
    runs = same_rounds({"slow": lambda: next(speeds), "fast": lambda: next(speeds)}, rounds=3, progress=False)
    assert list(runs["engine"]) == ["slow", "fast"] * 3
    table = ladder_table(runs, {"slow": 400e6, "fast": 100e6}, bandwidth_gbps=20.0, reference="slow")
    assert table.loc["slow", "tokens/s"] == 10.0 and table.loc["fast", "tokens/s"] == 40.0  # medians
    assert table.loc["fast", "roofline tokens/s"] == pytest.approx(200.0)  # 20 GB/s / 100 MB
    assert table.loc["fast", "% of roofline"] == pytest.approx(20.0)
    assert table.loc["fast", "vs slow"] == pytest.approx(4.0)  # median of 4.0, 3.0, 5.5
    with pytest.raises(InputError, match="no bytes"):
        ladder_table(runs, {"slow": 1.0}, 20.0)
    with pytest.raises(InputError, match="bandwidth"):
        ladder_table(runs, {"slow": 1.0, "fast": 1.0}, 0.0)
    table["weights"] = ["fp32", "int4"]
    table["top-1 agreement"], table["same greedy reply"] = [1.0, 0.9], [1.0, 0.5]
    text = read_ladder(table)
    assert "int4: 4.0x fewer bytes per token than fp32, 4.0x the speed" in text
    assert "90% of prompt positions" in text and "50% of its greedy replies" in text


def test_gguf_bytes_by_hand(tmp_path):
    """Every tensor's bytes in a GGUF file (written here: an F32 and a Q8_0 tensor of known sizes)."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize

    from helpers.bench.decode import gguf_bytes_per_token

    writer = GGUFWriter(str(tmp_path / "tiny.gguf"), "llama")
    writer.add_tensor("norm.weight", np.ones(64, dtype=np.float32))
    q8 = quantize(np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32), GGMLQuantizationType.Q8_0)
    writer.add_tensor("proj.weight", q8, raw_dtype=GGMLQuantizationType.Q8_0)  # its shape from the bytes
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert gguf_bytes_per_token(tmp_path / "tiny.gguf") == 64 * 4 + 4 * (64 // 32) * 34  # Q8_0: 34 bytes per 32


def test_cpu_description_names_the_machine():
    from helpers.hardware import cpu_description

    line = cpu_description()
    assert "cores" in line and "PyTorch kernels" in line


def test_bytes_ladder_refuses_what_it_cannot_run(tiny_llama, embedded, monkeypatch, capsys):
    """The ladder end to end runs in Lab 04 (its student copy in CI); here its refusals, each naming the fix."""
    from helpers.bench import decode
    from helpers.quantize import measure

    with pytest.raises(InputError, match="unknown precision") as error:
        decode.bytes_ladder(tiny_llama, embedded[1], bandwidth_gbps=20.0, prompt="x", kinds=("fp16",))
    assert "int4" in error.value.fix
    monkeypatch.setattr(measure, "llama_cpp_available", lambda: False)
    with pytest.raises(InputError, match="llama-cpp-python") as error:
        decode.bytes_ladder(tiny_llama, embedded[1], bandwidth_gbps=20.0, prompt="x", kinds=("fp32",), llama_cpp=True)
    assert "llamacpp" in error.value.fix
    # a kind whose kernel this PyTorch lacks: its row is left out and said, the others run
    from helpers.bench import lean

    monkeypatch.setattr(lean, "int4_available", lambda: "this PyTorch has no _weight_int4pack_mm_for_cpu (added in PyTorch 2.5)")
    skipped = decode.bytes_ladder(*embedded, bandwidth_gbps=20.0, prompt="Where is my parcel?", new_tokens=2, rounds=1,
                                  kinds=("fp32", "int4"), progress=False)
    assert list(skipped.index) == ["lean loop fp32"]
    assert "int4 row skipped: this PyTorch has no _weight_int4pack_mm_for_cpu" in capsys.readouterr().out
    with pytest.raises(InputError, match="no lean engine") as error:
        decode.bytes_ladder(*embedded, bandwidth_gbps=20.0, prompt="x", kinds=("int4",), progress=False)
    assert "int8" in error.value.fix
    table = pd.DataFrame({"MB per token": [400.0, 100.0], "tokens/s": [10.0, 40.0], "weights": ["fp32", "int4"]},
                         index=["lean loop fp32", "lean loop int4"])
    decode.plot_ladder(table, 20.0)


def test_bytes_ladder_end_to_end_at_its_smallest(embedded):
    """fp32 and 4-bit in the same round, their bytes, and fidelity columns (fp32 against itself: exact)."""
    from helpers.bench.decode import bytes_ladder

    table = bytes_ladder(*embedded, bandwidth_gbps=20.0, prompt="Where is my parcel?", new_tokens=3, rounds=1,
                         fidelity_prompts=["Where is my parcel?"], reply_tokens=2, kinds=("fp32", "int4"), progress=False)
    assert list(table.index) == ["lean loop fp32", "lean loop int4"] and list(table["weights"]) == ["fp32", "int4"]
    assert (table["tokens/s"] > 0).all() and table["MB per token"].is_monotonic_decreasing
    assert table.loc["lean loop fp32", "top-1 agreement"] == 1.0 and table.loc["lean loop fp32", "same greedy reply"] == 1.0
