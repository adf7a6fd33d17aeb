"""Freeze the API prices Lab 01 uses from the genai-prices package into datasets/tco/api_prices.csv.

    pip install -e ".[prices]"
    python scripts/freeze_prices.py            # rewrite the snapshot (review the diff, then commit)

The lab reads the frozen CSV, never the live package, so its results are reproducible; the CSV
records the package version and the date of the snapshot, and the lab warns when it is old.
"""
from __future__ import annotations

import csv
import datetime as dt
import sys
from importlib.metadata import version
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "datasets" / "tco" / "api_prices.csv"

# (provider, model id in genai-prices, kind, open model it serves or "")
SELECTION = [
    ("openai", "gpt-4", "proprietary", ""),
    ("openai", "gpt-4-turbo", "proprietary", ""),
    ("openai", "gpt-4o-2024-05-13", "proprietary", ""),
    ("openai", "gpt-4o", "proprietary", ""),
    ("openai", "gpt-4o-mini", "proprietary", ""),
    ("openai", "gpt-3.5-turbo", "proprietary", ""),
    ("openai", "gpt-4.1", "proprietary", ""),
    ("openai", "gpt-4.1-mini", "proprietary", ""),
    ("openai", "gpt-5", "proprietary", ""),
    ("openai", "gpt-5-mini", "proprietary", ""),
    ("anthropic", "claude-3-haiku", "proprietary", ""),
    ("anthropic", "claude-3-5-haiku-latest", "proprietary", ""),
    ("anthropic", "claude-3-sonnet", "proprietary", ""),
    ("anthropic", "claude-3-5-sonnet", "proprietary", ""),
    ("anthropic", "claude-haiku-4-5", "proprietary", ""),
    ("anthropic", "claude-sonnet-4-5", "proprietary", ""),
    ("google", "gemini-1.5-flash", "proprietary", ""),
    ("google", "gemini-2.0-flash", "proprietary", ""),
    ("google", "gemini-2.5-flash", "proprietary", ""),
    ("google", "gemini-2.5-pro", "proprietary", ""),
    ("together", "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo", "hosted-open", "llama3.1-8b"),
    ("together", "meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo", "hosted-open", "llama3.1-70b"),
    ("together", "meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo", "hosted-open", "llama3.1-405b"),
    ("together", "mistralai/Mixtral-8x7B-Instruct-v0.1", "hosted-open", "mixtral-8x7b"),
    ("together", "mistralai/Mistral-7B-Instruct-v0.2", "hosted-open", "mistral-7b"),
    ("groq", "llama-3.1-8b-instant", "hosted-open", "llama3.1-8b"),
    ("groq", "llama-3.3-70b-versatile", "hosted-open", "llama3.3-70b"),
    ("groq", "mixtral-8x7b-32768", "hosted-open", "mixtral-8x7b"),
    ("fireworks", "llama-v3p1-8b-instruct", "hosted-open", "llama3.1-8b"),
]


def _number(value) -> float | None:
    """A price as a float; tiered prices (cheaper below a context threshold) give their base rate."""
    if value is None:
        return None
    return float(getattr(value, "base", value))


def _price(value) -> str:
    number = _number(value)
    return "" if number is None else f"{number:g}"


def main() -> int:
    from genai_prices import data
    from genai_prices.types import ModelPrice

    providers = {p.id: p for p in data.providers}
    today = dt.date.today().isoformat()
    package = f"genai-prices {version('genai-prices')}"
    rows = []
    for provider_id, model_id, kind, open_model in SELECTION:
        provider = providers[provider_id]
        model = next((m for m in provider.models if m.id == model_id), None)
        if model is None:
            print(f"missing in {package}: {provider_id}/{model_id}", file=sys.stderr)
            return 1
        prices = model.prices if isinstance(model.prices, ModelPrice) else model.prices[-1].prices
        batch = ""
        for variant in model.price_variants or []:
            if variant.when.get("processing") == "batch" and variant.prices.input_mtok and prices.input_mtok:
                batch = f"{_number(variant.prices.input_mtok) / _number(prices.input_mtok):g}"
        rows.append({
            "provider": provider_id, "model": model_id, "name": model.name or model_id, "kind": kind, "open_model": open_model,
            "input_usd_per_mtok": _price(prices.input_mtok), "cached_input_usd_per_mtok": _price(prices.cache_read_mtok),
            "output_usd_per_mtok": _price(prices.output_mtok), "batch_price_factor": batch,
            "source": f"{package}; {provider.pricing_urls[0] if provider.pricing_urls else ''}", "date": today,
        })
    with open(OUT, "w", newline="") as handle:
        handle.write(f"# API prices in USD per 1M tokens, frozen from {package} on {today} by scripts/freeze_prices.py.\n")
        handle.write("# batch_price_factor = batch price / standard price where the provider has a batch API (blank: none listed).\n")
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
