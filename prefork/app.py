"""Load the app named by a 'module:callable' spec.

Runs in a worker (or in the master with --preload). Errors are `AppLoadError` with one line
saying what to fix; the traceback of an exception raised by the app's own import is kept.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any


class AppLoadError(Exception):
    pass


def load(spec: str, chdir: str | None = None) -> Any:
    """Import `module:callable` (callable defaults to `application`, as in gunicorn)."""
    if chdir:
        os.chdir(chdir)
    # The working directory is where users keep their app (gunicorn does the same).
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    module_name, _, attr = spec.partition(":")
    attr = attr or "application"
    if not module_name or not all(p.isidentifier() for p in module_name.split(".")):
        raise AppLoadError(f"invalid app spec {spec!r}: expected module:callable")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppLoadError(
                f"app {spec!r}: no module named {exc.name!r} "
                f"(is it on sys.path? cwd is {cwd})") from exc
        raise
    try:
        app = getattr(module, attr)
    except AttributeError:
        names = [n for n in vars(module) if callable(getattr(module, n)) and not n.startswith("_")]
        from .config import suggest

        raise AppLoadError(
            f"app {spec!r}: module {module_name!r} has no attribute {attr!r}"
            f"{suggest(attr, names)}") from None
    if not callable(app):
        raise AppLoadError(f"app {spec!r}: {attr!r} is not callable")
    return app
