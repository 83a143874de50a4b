"""Exceptions raised by kimiplan. Every message names the field and the value that is wrong."""

from __future__ import annotations


class KimiplanError(Exception):
    """Base class: the CLI prints these as one clear line and exits 2."""


class CatalogError(KimiplanError, LookupError):
    """An unknown provider, model, region or tier, or a card with no price at the asked date."""


class ScenarioError(KimiplanError, ValueError):
    """A scenario file that does not validate; the message names file, route, field and value."""


class ConfigError(KimiplanError, ValueError):
    """A bad argument to a library function (rate, horizon, budget ...)."""
