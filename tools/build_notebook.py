"""Build a notebook from a percent-format script (`# %%` code cells, `# %% [markdown]` text cells) and
execute it in place, so the stored outputs are the ones nbval compares in CI.

    python tools/build_notebook.py notebooks/src/01_quickstart.py notebooks/01_quickstart.ipynb
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def parse(src: str) -> list:
    cells, kind, buf = [], None, []

    def flush():
        if kind is None:
            return
        text = "\n".join(buf).strip("\n")
        if kind == "markdown":
            text = "\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in text.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(text))
        elif text:
            cells.append(nbformat.v4.new_code_cell(text))

    for line in src.splitlines():
        if line.startswith("# %%"):
            flush()
            kind, buf = ("markdown" if "[markdown]" in line else "code"), []
        else:
            buf.append(line)
    flush()
    return cells


def build(src: Path, dest: Path, timeout: int = 600) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = parse(src.read_text(encoding="utf-8"))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(dest.parent)}}
    ).execute()
    nbformat.write(nb, dest)


if __name__ == "__main__":
    build(Path(sys.argv[1]), Path(sys.argv[2]))
