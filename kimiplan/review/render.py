"""How a `PlanDiff` reads: the lead line, a plain-text table for a terminal, a pull-request comment in GitHub
Markdown, and HTML for a notebook (the same Markdown, rendered by markdown-it).

The comment follows GitHub's table rules: a header row and a delimiter row, one line per row, `|` inside a cell
escaped, no block content inside cells; details fold into `<details>` blocks with a blank line after
`<summary>` so that the Markdown inside them renders. It starts with a hidden marker (`MARKER`) by which CI
finds and updates its own previous comment.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from kimiplan import __version__
from kimiplan.capacity.result import growth_multiple
from kimiplan.io.formats import money, number, percent
from kimiplan.review.causes import Effect, FieldChange
from kimiplan.review.snapshot import TOKEN_PARTS

if TYPE_CHECKING:
    from kimiplan.review.diff import PlanDiff, RouteDiff

MARKER = "<!-- kimiplan-diff -->"
ARROW = "→"
DASH = "—"


# ---------------------------------------------------------------- numbers


def _cur(d: PlanDiff, v: float) -> str:
    return money(v, d.currency, decimals=0 if abs(v) >= 100 else 2)


def _signed_money(d: PlanDiff, v: float) -> str:
    s = _cur(d, v)
    return f"+{s}" if v > 0 else s


def _signed_pct(v: float) -> str:
    if 0 < abs(v) < 0.0005:
        return "under +0.1 %" if v > 0 else "under −0.1 %"
    s = percent(v, decimals=1 if abs(v) < 0.1 else 0, trim=True)
    return f"+{s}" if v > 0 else s


def _signed_num(v: float) -> str:
    s = number(round(v))
    return s if round(v) <= 0 else f"+{s}"


def _limit(name: str | None) -> str:
    if name is None:
        return "none"
    return name if name == "concurrency" else name.upper()


def _share(v: float | None) -> str:
    return DASH if v is None else percent(v, trim=True)


def _headroom(acct) -> str:
    """The account's headroom as the report's cards write it ("1.37×", "none", "unbounded")."""
    return growth_multiple(acct.growth_headroom)


def _headroom_change(a, b) -> str:
    """Headroom before -> after; each side names its tier when the tier changed."""
    if a.tier == b.tier or a.tier is None:
        return _arrow(_headroom(a), _headroom(b))
    return f"on {a.tier} {_headroom(a)} {ARROW} on {b.tier} {_headroom(b)}"


def _month_label(month: str) -> str:
    import datetime as dt

    return f"{dt.date.fromisoformat(month + '-01'):%b %Y}"


def _holds(tier: str | None, holds: bool | None, smallest: str | None = None) -> str:
    if tier is None:
        return f"no tier set (smallest that holds: {smallest})" if smallest else "no tier set"
    return f"{tier} {'holds' if holds else 'does not hold'}"


def _value(v: Any) -> str:
    """A scenario field's value as a reader writes it."""
    if v is None:
        return "(unset)"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return number(v)
    if isinstance(v, dict) and "kind" in v:
        if v["kind"] == "fixed":
            return number(v["value"])
        args = ", ".join(f"{k} {_value(x)}" for k, x in v.items() if k != "kind" and x is not None)
        return f"{v['kind']}({args})"
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v[:4]) + (f", … {len(v)} values]" if len(v) > 4 else "]")
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def _arrow(before: str, after: str) -> str:
    return before if before == after else f"{before} {ARROW} {after}"


# ---------------------------------------------------------------- the lead line


def _capacity_phrase(d: PlanDiff) -> str:
    a, b = d.base.account, d.head.account
    if not a.exists:
        tail = f", {_limit(b.binding_limit)} binds" if b.tier is not None and b.binding_limit else ""
        return f"capacity: {_holds(b.tier, b.holds)}{tail}"
    if not b.exists:
        return f"capacity: was {_holds(a.tier, a.holds)}"
    if a.tier is None and b.tier is None:
        return "capacity: no tier set"
    left, right = _holds(a.tier, a.holds, a.smallest_tier), _holds(b.tier, b.holds, b.smallest_tier)
    if a.tier == b.tier and a.holds != b.holds:
        right = "holds" if b.holds else "does not hold"
    s = f"capacity: {_arrow(left, right)}"
    if b.tier is None:
        return s
    hr = "" if b.growth_headroom is None else f" (headroom {_headroom(b)})"
    if a.growth_headroom is not None and b.growth_headroom is not None:
        hr = f" (headroom {_headroom_change(a, b)})"
    if a.binding_limit is not None and a.binding_limit != b.binding_limit and b.binding_limit is not None:
        s += f", {_limit(b.binding_limit)} now binds{hr}"
    elif b.binding_limit is not None:
        s += f", {_limit(b.binding_limit)} binds{hr}"
    return s


