"""`kimiplan init [FILE]`: write a commented starter scenario from a few questions (or flags), checked before
it is written, so a newcomer starts from a file that validates instead of copying an example."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

from kimiplan.errors import ConfigError

KINDS = {
    "chat": "a chat assistant: conversation history, short answers",
    "rag": "a chat assistant answering from retrieved documents (RAG)",
    "agent": "an agent: long prompts, tool calls, thinking on",
}

_ROUTE = {
    "chat": """  - name: chat
    share: 1.0
    description: Answer the user's message given the conversation so far.
    thinking: false
    system: 800                      # tokens in the system prompt (count yours: kimiplan tokens count --file F)
    history: {turns: {kind: poisson, mean: 3}, tokens_per_turn: {kind: lognormal, median: 150, p95: 500}}
    user: {kind: lognormal, median: 40, p95: 160}
    output: {kind: lognormal, median: 200, p95: 600}
    max_completion_tokens: 1024      # counts against TPM whatever is generated: keep it tight
    cache: {mode: prefix_rule, prefix: [system, history], hit_rate: 0.9}
""",
    "rag": """  - name: answer
    share: 1.0
    description: Answer a question from retrieved chunks and the conversation so far.
    thinking: false
    system: 1500                     # tokens in the system prompt (count yours: kimiplan tokens count --file F)
    history: {turns: {kind: poisson, mean: 2.5}, tokens_per_turn: {kind: lognormal, median: 180, p95: 600}}
    rag: {top_k: 5, chunk_tokens: {kind: lognormal, median: 350, p95: 700}}
    user: {kind: lognormal, median: 40, p95: 160}
    output: {kind: lognormal, median: 220, p95: 650}
    max_completion_tokens: 2048      # counts against TPM whatever is generated: keep it tight
    cache: {mode: prefix_rule, prefix: [system, history], hit_rate: 0.9}
    # With Kimi's builtin $web_search (thinking must be off), each search is one more round trip:
    # tools: {web_search_calls: {kind: poisson, mean: 1.0}, result_tokens: 3000}
    # Your own function tools (thinking may stay on), rounds per request and what each round adds:
    # tools: {function_calls: {kind: poisson, mean: 1.0}, function_call_tokens: 40, function_result_tokens: 800}
""",
    "agent": """  - name: agent_step
    share: 1.0
    description: One step of a tool-using agent over a growing transcript.
    thinking: true                   # reasoning tokens are billed as output
    system: 3000
    history: {turns: {kind: poisson, mean: 8}, tokens_per_turn: {kind: lognormal, median: 400, p95: 1500}}
    user: {kind: lognormal, median: 60, p95: 300}
    output: {kind: lognormal, median: 300, p95: 1200}
    reasoning: {kind: lognormal, median: 800, p95: 4000}
    max_completion_tokens: 8192
    cache: {mode: prefix_rule, prefix: [system, history], hit_rate: 0.8}
""",
}

TEMPLATE = """# kimiplan scenario, written by `kimiplan init` on {today}.
# Every number below is an assumption until you calibrate it (notebook 04, `kimiplan calibrate`).
# Check it:   kimiplan validate {path}
# Use it:     kimiplan report {path} -o report.html   (or plan / forecast / simulate)
# All fields: kimiplan schema
name: {name}
description: {description}
provider: {provider}
region: {region}                     # moonshot: intl (USD, platform.moonshot.ai) or cn (CNY)
model: {model}                  # an exact model ID from `kimiplan prices`
tier: {tier}                        # your rate tier (`kimiplan tiers`); `kimiplan plan` says which one holds
as_of: {today}                   # prices and tiers in force on this date
seed: 1                              # makes every sampled figure reproducible
tax_rate: 0.0                        # e.g. 0.09 to add 9 % to every amount
traffic:
  requests_per_day: {per_day}
  timezone: {timezone}
  # Relative load per hour of the day (24 values; the busiest minute drives RPM/TPM headroom).
  hourly_profile: [0.2, 0.15, 0.1, 0.1, 0.1, 0.2, 0.4, 0.8, 1.3, 1.7, 1.9, 1.8,
                   1.5, 1.6, 1.8, 1.9, 1.7, 1.4, 1.1, 0.9, 0.8, 0.6, 0.4, 0.3]
  weekday_factors: [1.1, 1.1, 1.1, 1.05, 1.0, 0.8, 0.75]   # Monday first
  monthly_growth: {growth}                # compound growth per month (0.05 = +5 %)
  # bursts: [{{start: "10:00", minutes: 15, factor: 1.8}}]   # a daily spike on top of the profile
