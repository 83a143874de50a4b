"""Scenario variants side by side, and the drivers of the difference between two of them.

Model IDs differ per provider. They are never guessed: `EQUIVALENT_MODELS` is an explicit, documented table
(from shared/reference/kimi-platform-facts.md), and every mapped ID is checked against the catalog before use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from kimiplan.catalog.cards import Catalog, load_catalog
from kimiplan.catalog.providers import (  # noqa: F401  (re-exported: variants were their first home)
    EQUIVALENT_MODELS,
    canonical_model,
    canonical_model_or_none,
    equivalent_model,
)
from kimiplan.catalog.resolve import price_card
from kimiplan.errors import CatalogError, ConfigError
from kimiplan.finance.forecast import Forecast, forecast
from kimiplan.io.formats import percent
from kimiplan.model.scenario import Scenario

# ---------------------------------------------------------------- building variants


def _map_routes(scenario: Scenario, fn: Callable[[dict], dict], **top: Any) -> Scenario:
    data = scenario.model_dump(mode="python", by_alias=True)
    data["routes"] = [fn(dict(r)) for r in data["routes"]]
    data.update(top)
    return Scenario.model_validate(data)


def provider_variant(
    scenario: Scenario, provider: str, catalog: Catalog | None = None, region: str | None = None
) -> Scenario:
    """The same application on another provider (model ID mapped through EQUIVALENT_MODELS).

    A provider whose card documents no default `max_completion_tokens` gets, on routes that omit it, the budget
    the base scenario resolves to, so both variants generate the same tokens; the description says so."""
    catalog = catalog or load_catalog()
    model = equivalent_model(scenario.model, provider, catalog, region, scenario.as_of)
    base_card = price_card(scenario, catalog)
    new_card = catalog.price(model, provider, region, scenario.as_of)
    filled = []

    def fill(r: dict) -> dict:
        if r.get("max_completion_tokens") is None and new_card.default_max_completion_tokens is None:
            filled.append(r["name"])
            r["max_completion_tokens"] = base_card.default_max_completion_tokens
        return r

    out = _map_routes(scenario, fill, provider=provider, region=region, model=model, tier=None)
    note = f"{provider}/{out.resolved_region} {model}"
    if filled:
        note += (
            f"; max_completion_tokens={base_card.default_max_completion_tokens} assumed on {', '.join(filled)} "
            f"({provider} documents no default)"
        )
    tools = [r.name for r in scenario.routes if r.tools.web_search_calls.mean() > 0]
    if tools and provider != "moonshot":
        # $web_search is Moonshot's builtin tool: the card prices it at 0 elsewhere because it does not exist there.
        note += f"; $web_search on {', '.join(tools)} is Moonshot-only (not available on {provider}, priced 0)"
    return out.with_changes(description=note)


K3_FAMILY = ("kimi-k3", "kimi-k3.1-pro", "kimi-k3.1-pro-highspeed")


def model_variant(scenario: Scenario, model: str, catalog: Catalog | None = None) -> Scenario:
    """The same application on another Moonshot model (the K3 family against K2.6).

    K3-family models always reason, so every route gets thinking on (a route whose reasoning spec is 0 then
    generates none: the description names them). Routes that omit max_completion_tokens keep the budget the base
    resolves to where the new card documents no default. Cache writes: an agent route writes at its own
    retention; at the 5-minute retention a write costs the input price, so the uncached prefix of other routes
    costs the same whether counted as written or missed."""
    catalog = catalog or load_catalog()
    base_card = price_card(scenario, catalog)
    new_card = catalog.price(model, scenario.provider, scenario.region, scenario.as_of)
    always = new_card.reasoning == "always"
    filled, silent = [], []

    def fill(r: dict) -> dict:
        if r.get("max_completion_tokens") is None and new_card.default_max_completion_tokens is None:
            filled.append(r["name"])
            r["max_completion_tokens"] = base_card.default_max_completion_tokens
        if always and not r.get("thinking"):
            r["thinking"] = True
            silent.append(r["name"])
        return r

    out = _map_routes(scenario, fill, model=model)
    note = f"{scenario.provider}/{out.resolved_region} {model}"
    if filled:
        note += f"; max_completion_tokens={base_card.default_max_completion_tokens} assumed on {', '.join(filled)}"
    if silent:
        note += f"; reasoning always on (was off on {', '.join(silent)}: their reasoning spec applies)"
    return out.with_changes(description=note)


def batch_variant(scenario: Scenario, routes: list[str] | None = None) -> Scenario:
    """Routes that can wait sent through the Batch API (default: all routes)."""
    names = {r.name for r in scenario.routes}
    routes = list(names) if routes is None else routes
    unknown = set(routes) - names
    if unknown:
        raise ConfigError(f"batch routes {sorted(unknown)} are not in the scenario; routes: {sorted(names)}")
    out = _map_routes(scenario, lambda r: {**r, "batch": r["batch"] or r["name"] in routes})
    return out.with_changes(description=f"Batch API for {', '.join(sorted(routes))}")


def thinking_variant(scenario: Scenario, on: bool) -> Scenario:
    return scenario.with_route_changes(thinking=on).with_changes(
        description=f"thinking {'on' if on else 'off'} on every route"
    )


def cache_variant(scenario: Scenario, hit_rate: float) -> Scenario:
    if not (0 <= hit_rate <= 1):
        raise ConfigError(f"hit_rate must be in [0, 1], got {hit_rate}")
    out = _map_routes(scenario, lambda r: {**r, "cache": {**r["cache"], "hit_rate": hit_rate}})
    return out.with_changes(
        description=f"the repeated prompt prefix read from cache on {percent(hit_rate, trim=True)} of requests, "
        "on every route (cache hits are billed at the cache-hit input price)"
    )


def cache_variant_label(hit_rate: float) -> str:
    """The variant's name in a comparison: what the rate is a share of, in the project's percent format."""
    return f"prefix cached on {percent(hit_rate, trim=True)} of requests"


def max_tokens_variant(scenario: Scenario, max_completion_tokens: int) -> Scenario:
    if not isinstance(max_completion_tokens, int) or max_completion_tokens <= 0:
        raise ConfigError(f"max_completion_tokens must be a whole number > 0, got {max_completion_tokens!r}")
    out = scenario.with_route_changes(max_completion_tokens=max_completion_tokens)
    return out.with_changes(description=f"max_completion_tokens={max_completion_tokens} on every route")


def standard_variants(
    scenario: Scenario, catalog: Catalog | None = None, k3_family: bool | None = None
) -> dict[str, Scenario]:
    """Base plus the comparisons finance asks for; a variant the catalog cannot price is left out.

    `k3_family`: also K3, K3.1 Pro and K3.1 Pro highspeed for a Moonshot K2.6 scenario (None: when the scenario
    has an agent route, where the choice of model matters most)."""
    catalog = catalog or load_catalog()
    out: dict[str, Scenario] = {"base": scenario.with_changes(description="as given")}
    attempts: list[tuple[str, Callable[[], Scenario]]] = []
    if scenario.provider == "moonshot" and canonical_model_or_none(scenario.model) == "kimi-k2.6":
        attempts.append(
            ("kimi-k2.5", lambda: scenario.with_changes(model="kimi-k2.5", description="kimi-k2.5, same routes"))
        )
        if k3_family or (k3_family is None and any(r.agent is not None for r in scenario.routes)):
            attempts += [(m, lambda m=m: model_variant(scenario, m, catalog)) for m in K3_FAMILY]
    for prov in ("cloudflare", "openrouter", "siliconflow"):
        if prov != scenario.provider:
            attempts.append((prov, lambda p=prov: provider_variant(scenario, p, catalog)))
    if price_card(scenario, catalog).batch_multiplier is not None and not all(r.batch for r in scenario.routes):
        attempts.append(("Batch API (all routes)", lambda: batch_variant(scenario)))
    if any(r.thinking for r in scenario.routes):
        attempts.append(("thinking off", lambda: thinking_variant(scenario, False)))
    attempts.append((cache_variant_label(0.5), lambda: cache_variant(scenario, 0.5)))
    for name, make in attempts:
        try:
            v = make()
            card = price_card(v, catalog)
        except (CatalogError, ConfigError):
            continue
        if card.batch_multiplier is None and any(r.batch for r in v.routes):
            continue  # batch routes where the provider has no Batch API: not a like-for-like comparison
        out[name] = v
    return out


# ---------------------------------------------------------------- running and comparing


def run_variants(
    variants: Mapping[str, Scenario],
    months: int = 12,
    *,
    catalog: Catalog | None = None,
    paths: int = 2000,
    seed: int | None = None,
    currency: str | None = None,
    **kw: Any,
) -> dict[str, Forecast]:
    """One forecast per variant, all in one reporting currency (default: the first variant's card currency;
    exchange rates are read from the first variant, quoted against that currency)."""
    if not variants:
        raise ConfigError("variants is empty: give at least one scenario")
    catalog = catalog or load_catalog()
    first = next(iter(variants.values()))
    base_cur = price_card(first, catalog).currency
    currency = currency or base_cur
    out = {}
    for name, sc in variants.items():
        # Exchange rates come from the first variant so that every variant converts the same way.
        sc = sc.with_changes(exchange_rate=dict(first.exchange_rate))
        out[name] = forecast(
            sc, months, catalog=catalog, paths=paths, seed=seed, currency=currency, fx_base=base_cur, **kw
        )
    return out


class ComparisonTable(pd.DataFrame):
    """What `compare()` returns: a DataFrame, one row per variant, that presents itself (a one-line repr, a
    `summary()` with the columns a reader scans, an HTML view with the report's formats). Anything derived from
    it (a selection, a sort) is a plain DataFrame."""

    @property
    def _constructor(self):
        return pd.DataFrame

    def _head_line(self) -> str:
        from kimiplan.io.formats import money

        cur = self["currency"].iloc[0] if len(self) else None
        best = self.sort_values("expected_total").iloc[0] if len(self) else None
        base = self.iloc[0] if len(self) else None
        if best is None:
            return "no variants"
        return (
            f"{len(self)} variants, {cur}: {base['variant']} {money(base['expected_total'], cur, 0)}; cheapest "
            f"{best['variant']} {money(best['expected_total'], cur, 0)} ({best['vs_first_pct']:+.1f} %)"
        )

    def __repr__(self) -> str:
        return f"<ComparisonTable {self._head_line()}; summary() for the table>"

    def summary(self):
        from kimiplan.io.tables import SummaryTable

        cols = ["variant", "provider", "model", "expected_total", "P10_total", "P90_total", "per_month"]
        cols += ["vs_first_pct", "status", "currency"]
        cur = self["currency"].iloc[0] if len(self) else None
        view = pd.DataFrame(self)[[c for c in cols if c in self.columns]]
        flagged = [f"{r.variant}: {r.status}" for r in self.itertuples() if r.status != "ok"]
        notes = ["Totals are over the horizon; vs first is the change against the first row (the base), in %."]
        return SummaryTable(
            "Variants compared", [("Verdict", self._head_line())], [("Variants", view, cur)], [*notes, *flagged]
        )

    def _repr_html_(self) -> str:
        return self.summary()._repr_html_()


def compare(
    variants: Mapping[str, Scenario] | Mapping[str, Forecast],
    months: int = 12,
    *,
    catalog: Catalog | None = None,
    **kw: Any,
) -> ComparisonTable:
    """One row per variant: horizon total (expected and P10/P90 of the Monte Carlo), difference to the first."""
    fcs = _as_forecasts(variants, months, catalog, **kw)
    rows = []
    for name, fc in fcs.items():
        sc = fc.scenario
        tot = fc.paths.sum(axis=1)
        finite = np.isfinite(tot).all()
        exp_total = float(fc.monthly["expected"].sum())
        worst = (
            "retired (not priced)"
            if (fc.monthly["price_status"] == "retired (not priced)").any()
            else ("reported retired, unconfirmed" if (fc.monthly["price_status"] != "ok").any() else "ok")
        )
        # Moonshot's builtin $web_search does not exist elsewhere: such a row prices those searches at 0.
        searches = [r.name for r in sc.routes if r.tools.web_search_calls.mean() > 0]
        if searches and fc.cards and any(not c.web_search_per_call for c in fc.cards):
            unpriced = f"not like for like: $web_search unpriced on {', '.join(searches)}"
            worst = unpriced if worst == "ok" else f"{worst}; {unpriced}"
        rows.append(
            {
                "variant": name,
                "provider": sc.provider,
                "region": sc.resolved_region,
                "model": sc.model,
                "requests": float(fc.monthly["requests"].sum()),
                "expected_total": exp_total,
                "P10_total": float(np.quantile(tot, 0.1)) if finite else np.nan,
                "P90_total": float(np.quantile(tot, 0.9)) if finite else np.nan,
                "per_month": exp_total / len(fc.months),
                "free_allowance": fc.free_credit,
                "neurons_per_day": fc.neurons_per_day,
                "currency": fc.currency,
                "status": worst,
                "notes": sc.description,
            }
        )
    out = pd.DataFrame(rows)
    base = out["expected_total"].iloc[0]
    out["vs_first"] = out["expected_total"] - base
    out["vs_first_pct"] = out["vs_first"] / base * 100 if base else np.nan
    return ComparisonTable(out)


def compare_monthly(forecasts: Mapping[str, Forecast]) -> pd.DataFrame:
    """Expected spend per month and variant (long), for one chart."""
    frames = []
    for name, fc in forecasts.items():
        f = fc.monthly[["month", "expected", "currency", "status"]].copy()
        f.insert(0, "variant", name)
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def _as_forecasts(variants, months, catalog, **kw) -> dict[str, Forecast]:
    if variants and all(isinstance(v, Forecast) for v in variants.values()):
        return dict(variants)
    return run_variants(variants, months, catalog=catalog, **kw)


# ---------------------------------------------------------------- drivers of a difference

DRIVERS = (
    "volume",
    "cache hits",
    "input size",
    "reasoning tokens",
    "output tokens",
    "tool calls",
    "price (model, provider, batch, tax)",
    "free allowance",
)


def _route_terms(fc: Forecast) -> dict[str, tuple[float, np.ndarray, np.ndarray]]:
    """Per route: requests over the horizon, mean quantities per request, volume-weighted unit prices."""
    total = float(fc.monthly["requests"].sum())
    return {
        name: (total * float(fc.units.shares[r]), fc.units.mean[r], fc.avg_prices[r])
        for r, name in enumerate(fc.units.routes)
    }


def waterfall(
    base: Scenario | Forecast,
    other: Scenario | Forecast,
    months: int = 12,
    *,
    catalog: Catalog | None = None,
    **kw: Any,
) -> pd.DataFrame:
    """The change of expected spend over the horizon from `base` to `other`, split into drivers that add up
    exactly: volume first (at base tokens and prices), then tokens per request at base prices (cache share,
    input size, reasoning, output, tool calls), then prices at the new quantities, then free allowances."""
    if isinstance(base, Forecast) and isinstance(other, Forecast):
        fa, fb = base, other
    else:
        fcs = run_variants(
            {"base": base, "other": other}, months, catalog=catalog, paths=1, daily_cv=0.0, growth_sd=0.0, **kw
        )
        fa, fb = fcs["base"], fcs["other"]
    if fa.currency != fb.currency:
        raise ConfigError(f"both forecasts need one currency, got {fa.currency} and {fb.currency}")
    ta, tb = _route_terms(fa), _route_terms(fb)
    for label, fc in (("base", fa), ("other", fb)):
        if not np.isfinite(fc.avg_prices).all():
            raise ConfigError(
                f"the {label} variant has unpriced (retired-model) days in the horizon: {fc.warnings[:1]}"
            )
    d = dict.fromkeys(DRIVERS, 0.0)
    for name in dict.fromkeys([*ta, *tb]):
        va, qa, pa = ta.get(name, (0.0, *tb[name][1:]))
        vb, qb, pb = tb.get(name, (0.0, *ta[name][1:]))
        d["volume"] += (vb - va) * float(qa @ pa)
        ia, ib = qa[0] + qa[1], qb[0] + qb[1]
        ha = qa[0] / ia if ia else 0.0
        hb = qb[0] / ib if ib else 0.0
        d["cache hits"] += vb * ib * (hb - ha) * (pa[0] - pa[1])
        d["input size"] += vb * (ib - ia) * (ha * pa[0] + (1 - ha) * pa[1])
        d["reasoning tokens"] += vb * (qb[2] - qa[2]) * pa[2]
        d["output tokens"] += vb * (qb[3] - qa[3]) * pa[3]
        d["tool calls"] += vb * (qb[4] - qa[4]) * pa[4]
        d["price (model, provider, batch, tax)"] += vb * float(qb @ (pb - pa))
    d["free allowance"] = fa.free_credit - fb.free_credit
    total_a = float(fa.monthly["expected"].sum())
    total_b = float(fb.monthly["expected"].sum())
    rows = [{"step": "base", "amount": total_a, "measure": "absolute"}]
    rows += [{"step": k, "amount": v, "measure": "relative"} for k, v in d.items()]
    rows.append({"step": "other", "amount": total_b, "measure": "total"})
    out = pd.DataFrame(rows)
    out["currency"] = fa.currency
    return out
