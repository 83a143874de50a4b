"""Prompts built to a scenario's own component sizes, for users with no real prompts yet.

Each prompt draws its component sizes from the route's laws (system, history turns and tokens per turn, RAG
chunks, extracted document pages, the user's message) with a seeded generator, and fills each part with
realistic text of exactly that many tokens (counted with the exact Kimi tokenizer). The chat then renders to
the input the scenario assumes, so sampling it measures what the scenario's assumptions leave out (the
server's additions, cache behaviour, output lengths), not a mismatch between two made-up inputs. Calibrations
fitted from such prompts say so (`prompt_source: synthetic ...`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kimiplan.errors import ConfigError
from kimiplan.tokens.tokenizer import get_tokenizer

SYNTHETIC = "synthetic"

_PRODUCTS = ("Starter", "Business", "Pro", "Enterprise")
_FEATURES = (
    "two-factor authentication",
    "automatic backups",
    "the DNS editor",
    "SSL certificates",
    "the billing portal",
    "email forwarding",
    "the staging environment",
    "add-on storage",
    "domain transfers",
    "the API tokens page",
)
_POLICY = (
    "Answer only from the help-centre excerpts below the question; if they do not contain the answer, say so and "
    "offer to open a ticket for a human agent.",
    "Keep answers short, use numbered steps for procedures, and write in the customer's language.",
    "Never invent prices, plan names or limits, and never ask for passwords or full card numbers.",
    "Refunds for {p} plans are handled within {d} business days after a written request from the account owner.",
    "Customers on the {p} plan get {feature} at no extra cost; other plans can add it from the billing portal.",
    "Escalate to a human agent when the customer reports data loss, a security incident or a legal request.",
    "If the customer is angry, acknowledge the problem first, then give the next concrete step.",
    "Do not promise delivery dates for features that are not announced on the status page.",
    "Outages are announced on the status page; link it when the question is about downtime.",
    "Quote limits exactly as the excerpts state them, with their units, and say which plan they apply to.",
)
_ARTICLE = (
    "To enable {feature}, open Settings > Security and follow the steps on screen; the change applies within {m} "
    "minutes.",
    "{feature} is available on the {p} plan and above. Accounts created before {y} keep their previous limits until "
    "renewal.",
    "If {feature} stops working after a plan change, sign out, clear the browser cache and sign in again.",
    "Backups run nightly at 02:00 UTC and are kept for {d} days on the {p} plan; restores take about {m} minutes.",
    "Invoices are sent on the first day of the month and can be downloaded as PDF from Billing > History.",
    "A domain transfer takes up to {d} days; the old registrar must release the domain and send the auth code.",
    "API tokens can be scoped to one project; a token that has not been used for {d} days is revoked.",
    "Lost access to your phone? Use one of the recovery codes saved when you set up {feature}, or contact support "
    "from the account owner's email.",
    "The staging environment mirrors production every night; changes made in staging are never copied back.",
    "Email forwarding supports up to {n} aliases per domain; catch-all forwarding is off by default.",
)
_CUSTOMER = (
    "Hi, I have a problem with {feature} on my {p} account.",
    "Since this morning {feature} does not work any more and my team is blocked.",
    "I followed the steps from the help centre but nothing changed after {m} minutes.",
    "Can you tell me whether {feature} is included in my plan or if I have to pay extra?",
    "I was charged twice this month, invoice number {n}, please check.",
    "We are moving {n} domains from another provider, what do we need to prepare?",
    "Thanks, that worked. One more thing: how long are backups kept?",
    "This is the third time I write about this, I need a solution today.",
)
_AGENT = (
    "Thanks for reaching out. I checked your account and {feature} is enabled on the {p} plan.",
    "I am sorry for the trouble. Could you tell me the exact error message you see?",
    "Here are the steps: 1. Open Settings. 2. Select {feature}. 3. Confirm with the code we send by email.",
    "I have refunded the duplicate charge; it will appear on your statement within {d} business days.",
    "Backups on your plan are kept for {d} days, and you can restore any of them from the dashboard.",
    "I have escalated this to our infrastructure team with high priority; you will get an update within {m} minutes.",
)
_QUESTION = (
    "How do I set up {feature} for my whole team?",
    "Why was my {p} plan invoice higher this month?",
    "Is {feature} included in the {p} plan?",
    "My site has been down for {m} minutes, what is going on?",
    "How can I move {feature} settings to a new project?",
    "What happens to my backups if I downgrade to {p}?",
)
_TASKS = {
    "summarize": "Summarize the conversation into a support ticket: customer, product, problem, steps already "
    "tried, what the customer expects, urgency.",
}


def _fill(rng: np.random.Generator, bank: Sequence[str]) -> str:
    s = bank[int(rng.integers(len(bank)))]
    return s.format(
        p=_PRODUCTS[int(rng.integers(len(_PRODUCTS)))],
        feature=_FEATURES[int(rng.integers(len(_FEATURES)))],
        d=int(rng.integers(3, 31)),
        m=int(rng.integers(2, 60)),
        y=int(rng.integers(2019, 2026)),
        n=int(rng.integers(2, 5000)),
    )


def text_of(tokens: int, rng: np.random.Generator, bank: Sequence[str], sep: str = " ", head: str = "") -> str:
    """Realistic text of exactly `tokens` tokens (Kimi tokenizer): sentences from `bank`, cut at the token."""
    tokens = int(tokens)
    if tokens <= 0:
        return ""
    tok = get_tokenizer()
    parts = [head] if head else []
    text = head
    while tok.count(text) < tokens:
        parts.append(_fill(rng, bank))
        text = sep.join(parts)
    ids = tok.encode(text)[:tokens]
    out = tok.decode(ids)
    # Decoding a cut can re-tokenize a token or two differently: trim or pad to the exact count.
    while tok.count(out) > tokens and out:
        out = tok.decode(tok.encode(out)[:-1])
    while tok.count(out) < tokens:
        out += " ok"
    return out


def _draw(dist, rng) -> int:
    return max(0, int(np.rint(dist.sample(rng, 1)[0])))


def route_prompts(route, n: int = 50, seed: int = 0) -> list[list[dict]]:
    """`n` chats whose parts have the sizes the route's laws draw (see the module doc). The system prompt is
    one text per route (a fixed, cacheable prefix, as in production); history, retrieved chunks, documents and
    the user's message vary per prompt."""
    if route.agent is not None:
        raise ConfigError(f"route {route.name!r} is an agent route: build its prompts from real agent steps")
    if route.tools.web_search_calls.mean() > 0:
        raise ConfigError(f"route {route.name!r} uses $web_search: synthetic prompts cannot stand in for live searches")
    if not (isinstance(n, int) and 1 <= n <= 100_000):
        raise ConfigError(f"n must be a whole number in [1, 100000], got {n!r}")
    rng = np.random.default_rng([seed, 17])
    sys_rng = np.random.default_rng([seed, 18])
    system = text_of(
        _draw(route.system, sys_rng), sys_rng, _POLICY, head="You are the support assistant of Acme Cloud."
    )
    summarize = "summar" in (route.name + route.description).lower()
    out = []
    for _ in range(n):
        msgs: list[dict] = [{"role": "system", "content": system}] if system else []
        for _t in range(_draw(route.history.turns, rng)):
            size = _draw(route.history.tokens_per_turn, rng)
            u = max(1, size * 3 // 10) if size else 0
            msgs.append({"role": "user", "content": text_of(u, rng, _CUSTOMER)})
            msgs.append({"role": "assistant", "content": text_of(size - u, rng, _AGENT)})
        extra = []
        for _k in range(_draw(route.rag.top_k, rng)):
            extra.append(text_of(_draw(route.rag.chunk_tokens, rng), rng, _ARTICLE))
        if route.documents.probability > 0 and rng.random() < route.documents.probability:
            for _p in range(_draw(route.documents.pages, rng)):
                extra.append(text_of(_draw(route.documents.tokens_per_page, rng), rng, _ARTICLE))
        user_size = _draw(route.user, rng)
        bank = [_TASKS["summarize"]] if summarize else _QUESTION
        user = text_of(max(user_size, 1 if not extra else 0), rng, bank)
        content = "\n\n".join([user] + extra) if extra else user
        msgs.append({"role": "user", "content": content})
        out.append(msgs)
    return out


def scenario_prompts(scenario, routes: Sequence[str] | None = None, n: int = 50, seed: int | None = None):
    """{route name: prompts} for the scenario's routes (or those named); see `route_prompts`."""
    by_name = {r.name: r for r in scenario.routes}
    names = list(routes) if routes is not None else [r.name for r in scenario.routes]
    unknown = [x for x in names if x not in by_name]
    if unknown:
        raise ConfigError(f"routes {unknown} are not in scenario {scenario.name!r} (has {sorted(by_name)})")
    s = scenario.seed if seed is None else seed
    return {x: route_prompts(by_name[x], n, seed=s + i) for i, x in enumerate(names)}
