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

from kimiplan.io.formats import money, number, percent, seconds

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


# The verdict under one tier table, as the CLI and a notebook show it. Headroom is `max_scale` (how far traffic
# can grow before refusals pass the target), with the busiest minute's use of the binding limit beside it.
TIER_TABLE_COLUMNS = (
    "version",
    "official",
    "headline",
    "smallest_tier",
    "tier",
    "refusal_total",
    "binding_limit",
    "busiest_minute_use",
    "max_scale",
    "exhausted_on",
)

LIMIT_LABELS = {"concurrency": "concurrency", "rpm": "RPM", "tpm": "TPM", "tpd": "TPD", "rpd": "RPD"}


@dataclass(frozen=True)
class Headroom:
    """The one definition of headroom, everywhere a person reads it (report, CLI, notebook, Excel): on `tier`,
    the busiest minute uses `utilization` of the binding `limit`, and traffic can grow to `scale` x today's
    before refusals pass `target`. `scale` is the capacity plan's `max_scale`; `utilization` is the busiest
    minute's demand (at the plan's percentile) over the limit."""

    tier: str | None
    limit: str | None
    utilization: float | None
    scale: float | None
    target: float

    @property
    def sentence(self) -> str:
        return headroom_sentence(self.tier, self.limit, self.utilization, self.scale, self.target)

    @property
    def short(self) -> str:
        """The headroom as one figure: "1.37×" (or "none", "unbounded")."""
        return growth_multiple(self.scale)


def growth_multiple(scale: float | None, missing: str = "n/a") -> str:
    """Headroom as one figure, the one formatting every view uses (report cards, CLI, notebook, Excel, diff,
    check): "1.37×" (traffic can grow 1.37× before refusals pass the target), "none" at or under 1×,
    "unbounded" when no limit is ever reached; `missing` when there is no headroom to compute (no tier)."""
    if scale is None or (isinstance(scale, float) and math.isnan(scale)):
        return missing
    if math.isinf(scale):
        return "unbounded"
    if scale <= 1.0:
        return "none"
    return f"{scale:.2f}×"


