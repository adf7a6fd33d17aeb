"""Lab 01: what a proprietary API costs at scale versus self-hosting an open model.

Money in US dollars, time in months of 730 hours (8,760 h / 12), tokens as counted by the
provider's tokenizer. Every price comes from a dated, sourced file in ``datasets/tco/``;
every assumption from ``datasets/scenario.csv`` — change them and re-run.

The model, in one paragraph: the API bills input, cached-input and output tokens at per-million
rates (with a batch discount where offered). Self-hosting needs enough GPUs for the *peak*
conversation rate at a target utilisation; one GPU's capacity comes from a roofline estimate
(decode is bound by memory bandwidth, prefill by compute) or from a measured figure you pass in.
GPUs are rented per hour or bought and amortised (plus power at the wall); engineering time,
storage, monitoring and one-off set-up and data work are added on top.
"""
from __future__ import annotations

import datetime as dt
import difflib
import math
import os
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Callable

from ..catalog import CUDA_CONTEXT_GB, estimate_weights_bytes, get_model, kv_cache_bytes
from ..data import load_rows
from ..errors import InputError
from ..hardware import USABLE_VRAM, gpu_specs

HOURS_PER_MONTH = 8760 / 12
SNAPSHOT_MAX_AGE_DAYS = 180


# ---------------------------------------------------------------- inputs and validation
def _check(name: str, value: float, low: float = 0.0, high: float = math.inf, low_inclusive: bool = False) -> float:
    """Reject NaN, infinities and out-of-range values, naming the field."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}", fix=f"pass a number for {name}") from None
    if math.isnan(number) or math.isinf(number):
        raise InputError(f"{name} is {number}", fix=f"pass a finite number for {name}")
    too_low = number < low if low_inclusive else number <= low
    if too_low or number > high:
        bound = f">= {low}" if low_inclusive else f"> {low}"
        upper = f" and <= {high}" if high != math.inf else ""
        raise InputError(f"{name} is {number}, it must be {bound}{upper}", fix=f"pass {name} {bound}{upper}")
    return number


@dataclass(frozen=True)
class Workload:
    """Traffic: conversations a month and the tokens each one bills.

    ``input_tokens`` counts everything sent per conversation (system prompt and history are
    re-sent every turn); ``cached_input_share`` is the share of input billed at the cached rate;
    ``batch_share`` the share of traffic sent through a batch API.
    """

    conversations_per_month: float
    input_tokens: float
    output_tokens: float
    cached_input_share: float = 0.0
    batch_share: float = 0.0
    peak_to_average: float = 2.5

    def __post_init__(self):
        _check("conversations_per_month", self.conversations_per_month)
        _check("input_tokens", self.input_tokens)
        _check("output_tokens", self.output_tokens, 0, low_inclusive=True)
        _check("cached_input_share", self.cached_input_share, 0, 1, low_inclusive=True)
        _check("batch_share", self.batch_share, 0, 1, low_inclusive=True)
        _check("peak_to_average", self.peak_to_average, 1, low_inclusive=True)

    @property
    def tokens_per_month(self) -> float:
        return self.conversations_per_month * (self.input_tokens + self.output_tokens)

    @property
    def peak_conversations_per_hour(self) -> float:
        return self.conversations_per_month / HOURS_PER_MONTH * self.peak_to_average

    def with_volume(self, conversations_per_month: float) -> "Workload":
        return replace(self, conversations_per_month=conversations_per_month)


def conversation_tokens(system_prompt: float, turns: float, user_per_turn: float, assistant_per_turn: float) -> tuple[float, float]:
    """Tokens billed per conversation when every turn re-sends the system prompt and the history.

    Turn t sends the system prompt, t user messages and t-1 assistant replies, and receives one
    reply. Returns (input tokens, output tokens).
    """
    for name, value in (("system_prompt", system_prompt), ("user_per_turn", user_per_turn), ("assistant_per_turn", assistant_per_turn)):
        _check(name, value, 0, low_inclusive=True)
    turns = _check("turns", turns)
    n = int(round(turns))
    inputs = sum(system_prompt + t * user_per_turn + (t - 1) * assistant_per_turn for t in range(1, n + 1))
    return float(inputs), float(n * assistant_per_turn)


@lru_cache(maxsize=1)
def scenario() -> dict[str, float]:
    """The course scenario's numbers and assumptions (``datasets/scenario.csv``)."""
    return {row["name"]: row["value"] for row in load_rows("scenario.csv", numeric=["value"], required=["name", "unit"])}


def _scenario_value(name: str) -> float:
    return scenario()[name]


def scenario_workload() -> Workload:
    s = scenario()
    inputs, outputs = conversation_tokens(s["system_prompt_tokens"], s["turns_per_conversation"], s["user_tokens_per_turn"],
                                          s["assistant_tokens_per_turn"])
    return Workload(s["conversations_per_month"], inputs, outputs, peak_to_average=s["peak_to_average"])


