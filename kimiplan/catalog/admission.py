"""What a request counts against each rate limit, per provider, and the rule that admits or refuses it.

Moonshot (platform facts §2b): limits are per account, shared across models and keys. Each request counts
1 against concurrency while in flight, 1 against RPM, and `input + max_completion_tokens` (the model default when
omitted: `providers.K26_DEFAULT_MAX_COMPLETION` for K2.6) against TPM and TPD, whatever it really generates.
Over any limit the request is refused at once with HTTP 429 `rate_limit_reached_error`; nothing is queued.
Cloudflare Workers AI counts only requests (300 RPM); OpenRouter counts requests (RPM/RPD on `:free`, nothing
fixed on paid). A custom tier may set any subset.

`AccountState` is the readable reference of the rule, one request at a time. `kimiplan.capacity.sim.kernel` is the
compiled version the simulator uses; tests check the two agree request by request.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from kimiplan.catalog.providers import (  # noqa: F401  (the provider rules live there; re-exported for callers)
    K26_DEFAULT_MAX_COMPLETION,
    RULES,
    AdmissionRule,
    rule_for,
)
from kimiplan.catalog.resolve import rate_tier
from kimiplan.errors import ConfigError
from kimiplan.model.settings import WindowSettings

LIMITS = ("concurrency", "rpm", "tpm", "tpd", "rpd")


def limit_values(tier, rule: AdmissionRule | None = None) -> dict[str, float | None]:
    """The limits a tier enforces under its provider's rule (token limits dropped where tokens don't count)."""
    rule = rule or rule_for(getattr(tier, "provider", "custom"))
    out = {}
    for name in LIMITS:
        v = getattr(tier, name, None)
        if v is not None and (not isinstance(v, (int, float)) or v <= 0 or not math.isfinite(v)):
            raise ConfigError(f"tier {getattr(tier, 'name', '?')!r}: {name} must be a positive number, got {v!r}")
        if name in ("tpm", "tpd") and not rule.counts_tokens:
            v = None
        out[name] = None if v is None else float(v)
    return out


def limits_array(limits: dict[str, float | None]) -> np.ndarray:
    """Kernel layout: float64[5] in LIMITS order, -1 where there is no limit."""
    return np.array([-1.0 if limits.get(k) is None else float(limits[k]) for k in LIMITS], dtype=np.float64)


class AccountState:
    """Reference implementation of the admission rule, one request at a time (slow, for tests and teaching).

    Call `offer(t, reserved, latency, calls=1)` with non-decreasing t; it returns None when admitted, else the
    name of the first limit the request breaks, checked in the order concurrency, rpm, tpm, tpd, rpd. A request
    that makes several API calls (tool round trips: `$web_search`, function tools) counts them all against RPM/RPD
    when it starts.
    """

    def __init__(self, limits: dict[str, float | None], window: WindowSettings = WindowSettings()):
        self.limits = limits
        self.window = window
        self.ends: list[float] = []
        self.log: deque[tuple[float, float, int]] = deque()  # (admitted at, reserved, calls): the minute window
        self.day = None
        self.day_tokens = 0.0
        self.day_requests = 0

    def _minute(self, t: float) -> tuple[int, float]:
        if self.window.rate_window == "fixed":
            m = math.floor(t / 60.0)
            entries = [e for e in self.log if math.floor(e[0] / 60.0) == m]
        else:
            entries = [e for e in self.log if e[0] + 60.0 > t]
        self.log = deque(entries)
        return sum(c for _, _, c in entries), sum(r for _, r, _ in entries)

    def offer(self, t: float, reserved: float, latency: float, calls: int = 1) -> str | None:
        lim = self.limits
        self.ends = [e for e in self.ends if e > t]
        n_min, tok_min = self._minute(t)
        day = math.floor((t + self.window.day_offset_s) / 86400.0)
        if day != self.day:
            self.day, self.day_tokens, self.day_requests = day, 0.0, 0
        if lim["concurrency"] is not None and len(self.ends) + 1 > lim["concurrency"]:
            return "concurrency"
        if lim["rpm"] is not None and n_min + calls > lim["rpm"]:
            return "rpm"
        if lim["tpm"] is not None and tok_min + reserved > lim["tpm"]:
            return "tpm"
        if lim["tpd"] is not None and self.day_tokens + reserved > lim["tpd"]:
            return "tpd"
        if lim["rpd"] is not None and self.day_requests + calls > lim["rpd"]:
            return "rpd"
        self.ends.append(t + latency)
        self.log.append((t, reserved, calls))
        self.day_tokens += reserved
        self.day_requests += calls
        return None


#: the account part of every refusal text; error_body shows placeholders, the emulator its own ids
ACCOUNT = "Your account {org}<{ak}> "
QUOTA_MESSAGE = "You exceeded your current token quota: <{org}> {credit}, please check your account balance"
OVERLOADED_MESSAGE = "The engine is currently overloaded, please try again later"


def _count(x: float) -> str:
    # Kimi prints whole numbers (limit:3000000), never 3e+06.
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def rate_limit_message(
    limit: str,
    value: float,
    *,
    current: float | None = None,
    wait_s: int = 1,
    org: str = "{organization-id}",
    ak: str = "{ak-id}",
) -> str:
    """Moonshot's 429 text for a refusal by `limit` (platform facts §2c): one place for admission's
    `error_body` and the emulator. `wait_s` is the "try again after" hint of concurrency and RPM refusals."""
    pre = ACCOUNT.format(org=org, ak=ak)
    v, c = _count(value), _count(current or 0)
    msgs = {
        "concurrency": f"{pre}request reached organization max concurrency: {v}, "
        f"please try again after {wait_s} seconds",
        "rpm": f"{pre}request reached organization max RPM: {v}, please try again after {wait_s} seconds",
        "tpm": f"{pre}request reached organization TPM rate limit, current:{c}, limit:{v}",
        "tpd": f"{pre}request reached organization TPD rate limit,current:{c}, limit:{v}",
    }
    if limit not in msgs:
        raise ConfigError(f"limit: Moonshot has no {limit!r} limit")
    return msgs[limit]


def error_body(limit: str, limits: dict[str, float | None], current: float | None = None) -> dict:
    """The 429 body Moonshot sends for a refusal by `limit` (platform facts §2c), for emulators and docs."""
    if limit not in ("concurrency", "rpm", "tpm", "tpd"):
        raise ConfigError(f"limit: Moonshot has no {limit!r} limit")
    lim = limits.get(limit)
    if lim is None:
        raise ConfigError(f"limits: {limit} is not set, so it cannot refuse a request")
    return {"error": {"type": "rate_limit_reached_error", "message": rate_limit_message(limit, lim, current=current)}}


def scenario_limits(scenario, catalog=None, tier=None) -> dict:
    """The limits the scenario's tier enforces under its provider's admission rule."""
    tier = tier if tier is not None else rate_tier(scenario, catalog)
    if tier is None:
        raise ConfigError(
            f"scenario {scenario.name!r}: field tier is not set; name a catalog tier or write an "
            "inline one (concurrency, rpm, tpm, tpd, rpd)"
        )
    provider = tier.provider if tier.provider in ("moonshot", "cloudflare", "openrouter", "custom") else "custom"
    return limit_values(tier, rule_for(provider))
