"""Money from tokens, with Kimi's usage semantics.

- `prompt_tokens` includes `cached_tokens` (Kimi puts `cached_tokens` at the top level of `usage`): the
  cache-miss part is the difference, so cached tokens are never billed twice.
- `completion_tokens` includes reasoning tokens; both are billed at the output price.
- `$web_search` is priced per call; the Batch API at the card's multiplier (60 %).
- Paid prompt-cache writes (K3 family): `cache_write_tokens` of the prompt are written to the cache and priced
  at the card's write price for the chosen retention (5 min: 1x input, 1 h: 2x); they are part of
  `prompt_tokens` and are not billed again as cache misses. On a card without paid writes (K2.x automatic
  caching) written tokens are ordinary input at the cache-miss price.
Sums are exact: token counts are summed as integers first and multiplied by Decimal prices once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np
import pandas as pd

from kimiplan.catalog.cards import PriceCard
from kimiplan.catalog.resolve import price_card
from kimiplan.catalog.usage import UsageError, read_usage, usage_block
from kimiplan.errors import CatalogError, ConfigError
from kimiplan.model.scenario import COMPONENTS, Scenario

MILLION = Decimal(1_000_000)
DAYS_PER_MONTH = 365.25 / 12  # average month, for "per month" figures; the forecast uses calendar months
MINOR_UNIT = {"USD": Decimal("0.01"), "CNY": Decimal("0.01")}


@dataclass(frozen=True)
class Usage:
    """Token counts of one response (or a sum of many), as Kimi reports them."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    web_search_calls: int = 0
    cache_write_tokens: int = 0

    def __post_init__(self):
        for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "web_search_calls", "cache_write_tokens"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"{name} must be a whole number >= 0, got {v!r}")
        if self.cached_tokens > self.prompt_tokens:
            raise ConfigError(
                f"cached_tokens ({self.cached_tokens}) cannot exceed prompt_tokens ({self.prompt_tokens}): "
                "Kimi's prompt_tokens include the cached ones"
            )
        if self.cached_tokens + self.cache_write_tokens > self.prompt_tokens:
            raise ConfigError(
                f"cached_tokens ({self.cached_tokens}) plus cache_write_tokens ({self.cache_write_tokens}) cannot "
                f"exceed prompt_tokens ({self.prompt_tokens}): both are parts of the prompt"
            )

    @property
    def cache_miss_tokens(self) -> int:
        """Prompt tokens neither read from nor written to the cache."""
        return self.prompt_tokens - self.cached_tokens - self.cache_write_tokens

    @classmethod
    def from_response(cls, response: Mapping[str, Any], web_search_calls: int | None = None) -> Usage:
        """From a chat completion (dict): `usage` at the top level or inside `choices[0]` (streamed chunks).

        `cached_tokens` is read at the top level of `usage` (Kimi) and, failing that, from
        `prompt_tokens_details.cached_tokens` (OpenAI's place), never from both."""
        block = usage_block(response)
        if block is None:
            raise ConfigError("response has no usage (neither top level nor choices[0].usage)")
        try:
            u = read_usage(block)  # the one usage parser (kimiplan.catalog.usage), as the client reads it
        except UsageError as exc:
            raise ConfigError(str(exc)) from None
        if web_search_calls is None:
            web_search_calls = _count_web_search(response)
        return cls(
            u["prompt_tokens"],
            u["completion_tokens"],
            u["cached_tokens"],
            int(web_search_calls),
            u["cache_write_tokens"],
        )


def _count_web_search(response: Mapping[str, Any]) -> int:
    # Billed when the response ends with finish_reason=tool_calls calling $web_search.
    n = 0
    for ch in response.get("choices") or []:
        if ch.get("finish_reason") != "tool_calls":
            continue
        for call in (ch.get("message") or {}).get("tool_calls") or []:
            if (call.get("function") or {}).get("name") == "$web_search":
                n += 1
    return n


@dataclass(frozen=True)
class CostBreakdown:
    currency: str
    cache_hit_input: Decimal
    cache_miss_input: Decimal
    output: Decimal
    tools: Decimal
    tax: Decimal = Decimal(0)
    tokens: Mapping[str, int] = field(default_factory=dict)
    cache_write_input: Decimal = Decimal(0)
    cache_retention: str = "5m"

    @property
    def subtotal(self) -> Decimal:
        return self.cache_hit_input + self.cache_write_input + self.cache_miss_input + self.output + self.tools

    @property
    def total(self) -> Decimal:
        return self.subtotal + self.tax

    def rounded(self, value: Decimal | None = None) -> Decimal:
        """Rounded to the currency's smallest unit (cent, fen), half up."""
        v = self.total if value is None else value
        return v.quantize(MINOR_UNIT.get(self.currency, Decimal("0.01")), rounding=ROUND_HALF_UP)

    def to_dict(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "total": float(self.total),
            "total_exact": str(self.total.normalize()),
            "total_rounded": str(self.rounded()),
            "subtotal": float(self.subtotal),
            "tax": float(self.tax),
            "cache_retention": self.cache_retention,
            "by_price_class": {
                "input_cache_hit": float(self.cache_hit_input),
                "input_cache_write": float(self.cache_write_input),
                "input_cache_miss": float(self.cache_miss_input),
                "output": float(self.output),
                "tool_calls": float(self.tools),
            },
            "tokens": dict(self.tokens),
        }


