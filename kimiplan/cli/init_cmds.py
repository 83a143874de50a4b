"""`kimiplan init [FILE]`: write a commented starter scenario from a few questions (or flags), checked before
it is written, so a newcomer starts from a file that validates instead of copying an example."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

from kimiplan.catalog.cards import load_catalog
from kimiplan.errors import ConfigError
from kimiplan.io.export import atomic_write

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


def _ask(prompt: str, default: str, interactive: bool) -> str:
    if not interactive:
        return default
    answer = input(f"{prompt} [{default}]: ").strip()
    return answer or default


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
        growth=f"{growth:g}",
        timezone=timezone,
        route=_ROUTE[kind],
    )


def cmd_init(args) -> int:
    from kimiplan.catalog.resolve import load_scenario

    out = Path(args.output)
    if out.exists() and not args.force:
        raise ConfigError(f"{out} exists; pass --force to replace it (or choose another file)")
    interactive = sys.stdin.isatty() and not args.yes
    if interactive:
        print("A few questions (Enter keeps the default in brackets).")
    name = args.name or _ask("scenario name", out.stem.replace("_", "-"), interactive)
    kind = args.kind or _ask(f"kind of application ({' / '.join(KINDS)})", "rag", interactive)
    per_day = args.requests_per_day
    if per_day is None:
        raw = _ask("requests per day", "10000", interactive)
        try:
            per_day = float(raw.replace(",", "").replace("_", ""))
        except ValueError:
            raise ConfigError(f"requests per day must be a number, got {raw!r}") from None
    if not per_day > 0:
        raise ConfigError(f"--requests-per-day must be > 0, got {per_day:g}")
    growth = args.growth if args.growth is not None else float(_ask("monthly growth (0.05 = 5 %)", "0.05", interactive))
    tier = args.tier or _ask("your Moonshot rate tier", "Tier1", interactive)
    catalog = load_catalog()
    if args.model not in catalog.models(args.provider, args.region):
        raise ConfigError(
            f"--model {args.model!r} is not in the catalog for {args.provider}/{args.region}; "
            f"known: {', '.join(catalog.models(args.provider, args.region))}"
        )
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
    )

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")
        load_scenario(tmp, catalog)  # a starter that does not validate is never written

    atomic_write(out, write, ".yaml")
    print(f"wrote {out}: {kind} scenario {name!r}, {per_day:,.0f} requests/day on {args.model} ({tier})")
    print(f"next: edit the token sizes, then `kimiplan report {out} -o report.html`")
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
    p.add_argument("--requests-per-day", type=float, help="traffic today (asked; default 10000)")
    p.add_argument("--growth", type=float, help="compound monthly growth, 0.05 = 5 %% (asked; default 0.05)")
    p.add_argument("--tier", help="your Moonshot rate tier (asked; default Tier1)")
    p.add_argument("--provider", default="moonshot")
    p.add_argument("--region", default="intl", help="intl (USD) or cn (CNY) for moonshot")
    p.add_argument("--model", default="kimi-k2.6", help="exact model ID from `kimiplan prices`")
    p.add_argument("--timezone", default="UTC", help="timezone of the hourly profile, e.g. Asia/Singapore")
    p.add_argument("-y", "--yes", action="store_true", help="ask nothing: defaults for every unanswered question")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.set_defaults(func=cmd_init)