def lead(d: PlanDiff) -> str:
    """One line: the monthly cost change with its band, then the capacity verdict before -> after."""
    if not d.base.account.exists:
        cost = f"monthly cost {_signed_money(d, d.cost_delta)} (new scenario)"
    elif d.cost_delta == 0:
        cost = f"monthly cost unchanged ({_cur(d, d.cost_after)})"
    else:
        pct = "" if d.cost_percent is None else f" ({_signed_pct(d.cost_percent)})"
        cost = f"monthly cost {_signed_money(d, d.cost_delta)}{pct}"
    lo, hi = d.band["P10"], d.band["P90"]
    band = f", P10–P90 {_signed_money(d, lo)} … {_signed_money(d, hi)}" if (lo, hi) != (0.0, 0.0) else ""
    return f"{cost}{band}; {_capacity_phrase(d)}"


# ---------------------------------------------------------------- effects and causes


def effect_text(d: PlanDiff, e: Effect) -> str:
    f = e.figure
    if f == "tpm_reservation":
        if e.before is None:
            return f"TPM reservation {number(round(e.after))} per request"
        if e.after is None:
            return f"TPM reservation −{number(round(e.before))} per request"
        return f"TPM reservation {_signed_num(e.delta)} per request"
    if f.startswith("tokens."):
        return f"{f.split('.', 1)[1]} tokens {_signed_num(e.delta)} per request"
    if f == "cost_per_request":
        return f"{_cur(d, e.before)} {ARROW} {_cur(d, e.after)} per request"
    if f == "cost_per_month":
        what = "cost" if e.route else "monthly cost"
        return f"{what} {_signed_money(d, e.delta)}/month" if e.route else f"{what} {_signed_money(d, e.delta)}"
    if f == "route_binding_limit":
        return f"its largest load moves from {_limit(e.before)} to {_limit(e.after)}"
    if f == "binding_limit":
        return f"binding limit {_limit(e.before)} {ARROW} {_limit(e.after)}"
    if f == "holds":
        return f"tier {'holds' if e.before else 'does not hold'} {ARROW} {'holds' if e.after else 'does not hold'}"
    if f == "growth_headroom":
        return f"headroom {growth_multiple(e.before)} {ARROW} {growth_multiple(e.after)}"
    if f == "requests_per_day":
        return f"requests/day {number(e.before)} {ARROW} {number(e.after)}"
    return f"{f} {_value(e.before)} {ARROW} {_value(e.after)}"


def change_text(c: FieldChange, code: bool = True) -> str:
    if c.path == "routes":
        return f"route added: {c.after}" if c.before is None else f"route removed: {c.before}"
    name = f"`{c.path}`" if code else c.path
    return f"{name} {_value(c.before)} {ARROW} {_value(c.after)}"


def cause_lines(d: PlanDiff, code: bool = True) -> list[str]:
    out = []
    for c in d.causes:
        what = "; ".join(change_text(ch, code) for ch in c.changes) or "all the changes together"
        eff = "; ".join(effect_text(d, e) for e in c.effects) or "no planned figure moved"
        out.append(f"{what}: {eff}")
    return out


# ---------------------------------------------------------------- route rows


def _cell_cost(d: PlanDiff, r: RouteDiff) -> str:
    b = None if r.before is None else r.before.cost_per_month
    a = None if r.after is None else r.after.cost_per_month
    if b is None:
        return f"new: {_cur(d, a)}"
    if a is None:
        return f"removed: {_cur(d, b)}"
    if a == b or r.status == "unchanged":
        return _cur(d, a)
    return f"{_cur(d, b)} {ARROW} {_cur(d, a)} ({_signed_money(d, a - b)})"


def _fmt_opt(f, attr: str, fmt) -> str | None:
    return None if f is None else fmt(getattr(f, attr))


def _pair(r: RouteDiff, attr: str, fmt) -> str:
    b, a = _fmt_opt(r.before, attr, fmt), _fmt_opt(r.after, attr, fmt)
    if b is None:
        return a
    if a is None:
        return b
    return _arrow(b, a)


