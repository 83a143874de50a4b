"""A forecast in the shape of the FOCUS 1.3 Cost and Usage dataset (FinOps Open Cost and Usage Specification).

One row per route x meter (input cache hit, input cache miss, input cache write, output, `$web_search`) x month
x quantile of the forecast. Token meters: `ConsumedQuantity` in Tokens, `PricingQuantity` in "1000000 Tokens" at
the card's list price per million; `$web_search`: calls ("Requests") at the per-call price. A forecast is not a
bill: costs are list prices before tax (FOCUS carries tax as separate Tax charges; none are written), there is no
invoice, and `x_Forecast` is true on every row. What FOCUS lacks is in `x_` columns: `x_Scenario`, `x_Route`,
`x_Quantile` (P10, P50, P90 ...), `x_Model`, `x_TokenClass`, `x_Card`, and `x_BandParameterRelSE`: the relative
standard error of the route's mean cost per request that its quantile rows include (the calibration's sampling
uncertainty, `Forecast.parameter_note`; empty when the bands carry none).

A quantile row scales the month's expected meter mix of the route by the route's quantile of monthly cost over
its expected cost (the meters of a route move together), so that the meters of a route sum to its quantile.
Quantiles do not add across routes: the total's quantile is `Forecast.monthly`.
"""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd

from kimiplan.errors import ConfigError

FOCUS_VERSION = "1.3"

#: price class of the forecast -> (SkuMeter, ConsumedUnit, PricingUnit, per how many consumed units a price is)
METERS = {
    "input_cache_hit": ("Input tokens, cache hit", "Tokens", "1000000 Tokens", 1_000_000),
    "input_cache_miss": ("Input tokens, cache miss", "Tokens", "1000000 Tokens", 1_000_000),
    "input_cache_write": ("Input tokens, cache write", "Tokens", "1000000 Tokens", 1_000_000),
    "output": ("Output tokens", "Tokens", "1000000 Tokens", 1_000_000),
    "tool_calls": ("$web_search calls", "Requests", "Requests", 1),
}
#: provider in the catalog -> the company's name (ServiceProviderName, InvoiceIssuerName)
PROVIDER_NAMES = {
    "moonshot": "Moonshot AI",
    "cloudflare": "Cloudflare",
    "fireworks": "Fireworks AI",
    "openrouter": "OpenRouter",
    "siliconflow": "SiliconFlow",
}

#: the columns written, in order: FOCUS columns (alphabetical, as the specification lists them), then x_ ones
FOCUS_COLUMNS = (
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "CommitmentDiscountId",
    "CommitmentDiscountStatus",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "ContractedUnitPrice",
    "EffectiveCost",
    "HostProviderName",
    "InvoiceId",
    "InvoiceIssuerName",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingCurrency",
    "PricingCurrencyContractedUnitPrice",
    "PricingCurrencyEffectiveCost",
    "PricingCurrencyListUnitPrice",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "ServiceCategory",
    "ServiceName",
    "ServiceProviderName",
    "ServiceSubcategory",
    "SkuId",
    "SkuMeter",
    "SkuPriceDetails",
    "SkuPriceId",
)
#: FOCUS string columns that are null on every row of a forecast: no correction (ChargeClass), no commitment
#: discount (Kimi APIs sell none; the columns are there because the 1.2 rules for ConsumedQuantity read
#: CommitmentDiscountStatus), and no invoice (InvoiceId, RECOMMENDED, MUST be null for a charge without one).
NULL_COLUMNS = ("ChargeClass", "CommitmentDiscountId", "CommitmentDiscountStatus", "InvoiceId")
#: focus-validator's applicability criteria a forecast of a Kimi API declares: billing accounts with names,
#: public list prices, measured usage and unit prices, and a billing currency that may differ from the card's;
#: and the two under which alone the validator judges columns the forecast writes (ContractedUnitPrice,
#: PricingCategory), although a list-price forecast has no negotiated price and one pricing category.
#: Not declared (a Kimi API has none of them): availability zones, capacity reservations, commitment discounts,
#: several account types, sub-accounts, regions as FOCUS means them, resource types, provisioned resources,
#: virtual currencies, tags.
VALIDATOR_CRITERIA = (
    "ACCOUNT_NAMING_SUPPORTED",
    "PUBLIC_PRICE_LIST_SUPPORTED",
    "USAGE_MEASUREMENT_SUPPORTED",
    "UNIT_PRICING_SUPPORTED",
    "PRICING_BILLING_CURRENCY_DIFFERENCES_SUPPORTED",
    "NEGOTIATED_PRICING_SUPPORTED",
    "MULTIPLE_PRICING_CATEGORIES_SUPPORTED",
)
X_COLUMNS = (
    "x_Scenario",
    "x_Route",
    "x_Quantile",
    "x_Forecast",
    "x_Model",
    "x_TokenClass",
    "x_Card",
    "x_BandParameterRelSE",
)


