"""`kimiplan prices` and `kimiplan tiers`: the dated catalog as tables or JSON."""

from __future__ import annotations

from ._util import parse_date, print_json, print_table

_PRICE_COLUMNS = ("input_cache_hit", "input_cache_miss", "input_cache_write_5m", "input_cache_write_1h", "output")
_PRICE_COLUMNS += ("web_search_per_call",)


def _common(p):
    p.add_argument("--provider", help="moonshot, cloudflare, fireworks, openrouter, siliconflow (default: all)")
    p.add_argument("--region", help="intl or cn for moonshot; global for the others")
    p.add_argument("--on", metavar="YYYY-MM-DD", help="only rows in force on this date (default: all rows, with dates)")
    p.add_argument(
        "--catalog",
        action="append",
        default=[],
        metavar="FILE",
        help="extra catalog file (TOML/YAML rows, or LiteLLM JSON); repeatable",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _filter(df, args):
    if args.provider:
        df = df[df["provider"] == args.provider]
    if args.region:
        df = df[df["region"] == args.region]
    return df


def _places(values) -> int:
    """Decimals that show every price in the column exactly (a card's $0.135 is not rounded to $0.14): 2 to 6."""
    for d in range(2, 7):
        if all(abs(v * 10**d - round(v * 10**d)) < 1e-6 for v in values.dropna()):
            return d
    return 6


def _by_currency(df, column: str):
    """(currency, rows) in the order the currencies first appear; rows without one last, as None."""
    seen = list(dict.fromkeys(df[column].dropna()))
    out = [(c, df[df[column] == c]) for c in seen]
    rest = df[df[column].isna()]
    return out + ([(None, rest)] if len(rest) else [])


_COUNTS = ("context_window", "default_max_completion_tokens", "max_output_tokens", "concurrency", "rpm", "tpm")
_COUNTS += ("tpd", "rpd", "neurons_input_per_m", "free_neurons_per_day")


def _records(df) -> list[dict]:
    """Rows as plain values: dates as YYYY-MM-DD (facts are dated by day), counts as integers, missing as null."""

    def plain(k, v):
        if v is None or (isinstance(v, float) and v != v):
            return None
        if k in _COUNTS and isinstance(v, float):
            return int(v)
        return v

    return [{k: plain(k, v) for k, v in r.items()} for r in df.to_dict(orient="records")]


def cmd_prices(args) -> int:
    from kimiplan.catalog.cards import load_catalog
    from kimiplan.io.formats import ColumnFormat, header, symbol  # pandas: loaded when the command runs

    df = _filter(load_catalog(args.catalog).prices_frame(parse_date(args.on)), args)
    if args.json:
        print_json(_records(df))
    else:
        cols = ["provider", "region", "model", "currency", *_PRICE_COLUMNS, "batch_multiplier", "context_window"]
        cols += ["effective_from", "effective_to", "verified_on", "official"]
        # One table per currency, so every price carries its symbol ($0.16, ¥1.10) and its unit in the header.
        for cur, group in _by_currency(df[cols], "currency"):
            sym = symbol(cur) or cur
            formats = {
                c: ColumnFormat("money", cur, _places(group[c]), header=f"{header(c)} ({sym}/1M)")
                for c in _PRICE_COLUMNS
            }
            formats["web_search_per_call"] = ColumnFormat(
                "money", cur, _places(group["web_search_per_call"]), header=f"Web search ({sym}/call)"
            )
            formats["batch_multiplier"] = ColumnFormat("multiple", header="Batch price (×)")
            print_table(group, formats=formats, title=f"Prices in {cur}")
            print()
        print(
            "Prices per 1M tokens; web_search per call, as in force on --on (default today). Empty cache write ="
            " writes cost nothing extra. Sources: kimiplan prices --json (fields 'source', 'cache_write_source',"
            " 'web_search_source')."
        )
    return 0


def cmd_tiers(args) -> int:
    from kimiplan.catalog.cards import load_catalog

    df = _filter(load_catalog(args.catalog).tiers_frame(parse_date(args.on)), args)
    if args.json:
        print_json(_records(df))
    else:
        cols = ["provider", "region", "tier", "version", "concurrency", "rpm", "tpm", "tpd", "rpd", "recharge"]
        cols += ["recharge_currency", "effective_from", "effective_to", "verified_on", "official"]
        # One table per recharge currency: the recharge reads $100.00 or ¥500.00, never a bare 100.00.
        for cur, group in _by_currency(df[cols], "recharge_currency"):
            if cur is None:
                group = group.drop(columns=["recharge", "recharge_currency"])
            print_table(group, title=f"Recharge in {cur}" if cur else "No recharge ladder")
            print()
        print("Empty limit = not limited. Sources: kimiplan tiers --json (field 'source').")
    return 0


def register(sub) -> None:
    p = sub.add_parser("prices", help="price cards per 1M tokens, with source and dates")
    _common(p)
    p.set_defaults(func=cmd_prices)
    p = sub.add_parser("tiers", help="rate-limit tiers (concurrency, RPM, TPM, TPD), with source and dates")
    _common(p)
    p.set_defaults(func=cmd_tiers)
