"""Where the two sides of a review come from: a scenario file, a bundled example, or a file at a git revision
(`git show REV:./path`, run in the file's own directory so that the path is the one the user typed).

A file that does not exist at the revision is an absent side (every route "added"); a revision that does not
exist, or a directory that is not in a git repository, is an error naming both.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from kimiplan.errors import ConfigError, ScenarioError
from kimiplan.model.loader import parse_text
from kimiplan.model.scenario import Scenario, parse_scenario, read_scenario


@dataclass(frozen=True)
class Side:
    scenario: Scenario | None  # None: the file does not exist there
    origin: str  # what the reader sees: "support_chat.yaml", "origin/main:support_chat.yaml"


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ConfigError("git is not installed (needed to read a scenario at a revision)") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(f"git {' '.join(args)} did not answer within 60 s in {cwd}") from None


def read_side(path: str | Path, rev: str | None = None) -> Side:
    """The scenario at `path` in the working tree (`rev` None) or at git revision `rev`."""
    if rev is None:
        return Side(read_scenario(path), str(path))
    p = Path(path)
    where = p.parent if str(p.parent) else Path(".")
    if not where.is_dir():
        raise ConfigError(f"{path}: directory {where} does not exist (needed to read it at revision {rev!r})")
    if _git(["rev-parse", "--is-inside-work-tree"], where).returncode != 0:
        raise ConfigError(f"{path}: {where} is not inside a git repository (needed for revision {rev!r})")
    if _git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], where).returncode != 0:
        raise ConfigError(f"{path}: git revision {rev!r} does not exist (try `git fetch` or another --base)")
    origin = f"{rev}:{p.name}"
    spec = f"{rev}:./{p.name}"
    if _git(["cat-file", "-e", spec], where).returncode != 0:
        return Side(None, origin)
    shown = _git(["show", spec], where)
    if shown.returncode != 0:
        raise ConfigError(f"{origin}: git show failed: {shown.stderr.strip().splitlines()[-1:]}")
    fmt = "json" if p.suffix.lower() == ".json" else "yaml"
    data = parse_text(shown.stdout, origin, fmt, ScenarioError)
    return Side(parse_scenario(data, origin, str(where.resolve())), origin)