def _iso(d: dt.date) -> str:
    return f"{d.isoformat()}T00:00:00Z"


def _month_bounds(month: str) -> tuple[dt.date, dt.date]:
    y, m = (int(x) for x in month.split("-"))
    start = dt.date(y, m, 1)
    return start, dt.date(y + (m == 12), m % 12 + 1, 1)


def focus_frame(fc, *, billing_account: str | None = None) -> pd.DataFrame:
    """The forecast `fc` (`kimiplan.finance.forecast.Forecast`) as FOCUS 1.3 Cost and Usage rows."""
    sc = fc.scenario
    tax = 1.0 + float(sc.tax_rate)
    e = fc.expected
    e = e[e["price_class"].isin(list(METERS))]
    if e.empty:
        raise ConfigError(f"forecast of {sc.name!r}: no priced month to write in FOCUS shape")
    batch = {r.name: r.batch for r in sc.routes}
    # Expected quantities and cost (tax excluded) per month, price segment (a price change mid-month starts a
    # new one: its own charge period and SKU price), route and meter.
    keys = ["month", "segment_start", "route", "price_class", "card"]
    g = e.groupby(keys, sort=True)[["tokens", "calls", "cost"]].sum().reset_index()
    g["cost"] = g["cost"] / tax
    expected_route = g.groupby(["month", "route"])["cost"].sum()
    br = fc.by_route.set_index(["month", "route"])
    starts = sorted(set(g["segment_start"]))
    seg_end = {}
    for m, grp in g.groupby("month"):
        ss = sorted(set(grp["segment_start"]))
        for a, b in zip(ss, [*ss[1:], _month_bounds(m)[1]]):
            seg_end[a] = b
    web = g[g["price_class"] == "tool_calls"].groupby("segment_start")[["calls", "cost"]].sum()
    seg_card = {d: _card_on(fc, d, web.loc[d] if d in web.index else None, tax) for d in starts}
    account = billing_account or f"kimiplan-forecast:{sc.name}"
    # The relative standard error of a route's mean cost per request its quantile rows carry (the calibration's
    # sampling uncertainty; empty where the bands have none).
    param = fc.settings.get("parameter_uncertainty") or {}
    rows = []
    for q in fc.quantile_columns():
        for r in g.itertuples(index=False):
            card = seg_card[r.segment_start]
            exp_route = float(expected_route.loc[(r.month, r.route)])
            q_route = float(br.loc[(r.month, r.route), q]) / tax
            scale = q_route / exp_route if exp_route > 0 else 0.0
            meter, consumed_unit, pricing_unit, per = METERS[r.price_class]
            qty = (r.calls if r.price_class == "tool_calls" else r.tokens) * scale
            cost = float(r.cost) * scale
            pricing_qty = qty / per
            unit_price = cost / pricing_qty if pricing_qty > 0 else _card_price(card, r.price_class, batch[r.route])
            card_price = _card_price(card, r.price_class, batch[r.route])
            fx = unit_price / card_price if card_price > 0 and pricing_qty > 0 else 1.0
            start, end = _month_bounds(r.month)
            c_start, c_end = r.segment_start, seg_end[r.segment_start]
            provider = PROVIDER_NAMES.get(card.provider, card.provider)
            sku = f"{card.provider}/{card.region}/{card.model}/{r.price_class}" + ("/batch" if batch[r.route] else "")
            rows.append(
                {
                    "BilledCost": cost,
                    "BillingAccountId": account,
                    "BillingAccountName": sc.name,
                    "BillingCurrency": fc.currency,
                    "BillingPeriodEnd": _iso(end),
                    "BillingPeriodStart": _iso(start),
                    "ChargeCategory": "Usage",
                    "ChargeDescription": f"{card.model} {meter.lower()} for route {r.route}: forecast {q}"
                    + (" (Batch API)" if batch[r.route] else ""),
                    "ChargeFrequency": "Usage-Based",
                    "ChargePeriodEnd": _iso(c_end),
                    "ChargePeriodStart": _iso(c_start),
                    "ConsumedQuantity": qty,
                    "ConsumedUnit": consumed_unit,
                    "ContractedCost": cost,
                    "ContractedUnitPrice": unit_price,
                    "EffectiveCost": cost,
                    "HostProviderName": provider,
                    "InvoiceIssuerName": provider,
                    "ListCost": cost,
                    "ListUnitPrice": unit_price,
                    "PricingCategory": "Standard",
                    "PricingCurrency": card.currency,
                    "PricingCurrencyContractedUnitPrice": card_price,
                    "PricingCurrencyEffectiveCost": cost / fx if fx else cost,
                    "PricingCurrencyListUnitPrice": card_price,
                    "PricingQuantity": pricing_qty,
                    "PricingUnit": pricing_unit,
                    "ProviderName": provider,
                    "PublisherName": provider,
                    "ServiceCategory": "AI and Machine Learning",
                    "ServiceName": f"{provider} API",
                    "ServiceProviderName": provider,
                    "ServiceSubcategory": "Generative AI",
                    "SkuId": sku,
                    "SkuMeter": meter,
                    "SkuPriceDetails": json.dumps(
                        {"x_Model": card.model, "x_TokenClass": r.price_class, "x_Batch": bool(batch[r.route])},
                        separators=(",", ":"),
                    ),
                    "SkuPriceId": f"{sku}@{card.effective_from or 'always'}"
                    + (f":{card.web_search_per_call}/call" if r.price_class == "tool_calls" else ""),
                    "x_Scenario": sc.name,
                    "x_Route": r.route,
                    "x_Quantile": q,
                    "x_Forecast": True,
                    "x_Model": card.model,
                    "x_TokenClass": r.price_class,
                    "x_Card": f"{r.card} (source: {card.source}; verified {card.verified_on})",
                    "x_BandParameterRelSE": param.get(r.route) or None,
                }
            )
    out = pd.DataFrame(rows, columns=[*FOCUS_COLUMNS, *X_COLUMNS])
    for c in NULL_COLUMNS:  # typed, so that Parquet stores a string column of nulls rather than a null column
        out[c] = pd.Series(pd.NA, index=out.index, dtype="string")
    return out


