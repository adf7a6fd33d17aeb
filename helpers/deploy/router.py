"""The router: one entry point in front of a local open model and a paid API, policy as data.

For each request it decides where to go, and why:

1. **personal data** (Presidio, :mod:`helpers.deploy.pii`) -> local only. Such a request is never sent to
   the paid API, also when the local model is down: it fails with a clear error instead.
2. **hard** (difficulty score >= the policy's threshold) -> the paid API first, local as fallback.
3. everything else -> local first, the paid API as fallback when the policy allows it.

Each upstream call retries with exponential backoff and jitter that honour ``Retry-After``
(tenacity), behind a per-upstream circuit breaker; a paid call first reserves its estimated cost in
the ledger's budget and settles the actual cost after (:mod:`helpers.deploy.ledger`). Every request
ends as one ledger row: answered, or failed with the reason.
"""
from __future__ import annotations

import os
import threading
import time
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser from PyPI (a dependency there)
    import tomli as tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

from ..errors import InputError, KitError
from .ledger import BudgetExceeded, Ledger


CHAT_OVERHEAD_TOKENS = 16  # per message, for the chat template's role markers (OpenAI's own count is 3-4)


class RoutingError(KitError):
    """A request could not be answered under the policy."""


@dataclass
class UpstreamSpec:
    name: str
    base_url: str
    model: str
    api_key_env: str = ""
    timeout_s: float = 30.0
    price_model: str = ""  # the paid API's price row in Lab 01's snapshot (empty: free, e.g. the local model)
    system_prompt: str = ""  # sent before each message (the task, worded for this upstream's model); empty: none
    stand_in: bool = False  # the kit's imitation of an API: its answers are not scored (quality "not measured")


@dataclass
class Rule:
    """A routing rule from the policy's ``[[rules]]``: messages containing any of ``contains`` (case-insensitive)
    go to ``route`` first. Personal data is checked before any rule: a rule never sends it off the machine."""

    name: str
    contains: list[str]
    route: str  # "local" or "paid"

    def matches(self, message: str) -> bool:
        text = message.lower()
        return any(word.lower() in text for word in self.contains)


@dataclass
class Policy:
    local: UpstreamSpec
    paid: UpstreamSpec | None = None
    rules: list[Rule] = field(default_factory=list)
    monthly_cap_usd: float = 100.0
    hard_threshold: float = 0.5
    fallback_local_to_paid: bool = True
    fallback_paid_to_local: bool = True
    max_retries: int = 3
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 2.0
    breaker_failures: int = 5
    breaker_cooldown_s: float = 5.0
    max_tokens: int = 64


