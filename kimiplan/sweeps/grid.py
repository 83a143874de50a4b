"""Sweep grids: which scenario fields vary, and over which values.

A grid file (YAML) maps dotted scenario paths to lists of values; the points are their Cartesian product, in
the file's order (the last path varies fastest)::

    tier: [Tier1, Tier2, Tier3, {name: big, concurrency: 2000, rpm: 20000}]   # catalog names or inline tiers
    model: [kimi-k2.6]
    traffic.monthly_growth: [0.0, 0.05, 0.10]
    traffic.requests_per_day: [20000, 40000, 80000]
    routes.answer.max_completion_tokens: [1024, 2048, 4096]
    routes.*.max_completion_tokens: [4096]          # every route

`routes.NAME.FIELD` addresses a route by its name. `catalog` (not a scenario field) gives a point extra catalog
files, such as another tier table or price cards (null: the shipped catalog). Explicit points can be listed instead
(or as well) under `points:` (a list of {path: value} maps), and `scenarios:` may name the scenarios a CLI sweep
runs on.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kimiplan.errors import ConfigError, ScenarioError
from kimiplan.model.scenario import Scenario

#: paths whose change leaves the route draws (token moments, cost per request) alone
TRAFFIC_PREFIX = "traffic."
TIER_PATHS = ("tier",)


def load_grid(spec: str | Path | Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The grid's points (each a {path: value} map, in a fixed order) and the scenarios it names (may be empty)."""
    origin = "grid"
    if isinstance(spec, Mapping):
        data = dict(spec)
    else:
        origin = str(spec)
        try:
            data = yaml.safe_load(Path(spec).read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"grid {origin!r} cannot be read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"grid {origin!r}: not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"grid {origin!r}: expected a map of scenario paths to lists of values")
    scenarios = data.pop("scenarios", []) or []
    explicit = data.pop("points", []) or []
    if isinstance(scenarios, str):
        scenarios = [scenarios]
    axes = {}
    for path, values in data.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid {origin!r}: field {path}: expected a non-empty list of values, got {values!r:.80}")
        axes[str(path)] = values
    points = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())] if axes else []
    for i, p in enumerate(explicit):
        if not isinstance(p, Mapping):
            raise ConfigError(f"grid {origin!r}: points[{i}] must be a map of paths to values, got {p!r:.80}")
        points.append(dict(p))
    if not points:
        raise ConfigError(f"grid {origin!r}: no points (give paths with lists of values, or points:)")
    return points, [str(s) for s in scenarios]


def _set(data: dict, path: str, value: Any, origin: str) -> None:
    parts = path.split(".")
    if parts[0] == "routes":
        if len(parts) < 3:
            raise ConfigError(f"{origin}: path {path!r}: use routes.NAME.FIELD (or routes.*.FIELD)")
        names = [r["name"] for r in data["routes"]]
        targets = data["routes"] if parts[1] == "*" else [r for r in data["routes"] if r["name"] == parts[1]]
        if not targets:
            raise ConfigError(f"{origin}: path {path!r}: no route {parts[1]!r}; routes: {names}")
        for r in targets:
            _set_in(r, parts[2:], value, path, origin)
        return
    _set_in(data, parts, value, path, origin)


def _set_in(node: dict, parts: list[str], value: Any, path: str, origin: str) -> None:
    for p in parts[:-1]:
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{origin}: path {path!r}: {p!r} is not a section")
        node = nxt
    node[parts[-1]] = copy.deepcopy(value)
    if parts == ["traffic", "requests_per_day"]:
        node.pop("requests_per_second", None)  # exactly one rate: the override replaces the other
    elif parts == ["traffic", "requests_per_second"]:
        node.pop("requests_per_day", None)


def apply_overrides(scenario: Scenario, overrides: Mapping[str, Any], origin: str = "sweep point") -> Scenario:
    """A copy of `scenario` with each dotted path set; validated, errors name the path and the value."""
    if not overrides:
        return scenario
    data = scenario.model_dump(exclude_unset=False)
    for path, value in overrides.items():
        _set(data, path, value, origin)
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(p) for p in e["loc"])
        given = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        raise ScenarioError(f"{origin} ({given}): field {loc}: {e['msg']} (got {e.get('input')!r:.80})") from None


def overrides_key(overrides: Mapping[str, Any], keep=None) -> str:
    """A stable text key of the overrides (optionally only those whose path passes `keep`)."""
    items = sorted((k, v) for k, v in overrides.items() if keep is None or keep(k))
    return json.dumps(items, sort_keys=True, default=str)


def describe_value(v: Any) -> Any:
    """A grid value as a table cell: inline tiers by their name, other maps as JSON."""
    if isinstance(v, Mapping):
        return str(v.get("name")) if "name" in v else json.dumps(v, sort_keys=True)
    if isinstance(v, Sequence) and not isinstance(v, str):
        return json.dumps(v)
    return v