def _binding(f) -> str | None:
    if f is None:
        return None
    if f.batch:
        return "Batch API (no limit)"
    return f"{_limit(f.binding_limit)} {_share(f.peak_use)}" if f.binding_limit else "none"


def route_row(d: PlanDiff, r: RouteDiff) -> list[str]:
    tok = lambda v: number(round(v))  # noqa: E731
    binding_b, binding_a = _binding(r.before), _binding(r.after)
    binding = binding_a if binding_b is None else binding_b if binding_a is None else _arrow(binding_b, binding_a)
    refusal = _pair(r, "refusal", lambda v: DASH if v is None else percent(v))
    return [
        r.name,
        r.status,
        _pair(r, "requests_per_day", lambda v: number(round(v))),
        _tokens_in_out(r),
        _pair(r, "tpm_reservation", tok),
        _cell_cost(d, r),
        binding,
        refusal,
    ]


def _tokens_in_out(r: RouteDiff) -> str:
    def f(x):
        if x is None:
            return None
        inp = sum(x.tokens[p] for p in TOKEN_PARTS if p not in ("reasoning", "output"))
        return f"{number(round(inp))} in / {number(round(x.tokens['reasoning'] + x.tokens['output']))} out"

    b, a = f(r.before), f(r.after)
    return a if b is None else b if a is None else _arrow(b, a)


ROUTE_HEADERS = [
    "route",
    "change",
    "requests/day",
    "tokens per request",
    "TPM reservation per request",
    "cost per month",
    "largest load at busiest minute",
    "refused at busiest minute",
]


def account_row(d: PlanDiff) -> list[str]:
    a, b = d.base.account, d.head.account
    binding = _arrow(
        f"{_limit(a.binding_limit)}, headroom {_headroom(a)}" if a.exists else DASH,
        f"{_limit(b.binding_limit)}, headroom {_headroom(b)}" if b.exists else DASH,
    )
    cost = f"{_cur(d, d.cost_before)} {ARROW} {_cur(d, d.cost_after)} ({_signed_money(d, d.cost_delta)})"
    refusal = _arrow(
        DASH if a.refusal is None else percent(a.refusal), DASH if b.refusal is None else percent(b.refusal)
    )
    verdict_b = _holds(b.tier, b.holds) if b.exists else DASH
    if a.exists and b.exists and a.tier == b.tier and a.holds != b.holds and b.tier is not None:
        verdict_b = "holds" if b.holds else "does not hold"
    return [
        "account",
        _arrow(_holds(a.tier, a.holds) if a.exists else DASH, verdict_b),
        _arrow(number(round(a.requests_per_day)), number(round(b.requests_per_day))),
        "",
        "",
        cost if d.cost_delta else _cur(d, d.cost_after),
        f"binding: {binding}",
        refusal,
    ]


def token_rows(d: PlanDiff) -> list[list[str]]:
    """Per route and component whose mean moved by at least half a token: before, after, change."""
    rows = []
    for r in d.routes:
        for p in TOKEN_PARTS:
            b = None if r.before is None else r.before.tokens[p]
            a = None if r.after is None else r.after.tokens[p]
            if (b or 0.0) == 0 and (a or 0.0) == 0:
                continue
            if b is not None and a is not None and abs(a - b) < 0.5:
                continue
            rows.append(
                [
                    r.name,
                    p,
                    DASH if b is None else number(round(b)),
                    DASH if a is None else number(round(a)),
                    _signed_num((a or 0.0) - (b or 0.0)),
                ]
            )
    return rows


# ---------------------------------------------------------------- Markdown (a pull-request comment)


def _md_cell(s: str) -> str:
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def md_table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    right = right or set()
    out = ["| " + " | ".join(_md_cell(h) for h in headers) + " |"]
    out.append("|" + "|".join("---:" if i in right else "---" for i in range(len(headers))) + "|")
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _footer(d: PlanDiff) -> str:
    s = d.settings
    months = sorted({m for m in (d.base.account.month, d.head.account.month) if m})
    return (
        f"kimiplan {__version__} · figures for the next full month ({', '.join(map(_month_label, months))}), "
        "the month the report's cost card quotes · "
        f"P10–P90 of the difference from {s['paths']:,} paths with common random numbers (seed {s['seed']}) · "
        "refusals at the busiest minute of a typical week"
    )


