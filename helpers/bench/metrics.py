"""Serving metrics, defined the way the standard load-testing tools define them (GuideLLM, vLLM's
``bench serve``), computed from timestamps a client records while a response streams in.

For one request (all times from ``time.perf_counter()``, in seconds):

- TTFT  time to first token = first content chunk - request sent
- E2E   end-to-end latency  = last byte - request sent
- TPOT  time per output token = (last token - first token) / (output tokens - 1), the decode pace after the first
        token; the same as (E2E - TTFT) / (output tokens - 1) when the response ends with its last token (a stream's
        finish and usage chunks, or a generate() call's return, come a moment after it)
- ITL   inter-token latency = the gaps between consecutive streamed chunks (one value per gap)

For a run of many requests over ``duration`` seconds: p50/p95/p99 of each, requests/s and output
tokens/s (successful requests only), **goodput** (requests/s that met a TTFT and a TPOT target) and
the error rate. Percentiles use linear interpolation between order statistics (numpy's default).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import InputError

PERCENTILES = (50, 95, 99)


@dataclass
class RequestRecord:
    """What a client saw of one request. ``chunk_times`` are the arrival times of the content chunks."""

    start: float
    end: float
    chunk_times: list[float] = field(default_factory=list)
    output_tokens: int = 0
    input_tokens: int = 0
    error: str = ""
    engine: str = ""
    concurrency: int = 1

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.chunk_times)

    @property
    def ttft(self) -> float:
        return self.chunk_times[0] - self.start if self.chunk_times else math.nan

    @property
    def e2e(self) -> float:
        return self.end - self.start

    @property
    def tpot(self) -> float:
        """Time per output token after the first, vLLM's definition: (last token's arrival - first token's) / (tokens - 1).
        The last *content* chunk's time, not the stream's close: the finish and usage chunks after it carry no token."""
        if not self.ok or self.output_tokens < 2:
            return math.nan
        return (self.chunk_times[-1] - self.chunk_times[0]) / (self.output_tokens - 1)

    @property
    def itl(self) -> list[float]:
        return [b - a for a, b in zip(self.chunk_times, self.chunk_times[1:])]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation; NaN for no values."""
    values = sorted(v for v in values if not math.isnan(v))
    if not values:
        return math.nan
    if not 0 <= q <= 100:
        raise InputError(f"percentile {q} is outside 0-100", fix="pass q between 0 and 100")
    rank = (len(values) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return values[low] + (values[high] - values[low]) * (rank - low)


@dataclass(frozen=True)
class SLO:
    """A service-level objective for goodput: a request counts if it met both targets."""

    ttft_s: float = 2.0
    tpot_s: float = 0.25

    def __post_init__(self):
        for name in ("ttft_s", "tpot_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                from ..errors import InputError

                raise InputError(f"SLO {name} = {value!r}: a latency limit must be a positive number of seconds",
                                 fix=f"e.g. SLO(ttft_s=2.0, tpot_s=0.25); {name} in seconds, above 0")

    def met(self, record: RequestRecord) -> bool:
        return record.ok and record.ttft <= self.ttft_s and (math.isnan(record.tpot) or record.tpot <= self.tpot_s)


def summarize(records: list[RequestRecord], duration_s: float | None = None, slo: SLO | None = None) -> dict[str, float]:
    """One row of a load test: counts, rates, goodput and the percentiles of TTFT, TPOT, ITL and E2E.

    ``duration_s`` defaults to first request sent -> last response finished.
    """
    if not records:
        raise InputError("no requests to summarize", fix="run at least one request (check the sweep's request count)")
    duration = duration_s if duration_s is not None else max(r.end for r in records) - min(r.start for r in records)
    if duration <= 0:
        raise InputError(f"duration {duration} s is not positive", fix="pass the wall time the requests took")
    ok = [r for r in records if r.ok]
    slo = slo or SLO()
    row = {
        "requests": len(records), "errors": len(records) - len(ok), "error rate": (len(records) - len(ok)) / len(records),
        "duration s": duration, "requests/s": len(ok) / duration,
        "output tokens/s": sum(r.output_tokens for r in ok) / duration,
        "goodput requests/s": sum(slo.met(r) for r in ok) / duration,
    }
    series = {"ttft s": [r.ttft for r in ok], "tpot s": [r.tpot for r in ok], "itl s": [g for r in ok for g in r.itl],
              "e2e s": [r.e2e for r in ok]}
    for name, values in series.items():
        for q in PERCENTILES:
            row[f"{name} p{q}"] = percentile(values, q)
    return row


def roofline_tokens_per_s(bandwidth_gbps: float, weights_bytes: float, kv_bytes_per_sequence: float = 0.0, batch: int = 1) -> float:
    """Decode bound for ``batch`` sequences: each step reads the weights once and every sequence's KV
    cache, and yields one token per sequence."""
    if bandwidth_gbps <= 0 or weights_bytes <= 0 or batch < 1:
        raise InputError("bandwidth, weights and batch must be positive", fix="check the spec table or the measured bandwidth")
    step_s = (weights_bytes + batch * kv_bytes_per_sequence) / (bandwidth_gbps * 1e9)
    return batch / step_s


def usd_per_million_tokens(usd_per_hour: float, tokens_per_s: float) -> float:
    """What one million output tokens cost on hardware rented at ``usd_per_hour``, at a measured throughput."""
    if tokens_per_s <= 0:
        return math.inf
    return usd_per_hour / (tokens_per_s * 3600) * 1e6
