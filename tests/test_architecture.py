"""The package's layers: a module may import its own layer and the layers below it, never one above; and no
module imports itself back through others (no cycle anywhere in kimiplan/, inside a room or across rooms).

Every import counts, including those inside functions (a lazy import is still a dependency). Imports under
`if TYPE_CHECKING:` never run (they exist for type checkers and the facade's docs) and are not counted."""

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


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside `if TYPE_CHECKING:` blocks."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def _imports(path: Path, module: str, modules: set[str] | None = None) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    skip = _type_checking_only(tree)
    modules = _MODULE_NAMES if modules is None else modules
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            # `from package import x` imports package.x when x is a module (a room, or a module of a subpackage)
            out += [(node.lineno, f"{target}.{a.name}") for a in node.names if f"{target}.{a.name}" in modules]
    return [(ln, t) for ln, t in out if t.startswith("kimiplan")]


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield path, ".".join(parts)


_MODULE_NAMES = {m for _, m in _modules()}


def _module_of(target: str, modules: set[str]) -> str | None:
    """The module an import target loads: 'kimiplan.capacity.plan.plan' -> 'kimiplan.capacity.plan'."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def _import_graph(files) -> dict[str, set[str]]:
    """module -> the kimiplan modules it imports (lazy imports included), from (path, module) pairs."""
    modules = {m for _, m in files}
    return {
        m: {
            t
            for _, target in _imports(p, m, modules | _MODULE_NAMES)
            if (t := _module_of(target, modules)) is not None and t != m
        }
        for p, m in files
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative): each holds a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, edges = work[-1]
            w = next(edges, None)
            if w is not None:
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


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


def test_no_import_cycle_anywhere():
    cycles = _cycles(_import_graph(list(_modules())))
    assert not cycles, "modules that import one another in a loop:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_checker_sees_a_cycle(tmp_path):
    # A loop inside one subpackage, closed by a lazy import (as capacity.plan <-> agent_steps was), is caught;
    # an import under TYPE_CHECKING is not counted, and a one-way chain is no cycle.
    pkg = tmp_path / "kimiplan" / "room"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from kimiplan.room.b import g\n")
    (pkg / "b.py").write_text("def g():\n    from kimiplan.room import c\n")
    (pkg / "c.py").write_text("def h():\n    from kimiplan.room.a import x\n")
    (pkg / "d.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from kimiplan.room.e import y\n"
    )
    (pkg / "e.py").write_text("from kimiplan.room.d import z\n")
    files = [(pkg / f"{n}.py", f"kimiplan.room.{n}") for n in "abcde"]
    graph = _import_graph(files)
    assert graph["kimiplan.room.b"] == {"kimiplan.room.c"}  # `from package import module` is an edge
    assert _cycles(graph) == [["kimiplan.room.a", "kimiplan.room.b", "kimiplan.room.c"]]
    graph["kimiplan.room.c"] = set()
    assert _cycles(graph) == []
