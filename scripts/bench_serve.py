"""Benchmark (not a test): the local servers Labs 04-05 can use, side by side on the same prompts and load levels:
TTFT, TPOT and output tokens/s per concurrency, with ratios to `transformers serve` (the default server).

    python scripts/bench_serve.py [--servers transformers llamacpp vllm] [--levels 1 2 4] [--requests 8]
                                  [--max-tokens 32] [--rounds 3]

Each server is the one the plan would start (`OTS_PLAN=server=...`, same model, precision and sizes); a server
the plan cannot run here (vLLM without a CUDA GPU, llama.cpp not installed) is skipped with the plan's reason.
All servers are started first, then they take turns, one sweep each per round, so a shared machine that speeds
up or slows down moves them alike; figures are medians over rounds, ratios medians of same-round ratios. Every
server listens on 127.0.0.1 and is stopped at the end (and by itself after 30 minutes).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.bench.engines import OpenAIEngine  # noqa: E402
from helpers.bench.server import LocalServer  # noqa: E402
from helpers.bench.sweep import side_by_side  # noqa: E402
from helpers.models import ensure_embedded, resolve_model  # noqa: E402
from helpers.plan import ENV_VAR, SERVERS, plan  # noqa: E402

PROMPTS = ["Write a short note to a customer about a delayed parcel.",
           "A customer cannot log in after resetting the password. What should they try first?",
           "Explain in two sentences how to request a refund.",
           "Summarise: the invoice was charged twice and the customer wants one charge reversed."]


def plans(servers: list[str]) -> dict:
    """Server name -> the plan that runs it here; a server the plan falls back from is reported and left out."""
    chosen, base = {}, os.environ.get(ENV_VAR, "")
    for name in servers:
        p = plan("05", override=",".join(part for part in (base, f"server={name}") if part))
        if p.server == name:
            chosen[name] = p
        else:
            print(f"{SERVERS[name]}: skipped ({'; '.join(n for n in p.notes if 'server' in n or 'vLLM' in n or 'llama' in n)})")
    return chosen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bash kit bench-serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", nargs="+", default=list(SERVERS), choices=list(SERVERS))
    parser.add_argument("--levels", nargs="+", type=int, default=[1, 2, 4], help="concurrency levels")
    parser.add_argument("--requests", type=int, default=8, help="requests per level")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    chosen = plans(args.servers)
    if not chosen:
        print("no server can run here")
        return 1
    with contextlib.ExitStack() as stack:
        engines = {}
        for name, p in chosen.items():
            folder = ensure_embedded(progress=True) if p.model == "smollm2-135m" else resolve_model(p.model).location
            server = stack.enter_context(LocalServer.for_plan(p, folder))
            engines[SERVERS[name]] = OpenAIEngine(server.base_url, server.model, name=SERVERS[name])
            weights = "its GGUF file" if name == "llamacpp" else p.precision
            print(f"{SERVERS[name]} up at {server.base_url} ({p.model}, {weights})")
        table = side_by_side(engines, PROMPTS, args.levels, args.requests, args.max_tokens, rounds=args.rounds)
    print(table.round(3).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
