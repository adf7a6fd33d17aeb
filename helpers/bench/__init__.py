"""Lab 04 — benchmarking: one harness drives every engine, metrics defined as the standard tools define them.

- ``helpers.bench.metrics``  TTFT, TPOT, ITL, E2E, percentiles, goodput, roofline, $ per 1M tokens
- ``helpers.bench.engines``  in-process transformers (dynamic / static cache), any OpenAI-compatible endpoint, llama.cpp
- ``helpers.bench.server``   the local OpenAI-compatible server on loopback (``transformers serve``), started and stopped
- ``helpers.bench.sweep``    load tests over concurrency, throughput over batch size, bounded and fault-tolerant
- ``helpers.bench.compare``  engines side by side, roofline, $ per 1M tokens, quality with intervals, back to Lab 01
- ``helpers.bench.peers``    the same endpoint measured by GuideLLM (load) and lm-evaluation-harness (quality), side by side
- ``helpers.bench.claims``   the benchmark claims (C13, C14) against dated, sourced published scores

``from helpers import bench`` gives the modules as ``bench.metrics``, ``bench.engines``, ``bench.server``, ``bench.sweep``.
"""
from . import claims, compare, decode, engines, lean, metrics, peers, server, sweep  # noqa: F401