def price_multiplier(card: PriceCard, batch: bool) -> Decimal:
    if not batch:
        return Decimal(1)
    if card.batch_multiplier is None:
        raise ConfigError(f"batch=True but {card.provider}/{card.model} has no Batch API price in the catalog")
    return card.batch_multiplier


# Cloudflare Workers AI bills neurons and gives a free daily allowance: pricing facts, used by the forecast.


def neuron_credit_price(card: PriceCard) -> float:
    """USD value of one free neuron on `card`; 0 when the card has no free neuron allowance."""
    if card.free_neurons_per_day and card.usd_per_1000_neurons is not None:
        return float(card.usd_per_1000_neurons) / 1000
    return 0.0


def neurons_per_token(card: PriceCard) -> np.ndarray:
    """Neurons billed per cached input, cache-miss input and completion token (cached falls back to input)."""
    per_m = [
        card.neurons_cached_input_per_m or card.neurons_input_per_m or 0,
        card.neurons_input_per_m or 0,
        card.neurons_output_per_m or 0,
    ]
    return np.array(per_m, dtype=float) / 1e6


def free_neuron_credit(neurons_used, free_neurons, price_per_neuron):
    """The free allowance is worth min(free, used) neurons a day at the neuron price (arrays broadcast)."""
    return np.minimum(free_neurons, neurons_used) * price_per_neuron


def cost_of_usage(
    usage: Usage,
    card: PriceCard,
    *,
    batch: bool = False,
    tax_rate: float | Decimal = 0,
    cache_retention: str = "5m",
) -> CostBreakdown:
    """Exact cost of one response (or of summed usage) on `card`; cache writes at `cache_retention` ("5m"/"1h")."""
    m = price_multiplier(card, batch)
    tax_rate = Decimal(str(tax_rate))
    if tax_rate < 0:
        raise ConfigError(f"tax_rate must be >= 0, got {tax_rate}")
    try:
        write_price = card.cache_write_price(cache_retention)
    except CatalogError as exc:
        raise ConfigError(str(exc)) from None
    hit = Decimal(usage.cached_tokens) * card.cache_hit_price * m / MILLION
    write = Decimal(usage.cache_write_tokens) * write_price * m / MILLION
    miss = Decimal(usage.cache_miss_tokens) * card.input_cache_miss * m / MILLION
    out = Decimal(usage.completion_tokens) * card.output * m / MILLION
    # Tool calls are a per-call fee; the batch discount applies to token prices only.
    tools = Decimal(usage.web_search_calls) * card.web_search_per_call
    sub = hit + write + miss + out + tools
    return CostBreakdown(
        card.currency,
        hit,
        miss,
        out,
        tools,
        tax=sub * tax_rate,
        tokens={
            "prompt_tokens": int(usage.prompt_tokens),
            "cached_tokens": int(usage.cached_tokens),
            "cache_write_tokens": int(usage.cache_write_tokens),
            "cache_miss_tokens": int(usage.cache_miss_tokens),
            "completion_tokens": int(usage.completion_tokens),
            "web_search_calls": int(usage.web_search_calls),
        },
        cache_write_input=write,
        cache_retention=cache_retention,
    )


def cost_of_records(
    records: pd.DataFrame | Iterable[Usage],
    card: PriceCard,
    *,
    batch: bool = False,
    tax_rate: float | Decimal = 0,
    cache_retention: str = "5m",
) -> CostBreakdown:
    """Exact cost of many responses: integer token sums times Decimal prices (no float drift).

    A DataFrame needs `prompt_tokens` and `completion_tokens`, optionally `cached_tokens`,
    `web_search_calls` and `cache_write_tokens`."""
    if isinstance(records, pd.DataFrame):
        for col in ("prompt_tokens", "completion_tokens"):
            if col not in records:
                raise ConfigError(f"records need a {col!r} column; got {list(records.columns)}")

        def total(col: str) -> int:
            if col not in records:
                return 0
            s = records[col]
            if s.isna().any() or (s < 0).any():
                bad = s[s.isna() | (s < 0)].iloc[0]
                raise ConfigError(f"column {col!r} has a negative or missing value: {bad!r}")
            # Python ints (object sum): an int64 sum over billions of records could overflow, these cannot.
            return int(np.asarray(s, dtype=np.int64).astype(object).sum())

        usage = Usage(
            total("prompt_tokens"),
            total("completion_tokens"),
            total("cached_tokens"),
            total("web_search_calls"),
            total("cache_write_tokens"),
        )
    else:
        p = c = k = w = cw = 0
        for u in records:
            p += u.prompt_tokens
            c += u.completion_tokens
            k += u.cached_tokens
            w += u.web_search_calls
            cw += u.cache_write_tokens
        usage = Usage(p, c, k, w, cw)
    return cost_of_usage(usage, card, batch=batch, tax_rate=tax_rate, cache_retention=cache_retention)


