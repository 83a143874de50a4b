"""What agent runs cost, as distributions: per run, per step and per price class (P50/P90/P99, not only means),
with the cache-write cost where the model has one, and what runs that stop unresolved cost.

Runs come from `kimiplan.workload.agent.draw_agent` (seeded); money is in the card's currency with the
scenario's tax. Exact sums of a given usage are `finance.cost.cost_of_usage`; these are sample statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from kimiplan.catalog.cards import PriceCard
from kimiplan.catalog.resolve import price_card
from kimiplan.errors import ConfigError
from kimiplan.io.formats import CURRENCY_SYMBOLS, ColumnFormat, count, money, number, percent, seconds
from kimiplan.model.agent import STOP_REASONS
from kimiplan.model.scenario import Route, Scenario
from kimiplan.workload.agent import AgentDraw, draw_agent, steps_frame
from kimiplan.workload.draws import route_context

QUANTILES = (0.5, 0.9, 0.99)
AGENT_RUNS = 4000
_SEED = 1313


@dataclass(frozen=True)
class AgentStats:
    """Distributions of one agent route's runs on one card."""

    route: str
    currency: str
    runs: int
    table: pd.DataFrame  # metric, unit, mean, p50, p90, p99
    stops: pd.DataFrame  # stop_reason, share, mean_cost
    draw: AgentDraw

    def to_dict(self) -> dict:
        return {
            "route": self.route,
            "currency": self.currency,
            "runs_sampled": self.runs,
            "distributions": self.table.to_dict("records"),
            "stop_reasons": self.stops.to_dict("records"),
        }

    def __repr__(self) -> str:
        cost = self.table.set_index("metric").loc["cost per run"]
        return (
            f"<AgentStats {self.route}: {self.runs:,} sampled runs, cost per run P50 "
            f"{money(cost['p50'], self.currency)}, P90 {money(cost['p90'], self.currency)}; summary() for the table>"
        )

    def summary(self):
        """The runs at a glance: each distribution in its own unit (money, tokens, steps, seconds, shares), and
        how runs stop with what they cost."""
        from kimiplan.io.tables import SummaryTable

        stats = ("mean", "p50", "p90", "p99")
        rows = []
        for r in self.table.to_dict("records"):
            top = max(abs(float(r[k])) for k in stats)  # one precision per row, so a row's figures line up
            rows.append({"metric": r["metric"], **{k: _in_unit(r[k], r["unit"], self.currency, top) for k in stats}})
        # Cells already carry their unit (a row's unit, not a column's): shown as they are, right-aligned.
        text = {k: ColumnFormat("text", header=k.upper() if k != "mean" else "Mean") for k in stats}
        facts = [("Route", self.route), ("Runs sampled", f"{self.runs:,}"), ("Money", self.currency)]
        notes = ["Sample statistics of seeded runs; exact sums of a given usage come from kp.cost_of_usage."]
        return SummaryTable(
            f"Agent runs: {self.route}",
            facts,
            [("Per run and per step", pd.DataFrame(rows), None), ("How runs stop", self.stops, self.currency)],
            notes,
            overrides=text,
        )

    def _repr_html_(self) -> str:
        return self.summary()._repr_html_()


def _in_unit(v: float, unit: str, currency: str, top: float) -> str:
    if unit == currency or unit in CURRENCY_SYMBOLS:
        return money(v, unit, 4 if top < 1 else 2)
    if unit == "fraction":
        return percent(v)
    if unit == "s":
        return f"{number(v / 3600, 2)} h" if top >= 3600 else seconds(v, 0 if top >= 100 else None)
    return f"{count(v)} {unit}"


def _q(x: np.ndarray) -> dict:
    x = np.asarray(x, dtype=float)
    qs = np.quantile(x, QUANTILES) if x.size else [np.nan] * len(QUANTILES)
    return {
        "mean": float(x.mean()) if x.size else np.nan,
        **{f"p{round(q * 100)}": float(v) for q, v in zip(QUANTILES, qs)},
    }


