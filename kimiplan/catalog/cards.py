"""Dated catalog of price cards and rate tiers.

Facts go stale, so every row carries `source`, `official`, `verified_on` and `effective_from`/`effective_to`
(exclusive). Look-ups take a date. Users add or override rows with their own TOML/YAML files, or import
LiteLLM's `model_prices_and_context_window.json`. An unknown model or tier is an error that lists the known
ones: the code never guesses a model ID.
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from collections.abc import Iterable, Sequence
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kimiplan.errors import CatalogError, validate
from kimiplan.io.paths import data_path

Money = Decimal

# Retention of a paid prompt-cache write (K3 family): the write is priced per retention, the read is not.
CacheRetention = Literal["5m", "1h"]
CACHE_RETENTIONS: tuple[str, ...] = ("5m", "1h")


def _dec(v: Any) -> Any:
    # TOML/YAML floats such as 0.95 must become Decimal('0.95'), not the binary float's expansion.
    if v is None or isinstance(v, Decimal):
        return v
    if isinstance(v, (int, float, str)):
        return Decimal(str(v))
    return v


class _Provenance(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: str
    region: str = "global"
    source: str
    official: bool
    verified_on: dt.date
    effective_from: dt.date | None = None
    effective_to: dt.date | None = None
    notes: str = ""

    @model_validator(mode="after")
    def _dates(self):
        if self.effective_from and self.effective_to and self.effective_to <= self.effective_from:
            raise ValueError(f"effective_to {self.effective_to} must be after effective_from {self.effective_from}")
        return self

    def in_force(self, on: dt.date) -> bool:
        return (self.effective_from is None or self.effective_from <= on) and (
            self.effective_to is None or on < self.effective_to
        )


class PriceCard(_Provenance):
    """Prices per 1M tokens (and per tool call) for one model on one route, in one currency."""

    model: str
    aliases: tuple[str, ...] = ()
    currency: Literal["USD", "CNY"]
    input_cache_hit: Decimal | None = None  # None: no cache tier, hits pay the cache-miss price
    input_cache_miss: Decimal
    output: Decimal
    # Paid prompt-cache writes (K3 family), per 1M written tokens, by retention. None: writes cost nothing extra
    # (K2.x automatic caching: a written prefix is ordinary input, billed at the cache-miss price).
    input_cache_write_5m: Decimal | None = None
    input_cache_write_1h: Decimal | None = None
    cache_write_source: str = ""
    # Usually left out: the catalog fills it from the dated [[tool_price]] rows of the card's provider and region.
    web_search_per_call: Decimal = Decimal(0)
    web_search_source: str = ""
    batch_multiplier: Decimal | None = None  # None: no batch API on this route
    batch_source: str = ""
    context_window: int = Field(gt=0)
    default_max_completion_tokens: int | None = Field(default=None, gt=0)
    # The most a request may ask for (max_completion_tokens) on this route; hosts of the same weights differ.
    max_output_tokens: int | None = Field(default=None, gt=0)
    max_output_source: str = ""
    # "optional": thinking can be switched on and off (K2.6); "always": reasoning always on (K3 family).
    reasoning: Literal["optional", "always"] | None = None
    # None: the model takes no reasoning_effort (K2.6 rejects it); a list: accepted, with these values (empty:
    # accepted, values not documented).
    reasoning_effort: tuple[str, ...] | None = None
    reasoning_effort_source: str = ""
    # True: the source says prices exclude taxes (add the scenario's tax_rate); None: the source does not say.
    prices_exclude_tax: bool | None = None
    retired_on: dt.date | None = None
    reported_retired_on: dt.date | None = None  # third-party claim, not confirmed officially
    # Cloudflare Workers AI bills neurons; the USD prices above are Cloudflare's conversion.
    neurons_input_per_m: int | None = None
    neurons_cached_input_per_m: int | None = None
    neurons_output_per_m: int | None = None
    usd_per_1000_neurons: Decimal | None = None
    free_neurons_per_day: int | None = None

    _money = field_validator(
        "input_cache_hit",
        "input_cache_miss",
        "output",
        "web_search_per_call",
        "batch_multiplier",
        "usd_per_1000_neurons",
        "input_cache_write_5m",
        "input_cache_write_1h",
        mode="before",
    )(_dec)

    @field_validator(
        "input_cache_hit",
        "input_cache_miss",
        "output",
        "web_search_per_call",
        "input_cache_write_5m",
        "input_cache_write_1h",
    )
    @classmethod
    def _non_negative(cls, v, info):
        if v is not None and v < 0:
            raise ValueError(f"{info.field_name} must be >= 0, got {v}")
        return v

    @field_validator("batch_multiplier")
    @classmethod
    def _batch(cls, v):
        if v is not None and not (0 < v <= 1):
            raise ValueError(f"batch_multiplier must be in (0, 1], got {v}")
        return v

    @model_validator(mode="after")
    def _writes(self):
        if (self.input_cache_write_5m is None) != (self.input_cache_write_1h is None):
            raise ValueError("give both input_cache_write_5m and input_cache_write_1h, or neither")
        return self

    @property
    def cache_hit_price(self) -> Decimal:
        return self.input_cache_miss if self.input_cache_hit is None else self.input_cache_hit

    @property
    def paid_cache_writes(self) -> bool:
        """True when writing the prompt cache is billed apart (K3 family), False for K2.x automatic caching."""
        return self.input_cache_write_5m is not None

    def cache_write_price(self, retention: str = "5m") -> Decimal:
        """Price per 1M tokens written to the prompt cache with `retention`; the cache-miss price when writes
        are not billed apart (the written prefix is then ordinary input)."""
        if retention not in CACHE_RETENTIONS:
            raise CatalogError(f"cache retention must be one of {', '.join(CACHE_RETENTIONS)}, got {retention!r}")
        if not self.paid_cache_writes:
            return self.input_cache_miss
        return self.input_cache_write_5m if retention == "5m" else self.input_cache_write_1h

    @property
    def key(self) -> tuple:
        return (self.provider, self.region, self.model, self.effective_from)

    @property
    def price_key(self) -> tuple:
        """`key` plus the dated tool fee filled in at look-up: two days with the same price_key cost the same."""
        return (*self.key, self.web_search_per_call)

    def names(self) -> tuple[str, ...]:
        return (self.model, *self.aliases)

    def is_retired(self, on: dt.date) -> bool:
        return self.retired_on is not None and on >= self.retired_on


class RateTier(_Provenance):
    """One rate-limit tier. A limit of None means "not limited"."""

    name: str
    version: str = ""
    concurrency: int | None = Field(default=None, gt=0)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    tpd: int | None = Field(default=None, gt=0)
    rpd: int | None = Field(default=None, gt=0)
    recharge: Decimal | None = None  # cumulative recharge that unlocks the tier
    recharge_currency: str | None = None

    _money = field_validator("recharge", mode="before")(_dec)

    @property
    def key(self) -> tuple:
        return (self.provider, self.region, self.name, self.effective_from)

    def limits(self) -> dict[str, int | None]:
        return {"concurrency": self.concurrency, "rpm": self.rpm, "tpm": self.tpm, "tpd": self.tpd, "rpd": self.rpd}


class ToolPrice(_Provenance):
    """A per-call price of a builtin tool on one provider and region (`$web_search`), dated like a card."""

    tool: Literal["$web_search"]
    currency: Literal["USD", "CNY"]
    price_per_call: Decimal = Field(ge=0)

    _money = field_validator("price_per_call", mode="before")(_dec)

    @property
    def key(self) -> tuple:
        return (self.provider, self.region, self.tool, self.effective_from)


def custom_tier(name: str = "custom", **limits: int | None) -> RateTier:
    """A tier the user writes: any subset of concurrency, rpm, tpm, tpd, rpd."""
    return RateTier(
        provider=limits.pop("provider", "custom"),
        region=limits.pop("region", "global"),
        name=name,
        source="user-defined",
        official=False,
        verified_on=dt.date.today(),
        **limits,
    )


# ---------------------------------------------------------------- loading


def _read_table(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"cannot read catalog file {path}: {exc}") from exc
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            return yaml.safe_load(text) or {}
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise CatalogError(f"{path}: not valid {path.suffix.lstrip('.').upper()}: {exc}") from exc


def _cards_from(data: dict, origin: str) -> list[PriceCard]:
    out = []
    for i, row in enumerate(data.get("card", [])):
        out.append(validate(PriceCard, row, f"{origin}: card[{i}] ({row.get('model', '?')})", error=CatalogError))
    return out


def _tool_prices_from(data: dict, origin: str) -> list[ToolPrice]:
    return [
        validate(ToolPrice, row, f"{origin}: tool_price[{i}] ({row.get('tool', '?')})", error=CatalogError)
        for i, row in enumerate(data.get("tool_price", []))
    ]


def _tiers_from(data: dict, origin: str) -> list[RateTier]:
    out: list[RateTier] = []
    defaults = data.get("defaults", {})
    for table_name, meta in defaults.items():
        rows = data.get(table_name, [])
        for region, currency in (("intl", "USD"), ("cn", "CNY")):
            for name, rc_intl, rc_cn, conc, rpm, tpm, tpd in rows:
                out.append(
                    RateTier(
                        provider=meta["provider"],
                        region=region,
                        name=name,
                        version=meta.get("version", ""),
                        concurrency=conc or None,
                        rpm=rpm or None,
                        tpm=tpm or None,
                        tpd=tpd or None,
                        recharge=rc_intl if region == "intl" else rc_cn,
                        recharge_currency=currency,
                        effective_from=meta.get(f"effective_from_{region}"),
                        effective_to=meta.get(f"effective_to_{region}"),
                        verified_on=meta["verified_on"],
                        official=meta["official"],
                        source=meta["source"],
                    )
                )
    for i, row in enumerate(data.get("tier", [])):
        out.append(validate(RateTier, row, f"{origin}: tier[{i}] ({row.get('name', '?')})", error=CatalogError))
    return out


def import_litellm(
    path: str | Path, *, provider: str | None = None, verified_on: dt.date | None = None
) -> list[PriceCard]:
    """Price cards from LiteLLM's `model_prices_and_context_window.json` (per-token USD costs)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CatalogError(f"cannot read LiteLLM price file {path}: {exc}") from exc
    verified = verified_on or dt.date.fromtimestamp(path.stat().st_mtime)
    cards = []
    for name, e in data.items():
        if name == "sample_spec" or not isinstance(e, dict) or "input_cost_per_token" not in e:
            continue
        prov = e.get("litellm_provider", "litellm")
        if provider and prov != provider:
            continue
        per_m = lambda k, e=e: None if e.get(k) is None else Decimal(str(e[k])) * 1_000_000  # noqa: E731
        out_price = per_m("output_cost_per_token")
        if out_price is None:
            continue
        batch = None
        if e.get("input_cost_per_token_batches") and e.get("input_cost_per_token"):
            batch = (
                Decimal(str(e["input_cost_per_token_batches"])) / Decimal(str(e["input_cost_per_token"]))
            ).normalize()
        cards.append(
            PriceCard(
                provider=prov,
                region="global",
                model=name,
                currency="USD",
                input_cache_hit=per_m("cache_read_input_token_cost"),
                input_cache_miss=per_m("input_cost_per_token"),
                output=out_price,
                batch_multiplier=batch if batch is None or 0 < batch <= 1 else None,
                context_window=int(e.get("max_input_tokens") or e.get("max_tokens") or 1),
                default_max_completion_tokens=None,
                retired_on=dt.date.fromisoformat(e["deprecation_date"]) if e.get("deprecation_date") else None,
                source=f"LiteLLM model_prices_and_context_window.json ({path.name})"
                + (f"; {e['source']}" if e.get("source") else ""),
                official=False,
                verified_on=verified,
            )
        )
    return cards


