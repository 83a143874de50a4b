"""`CapacityPlan`: what `plan()` returns, and the one place its sentences are written.

The CLI (`kimiplan plan`), the report's capacity section and notebooks all explain a plan with
`CapacityPlan.describe()`; `to_dict()` is the `--json` output; `_repr_html_` renders the verdict and the
tier tables side by side in a notebook.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from dataclasses import dataclass, field, fields

import pandas as pd

from kimiplan.io.formats import money, percent, seconds

NEAR_LIMIT = 0.8  # `near_limit` above 80 % of a limit at the busiest minute


def _pct(x: float | None) -> str:
    """A share a person reads (kimiplan.io.formats: sensible precision, "< 0.001 %" for a tiny one)."""
    return "n/a" if x is None else percent(x)


def client_effect_sentence(ce: dict) -> str:
    """A retrying client's effect (`CapacityPlan.client_effect`) in words; for the OpenAI SDK, the share of
    requests that raise RateLimitError in the application."""
    if ce.get("client") == "openai-sdk":
        retries = "default retries" if ce["max_retries"] == 2 else f"{ce['max_retries']} retries"
        worst = ""
        by = ce.get("failed_by_route") or {}
        if len(by) > 1 and max(by.values()) > 0:
            name = max(by, key=by.get)
            worst = f" Route {name} fails most: {_pct(by[name])} of its requests."
        return (
            f"With the OpenAI SDK's {retries}, {_pct(ce['failed'])} of requests fail at the busiest minute: they "
            f"raise RateLimitError in the application after {_pct(ce['attempt_refusal'])} of attempts are refused, "
            f"{ce['attempts_per_request']:.2f} attempts per request ({ce['method']}).{worst}"
        )
    return (
        f"With the scenario's client retrying up to {ce['max_retries']} times, at the busiest minute "
        f"{_pct(ce['attempt_refusal'])} of attempts are refused and {_pct(ce['failed'])} of requests fail "
        f"for good, {ce['attempts_per_request']:.2f} attempts per request ({ce['method']})."
    )


def _money(amount: float | None, currency: str | None) -> str:
    return "no recharge listed" if amount is None else money(amount, currency, decimals=0)


def _month(d) -> str:
    return f"{d:%Y-%m}" if isinstance(d, dt.date) else "never"


def _table_label(t: dict) -> str:
    src = "official" if t["official"] else "third-party quotes, not official"
    if t["effective_to"] is not None:
        span = f"in force until {t['effective_to']}"
    elif t["effective_from"] is not None:
        span = f"in force since {t['effective_from']}"
    else:
        span = "no dates"
    return f"table {t['version']} ({src}; {span})"


# The verdict under one tier table, as the CLI and a notebook show it.
TIER_TABLE_COLUMNS = (
    "version",
    "official",
    "headline",
    "smallest_tier",
    "tier",
    "refusal_total",
    "binding_limit",
    "headroom",
    "exhausted_on",
)


@dataclass(frozen=True)
class CapacityPlan:
    """A capacity verdict for one scenario: demand per limit, refusals, binding limit, tier ladder, smallest
    tier, growth exhaustion, upgrade path and the verdict under every recent tier table.

    Fields with no tier set (`tier` None) stay None. `moments` is the per-route input of the plan (pass it
    back to `plan(..., moments=)` to reuse it); it is left out of `to_dict()`."""

    scenario: str
    target: float
    percentile: float
    tier: str | None
    demand: pd.DataFrame
    ladder: pd.DataFrame
    smallest_tier: str | None
    assumptions: dict
    by_tier_table: list = field(default_factory=list)
    upgrade: dict | None = None
    refusal_by_limit: dict | None = None
    refusal_total: float | None = None
    refusal_se: dict | None = None
    refusal_attributed: dict | None = None  # charged to the first limit broken, as the simulator counts
    client_effect: dict | None = None  # a retrying client: attempts refused and requests failed (simulated)
    binding_limit: str | None = None
    week_average: dict | None = None
    pacing_wait: dict | None = None
    never_fits: dict | None = None
    max_scale: float | None = None
    max_requests_per_second: float | None = None
    exhaustion: dict | None = None
    near_scale: float | None = None
    moments: pd.DataFrame | None = field(default=None, repr=False)
    table_ladders: dict = field(default_factory=dict, repr=False)  # version -> that table's tier ladder

    # -- dict-style access, for callers written against the dict `plan()` used to return
    def __getitem__(self, key: str):
        if key not in {f.name for f in fields(self)}:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default=None):
        v = getattr(self, key, None)
        return default if v is None else v

    def __contains__(self, key: str) -> bool:
        return getattr(self, key, None) is not None

    # -- derived
    @property
    def unbounded(self) -> bool:
        """No enforced limit can ever be reached by this traffic mix (a growth multiple without bound)."""
        return self.max_scale is not None and math.isinf(self.max_scale)

    @property
    def tier_tables(self) -> pd.DataFrame:
        """`by_tier_table` as a frame, one row per table version."""
        return pd.DataFrame(self.by_tier_table)

    def capacity_status(self, scale: float) -> str | None:
        """`ok`, `near_limit` (the busiest minute above 80 % of a limit) or `over_capacity` (refusals above
        the target) for traffic at `scale` x today's; None without a tier."""
        if self.tier is None or self.max_scale is None:
            return None
        if scale > self.max_scale:
            return "over_capacity"
        if self.near_scale is not None and scale > self.near_scale:
            return "near_limit"
        return "ok"

    def to_dict(self) -> dict:
        """The `plan --json` document (tables as lists of records through the CLI's JSON writer)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("moments", "table_ladders")}
        if self.max_scale is not None and math.isinf(self.max_scale):
            # JSON has no infinity: null, and `unbounded` says why.
            out["max_scale"] = None
            out["max_requests_per_second"] = None
        out["unbounded"] = self.unbounded
        return out

    # -- sentences
    def headline_table(self) -> dict | None:
        return next((t for t in self.by_tier_table if t.get("headline")), None)

    def describe(self) -> str:
        """The plan in plain sentences, one per line (used by the CLI and the report)."""
        a = self.assumptions
        lines = []
        table = a.get("tier_table")
        where = ""
        if table is not None:
            where = f" ({_table_label({**table})}; {table['why']})"
        lines.append(
            f"Scenario {self.scenario}: tier {self.tier or '(none set)'}{where}; target refusals under "
            f"{_pct(self.target)} at the busiest minute; {a['window']} RPM/TPM window, client {a['client']}."
        )
        if self.tier is not None:
            se = (self.refusal_se or {}).get(self.binding_limit or "", 0.0)
            pm = f"; ± {_pct(se)} from sampled latencies" if se and se >= 5e-6 else ""
            lines.append(
                f"At the busiest minute {self.tier} refuses {_pct(self.refusal_total)} of requests "
                f"({_pct(self.week_average['refusal_total'])} averaged over a week{pm}); binding limit: "
                f"{self.binding_limit or 'none'}."
            )
            if self.never_fits:
                parts = ", ".join(
                    f"{v:.2%} exceed the {k.upper()} limit on their own" for k, v in self.never_fits.items()
                )
                lines.append(f"Some requests can never be admitted, whatever the traffic: {parts}.")
            ex = self.exhaustion or {}
            if self.unbounded:
                lines.append(
                    "It sustains any traffic: no online request reaches a limit (Batch API routes do not count)."
                )
            elif self.max_scale == 0:
                lines.append("These limits cannot hold this traffic at any volume within the target.")
            else:
                when = (
                    "already over the target"
                    if ex.get("months") == 0
                    else f"exhausted in {_month(ex['date'])} (month {ex['months']})"
                    if ex.get("date")
                    else "not exhausted within 3 years"
                    if ex.get("months")
                    else "never exhausted (no growth)"
                )
                lines.append(
                    f"It sustains {self.max_scale:.2f}x today's traffic ({self.max_requests_per_second:.3g} "
                    f"requests/s on average); with growth of {percent(ex.get('growth', 0), trim=True)} a month "
                    f"it is {when}."
                )
        up = self.upgrade
        if up is not None:
            if up["to"] is None:
                lines.append(
                    f"No tier above {up['from']} raises its binding limit ({up['binding_limit']}); "
                    "ask the provider for a custom limit or reduce the demand on it."
                )
            else:
                skipped = (
                    f"; {', '.join(up['skipped'])} raise{'s' if len(up['skipped']) == 1 else ''} only other limits"
                    if up["skipped"]
                    else ""
                )
                m = up["move_in_months"]
                by = "now" if m == 0 else _month(up["move_by"]) if up["move_by"] else "no date within 3 years"
                lines.append(
                    f"Upgrade path: {up['to']} ({up['binding_limit']} {_num(up['limit_to'])} instead of "
                    f"{_num(up['limit_from'])}{skipped}), needed by {by}; it unlocks at a cumulative recharge of "
                    f"{_money(up['recharge'], up['recharge_currency'])} "
                    f"(now {_money(up['recharge_from'], up['recharge_currency'])}) "
                    + (
                        f"and it would not hold today's traffic either ({up['to']} is over the target now)."
                        if up["exhausted_months"] == 0
                        else f"and growth exhausts it in {_month(up['exhausted_on'])}."
                        if up["exhausted_on"]
                        else "and growth does not exhaust it within 3 years."
                    )
                )
        if self.client_effect is not None:
            lines.append(client_effect_sentence(self.client_effect))
        if self.pacing_wait is not None:
            w = self.pacing_wait
            wait = (
                "the queue would grow without bound (peak load over the limit)"
                if not w["stable"]
                else "almost no request would wait (Erlang C)"
                if w["p_wait"] < 1e-5
                else f"{_pct(w['p_wait'])} of requests would wait, {seconds(w['mean_wait_s'])} on average (Erlang C)"
            )
            lines.append(f"A client pacing on concurrency {w['concurrency']} at the busiest minute: {wait}.")
        lines.append(f"Smallest tier that holds: {self.smallest_tier or 'none'}.")
        if len(self.by_tier_table) > 1:
            parts = []
            for t in self.by_tier_table:
                head = " [headline]" if t.get("headline") else ""
                if t["tier"] is None:
                    parts.append(f"{_table_label(t)}{head}: no tier holds")
                    continue
                hr = "" if t["headroom"] is None else f", headroom {_pct(t['headroom'])}"
                parts.append(
                    f"{_table_label(t)}{head}: smallest tier {t['smallest_tier'] or 'none'}; {t['tier']} refuses "
                    f"{_pct(t['refusal_total'])}, binding {t['binding_limit']}{hr}, "
                    f"exhausted {_month(t['exhausted_on'])}"
                )
            lines.append("Under each tier table of the last 12 months: " + "; ".join(parts) + ".")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        paras = "".join(f"<p>{html.escape(s)}</p>" for s in self.describe().splitlines())
        parts = [f"<div><h4>Capacity plan: {html.escape(self.scenario)}</h4>{paras}"]
        if self.by_tier_table:
            cols = [c for c in TIER_TABLE_COLUMNS if c in self.tier_tables]
            parts.append(self.tier_tables[cols].to_html(index=False))
        tot = self.demand[self.demand["route"] == "total"].drop(columns=["route"])
        parts.append(tot.round(4).to_html(index=False, na_rep=""))
        return "".join(parts) + "</div>"


def _num(v) -> str:
    return "unlimited" if v is None else f"{v:,}"
