"""A scenario with what its calibration measured: the one place a calibration file reaches the model.

`load_scenario` calls `apply_calibration` for every scenario it reads (a route's `calibration:` or the
scenario's), so plan, simulate, forecast, report, compare, sweep, campaign and backtest all see the same
calibrated routes. Per route, unless the route pins the quantity (`pin: [input, ...]`):

- **input**: the measured mean `prompt_tokens` per call is the route's mean input as sent. The scenario's split
  into components (system, history, RAG, documents, user) and their shapes stay; every text component's size
  is scaled by one factor, so that text + the template's markers + the server's hidden tokens has the measured
  mean. Scaling keeps what the cache prefix is (system, history) and what the breakdown shows; the measured
  total is the calibration's. (Counts such as history turns or RAG chunks are not changed, their sizes are.)
- **cache**: the prefix hit rate is set so that the expected cached tokens per call are the measured cached
  share of the measured prompt. Only prompts over `cache.min_prompt_tokens` can hit (Kimi: "a new request can
  hit the prefix cache only when the previous request's prompt tokens exceed 256"), so the rate is the measured
  cached tokens over the prefix tokens that sit on such prompts, drawn from the route's own laws; with short
  prompts in the mix it is above the plain share. A route with no cacheable prefix, or whose prompts never
  exceed the threshold, but measured hits is warned about. (Kimi counts cached tokens in 256-token blocks, a
  third party measured; the measured share already holds that, and the rate reproduces the measured tokens.)
- **output**, **reasoning** (thinking routes): the fitted laws, cut at the route's budget as Kimi does, so the
  measured truncation follows (a calibration taken at another budget is warned about).
- **server_overhead**: prompt tokens the server adds unseen. **latency**: time to first token and decode speed.
- **tools**: when the samples recorded tool rounds, function rounds per request (their observed law), the
  tokens of each round's call message and of its results (fitted laws); rounds that were not function rounds
  are searches, applied to a route with `$web_search` (their count and result size).
- **precision**: the sampling error of the measured mean cost per request and mean reservation (relative
  standard errors and interval half-widths, `CalibratedFrom.cost_rel_se` ...), carried whenever a quantity the
  cost rests on was applied; `forecast` widens its bands by the cost's by default.

Agent routes take the per-step laws (output, reasoning, latency, server overhead); steps per run and context
growth are applied only when the calibration measured them.

What measurement and assumption disagree on by more than the measurement's own 95 % interval is kept as a
`Difference` on the route (`route.calibrated`), which the report and the CLI show side by side.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

from pydantic import ValidationError

from kimiplan.catalog.providers import canonical_model_or_none, provider_of_host
from kimiplan.errors import ConfigError
from kimiplan.io.formats import number, percent
from kimiplan.model.calibration import (
    PIN_QUANTITIES,
    CalibratedFrom,
    Calibration,
    ComponentFit,
    Difference,
    Estimate,
    FixedFit,
    LogNormalFit,
    RouteCalibration,
    load_calibration,
)
from kimiplan.model.dists import Empirical, Exponential, Fixed, LogNormal, Normal, Poisson, Uniform
from kimiplan.model.inputs import eligible_prefix_share
from kimiplan.tokens.tokenizer import template_tokens

if TYPE_CHECKING:
    from kimiplan.model.scenario import Route, Scenario

STALE_DAYS = 90  # older than this (against the scenario's as_of) is a warning
SPARSE_FACTOR = 10.0  # the scenario's calls/min this many times below the sampler's: the cache may be colder
_Z = 1.959963984540054
#: the measured quantities a request's cost rests on (its sampling error goes with the route when one is applied)
COST_QUANTITIES = {"input", "cache", "output", "reasoning", "server_overhead", "tools"}


def component_dist(comp: ComponentFit, kind: Literal["auto", "lognormal", "mixture", "empirical"] = "auto"):
    """The law a fitted component stands for: `auto` is the one goodness of fit chose (`ComponentFit.to_dist`)."""
    return comp.to_dist(kind)


def _mean_ci(comp: ComponentFit) -> tuple[float, tuple[float, float], int]:
    s = comp.empirical.samples
    n = len(s)
    m = comp.empirical.mean
    if n < 2:
        return m, (m, m), n
    mu = sum(s) / n
    sd = math.sqrt(sum((x - mu) ** 2 for x in s) / (n - 1))
    half = _Z * sd / math.sqrt(n)
    return m, (m - half, m + half), n


def scaled(dist, f: float):
    """`dist` with every value multiplied by `f` (> 0); the kind is kept where the family is closed under it.
    Values are rounded to 1/100 of a token: the written scenario stays readable, the means move by less."""

    def x(v: float) -> float:
        return round(v * f, 2)

    if isinstance(dist, Fixed):
        return Fixed(value=x(dist.value))
    if isinstance(dist, Normal):
        return Normal(mean=x(dist.mean_), sd=x(dist.sd_))
    if isinstance(dist, LogNormal):
        return LogNormal(median=max(x(dist.median), 0.01), p95=max(x(dist.p95), 0.01))
    if isinstance(dist, Exponential):
        return Exponential(mean=max(x(dist.mean_), 0.01))
    if isinstance(dist, Uniform):
        return Uniform(low=x(dist.low), high=x(dist.high))
    if isinstance(dist, Empirical):
        return Empirical(samples=tuple(x(v) for v in dist.samples))
    # Poisson and texts are not closed under scaling: their quantiles at 1,000 mid-points, scaled.
    q = [(i + 0.5) / 1000 for i in range(1000)]
    return Empirical(samples=tuple(x(max(float(v), 0.0)) for v in dist.quantile(q)))


def _text_mean(route: Route) -> float:
    d = route.documents
    return (
        route.system.mean()
        + route.history.turns.mean() * route.history.tokens_per_turn.mean()
        + route.rag.top_k.mean() * route.rag.chunk_tokens.mean()
        + d.probability * d.pages.mean() * d.tokens_per_page.mean()
        + route.user.mean()
    )


def _markers_mean(route: Route) -> float:
    if route.overhead_tokens is not None:
        return float(route.overhead_tokens)
    # The template is linear in the message counts, so its mean is the template of the mean counts.
    return float(template_tokens(1 if route.system.mean() > 0 else 0, route.history.turns.mean()))


def input_mean(route: Route) -> float:
    """Mean input tokens of a route's first call as sent: its text, the template's markers and the server's."""
    return _text_mean(route) + _markers_mean(route) + route.server_overhead_tokens