class Catalog:
    """Immutable set of price cards and rate tiers with date-aware look-ups."""

    def __init__(self, cards: Iterable[PriceCard], tiers: Iterable[RateTier], tool_prices: Iterable[ToolPrice] = ()):
        # Later rows with the same key replace earlier ones: that is how user files override shipped rows.
        self._cards = tuple({c.key: c for c in cards}.values())
        self._tiers = tuple({t.key: t for t in tiers}.values())
        self._tool_prices = tuple({t.key: t for t in tool_prices}.values())

    @property
    def cards(self) -> tuple[PriceCard, ...]:
        return self._cards

    @property
    def rate_tiers(self) -> tuple[RateTier, ...]:
        return self._tiers

    @property
    def tool_prices(self) -> tuple[ToolPrice, ...]:
        return self._tool_prices

    def with_rows(
        self, cards: Iterable[PriceCard] = (), tiers: Iterable[RateTier] = (), tool_prices: Iterable[ToolPrice] = ()
    ) -> Catalog:
        return Catalog([*self._cards, *cards], [*self._tiers, *tiers], [*self._tool_prices, *tool_prices])

    def tool_price(self, provider: str, region: str, on: dt.date, tool: str = "$web_search") -> ToolPrice | None:
        """The per-call price of `tool` on `provider`/`region` in force on `on`, or None."""
        live = [
            t
            for t in self._tool_prices
            if (t.provider, t.region, t.tool) == (provider, region, tool) and t.in_force(on)
        ]
        return max(live, key=lambda t: t.effective_from or dt.date.min) if live else None

    def _with_tool_price(self, card: PriceCard, on: dt.date) -> PriceCard:
        # A card that states its own web_search price keeps it; otherwise the dated tool row in force applies.
        if "web_search_per_call" in card.model_fields_set:
            return card
        t = self.tool_price(card.provider, card.region, on)
        if t is None:
            return card
        if t.currency != card.currency:
            raise CatalogError(
                f"tool price {t.tool} for {t.provider}/{t.region} is in {t.currency}, "
                f"card {card.model} in {card.currency}"
            )
        return card.model_copy(
            update={
                "web_search_per_call": t.price_per_call,
                "web_search_source": f"{t.source} (verified {t.verified_on}, official={t.official})",
            }
        )

    # -- prices
    def providers(self) -> list[str]:
        return sorted({c.provider for c in self._cards})

    def models(self, provider: str = "moonshot", region: str | None = None, on: dt.date | None = None) -> list[str]:
        names = set()
        for c in self._cards:
            if c.provider == provider and (region is None or c.region == region) and (on is None or c.in_force(on)):
                names.update(c.names())
        return sorted(names)

    def price(
        self, model: str, provider: str = "moonshot", region: str | None = None, on: dt.date | None = None
    ) -> PriceCard:
        """The card for `model` in force on `on` (default today). Errors list what is known."""
        on = on or dt.date.today()
        region = region or _default_region(provider)
        pool = [c for c in self._cards if c.provider == provider and c.region == region]
        if not pool:
            known = sorted({(c.provider, c.region) for c in self._cards})
            raise CatalogError(
                f"no price cards for provider={provider!r} region={region!r}; known: "
                + ", ".join(f"{p}/{r}" for p, r in known)
            )
        named = [c for c in pool if model in c.names()]
        if not named:
            raise CatalogError(
                f"unknown model {model!r} for provider={provider!r} region={region!r}; known models: "
                + ", ".join(sorted({n for c in pool for n in c.names()}))
            )
        live = [c for c in named if c.in_force(on)]
        if not live:
            spans = "; ".join(f"{c.effective_from or '-'} to {c.effective_to or '-'}" for c in named)
            retired = next((c.retired_on for c in named if c.retired_on), None)
            why = f"was retired on {retired}" if retired and on >= retired else "has no price in force"
            raise CatalogError(f"model {model!r} ({provider}/{region}) {why} (asked for {on}); its cards cover {spans}")
        return self._with_tool_price(max(live, key=lambda c: c.effective_from or dt.date.min), on)

    # -- tiers
    def tiers(
        self,
        provider: str = "moonshot",
        region: str | None = None,
        on: dt.date | None = None,
        version: str | None = None,
    ) -> list[RateTier]:
        """The tiers in force on `on`; with `version`, that version of the tier table whatever its dates."""
        on = on or dt.date.today()
        region = region or _default_region(provider)
        pool = [t for t in self._tiers if t.provider == provider and t.region == region]
        if version is not None:
            known = sorted({t.version for t in pool if t.version})
            if version not in known:
                raise CatalogError(
                    f"unknown tier table version {version!r} for provider={provider!r} region={region!r}; known: "
                    + (", ".join(known) or "(none)")
                )
            out = [t for t in pool if t.version == version]
        else:
            out = [t for t in pool if t.in_force(on)]
        # Ascending by recharge then capacity: the ladder an account climbs.
        return sorted(out, key=lambda t: (t.recharge or 0, t.concurrency or 0, t.rpm or 0, t.name))

    def tier(
        self,
        name: str,
        provider: str = "moonshot",
        region: str | None = None,
        on: dt.date | None = None,
        version: str | None = None,
    ) -> RateTier:
        on = on or dt.date.today()
        region = region or _default_region(provider)
        live = [t for t in self.tiers(provider, region, on, version) if t.name.lower() == name.lower()]
        if live:
            return live[0]
        known = [t.name for t in self.tiers(provider, region, on, version)]
        ever = sorted({t.name for t in self._tiers if t.provider == provider and t.region == region})
        raise CatalogError(
            f"unknown tier {name!r} for provider={provider!r} region={region!r} on {on}; known tiers: "
            + (", ".join(known) if known else "(none in force)")
            + ("" if set(known) == set(ever) else f" (ever listed: {', '.join(ever)})")
        )

    # -- frames
    def prices_frame(self, on: dt.date | None = None) -> pd.DataFrame:
        """One row per card. Tool prices are those in force on `on` (default: today, or the card's last day)."""
        rows = []
        for c in self._cards:
            if on is not None and not c.in_force(on):
                continue
            day = on or dt.date.today()
            if c.effective_to is not None and day >= c.effective_to:
                day = c.effective_to - dt.timedelta(days=1)
            c = self._with_tool_price(c, day)
            rows.append(
                {
                    "provider": c.provider,
                    "region": c.region,
                    "model": c.model,
                    "currency": c.currency,
                    "input_cache_hit": float(c.cache_hit_price),
                    "input_cache_miss": float(c.input_cache_miss),
                    "output": float(c.output),
                    "input_cache_write_5m": None if c.input_cache_write_5m is None else float(c.input_cache_write_5m),
                    "input_cache_write_1h": None if c.input_cache_write_1h is None else float(c.input_cache_write_1h),
                    "web_search_per_call": float(c.web_search_per_call),
                    "batch_multiplier": None if c.batch_multiplier is None else float(c.batch_multiplier),
                    "context_window": c.context_window,
                    "default_max_completion_tokens": c.default_max_completion_tokens,
                    "max_output_tokens": c.max_output_tokens,
                    "reasoning": c.reasoning,
                    "reasoning_effort": None if c.reasoning_effort is None else list(c.reasoning_effort),
                    "reasoning_effort_source": c.reasoning_effort_source,
                    "prices_exclude_tax": c.prices_exclude_tax,
                    "effective_from": c.effective_from,
                    "effective_to": c.effective_to,
                    "retired_on": c.retired_on,
                    # A third party's retirement date, not confirmed officially (retired_on stays empty then).
                    "reported_retired_on": c.reported_retired_on,
                    "verified_on": c.verified_on,
                    "official": c.official,
                    "source": c.source,
                    "max_output_source": c.max_output_source,
                    "cache_write_source": c.cache_write_source,
                    "web_search_source": c.web_search_source,
                    "batch_source": c.batch_source,
                    "notes": c.notes,
                }
            )
        return pd.DataFrame(rows)

    def tool_prices_frame(self, on: dt.date | None = None) -> pd.DataFrame:
        rows = [
            {
                "provider": t.provider,
                "region": t.region,
                "tool": t.tool,
                "currency": t.currency,
                "price_per_call": float(t.price_per_call),
                "effective_from": t.effective_from,
                "effective_to": t.effective_to,
                "verified_on": t.verified_on,
                "official": t.official,
                "source": t.source,
            }
            for t in self._tool_prices
            if on is None or t.in_force(on)
        ]
        return pd.DataFrame(rows)

    def tiers_frame(self, on: dt.date | None = None) -> pd.DataFrame:
        rows = []
        for t in self._tiers:
            if on is not None and not t.in_force(on):
                continue
            rows.append(
                {
                    "provider": t.provider,
                    "region": t.region,
                    "tier": t.name,
                    "version": t.version,
                    **t.limits(),
                    "recharge": None if t.recharge is None else float(t.recharge),
                    "recharge_currency": t.recharge_currency,
                    "effective_from": t.effective_from,
                    "effective_to": t.effective_to,
                    "verified_on": t.verified_on,
                    "official": t.official,
                    "source": t.source,
                }
            )
        return pd.DataFrame(rows)


