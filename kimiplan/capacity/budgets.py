"""max_completion_tokens per route: truncation against the TPM the budget reserves.

A budget b truncates a request when reasoning + output it wants exceeds b (`finish_reason=length`); reasoning
comes first and shares the budget. Kimi counts input + b against TPM/TPD whatever is generated, so a large
budget (or the 32,768 default when it is omitted) reserves TPM that is never used, once per API call: a
request with tool rounds (`$web_search`, function tools) reserves it in every round (`demand.route_reservation`,
the same figure the demand table counts). The truncation probability
P(reasoning + output > b) is estimated from fixed-seed draws of the route's specs (sums of arbitrary specs
have no closed form); the reserved TPM at a budget is exact given the mean input.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from kimiplan.capacity.demand import peak_factors, route_moments, route_reservation
from kimiplan.catalog.admission import K26_DEFAULT_MAX_COMPLETION
from kimiplan.catalog.resolve import price_card, rate_tier
from kimiplan.errors import ConfigError

SAMPLES = 200_000
_SEED = 20260422
ROUND_TO = 256  # budgets are recommended in multiples of 256 tokens


def completion_demand(route, n: int = SAMPLES, seed: int = _SEED) -> np.ndarray:
    """Untruncated completion tokens a route's requests want: reasoning (if thinking) + visible output."""
    rng = np.random.default_rng(seed)
    want = np.rint(np.maximum(route.output.sample(rng, n), 0))
    if route.thinking:
        want = want + np.rint(np.maximum(route.reasoning.sample(rng, n), 0))
    return want


def truncation_probability(demand: np.ndarray, budgets) -> np.ndarray:
    """P(demand > b) for each budget b (from the sorted sample)."""
    s = np.sort(demand)
    b = np.asarray(budgets, dtype=float)
    return 1.0 - np.searchsorted(s, b, side="right") / s.size


def _context(scenario, catalog, moments: pd.DataFrame | None = None, peaks: dict | None = None):

    card = price_card(scenario, catalog)
    default = card.default_max_completion_tokens or K26_DEFAULT_MAX_COMPLETION
    moments = route_moments(scenario, catalog) if moments is None else moments
    peaks = peak_factors(scenario) if peaks is None else peaks
    return card, default, moments, peaks


def budget_curve(
    scenario,
    route_name: str,
    catalog=None,
    budgets=None,
    samples: int = SAMPLES,
    moments: pd.DataFrame | None = None,
    peaks: dict | None = None,
) -> pd.DataFrame:
    """Trade-off table for one route: budget, truncation probability, reserved tokens per request, the
    route's mean and peak-minute TPM, and the TPM freed against the model default.

    `moments` / `peaks`: the scenario's `plan.route_moments` and `plan.peak_factors` when the caller already
    has them (computed here otherwise)."""
    route = scenario.route(route_name)
    card, default, moments, peaks = _context(scenario, catalog, moments, peaks)
    m = moments.set_index("route").loc[route_name]
    demand = completion_demand(route, samples)
    if budgets is None:
        hi = max(default, float(np.quantile(demand, 0.9999)))
        budgets = np.unique(np.round(np.geomspace(64, hi, 60)))
    budgets = np.asarray(budgets, dtype=float)
    if np.any(budgets <= 0):
        raise ConfigError("budgets: every max_completion_tokens must be > 0")
    rps = scenario.traffic.mean_rps * m["share"]  # requests (for an agent route: calls) per second, as demand counts
    reserved = route_reservation(m, budgets)
    out = pd.DataFrame(
        {
            "route": route_name,
            "max_completion_tokens": budgets.astype(int),
            "truncation_probability": truncation_probability(demand, budgets),
            "reserved_per_request": reserved,
            "tpm_mean": 60 * rps * reserved,
            "tpm_peak_minute": 60 * rps * peaks["peak_minute"] * reserved,
        }
    )
    out["tpm_freed_vs_default"] = 60 * rps * peaks["peak_minute"] * (route_reservation(m, default) - reserved)
    out["exceeds_context"] = m["input_mean"] + budgets > card.context_window
    return out


def _round_up(x: float) -> int:
    return int(max(ROUND_TO, math.ceil(x / ROUND_TO) * ROUND_TO))


