"""reloader.Reloader in memory: what counts as a change, and how often files are looked at."""

from __future__ import annotations

import os
import time
from pathlib import Path

from prefork.reloader import SKEW, Reloader


def _touch(path: Path, mtime: float, text: str = "x = 1\n") -> None:
    path.write_text(text)
    os.utime(path, (mtime, mtime))


def test_a_file_that_changes_after_first_sight_counts(tmp_path: Path) -> None:
    watched = tmp_path / "app.py"
    _touch(watched, time.time() - 100)
    reloader = Reloader(interval=1.0)
    reloader.extra.add(str(watched))
    assert not reloader.changed(now=10.0)  # first sight, old file
    _touch(watched, time.time() - 50)
    assert not reloader.changed(now=10.5)  # within the interval: not even looked at
    assert reloader.changed(now=11.0)
    assert reloader.restart and reloader.changed(now=11.1)  # stays true


def test_same_mtime_but_new_size_counts(tmp_path: Path) -> None:
    watched = tmp_path / "app.py"
    _touch(watched, time.time() - 100)
    reloader = Reloader()
    reloader.extra.add(str(watched))
    assert not reloader.changed(now=1.0)
    _touch(watched, time.time() - 100, "x = 12345\n")
    assert reloader.changed(now=3.0)


def test_an_edit_that_raced_the_import_counts_on_first_sight(tmp_path: Path) -> None:
    reloader = Reloader()
    watched = tmp_path / "app.py"
    _touch(watched, time.time())  # written after the worker started
    reloader.extra.add(str(watched))
    assert reloader.changed(now=1.0)


def test_a_file_dated_in_the_future_never_loops(tmp_path: Path) -> None:
    reloader = Reloader()
    watched = tmp_path / "app.py"
    _touch(watched, time.time() + SKEW + 3600)
    reloader.extra.add(str(watched))
    assert not reloader.changed(now=1.0)
    assert not reloader.changed(now=3.0)


def test_a_deleted_file_counts(tmp_path: Path) -> None:
    watched = tmp_path / "app.py"
    _touch(watched, time.time() - 100)
    reloader = Reloader()
    reloader.extra.add(str(watched))
    assert not reloader.changed(now=1.0)
    watched.unlink()
    assert reloader.changed(now=3.0)


def test_loaded_modules_are_watched() -> None:
    import prefork.reloader as module

    reloader = Reloader()
    reloader.changed(now=1.0)
    assert module.__file__ in reloader.seen


def test_broken_app_shows_the_error_and_watches_its_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def app(environ, start_response) oops\n")
    try:
        compile(bad.read_text(), str(bad), "exec")
    except SyntaxError as exc:
        error = exc
    reloader = Reloader()
    app = reloader.broken_app(error, "http")
    assert str(bad) in reloader.extra
    seen: list[str] = []
    body = b"".join(app({}, lambda status, headers: seen.append(status)))
    assert seen == ["500 Internal Server Error"]
    assert b"SyntaxError" in body and str(bad).encode() in body