def _prefix_mean(route: Route) -> float:
    parts = {
        "system": route.system.mean(),
        "history": route.history.turns.mean() * route.history.tokens_per_turn.mean(),
        "rag": route.rag.top_k.mean() * route.rag.chunk_tokens.mean(),
        "documents": route.documents.probability
        * route.documents.pages.mean()
        * route.documents.tokens_per_page.mean(),
    }
    return sum(parts[p] for p in route.cache.prefix)


def _hittable_prefix_mean(route: Route) -> float:
    """Mean prefix tokens per call on prompts long enough for the cache (over `cache.min_prompt_tokens`; Kimi:
    256): the prefix mean itself when every prompt is, less when some are shorter (drawn from the route's laws)."""
    prefix = _prefix_mean(route)
    return prefix * eligible_prefix_share(route) if prefix > 0 else 0.0


def cached_share(route: Route) -> float:
    """The share of a route's input the scenario expects from cache (hits only on prompts over
    `min_prompt_tokens`, as the workload draws them)."""
    if route.cache.mode != "prefix_rule":
        return 0.0
    m = input_mean(route)
    return route.cache.hit_rate * _hittable_prefix_mean(route) / m if m > 0 else 0.0


def _scale_input(route: Route, f: float) -> dict[str, Any]:
    return {
        "system": scaled(route.system, f),
        "user": scaled(route.user, f),
        "history": route.history.model_copy(update={"tokens_per_turn": scaled(route.history.tokens_per_turn, f)}),
        "rag": route.rag.model_copy(update={"chunk_tokens": scaled(route.rag.chunk_tokens, f)}),
        "documents": route.documents.model_copy(update={"tokens_per_page": scaled(route.documents.tokens_per_page, f)}),
    }