def run_cost_parts(d: AgentDraw, card: PriceCard, route: Route) -> dict[str, np.ndarray]:
    """Money per run by price class (card currency, before tax)."""
    c = d.columns
    write_p = float(card.cache_write_price(route.agent.cache_retention))
    miss = c["input_tokens"] - c["cached_tokens"] - c["cache_write_tokens"]
    return {
        "input_cache_hit": c["cached_tokens"] * float(card.cache_hit_price) / 1e6,
        "input_cache_write": c["cache_write_tokens"] * write_p / 1e6,
        "input_cache_miss": miss * float(card.input_cache_miss) / 1e6,
        "output": c["completion_tokens"] * float(card.output) / 1e6,
        "tool_calls": c["web_search_calls"] * float(card.web_search_per_call),
    }


def agent_stats(
    scenario: Scenario,
    route: str | Route | None = None,
    catalog=None,
    card: PriceCard | None = None,
    runs: int = AGENT_RUNS,
    seed: int | None = None,
) -> AgentStats:
    """Distributions of the runs of an agent route (the first agent route when `route` is None)."""
    if isinstance(route, str):
        route = scenario.route(route)
    if route is None:
        route = next((r for r in scenario.routes if r.agent is not None), None)
    if route is None or route.agent is None:
        raise ConfigError(f"scenario {scenario.name!r}: no agent route (routes: {[r.name for r in scenario.routes]})")
    if not 10 <= runs <= 1_000_000:
        raise ConfigError(f"runs must be in [10, 1000000], got {runs}")
    card = card or price_card(scenario, catalog)
    rng = np.random.default_rng([scenario.seed if seed is None else seed, _SEED])
    d = draw_agent(route, runs, rng, route_context(scenario, route, card), record_steps=True)
    tax = 1.0 + scenario.tax_rate
    c = d.columns
    parts = run_cost_parts(d, card, route)
    run_cost = sum(parts.values()) * tax
    steps = steps_frame(d)
    cur = card.currency
    rows = [
        {"metric": "cost per run", "unit": cur, **_q(run_cost)},
        {"metric": "cost per step", "unit": cur, **_q(steps["cost"].to_numpy() * tax)},
        *({"metric": f"cost per run: {k}", "unit": cur, **_q(v * tax)} for k, v in parts.items()),
        {"metric": "steps per run", "unit": "steps", **_q(c["steps"])},
        {"metric": "API calls per run", "unit": "calls", **_q(c["api_calls"])},
        {"metric": "input tokens per run", "unit": "tokens", **_q(c["input_tokens"])},
        {"metric": "cached input tokens per run", "unit": "tokens", **_q(c["cached_tokens"])},
        {"metric": "cache-write tokens per run", "unit": "tokens", **_q(c["cache_write_tokens"])},
        {"metric": "completion tokens per run", "unit": "tokens", **_q(c["completion_tokens"])},
        {"metric": "prompt tokens per step", "unit": "tokens", **_q(steps["prompt"])},
        {"metric": "largest prompt of a run", "unit": "tokens", **_q(c["prompt_peak"])},
        {
            "metric": "cached share of input",
            "unit": "fraction",
            **_q(np.divide(c["cached_tokens"], np.maximum(c["input_tokens"], 1))),
        },
        {"metric": "run duration", "unit": "s", **_q(c["latency_s"])},
    ]
    codes = c["stop_reason"]
    stops = pd.DataFrame(
        [
            {
                "stop_reason": name,
                "share": float((codes == i).mean()),
                "mean_cost": float(run_cost[codes == i].mean()) if (codes == i).any() else 0.0,
                "share_of_spend": float(run_cost[codes == i].sum() / max(run_cost.sum(), 1e-300)),
            }
            for i, name in enumerate(STOP_REASONS)
        ]
    )
    return AgentStats(route.name, cur, runs, pd.DataFrame(rows), stops, d)


def agent_routes_stats(scenario: Scenario, catalog=None, card: PriceCard | None = None, runs: int = AGENT_RUNS):
    """`agent_stats` of every agent route of the scenario (empty list when it has none)."""
    card = card or price_card(scenario, catalog)
    return [agent_stats(scenario, r, card=card, runs=runs) for r in scenario.routes if r.agent is not None]
