"""A chat route's first-call input per request, drawn from its laws: the one home of how the prompt adds up
(its text components, the chat template's markers, the server's hidden tokens) and which part of it is the
cacheable prefix.

`workload.draws` builds every request on it. `catalog.calibrated` reads from it the share of the prefix that sits
on prompts long enough for Kimi's cache (over `cache.min_prompt_tokens`: "a new request can hit the prefix cache
only when the previous request's prompt tokens exceed 256"), which no closed form gives for short prompts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from kimiplan.model.dists import Fixed
from kimiplan.tokens.tokenizer import template_tokens

if TYPE_CHECKING:
    from kimiplan.model.scenario import Route


def whole_tokens(dist, rng: np.random.Generator, n: int):
    """Whole tokens drawn from `dist`; a fixed count stays a scalar (it broadcasts, and costs no pass)."""
    if isinstance(dist, Fixed):
        return int(np.rint(max(dist.value, 0.0)))
    x = np.asarray(dist.sample(rng, n), dtype=np.float64)  # every sample() returns a fresh array
    np.maximum(x, 0.0, out=x)
    np.rint(x, out=x)
    return x.astype(np.int64)


def column(x, n: int, dtype=np.int64) -> np.ndarray:
    return x if isinstance(x, np.ndarray) else np.full(n, x, dtype=dtype)


def draw_input(route: Route, rng: np.random.Generator, n: int) -> dict:
    """`n` first-call inputs of a chat route: each component (a scalar when fixed), `overhead` (markers and the
    server's tokens), `input_tokens` and `prefix` (the tokens of `cache.prefix`'s components), as arrays."""
    system = whole_tokens(route.system, rng, n)
    turns = whole_tokens(route.history.turns, rng, n)
    history = turns * whole_tokens(route.history.tokens_per_turn, rng, n)
    rag = whole_tokens(route.rag.top_k, rng, n) * whole_tokens(route.rag.chunk_tokens, rng, n)
    p_doc = route.documents.probability
    if p_doc > 0:
        doc = whole_tokens(route.documents.pages, rng, n) * whole_tokens(route.documents.tokens_per_page, rng, n)
        documents = doc if p_doc >= 1 else np.where(rng.random(n) < p_doc, doc, 0)
    else:
        documents = 0
    user = whole_tokens(route.user, rng, n)
    if route.overhead_tokens is None:  # the chat template's markers for this request's messages
        overhead = template_tokens(np.greater(system, 0).astype(np.int64), turns) + route.server_overhead_tokens
    else:
        overhead = route.overhead_tokens + route.server_overhead_tokens
    parts = {"system": system, "history": history, "rag": rag, "documents": documents}
    return {
        "system": system,
        "history": history,
        "rag": rag,
        "documents": documents,
        "user": user,
        "overhead": overhead,
        "input_tokens": column(system + history + rag + documents + user + overhead, n),
        "prefix": column(sum((parts[p] for p in route.cache.prefix), 0), n),
    }


def eligible_prefix_share(route: Route, samples: int = 20_000, seed: int = 0) -> float:
    """The share of the route's cacheable prefix tokens that sit on prompts over `cache.min_prompt_tokens` (the
    only ones Kimi's cache can hit): 1 when every prompt is long enough, 0 when none is (and without a prefix)."""
    d = draw_input(route, np.random.default_rng([seed, 257]), samples)
    p = d["prefix"].astype(np.float64)
    total = float(p.sum())
    if total <= 0:
        return 0.0
    long_enough = d["input_tokens"] > route.cache.min_prompt_tokens
    return 1.0 if long_enough.all() else float(p[long_enough].sum() / total)
