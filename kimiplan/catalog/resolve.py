"""A scenario against the catalog: its price card, its rate tier, each route's budget, and checked loading.

The scenario model (`kimiplan.model`) knows nothing of the catalog; this module is where the two meet."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

from kimiplan.catalog.cards import Catalog, PriceCard, RateTier, load_catalog
from kimiplan.errors import CatalogError, ScenarioError
from kimiplan.model.scenario import InlineTier, read_scenario

if TYPE_CHECKING:
    from kimiplan.model.scenario import Route, Scenario


def price_card(scenario: Scenario, catalog: Catalog | None = None, on: dt.date | None = None) -> PriceCard:
    """The scenario's model as priced by its provider and region on `on` (default: the scenario's `as_of`)."""
    catalog = catalog or load_catalog()
    return catalog.price(scenario.model, scenario.provider, scenario.resolved_region, on or scenario.as_of)


def rate_tier(scenario: Scenario, catalog: Catalog | None = None, on: dt.date | None = None) -> RateTier | None:
    """The tier as a catalog `RateTier` (inline tiers become custom ones); None when no tier is set."""
    if scenario.tier is None:
        return None
    if isinstance(scenario.tier, InlineTier):
        t = scenario.tier
        return RateTier(
            provider="custom",
            region="global",
            name=t.name,
            source=f"scenario {scenario.name}",
            official=False,
            verified_on=scenario.as_of,
            concurrency=t.concurrency,
            rpm=t.rpm,
            tpm=t.tpm,
            tpd=t.tpd,
            rpd=t.rpd,
        )
    catalog = catalog or load_catalog()
    version = getattr(scenario, "tier_table", None)  # a chosen table version wins over the dates
    return catalog.tier(scenario.tier, scenario.provider, scenario.resolved_region, on or scenario.as_of, version)


def max_completion(scenario: Scenario, route: Route, card: PriceCard | None = None) -> int:
    """The budget a request of `route` carries: its own, else the model default. A budget above what the
    route's provider lets a request ask for (`max_output_tokens`, e.g. K3: 1,048,576 on Moonshot's own API)
    is an error naming both."""
    card = card or price_card(scenario)
    if route.max_completion_tokens is not None:
        cap = card.max_output_tokens
        if cap is not None and route.max_completion_tokens > cap:
            raise ScenarioError(
                f"route {route.name!r}: max_completion_tokens {route.max_completion_tokens:,} is above the "
                f"{cap:,} that {card.model!r} ({card.provider}) accepts ({card.max_output_source or card.source})"
            )
        return route.max_completion_tokens
    if card.default_max_completion_tokens is None:
        raise ScenarioError(
            f"route {route.name!r}: max_completion_tokens is not set and model {scenario.model!r} "
            f"({scenario.provider}) has no documented default; set it in the scenario"
        )
    return card.default_max_completion_tokens


def check_against_catalog(scenario: Scenario, catalog: Catalog | None = None, origin: str = "<scenario>") -> None:
    """The model and the tier must be known to the catalog on `as_of`; errors list the known ones."""
    catalog = catalog or load_catalog()
    try:
        price_card(scenario, catalog)
    except CatalogError as exc:
        raise ScenarioError(f"{origin}: field model: {exc}") from None
    try:
        rate_tier(scenario, catalog)
    except CatalogError as exc:
        raise ScenarioError(f"{origin}: field tier: {exc}") from None


def load_scenario(
    path: str | Path, catalog: Catalog | None = None, check_catalog: bool = True, calibrate: bool = True
) -> Scenario:
    """Read and validate a scenario file (YAML or JSON) or a bundled example's name (`"support_chat"`);
    with `check_catalog`, the model and tier must exist in the catalog on the scenario's `as_of`. With
    `calibrate` (the default, so every command sees the same figures), the calibration files the scenario names
    are applied (`kimiplan.catalog.calibrated`); `calibrate=False` reads the assumptions as written."""
    scenario = read_scenario(path)
    if check_catalog:
        check_against_catalog(scenario, catalog, origin=str(path))
    if calibrate and (scenario.calibration or any(r.calibration for r in scenario.routes)):
        from kimiplan.catalog.calibrated import apply_calibration

        scenario = apply_calibration(scenario, origin=str(path))
    return scenario
