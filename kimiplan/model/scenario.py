"""The user-facing model of an application: provider, model, tier, traffic and routes.

A scenario file is YAML (or JSON) validated by these pydantic models; `kimiplan schema` prints the JSON
Schema. Errors name the file, the route, the field and the bad value, and nothing is written anywhere.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from kimiplan.errors import ScenarioError
from kimiplan.io.paths import data_path
from kimiplan.model.agent import Agent
from kimiplan.model.calibration import CalibratedFrom
from kimiplan.model.dists import Fixed, LogNormal, bounded
from kimiplan.model.loader import load_file
from kimiplan.model.settings import FIRST_DATE, LAST_DATE, Simulation, check_date
from kimiplan.model.units import Growth, Share, fraction_input, parse_fraction  # noqa: F401 (re-exported)

# Plausible limits (errors quote them). Each is far above any real workload and far inside what the arithmetic
# can represent: token counts multiply by counts (history turns, RAG chunks, pages) and still fit int64 many
# times over; web searches bound the round-trip loop, which runs once per search.
MAX_TOKENS = 10_000_000  # tokens in one component of one request (context windows are ~256K)
MAX_COUNT = 100_000  # history turns, RAG chunks, pages per request
MAX_SEARCHES = 100  # $web_search round trips per request
MAX_ROUNDS = 100  # function-tool round trips per request
MAX_SECONDS = 86_400.0  # latency of one call
MAX_TPS = 1e9  # decode speed, tokens/s (fits against a zero-delay emulator reach 1e6)
MAX_RPS = 1_000_000.0  # requests per second of one application (86.4 billion a day)
# The least volume: one request in 100 days. Below it no tier's limit is within reach of any growth multiple the
# plan searches (up to 10^9 x), and the figures would underflow.
MIN_REQUESTS_PER_DAY = 0.01
MAX_FACTOR = 1_000.0  # burst, event and holiday multipliers; profile weights are relative
MAX_LIMIT = 10**12  # any inline tier limit
MAX_RATE = 1e6  # an exchange rate
MAX_GROWTH = 10.0  # +1000 % a month


Tokens = bounded(MAX_TOKENS, "tokens")
Count = bounded(MAX_COUNT)
Searches = bounded(MAX_SEARCHES, "searches")
Rounds = bounded(MAX_ROUNDS, "rounds")
Seconds = bounded(MAX_SECONDS, "s")
Speed = bounded(MAX_TPS, "tokens/s")

# Input components: the text of each part in prompt order, then the overhead (template markers and what the
# server adds), which is spread over the prompt, then the input of the further calls tool rounds make
# (`$web_search` and function tools).
COMPONENTS = ("system", "history", "rag", "documents", "user", "overhead", "tool_rounds")


class _M(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class History(_M):
    """Earlier turns carried in the prompt: `turns` previous exchanges of `tokens_per_turn` each."""

    turns: Count = Fixed(value=0)
    tokens_per_turn: Tokens = Fixed(value=0)


class Rag(_M):
    """Retrieved context: `top_k` chunks of `chunk_tokens` each."""

    top_k: Count = Fixed(value=0)
    chunk_tokens: Tokens = Fixed(value=0)


class Documents(_M):
    """Extracted files (billed as input): present with `probability`, `pages` x `tokens_per_page`."""

    probability: Share = Field(default=0.0, ge=0, le=1)
    pages: Count = Fixed(value=0)
    tokens_per_page: Tokens = Fixed(value=0)


class Tools(_M):
    """Tool rounds per request: Moonshot's builtin `$web_search`, and the application's own function tools.

    Each round is a round trip: the model answers `finish_reason=tool_calls`, the client sends the tool call
    back with the tool's result, and the next call carries the whole prompt again plus the tool-call message
    and the result, which Kimi bills as input. A request with k searches and m function rounds is k + m + 1 API
    calls (searches first); each counts against RPM and reserves its prompt plus max_completion_tokens against
    TPM. `$web_search` has a per-call fee and needs thinking off; function tools have no fee and work with
    thinking on, where each tool-call reply also reasons, and that reasoning is sent back (Kimi requires it
    within a turn) and read as input by the later calls of the request."""

    web_search_calls: Searches = Field(default=Fixed(value=0), description="Searches per request (each a round trip)")
    result_tokens: Tokens = Field(
        default=Fixed(value=0),
        description="Tokens of search results one search adds to the input of every later call of the request "
        "(the tool call's usage shows them); unknown until measured, so 0 unless set",
    )
    tool_call_tokens: Tokens = Field(
        default=Fixed(value=0),
        description="Output tokens of the model's tool-call message, echoed back as input in later calls",
    )
    function_calls: Rounds = Field(
        default=Fixed(value=0),
        description="Function-tool rounds per request: replies with finish_reason=tool_calls the client answers "
        "with its own tools' results (each round one more API call; no per-call fee)",
    )
    function_call_tokens: Tokens = Field(
        default=Fixed(value=0),
        description="Output tokens of one round's tool-call message (function names and JSON arguments), echoed "
        "back as input in later calls",
    )
    function_result_tokens: Tokens = Field(
        default=Fixed(value=0),
        description="Tokens of the tool results the client sends back in one round (all its tool messages), "
        "input of every later call of the request",
    )

    @property
    def rounds_mean(self) -> float:
        """Mean tool rounds per request (searches and function rounds): the API calls beyond the first."""
        return self.web_search_calls.mean() + self.function_calls.mean()


class Cache(_M):
    """Which input is a cache hit.

    `prefix_rule` (Kimi's automatic caching): the repeated prefix (`prefix` components) is served from cache
    with probability `hit_rate` when the prompt exceeds `min_prompt_tokens` (Kimi: a request can hit the cache
    only when the previous request's prompt exceeded 256 tokens; the current prompt stands in for it).
    `none`: no cache hits."""

    mode: Literal["prefix_rule", "none"] = "prefix_rule"
    prefix: tuple[Literal["system", "history", "rag", "documents"], ...] = ("system", "history")
    hit_rate: Share = Field(default=1.0, ge=0, le=1)
    min_prompt_tokens: int = Field(default=256, ge=0, le=MAX_TOKENS)


class Latency(_M):
    """Latency model: time to first token plus completion tokens over decode speed.

    `total_s`, when set, replaces the model with a distribution of the whole latency (for checks against
    queueing theory). Defaults are placeholders until calibrated from live calls."""

    ttft_s: Seconds = LogNormal(median=1.5, p95=4.0)
    decode_tps: Speed = LogNormal(median=40.0, p95=70.0)
    total_s: Seconds | None = None

    @field_validator("decode_tps")
    @classmethod
    def _positive_speed(cls, v):
        if v.quantile(0.0001) <= 0 and v.mean() <= 0:
            raise ValueError("decode_tps must be > 0")
        return v


class Route(_M):
    """One route of the application (an endpoint or feature) and its per-request token components."""

    name: str = Field(min_length=1, max_length=200)
    share: Share = Field(gt=0, le=1, description="Fraction of the application's requests that take this route")
    description: str = ""
    thinking: bool = Field(default=False, description="K2.6 thinking on: reasoning tokens are generated and billed")
    system: Tokens = Field(default=Fixed(value=0), description="System prompt tokens (a fixed, cacheable prefix)")
    history: History = History()
    rag: Rag = Rag()
    documents: Documents = Documents()
    user: Tokens = Field(default=Fixed(value=0), description="The user's new message")
    overhead_tokens: int | None = Field(
        default=None,
        ge=0,
        le=MAX_TOKENS,
        description="Chat-template tokens beyond the text of the parts above. None: the K2.6 template's markers, "
        "4 per message (system, two per history turn, the user's) plus 3 for the reply primer, counted "
        "per request. A number: that many; 0 switches them off",
    )
    server_overhead_tokens: int = Field(
        default=0,
        ge=0,
        le=MAX_TOKENS,
        description="Prompt tokens the server adds to every request that the messages do not show (an injected "
        "system prompt, thinking markers), on top of overhead_tokens. Calibration measures them as "
        "prompt_tokens minus the local count of the rendered chat; apply_calibration sets them",
    )
    output: Tokens = Field(default=Fixed(value=0), description="Visible output tokens the model wants to write")
    reasoning: Tokens = Field(default=Fixed(value=0), description="Reasoning tokens (used when thinking is on)")
    max_completion_tokens: int | None = Field(
        default=None,
        gt=0,
        le=MAX_TOKENS,
        description="Budget sent with the request; omitted means the model default (32,768 for K2.6)",
    )
    tools: Tools = Tools()
    cache: Cache = Cache()
    latency: Latency = Latency()
    batch: bool = Field(default=False, description="Sent through the Batch API (60% of price; no rate-limit load)")
    calibration: str | None = Field(
        default=None,
        description="Path of a calibration file (kimiplan calibrate fit), relative to the scenario file; "
        "load_scenario applies it: what it measured replaces what the route assumes, except what `pin` keeps",
    )
    pin: tuple[Literal["input", "cache", "output", "reasoning", "server_overhead", "latency", "tools", "all"], ...] = (
        Field(
            default=(),
            description="Measured quantities this route keeps as written (e.g. [input]): the assumption wins over "
            "the calibration; `all` keeps every one (a route no calibration needs to cover)",
        )
    )
    calibrated: CalibratedFrom | None = Field(
        default=None,
        description="Set when a calibration was applied (by load_scenario, or inline by kimiplan calibrate apply): "
        "the calls, dates, model and base URL behind this route's laws",
    )
    agent: Agent | None = Field(
        default=None,
        description="Set: a request of this route is an agent run of steps (see kimiplan.model.agent); its "
        "figures (tokens, cost, latency) are per run",
    )

    @model_validator(mode="after")
    def _agent_rules(self):
        if self.thinking and self.tools.web_search_calls.mean() > 0:
            # K2.6 quickstart (official, 2026-08-13): $web_search must be used with thinking disabled.
            raise ValueError("tools.web_search_calls needs thinking off ($web_search requires thinking disabled)")
        # Function tools with thinking on are allowed (K2.6 quickstart: tool_choice auto/none only, and each
        # tool-call reply's reasoning_content sent back within the turn; kimi-platform-facts.md §3).
        if self.agent is None:
            return self
        if self.thinking and self.agent.web_search_per_step.mean() > 0:
            # K2.6 quickstart (official, 2026-08-13): $web_search must be used with thinking disabled.
            raise ValueError("agent.web_search_per_step needs thinking off ($web_search requires thinking disabled)")
        if self.tools.web_search_calls.mean() > 0:
            raise ValueError("an agent route counts searches in agent.web_search_per_step, not tools.web_search_calls")
        if self.tools.function_calls.mean() > 0:
            # An agent run's steps are its tool rounds: counting them again here would count every call twice.
            raise ValueError(
                "an agent route counts its tool rounds as steps (agent.steps, agent.tool_result_tokens), "
                "not tools.function_calls"
            )
        return self


class Burst(_M):
    """A daily burst: traffic times `factor` from `start` (HH:MM, scenario time zone) for `minutes`."""

    start: dt.time
    minutes: float = Field(gt=0, le=1440)
    factor: float = Field(gt=0, le=MAX_FACTOR)


class Event(_M):
    """A one-off change of volume: a launch that doubles traffic from a date.

    Applies from `start` to `end`, both inclusive (no `end`: for good). Holiday factors multiply the
    weekday factor of that date; event factors multiply both."""

    name: str = "event"
    start: dt.date
    end: dt.date | None = None
    factor: float = Field(gt=0, le=MAX_FACTOR)

    @field_validator("start", "end")
    @classmethod
    def _dates(cls, v):
        return check_date(v)


class Traffic(_M):
    requests_per_day: float | None = Field(default=None, ge=MIN_REQUESTS_PER_DAY, le=MAX_RPS * 86400)
    requests_per_second: float | None = Field(default=None, ge=MIN_REQUESTS_PER_DAY / 86400, le=MAX_RPS)
    hourly_profile: tuple[float, ...] | None = Field(
        default=None, description="24 relative weights (hour 0..23 in `timezone`); normalized to mean 1"
    )
    weekday_factors: tuple[float, ...] | None = Field(
        default=None, description="7 factors, Monday first; normalized to mean 1"
    )
    monthly_growth: Growth = Field(
        default=0.0,
        gt=-1,
        le=MAX_GROWTH,
        description='Compound growth per month: 0.08 or "8%" (+8 %); above 100 % only with the unit ("150%")',
    )
    monthly_requests: dict[str, float] | None = Field(
        default=None, description="Explicit volume per month, 'YYYY-MM' -> requests; overrides rate and growth there"
    )
    holidays: dict[dt.date, float] = Field(default_factory=dict, description="date -> traffic factor")
    events: tuple[Event, ...] = ()
    bursts: tuple[Burst, ...] = ()
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name such as UTC or Asia/Shanghai)") from None
        return v

    @field_validator("holidays")
    @classmethod
    def _holiday_dates(cls, v: dict) -> dict:
        for d in v:
            check_date(d)
        return v

    @model_validator(mode="after")
    def _one_rate(self):
        if (self.requests_per_day is None) == (self.requests_per_second is None):
            raise ValueError("give exactly one of requests_per_day or requests_per_second")
        if self.hourly_profile is not None:
            if len(self.hourly_profile) != 24:
                raise ValueError(f"hourly_profile needs 24 values, got {len(self.hourly_profile)}")
            if max(self.hourly_profile) > MAX_LIMIT:
                raise ValueError(f"hourly_profile values must be <= {MAX_LIMIT:g} (they are relative weights)")
            if min(self.hourly_profile) < 0 or sum(self.hourly_profile) <= 0:
                raise ValueError(
                    f"hourly_profile values must be >= 0 with a positive sum, got {list(self.hourly_profile)}"
                )
        if self.weekday_factors is not None:
            if len(self.weekday_factors) != 7:
                raise ValueError(f"weekday_factors needs 7 values, got {len(self.weekday_factors)}")
            if max(self.weekday_factors) > MAX_LIMIT:
                raise ValueError(f"weekday_factors must be <= {MAX_LIMIT:g} (they are relative weights)")
            if min(self.weekday_factors) < 0 or sum(self.weekday_factors) <= 0:
                raise ValueError(f"weekday_factors must be >= 0 with a positive sum, got {list(self.weekday_factors)}")
        for k, v in (self.monthly_requests or {}).items():
            try:
                month = dt.datetime.strptime(k, "%Y-%m").date()
            except ValueError:
                raise ValueError(f"monthly_requests key {k!r} is not YYYY-MM") from None
            if not FIRST_DATE <= month <= LAST_DATE:
                raise ValueError(f"monthly_requests key {k!r} is outside {FIRST_DATE:%Y-%m}..{LAST_DATE:%Y-%m}")
            if not 0 <= v <= MAX_RPS * 86400 * 31:
                raise ValueError(f"monthly_requests[{k!r}] must be within 0..{MAX_RPS * 86400 * 31:g}, got {v}")
        for d, f in self.holidays.items():
            if not 0 <= f <= MAX_FACTOR:
                raise ValueError(f"holidays[{d}] must be within 0..{MAX_FACTOR:g}, got {f}")
        return self

    @property
    def mean_rps(self) -> float:
        """Average requests per second (before profiles, growth and events)."""
        return self.requests_per_second if self.requests_per_second is not None else self.requests_per_day / 86400.0

    @property
    def per_day(self) -> float:
        return self.mean_rps * 86400.0

    def hourly_factors(self) -> list[float]:
        if self.hourly_profile is None:
            return [1.0] * 24
        m = sum(self.hourly_profile) / 24
        return [v / m for v in self.hourly_profile]

    def weekday_multipliers(self) -> list[float]:
        if self.weekday_factors is None:
            return [1.0] * 7
        m = sum(self.weekday_factors) / 7
        return [v / m for v in self.weekday_factors]


class InlineTier(_M):
    """A custom tier written in the scenario: any subset of the limits (None = unlimited)."""

    name: str = "custom"
    concurrency: int | None = Field(default=None, gt=0, le=MAX_LIMIT)
    rpm: int | None = Field(default=None, gt=0, le=MAX_LIMIT)
    tpm: int | None = Field(default=None, gt=0, le=MAX_LIMIT)
    tpd: int | None = Field(default=None, gt=0, le=MAX_LIMIT)
    rpd: int | None = Field(default=None, gt=0, le=MAX_LIMIT)


class Scenario(_M):
    """An application on Kimi: where it calls, which tier, how much traffic, and its routes."""

    name: str = "scenario"
    description: str = ""
    provider: Literal["moonshot", "cloudflare", "openrouter", "siliconflow"] | str = "moonshot"
    region: str | None = Field(default=None, description="Moonshot: intl (USD) or cn (CNY); others: global")
    model: str = Field(description="Exact model ID as the provider names it, e.g. kimi-k2.6 (never guessed)")
    tier: str | InlineTier | None = Field(
        default=None, description="Tier name from the catalog, or an inline custom tier"
    )
    tier_table: str | None = Field(
        default=None,
        description="Version of the provider's tier table to plan with (Moonshot: A or B); None: the table in "
        "force on as_of",
    )
    as_of: dt.date = Field(description="Date for prices and tiers (look-ups are dated)")
    seed: int = Field(default=0, ge=0, lt=2**63)
    tax_rate: Share = Field(default=0.0, ge=0, le=1, description='Added to every cost (VAT/GST), e.g. 0.06 or "6%"')
    exchange_rate: dict[str, float] = Field(
        default_factory=dict, description="Extra currencies: 'CNY' -> units per card currency unit"
    )
    traffic: Traffic
    calibration: str | None = Field(
        default=None,
        description="Path of a calibration file for every route (relative to the scenario file); a route's own "
        "`calibration` wins; a route the file lacks is an error unless it pins all",
    )
    routes: tuple[Route, ...] = Field(min_length=1)
    simulation: Simulation = Field(
        default_factory=Simulation,
        description="Defaults for `kimiplan simulate`: horizon (hours), client on 429 (none/retry/pace), windows",
    )

    def __repr__(self) -> str:
        t = self.traffic
        tier = self.tier if isinstance(self.tier, str) or self.tier is None else "inline tier"
        growth = f"{t.monthly_growth * 100:g} %"
        return (
            f"<Scenario {self.name}: {self.model} on {self.provider}/{self.resolved_region}, {tier or 'no tier'}, "
            f"{t.per_day:,.0f} requests/day growing {growth} a month, {len(self.routes)} routes, as of {self.as_of}>"
        )

    def summary(self):
        """The scenario at a glance: model, tier, traffic and one row per route."""
        import pandas as pd

        from kimiplan.io.formats import ColumnFormat
        from kimiplan.io.tables import SummaryTable

        t = self.traffic
        facts = [
            ("Model", f"{self.model} on {self.provider}/{self.resolved_region}"),
            ("Tier", str(self.tier) if self.tier is not None else "none set"),
            ("Traffic", f"{t.per_day:,.0f} requests/day, growing {t.monthly_growth * 100:g} % a month"),
            ("As of", self.as_of.isoformat()),
            ("Tax", f"{self.tax_rate * 100:g} %"),
        ]
        functions = any(r.tools.function_calls.mean() > 0 for r in self.routes)
        rows = [
            {
                "route": r.name,
                "share": r.share,
                "thinking": r.thinking,
                "batch": r.batch,
                "max_completion_tokens": r.max_completion_tokens,
                "web_searches": r.tools.web_search_calls.mean(),
                # only when some route has them, so scenarios without function tools read as before
                **({"function_rounds": r.tools.function_calls.mean()} if functions else {}),
                "token_sizes": (
                    r.calibrated.describe()
                    if r.calibrated
                    else f"calibration {r.calibration or self.calibration} named, not yet applied"
                    if (r.calibration or self.calibration)
                    else "assumed"
                ),
            }
            for r in self.routes
        ]
        tables = [("Routes", pd.DataFrame(rows), None)]
        uncal = sum(r.calibrated is None for r in self.routes)
        notes = (
            [f"Token sizes are assumptions on {uncal} of {len(self.routes)} routes until calibrated."] if uncal else []
        )
        diffs = [
            {
                "route": r.name,
                "quantity": d.what,
                "assumed": d.assumed,
                "measured": d.measured,
                "ci_low": d.ci[0],
                "ci_high": d.ci[1],
                "calls": d.n,
                "forecast_uses": d.used,
            }
            for r in self.routes
            if r.calibrated
            for d in r.calibrated.differences
        ]
        if diffs:
            # Where an assumption lies outside the measurement's 95 % interval, both are shown side by side.
            tables.append(("Measured against assumed (outside the 95 % interval)", pd.DataFrame(diffs), None))
        for r in self.routes:
            notes += [f"Route {r.name!r}: {w}" for w in (r.calibrated.warnings if r.calibrated else ())]
        overrides = {
            "assumed": "number",
            "measured": "number",
            "ci_low": ColumnFormat("number", header="95 % low"),
            "ci_high": ColumnFormat("number", header="95 % high"),
        }
        return SummaryTable(f"Scenario: {self.name}", facts, tables, notes, overrides=overrides)

    def _repr_html_(self) -> str:
        return self.summary()._repr_html_()

    @field_validator("as_of")
    @classmethod
    def _as_of(cls, v):
        return check_date(v)

    @model_validator(mode="after")
    def _routes(self):
        names = [r.name for r in self.routes]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"route names must be unique, repeated: {sorted(dup)}")
        total = sum(r.share for r in self.routes)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"route shares must sum to 1, got {total:g} ("
                + ", ".join(f"{r.name}={r.share:g}" for r in self.routes)
                + ")"
            )
        for k, v in self.exchange_rate.items():
            if not 0 < v <= MAX_RATE:
                raise ValueError(f"exchange_rate[{k!r}] must be > 0 and <= {MAX_RATE:g}, got {v}")
        return self

    @property
    def resolved_region(self) -> str:
        return self.region or ("intl" if self.provider == "moonshot" else "global")

    def route(self, name: str) -> Route:
        for r in self.routes:
            if r.name == name:
                return r
        raise ScenarioError(f"unknown route {name!r}; routes: {', '.join(r.name for r in self.routes)}")

    def with_changes(self, **changes: Any) -> Scenario:
        """A validated copy with fields replaced (variants for comparisons)."""
        data = self.model_dump(mode="python", by_alias=True)
        data.update(changes)
        return Scenario.model_validate(data)

    def with_route_changes(self, **changes: Any) -> Scenario:
        """A validated copy with the same fields replaced on every route (e.g. thinking=False)."""
        data = self.model_dump(mode="python", by_alias=True)
        data["routes"] = [{**r, **changes} for r in data["routes"]]
        return Scenario.model_validate(data)


# ---------------------------------------------------------------- loading


def _set_base_dir(obj: Any, base: str) -> Any:
    # Texts distributions read their files relative to the scenario file.
    if isinstance(obj, dict):
        if obj.get("kind") == "texts" and "files" in obj:
            obj = {**obj, "base_dir": base}
        return {k: _set_base_dir(v, base) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_set_base_dir(v, base) for v in obj]
    return obj


def _describe_error(err: dict, data: dict, origin: str) -> str:
    loc = list(err["loc"])
    where = ""
    if len(loc) >= 2 and loc[0] == "routes" and isinstance(loc[1], int):
        idx = loc[1]
        routes = data.get("routes") or []
        rname = routes[idx].get("name", "?") if idx < len(routes) and isinstance(routes[idx], dict) else "?"
        where = f"route {rname!r} (routes[{idx}]): "
        loc = loc[2:]
    # Drop union tags (e.g. 'lognormal', 'function-after[...]') from the path: they are not fields.
    field = ".".join(str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p in _KINDS)))
    msg = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    shown = "" if isinstance(value, (dict, list)) else f" (got {value!r})"
    return f"{origin}: {where}field {field or '(top level)'}: {msg}{shown}"


_KINDS = {
    "fixed",
    "normal",
    "lognormal",
    "exponential",
    "poisson",
    "uniform",
    "empirical",
    "texts",
    "mixture",
    "str",
    "InlineTier",
}


def _calibration_paths(data: dict, base: str) -> dict:
    # A calibration file is named relative to the scenario file, as texts files are.
    def rel(v):
        return str(Path(base) / v) if isinstance(v, str) and v and not Path(v).is_absolute() else v

    data = dict(data)
    if "calibration" in data:
        data["calibration"] = rel(data["calibration"])
    if isinstance(data.get("routes"), list):
        data["routes"] = [
            {**r, "calibration": rel(r["calibration"])} if isinstance(r, dict) and "calibration" in r else r
            for r in data["routes"]
        ]
    return data


def parse_scenario(data: dict, origin: str = "<scenario>", base_dir: str | None = None) -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(f"{origin}: a scenario must be a mapping at the top level, got {type(data).__name__}")
    if base_dir:
        data = _calibration_paths(_set_base_dir(data, base_dir), base_dir)
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        errs = exc.errors()
        # pydantic also reports a tuple with a bad item as too short; the item's own error says it all.
        bad_items = {e["loc"][0] for e in errs if len(e["loc"]) > 1 and isinstance(e["loc"][1], int)}
        errs = [e for e in errs if not (e["type"] == "too_short" and tuple(e["loc"]) in {(k,) for k in bad_items})]
        # A union (tier: a name or an inline tier) reports every branch; keep the branch the input was meant for.
        if isinstance(data.get("tier"), dict):
            errs = [e for e in errs if tuple(e["loc"][:2]) != ("tier", "str")]
        lines = [_describe_error(e, data, origin) for e in errs]
        raise ScenarioError(
            "\n".join(lines[:5]) + (f"\n... and {len(lines) - 5} more" if len(lines) > 5 else "")
        ) from None


def read_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file (YAML or JSON) or a bundled example's name; no catalog look-up.

    `kimiplan.load_scenario` (in `kimiplan.catalog.resolve`) also checks the model and tier against the catalog."""
    path = Path(path)
    if not path.exists() and not path.suffix and example_path_or_none(str(path)):
        path = example_path_or_none(str(path))
    data = load_file(path, "scenario file", ScenarioError)
    return parse_scenario(data, str(path), str(path.parent))


def scenario_json_schema() -> dict:
    schema = Scenario.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "kimiplan scenario"
    return schema


def list_examples() -> list[str]:
    return sorted(p.stem for p in data_path("scenarios").glob("*.yaml"))


def example_path_or_none(name: str) -> Path | None:
    p = data_path("scenarios", f"{name}.yaml")
    return p if p.exists() else None


def example_path(name: str) -> Path:
    p = example_path_or_none(name)
    if p is None:
        raise ScenarioError(f"unknown example scenario {name!r}; examples: {', '.join(list_examples())}")
    return p
