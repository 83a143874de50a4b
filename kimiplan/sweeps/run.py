"""Sweeps: plan (and optionally simulate) every point of a grid of scenario overrides, locally or on Dask.

Each point is a scenario with some fields overridden. The expensive parts of its plan depend on a few of them
only, so a point reuses what an earlier point with the same inputs computed (within one task; nothing is
kept between calls):

- route moments and cost per request: everything but `traffic.*` and `tier`;
- peak factors: the traffic's shape (`traffic.*` but its volume);
- refusal at today's traffic and the binding limit: all of the above plus the tier's limits and the volume;
- the sustainable request rate: all but the volume (it does not depend on today's volume);
- growth: closed forms over the whole grid at once (month the tier runs out, spend over the horizon).

Every point gets its own seed, `numpy.random.SeedSequence(seed).spawn(n)[i]`, used by its simulation; the
plan itself is deterministic. So the local and the Dask engine, and any chunking, give identical tables.
On Dask, work goes through an existing `distributed.Client` (or one made for a scheduler address): tasks are
submitted with explicit keys and `pure=False`, so none is silently shared or skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kimiplan.errors import ConfigError, ScenarioError
from kimiplan.sweeps.grid import TRAFFIC_PREFIX, apply_overrides, describe_value, load_grid, overrides_key

VOLUME_PATHS = ("traffic.requests_per_day", "traffic.requests_per_second")
#: not a scenario field: extra catalog files (a tier table, price cards) for the point; null for the shipped one
CATALOG_PATH = "catalog"
#: paths the plan reads only through closed forms (volume scales the rate; growth only dates the exhaustion)
SCALAR_PATHS = (*VOLUME_PATHS, "traffic.monthly_growth")


@dataclass(frozen=True)
class _Settings:
    target: float
    percentile: float
    horizon_months: int
    simulate_hours: float


def _workload(path: str) -> bool:
    return not path.startswith(TRAFFIC_PREFIX) and path != "tier"


def _shape(path: str) -> bool:
    return path.startswith(TRAFFIC_PREFIX) and path not in SCALAR_PATHS


def _structural(path: str) -> bool:
    return path not in SCALAR_PATHS


def _with_scalars(sc, overrides: Mapping[str, Any], origin: str):
    """`sc` with the point's volume and growth set: checked here, as the scenario model would check them, and
    set by a copy (validating the whole scenario again for each of thousands of points would dominate)."""
    upd: dict[str, Any] = {}
    for path in SCALAR_PATHS:
        if path not in overrides:
            continue
        v = overrides[path]
        name = path.split(".", 1)[1]
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or (v <= -1 if name == "monthly_growth" else v <= 0):
            bound = "> -1" if name == "monthly_growth" else "> 0"
            raise ScenarioError(f"{origin}: field {path}: must be a number {bound}, got {v!r}")
        upd[name] = float(v)
        if name == "requests_per_day":
            upd["requests_per_second"] = None
        elif name == "requests_per_second":
            upd["requests_per_day"] = None
    if not upd:
        return sc
    return sc.model_copy(update={"traffic": sc.traffic.model_copy(update=upd)})


def _evaluate(base, overrides, seed_words, catalog, cfg: _Settings, cache: dict) -> dict[str, Any]:
    from kimiplan.capacity.plan import (
        demand_table,
        joint_simulation,
        max_sustainable_scale,
        peak_factors,
        refusal_summary,
        route_moments,
        use_joint_simulation,
    )
    from kimiplan.catalog.admission import scenario_limits
    from kimiplan.catalog.resolve import check_against_catalog, price_card, rate_tier
    from kimiplan.finance.cost import DAYS_PER_MONTH, expected_cost

    b_idx, base_sc = base
    origin = f"scenario {base_sc.name!r} sweep point"
    if overrides.get(CATALOG_PATH) is not None:  # a point with its own tier table / price files
        files = overrides[CATALOG_PATH]
        files = [files] if isinstance(files, str) else list(files)
        if ("c", tuple(files)) not in cache:
            from kimiplan.catalog.cards import load_catalog

            cache["c", tuple(files)] = load_catalog(files)
        catalog = cache["c", tuple(files)]
    xk = (b_idx, overrides_key(overrides, _structural))
    if ("s", xk) not in cache:
        fields = {k: v for k, v in overrides.items() if _structural(k) and k != CATALOG_PATH}
        struct = apply_overrides(base_sc, fields, origin=origin)
        tier = rate_tier(struct, catalog)
        limits = None if tier is None else scenario_limits(struct, catalog, tier)
        cache["s", xk] = (struct, tier, limits)
    struct, tier, limits = cache["s", xk]
    sc = _with_scalars(struct, overrides, origin)
    wk = (b_idx, overrides_key(overrides, _workload))
    if ("w", wk) not in cache:
        check_against_catalog(sc, catalog, origin=origin)
        card = price_card(sc, catalog)
        per_req = expected_cost(sc, catalog, card, requests_per_day=1.0)
        cache["w", wk] = (route_moments(sc, catalog), float(per_req["cost_per_day"].sum()), card.currency)
    moments, cost_per_request, currency = cache["w", wk]
    sk = (b_idx, overrides_key(overrides, _shape))
    if ("p", sk) not in cache:
        cache["p", sk] = peak_factors(sc)
    peaks = cache["p", sk]
    row: dict[str, Any] = {
        "model": sc.model,
        "provider": sc.provider,
        "tier": None if tier is None else tier.name,
        "requests_per_day": sc.traffic.per_day,
        "monthly_growth": sc.traffic.monthly_growth,
        "currency": currency,
        "cost_per_request": cost_per_request,
        "cost_per_month": cost_per_request * sc.traffic.per_day * DAYS_PER_MONTH,
    }
    if tier is None:
        row.update(refusal_total=0.0, binding_limit="none", holds=True, max_requests_per_second=math.inf)
    else:
        lk = (wk, sk, tuple(sorted(limits.items())))
        rk = (*lk, sc.traffic.mean_rps)
        if ("r", rk) not in cache:
            s = dict(refusal_summary(demand_table(sc, catalog, tier, cfg.percentile, moments=moments, peaks=peaks)))
            # Where concurrency and a window limit bind together the plan's headline is a short simulation:
            # the same here, so a point equals its plan.
            joint = joint_simulation(sc, catalog, tier, s, cfg.target, peaks, moments=moments)
            if joint is not None:
                use_joint_simulation(s, joint)
            cache["r", rk] = s
        s = cache["r", rk]
        if ("m", lk) not in cache:
            # The sustainable rate does not depend on today's volume: computed once, at the base volume.
            scale = max_sustainable_scale(struct, catalog, tier, cfg.target, moments=moments, peaks=peaks)
            cache["m", lk] = scale * struct.traffic.mean_rps
        row.update(
            refusal_total=float(s["refusal_total"]),
            binding_limit=s["binding_limit"] or "none",
            holds=bool(s["refusal_total"] <= cfg.target),
            max_requests_per_second=cache["m", lk],
        )
        for k, v in s["refusal_by_limit"].items():
            row[f"refusal_{k}"] = float(v)
    if cfg.simulate_hours > 0:
        row.update(_simulate(sc, catalog, tier, cfg.simulate_hours, _seed_sequence(seed_words)))
    return row


def _simulate(sc, catalog, tier, hours: float, ss: np.random.SeedSequence) -> dict[str, Any]:
    from kimiplan.capacity.sim.simulate import simulate
    from kimiplan.model.settings import SimSettings

    seed = int(ss.generate_state(1, dtype=np.uint32)[0])
    settings = SimSettings.for_scenario(sc, hours=hours, seed=seed)
    res = simulate(sc, catalog, settings, tier=tier)
    return {
        "sim_seed": seed,
        "sim_requests": int(res.summary["requests"]),
        "sim_rejected_fraction": float(res.summary["rejected_fraction"]["total"]),
        "sim_failed_fraction": float(res.summary["failed_fraction"]),
    }


def _evaluate_chunk(bases: dict, items: list, catalog, cfg: _Settings) -> list[dict[str, Any]]:
    """One task: its points in order, sharing one cache."""
    cache: dict = {}
    out = []
    for b_idx, p_idx, overrides, seed_words in items:
        row = _evaluate((b_idx, bases[b_idx]), overrides, seed_words, catalog, cfg, cache)
        out.append({"_scenario": b_idx, "_point": p_idx, **row})
    return out


# --- the result ---------------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """One row per (scenario, point): the overridden values, then the plan's figures. `frontier()` is the
    cost/refusal Pareto front, `figure()` draws it."""

    table: pd.DataFrame
    paths: list[str]
    engine: str
    seed: int
    target: float
    horizon_months: int
    notes: list[str] = field(default_factory=list)

    #: points share a demand (and so are comparable) when these agree; the rest are design choices
    DEMAND = ("scenario", "requests_per_day", "monthly_growth")

    def frontier(self) -> pd.DataFrame:
        """For each demand (scenario, volume, growth), the design points (tier, budgets, model, provider ...)
        that no other point of the same demand beats on both monthly cost and refusal."""
        out = []
        for _, g in self.table.groupby(list(self.DEMAND), sort=False):
            g = g.sort_values(["cost_per_month", "refusal_total"], kind="stable")
            best = math.inf
            keep = []
            for i, r in zip(g.index, g["refusal_total"]):
                if r < best - 1e-15:
                    keep.append(i)
                    best = r
            out.append(g.loc[keep])
        return pd.concat(out) if out else self.table.iloc[:0]

    def figure(self, max_points: int = 5000, max_fronts: int = 40):
        """Monthly cost against refusal at the peak minute: every point (a sample past `max_points`), and the
        frontier of each demand (the first `max_fronts`), coloured by scenario."""
        import plotly.graph_objects as go
        from plotly.colors import qualitative

        t = self.table
        if len(t) > max_points:
            t = t.sample(max_points, random_state=0)
        fig = go.Figure()
        cur = self.table["currency"].iloc[0]
        names = list(dict.fromkeys(self.table["scenario"]))
        colour = {n: qualitative.Plotly[i % len(qualitative.Plotly)] for i, n in enumerate(names)}
        for name, g in t.groupby("scenario", sort=False):
            fig.add_trace(
                go.Scattergl(
                    x=g["cost_per_month"],
                    y=g["refusal_total"],
                    mode="markers",
                    name=f"{name}: points",
                    legendgroup=name,
                    marker={"size": 5, "opacity": 0.35, "color": colour[name]},
                    text=[", ".join(f"{p[4:]}={r[p]}" for p in self.paths) for _, r in g.iterrows()],
                    hovertemplate="%{text}<br>cost %{x:,.0f} " + cur + "/month<br>refusal %{y:.2%}<extra></extra>",
                )
            )
        shown = set()
        fronts = self.frontier().groupby(list(self.DEMAND), sort=False)
        for i, ((name, vol, growth), g) in enumerate(fronts):
            if i >= max_fronts:
                break
            fig.add_trace(
                go.Scatter(
                    x=g["cost_per_month"],
                    y=g["refusal_total"],
                    mode="lines+markers",
                    name=f"{name}: frontier",
                    legendgroup=name,
                    showlegend=name not in shown,
                    line={"color": colour[name]},
                    hovertext=f"{vol:,.0f} requests/day, growth {growth:.1%}/month",
                )
            )
            shown.add(name)
        fig.update_layout(
            title="Sweep: monthly cost against refusal at the peak minute (frontier per demand)",
            xaxis_title=f"expected cost per month ({cur})",
            yaxis_title="refused share of requests at the peak minute",
            yaxis_tickformat=".1%",
            template="plotly_white",
        )
        return fig

    def to_parquet(self, path: str | Path) -> Path:
        from kimiplan.io.export import atomic_write

        t = self.table.copy()
        for p in self.paths:  # a grid column of mixed kinds (numbers and names) is stored as text
            if t[p].map(type).nunique() > 1:
                t[p] = t[p].map(json_cell)
        return atomic_write(path, lambda tmp: t.to_parquet(tmp, index=False), ".parquet")

    def _repr_html_(self) -> str:
        head = (
            f"<p>{len(self.table):,} points ({self.engine} engine, seed {self.seed}); frontier: "
            f"{len(self.frontier())} points. Refusal target {self.target:.2%}.</p>"
        )
        return head + self.table.head(20).to_html(index=False, float_format=lambda v: f"{v:,.4g}")


def json_cell(v: Any) -> str:
    import json

    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)


# --- the entry point ----------------------------------------------------------------------------------------
def sweep(
    scenarios,
    grid: str | Path | Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    catalog=None,
    engine: str = "local",
    client=None,
    scheduler: str | None = None,
    seed: int = 0,
    simulate_hours: float = 0.0,
    target: float | None = None,
    percentile: float | None = None,
    horizon_months: int = 12,
    chunk_size: int | None = None,
) -> SweepResult:
    """Plan every point of `grid` (a grid file, a {path: [values]} map, or a list of {path: value} points) on
    each scenario (one, or a list: Scenario objects, files or example names).

    The path `catalog` (not a scenario field) takes extra catalog files per point, e.g. another tier table:
    `{"catalog": [None, "my_tiers.toml"]}`.

    `engine="dask"` runs the points on an existing `dask.distributed.Client` (`client=`) or on the scheduler at
    `scheduler=` ("tcp://host:8786"). `simulate_hours` > 0 also simulates each point for that many hours with
    its own seed. `horizon_months`: the spend column `cost_over_horizon` adds up that many months of growth."""
    from kimiplan.capacity.plan import DEFAULT_PERCENTILE, DEFAULT_TARGET
    from kimiplan.catalog.cards import load_catalog
    from kimiplan.catalog.resolve import load_scenario

    if engine not in ("local", "dask"):
        raise ConfigError(f"engine must be 'local' or 'dask', got {engine!r}")
    if not (isinstance(horizon_months, int) and 1 <= horizon_months <= 600):
        raise ConfigError(f"horizon_months must be a whole number in [1, 600], got {horizon_months!r}")
    if simulate_hours < 0 or not math.isfinite(simulate_hours):
        raise ConfigError(f"simulate_hours must be >= 0, got {simulate_hours}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    catalog = catalog or load_catalog()
    if isinstance(grid, Sequence) and not isinstance(grid, (str, Path)):
        points, named = [dict(p) for p in grid], []
    else:
        points, named = load_grid(grid)
    if scenarios is None:
        scenarios = named
    if not isinstance(scenarios, (list, tuple)):
        scenarios = [scenarios]
    if not scenarios:
        raise ConfigError("no scenarios to sweep (pass some, or name them under scenarios: in the grid)")
    bases = {i: (load_scenario(s, catalog) if isinstance(s, (str, Path)) else s) for i, s in enumerate(scenarios)}
    cfg = _Settings(
        target=DEFAULT_TARGET if target is None else float(target),
        percentile=DEFAULT_PERCENTILE if percentile is None else float(percentile),
        horizon_months=horizon_months,
        simulate_hours=float(simulate_hours),
    )
    n = len(bases) * len(points)
    children = np.random.SeedSequence(seed).spawn(n)
    items = []
    for b in bases:
        for j, p in enumerate(points):
            k = b * len(points) + j
            # the child's entropy and spawn key rebuild it anywhere (workers included)
            items.append((b, j, p, (children[k].entropy, *children[k].spawn_key)))
    if engine == "local":
        rows = _evaluate_chunk(bases, items, catalog, cfg)
    else:
        rows = _run_dask(bases, items, catalog, cfg, client, scheduler, chunk_size)
    return _result(rows, bases, points, cfg, engine, seed)


def _seed_sequence(words) -> np.random.SeedSequence:
    entropy, *key = words
    return np.random.SeedSequence(entropy, spawn_key=tuple(key))


def _chunks(items: list, size: int) -> list[list]:
    """Points grouped by scenario and by what their expensive parts depend on (so each task's cache works),
    then cut into chunks of at most `size`, in a fixed order."""
    groups: dict = {}
    for it in items:
        groups.setdefault((it[0], overrides_key(it[2], _workload)), []).append(it)
    out = []
    for g in groups.values():
        out += [g[i : i + size] for i in range(0, len(g), size)]
    return out


DASK_EXTRA_MESSAGE = "engine='dask' needs Dask, an optional extra: pip install 'kimiplan[dask]'"


def dask_client_class():
    """`distributed.Client`, or a one-line error naming the extra that installs it (Dask is optional)."""
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError(DASK_EXTRA_MESSAGE) from None
    return Client


def _run_dask(bases, items, catalog, cfg, client, scheduler, chunk_size) -> list[dict]:
    Client = dask_client_class()
    own = None
    if client is None:
        if not scheduler:
            raise ConfigError("engine='dask' needs client= (a distributed.Client) or scheduler= (an address)")
        try:
            own = client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}") from None
    try:
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        size = chunk_size or max(1, math.ceil(len(items) / (4 * workers)))
        chunks = _chunks(items, size)
        # hash=False: keys of this call only. With content keys, an earlier sweep's futures being released
        # could drop data this call refers to under the same key ("computation on lost data").
        bases_f = client.scatter([bases], broadcast=True, hash=False)[0]
        catalog_f = client.scatter([catalog], broadcast=True, hash=False)[0]
        # pure=False: each task gets a fresh key, so no two tasks (nor an earlier sweep's) are taken as the same.
        futures = [client.submit(_evaluate_chunk, bases_f, ch, catalog_f, cfg, pure=False) for ch in chunks]
        rows = [r for part in client.gather(futures) for r in part]
    finally:
        if own is not None:
            own.close()
    return rows


def _result(rows: list[dict], bases: dict, points: list[dict], cfg: _Settings, engine: str, seed: int) -> SweepResult:
    t = pd.DataFrame(rows).sort_values(["_scenario", "_point"], kind="stable").reset_index(drop=True)
    paths = list(dict.fromkeys(p for pt in points for p in pt))
    cells = pd.DataFrame([{p: describe_value(pt.get(p)) for p in paths} for pt in points])
    front = pd.DataFrame(
        {
            "scenario": [bases[b].name for b in t["_scenario"]],
            "point": t["_point"].to_numpy(),
        }
    )
    grid_cols = cells.iloc[t["_point"].to_numpy()].reset_index(drop=True)
    grid_cols.columns = [f"set:{p}" for p in paths]
    body = t.drop(columns=["_scenario", "_point"])
    # Spend over the horizon with compound growth, for the whole grid at once (a geometric series).
    g = body["monthly_growth"].to_numpy(dtype=float)
    h = cfg.horizon_months
    factor = np.where(np.abs(g) < 1e-12, float(h), np.expm1(h * np.log1p(g)) / np.where(g == 0, 1.0, g))
    body["cost_over_horizon"] = body["cost_per_month"].to_numpy() * factor
    body["horizon_months"] = h
    # Month growth takes traffic past the sustainable rate (as capacity.plan.growth_exhaustion), grid-wide:
    # 0 when today's traffic is already past it; none (NaN) without growth or without a binding limit.
    scale = body["max_requests_per_second"].to_numpy(dtype=float) / (body["requests_per_day"].to_numpy() / 86400.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        months = np.floor(np.log(scale) / np.log1p(g)) + 1
    months = np.where(scale <= 1.0, 0.0, np.where((g <= 0) | ~np.isfinite(scale), np.nan, months))
    body["max_scale"] = np.where(np.isfinite(scale), scale, np.nan)
    body["months_to_exhaustion"] = months
    # Unlimited (no tier): no sustainable-rate figure rather than an infinite one.
    body["max_requests_per_second"] = body["max_requests_per_second"].where(
        np.isfinite(body["max_requests_per_second"].to_numpy(dtype=float))
    )
    out = pd.concat([front, grid_cols, body], axis=1)
    res = SweepResult(out, [f"set:{p}" for p in paths], engine, seed, cfg.target, h, _calibration_notes(bases))
    return res


def _calibration_notes(bases) -> list[str]:
    """Which routes of the swept scenarios are calibrated (and from what), so the table says what it rests on."""
    from kimiplan.model.calibration import calibration_status

    return [
        f"{sc.name}: route {name!r}: {status}"
        for sc in bases.values()
        if any(r.calibrated for r in sc.routes)
        for name, status in calibration_status(sc)
    ]
