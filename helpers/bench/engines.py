"""The engines Lab 04 drives with one harness. Each one answers ``run(prompt, max_tokens)`` with a
:class:`~helpers.bench.metrics.RequestRecord` (timestamps of every streamed token or chunk), so the same
metrics code measures all of them:

- :class:`InProcessEngine`  Hugging Face ``generate`` in this process (the path Labs 00-03 use), with the
  default dynamic KV cache or a static one (compiled with ``torch.compile`` where the plan says it pays);
- :class:`OpenAIEngine`     any OpenAI-compatible endpoint (the kit's ``transformers serve``, vLLM,
  llama.cpp server, Ollama) through the official ``openai`` client, streaming;
- :class:`LlamaCppEngine`   llama.cpp on the GGUF file as is, where llama-cpp-python is installed.

An engine that cannot run here is not constructed: :func:`available_engines` says why and how to install it.
"""
from __future__ import annotations

import importlib.util
import os
import threading
import time
from dataclasses import dataclass

from ..errors import InputError, KitError
from .metrics import RequestRecord


class EngineError(KitError):
    """An engine failed in a way the learner can fix (endpoint down, wrong model name, bad stream)."""


def _timing_streamer():
    """A transformers streamer that records the arrival time of every generated token."""
    from transformers.generation.streamers import BaseStreamer

    class TimingStreamer(BaseStreamer):
        def __init__(self):
            self.times: list[float] = []
            self._prompt_seen = False

        def put(self, value):
            if not self._prompt_seen:  # generate() first puts the prompt
                self._prompt_seen = True
                return
            now = time.perf_counter()
            self.times.extend([now] * (value.shape[-1] if value.dim() > 1 and value.shape[0] == 1 else 1))

        def end(self):
            pass

    return TimingStreamer()


@dataclass
class InProcessEngine:
    """``model.generate`` in this process, greedy. ``cache``: "dynamic" (transformers' default) or
    "static" (pre-allocated; with ``compile=True`` the forward pass is compiled for it)."""

    model: object
    tokenizer: object
    cache: str = "dynamic"
    compile: bool = False
    name: str = ""

    def __post_init__(self):
        if self.cache not in ("dynamic", "static"):
            raise InputError(f"unknown cache {self.cache!r}", fix="use cache='dynamic' or cache='static'")
        self.name = self.name or f"transformers {self.cache} cache" + (" + torch.compile" if self.compile else "")
        if self.compile:
            import torch

            self.model.forward = torch.compile(self.model.forward, mode="reduce-overhead", fullgraph=False)

    def _settings(self, max_tokens: int) -> dict:
        settings = dict(max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False, pad_token_id=self.tokenizer.pad_token_id)
        if self.cache == "static":
            settings["cache_implementation"] = "static"
        return settings

    def run(self, prompt: str, max_tokens: int = 32) -> RequestRecord:
        import torch

        from ..models import chat_inputs

        inputs = chat_inputs(self.tokenizer, prompt).to(self.model.device)
        streamer = _timing_streamer()
        start = time.perf_counter()
        try:
            with torch.no_grad():
                out = self.model.generate(**inputs, streamer=streamer, **self._settings(max_tokens))
            if self.model.device.type == "cuda":
                torch.cuda.synchronize()
        except Exception as error:  # noqa: BLE001 - recorded as a failed request, the sweep goes on
            return RequestRecord(start, time.perf_counter(), error=f"{type(error).__name__}: {error}", engine=self.name)
        end = time.perf_counter()
        produced = int(out.shape[1] - inputs["input_ids"].shape[1])
        return RequestRecord(start, end, streamer.times[:produced], produced, int(inputs["input_ids"].shape[1]), engine=self.name)

    def run_batch(self, prompts: list[str], max_tokens: int = 32) -> tuple[float, int]:
        """Generate for all ``prompts`` at once (left-padded); returns (seconds, output tokens)."""
        import torch

        self.tokenizer.padding_side = "left"
        texts = [self.tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
                 for p in prompts]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
        start = time.perf_counter()
        with torch.no_grad():
            out = self.model.generate(**batch, **self._settings(max_tokens))
        if self.model.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        self.tokenizer.padding_side = "right"
        return seconds, int((out.shape[1] - batch["input_ids"].shape[1]) * len(prompts))


