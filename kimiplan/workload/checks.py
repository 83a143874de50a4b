"""What `kimiplan validate` warns about that changes the verdict: requests the API refuses outright (prompt plus
`max_completion_tokens` beyond the context window), budgets that truncate most answers, and `$web_search` results
of unknown size. One list, shown by `validate`, on the report's first screen and in a notebook."""

from __future__ import annotations

from dataclasses import dataclass

from kimiplan.io.formats import count, percent
from kimiplan.workload.draws import context_check, expected_tokens

TRUNCATION_WARN = 0.5  # a budget that cuts more than half the answers short


@dataclass(frozen=True)
class VerdictWarning:
    route: str
    kind: str  # "context_window", "truncation", "search_size"
    message: str

    def __str__(self) -> str:
        return self.message


def verdict_warnings(scenario, card=None, *, expected=None, context=None) -> list[VerdictWarning]:
    """The warnings that change what the plan and the bill mean, one sentence each, naming the route."""
    out: list[VerdictWarning] = []
    ctx = context if context is not None else context_check(scenario, card)
    for r in ctx[ctx["share_rejected_400"] > 0].itertuples():
        out.append(
            VerdictWarning(
                r.route,
                "context_window",
                f"Route {r.route}: {percent(r.share_rejected_400, trim=True)} of its requests would be refused with "
                f"HTTP 400 (prompt + max_completion_tokens {count(r.max_completion_tokens)} is more than the "
                f"{count(r.context_window)}-token context window); the plan counts them as load and the bill as "
                "answered. Lower max_completion_tokens first.",
            )
        )
    exp = expected if expected is not None else expected_tokens(scenario, card)
    for r in exp[exp["truncation_rate"] > TRUNCATION_WARN].itertuples():
        out.append(
            VerdictWarning(
                r.route,
                "truncation",
                f"Route {r.route}: max_completion_tokens {count(r.max_completion_tokens)} cuts "
                f'{percent(r.truncation_rate, trim=True)} of its answers short (finish_reason "length"); the '
                "tokens and cost are of truncated answers.",
            )
        )
    for route in scenario.routes:
        if route.tools.web_search_calls.mean() > 0 and route.tools.result_tokens.mean() == 0:
            out.append(
                VerdictWarning(
                    route.name,
                    "search_size",
                    f"Route {route.name}: the size of $web_search results is unknown (0 tokens assumed); every "
                    "search resends the prompt plus its results, so input cost and TPM grow with it. Measure it "
                    "from a tool call's usage (tools.result_tokens).",
                )
            )
    return out