# ---------------------------------------------------------------- prices
@dataclass(frozen=True)
class ApiPrice:
    """One model's list prices in USD per 1M tokens."""

    provider: str
    model: str
    kind: str
    input: float
    output: float
    cached_input: float | None
    batch_factor: float | None
    open_model: str
    date: dt.date
    source: str

    def blended(self, input_share: float = 0.75) -> float:
        """USD per 1M tokens at a given input share (0.75 = the common 3 input : 1 output convention)."""
        _check("input_share", input_share, 0, 1, low_inclusive=True)
        return input_share * self.input + (1 - input_share) * self.output


@lru_cache(maxsize=1)
def api_prices() -> dict[str, ApiPrice]:
    """The frozen API price snapshot, keyed by model id."""
    rows = load_rows("tco/api_prices.csv", numeric=["input_usd_per_mtok", "output_usd_per_mtok"],
                     optional_numeric=["cached_input_usd_per_mtok", "batch_price_factor"], required=["provider", "model", "kind"])
    return {
        row["model"]: ApiPrice(row["provider"], row["model"], row["kind"], row["input_usd_per_mtok"], row["output_usd_per_mtok"],
                               row["cached_input_usd_per_mtok"], row["batch_price_factor"], row["open_model"], row["date"], row["source"])
        for row in rows
    }


def get_api_price(model: str) -> ApiPrice:
    prices = api_prices()
    if model not in prices:
        close = difflib.get_close_matches(model, list(prices), n=3, cutoff=0.4)
        raise InputError(f"no price for API model {model!r} in datasets/tco/api_prices.csv",
                         fix=(f"did you mean {', '.join(close)}? " if close else "") + "add it to scripts/freeze_prices.py and re-run it")
    return prices[model]


def snapshot_age(today: dt.date | None = None) -> tuple[dt.date, int, str]:
    """(snapshot date, age in days, a warning or "") for the API price snapshot."""
    today = today or dt.date.today()
    date = max(price.date for price in api_prices().values())
    age = (today - date).days
    warning = ""
    if age > SNAPSHOT_MAX_AGE_DAYS:
        warning = (f"the price snapshot is {age} days old (from {date}): API prices change often; "
                   "refresh it with `python scripts/freeze_prices.py` before deciding anything")
    return date, age, warning


@lru_cache(maxsize=1)
def gpu_rental_prices() -> list[dict]:
    return load_rows("tco/gpu_rental.csv", numeric=["usd_per_gpu_hour"], required=["gpu", "provider", "offer"])


@lru_cache(maxsize=1)
def gpu_purchase_prices() -> dict[str, dict]:
    return {row["gpu"]: row for row in load_rows("tco/gpu_purchase.csv", numeric=["usd_per_gpu"], required=["gpu"])}


def rental_price(gpu: str, offer: str = "on-demand", pick: str = "median") -> float:
    """USD per GPU-hour for ``gpu`` across the sourced rows: ``pick`` is min, median or max."""
    values = sorted(r["usd_per_gpu_hour"] for r in gpu_rental_prices() if r["gpu"] == gpu and r["offer"] == offer)
    if not values:
        known = sorted({r["gpu"] for r in gpu_rental_prices()})
        raise InputError(f"no {offer} rental price for GPU {gpu!r}", fix=f"use one of: {', '.join(known)}")
    if pick == "min":
        return values[0]
    if pick == "max":
        return values[-1]
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


# ---------------------------------------------------------------- cost breakdowns
@dataclass
class Costs:
    """Monthly running costs by item, plus one-off costs, in USD."""

    option: str
    monthly: dict[str, float]
    one_off: dict[str, float] = field(default_factory=dict)
    details: dict[str, float] = field(default_factory=dict)

    @property
    def monthly_total(self) -> float:
        return sum(self.monthly.values())

    @property
    def one_off_total(self) -> float:
        return sum(self.one_off.values())

    def total(self, months: float = 12) -> float:
        """Running costs over ``months`` plus all one-off costs."""
        return self.monthly_total * months + self.one_off_total

    def monthly_equivalent(self, horizon_months: float = 36) -> float:
        """Monthly cost with one-off costs spread over the horizon."""
        return self.monthly_total + self.one_off_total / horizon_months

    def usd_per_million_tokens(self, workload: Workload, horizon_months: float = 36) -> float:
        return self.monthly_equivalent(horizon_months) / (workload.tokens_per_month / 1e6)

    def split(self, horizon_months: float = 36) -> dict[str, float]:
        """Share of the total over the horizon per item (one-off items included)."""
        items = {k: v * horizon_months for k, v in self.monthly.items()} | dict(self.one_off)
        total = sum(items.values())
        return {k: v / total for k, v in items.items()} if total else {}


def api_cost(workload: Workload, price: ApiPrice | str, engineer_fte: float = 0.0, engineer_cost_per_year: float = 0.0,
             monitoring_usd_per_month: float = 0.0) -> Costs:
    """Monthly cost of serving ``workload`` through an API at ``price``."""
    price = get_api_price(price) if isinstance(price, str) else price
    cached_rate = price.cached_input if price.cached_input is not None else price.input
    if workload.cached_input_share and price.cached_input is None:
        cached_rate = price.input  # provider lists no cached rate: no discount
    input_rate = (1 - workload.cached_input_share) * price.input + workload.cached_input_share * cached_rate
    per_conversation = (workload.input_tokens * input_rate + workload.output_tokens * price.output) / 1e6
    batch_factor = price.batch_factor if price.batch_factor is not None else 1.0
    per_conversation *= (1 - workload.batch_share) + workload.batch_share * batch_factor
    fees = per_conversation * workload.conversations_per_month
    monthly = {"API fees": fees}
    if engineer_fte:
        monthly["engineering"] = engineer_fte * engineer_cost_per_year / 12
    if monitoring_usd_per_month:
        monthly["monitoring"] = monitoring_usd_per_month
    return Costs(f"API: {price.model}", monthly, details={"usd_per_conversation": per_conversation})


