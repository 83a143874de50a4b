"""Build notebooks from their percent-format sources (jupytext) and execute them, so the stored outputs are the ones
nbval compares in CI. Every notebook has exactly one source, `notebooks/src/NAME.py`; the `.ipynb` is generated.

    python tools/build_notebook.py                      # every notebooks/src/*.py -> notebooks/*.ipynb
    python tools/build_notebook.py notebooks/src/02_quota_sizing.py [...]
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "notebooks" / "src"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def read_source(src: Path) -> nbformat.NotebookNode:
    """The unexecuted notebook a percent-format source describes (jupytext's reader, nothing home-made)."""
    nb = jupytext.read(src, fmt="py:percent")
    nb.metadata.pop("jupytext", None)  # the .ipynb is an output, not a paired file
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.metadata.setdefault("language_info", {"name": "python"})
    # Stable cell ids (position + content) keep rebuilds and merges free of churn.
    for i, cell in enumerate(nb.cells):
        cell.id = hashlib.sha1(f"{i}:{cell.source}".encode()).hexdigest()[:8]
    return nb


def target(src: Path) -> Path:
    return src.parent.parent / f"{src.stem}.ipynb"


def build(src: Path, dest: Path | None = None, timeout: int = 900) -> Path:
    dest = dest or target(src)
    nb = read_source(src)
    NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(dest.parent)}},
    ).execute()
    nbformat.write(nb, dest)
    return dest


if __name__ == "__main__":
    sources = [Path(a) for a in sys.argv[1:]] or sorted(SRC.glob("*.py"))
    for s in sources:
        print(f"building {target(s).relative_to(ROOT) if target(s).is_relative_to(ROOT) else target(s)} from {s}")
        build(s)
