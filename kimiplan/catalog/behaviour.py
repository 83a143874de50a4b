"""Kimi API behaviours the docs leave open or sources disagree on (data/catalog/behaviour.toml), with sources.

The one home of these facts: the emulator's config and the client take their defaults from `kimi_behaviour()`,
and docs/KIMI_BEHAVIOUR.md shows the same table (`behaviour_table_markdown`, held to the doc by a test).
"""

from __future__ import annotations

import datetime as dt
import tomllib
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kimiplan.errors import ConfigError, validate
from kimiplan.io.paths import data_path

Value = bool | int | str


class BehaviourRow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    key: str = Field(pattern=r"^[a-z_]+$")
    value: Value
    alternatives: tuple[Value, ...] = ()
    official: bool
    verified_on: dt.date
    source: str = Field(min_length=10)


class KimiBehaviour(BaseModel):
    """The rows by key; `kimi_behaviour()["request_id_header"]` is a value."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    rows: tuple[BehaviourRow, ...]

    def row(self, key: str) -> BehaviourRow:
        for r in self.rows:
            if r.key == key:
                return r
        raise KeyError(f"no Kimi behaviour {key!r} in data/catalog/behaviour.toml; known: {[r.key for r in self.rows]}")

    def __getitem__(self, key: str) -> Any:
        return self.row(key).value


@lru_cache(maxsize=1)
def kimi_behaviour() -> KimiBehaviour:
    """The shipped table (read once; immutable)."""
    path = data_path("catalog", "behaviour.toml")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the Kimi behaviour table ({exc})") from None
    rows = tuple(validate(BehaviourRow, r, f"{path} behaviour[{i}]") for i, r in enumerate(data.get("behaviour", [])))
    keys = [r.key for r in rows]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ConfigError(f"{path}: behaviour keys {dupes} appear twice")
    return KimiBehaviour(rows=rows)


def behaviour_table_markdown() -> str:
    """The table of docs/KIMI_BEHAVIOUR.md, one row per behaviour."""

    def show(v: Value) -> str:
        return f"`{str(v).lower() if isinstance(v, bool) else v}`"

    lines = [
        "| behaviour | default | alternatives | official | verified on | source |",
        "|---|---|---|---|---|---|",
    ]
    for r in kimi_behaviour().rows:
        alts = ", ".join(show(a) for a in r.alternatives) or "none"
        src = r.source.replace("|", "\\|")
        lines.append(
            f"| `{r.key}` | {show(r.value)} | {alts} | {'yes' if r.official else 'no'} | {r.verified_on} | {src} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # regenerate the table of docs/KIMI_BEHAVIOUR.md
    print(behaviour_table_markdown())