def load_policy(path: str | Path, overrides: dict[str, dict] | None = None) -> Policy:
    """Read a policy TOML file; a syntax error names its line, an unknown or mistyped key names the key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"no policy file at {path}", fix="copy datasets/deploy/policy.toml and edit it") from None
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{path} is not valid TOML: {error}", fix="fix the line named above (strings need quotes)") from None
    for section, values in (overrides or {}).items():  # e.g. {"local": {"base_url": server.base_url}}
        data.setdefault(section, {}).update(values)
    return policy_from_dict(data, str(path))


def policy_from_dict(data: dict, where: str = "policy") -> Policy:
    unknown_sections = set(data) - {"local", "paid", "budget", "routing", "resilience", "rules"}
    if unknown_sections:  # first: a renamed [paid] must not surface as a rule pointing at an unknown upstream
        raise InputError(f"{where}: unknown section(s) {sorted(unknown_sections)}",
                         fix="use [local], [paid], [budget], [routing], [resilience] and [[rules]] (a section renamed? put its name back)")
    known = {f.name: f for f in fields(Policy)}
    upstreams = {}
    for name in ("local", "paid"):
        if name in data:
            section = data[name]
            unknown = set(section) - {f.name for f in fields(UpstreamSpec)}
            if unknown:
                raise InputError(f"{where}: unknown key(s) {sorted(unknown)} in [{name}]",
                                 fix=f"use only: {', '.join(f.name for f in fields(UpstreamSpec) if f.name != 'name')}")
            missing = {"base_url", "model"} - set(section)
            if missing:
                raise InputError(f"{where}: [{name}] needs {sorted(missing)}", fix=f"add them under [{name}]")
            upstreams[name] = UpstreamSpec(name=name, **section)
    if "local" not in upstreams:
        raise InputError(f"{where}: no [local] upstream", fix="add a [local] section with base_url and model")
    settings = {"rules": _rules(data.get("rules", []), where, upstreams)}
    for section in ("budget", "routing", "resilience"):
        for key, value in data.get(section, {}).items():
            if key not in known or key in ("local", "paid", "rules"):
                raise InputError(f"{where}: unknown key {key!r} in [{section}]",
                                 fix=f"use one of: {', '.join(n for n in known if n not in ('local', 'paid'))}")
            expected = type(known[key].default)
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected):
                raise InputError(f"{where}: [{section}] {key} = {value!r} should be a {expected.__name__}", fix=f"write {key} as a {expected.__name__}")
            settings[key] = value
    return Policy(local=upstreams["local"], paid=upstreams.get("paid"), **settings)


def _rules(items, where: str, upstreams: dict) -> list[Rule]:
    if not isinstance(items, list):
        raise InputError(f"{where}: rules must be an array of tables", fix="write each rule as [[rules]] with name, contains, route")
    rules = []
    for i, item in enumerate(items, start=1):
        unknown = set(item) - {"name", "contains", "route"}
        if unknown:
            raise InputError(f"{where}: unknown key(s) {sorted(unknown)} in rule {i}", fix="a rule has only name, contains and route")
        contains = item.get("contains")
        if isinstance(contains, str):
            contains = [contains]
        if not contains or not all(isinstance(word, str) and word.strip() for word in contains):
            raise InputError(f"{where}: rule {i} ({item.get('name', 'unnamed')}) needs contains = a list of words",
                             fix='e.g. contains = ["chargeback", "lawyer"]')
        route = item.get("route")
        if route not in upstreams:
            raise InputError(f"{where}: rule {i} ({item.get('name', 'unnamed')}) routes to unknown upstream {route!r}",
                             fix=f"route to one of the upstreams the policy defines: {', '.join(sorted(upstreams))}")
        rules.append(Rule(str(item.get("name", f"rule {i}")), list(contains), route))
    return rules


class CircuitBreaker:
    """Opens after ``failures`` consecutive failures; lets one trial call through after ``cooldown_s``."""

    def __init__(self, failures: int, cooldown_s: float):
        self.limit, self.cooldown_s = failures, cooldown_s
        self.failures, self.open_until = 0, 0.0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            return time.monotonic() >= self.open_until

    def success(self) -> None:
        with self._lock:
            self.failures, self.open_until = 0, 0.0

    def failure(self) -> None:
        with self._lock:
            self.failures += 1
            if self.failures >= self.limit:
                self.open_until = time.monotonic() + self.cooldown_s


@dataclass
class Answer:
    request_id: str
    route: str          # local, paid, or none
    reason: str
    outcome: str        # answered, failed, duplicate
    text: str = ""
    error: str = ""
    retries: int = 0
    fallbacks: list[str] = field(default_factory=list)


def _retry_after(error) -> float:
    response = getattr(error, "response", None)
    try:
        return float(response.headers.get("Retry-After", 0)) if response is not None else 0.0
    except (TypeError, ValueError):
        return 0.0


class Router:
    """``Router(policy, ledger, pii=find_pii, difficulty=score)``; ``handle(request_id, message)`` -> :class:`Answer`."""

    def __init__(self, policy: Policy, ledger: Ledger, pii: Callable[[str], list] | None = None,
                 difficulty: Callable[[str], float] | None = None,
                 decide: Callable[[str], tuple[list[str], str, bool]] | None = None, guard: bool = True):
        """``decide`` replaces :meth:`decide` (Lab 05's exercise plugs a leaky one in); ``guard`` is the last line
        of defence at the paid call itself (on by default; the exercise turns it off to show what the leak does)."""
        import openai

        if pii is None:
            from .pii import find_pii as pii
        self.policy, self.ledger, self.pii = policy, ledger, pii
        # the policy's cap applies whatever the ledger was built with: the stricter of the two holds
        ledger.cap = policy.monthly_cap_usd if ledger.cap is None else min(ledger.cap, policy.monthly_cap_usd)
        self.difficulty = difficulty or (lambda message: 0.0)
        self.breakers = {name: CircuitBreaker(policy.breaker_failures, policy.breaker_cooldown_s) for name in ("local", "paid")}
        self.clients = {"local": self._client(policy.local)}
        if policy.paid is not None:
            self.clients["paid"] = self._client(policy.paid)
        self.prices = {}
        if policy.paid is not None and policy.paid.price_model:
            from ..tco import get_api_price

            price = get_api_price(policy.paid.price_model)
            self.prices["paid"] = (price.input / 1e6, price.output / 1e6)
        self._transient = (openai.RateLimitError, openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError)
        self.sent: dict[str, list[str]] = {"local": [], "paid": []}  # every prompt as sent, per upstream (the audit reads it)
        self.sent_to_paid_with_pii = 0  # the invariant a test checks: stays 0
        self.blocked_by_guard = 0
        self.guard = guard
        if decide is not None:
            self.decide = decide

    @staticmethod
    def _client(spec: UpstreamSpec):
        from openai import OpenAI

        key = "not-needed-for-a-local-server"
        if spec.api_key_env:
            key = os.environ.get(spec.api_key_env, "")
            if not key:
                raise InputError(f"the policy's [{spec.name}] upstream needs the environment variable {spec.api_key_env}",
                                 fix=f"export {spec.api_key_env}=... before starting (never write the key into the policy file)")
        return OpenAI(base_url=spec.base_url, api_key=key, timeout=spec.timeout_s, max_retries=0)

    # ---------------------------------------------------------------- decisions
    def decide(self, message: str) -> tuple[list[str], str, bool]:
        """(upstreams to try in order, reason, sensitive)."""
        if self.pii(message):
            return ["local"], "personal data stays local", True
        paid = "paid" in self.clients
        for rule in self.policy.rules:
            if rule.matches(message):
                other = [name for name in ("local", "paid") if name != rule.route and name in self.clients]
                allowed = self.policy.fallback_paid_to_local if rule.route == "paid" else self.policy.fallback_local_to_paid
                return [rule.route] + (other if allowed else []), f"rule: {rule.name}", False
        hard = self.difficulty(message) >= self.policy.hard_threshold
        if hard and paid:
            return ["paid"] + (["local"] if self.policy.fallback_paid_to_local else []), "hard: paid API", False
        return ["local"] + (["paid"] if paid and self.policy.fallback_local_to_paid else []), "routine: local", False

    def _estimate(self, message: str, max_tokens: int) -> float:
        """An upper bound of what the paid call can cost, reserved before it: a byte-level tokenizer never makes more
        tokens than the text has UTF-8 bytes, plus the chat format's few tokens per message (16 allowed); the reply is
        at most ``max_tokens``. Settling the actual cost then never passes the reservation, so never the cap."""
        per_in, per_out = self.prices.get("paid", (0.0, 0.0))
        system = self.policy.paid.system_prompt if self.policy.paid else ""
        messages = 2 if system else 1
        tokens_in = len(message.encode()) + len(system.encode()) + CHAT_OVERHEAD_TOKENS * messages
        return tokens_in * per_in + max_tokens * per_out

    # ---------------------------------------------------------------- one request
    def _call(self, name: str, message: str, max_tokens: int):
        """The upstream's reply (text, tokens in, tokens out, retries), retrying transient errors."""
        from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

        spec = self.policy.local if name == "local" else self.policy.paid
        backoff = wait_exponential_jitter(multiplier=self.policy.backoff_initial_s, max=self.policy.backoff_max_s)

        def wait(state):
            error = state.outcome.exception() if state.outcome else None
            return max(backoff(state), min(_retry_after(error), self.policy.backoff_max_s))

        messages = ([{"role": "system", "content": spec.system_prompt}] if spec.system_prompt else []) + [{"role": "user", "content": message}]
        attempts = 0
        try:
            for attempt in Retrying(stop=stop_after_attempt(self.policy.max_retries + 1), wait=wait,
                                    retry=retry_if_exception_type(self._transient), reraise=True):
                with attempt:
                    attempts += 1
                    self.sent[name].append("\n".join(m["content"] for m in messages))
                    # greedy, as every lab measured its models (a server's own default may sample: llama.cpp's does)
                    reply = self.clients[name].chat.completions.create(model=spec.model, max_tokens=max_tokens, messages=messages,
                                                                       temperature=0.0)
        except RetryError as error:  # pragma: no cover - reraise=True raises the last error instead
            raise error.last_attempt.exception() from None
        try:
            text = reply.choices[0].message.content or ""
            usage = reply.usage
        except (AttributeError, IndexError, TypeError):
            raise RoutingError(f"the {name} upstream answered something that is not an OpenAI chat completion ({str(reply)[:60]!r})",
                               fix=f"check that [{name}] base_url ({spec.base_url}) is an OpenAI-compatible endpoint ending in /v1") from None
        return text, (usage.prompt_tokens if usage else 0), (usage.completion_tokens if usage else len(text.split())), attempts - 1

    def handle(self, request_id: str, message: str, max_tokens: int | None = None) -> Answer:
        max_tokens = max_tokens or self.policy.max_tokens
        if self.ledger.seen(request_id):
            return Answer(request_id, "none", "already answered (idempotent rerun)", "duplicate")
        order, reason, sensitive = self.decide(message)
        errors, fallbacks, retries = [], [], 0
        for i, name in enumerate(order):
            if i:
                fallbacks.append(name)
            if not self.breakers[name].allow():
                errors.append(f"{name}: circuit open")
                continue
            reservation = None
            if name == "paid":
                if sensitive or self.pii(message):  # checked again where the call is made, not only where the plan is
                    if self.guard:
                        self.blocked_by_guard += 1
                        errors.append("paid: blocked, the message holds personal data")
                        continue
                    self.sent_to_paid_with_pii += 1  # only with guard=False (the exercise's leaky router)
                try:
                    reservation = self.ledger.reserve(request_id, self._estimate(message, max_tokens))
                except BudgetExceeded as error:
                    errors.append(f"paid: {error}")
                    continue
            start = time.perf_counter()
            try:
                text, tokens_in, tokens_out, tried = self._call(name, message, max_tokens)
            except Exception as error:  # noqa: BLE001 - recorded, and the next upstream is tried
                retries += self.policy.max_retries
                self.breakers[name].failure()
                if reservation is not None:
                    self.ledger.settle(reservation, 0.0)
                errors.append(f"{name}: {error}" if isinstance(error, KitError) else f"{name}: {type(error).__name__}")
                continue
            self.breakers[name].success()
            retries += tried
            per_in, per_out = self.prices.get(name, (0.0, 0.0))
            cost = tokens_in * per_in + tokens_out * per_out
            if reservation is not None:
                self.ledger.settle(reservation, cost)
            route_reason = reason + (f"; fallback after {'; '.join(errors)}" if errors else "")
            spec = self.policy.local if name == "local" else self.policy.paid
            self.ledger.record(request_id, name, route_reason, "answered", upstream=spec.base_url, model=spec.model, tokens_in=tokens_in,
                               tokens_out=tokens_out, cost_usd=cost, latency_s=time.perf_counter() - start, retries=retries)
            return Answer(request_id, name, route_reason, "answered", text, retries=retries, fallbacks=fallbacks)
        error = "; ".join(errors) or "no upstream"
        if sensitive:
            error = f"local model unavailable ({error}); personal data is never sent to the paid API"
        self.ledger.record(request_id, "none", reason, "failed", retries=retries, error=error)
        return Answer(request_id, "none", reason, "failed", error=error, retries=retries, fallbacks=fallbacks)
