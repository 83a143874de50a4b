"""Where shipped data lives: `data/` in a checkout, the package `kimiplan.data` when installed."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_dir() -> Path:
    try:
        root = Path(str(resources.files("kimiplan.data")))
        if (root / "catalog").is_dir():
            return root
    except ModuleNotFoundError:
        pass
    # Running from a source checkout without installing: data/ sits next to the package.
    return Path(__file__).resolve().parent.parent / "data"


def data_path(*parts: str) -> Path:
    return data_dir().joinpath(*parts)
