"""Benchmark (not a test): one replica against the plan's fleet, through the same router, on the same prompts and
load: TTFT, TPOT and output tokens/s per concurrency, with same-round ratios to one replica.

    python scripts/bench_fleet.py [--replicas N] [--levels 2 4] [--requests 8] [--max-tokens 32] [--rounds 3]

The replicas are the plan's local server (``transformers serve`` on a CPU, vLLM on a GPU where installed); both
routers are vllm-router on 127.0.0.1, one in front of replica 0 alone, one in front of all of them, so the router's
own cost is on both sides. They take turns, one sweep each per round. On a CPU the replicas share the machine's cores:
two replicas there measure the router and the queueing, not twice the hardware. On a GPU node each replica has its
own GPU (or its own group of GPUs). Everything stops at the end, and by itself after 30 minutes.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.bench.engines import OpenAIEngine  # noqa: E402
from helpers.bench.sweep import side_by_side  # noqa: E402
from helpers.deploy.fleet import Fleet  # noqa: E402
from helpers.models import ensure_embedded, resolve_model  # noqa: E402
from helpers.plan import plan  # noqa: E402

PROMPTS = ["Where is my parcel? It was due on Monday.",
           "I was charged twice for my subscription this month, please refund one.",
           "The thermostat app crashes when I open the schedule.",
           "How do I delete my account and all my data?"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bash kit bench-fleet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=None, help="default: the plan's (2 on a CPU, one per GPU)")
    parser.add_argument("--levels", nargs="+", type=int, default=[2, 4], help="concurrency levels")
    parser.add_argument("--requests", type=int, default=8, help="requests per level")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    p = plan("05")
    folder = ensure_embedded(progress=True) if p.model == "smollm2-135m" else resolve_model(p.model).location
    count = args.replicas or p.replicas
    if count < 2:
        print("one replica on this plan: nothing to compare it with (pass --replicas 2)")
        return 1
    with Fleet.for_plan(p, folder, replicas=count) as fleet:
        single = fleet.router_over([0])
        try:
            engines = {"1 replica": OpenAIEngine(single.base_url, fleet.model, name="1 replica"),
                       f"{count} replicas": OpenAIEngine(fleet.base_url, fleet.model, name=f"{count} replicas")}
            print(fleet.describe())
            table = side_by_side(engines, PROMPTS, args.levels, args.requests, args.max_tokens, rounds=args.rounds,
                                 baseline="1 replica")
        finally:
            single.stop()
    print(table.round(3).to_string())
    if p.device == "cpu":
        threads = max(1, (os.cpu_count() or 1) // count)
        print(f"\neach replica runs {threads} thread(s) on this machine's {os.cpu_count()} cores: the 1-replica rows use "
              f"{threads} of them, the {count}-replica rows {threads * count}, so the ratio is what more replicas add on this "
              "machine (the router's cost included); on a GPU node each replica has its own GPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