def headroom_lines(d: PlanDiff) -> list[str]:
    """Headroom in words, the report's sentence (`CapacityPlan.headroom().sentence`), per side; one line when
    both sides say the same."""
    a, b = d.base.account, d.head.account
    said = [(x.label, x.headroom_sentence) for x in (a, b) if x.exists and x.headroom_sentence]
    if not said:
        return []
    if len(said) == 2 and said[0][1] == said[1][1]:
        return [f"Headroom ({a.label} and {b.label}): {said[0][1]}"]
    return [f"Headroom ({label}): {text}" for label, text in said]


def to_markdown(d: PlanDiff, *, title: str | None = None, marker: bool = True) -> str:
    a, b = d.base.account, d.head.account
    lines = [MARKER] if marker else []
    title = title or f"kimiplan diff: {b.name or a.name} ({a.label} {ARROW} {b.label})"
    lines += [f"### {title}", "", f"**{lead(d)}**", ""]
    hl = headroom_lines(d)
    if hl:
        lines += [f"- {x}" for x in hl] + [""]
    if d.notes:
        lines += ["> **Compared across a difference in kind:**", ">"]
        lines += [f"> - {n}" for n in d.notes]
        lines.append("")
    shown = [r for r in d.routes if r.status != "unchanged"]
    same = [r for r in d.routes if r.status == "unchanged"]
    rows = [route_row(d, r) for r in shown] + [account_row(d)]
    lines += [md_table(ROUTE_HEADERS, rows, right={2, 3, 4, 5, 7}), ""]
    if same:
        lines.append(f"Unchanged: {', '.join(f'`{r.name}`' for r in same)}.")
        lines.append("")
    causes = cause_lines(d)
    if causes:
        lines += ["**What changed and what it moved**", ""]
        lines += [f"- {c}" for c in causes]
        lines.append("")
    tr = token_rows(d)
    if tr:
        lines += ["<details><summary>Tokens per request by component</summary>", ""]
        lines += [md_table(["route", "component", "before", "after", "change"], tr, right={2, 3, 4}), ""]
        lines += ["</details>", ""]
    if same:
        lines += ["<details><summary>Unchanged routes</summary>", ""]
        lines += [md_table(ROUTE_HEADERS, [route_row(d, r) for r in same], right={2, 3, 4, 5, 7}), ""]
        lines += ["</details>", ""]
    lines.append(f"<sub>{html.escape(_footer(d))}</sub>")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- HTML (a notebook) and plain text (a terminal)

_CSS = (
    "<style>.kp-diff table{border-collapse:collapse;margin:.5em 0}.kp-diff td,.kp-diff th{border:1px solid #ccc;"
    "padding:2px 6px}.kp-diff blockquote{margin:.3em 0;padding-left:.6em;border-left:3px solid #d4a72c}</style>"
)


def markdown_to_html(md: str) -> str:
    """GitHub-flavoured enough for the comment: tables, raw HTML (`<details>`), no linkify."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).enable("table").render(md)


def to_html(d: PlanDiff) -> str:
    return f'{_CSS}<div class="kp-diff">{markdown_to_html(to_markdown(d, marker=False))}</div>'


def _text_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def to_text(d: PlanDiff) -> str:
    lines = [lead(d)]
    lines += [f"note: {n}" for n in d.notes]
    lines += [x[:1].lower() + x[1:] for x in headroom_lines(d)]
    lines.append("")
    lines += _text_table(ROUTE_HEADERS, [route_row(d, r) for r in d.routes] + [account_row(d)])
    causes = cause_lines(d, code=False)
    if causes:
        lines += ["", "what changed and what it moved:"]
        lines += [f"  - {c}" for c in causes]
    tr = token_rows(d)
    if tr:
        lines += ["", "tokens per request by component:"]
        lines += ["  " + x for x in _text_table(["route", "component", "before", "after", "change"], tr)]
    lines += ["", _footer(d)]
    return "\n".join(lines)


def combined_markdown(diffs: list[PlanDiff], title: str | None = None) -> str:
    """One comment for one or several scenario files (one marker, a section per file)."""
    if len(diffs) == 1:
        return to_markdown(diffs[0], title=title)
    parts = [MARKER, f"## {title or 'kimiplan diff'}: {len(diffs)} scenarios", ""]
    for d in diffs:
        name = d.head.origin or d.base.origin or d.head.account.name
        parts.append(to_markdown(d, title=f"`{name}`", marker=False))
    return "\n".join(parts)