def _disagrees(assumed: float, est: tuple[float, tuple[float, float], int]) -> bool:
    lo, hi = est[1]
    return not (lo <= assumed <= hi) and not math.isclose(assumed, est[0], rel_tol=1e-9, abs_tol=1e-9)


def _count_law(counts: dict[int, int]):
    """The law of a count from how many requests had each value: fixed when they all agree, else the observed
    values resampled (each as often as measured, divided by their common factor)."""
    if len(counts) == 1:
        return Fixed(value=float(next(iter(counts))))
    g = math.gcd(*counts.values())
    return Empirical(samples=tuple(float(v) for v, c in sorted(counts.items()) for _ in range(c // g)))


def _from_estimate(e: Estimate) -> tuple[float, tuple[float, float], int]:
    return e.value, (e.ci[0], e.ci[1]), e.n


def _where(cal: Calibration, scenario: Scenario) -> list[str]:
    """Warnings about when and against whom the calibration was taken."""
    out = []
    taken = cal.samples_to or cal.created
    age = (scenario.as_of - taken.date()).days
    if age > STALE_DAYS:
        out.append(
            f"calibration taken on {taken.date()} is {age} days older than the scenario's as_of {scenario.as_of} "
            f"(more than {STALE_DAYS}): re-sample, the model or its serving may have changed"
        )
    host = urlparse(cal.base_url).hostname if cal.base_url else None
    seen = provider_of_host(host) if host else ("emulator" if cal.provenance == "emulator" else None)
    if seen == "emulator":
        out.append(
            f"measured on the local emulator{f' ({cal.base_url})' if cal.base_url else ''}, not on "
            f"{scenario.provider}: its laws are the emulator's, not Kimi's"
        )
    elif host and seen is None:
        out.append(f"measured through {cal.base_url} (a gateway or another provider), not {scenario.provider}'s API")
    elif seen is not None and seen != scenario.provider:
        out.append(f"measured on {seen} ({cal.base_url}), but the scenario runs on {scenario.provider}")
    elif seen == "moonshot" and host is not None:
        region = "cn" if host.endswith(".cn") else "intl"
        if region != scenario.resolved_region:
            out.append(
                f"measured on Moonshot {region} ({cal.base_url}); the scenario is priced for {scenario.resolved_region}"
            )
    return out


def same_model(cal_model: str, scenario_model: str) -> bool:
    if cal_model == scenario_model:
        return True
    a, b = canonical_model_or_none(cal_model), canonical_model_or_none(scenario_model)
    return a is not None and a == b


def calibrate_route(
    route: Route,
    rc: RouteCalibration,
    cal: Calibration,
    scenario: Scenario,
    file: str | None,
    *,
    kind: Literal["auto", "lognormal", "mixture", "empirical"] = "auto",
    latency: bool = True,
) -> Route:
    """`route` with what `rc` measured (see the module docstring); `route.calibrated` says what and from where."""
    from kimiplan.model.scenario import Cache, Latency

    pins = set(PIN_QUANTITIES) if "all" in route.pin else set(route.pin)
    upd: dict[str, Any] = {}
    applied: list[str] = []
    diffs: list[Difference] = []
    warns: list[str] = _where(cal, scenario)
    agent = route.agent is not None

    def note(quantity: str, what: str, assumed: float, est, of: str = "calls") -> None:
        if _disagrees(assumed, est):
            used = "assumed" if quantity in pins else "measured"
            diffs.append(
                Difference(
                    quantity=quantity,
                    what=what,
                    assumed=assumed,
                    measured=est[0],
                    ci=est[1],
                    n=est[2],
                    used=used,
                    of=of,
                )
            )

    def take(quantity: str) -> bool:
        return quantity not in pins

    # Server overhead first: the input target below includes it.
    if rc.template_overhead is not None:
        note(
            "server_overhead",
            "hidden server tokens per call",
            route.server_overhead_tokens,
            _from_estimate(rc.template_overhead),
        )
        if take("server_overhead"):
            upd["server_overhead_tokens"] = max(0, int(round(rc.template_overhead.value)))
            applied.append("server_overhead")
    current = route.model_copy(update=upd)

    if rc.prompt_tokens is not None and not agent:
        est = _from_estimate(rc.prompt_tokens)
        note("input", "input tokens per call", input_mean(route), est)
        if take("input"):
            text = _text_mean(current)
            target = rc.prompt_tokens.value - _markers_mean(current) - current.server_overhead_tokens
            if text <= 0:
                warns.append(
                    "measured input not applied: the route has no text components to scale (give system or user)"
                )
            elif target <= 0:
                warns.append(
                    f"measured input not applied: {rc.prompt_tokens.value:,.0f} tokens per call is no more than the "
                    "template's and the server's own tokens"
                )
            else:
                upd.update(_scale_input(current, target / text))
                applied.append("input")
    elif rc.prompt_tokens is None and not agent:
        warns.append("the calibration has no measured prompt size (an older file): the input stays assumed")
    current = route.model_copy(update=upd)

    share = rc.cached_fraction.value if rc.cached_fraction is not None else None
    if share is not None and not agent:
        note("cache", "share of input from cache", cached_share(route), _from_estimate(rc.cached_fraction))
        if take("cache"):
            cache = current.cache if current.cache.mode == "prefix_rule" else Cache()
            with_cache = current.model_copy(update={"cache": cache})
            # Only prompts over min_prompt_tokens can hit (Kimi: 256 tokens), so the hit rate is what gives the
            # measured cached tokens on the prompts that can: with short prompts in the mix it is above the share.
            prefix = _prefix_mean(with_cache)
            hittable = _hittable_prefix_mean(with_cache)
            want = share * input_mean(current)
            if want <= 0:
                upd["cache"] = current.cache.model_copy(update={"hit_rate": 0.0})
                applied.append("cache")
            elif prefix <= 0:
                warns.append(
                    f"measured cached share {percent(share)} not applied: the route has no cacheable prefix "
                    f"({', '.join(current.cache.prefix)} are empty)"
                )
            elif hittable <= 0:
                warns.append(
                    f"measured cached share {percent(share)} not applied: none of the route's prompts (mean "
                    f"{input_mean(current):,.0f} tokens) exceeds cache.min_prompt_tokens "
                    f"({cache.min_prompt_tokens:,}), the least Kimi's prefix cache serves; the calls that hit were "
                    "longer than the scenario's input laws allow"
                )
            else:
                rate = want / hittable
                if rate > 1:
                    short = (
                        f" on prompts over {cache.min_prompt_tokens:,} tokens" if hittable < prefix * (1 - 1e-9) else ""
                    )
                    warns.append(
                        f"measured cached share {percent(share)} exceeds the route's prefix share{short} "
                        f"{percent(hittable / input_mean(current))}: hit rate set to 1 (the cached prefix is larger "
                        "than the scenario's system and history)"
                    )
                    rate = 1.0
                upd["cache"] = cache.model_copy(update={"hit_rate": rate})
                applied.append("cache")
            if rc.calls_per_minute and share > 0:
                route_cpm = scenario.traffic.mean_rps * 60.0 * route.share
                if route_cpm * SPARSE_FACTOR < rc.calls_per_minute:
                    warns.append(
                        f"the sampler sent {number(rc.calls_per_minute)} calls/min, the scenario's traffic averages "
                        f"{number(route_cpm)}: Kimi's prefix cache stays warm only for prefixes seen recently, so the "
                        f"measured cache hits ({percent(share)} of input) may overstate this route's"
                    )

    note("output", "output tokens per call", route.output.mean(), _mean_ci(rc.output))
    if take("output"):
        upd["output"] = component_dist(rc.output, kind)
        applied.append("output")
    if rc.reasoning is not None:
        if route.thinking:
            note("reasoning", "reasoning tokens per call", route.reasoning.mean(), _mean_ci(rc.reasoning))
            if take("reasoning"):
                upd["reasoning"] = component_dist(rc.reasoning, kind)
                applied.append("reasoning")
        elif rc.thinking:
            warns.append("sampled with thinking on, the route has it off: the measured reasoning is not applied")
    elif route.thinking and rc.thinking is False:
        warns.append("sampled with thinking off, the route has it on: its reasoning stays assumed")
    budget = route.max_completion_tokens
    if rc.max_completion_tokens is not None and budget is not None and rc.max_completion_tokens != budget:
        warns.append(
            f"sampled with max_completion_tokens {rc.max_completion_tokens:,}, the route sends {budget:,}: the "
            f"measured truncation ({percent(rc.truncation_rate.value)}) was at the sampler's budget"
        )

    if latency and rc.ttft_s is not None and rc.decode_tps is not None and take("latency"):
        try:
            upd["latency"] = Latency(ttft_s=_latency_law(rc.ttft_s), decode_tps=_latency_law(rc.decode_tps))
            applied.append("latency")
        except (ValueError, ValidationError):
            # Timings of calls a loaded client measured in milliseconds (a sped-up emulator) can give a law no
            # route can hold (decode speeds past 1e9 tokens/s): said, and the assumption kept.
            warns.append(
                f"the measured latency (time to first token {_latency_text(rc.ttft_s, 's')}, decode "
                f"{_latency_text(rc.decode_tps, 'tokens/s')}) is outside what a route can hold: its latency stays "
                "assumed"
            )

    searches = route.tools.web_search_calls.mean() > 0
    functions = rc.function_rounds is not None and rc.function_rounds.value > 0
    tools_upd: dict[str, Any] = {}
    if not agent and functions:
        t = route.tools
        note(
            "tools",
            "function rounds per request",
            t.function_calls.mean(),
            _from_estimate(rc.function_rounds),
            "requests",
        )
        # The observed law when the sampler counted rounds per request; a log gives the mean only.
        counts = rc.function_round_counts
        law = _count_law(counts) if counts else Poisson(mean=rc.function_rounds.value)
        tools_upd["function_calls"] = law
        for field, what in (
            ("function_call_tokens", "tokens per function call message"),
            ("function_result_tokens", "tokens of function results per round"),
        ):
            measured = getattr(rc, field)
            if measured is not None:
                note("tools", what, getattr(t, field).mean(), _mean_ci(measured), "rounds")
                tools_upd[field] = component_dist(measured, kind)
        if rc.tool_rounds_cut:
            warns.append(
                f"{rc.tool_rounds_cut} of {rc.n} sampled requests still called tools at their last recorded call "
                "(the sampler's max_tool_rounds, spend cap or an error stopped them): rounds per request are a "
                "lower bound"
            )
    # Rounds the samples made beyond their function rounds were searches.
    search_rounds = rc.tool_rounds
    if search_rounds is not None and functions:
        v = max(search_rounds.value - rc.function_rounds.value, 0.0)
        search_rounds = search_rounds.model_copy(
            update={
                "value": v,
                "ci": (
                    max(search_rounds.ci[0] - rc.function_rounds.value, 0.0),
                    max(search_rounds.ci[1] - rc.function_rounds.value, 0.0),
                ),
            }
        )
    if not agent and not searches and search_rounds is not None and search_rounds.value > 0:
        warns.append(
            f"the samples made {search_rounds.value:.2f} tool rounds per request that were not function rounds; "
            "the route has no $web_search (tools.web_search_calls), so those rounds stay out of its figures"
        )
    elif not agent and searches and (search_rounds is not None or rc.tool_result_tokens is not None):
        if search_rounds is not None:
            note("tools", "tool rounds per request", route.tools.web_search_calls.mean(), _from_estimate(search_rounds))
            tools_upd["web_search_calls"] = Poisson(mean=max(search_rounds.value, 0.0))
        if rc.tool_result_tokens is not None:
            note(
                "tools",
                "tokens per tool result",
                route.tools.result_tokens.mean(),
                _from_estimate(rc.tool_result_tokens),
            )
            tools_upd["result_tokens"] = Fixed(value=max(rc.tool_result_tokens.value, 0.0))
    if tools_upd and take("tools"):
        upd["tools"] = route.tools.model_copy(update=tools_upd)
        applied.append("tools")
    if agent:
        a = route.agent
        if rc.agent_steps is not None:
            note("agent_steps", "steps per run", a.steps.mean(), _from_estimate(rc.agent_steps))
        if rc.context_growth_tokens is not None:
            note(
                "agent_context",
                "context tokens added per step",
                a.tool_result_tokens.mean(),
                _from_estimate(rc.context_growth_tokens),
            )
        if rc.agent_steps is None:
            warns.append("agent route: steps per run and context growth were not measured and stay assumed")

    # The precision of the measured mean cost travels with the route, so every forecast of it carries it; a
    # route that pins every quantity its cost rests on keeps its assumptions, and no sampling error with them.
    prec: dict[str, Any] = {}
    p = rc.precision
    if p is not None and set(applied) & COST_QUANTITIES:
        m, rm = p.cost_per_request.value, p.reservation_tokens.value
        prec = {
            "confidence": p.confidence,
            "cost_rel_se": p.cost_se / m if m > 0 else 0.0,
            "cost_rel_error": p.cost_rel_error,
            "reservation_rel_se": p.reservation_se / rm if rm > 0 else 0.0,
            "reservation_rel_error": p.reservation_rel_error,
        }
    extra = sorted(set(cal.routes) - {r.name for r in scenario.routes})
    if extra:
        warns.append(
            f"calibration file {file or '(in memory)'} also has route(s) {', '.join(extra)} that this scenario lacks"
        )
    upd["calibrated"] = CalibratedFrom(
        file=file,
        calls=rc.n,
        samples_from=cal.samples_from,
        samples_to=cal.samples_to,
        model=cal.model,
        provenance=cal.provenance,
        base_url=cal.base_url,
        applied=tuple(applied),
        pinned=tuple(q for q in PIN_QUANTITIES if q in pins),
        differences=tuple(diffs),
        warnings=tuple(dict.fromkeys(warns)),
        **prec,
    )
    return route.model_copy(update=upd)


def _latency_law(fit: LogNormalFit | FixedFit):
    return Fixed(value=fit.value) if isinstance(fit, FixedFit) else LogNormal(median=fit.median, p95=fit.p95)


def _latency_text(fit: LogNormalFit | FixedFit, unit: str) -> str:
    if isinstance(fit, FixedFit):
        return f"always {fit.value:,.3g} {unit}"
    return f"median {fit.median:,.3g} {unit}, p95 {fit.p95:,.3g}"


def apply_calibration(
    scenario: Scenario,
    calibration: Calibration | str | Path | None = None,
    *,
    kind: Literal["auto", "lognormal", "mixture", "empirical"] = "auto",
    latency: bool = True,
    origin: str | None = None,
) -> Scenario:
    """The scenario with its calibration applied (see the module docstring).

    `calibration=None`: each route's own `calibration:` file, else the scenario's; a route that names none stays
    assumed. A calibration given here applies to every route it covers (others stay assumed). A file that is
    missing, unreadable or for another model, and (from the scenario's own fields) a file without the route, are
    errors naming the file and the route."""
    explicit = calibration is not None
    cache: dict[str, Calibration] = {}
    where = f"{origin}: " if origin else ""

    def get(ref) -> tuple[Calibration, str | None]:
        if isinstance(ref, Calibration):
            return ref, None
        key = str(ref)
        if key not in cache:
            try:
                cache[key] = load_calibration(ref)
            except Exception as exc:  # noqa: BLE001 - re-raised with the scenario's name
                raise ConfigError(f"{where}{exc}") from None
        return cache[key], key

    routes = []
    for route in scenario.routes:
        ref = calibration if explicit else (route.calibration or scenario.calibration)
        if ref is None:
            routes.append(route)
            continue
        cal, file = get(ref)
        label = file or "(in memory)"
        if not same_model(cal.model, scenario.model):
            raise ConfigError(
                f"{where}route {route.name!r}: calibration file {label} was measured on model {cal.model!r}, the "
                f"scenario runs {scenario.model!r}"
            )
        rc = cal.routes.get(route.name)
        if rc is None:
            own = route.calibration is not None and not explicit
            if explicit or "all" in route.pin or (not own and route.agent is not None):
                routes.append(route)
                continue
            raise ConfigError(
                f"{where}route {route.name!r}: calibration file {label} has no route of that name (it has "
                f"{', '.join(sorted(cal.routes)) or 'none'}); sample it, or write pin: [all] on the route to keep "
                "its assumptions"
            )
        routes.append(calibrate_route(route, rc, cal, scenario, file, kind=kind, latency=latency))
    return scenario.model_copy(update={"routes": tuple(routes)})
