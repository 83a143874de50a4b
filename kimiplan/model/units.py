"""Shares and rates as people write them: a fraction (0.05) or a percentage with its unit ("5%"). A bare number a
person would read as a percentage (`monthly_growth: 5`, `share: 80`) is refused with the reading it most likely
meant. One rule for every such field of a scenario, and for the `kimiplan init` wizard."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BeforeValidator


def _pct_text(x: float) -> str:
    return f"{x:g} %"


def parse_fraction(v: Any, hi: float = 1.0, what: str = "fraction") -> Any:
    """A share or rate a person may write as a fraction (0.05) or with its unit ("5%", "5 %"). A bare number
    above `hi` is refused with the reading it most likely meant ("did you mean 5 %?"): `monthly_growth: 5` is
    +500 % a month, which nobody means without saying so ("500%"). Other values pass through unchanged (the
    field's own bounds judge them); the wizard (`kimiplan init`) uses the same rule."""
    if isinstance(v, str):
        t = v.strip().replace("\u202f", " ").replace("\xa0", " ")
        if t.endswith("%"):
            try:
                return float(t[:-1].strip()) / 100.0
            except ValueError:
                raise ValueError(f'{v!r} is not a percentage; write e.g. "5%" or 0.05') from None
        try:
            v = float(t)
        except ValueError:
            raise ValueError(f'{v!r} is not a number; write a {what} such as 0.05 or a percentage "5%"') from None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return v
    if hi < abs(v) <= 100:
        sign = "-" if v < 0 else ""
        per = " a month" if what == "growth" else ""
        raise ValueError(
            f"{v:g} reads as {_pct_text(v * 100)}{per}; did you mean {_pct_text(v)}? Write {v / 100:g} or "
            f'"{sign}{abs(v):g}%"'
            + (f' (or "{v * 100:g}%" if you do mean {_pct_text(v * 100)})' if what == "growth" else "")
        )
    return v


def fraction_input(hi: float = 1.0, what: str = "fraction"):
    """The pydantic side of `parse_fraction`: a field annotation that accepts "5%" and questions a bare 5."""
    return BeforeValidator(lambda v: parse_fraction(v, hi, what), json_schema_input_type=float | str)


Share = Annotated[float, fraction_input()]
Growth = Annotated[float, fraction_input(1.0, "growth")]
