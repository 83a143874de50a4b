"""Every notebook is generated from one percent-format source (notebooks/src/NAME.py, read by jupytext): the stored
notebook's cells must be exactly the source's cells, so nobody edits a .ipynb by hand or forgets to rebuild it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks" / "src").glob("*.py"))


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebook", ROOT / "tools" / "build_notebook.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_notebook_has_one_source():
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert notebooks == {s.stem for s in SOURCES}


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_notebook_matches_its_source(src):
    expected = _builder().read_source(src)
    stored = nbformat.read(ROOT / "notebooks" / f"{src.stem}.ipynb", as_version=4)
    assert [(c.cell_type, c.source) for c in stored.cells] == [(c.cell_type, c.source) for c in expected.cells], (
        f"notebooks/{src.stem}.ipynb is stale: rebuild it with `make notebooks/{src.stem}.ipynb`"
    )


def test_every_data_folder_ships_as_a_listed_package():
    """setuptools warns about (and may drop) a data folder missing from `packages`: list each one."""
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    folders = {p.name for p in (ROOT / "data").iterdir() if p.is_dir() and not p.name.startswith((".", "__"))}
    listed = {p.split(".", 2)[2] for p in cfg["packages"] if p.startswith("kimiplan.data.")}
    assert folders <= listed, f"add {sorted(folders - listed)} to [tool.setuptools] packages and package-data"
    assert folders <= {p.split(".", 2)[2] for p in cfg["package-data"] if p.startswith("kimiplan.data.")}


def _kimiplan_uses(src: Path) -> tuple[list[str], set[str]]:
    """(imports of kimiplan other than `import kimiplan as kp`, the attribute names read off `kp`), from the AST."""
    import ast

    tree = ast.parse(src.read_text(encoding="utf-8"), str(src))
    internal, names = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "kimiplan":
            internal.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "kimiplan" and (a.name != "kimiplan" or a.asname != "kp"):
                    internal.append(f"line {node.lineno}: import {a.name}" + (f" as {a.asname}" if a.asname else ""))
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "kp":
            names.add(node.attr)
    return internal, names


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_notebooks_use_only_the_public_names(src):
    """A notebook is what a new user copies: it reaches kimiplan through `kp.` names only (the curated `__all__`),
    never through `from kimiplan.<submodule> import ...`, which is free to move."""
    import kimiplan as kp

    internal, names = _kimiplan_uses(src)
    assert not internal, f"{src.name} imports kimiplan's internals: {internal}"
    assert names <= set(kp.__all__), f"{src.name} uses kp names outside __all__: {sorted(names - set(kp.__all__))}"


def test_the_public_names_check_sees_an_internal_import(tmp_path):
    bad = tmp_path / "nb.py"
    bad.write_text("import kimiplan as kp\nfrom kimiplan.capacity.plan import plan\nimport kimiplan.viz\nkp._EXPORTS\n")
    internal, names = _kimiplan_uses(bad)
    assert internal == ["line 2: from kimiplan.capacity.plan import ...", "line 3: import kimiplan.viz"]
    assert names == {"_EXPORTS"}
