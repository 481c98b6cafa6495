"""The pidfile: written atomically, refused if it names a live process, removed only if ours.

Runs in the master only.
"""

from __future__ import annotations

import os


class PidfileError(Exception):
    pass


def _read(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def alive(pid: int) -> bool:
    """True if a process `pid` exists (ours or someone else's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def create(path: str) -> None:
    """Write our pid to `path` via a temp file + rename, so readers never see a torn file."""
    old = _read(path)
    if old is not None and old != os.getpid() and alive(old):
        raise PidfileError(f"pidfile {path}: already names a running process (pid {old})")
    directory = os.path.dirname(os.path.abspath(path))
    try:
        # Named by our pid: no other live process can be writing it (and the tempfile
        # module would cost every start-up a few milliseconds of imports).
        tmp = os.path.join(directory, f".prefork-pid-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"{os.getpid()}\n")
        os.chmod(tmp, 0o644)  # whatever the umask
        os.replace(tmp, path)
    except OSError as exc:
        raise PidfileError(f"pidfile {path}: {exc.strerror}") from None


def remove(path: str) -> None:
    """Remove `path` only if it still holds our pid (a successor may own it by now)."""
    if _read(path) == os.getpid():
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
