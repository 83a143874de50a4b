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
