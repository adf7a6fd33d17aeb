"""Load tests: the same prompts through each engine at rising concurrency, bounded in requests and time.

A level that fails (server died, out of memory) is reported as a row with its error and the sweep
goes on with the next level, so one lost point never loses the others.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from ..errors import InputError
from .metrics import SLO, RequestRecord, summarize


def run_level(engine, prompts: list[str], concurrency: int, requests: int, max_tokens: int, time_limit_s: float = 120.0) -> list[RequestRecord]:
    """``requests`` requests, at most ``concurrency`` in flight; requests not started before the time limit are skipped."""
    if concurrency < 1 or requests < 1:
        raise InputError("concurrency and requests must be at least 1", fix="pass positive integers")
    if not prompts:
        raise InputError("no prompts", fix="pass at least one prompt (they are cycled)")
    deadline = time.perf_counter() + time_limit_s

    def one(i: int) -> RequestRecord | None:
        if time.perf_counter() > deadline:
            return None
        record = engine.run(prompts[i % len(prompts)], max_tokens)
        record.concurrency = concurrency
        return record

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        records = [r for r in pool.map(one, range(requests)) if r is not None]
    return records


def sweep(engines: list, prompts: list[str], concurrencies: list[int], requests_per_level: int | None = None, max_tokens: int = 32,
          slo: SLO | None = None, time_limit_s: float = 120.0, progress: bool = True):
    """One row per engine x concurrency (see :func:`helpers.bench.metrics.summarize`) and every request's record.

    ``requests_per_level`` defaults to twice the concurrency (at least 4), so each level sees full load.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from ..errors import InputError

    # the learner's inputs are checked before anything is sent: a typo is an error naming it, never a row of failures
    if not engines:
        raise InputError("no engine to sweep", fix="pass a list of engines, e.g. [served]")
    if not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise InputError("prompts must be a non-empty list of non-empty strings", fix="pass prompts as a list of text, e.g. bench.prompts()")
    bad = [c for c in concurrencies if isinstance(c, bool) or not isinstance(c, int) or c < 1]
    if not concurrencies or bad:
        raise InputError(f"concurrency levels {list(concurrencies)!r}: each must be a whole number of requests in flight, at least 1",
                         fix="e.g. [1, 2, 4]")
    if requests_per_level is not None and (isinstance(requests_per_level, bool) or not isinstance(requests_per_level, int)
                                           or requests_per_level < 1):
        raise InputError(f"requests_per_level = {requests_per_level!r}: at least 1 request per level",
                         fix="leave it out (twice the concurrency, at least 4) or pass a whole number >= 1")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InputError(f"max_tokens = {max_tokens!r}: at least 1 token per reply", fix="e.g. max_tokens=32")
    rows, records = [], []
    steps = [(engine, c) for engine in engines for c in concurrencies]
    for engine, concurrency in tqdm(steps, desc="load sweep", disable=not progress):
        n = requests_per_level if requests_per_level is not None else max(4, 2 * concurrency)
        try:
            level = run_level(engine, prompts, concurrency, n, max_tokens, time_limit_s)
            row = summarize(level, slo=slo)  # over the records' own span, as sweep_summary: one goodput per level
            row["error"] = next((r.error for r in level if r.error), "")
            records += level
        except Exception as error:  # noqa: BLE001 - one lost level must not lose the others
            row = {"requests": n, "errors": n, "error rate": 1.0, "error": f"{type(error).__name__}: {error}"}
        rows.append({"engine": engine.name, "concurrency": concurrency, **row})
    return pd.DataFrame(rows).set_index(["engine", "concurrency"]), records


# throughput that grows by less than this share of the growth in requests in flight: the server is not batching them
BATCHING_SHARE = 0.5