routes:                              # shares add up to 1; add a route per kind of call
{route}"""


MAX_TRIES = 5  # then the wizard stops, naming the question; nothing is written


def _ask(prompt: str, default: str, interactive: bool, parse=lambda x: x, choices: str = ""):
    """Ask until `parse` accepts the answer (Enter takes the default); a bad answer is explained, the valid
    choices are shown, and the question comes again. No answer left (end of input) takes the default."""
    if not interactive:
        return parse(default)
    for _ in range(MAX_TRIES):
        try:
            answer = input(f"{prompt} [{default}]: ").strip()
        except EOFError:
            print()
            answer = ""
        try:
            return parse(answer or default)
        except ValueError as exc:
            print(f"  {exc}" + (f" ({choices})" if choices and choices not in str(exc) else ""))
    raise ConfigError(f"no usable answer to {prompt!r} after {MAX_TRIES} tries; nothing was written")


_SUFFIX = {"k": 1e3, "m": 1e6, "b": 1e9}


def parse_count(text: str | float) -> float:
    """50000, 50,000, 50 000, 50_000, 50k, 1.2M, "50k/day"; > 0."""
    if isinstance(text, (int, float)):
        x = float(text)
    else:
        t = str(text).strip().lower().replace(",", "").replace("_", "").replace(" ", "")
        for tail in ("/day", "perday", "requests", "req"):
            t = t.removesuffix(tail)
        mult = 1.0
        if t[-1:] in _SUFFIX:
            mult, t = _SUFFIX[t[-1]], t[:-1]
        try:
            x = float(t) * mult
        except ValueError:
            raise ValueError(f"{text!r} is not a number of requests a day; e.g. 50000, 50,000 or 50k") from None
    if not (x > 0 and x < float("inf")):
        raise ValueError(f"requests per day must be more than 0, got {text!r}")
    return x


def parse_growth(text: str | float) -> float:
    """5%, 0.05, -2% ; a bare 5 is questioned ("did you mean 5 %?"), the scenario's own rule."""
    from kimiplan.model.scenario import MAX_GROWTH
    from kimiplan.model.units import parse_fraction

    x = parse_fraction(text, 1.0, "growth")
    if not isinstance(x, float | int) or not -1 < x <= MAX_GROWTH:
        raise ValueError(f"monthly growth must be above -100 % and at most {MAX_GROWTH * 100:,.0f} %, got {text!r}")
    return float(x)


def _kind(text: str) -> str:
    t = text.strip().lower()
    if t in KINDS:
        return t
    raise ValueError(f"{text!r} is not a kind of application; one of {', '.join(KINDS)}")


def tier_parser(names: list[str]):
    """Tier 2, tier2, TIER 2, 2 -> the catalog's spelling (Tier2); anything else lists the tiers."""

    def parse(text: str) -> str:
        t = str(text).strip()
        key = t.lower().replace(" ", "").replace("_", "").replace("-", "")
        for n in names:
            k = n.lower().replace(" ", "").replace("_", "").replace("-", "")
            if key == k or key == k.removeprefix("tier"):
                return n
        raise ValueError(f"{t!r} is not a rate tier here; one of {', '.join(names)}")

    return parse


def render(
    *,
    name: str,
    kind: str,
    per_day: float,
    provider: str = "moonshot",
    region: str = "intl",
    model: str = "kimi-k2.6",
    tier: str = "Tier1",
    growth: float = 0.0,
    timezone: str = "UTC",
    path: str = "scenario.yaml",
    today: dt.date | None = None,
) -> str:
    if kind not in KINDS:
        raise ConfigError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return TEMPLATE.format(
        today=(today or dt.date.today()).isoformat(),
        path=path,
        name=json.dumps(name),
        description=json.dumps(KINDS[kind][0].upper() + KINDS[kind][1:] + "."),  # a JSON string is valid YAML
        provider=provider,
        region=region,
        model=model,
        tier=tier,
        per_day=f"{per_day:g}",
        # Above 100 % a month the scenario wants the unit written out.
        growth=f"{growth:g}" if abs(growth) <= 1 else f'"{growth * 100:g}%"',
        timezone=timezone,
        route=_ROUTE[kind],
    )


