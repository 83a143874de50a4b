"""Provider facts in one place: each provider's admission rule (what a request counts against which limit), the
custom fallback, the model default for `max_completion_tokens`, and which model IDs are the same weights on
different providers. Prices and tiers are data (data/catalog/*.toml); these are the rules that read them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from kimiplan.errors import CatalogError, ConfigError

if TYPE_CHECKING:
    from kimiplan.catalog.cards import Catalog

K26_DEFAULT_MAX_COMPLETION = 32_768  # K2.6 quickstart: max_tokens "Default to be 32k aka 32768"


@dataclass(frozen=True)
class AdmissionRule:
    """One provider's accounting: which limits exist and what a request counts against the token limits."""

    provider: str
    counts_tokens: bool  # False: token limits are not enforced by this provider (Cloudflare, OpenRouter)
    default_max_completion_tokens: int
    note: str

    def reserved_tokens(self, input_tokens, max_completion_tokens=None) -> np.ndarray:
        """Tokens one request counts against TPM/TPD: input + max_completion_tokens (default when omitted).

        `max_completion_tokens` may be None, or an array with 0 / NaN where the request omits it.
        """
        inp = np.asarray(input_tokens, dtype=np.float64)
        if np.any(inp < 0):
            raise ConfigError("input_tokens: negative token count")
        if max_completion_tokens is None:
            mct = np.full_like(inp, float(self.default_max_completion_tokens))
        else:
            mct = np.broadcast_to(np.asarray(max_completion_tokens, dtype=np.float64), inp.shape).copy()
            omitted = ~np.isfinite(mct) | (mct <= 0)
            mct[omitted] = self.default_max_completion_tokens
        return inp + mct


RULES: dict[str, AdmissionRule] = {
    "moonshot": AdmissionRule(
        "moonshot",
        True,
        K26_DEFAULT_MAX_COMPLETION,
        "input + max_completion_tokens against TPM and TPD; concurrency and RPM per account; refused with 429",
    ),
    "cloudflare": AdmissionRule(
        "cloudflare",
        False,
        K26_DEFAULT_MAX_COMPLETION,
        "Workers AI text generation: 300 requests per minute per account; tokens are not rate limited",
    ),
    "openrouter": AdmissionRule(
        "openrouter",
        False,
        K26_DEFAULT_MAX_COMPLETION,
        "paid: no fixed limit (upstream providers may refuse); :free: 20 RPM and 50 or 1,000 requests per day",
    ),
    # A user-defined tier counts like Moonshot: it is the platform being planned for.
    "custom": AdmissionRule(
        "custom",
        True,
        K26_DEFAULT_MAX_COMPLETION,
        "user-defined limits, counted the Moonshot way",
    ),
}


def rule_for(provider: str) -> AdmissionRule:
    try:
        return RULES[provider]
    except KeyError:
        raise ConfigError(f"provider: no admission rule for {provider!r}; known: {', '.join(RULES)}") from None


# Same weights, different routes. Sources: Moonshot's OpenAPI enum (kimi-k2.6), cloudflare-docs kimi-k2.6.json
# (@cf/moonshotai/kimi-k2.6), models.dev for OpenRouter (moonshotai/kimi-k2.6) and SiliconFlow
# (moonshotai/Kimi-K2.6, note the capital K). kimi-k2.5 is listed only where the catalog prices it.
EQUIVALENT_MODELS: dict[str, dict[str, str]] = {
    "kimi-k2.6": {
        "moonshot": "kimi-k2.6",
        "cloudflare": "@cf/moonshotai/kimi-k2.6",
        "openrouter": "moonshotai/kimi-k2.6",
        "siliconflow": "moonshotai/Kimi-K2.6",
    },
    "kimi-k2.5": {"moonshot": "kimi-k2.5"},
}


# API hosts per provider (the docs' base URLs), so a calibration can tell whom it measured. Moonshot: .ai is the
# international platform, .cn the China one (client.OFFICIAL_BASE_URLS).
PROVIDER_HOSTS: dict[str, tuple[str, ...]] = {
    "moonshot": ("api.moonshot.ai", "api.moonshot.cn"),
    "cloudflare": ("api.cloudflare.com",),
    "openrouter": ("openrouter.ai",),
    "siliconflow": ("api.siliconflow.cn", "api.siliconflow.com"),
}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def provider_of_host(host: str) -> str | None:
    """The provider whose API lives at `host`; "emulator" for a loopback address; None when unknown."""
    host = (host or "").lower()
    if host in LOOPBACK_HOSTS:
        return "emulator"
    for provider, hosts in PROVIDER_HOSTS.items():
        if host in hosts:
            return provider
    return None


def canonical_model(model: str) -> str:
    for canon, per_provider in EQUIVALENT_MODELS.items():
        if model == canon or model in per_provider.values():
            return canon
    raise CatalogError(f"no equivalents known for model {model!r}; EQUIVALENT_MODELS lists {sorted(EQUIVALENT_MODELS)}")


def equivalent_model(
    model: str, provider: str, catalog: Catalog, region: str | None = None, on: dt.date | None = None
) -> str:
    """The ID of `model` on `provider`, from EQUIVALENT_MODELS, confirmed to be priced in the catalog."""
    canon = canonical_model(model)
    mapped = EQUIVALENT_MODELS[canon].get(provider)
    if mapped is None:
        raise CatalogError(f"no known ID for {canon!r} on provider {provider!r}; known: {EQUIVALENT_MODELS[canon]}")
    catalog.price(mapped, provider, region, on)  # raises CatalogError listing what the catalog knows
    return mapped


def canonical_model_or_none(model: str) -> str | None:
    try:
        return canonical_model(model)
    except CatalogError:
        return None


# ---------------------------------------------------------------- the completion budget


def truncate_completion(want_reasoning, want_output, budget):
    """Kimi's budget rule: reasoning is generated first and `reasoning + output <= max_completion_tokens`; the
    visible answer gets what is left (`finish_reason=length` when the two wanted more). Scalars or arrays.

    Returns (reasoning, output, truncated)."""
    reasoning = np.minimum(want_reasoning, budget)
    output = np.minimum(want_output, budget - reasoning)
    return reasoning, output, (want_reasoning + want_output) > budget