def _card_on(fc, day: dt.date, web, tax: float):
    """The forecast's price card in force on `day`. Cards that differ only in the dated `$web_search` fee are told
    apart by the segment's expected fee per call."""
    live = [c for c in fc.cards if c is not None and c.in_force(day)]
    if not live:
        raise ConfigError(f"forecast of {fc.scenario.name!r}: no price card in force on {day}")
    if len(live) > 1 and web is not None and float(web["calls"]) > 0:
        per_call = float(web["cost"]) / float(web["calls"])
        live.sort(key=lambda c: abs(float(c.web_search_per_call) - per_call))
    return live[0]


def _card_price(card, price_class: str, batch: bool) -> float:
    """The card's list price for a meter, in the card's currency: per 1M tokens, or per call."""
    m = float(card.batch_multiplier) if batch and card.batch_multiplier is not None else 1.0
    if price_class == "tool_calls":
        return float(card.web_search_per_call)
    price = {
        "input_cache_hit": card.cache_hit_price,
        "input_cache_miss": card.input_cache_miss,
        "input_cache_write": card.cache_write_price("5m"),
        "output": card.output,
    }[price_class]
    return float(price) * m


def usage_from_focus(df: pd.DataFrame, origin: str = "FOCUS file") -> pd.DataFrame:
    """Actuals in FOCUS shape (a provider's or gateway's export, or this module's rows) as the backtest's
    daily usage log: per day and route, tokens by class and `$web_search` calls. The route is `x_Route`, else
    the `route` tag, else "default"; the token class is `x_TokenClass`, else read from `SkuMeter`. Requests are
    not in FOCUS: each row counts `x_Requests` when present; without it `requests_known` is false and the
    backtest estimates them from the scenario."""
    need = {"ChargePeriodStart", "ConsumedQuantity"}
    missing = sorted(need - set(df.columns))
    if missing:
        raise ConfigError(f"{origin}: FOCUS columns {missing} are missing")
    if "x_Forecast" in df.columns and df["x_Forecast"].astype(str).str.lower().eq("true").any():
        raise ConfigError(f"{origin}: these rows are a forecast (x_Forecast = true), not actuals")
    d = df[df.get("ChargeCategory", pd.Series("Usage", index=df.index)).fillna("Usage") == "Usage"].copy()
    if "x_TokenClass" in d:
        klass = d["x_TokenClass"]
    elif "SkuMeter" in d:
        inverse = {v[0].lower(): k for k, v in METERS.items()}
        klass = d["SkuMeter"].astype(str).str.lower().map(inverse)
    else:
        raise ConfigError(f"{origin}: neither x_TokenClass nor SkuMeter says which token class a row is")
    unknown = d.loc[klass.isna(), "SkuMeter"] if "SkuMeter" in d else pd.Series([], dtype=str)
    if len(unknown):
        raise ConfigError(
            f"{origin}: SkuMeter {unknown.iloc[0]!r} (row {unknown.index[0] + 1}) is not a Kimi token class; "
            f"known: {', '.join(v[0] for v in METERS.values())}"
        )
    d["klass"] = klass
    if "x_Route" in d:
        d["route"] = d["x_Route"].fillna("default")
    elif "Tags" in d:
        d["route"] = d["Tags"].map(
            lambda t: (json.loads(t) if isinstance(t, str) and t else {}).get("route", "default")
        )
    else:
        d["route"] = "default"
    d["date"] = pd.to_datetime(d["ChargePeriodStart"], utc=True).dt.date
    qty = pd.to_numeric(d["ConsumedQuantity"], errors="coerce")
    if qty.isna().any() or (qty < 0).any():
        bad = d.index[qty.isna() | (qty < 0)][0]
        raise ConfigError(f"{origin}: row {bad + 1}: ConsumedQuantity {d.loc[bad, 'ConsumedQuantity']!r}")
    d["qty"] = qty.round().astype("int64")
    known = "x_Requests" in d
    d["requests"] = pd.to_numeric(d["x_Requests"], errors="coerce").fillna(0) if known else 0
    p = d.pivot_table(index=["date", "route"], columns="klass", values="qty", aggfunc="sum", fill_value=0)
    for k in METERS:
        if k not in p:
            p[k] = 0
    req = d.groupby(["date", "route"])["requests"].sum()
    out = pd.DataFrame(
        {
            "requests": req.reindex(p.index).fillna(0).astype("int64"),
            "prompt_tokens": p["input_cache_hit"] + p["input_cache_miss"] + p["input_cache_write"],
            "cached_tokens": p["input_cache_hit"],
            "completion_tokens": p["output"],
            "web_search_calls": p["tool_calls"],
        }
    ).reset_index()
    out["source"] = f"{origin} (FOCUS)"
    out["requests_known"] = known  # FOCUS has no request count unless a generator adds x_Requests
    return out
