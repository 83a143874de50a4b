"""The one way kimiplan writes a file: all of it or nothing, and no debris.

`atomic_write(path, write)` writes into a temporary file in the target's folder, fsyncs it, moves it onto
`path` with `os.replace` (atomic on POSIX and Windows), then fsyncs the folder so the rename survives a power
cut. The new file gets the mode any new file would (0666 minus the umask: 0644 usually), not mkstemp's 0600.

The temporary file is `.{name}.{pid}.*.tmp`, removed on every error path (exceptions, KeyboardInterrupt,
SIGTERM turned into SystemExit). Only a kill -9 can leave one behind, and the next write of the same file
removes those whose process is gone. (O_TMPFILE would leave nothing at all, but linking it into place fails
on overlay file systems, where containers often run.)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from kimiplan.errors import ConfigError


def _umask() -> int:
    # os.umask can only be read by setting it; do it once, at import, before any thread writes.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()
_MODE = 0o666 & ~_UMASK


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform / file system can open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_path(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: str | Path, write: Callable[[Path], None] | bytes | str, suffix: str = "", *, what: str = "file"
) -> Path:
    """Write `path` atomically. `write` is the content (bytes or str, UTF-8) or a function that writes a file
    at the path it is given (pandas, openpyxl). On any error the target is untouched and the temp file gone."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError(f"{what} folder {str(folder)!r} does not exist (path {str(path)!r})")
    if isinstance(write, (bytes, str)):
        data = write.encode("utf-8") if isinstance(write, str) else write

        def write(tmp: Path, data=data) -> None:
            with open(tmp, "wb") as fh:
                fh.write(data)

    _remove_stale(folder, path.name)
    return _write_named(folder, path, write, suffix)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process: leave its file alone
    return True


def _remove_stale(folder: Path, name: str) -> None:
    """Temp files of this target left by a process that no longer runs (killed mid-write)."""
    prefix = f".{name}."
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
                continue
            pid = entry.name[len(prefix) :].split(".", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _write_named(folder: Path, path: Path, write: Callable[[Path], None], suffix: str) -> Path:
    # The pid in the name lets a later write remove what a killed writer left (see _remove_stale).
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=(suffix or path.suffix) + ".tmp", dir=folder
    )
    os.close(fd)
    try:
        os.chmod(tmp, _MODE)
        write(Path(tmp))
        _fsync_path(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)
    return path