@dataclass(frozen=True)
class Capacity:
    """One GPU's serving capacity for a workload (roofline estimate or measured)."""

    batch: int
    decode_tokens_per_s: float
    prefill_tokens_per_s: float
    gpu_seconds_per_conversation: float

    @property
    def conversations_per_gpu_hour(self) -> float:
        return 3600 / self.gpu_seconds_per_conversation


def serving_capacity(gpu: str, model: str, precision: str, workload: Workload, bandwidth_efficiency: float = 0.6,
                     compute_efficiency: float = 0.35, max_batch: int = 64) -> Capacity:
    """Roofline estimate of one GPU's capacity.

    Decode: each step reads the weights once plus the batch's KV cache, at ``bandwidth_efficiency``
    of the datasheet bandwidth, unless the batch's matrix work takes longer at
    ``compute_efficiency`` of the peak. Prefill (the prompt): 2 x active parameters FLOPs per token.
    The batch is as large as the memory left after the weights allows, capped at ``max_batch``.
    """
    if gpu not in gpu_specs():
        raise InputError(f"unknown GPU {gpu!r}", fix=f"use one of: {', '.join(gpu_specs())}")
    spec, hw = get_model(model), gpu_specs()[gpu]
    _check("bandwidth_efficiency", bandwidth_efficiency, 0, 1)
    _check("compute_efficiency", compute_efficiency, 0, 1)
    weights = estimate_weights_bytes(spec, precision)
    kv_per_token = kv_cache_bytes(spec, 1)  # 16-bit cache
    context = workload.input_tokens + workload.output_tokens  # the KV cache a whole conversation can hold
    free = hw["vram_gb"] * 1e9 * USABLE_VRAM - weights - CUDA_CONTEXT_GB * 1e9
    if free <= kv_per_token * context:
        raise InputError(f"{model} at {precision} does not fit on a {gpu} with room for one {context:.0f}-token conversation",
                         fix="pick a GPU with more memory or a smaller precision (int8, nf4)")
    batch = int(min(max_batch, free // (kv_per_token * context)))
    bandwidth = hw["bandwidth_gbps"] * 1e9 * bandwidth_efficiency
    flops = (hw["bf16_tflops"] or hw["fp16_tflops"]) * 1e12 * compute_efficiency
    active = spec.active_parameter_count()
    step = max((weights + batch * kv_per_token * context / 2) / bandwidth, batch * 2 * active / flops)
    decode = batch / step
    prefill = flops / (2 * active)
    seconds = workload.input_tokens / prefill + workload.output_tokens / decode
    return Capacity(batch, decode, prefill, seconds)


@dataclass(frozen=True)
class SelfHost:
    """How the open model is hosted. Give ``usd_per_gpu_hour`` to rent, or ``purchase_usd_per_gpu`` to buy.

    ``conversations_per_gpu_hour`` replaces the roofline estimate with a measured capacity
    (Lab 04 measures one).
    """

    gpu: str
    model: str
    precision: str = "bf16"
    usd_per_gpu_hour: float | None = None
    purchase_usd_per_gpu: float | None = None
    # defaults come from datasets/scenario.csv, where each is sourced or marked as an assumption
    amortisation_months: float = field(default_factory=lambda: _scenario_value("amortisation_months"))
    utilisation_target: float = field(default_factory=lambda: _scenario_value("utilisation_target"))
    engineer_fte: float = field(default_factory=lambda: _scenario_value("self_host_engineer_fte"))
    engineer_cost_per_year: float = field(default_factory=lambda: _scenario_value("engineer_cost_per_year"))
    electricity_usd_per_kwh: float = field(default_factory=lambda: _scenario_value("electricity_usd_per_kwh"))
    pue: float = field(default_factory=lambda: _scenario_value("pue"))
    storage_egress_usd_per_month: float = field(default_factory=lambda: _scenario_value("storage_egress_usd_per_month"))
    monitoring_usd_per_month: float = field(default_factory=lambda: _scenario_value("monitoring_usd_per_month"))
    setup_usd: float = field(default_factory=lambda: _scenario_value("setup_usd_one_off"))
    data_prep_usd: float = field(default_factory=lambda: _scenario_value("data_prep_usd_one_off"))
    bandwidth_efficiency: float = field(default_factory=lambda: _scenario_value("bandwidth_efficiency"))
    compute_efficiency: float = field(default_factory=lambda: _scenario_value("compute_efficiency"))
    max_batch: int = field(default_factory=lambda: int(_scenario_value("max_batch")))
    conversations_per_gpu_hour: float | None = None
    # GPUs kept beyond the peak's need so the peak still holds with one down (N+1: Lab 05's fleet keeps one; 0 in Lab 01)
    spare_gpus: int = 0

    def __post_init__(self):
        if (self.usd_per_gpu_hour is None) == (self.purchase_usd_per_gpu is None):
            raise InputError("give exactly one of usd_per_gpu_hour (rent) or purchase_usd_per_gpu (buy)",
                             fix="e.g. SelfHost('H100', 'qwen2.5-7b', usd_per_gpu_hour=rental_price('H100'))")
        if self.usd_per_gpu_hour is not None:
            _check("usd_per_gpu_hour", self.usd_per_gpu_hour)
        if self.purchase_usd_per_gpu is not None:
            _check("purchase_usd_per_gpu", self.purchase_usd_per_gpu)
        _check("utilisation_target", self.utilisation_target, 0, 1)
        _check("amortisation_months", self.amortisation_months)
        for name in ("engineer_fte", "engineer_cost_per_year", "electricity_usd_per_kwh", "storage_egress_usd_per_month",
                     "monitoring_usd_per_month", "setup_usd", "data_prep_usd"):
            _check(name, getattr(self, name), 0, low_inclusive=True)
        if self.conversations_per_gpu_hour is not None:
            _check("conversations_per_gpu_hour", self.conversations_per_gpu_hour)
        if isinstance(self.spare_gpus, bool) or not isinstance(self.spare_gpus, int) or self.spare_gpus < 0:
            raise InputError(f"spare_gpus = {self.spare_gpus!r}: whole GPUs held in reserve", fix="e.g. spare_gpus=1 (N+1)")

    def capacity(self, workload: Workload) -> float:
        """Conversations one GPU serves per hour at full load."""
        if self.conversations_per_gpu_hour is not None:
            return self.conversations_per_gpu_hour
        return serving_capacity(self.gpu, self.model, self.precision, workload, self.bandwidth_efficiency, self.compute_efficiency,
                                self.max_batch).conversations_per_gpu_hour


def gpus_needed(workload: Workload, host: SelfHost) -> int:
    """GPUs that serve the peak hour at the utilisation target (at least one)."""
    return max(1, math.ceil(workload.peak_conversations_per_hour / (host.capacity(workload) * host.utilisation_target)))


def self_host_cost(workload: Workload, host: SelfHost) -> Costs:
    """Monthly and one-off costs of serving ``workload`` on GPUs you rent or own."""
    gpus = gpus_needed(workload, host) + host.spare_gpus  # the peak's GPUs and the spares kept for a failure
    monthly: dict[str, float] = {}
    if host.usd_per_gpu_hour is not None:
        monthly["GPUs (rented)"] = gpus * host.usd_per_gpu_hour * HOURS_PER_MONTH
    else:
        monthly["GPUs (amortised)"] = gpus * host.purchase_usd_per_gpu / host.amortisation_months
        watts = gpu_specs()[host.gpu]["tdp_w"] if host.gpu in gpu_specs() else 300.0
        monthly["power"] = gpus * watts / 1000 * host.pue * HOURS_PER_MONTH * host.electricity_usd_per_kwh
    monthly["engineering"] = host.engineer_fte * host.engineer_cost_per_year / 12
    monthly["storage & egress"] = host.storage_egress_usd_per_month
    monthly["monitoring"] = host.monitoring_usd_per_month
    one_off = {"set-up": host.setup_usd, "data prep": host.data_prep_usd}
    average_utilisation = workload.conversations_per_month / HOURS_PER_MONTH / (gpus * host.capacity(workload))
    return Costs(f"self-hosted: {host.model} on {gpus} x {host.gpu}", monthly, one_off,
                 details={"gpus": gpus, "spare_gpus": host.spare_gpus, "conversations_per_gpu_hour": host.capacity(workload),
                          "average_utilisation": average_utilisation})


# ---------------------------------------------------------------- comparisons
def compare(workload: Workload, price: ApiPrice | str, host: SelfHost, horizon_months: float = 36, api_engineer_fte: float = 0.1,
            api_monitoring_usd_per_month: float | None = None) -> dict[str, float]:
    """API vs self-hosting over a horizon: totals, saving, saving share, payback, $/1M tokens.

    ``api_monitoring_usd_per_month``: what watching the API integration costs a month; None (the default) takes the
    self-hosted side's figure (``host.monitoring_usd_per_month``), as :func:`outcome`, the curves, the calculator and
    :func:`break_even_volume` all do: one cost model, one break-even."""
    monitoring = host.monitoring_usd_per_month if api_monitoring_usd_per_month is None else api_monitoring_usd_per_month
    api = api_cost(workload, price, api_engineer_fte, host.engineer_cost_per_year, monitoring)
    own = self_host_cost(workload, host)
    api_total, own_total = api.total(horizon_months), own.total(horizon_months)
    monthly_saving = api.monthly_total - own.monthly_total
    return {
        "api_monthly": api.monthly_total, "self_monthly": own.monthly_total, "one_off": own.one_off_total,
        "api_total": api_total, "self_total": own_total, "saving": api_total - own_total,
        "saving_share": (api_total - own_total) / api_total,
        "payback_months": payback_months(own.one_off_total, monthly_saving),
        "api_usd_per_mtok": api.usd_per_million_tokens(workload, horizon_months),
        "self_usd_per_mtok": own.usd_per_million_tokens(workload, horizon_months), "gpus": own.details["gpus"],
    }


def payback_months(one_off_usd: float, monthly_saving_usd: float) -> float:
    """Months until one-off costs are earned back (infinite if self-hosting saves nothing per month)."""
    return one_off_usd / monthly_saving_usd if monthly_saving_usd > 0 else math.inf


def break_even_volume(workload: Workload, price: ApiPrice | str, host: SelfHost, horizon_months: float = 36,
                      api_engineer_fte: float = 0.1, low: float = 1e3, high: float = 1e10,
                      api_monitoring_usd_per_month: float | None = None) -> float | None:
    """Smallest monthly conversation volume above which self-hosting is cheaper over the horizon.

    Self-hosting costs rise in steps (whole GPUs) and the API linearly, so the curves can cross
    more than once near the break-even: this returns the volume after the *last* crossing, or
    None if self-hosting never wins below ``high``. The costs are :func:`compare`'s (the API side's monitoring
    included, as in the bill and the curves), so the saving :func:`outcome` reports changes sign here.
    """
    def cheaper(volume: float) -> bool:
        result = compare(workload.with_volume(volume), price, host, horizon_months, api_engineer_fte,
                         api_monitoring_usd_per_month)
        return result["self_total"] <= result["api_total"]

    grid = [low * (high / low) ** (i / 600) for i in range(601)]
    flags = [cheaper(v) for v in grid]
    if not flags[-1]:
        return None
    index = len(flags) - 1
    while index > 0 and flags[index - 1]:
        index -= 1
    if index == 0:
        return grid[0]
    lo, hi = grid[index - 1], grid[index]
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if cheaper(mid) else (mid, hi)
    return hi


# ---------------------------------------------------------------- the flat model used by sensitivity analysis
def default_inputs() -> dict[str, float | str]:
    """Every input of the scenario comparison as one flat dict (what the tornado and Monte Carlo vary)."""
    s = scenario()
    return {
        "conversations_per_month": s["conversations_per_month"],
        "system_prompt_tokens": s["system_prompt_tokens"], "turns_per_conversation": s["turns_per_conversation"],
        "user_tokens_per_turn": s["user_tokens_per_turn"], "assistant_tokens_per_turn": s["assistant_tokens_per_turn"],
        "peak_to_average": s["peak_to_average"], "cached_input_share": 0.0, "batch_share": 0.0,
        "api_model": "gpt-4o", "api_price_factor": 1.0,
        "gpu": "H100", "open_model": "qwen2.5-7b", "precision": "bf16", "usd_per_gpu_hour": rental_price("H100"),
        "utilisation_target": s["utilisation_target"], "engineer_fte": s["self_host_engineer_fte"],
        "engineer_cost_per_year": s["engineer_cost_per_year"], "api_engineer_fte": s["api_engineer_fte"],
        "storage_egress_usd_per_month": s["storage_egress_usd_per_month"], "monitoring_usd_per_month": s["monitoring_usd_per_month"],
        "setup_usd": s["setup_usd_one_off"], "data_prep_usd": s["data_prep_usd_one_off"],
        "bandwidth_efficiency": s["bandwidth_efficiency"], "compute_efficiency": s["compute_efficiency"], "max_batch": s["max_batch"],
        "horizon_months": 36, "spare_gpus": 0,
    }


def from_inputs(inputs: dict) -> tuple[Workload, ApiPrice, SelfHost, float]:
    """Turn the flat inputs into (workload, API price, hosting, horizon)."""
    i = inputs
    tokens_in, tokens_out = conversation_tokens(i["system_prompt_tokens"], i["turns_per_conversation"], i["user_tokens_per_turn"],
                                                i["assistant_tokens_per_turn"])
    workload = Workload(i["conversations_per_month"], tokens_in, tokens_out, i["cached_input_share"], i["batch_share"], i["peak_to_average"])
    base = get_api_price(i["api_model"])
    factor = _check("api_price_factor", i["api_price_factor"])
    price = replace(base, input=base.input * factor, output=base.output * factor,
                    cached_input=None if base.cached_input is None else base.cached_input * factor)
    host = SelfHost(i["gpu"], i["open_model"], i["precision"], usd_per_gpu_hour=i["usd_per_gpu_hour"],
                    utilisation_target=i["utilisation_target"], engineer_fte=i["engineer_fte"],
                    engineer_cost_per_year=i["engineer_cost_per_year"], storage_egress_usd_per_month=i["storage_egress_usd_per_month"],
                    monitoring_usd_per_month=i["monitoring_usd_per_month"], setup_usd=i["setup_usd"], data_prep_usd=i["data_prep_usd"],
                    bandwidth_efficiency=i["bandwidth_efficiency"], compute_efficiency=i["compute_efficiency"], max_batch=int(i["max_batch"]),
                    spare_gpus=int(i.get("spare_gpus", 0)))
    return workload, price, host, i["horizon_months"]


def outcome(inputs: dict) -> dict[str, float]:
    """The comparison for a flat input dict (see :func:`default_inputs`)."""
    workload, price, host, horizon = from_inputs(inputs)
    return compare(workload, price, host, horizon, inputs["api_engineer_fte"], inputs["monitoring_usd_per_month"])


def break_even(inputs: dict) -> float | None:
    """:func:`break_even_volume` for a flat input dict: the volume at which :func:`outcome`'s saving changes sign."""
    workload, price, host, horizon = from_inputs(inputs)
    return break_even_volume(workload, price, host, horizon, inputs["api_engineer_fte"],
                             api_monitoring_usd_per_month=inputs["monitoring_usd_per_month"])


def lab01_inputs(store: dict | None = None) -> dict:
    """:func:`default_inputs` with the choices the learner's Lab 01 saved (API model, GPU, open model, GPU-hour price,
    volume, horizon), so Labs 05 and 06 price the hybrid and self-hosting exactly as Lab 01 did."""
    from .. import results

    store = results.load() if store is None else store
    saved = {name: entry["value"] for name, entry in store.get("01", {}).items()}
    inputs = default_inputs()
    for stored, key in (("api model", "api_model"), ("self-host gpu", "gpu"), ("self-host model", "open_model"),
                        ("usd per gpu hour", "usd_per_gpu_hour"), ("conversations per month", "conversations_per_month"),
                        ("horizon months", "horizon_months")):
        if saved.get(stored) not in (None, ""):
            inputs[key] = saved[stored]
    return inputs


def hybrid_monthly(inputs: dict, paid_request_share: float, api_cost_share: float | None = None) -> dict[str, float]:
    """The hybrid's monthly cost: the paid API's part of the all-API bill, plus self-hosting sized for the traffic kept
    local (GPUs come whole: moving a quarter of the traffic away rarely removes a quarter of the fleet).

    ``paid_request_share``: the share of conversations the router sends to the paid API; ``api_cost_share``: the paid
    requests' share of the all-API bill for the same requests (Lab 05 measures it; hard requests are longer, so it
    differs from the request share), defaulting to the request share."""
    share = _check("paid_request_share", paid_request_share, 0.0, 1.0, low_inclusive=True)
    cost_share = share if api_cost_share is None else _check("api_cost_share", api_cost_share, 0.0, 1.0, low_inclusive=True)
    full = outcome(inputs)
    if share >= 1.0:
        return {"api part": full["api_monthly"] * cost_share, "local part": 0.0, "total": full["api_monthly"] * cost_share, "gpus": 0}
    local = outcome({**inputs, "conversations_per_month": inputs["conversations_per_month"] * (1 - share)})
    api_part = cost_share * full["api_monthly"]
    return {"api part": api_part, "local part": local["self_monthly"], "total": api_part + local["self_monthly"], "gpus": local["gpus"]}


def tornado(inputs: dict, ranges: dict[str, tuple[float, float]], metric: str = "saving") -> "object":
    """Move each input to its low and high value (others at base) and record ``metric``.

    Returns a DataFrame sorted by swing (largest first): input, low, high, metric at low, at high, swing.
    """
    import pandas as pd

    base = outcome(inputs)[metric]
    rows = []
    for name, (low, high) in ranges.items():
        if name not in inputs:
            raise InputError(f"tornado: unknown input {name!r}", fix=f"use inputs from default_inputs(): {', '.join(inputs)}")
        at_low = outcome({**inputs, name: low})[metric]
        at_high = outcome({**inputs, name: high})[metric]
        rows.append({"input": name, "low": low, "high": high, f"{metric} at low": at_low, f"{metric} at high": at_high,
                     "swing": abs(at_high - at_low)})
    frame = pd.DataFrame(rows).sort_values("swing", ascending=False).set_index("input")
    frame.attrs["base"] = base
    frame.attrs["metric"] = metric
    return frame


def monte_carlo(inputs: dict, distributions: dict[str, Callable], samples: int = 1000, seed: int = 0) -> "object":
    """Draw the uncertain inputs from ``distributions`` (name -> f(rng) -> value) and evaluate each draw.

    Returns a DataFrame with the drawn inputs and the results; see :func:`monte_carlo_summary`.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(int(_check("samples", samples))):
        drawn = {name: draw(rng) for name, draw in distributions.items()}
        result = outcome({**inputs, **drawn})
        rows.append({**drawn, **result})
    return pd.DataFrame(rows)


def monte_carlo_summary(draws, level: float = 0.90) -> dict[str, float]:
    """Probability that self-hosting is cheaper, and a central interval of the saving and saving share."""
    tail = (1 - level) / 2
    return {
        "p_self_cheaper": float((draws["saving"] > 0).mean()),
        "saving_low": float(draws["saving"].quantile(tail)), "saving_median": float(draws["saving"].median()),
        "saving_high": float(draws["saving"].quantile(1 - tail)),
        "share_low": float(draws["saving_share"].quantile(tail)), "share_high": float(draws["saving_share"].quantile(1 - tail)),
        "level": level,
    }


def default_distributions(inputs: dict) -> dict[str, Callable]:
    """The uncertainties the lab assumes (each one written out so a learner can change it)."""
    low_gpu, high_gpu = rental_price(inputs["gpu"], pick="min"), rental_price(inputs["gpu"], pick="max")
    return {
        "user_tokens_per_turn": lambda rng: float(rng.lognormal(math.log(inputs["user_tokens_per_turn"]), 0.4)),
        "assistant_tokens_per_turn": lambda rng: float(rng.lognormal(math.log(inputs["assistant_tokens_per_turn"]), 0.4)),
        "turns_per_conversation": lambda rng: float(rng.integers(2, 6)),
        "peak_to_average": lambda rng: float(rng.uniform(1.5, 4.0)),
        "usd_per_gpu_hour": lambda rng: float(rng.uniform(low_gpu, high_gpu)),
        "utilisation_target": lambda rng: float(rng.uniform(0.3, 0.8)),
        "bandwidth_efficiency": lambda rng: float(rng.uniform(0.3, 0.8)),
        "engineer_fte": lambda rng: float(rng.uniform(0.25, 1.5)),
        "api_price_factor": lambda rng: float(rng.uniform(0.5, 1.2)),
    }


# ---------------------------------------------------------------- pictures
def cost_curves(inputs: dict, volumes=None) -> "object":
    """Monthly-equivalent cost of each option across monthly volumes (one-offs spread over the horizon)."""
    import numpy as np
    import pandas as pd

    volumes = volumes if volumes is not None else np.geomspace(1e5, 1e8, 120)
    workload, price, host, horizon = from_inputs(inputs)
    rows = []
    for volume in volumes:
        w = workload.with_volume(float(volume))
        api = api_cost(w, price, inputs["api_engineer_fte"], host.engineer_cost_per_year, inputs["monitoring_usd_per_month"])
        own = self_host_cost(w, host)
        rows.append({"conversations_per_month": float(volume), "API": api.monthly_equivalent(horizon),
                     "self-hosted": own.monthly_equivalent(horizon), "gpus": own.details["gpus"]})
    return pd.DataFrame(rows)


def plot_cost_vs_volume(inputs: dict, ax=None):
    """Cost per month against volume for both options, with the break-even and the scenario marked."""
    import matplotlib.pyplot as plt

    curves = cost_curves(inputs)
    workload, price, host, horizon = from_inputs(inputs)
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 4), layout="constrained")
    ax.plot(curves["conversations_per_month"], curves["API"], label=f"API ({price.model})")
    ax.plot(curves["conversations_per_month"], curves["self-hosted"], label=f"self-hosted ({host.model} on {host.gpu})")
    even = break_even(inputs)
    if even is not None:
        ax.axvline(even, color="grey", linestyle="--", label=f"break-even {even / 1e6:.2f}M / month")
    ax.axvline(workload.conversations_per_month, color="black", linestyle=":", label="your volume")
    ax.set(xscale="log", yscale="log", xlabel="conversations per month", ylabel="per month (one-offs spread)",
           title="API vs self-hosting")
    usd_axis(ax.yaxis)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the plot, never over a curve
    return ax


def usd_label(value: float, _position=None) -> str:
    """An axis tick in dollars a person reads at a glance: $1.2M, $250k, -$40k, $90 (never a bare 1e6 offset)."""
    sign, size = ("-" if value < 0 else ""), abs(value)
    if size >= 1e9:
        return f"{sign}${size / 1e9:.3g}B"
    if size >= 1e6:
        return f"{sign}${size / 1e6:.3g}M"
    if size >= 1e3:
        return f"{sign}${size / 1e3:.3g}k"
    return f"{sign}${size:.3g}"


def usd_axis(axis) -> None:
    """Format a matplotlib axis (``ax.xaxis`` or ``ax.yaxis``) in dollars with k/M/B."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(usd_label))


def plot_tornado(frame, ax=None):
    import matplotlib.pyplot as plt

    metric, base = frame.attrs["metric"], frame.attrs["base"]
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.45 * len(frame) + 1))
    names = list(frame.index)[::-1]
    low = frame.loc[names, f"{metric} at low"] - base
    high = frame.loc[names, f"{metric} at high"] - base
    ax.barh(names, low, left=base, color="tab:red", label="input at its low value")
    ax.barh(names, high, left=base, color="tab:blue", label="input at its high value")
    ax.axvline(base, color="black", linewidth=1)
    ax.set(xlabel=f"{metric} over the horizon", title="What moves the answer most")
    usd_axis(ax.xaxis)
    ax.legend(fontsize=8)
    return ax


