"""How a simulation runs: the client's behaviour on a 429, the window rules, the horizon.

`Simulation` is the part a scenario file may carry (`simulation:`), so a scenario alone can state a check
against theory (constant Poisson rate, custom tier, fixed tokens, no retries, horizon, seed). `SimSettings`
adds the knobs of one run (seed override, chunking, token pool, progress bar); `SimSettings.for_scenario`
starts from the scenario's section, and anything given explicitly (a CLI flag) wins.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kimiplan.errors import validate
from kimiplan.model.units import Share

CHUNK = 1 << 21  # requests per chunk: ~100 MB of arrays, big enough to amortize the kernel call
# Dates a plan can mean: forecasts add months and years to these, which must stay inside `datetime`'s range.
FIRST_DATE = dt.date(2000, 1, 1)
LAST_DATE = dt.date(2100, 12, 31)
MAX_HOURS = 24.0 * 366  # one simulated run: a year at most
MAX_RETRIES = 100


def backoff_s(retry: int, base_s: float, cap_s: float, u: float = 1.0) -> float:
    """The wait before retry number `retry` (0 = the first retry): exponential backoff with full jitter,
    min(cap_s, base_s * 2**retry) * u, u ~ U(0, 1) (u = 1: no jitter). The one backoff model: KimiClient's
    `retry_delay` and the simulator's retrying client (`ClientPolicy` kind "retry", compiled with numba)
    both call it, so a "retry" simulation models the client kimiplan ships. Plain arithmetic for numba."""
    e = retry if retry < 60 else 60  # 2**60 x any base is past any cap; keeps the float finite
    d = base_s * 2.0**e
    if d > cap_s:
        d = cap_s
    return d * u


# The OpenAI Python SDK's retry policy, read from the installed openai 3.60.0 (openai/_constants.py and
# `_calculate_retry_timeout` / `_should_retry` in openai/_base_client.py):
#   DEFAULT_MAX_RETRIES = 2; INITIAL_RETRY_DELAY = 0.5; MAX_RETRY_DELAY = 8.0; MAX_RETRY_AFTER_DELAY = 2 * 60
#   statuses retried: 408, 409, 429 and >= 500 (unless the server sends `x-should-retry: false`)
#   delay before retry n (0 first) = min(0.5 * 2**n, 8.0) * (1 - 0.25 * random())   (jitter takes 0-25 % off)
#   a `retry-after-ms` header (preferred) or `retry-after` (seconds or an HTTP date) with 0 < value <= 120 s is
#   obeyed exactly, with no jitter; a value over 120 s means the SDK does not retry at all and raises at once.
# LiteLLM's default is the same schedule: litellm 1.110.2 sends `moonshot` (in `openai_compatible_providers`)
# through `OpenAIChatCompletion.completion`, an `openai.OpenAI` client built with
# `max_retries = inference_params.pop("max_retries", 2)` (litellm/llms/openai/openai.py); its own `num_retries`
# wrapper is off by default (None), so the SDK's 2 retries are the only ones.
SDK_MAX_RETRIES = 2
SDK_INITIAL_RETRY_DELAY_S = 0.5
SDK_MAX_RETRY_DELAY_S = 8.0
SDK_MAX_RETRY_AFTER_S = 120.0
SDK_RETRIED_STATUSES = (408, 409, 429)  # and every status >= 500


def sdk_backoff_s(retry: int, u: float) -> float:
    """The OpenAI SDK's wait before retry number `retry` (0 first) without a server hint, u ~ U(0, 1):
    min(0.5 * 2**retry, 8) * (1 - 0.25 u). Plain arithmetic so the simulator's kernel compiles it."""
    e = retry if retry < 60 else 60
    d = SDK_INITIAL_RETRY_DELAY_S * 2.0**e
    if d > SDK_MAX_RETRY_DELAY_S:
        d = SDK_MAX_RETRY_DELAY_S
    return d * (1.0 - 0.25 * u)


def check_date(v: dt.date | None) -> dt.date | None:
    if v is not None and not FIRST_DATE <= v <= LAST_DATE:
        raise ValueError(f"date {v} is outside the supported range {FIRST_DATE}..{LAST_DATE}")
    return v