def _default_region(provider: str) -> str:
    return "intl" if provider == "moonshot" else "global"


_SHIPPED = ("prices.toml", "tiers.toml")


def _file_stamp(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except OSError:
        return (str(path), -1, -1)  # _read_table reports the missing file
    return (str(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=4)
def _shipped_catalog(*stamps: tuple[str, int, int]) -> Catalog:
    """The shipped catalog, read once per version of its files (a Catalog is immutable, so sharing it is safe)."""
    cards: list[PriceCard] = []
    tiers: list[RateTier] = []
    tools: list[ToolPrice] = []
    for (path, _, _), name in zip(stamps, _SHIPPED):
        data = _read_table(Path(path))
        cards += _cards_from(data, name)
        tiers += _tiers_from(data, name)
        tools += _tool_prices_from(data, name)
    return Catalog(cards, tiers, tools)


def load_catalog(extra: Sequence[str | Path] = ()) -> Catalog:
    """The shipped catalog, plus user files (TOML/YAML with `[[card]]`/`[[tier]]` rows, or LiteLLM JSON)."""
    shipped = _shipped_catalog(*(_file_stamp(data_path("catalog", n)) for n in _SHIPPED))
    if not extra:
        return shipped
    cards, tiers, tools = list(shipped.cards), list(shipped.rate_tiers), list(shipped.tool_prices)
    for f in extra:
        f = Path(f)
        if f.suffix.lower() == ".json":
            cards += import_litellm(f)
            continue
        data = _read_table(f)
        cards += _cards_from(data, str(f))
        tiers += _tiers_from(data, str(f))
        tools += _tool_prices_from(data, str(f))
    return Catalog(cards, tiers, tools)
