"""`kimiplan cost`: the exact cost of one response's usage."""

from __future__ import annotations

from ._util import parse_date, print_json


def cmd_cost(args) -> int:
    from kimiplan.catalog.cards import load_catalog
    from kimiplan.finance.cost import Usage, cost_of_usage
    from kimiplan.io.formats import money

    catalog = load_catalog(args.catalog)
    card = catalog.price(args.model, args.provider, args.region, parse_date(args.on))
    usage = Usage(
        args.prompt_tokens, args.completion_tokens, args.cached_tokens, args.web_search_calls, args.cache_write_tokens
    )
    result = cost_of_usage(
        usage, card, batch=args.batch, tax_rate=args.tax_rate, cache_retention=args.cache_retention
    ).to_dict()
    result.update(
        {
            "model": card.model,
            "provider": card.provider,
            "region": card.region,
            "batch": args.batch,
            "prices_per_million": {
                "input_cache_hit": float(card.cache_hit_price),
                "input_cache_write": float(card.cache_write_price(args.cache_retention)),
                "input_cache_miss": float(card.input_cache_miss),
                "output": float(card.output),
                "web_search_per_call": float(card.web_search_per_call),
            },
            "paid_cache_writes": card.paid_cache_writes,
            "prices_exclude_tax": card.prices_exclude_tax,
            "price_source": card.source,
            "price_verified_on": card.verified_on.isoformat(),
            "price_official": card.official,
        }
    )
    if args.json:
        print_json(result)
    else:
        exact = float(result["total_exact"])
        print(
            f"{money(exact, card.currency)}  (exact {result['total_exact']} {card.currency}, billed to the cent "
            f"{result['total_rounded']}; {card.provider}/{card.region} {card.model}, "
            f"prices verified {card.verified_on})"
        )
        if card.prices_exclude_tax and not args.tax_rate:
            print("note: the source says these prices exclude taxes; pass --tax-rate to add yours")
    return 0


def _count(value: str) -> int:
    import argparse

    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of tokens, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {n}")
    return n


def register(sub) -> None:
    p = sub.add_parser("cost", help="exact cost of a response's usage (prompt, cached, completion, tool calls)")
    p.add_argument("--model", required=True, help="exact model ID, e.g. kimi-k2.6")
    p.add_argument("--provider", default="moonshot")
    p.add_argument("--region", help="intl (USD) or cn (CNY) for moonshot")
    p.add_argument("--prompt-tokens", type=_count, required=True, help="usage.prompt_tokens (includes cached tokens)")
    p.add_argument("--cached-tokens", type=_count, default=0, help="usage.cached_tokens")
    p.add_argument(
        "--completion-tokens", type=_count, required=True, help="usage.completion_tokens (includes reasoning)"
    )
    p.add_argument("--web-search-calls", type=_count, default=0, help="$web_search calls billed")
    p.add_argument(
        "--cache-write-tokens",
        type=_count,
        default=0,
        help="prompt tokens written to the cache (K3 family: a paid write; part of --prompt-tokens)",
    )
    p.add_argument(
        "--cache-retention",
        choices=("5m", "1h"),
        default="5m",
        help="retention of the cache write: 5 minutes (1x input price) or 1 hour (2x) (default 5m)",
    )
    p.add_argument("--batch", action="store_true", help="Batch API price (60%%)")
    p.add_argument("--tax-rate", type=float, default=0.0)
    p.add_argument("--on", metavar="YYYY-MM-DD", help="prices as of this date (default today)")
    p.add_argument("--catalog", action="append", default=[], metavar="FILE")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cost)