class WindowSettings(BaseModel):
    """How the per-minute and per-day windows are counted. Moonshot does not document either.

    - `rate_window="sliding"` (default): RPM/TPM count what was admitted in the last 60 s. The 429 text says
      "please try again after {time} seconds", which fits a rolling window, and it is the conservative choice:
      a fixed calendar minute lets up to twice the limit through across a minute boundary.
    - `tpd_reset_utc_offset_hours=8` (default): TPD/RPD reset at local midnight of UTC+8 (Beijing), where
      Moonshot runs; the docs only say the TPD limit "will reset the next day". Simulation time 0 is 00:00 UTC.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    rate_window: Literal["sliding", "fixed"] = "sliding"
    tpd_reset_utc_offset_hours: float = Field(default=8.0, ge=-12, le=14)

    @property
    def day_offset_s(self) -> float:
        return self.tpd_reset_utc_offset_hours * 3600.0


class ClientPolicy(BaseModel):
    """What the client does with a 429 or before sending.

    - `none`: send once; a refusal is final.
    - `retry`: resend after exponential backoff with full jitter (`backoff_s`: min(cap, base * 2**retry) *
      U(0, 1) before retry number `retry`, 0 first), up to `max_retries` times; each retry is a new request
      for every limit (it counts against RPM again).
    - `pace`: the client holds each request (FIFO) until the account has room under `pace_headroom` x each
      limit, the way the OpenAI cookbook's parallel processor waits for capacity. Limits are per account, so
      a single client sees the whole load and can mirror the account's own counting; headroom < 1 leaves room
      for other traffic on the same account. Refusals then remain only for requests that can never fit.
    - `openai-sdk`: the OpenAI Python SDK's own retries (`sdk_backoff_s`: 2 retries by default, 0.5 s doubling
      to at most 8 s, minus 0-25 % jitter; LiteLLM's default is the same). `retry_after` says what the
      server's 429 carries: `none` (Kimi's documented 429 has only the text "try again after N seconds",
      which the SDK does not read) or `seconds`, a `Retry-After` with the seconds of that text, as the
      emulator sends it when configured to: 1 for concurrency, until the oldest admission leaves the window
      for RPM, until enough reservations leave it for TPM, none for daily limits. The SDK obeys it up to
      120 s and does not retry beyond; without one it backs off on its own. `backoff_*` and `jitter`
      are not used: the SDK has no setting for them. A request that exhausts its retries raises
      `RateLimitError` in the application: `failed_fraction`.

    `max_retries` left out is the kind's default: 5 for `retry`, the SDK's 2 for `openai-sdk`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    kind: Literal["none", "retry", "pace", "openai-sdk"] = "none"
    max_retries: int | None = Field(default=None, ge=0, le=MAX_RETRIES)
    backoff_base_s: float = Field(default=1.0, gt=0, le=86_400)
    backoff_cap_s: float = Field(default=60.0, gt=0, le=86_400)
    jitter: bool = True
    pace_headroom: Share = Field(default=1.0, gt=0, le=1)
    retry_after: Literal["none", "seconds"] = "none"

    @model_validator(mode="after")
    def _kind_defaults(self):
        if self.max_retries is None:
            # Not in model_fields_set, so a later change of kind (a CLI flag) takes the new kind's default.
            object.__setattr__(self, "max_retries", SDK_MAX_RETRIES if self.kind == "openai-sdk" else 5)
        return self


class Simulation(BaseModel):
    """The `simulation:` section of a scenario: defaults for `kimiplan simulate` and `simulate()`."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    hours: float = Field(default=24.0, gt=0, le=MAX_HOURS, description="Horizon in hours")
    start: dt.date | None = Field(
        default=None,
        description="First simulated day (time 0 is 00:00 UTC on it); "
        "None: the scenario's as_of. Pick a Monday to see the weekday peak",
    )
    client: ClientPolicy = ClientPolicy()
    window: WindowSettings = WindowSettings()

    @field_validator("start")
    @classmethod
    def _start(cls, v):
        return check_date(v)


class SimSettings(BaseModel):
    """Simulation-only settings (the scenario says what the traffic is; this says how to run it)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    hours: float = Field(default=24.0, le=MAX_HOURS, description="Horizon in hours; must be > 0")
    start: dt.date | None = Field(default=None, description="First simulated day; None: the scenario's as_of")
    seed: int | None = Field(default=None, ge=0, lt=2**63, description="None: the scenario's seed")
    client: ClientPolicy = ClientPolicy()
    window: WindowSettings = WindowSettings()
    chunk: int = Field(default=CHUNK, ge=1024, le=1 << 26)
    token_pool: int | None = Field(
        default=None,
        ge=1024,
        le=1 << 26,
        description="None: every request draws its own tokens and latency (exact). N: each chunk draws N fresh "
        "requests from the route model and every arrival of the chunk picks one at random; each "
        "request keeps the route's distribution, at a small cost in independence, and long runs "
        "get faster (drawing is most of the per-request cost)",
    )
    progress: bool = False

    @field_validator("start")
    @classmethod
    def _start(cls, v):
        return check_date(v)

    @classmethod
    def for_scenario(cls, scenario, *, client: dict | None = None, window: dict | None = None, **given) -> SimSettings:
        """The scenario's `simulation:` section, with every argument that is not None taking precedence;
        `client` and `window` override single fields of the section's. Everything is validated again, and a
        bad value is a ConfigError naming the field."""
        sim = getattr(scenario, "simulation", None) or Simulation()

        def merged(section: BaseModel, over: dict | None) -> dict:
            # Only what the section set: a field it left to its default (max_retries) follows the final kind.
            return {
                **section.model_dump(exclude_unset=True),
                **{k: v for k, v in (over or {}).items() if v is not None},
            }

        data = {
            "hours": sim.hours,
            "start": sim.start,
            "client": merged(sim.client, client),
            "window": merged(sim.window, window),
            **{k: v for k, v in given.items() if v is not None},
        }
        return validate(cls, data)