def headroom_sentence(
    tier: str | None, limit: str | None, utilization: float | None, scale: float | None, target: float
) -> str:
    """ "On Tier3 the busiest minute uses 78.7 % of the RPM limit: traffic can grow to 1.37× today's before
    refusals pass 0.1 %." The sentence every view uses for headroom."""
    on = f"On {tier}" if tier else "On this tier"
    if scale is None:
        return f"{on} no limit is set: no headroom to compute."
    if math.isinf(scale):
        return f"{on} no enforced limit is ever reached by this traffic mix: traffic can grow without bound."
    name = LIMIT_LABELS.get(limit or "", limit or "its binding")
    use = "" if utilization is None or not math.isfinite(utilization) else percent(utilization, trim=True)
    busiest = f" the busiest minute uses {use} of the {name} limit" if use else f" the {name} limit binds"
    if scale <= 0:
        return f"{on}{busiest}: refusals pass {percent(target, trim=True)} at any volume."
    if scale < 1.0:
        return (
            f"{on}{busiest}: refusals are already above {percent(target, trim=True)}; traffic would have to fall "
            f"to {scale:.2f}× today's for them to stay under it."
        )
    return f"{on}{busiest}: traffic can grow to {scale:.2f}× today's before refusals pass {percent(target, trim=True)}."


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
    refusal_by_route: dict | None = None  # route -> share of its requests refused at the busiest minute
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
        """`by_tier_table` as a frame, one row per table version, with the headroom of each verdict's tier in
        the one definition (`busiest_minute_use` of the binding limit, `max_scale` before refusals pass the
        target)."""
        df = pd.DataFrame(self.by_tier_table)
        if df.empty:
            return df
        uses, scales = [], []
        for t in self.by_tier_table:
            h = self.headroom(t["tier"], version=t["version"]) if t.get("tier") else None
            uses.append(None if h is None else h.utilization)
            scales.append(None if h is None else h.scale)
        df["busiest_minute_use"] = pd.array(uses, dtype="Float64").astype(float)
        df["max_scale"] = pd.array(scales, dtype="Float64").astype(float)
        return df

    def headroom(self, tier: str | None = None, version: str | None = None) -> Headroom | None:
        """The headroom of `tier` (default: the scenario's) under tier table `version` (default: the plan's
        ladder), in the one definition every view uses; None when the tier is not in the ladder."""
        ladder = self.table_ladders.get(version, self.ladder) if version is not None else self.ladder
        tier = tier or self.tier
        if tier is None:
            return None
        rows = ladder[ladder["tier"] == tier] if ladder is not None and len(ladder) else pd.DataFrame()
        if tier == self.tier and version is None and self.max_scale is not None:
            scale, limit = float(self.max_scale), self.binding_limit
        elif len(rows):
            r = rows.iloc[0]
            scale = math.inf if bool(r.get("unbounded", False)) else float(r["max_scale"])
            limit = r["binding_limit"] if isinstance(r["binding_limit"], str) else None
        else:
            return None
        util = None
        if limit is not None:
            tot = self.demand[(self.demand["route"] == "total") & (self.demand["limit"] == limit)]
            lim = None
            if len(rows) and limit in rows.columns and pd.notna(rows.iloc[0][limit]):
                lim = float(rows.iloc[0][limit])
            elif len(tot) and pd.notna(tot["limit_value"].iloc[0]):
                lim = float(tot["limit_value"].iloc[0])
            if len(tot) and lim:
                util = float(tot["peak"].iloc[0]) / lim
        return Headroom(tier=tier, limit=limit, utilization=util, scale=scale, target=self.target)

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

    def status(self) -> tuple[str, str]:
        """(`ok` | `near_limit` | `over_capacity` | `no_tier`, the reason in one sentence) for today's traffic
        on the scenario's tier; the words `kimiplan plan` prints first."""
        buy = f" buy {self.smallest_tier}." if self.smallest_tier else " no tier in the catalog holds it."
        if self.tier is None:
            return "no_tier", "No tier is set in the scenario;" + buy.replace(" buy", " the smallest that holds is", 1)
        if self.refusal_total is not None and self.refusal_total > self.target:
            return (
                "over_capacity",
                f"{self.tier} refuses {_pct(self.refusal_total)} of requests at the busiest minute, above the "
                f"{percent(self.target, trim=True)} target;" + buy,
            )
        h = self.headroom()
        state = self.capacity_status(1.0) or "ok"
        why = h.sentence if h is not None else f"{self.tier} holds."
        return state, why

    def verdict(self) -> str:
        """The one-line verdict: "Status: over capacity on Tier2: ..."."""
        state, why = self.status()
        word = {"ok": "ok", "near_limit": "near the limit", "over_capacity": "over capacity", "no_tier": "no tier"}
        on = f" on {self.tier}" if self.tier else ""
        return f"Status: {word[state]}{on}. {why}"

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
                f"{self.binding_limit or 'none'}{self._worst_route()}."
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
                h = self.headroom()
                rps = number(self.max_requests_per_second)
                lines.append(
                    f"Headroom: {h.sentence} That is {rps} "
                    f"requests/s on average; with growth of {percent(ex.get('growth', 0), trim=True)} a month "
                    f"{self.tier} is {when}."
                )
        up = self.upgrade_path()
        if up is not None:
            lines.append(up)
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
                h = self.headroom(t["tier"], version=t["version"])
                hr = "" if h is None else f", headroom {h.short}"
                parts.append(
                    f"{_table_label(t)}{head}: smallest tier {t['smallest_tier'] or 'none'}; {t['tier']} refuses "
                    f"{_pct(t['refusal_total'])}, binding {t['binding_limit']}{hr}, "
                    f"exhausted {_month(t['exhausted_on'])}"
                )
            lines.append("Under each tier table of the last 12 months: " + "; ".join(parts) + ".")
        return "\n".join(lines)

    def __repr__(self) -> str:
        state, _ = self.status()
        h = self.headroom()
        head = f"headroom {h.short} ({LIMIT_LABELS.get(h.limit or '', h.limit)})" if h is not None else "no headroom"
        tier = self.tier or "no tier"
        return (
            f"<CapacityPlan {self.scenario}: {tier} {state.replace('_', ' ')}, {head}; smallest tier that holds "
            f"{self.smallest_tier or 'none'}; summary() for the tables>"
        )

    def summary(self):
        """The plan at a glance: status, headroom, run-out, then the demand per limit and the tier ladder."""
        from kimiplan.io.tables import SummaryTable

        state, why = self.status()
        h = self.headroom()
        ex = self.exhaustion or {}
        a = self.assumptions or {}
        facts = [
            ("Scenario", self.scenario),
            ("Tier", self.tier or "none set"),
            ("Status", f"{state.replace('_', ' ')}: {why}"),
            ("Headroom", "n/a" if h is None else h.short),
            ("Binding limit", LIMIT_LABELS.get(self.binding_limit or "", self.binding_limit or "none")),
            ("Capacity runs out", _month(ex.get("date")) if ex.get("date") else "not within 3 years or never"),
            ("Smallest tier that holds", self.smallest_tier or "none"),
            ("Target", f"refusals under {percent(self.target, trim=True)} at the busiest minute"),
            ("Demand percentile", percent(self.percentile, trim=True)),
            ("Window, client", f"{a.get('window', '?')} RPM/TPM window, client {a.get('client', '?')}"),
        ]
        tables = []
        tot = self.demand[self.demand["route"] == "total"]
        cols = [c for c in ("limit", "mean", "peak", "limit_value", "peak_utilization", "refusal") if c in tot]
        tables.append(("Demand per limit at the busiest minute (all routes)", tot[cols], None))
        if len(self.ladder):
            lcols = ["tier", "rpm", "tpm", "refusal_total", "binding_limit", "holds", "max_scale"]
            lcols += [c for c in ("max_requests_per_day", "recharge", "recharge_currency") if c in self.ladder]
            tables.append(("Tier ladder", self.ladder[[c for c in lcols if c in self.ladder]], None))
        notes = []
        table = a.get("tier_table")
        if table is not None:
            notes.append(f"Tier table {table['version']}: {table['why']}.")
        if h is not None:
            notes.append(f"Headroom: {h.sentence}")
        notes.append(
            "Peak demand is the busiest minute of a typical week at the demand percentile; token sizes "
            "are the scenario's assumptions unless calibrated."
        )
        return SummaryTable(f"Capacity plan: {self.scenario}", facts, tables, notes)

    def upgrade_path(self) -> str | None:
        """The upgrade path in one sentence (the tier to move to, by when, the recharge that unlocks it), as
        `describe()` gives it; None when the plan has none. `upgrade` holds the same figures as a dict."""
        up = self.upgrade
        if up is None:
            return None
        if up["to"] is None:
            return (
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
            return (
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

    def worst_route(self) -> tuple[str, float] | None:
        """The route whose requests are refused most often at the busiest minute (with its share), when
        several routes share the limits and one is refused measurably more than the others."""
        by = self.refusal_by_route or {}
        if len(by) < 2:
            return None
        name = max(by, key=by.get)
        low = min(by.values())
        return (name, by[name]) if by[name] >= 1e-5 and by[name] > 1.05 * low else None

    def _worst_route(self) -> str:
        w = self.worst_route()
        return "" if w is None else f"; route refused most: {w[0]} ({_pct(w[1])} of its requests)"

    def _repr_html_(self) -> str:
        from kimiplan.io.tables import table_html

        paras = "".join(f"<p>{html.escape(s)}</p>" for s in self.describe().splitlines())
        parts = [f"<div><h4>Capacity plan: {html.escape(self.scenario)}</h4>"]
        parts.append(f"<p><b>{html.escape(self.verdict())}</b></p>{paras}")
        if self.by_tier_table:
            cols = [c for c in TIER_TABLE_COLUMNS if c in self.tier_tables]
            parts.append(table_html(self.tier_tables[cols]))
        for title, df, cur in self.summary().tables:
            parts.append(f"<p><b>{html.escape(title)}</b></p>{table_html(df, cur)}")
        return "".join(parts) + "</div>"


def _num(v) -> str:
    return "unlimited" if v is None else f"{v:,}"