def read_load(load, engine: str) -> str:
    """What ``engine``'s rows of a load sweep say, in words computed from them: how TTFT and throughput moved
    from the lowest to the highest concurrency, and whether the server batches concurrent requests (throughput
    grows with them) or answers them in turn (throughput flat, so later requests wait and TTFT grows)."""
    rows = load.loc[engine].sort_index()
    low, high = rows.index[0], rows.index[-1]
    if low == high:
        return f"one concurrency level ({low}): sweep at least two to see how the server behaves under load"
    ttft = rows["ttft s p50"].iloc[-1] / rows["ttft s p50"].iloc[0]
    throughput = rows["output tokens/s"].iloc[-1] / rows["output tokens/s"].iloc[0]
    more = high / low
    head = (f"from {low} to {high} requests in flight ({more:g}x): output tokens/s x{throughput:.2f}, "
            f"TTFT p50 x{ttft:.1f}. ")
    if throughput - 1 >= BATCHING_SHARE * (more - 1):
        return head + ("The server batches concurrent requests: each decoding step serves several of them, so "
                       "throughput grows with the load.")
    return head + ("Throughput barely moved: the server answers about one request at a time, so later requests wait "
                   "in line and their first token comes later. An engine with continuous batching (vLLM) adds new "
                   "requests to the running batch at every step, which keeps TTFT low under load.")


def side_by_side(engines: dict, prompts: list[str], concurrencies: list[int], requests_per_level: int, max_tokens: int,
                 rounds: int = 3, baseline: str | None = None, progress: bool = True):
    """Several servers (name -> engine) on the same prompts and load levels, taking turns: each round sweeps every
    engine once, so a machine that speeds up or slows down moves them alike. Per engine and concurrency: the median
    over rounds of TTFT p50, TPOT p50 and output tokens/s, and the median of same-round ratios to ``baseline``
    (default: the first engine) for throughput and TTFT."""
    import pandas as pd
    from tqdm.auto import tqdm

    if not engines:
        raise InputError("no server to compare", fix="start at least one (see `bash kit bench-serve --help`)")
    baseline = baseline or next(iter(engines))
    rows = []
    for round_ in tqdm(range(rounds), desc="rounds", disable=not progress):
        for name, engine in engines.items():
            table, _ = sweep([engine], prompts, concurrencies, requests_per_level, max_tokens, progress=False)
            for concurrency, row in table.xs(engine.name, level="engine").iterrows():
                rows.append({"round": round_, "server": name, "concurrency": concurrency, "errors": row.get("errors", 0),
                             **{k: row.get(k, float("nan")) for k in ("ttft s p50", "tpot s p50", "output tokens/s")}})
    runs = pd.DataFrame(rows)
    base = runs[runs["server"] == baseline].set_index(["round", "concurrency"])
    runs["tokens/s vs " + baseline] = [r["output tokens/s"] / base.loc[(r["round"], r["concurrency"]), "output tokens/s"]
                                        for _, r in runs.iterrows()]
    runs["ttft vs " + baseline] = [r["ttft s p50"] / base.loc[(r["round"], r["concurrency"]), "ttft s p50"]
                                    for _, r in runs.iterrows()]
    summary = runs.drop(columns="round").groupby(["server", "concurrency"], sort=False).median()
    summary["errors"] = runs.groupby(["server", "concurrency"], sort=False)["errors"].sum()
    return summary


def batch_sweep(engine, prompts: list[str], batches: list[int], max_tokens: int = 32, memory=None, progress: bool = True):
    """In-process throughput vs batch size (one ``generate`` per batch): output tokens/s and peak memory.

    ``memory`` is a callable returning the current peak in GB (process RSS on CPU, CUDA peak on a GPU).
    A batch that runs out of memory is recorded with its error and ends the sweep (bigger ones would too).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    rows = []
    engine.run_batch(prompts[:1], 2)  # warm-up
    for batch in tqdm(batches, desc="batch sweep", disable=not progress):
        chunk = [prompts[i % len(prompts)] for i in range(batch)]
        try:
            seconds, tokens = engine.run_batch(chunk, max_tokens)
        except Exception as error:  # noqa: BLE001
            rows.append({"batch": batch, "error": f"{type(error).__name__}: {error}"})
            break
        rows.append({"batch": batch, "seconds": seconds, "output tokens/s": tokens / seconds,
                     "peak memory GB": memory() if memory else float("nan"), "error": ""})
    return pd.DataFrame(rows).set_index("batch")