def plot_monte_carlo(draws, ax=None):
    import matplotlib.pyplot as plt

    summary = monte_carlo_summary(draws)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(draws["saving"], bins=40, color="tab:green", alpha=0.8)
    ax.axvline(0, color="black", linewidth=1)
    for key in ("saving_low", "saving_high"):
        ax.axvline(summary[key], color="grey", linestyle="--")
    ax.set(xlabel="saving from self-hosting over the horizon", ylabel="draws",
           title=f"P(self-hosting cheaper) = {summary['p_self_cheaper']:.0%}; {summary['level']:.0%} interval dashed")
    usd_axis(ax.xaxis)
    return ax


def plot_cost_split(splits: dict[str, dict[str, float]], reference: dict[str, float], ax=None):
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3))
    bars = {"article (C3)": reference, **splits}
    categories = list(reference)
    left = np.zeros(len(bars))
    for category in categories:
        values = np.array([bars[name].get(category, 0.0) for name in bars])
        ax.barh(list(bars), values, left=left, label=category)
        left += values
    ax.set(xlabel="share of total cost", xlim=(0, 1), title="Where the money goes")
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    return ax


def horizon_verdict(result: dict) -> str:
    """The comparison over the horizon in words a percentage cannot mislead in: a share saved, or how many times the
    API's cost self-hosting comes to (never "saving -1004 %")."""
    if result["saving_share"] >= 0:
        return f"self-hosting saves {result['saving_share']:.0%} of the API's cost over the horizon"
    ratio = result["self_total"] / result["api_total"] if result.get("api_total") else float("inf")
    return f"self-hosting costs {ratio:.1f}x the API over the horizon"


