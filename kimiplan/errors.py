"""Exceptions raised by kimiplan. Every message names the field and the value that is wrong."""

from __future__ import annotations

from typing import Any


class KimiplanError(Exception):
    """Base class: the CLI prints these as one clear line and exits 2."""


class CatalogError(KimiplanError, LookupError):
    """An unknown provider, model, region or tier, or a card with no price at the asked date."""


class ScenarioError(KimiplanError, ValueError):
    """A scenario file that does not validate; the message names file, route, field and value."""


class ConfigError(KimiplanError, ValueError):
    """A bad argument to a library function (rate, horizon, budget ...)."""


class ConvergenceError(KimiplanError, ArithmeticError):
    """A fit whose optimizer did not reach a usable estimate (a merely slow one warns instead)."""


def validation_message(exc: Exception, origin: str | None = None) -> str:
    """One line from a pydantic `ValidationError`: where, which field, what is wrong and the value given."""
    e = exc.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
    msg = e["msg"].removeprefix("Value error, ")
    value = e.get("input")
    shown = "" if isinstance(value, (dict, list)) else f" (got {value!r:.80})"
    return f"{origin + ': ' if origin else ''}field {loc}: {msg}{shown}"


def validate(model: type, data: Any, origin: str | None = None, *, error: type[KimiplanError] = ConfigError):
    """`model.model_validate(data)`, with pydantic's error turned into `error` (one line naming the field)."""
    from pydantic import ValidationError  # pydantic loads with the models; errors stays import-light

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(validation_message(exc, origin)) from None
