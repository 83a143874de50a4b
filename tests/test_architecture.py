"""The package's layers: a module may import its own layer and the layers below it, never one above.

Every import counts, including those inside functions (a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import kimiplan

PKG = Path(kimiplan.__file__).parent

# Lowest first. The tokenizer sits in the foundation because a `texts` distribution (model) counts tokens.
LAYERS = [
    {"errors", "io", "tokens"},
    {"model"},
    {"catalog"},
    {"workload", "client", "emulator"},
    {"finance", "capacity", "logs"},
    {"calibration", "sweeps", "review"},
    {"viz", "report"},
    {"cli"},
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _room(module: str) -> str | None:
    """'kimiplan.capacity.sim.kernel' -> 'capacity'; the facade and __main__ have no room."""
    parts = module.split(".")
    if parts[0] != "kimiplan" or len(parts) < 2:
        return None
    return parts[1] if parts[1] not in ("__init__", "__main__", "data") else None


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            if target == "kimiplan":  # `from kimiplan import x` imports kimiplan.x when x is a room
                out += [(node.lineno, f"kimiplan.{a.name}") for a in node.names if a.name in RANK]
    return [(ln, t) for ln, t in out if t.startswith("kimiplan")]


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield path, ".".join(parts)


def test_every_room_is_in_a_layer():
    rooms = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    rooms |= {p.stem for p in PKG.glob("*.py") if not p.stem.startswith("__")}
    assert rooms == set(RANK), f"rooms without a layer: {rooms - set(RANK)}; layers without a room: {set(RANK) - rooms}"


def test_no_module_imports_a_higher_layer():
    bad = []
    for path, module in _modules():
        room = _room(module)
        if room is None:
            continue
        for line, target in _imports(path, module):
            other = _room(target)
            if other is not None and other != room and RANK[other] > RANK[room]:
                bad.append(f"{path.relative_to(PKG.parent)}:{line} ({room}) imports {target} ({other})")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_the_checker_sees_a_violation(tmp_path):
    # The checker itself must be able to fail: a model module importing capacity is caught.
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from kimiplan.capacity.plan import plan\n")
    targets = [t for _, t in _imports(f, "kimiplan.model.m")]
    assert targets == ["kimiplan.capacity.plan"] and RANK[_room(targets[0])] > RANK["model"]