def recommend_budgets(
    scenario,
    catalog=None,
    target_truncation: float = 0.01,
    samples: int = SAMPLES,
    moments: pd.DataFrame | None = None,
    peaks: dict | None = None,
) -> pd.DataFrame:
    """Per route: the smallest budget (a multiple of 256) whose truncation rate is <= target, with the
    current budget, truncation at both, and the peak-minute TPM freed against the current and default budget.

    `moments` / `peaks`: as for `budget_curve`."""
    if not 0 < target_truncation < 1:
        raise ConfigError(f"target_truncation must be in (0, 1), got {target_truncation}")
    context = _context(scenario, catalog, moments, peaks)
    return _recommend(scenario, context, target_truncation, [completion_demand(r, samples) for r in scenario.routes])


def _recommend(scenario, context, target_truncation: float, demands: list[np.ndarray]) -> pd.DataFrame:
    """`recommend_budgets` given its context and each route's `completion_demand` sample."""
    card, default, moments, peaks = context
    rows = []
    for route, demand in zip(scenario.routes, demands):
        m = moments.set_index("route").loc[route.name]
        rec = _round_up(np.quantile(demand, 1 - target_truncation))
        # Keep room for a long prompt: budget + p99 input must fit the context window.
        cap = card.context_window - m["input_p99"]
        rec = min(rec, int(cap // ROUND_TO * ROUND_TO))
        current = route.max_completion_tokens or default
        rps = scenario.traffic.mean_rps * m["share"] * peaks["peak_minute"]  # an agent route: its calls
        t_cur, t_rec, t_def = truncation_probability(demand, [current, rec, default])
        rows.append(
            {
                "route": route.name,
                "current_budget": current,
                "recommended_budget": rec,
                "target_truncation": target_truncation,
                "truncation_current": t_cur,
                "truncation_recommended": t_rec,
                "truncation_default": t_def,
                "demand_p50": float(np.quantile(demand, 0.5)),
                "demand_p99": float(np.quantile(demand, 0.99)),
                "tpm_peak_current": 60 * rps * route_reservation(m, current),
                "tpm_peak_recommended": 60 * rps * route_reservation(m, rec),
                "tpm_freed_vs_current": 60 * rps * (route_reservation(m, current) - route_reservation(m, rec)),
                "tpm_freed_vs_default": 60 * rps * (route_reservation(m, default) - route_reservation(m, rec)),
            }
        )
    return pd.DataFrame(rows)


def budgets_for_tier(
    scenario,
    catalog=None,
    tier=None,
    target_refusal: float = 0.001,
    truncation_grid=(1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3),
    samples: int = SAMPLES,
) -> pd.DataFrame:
    """The lowest truncation rate (from `truncation_grid`) whose budgets keep the tier's TPM and TPD refusal
    under `target_refusal`; returns that recommendation table with the refusal it gives."""
    from kimiplan.capacity.verdict import demand_table, refusal_summary

    tier = tier if tier is not None else rate_tier(scenario, catalog)
    if tier is None:
        raise ConfigError(f"scenario {scenario.name!r}: field tier is not set")
    # Drawn once for the whole grid: the demand samples, moments and peak factors do not depend on the
    # truncation target (peak factors depend on the traffic only, which the budgets do not change).
    context = demands = None
    token_refusal: dict = {}  # per set of budgets (grid points often round to the same budgets)
    last = None
    for p in sorted(truncation_grid):
        if not 0 < p < 1:
            raise ConfigError(f"target_truncation must be in (0, 1), got {p}")
        if context is None:
            context = _context(scenario, catalog)
            demands = [completion_demand(r, samples) for r in scenario.routes]
        rec = _recommend(scenario, context, p, demands)
        budgets = dict(zip(rec["route"], rec["recommended_budget"]))
        key = tuple(int(budgets[r.name]) for r in scenario.routes)
        if key not in token_refusal:
            data = scenario.model_dump(mode="python", by_alias=True)
            for r in data["routes"]:
                r["max_completion_tokens"] = int(budgets[r["name"]])
            s = refusal_summary(demand_table(type(scenario).model_validate(data), catalog, tier, peaks=context[3]))
            token_refusal[key] = 1 - (1 - s["refusal_by_limit"]["tpm"]) * (1 - s["refusal_by_limit"]["tpd"])
        tok = token_refusal[key]
        rec["token_refusal"] = tok
        rec["tier"] = tier.name
        last = rec
        if tok <= target_refusal:
            rec["holds"] = True
            return rec
    last["holds"] = False  # even the loosest truncation rate on the grid does not fit the tier
    return last
