"""`kimiplan calibrate apply`: a scenario with its calibration applied, written as a scenario file that validates.

The fitted laws are inline; each route's provenance (calls, dates, model, base URL) and what the measurement
changed are comments above it and its `calibrated:` field, so the result can be read, diffed and committed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kimiplan.catalog.calibrated import apply_calibration
from kimiplan.catalog.resolve import check_against_catalog
from kimiplan.errors import ConfigError
from kimiplan.model.calibration import Calibration, load_calibration

if TYPE_CHECKING:
    from kimiplan.model.scenario import Scenario


# --- writing a calibrated scenario -------------------------------------------------------------------------
def _prune(obj, data):
    """`data` (obj's JSON dump) without the fields that equal their defaults, keeping distribution kinds, so
    the written scenario reads like one a person wrote."""
    from pydantic import BaseModel

    if isinstance(obj, BaseModel) and isinstance(data, dict):
        out = {}
        for name, field in type(obj).model_fields.items():
            key = field.alias or name
            if key not in data:
                continue
            v = getattr(obj, name)
            if name != "kind" and not field.is_required():
                default = field.get_default(call_default_factory=True)
                if v == default:
                    continue
            out[key] = _prune(v, data[key])
        return out
    if isinstance(obj, (tuple, list)) and isinstance(data, list):
        return [_prune(o, d) for o, d in zip(obj, data, strict=True)]
    if isinstance(obj, dict) and isinstance(data, dict):
        return {k: _prune(obj[k0], data[k]) for k0, k in zip(obj, data, strict=True)}
    return data


def _relocate_texts(data, src_dir: Path, dst_dir: Path):
    # texts files were relative to the source scenario; the written one sits elsewhere.
    import os

    if isinstance(data, dict):
        if data.get("kind") == "texts" and data.get("files"):
            data = {
                **data,
                "files": [f if Path(f).is_absolute() else os.path.relpath(src_dir / f, dst_dir) for f in data["files"]],
            }
        return {k: _relocate_texts(v, src_dir, dst_dir) for k, v in data.items()}
    if isinstance(data, list):
        return [_relocate_texts(v, src_dir, dst_dir) for v in data]
    return data


def _near(path: str, folder: Path) -> str:
    """`path` relative to `folder` when it sits below it, else as given."""
    import os

    rel = os.path.relpath(path, folder)
    return path if rel.startswith("..") else rel


def _comment(text: str, indent: str = "") -> str:
    import textwrap

    out = []
    for line in text.splitlines():
        lead = " " * (len(line) - len(line.lstrip()))
        wrapped = textwrap.wrap(
            line, 116 - len(indent), subsequent_indent=lead + "  ", break_long_words=False, break_on_hyphens=False
        )
        out += wrapped or [""]
    return "".join(f"{indent}# {line}\n" for line in out)


def calibrated_yaml(scenario: Scenario, source_dir: Path, out_dir: Path, header: str = "") -> str:
    """The scenario as YAML with each calibrated route's laws inline, its `calibrated:` record, and its
    provenance (calls, dates, model, base URL, measured against assumed, warnings) as comments above it."""
    import yaml

    def dump(obj) -> Any:
        return _relocate_texts(_prune(obj, obj.model_dump(mode="json", by_alias=True)), source_dir, out_dir)

    top = dump(scenario)
    routes = top.pop("routes")
    top.pop("calibration", None)  # applied: the laws are inline now
    text = _comment(header) if header else ""
    text += yaml.safe_dump(top, sort_keys=False, allow_unicode=True, width=120, default_flow_style=None)
    text += "routes:\n"
    for route, data in zip(scenario.routes, routes, strict=True):
        data.pop("calibration", None)
        c = route.calibrated
        if c is None:
            text += _comment(f"route {route.name}: assumed (no calibration covers it)", "  ")
        else:
            span = (
                f"{c.samples_from:%Y-%m-%d %H:%M} to {c.samples_to:%Y-%m-%d %H:%M} UTC"
                if c.samples_from and c.samples_to
                else "dates not recorded"
            )
            lines = [
                f"route {route.name}: {c.describe()}",
                f"  calls {c.calls:,}, {span}, model {c.model}, provenance {c.provenance}",
                f"  base URL {c.base_url or 'not recorded'}",
                f"  from {_near(c.file, out_dir) if c.file else '(in memory)'}",
                f"  measured: {', '.join(c.applied) or 'nothing applied'}"
                + (f"; pinned (kept as assumed): {', '.join(c.pinned)}" if c.pinned else ""),
            ]
            lines += [f"  {d.describe()}" for d in c.differences]
            lines += [f"  warning: {w}" for w in c.warnings]
            text += _comment("\n".join(lines), "  ")
        if c is not None and c.file and Path(c.file).is_absolute():
            data["calibrated"]["file"] = _near(c.file, out_dir)  # as the scenario would name it
        block = yaml.safe_dump([data], sort_keys=False, allow_unicode=True, width=120, default_flow_style=None)
        text += "".join(f"  {line}\n" for line in block.splitlines())
    return text


def write_calibrated_scenario(
    scenario_path: str | Path,
    calibration: str | Path | Calibration,
    output: str | Path,
    *,
    force: bool = False,
    catalog=None,
) -> tuple[Path, Scenario]:
    """`kimiplan calibrate apply`: the scenario with `calibration` applied, written to `output` as YAML that
    validates (it is read back before anything is written). An existing `output` is kept unless `force`."""
    import datetime as dt

    from kimiplan.io.atomic import atomic_write
    from kimiplan.model.loader import parse_text
    from kimiplan.model.scenario import example_path_or_none, parse_scenario, read_scenario

    src = Path(scenario_path)
    if not src.exists() and not src.suffix and example_path_or_none(str(src)):
        src = example_path_or_none(str(src))
    out = Path(output)
    if out.exists() and not force:
        raise ConfigError(f"{str(out)!r} exists; pass --force to overwrite it (nothing was written)")
    if out.resolve() == src.resolve():
        raise ConfigError(f"{str(out)!r} is the scenario itself; write the calibrated one elsewhere")
    base = read_scenario(src)
    check_against_catalog(base, catalog, origin=str(src))
    applied = apply_calibration(base, calibration, origin=str(src))
    if all(r.calibrated is None for r in applied.routes):
        cal = calibration if isinstance(calibration, Calibration) else load_calibration(calibration)
        raise ConfigError(
            f"calibration {calibration if not isinstance(calibration, Calibration) else '(in memory)'} covers none "
            f"of the routes of {str(src)!r} (it has {', '.join(sorted(cal.routes))}; the scenario "
            f"{', '.join(r.name for r in base.routes)})"
        )
    header = (
        f"Written by kimiplan calibrate apply on {dt.date.today()} from {src.name} and "
        f"{Path(calibration).name if not isinstance(calibration, Calibration) else 'a calibration'}: the measured "
        "laws are inline, each route's provenance is in the comments above it and in its calibrated: field. "
        "Routes keep what they pin (pin: [input, cache, output, reasoning, server_overhead, latency, tools, all])."
    )
    out_dir = out.parent if str(out.parent) else Path(".")
    text = calibrated_yaml(applied, src.parent.resolve(), out_dir.resolve(), header)
    again = parse_scenario(parse_text(text, str(out)), str(out), str(out_dir))  # it must validate as written
    check_against_catalog(again, catalog, origin=str(out))
    atomic_write(out, text, what="calibrated scenario")
    return out, again