def cmd_init(args) -> int:
    from kimiplan.catalog.cards import load_catalog
    from kimiplan.catalog.resolve import load_scenario
    from kimiplan.errors import ScenarioError
    from kimiplan.io.export import atomic_write
    from kimiplan.io.formats import percent

    out = Path(args.output)
    if out.exists() and not args.force:
        raise ConfigError(f"{out} exists; pass --force to replace it (or choose another file)")
    interactive = (sys.stdin.isatty() or args.ask) and not args.yes
    catalog = load_catalog()
    if args.model not in catalog.models(args.provider, args.region):
        raise ConfigError(
            f"--model {args.model!r} is not in the catalog for {args.provider}/{args.region}; "
            f"known: {', '.join(catalog.models(args.provider, args.region))}"
        )
    today = dt.date.today()
    tiers = [t.name for t in catalog.tiers(args.provider, args.region, today)] or ["Tier1"]
    if interactive:
        print("A few questions (Enter keeps the default in brackets).")
    name = args.name or _ask("scenario name", out.stem.replace("_", "-"), interactive)
    kinds = " / ".join(KINDS)
    kind = _kind(args.kind) if args.kind else _ask(f"kind of application ({kinds})", "rag", interactive, _kind)
    try:
        per_day = parse_count(args.requests_per_day) if args.requests_per_day is not None else None
        growth = parse_growth(args.growth) if args.growth is not None else None
        tier = tier_parser(tiers)(args.tier) if args.tier else None
    except ValueError as exc:
        raise ConfigError(f"kimiplan init: {exc}") from None
    if per_day is None:
        per_day = _ask("requests per day (e.g. 50000 or 50k)", "10000", interactive, parse_count)
    if growth is None:
        growth = _ask("monthly growth (e.g. 5%)", "5%", interactive, parse_growth)
    if tier is None:
        default = "Tier1" if "Tier1" in tiers else tiers[0]
        tier = _ask(f"your {args.provider} rate tier", default, interactive, tier_parser(tiers), ", ".join(tiers))
    text = render(
        name=name,
        kind=kind,
        per_day=per_day,
        provider=args.provider,
        region=args.region,
        model=args.model,
        tier=tier,
        growth=growth,
        timezone=args.timezone,
        path=str(out),
        today=today,
    )

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")
        try:
            load_scenario(tmp, catalog)  # a starter that does not validate is never written
        except ScenarioError as exc:
            # The message names the file the user asked for, not the temporary one beside it.
            raise ScenarioError(str(exc).replace(str(tmp), str(out))) from None

    atomic_write(out, write, ".yaml")
    print(
        f"wrote {out}: {kind} scenario {name!r}, {per_day:,.0f} requests/day growing "
        f"{percent(growth, trim=True)} a month, on {args.model} ({tier})"
    )
    html = out.with_suffix(".html")
    print("next: edit the token sizes (they are assumptions), then run")
    print(f"  kimiplan report {out} -o {html} --budget 5000 --balance 20000")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "init",
        help="write a commented starter scenario from a few questions (or flags)",
        description="Write a commented starter scenario file that validates. Asks a few questions on a terminal; "
        "flags answer them (with --yes every unanswered question takes its default).",
    )
    p.add_argument("output", nargs="?", default="scenario.yaml", help="file to write")
    p.add_argument("--name", help="scenario name (default: the file name)")
    p.add_argument("--kind", choices=list(KINDS), help="starting shape of the routes (asked; default rag)")
    p.add_argument("--requests-per-day", help="traffic today: 50000 or 50k (asked; default 10000)")
    p.add_argument("--growth", help="compound monthly growth: 5%% or 0.05 (asked; default 5%%)")
    p.add_argument("--tier", help="your rate tier: Tier2 or 'tier 2' (asked; default Tier1)")
    p.add_argument("--provider", default="moonshot")
    p.add_argument("--region", default="intl", help="intl (USD) or cn (CNY) for moonshot")
    p.add_argument("--model", default="kimi-k2.6", help="exact model ID from `kimiplan prices`")
    p.add_argument("--timezone", default="UTC", help="timezone of the hourly profile, e.g. Asia/Singapore")
    p.add_argument("-y", "--yes", action="store_true", help="ask nothing: defaults for every unanswered question")
    p.add_argument("--ask", action="store_true", help="ask even when standard input is not a terminal (a script)")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.set_defaults(func=cmd_init)