# ---------------------------------------------------------------- expected cost of a scenario

INPUT_COMPONENTS = COMPONENTS


def expected_cost(
    scenario: Scenario,
    catalog=None,
    card: PriceCard | None = None,
    expected: pd.DataFrame | None = None,
    requests_per_day: float | None = None,
) -> pd.DataFrame:
    """Expected cost per request, per day and per month of each route, tidy: one row per
    (route, component, price_class). Components: system, history, rag, documents, user (input, split into
    cache hit and miss), reasoning, output, tools. Money columns are floats in the card's currency, tax
    included when the scenario sets `tax_rate`; `exchange_rate` adds one column per extra currency."""
    from kimiplan.workload.draws import expected_tokens

    card = card or price_card(scenario, catalog)
    exp = expected if expected is not None else expected_tokens(scenario, card)
    per_day_total = scenario.traffic.per_day if requests_per_day is None else requests_per_day
    tax = 1.0 + scenario.tax_rate
    rows = []
    for route, e in zip(scenario.routes, exp.to_dict("records")):
        m = float(price_multiplier(card, route.batch))
        hit_p, miss_p, out_p = (
            float(card.cache_hit_price) * m,
            float(card.input_cache_miss) * m,
            float(card.output) * m,
        )
        reqs_day = per_day_total * route.share
        # Paid cache writes (agent routes on the K3 family): a price class of their own, at the retention the
        # route's agent writes with. The column exists only when the scenario has an agent route.
        write_p = miss_p
        if route.agent is not None:
            write_p = float(card.cache_write_price(route.agent.cache_retention)) * m
        items = []
        for comp in INPUT_COMPONENTS:
            cached = e.get(f"{comp}_cached", 0.0)
            items.append((comp, "input_cache_hit", cached, cached * hit_p / 1e6))
            written = e.get(f"{comp}_written")
            if written is not None:
                items.append((comp, "input_cache_write", written, written * write_p / 1e6))
            else:
                written = 0.0
            rest = e[comp] - cached - written
            items.append((comp, "input_cache_miss", rest, rest * miss_p / 1e6))
        items.append(("reasoning", "output", e["reasoning_tokens"], e["reasoning_tokens"] * out_p / 1e6))
        items.append(("output", "output", e["output_tokens"], e["output_tokens"] * out_p / 1e6))
        items.append(
            ("tools", "tool_calls", e["web_search_calls"], e["web_search_calls"] * float(card.web_search_per_call))
        )
        for comp, klass, qty, c in items:
            per_req = c * tax
            row = {
                "route": route.name,
                "component": comp,
                "price_class": klass,
                "tokens_per_request": qty if klass != "tool_calls" else 0.0,
                "calls_per_request": qty if klass == "tool_calls" else 0.0,
                "requests_per_day": reqs_day,
                "cost_per_request": per_req,
                "cost_per_day": per_req * reqs_day,
                "cost_per_month": per_req * reqs_day * DAYS_PER_MONTH,
                "currency": card.currency,
            }
            for cur, rate in scenario.exchange_rate.items():
                row[f"cost_per_month_{cur}"] = row["cost_per_month"] * rate
            rows.append(row)
    return pd.DataFrame(rows)


def cost_summary(cost: pd.DataFrame) -> pd.DataFrame:
    """Per-route totals of an `expected_cost` frame, with an "all routes" row."""
    money = [c for c in cost.columns if c.startswith("cost_per_")]
    per_route = cost.groupby("route", sort=False)[["cost_per_request", *money[1:]]].sum()
    per_route["requests_per_day"] = cost.groupby("route", sort=False)["requests_per_day"].first()
    total = per_route.sum(numeric_only=True)
    total["cost_per_request"] = total["cost_per_day"] / total["requests_per_day"] if total["requests_per_day"] else 0.0
    per_route.loc["all routes"] = total
    out = per_route.reset_index()
    out["currency"] = cost["currency"].iloc[0]
    return out[["route", "requests_per_day", "cost_per_request", *money[1:], "currency"]]