def calculator(inputs: dict | None = None):
    """An interactive calculator: sliders and menus that redraw the cost-vs-volume plot. Uses only widgets that
    ipywidgets 7.7 has too (Colab's front end renders its own 7.7.1). Displays the widget box once and returns it wrapped
    (:class:`Shown`: ``.box``) so the cell's own display does not draw it a second time.

    While a notebook is being graded (``OTS_GRADING=1``, set by the grader's sandbox) it draws the plot once, without
    widgets, and returns None: no reader is there to move a slider, and widget messages could stall the grading kernel."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    base = dict(inputs or default_inputs())
    if os.environ.get("OTS_GRADING") == "1":
        plot_cost_vs_volume(base)
        plt.show()
        return None
    label, wide = {"description_width": "initial"}, widgets.Layout(width="auto")  # whole labels, never cut short
    controls = {
        "conversations_per_month": widgets.FloatLogSlider(value=base["conversations_per_month"], base=10, min=5, max=8, description="conversations / month", style=label, layout=wide),
        "user_tokens_per_turn": widgets.IntSlider(value=int(base["user_tokens_per_turn"]), min=10, max=400, step=10, description="user tokens", style=label, layout=wide),
        "assistant_tokens_per_turn": widgets.IntSlider(value=int(base["assistant_tokens_per_turn"]), min=20, max=800, step=20, description="reply tokens", style=label, layout=wide),
        "api_model": widgets.Dropdown(options=[m for m, p in api_prices().items() if p.kind == "proprietary"], value=base["api_model"], description="API model", style=label, layout=wide),
        "gpu": widgets.Dropdown(options=sorted({r["gpu"] for r in gpu_rental_prices()}), value=base["gpu"], description="GPU", style=label, layout=wide),
        "utilisation_target": widgets.FloatSlider(value=base["utilisation_target"], min=0.1, max=0.95, step=0.05, description="utilisation", style=label, layout=wide),
        "engineer_fte": widgets.FloatSlider(value=base["engineer_fte"], min=0, max=3, step=0.25, description="staff (FTE)", style=label, layout=wide),
    }
    out = widgets.Output()

    def redraw(**changes):
        values = {**base, **changes}
        values["usd_per_gpu_hour"] = rental_price(values["gpu"])
        with out:
            out.clear_output(wait=True)
            try:
                plot_cost_vs_volume(values)
                plt.show()
                result = outcome(values)
                print(f"API {result['api_monthly']:,.0f} USD/month vs self-hosted {result['self_monthly']:,.0f} USD/month "
                      f"on {result['gpus']:.0f} GPU(s); {horizon_verdict(result)}")
            except InputError as error:
                print(error)

    widgets.interactive_output(redraw, controls)  # draws once now (ipywidgets 7 and 8), then on every change
    box = widgets.VBox([widgets.HBox(list(controls.values())[:4]), widgets.HBox(list(controls.values())[4:]), out])
    display(box)
    return Shown(box)


class Shown:
    """What :func:`calculator` returns: the widget box it already displayed, as ``.box``, with no display of its own,
    so a notebook cell ending in ``tco.calculator()`` shows the calculator once, not twice."""

    def __init__(self, box):
        self.box = box

    def _ipython_display_(self) -> None:  # IPython calls this instead of showing the object: nothing to add
        return None

    def __repr__(self) -> str:
        return "<the calculator, shown above>"


def key_results(inputs: dict) -> tuple[dict[str, float | str], dict[str, str]]:
    """What Lab 01 saves for the later labs (``helpers.results``): the prices it used and the verdict
    numbers, so Lab 04 prices measured throughput with the same GPU-hour and Lab 05 bills the same API."""
    workload, price, host, horizon = from_inputs(inputs)
    outcome_ = outcome(inputs)
    even = break_even(inputs)
    values = {
        "api model": price.model, "api input usd per 1M": price.input, "api output usd per 1M": price.output,
        "price snapshot": snapshot_age()[0].isoformat(), "self-host gpu": host.gpu, "self-host model": host.model,
        "usd per gpu hour": host.usd_per_gpu_hour or 0.0, "conversations per month": workload.conversations_per_month,
        "api usd per month": outcome_["api_monthly"], "self-host usd per month": outcome_["self_monthly"],
        "gpus needed": outcome_["gpus"], "break-even conversations per month": even or 0.0,
        "horizon months": horizon,
    }
    units = {"api input usd per 1M": "USD", "api output usd per 1M": "USD", "usd per gpu hour": "USD",
             "api usd per month": "USD", "self-host usd per month": "USD", "break-even conversations per month": "conversations (0 = never)"}
    return values, units