@dataclass
class OpenAIEngine:
    """An OpenAI-compatible chat-completions endpoint, streamed with the official ``openai`` client.

    The API key is read from ``api_key_env`` (default: none needed for a local server) and never
    stored on the engine, printed or logged; ``repr(engine)`` shows only the variable's name.
    """

    base_url: str
    model: str
    api_key_env: str = ""
    timeout_s: float = 60.0
    name: str = ""
    system: str = ""  # a system prompt sent before every prompt (the desk's, shared by all its requests)

    def __post_init__(self):
        self.name = self.name or f"OpenAI API at {self.base_url}"
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise InputError(f"the environment variable {self.api_key_env} is not set",
                             fix=f"export {self.api_key_env}=... before starting Jupyter (never paste a key into a notebook cell)")

    def _client(self):
        if importlib.util.find_spec("openai") is None:
            raise InputError("the openai client is not installed", fix="pip install 'openai>=1.50,<4' (or bash kit setup)")
        from openai import OpenAI

        key = os.environ.get(self.api_key_env, "") if self.api_key_env else "not-needed-for-a-local-server"
        return OpenAI(base_url=self.base_url, api_key=key, timeout=self.timeout_s, max_retries=0)

    def run(self, prompt: str, max_tokens: int = 32) -> RequestRecord:
        import openai

        client = self._client()
        start = time.perf_counter()
        times: list[float] = []
        usage = None
        try:
            messages = ([{"role": "system", "content": self.system}] if self.system else []) + [{"role": "user", "content": prompt}]
            stream = client.chat.completions.create(model=self.model, messages=messages,
                                                    max_tokens=max_tokens, temperature=0.0, stream=True,
                                                    stream_options={"include_usage": True})
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                    times.append(time.perf_counter())
                if getattr(chunk, "usage", None):
                    usage = chunk.usage
        except openai.APIConnectionError as error:
            return RequestRecord(start, time.perf_counter(), error=f"endpoint unreachable: {self.base_url} ({error.__class__.__name__})",
                                 engine=self.name)
        except openai.APIStatusError as error:
            hint = " (is the model name the one the server serves?)" if error.status_code in (400, 404, 422) else ""
            return RequestRecord(start, time.perf_counter(), error=f"HTTP {error.status_code}{hint}", engine=self.name)
        except Exception as error:  # noqa: BLE001 - a malformed stream is a failed request, not a crash
            return RequestRecord(start, time.perf_counter(), error=f"{type(error).__name__}: {error}", engine=self.name)
        end = time.perf_counter()
        output = usage.completion_tokens if usage else len(times)
        return RequestRecord(start, end, times, output, usage.prompt_tokens if usage else 0, engine=self.name)

    def check(self) -> None:
        """One short request; raises :class:`EngineError` naming the fix when the endpoint cannot answer."""
        record = self.run("Say OK.", max_tokens=2)
        if record.error:
            fix = ("start the server (bash kit serve) or fix base_url" if "unreachable" in record.error
                   else f"use the model name the server lists at {self.base_url}/models")
            raise EngineError(f"{self.name}: {record.error}", fix=fix)

    def __repr__(self) -> str:
        return f"OpenAIEngine(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"


class LlamaCppEngine:
    """llama.cpp on a GGUF file, as is (no dequantization), through llama-cpp-python."""

    def __init__(self, gguf_path, threads: int | None = None):
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(gguf_path), n_ctx=2048, n_threads=threads or os.cpu_count(), verbose=False)
        self.name = "llama.cpp (GGUF as is)"

    def run(self, prompt: str, max_tokens: int = 32) -> RequestRecord:
        start = time.perf_counter()
        times: list[float] = []
        for chunk in self.llm.create_chat_completion(messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
                                                     temperature=0.0, stream=True):
            if chunk["choices"][0]["delta"].get("content"):
                times.append(time.perf_counter())
        return RequestRecord(start, time.perf_counter(), times, len(times), engine=self.name)

    def close(self):
        """Free the model now (at interpreter exit llama-cpp-python's own clean-up can fail noisily)."""
        close = getattr(self.llm, "close", None)
        if close:
            close()


def engine_status(plan) -> dict[str, str]:
    """Which engines can run on this machine and plan: name -> "ready" or the sentence saying how to get it."""
    status = {"transformers dynamic cache": "ready", "transformers static cache": "ready"}
    status["transformers static cache + torch.compile"] = ("ready" if plan.device == "cuda" else
                                                          "skipped on CPU: compiling takes minutes and gains little here (the GPU tiers run it)")
    status["transformers serve (OpenAI API)"] = ("ready" if importlib.util.find_spec("fastapi") and importlib.util.find_spec("openai")
                                                 else "not installed: pip install 'transformers[serving]' openai (bash kit setup does)")
    status["llama.cpp"] = ("ready" if importlib.util.find_spec("llama_cpp") else
                           "not installed: pip install llama-cpp-python (builds from source, about 8 min on 2 cores)")
    status["vLLM"] = ("ready: the plan's local server" if getattr(plan, "server", None) == "vllm" else
                      "GPU only: on a big GPU the plan serves with vLLM when the `vllm` command is installed (pip install vllm)")
    return status


class Timer(threading.Thread):
    """A daemon that sets ``expired`` after ``seconds`` (bounds a sweep in time)."""

    def __init__(self, seconds: float):
        super().__init__(daemon=True)
        self.seconds, self.expired = seconds, threading.Event()

    def run(self):
        time.sleep(self.seconds)
        self.expired.set()
