"""The loader: embedded model offline, the chat template, determinism, and the errors a learner meets."""
import subprocess
import sys

import pytest

from helpers import models
from helpers.errors import GatedModelError, ModelNotFoundError, NoGPUError, OfflineHubError, UnsupportedPrecisionError

PROMPT = "What is the capital of France?"
REPLY_SCRIPT = (
    "from helpers.models import load_model, chat\n"
    "m, t = load_model('smollm2-135m', precision='fp32', device='cpu')\n"
    f"print(repr(chat(m, t, {PROMPT!r}, max_new_tokens=24)))\n"
)


def test_embedded_model_is_converted_to_a_safetensors_folder():
    folder = models.ensure_embedded()
    assert (folder / "model.safetensors").exists() and (folder / "config.json").exists()
    resolved = models.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert resolved.source == "embedded" and resolved.location == str(folder)


def test_the_converted_model_is_readable_by_every_user(tmp_path):
    """A root grader runs submissions as `nobody`: save_pretrained's 0600 weights made every model lab fail at its
    first load there. The cache is made readable by all, on conversion and for a cache converted before."""
    import stat

    folder = models.ensure_embedded(progress=False)
    for path in [folder, *folder.iterdir()]:
        assert path.stat().st_mode & stat.S_IROTH, path
    old = tmp_path / "converted"
    old.mkdir(mode=0o700)
    (old / "model.safetensors").write_bytes(b"x")
    (old / "model.safetensors").chmod(0o600)
    assert models.readable_by_all(old) == old
    assert stat.S_IMODE((old / "model.safetensors").stat().st_mode) == 0o644 and stat.S_IMODE(old.stat().st_mode) == 0o755


def test_concurrent_callers_wait_for_one_conversion(tmp_path, monkeypatch):
    """`bash kit test` converts in the background while tests start: a second caller waits, it does not convert again."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("OTS_CACHE", str(tmp_path))
    calls, inside = [], threading.Semaphore(1)

    def slow_conversion(gguf, target, progress):
        assert inside.acquire(blocking=False), "two conversions ran at once"
        calls.append(target)
        time.sleep(0.5)
        target.mkdir(parents=True)
        for name in ("model.safetensors", "tokenizer.json"):
            (target / name).write_text("converted")
        inside.release()
        return target

    monkeypatch.setattr(models, "_convert_embedded", slow_conversion)
    with ThreadPoolExecutor(3) as pool:
        folders = list(pool.map(lambda _: models.ensure_embedded(progress=False), range(3)))
    assert len(calls) == 1 and len(set(folders)) == 1 and str(tmp_path) in str(folders[0])


def test_embedded_model_loads_through_the_hub_code_path(embedded):
    model, tokenizer = embedded
    assert type(model).__name__ == "LlamaForCausalLM"
    assert models.parameter_count(model) == 134_515_008
    assert not getattr(model, "is_quantized", False)


def test_chat_template_wraps_roles(embedded):
    _, tokenizer = embedded
    text = tokenizer.decode(models.chat_inputs(tokenizer, "hello", system="be brief")["input_ids"][0])
    assert "<|im_start|>system\nbe brief<|im_end|>" in text
    assert text.rstrip().endswith("<|im_start|>assistant")


def test_greedy_reply_is_identical_across_two_processes(embedded):
    model, tokenizer = embedded
    here = repr(models.chat(model, tokenizer, PROMPT, max_new_tokens=24))
    # this process and a fresh one: two processes, same reply
    other = subprocess.run([sys.executable, "-c", REPLY_SCRIPT], capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    assert other == here
    assert "Paris" in here


def test_stream_gives_the_same_text_as_chat_and_timings(embedded):
    model, tokenizer = embedded
    stats = models.StreamStats()
    streamed = "".join(models.stream_chat(model, tokenizer, PROMPT, max_new_tokens=12, stats=stats)).strip()
    assert streamed == models.chat(model, tokenizer, PROMPT, max_new_tokens=12)
    assert stats.new_tokens > 1 and 0 < stats.time_to_first_token_s < stats.total_s


def test_offline_hub_request_names_the_embedded_default(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineHubError) as info:
        models.resolve_model("Qwen/Qwen2.5-7B-Instruct")
    assert "smollm2-135m" in info.value.fix and "huggingface-cli download" in info.value.fix


def test_gated_model_without_token_names_the_licence_and_ungated_options(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(models, "_hf_token", lambda: None)
    monkeypatch.setattr(models, "_in_hf_cache", lambda hub_id: False)
    with pytest.raises(GatedModelError) as info:
        models.resolve_model("llama3.1-8b")
    assert "HF_TOKEN" in info.value.fix and "qwen2.5-7b" in info.value.fix


def test_unknown_model_id_suggests_close_matches():
    with pytest.raises(ModelNotFoundError, match="did you mean"):
        models.resolve_model("qwen2.5-1.5")


def test_folder_without_config_is_explained(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        models.resolve_model(str(tmp_path))


def test_gpu_request_without_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(NoGPUError, match="device='cpu'"):
        models.load_model("smollm2-135m", precision="fp16", device="cuda")


def test_bf16_on_a_gpu_without_bf16_is_explained(monkeypatch):
    import torch

    from helpers import hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(hardware, "detect_hardware", lambda: hardware.describe_gpu("T4"))
    with pytest.raises(UnsupportedPrecisionError, match="precision='fp16'"):
        models._check_precision("bf16", "cuda")


def test_model_files_lists_weights_and_the_gguf_source():
    files = models.model_files("smollm2-135m")
    assert {"model.safetensors", models.EMBEDDED_GGUF} <= set(files["file"])


def test_gguf_parsing_is_memoised_only_while_a_load_runs(tmp_path):
    """load_gguf parses the file once and builds gguf's name map once per load, then puts gguf back as it was."""
    import gguf
    import numpy as np

    from helpers.models import _memoised_gguf_parsing

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 2), dtype=np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file()
    writer.close()
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with _memoised_gguf_parsing():
        assert gguf.GGUFReader(path) is gguf.GGUFReader(path)
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2) is gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (reader, name_map)
    assert gguf.GGUFReader(path) is not gguf.GGUFReader(path)
