"""Load the app named by a 'module:callable' spec.

Runs in a worker (or in the master with --preload). Errors are `AppLoadError` with one line
saying what is wrong and what to do; the traceback of an exception raised by the app's own
import is kept.

Spec forms, as in gunicorn: `module` (callable `application`), `module:name`, and
`module:factory(...)` with literal arguments (Flask's `create_app()` pattern).
"""

from __future__ import annotations

import ast
import importlib
import os
import pkgutil
import sys
import types
from typing import Any

from .config import suggest

EXAMPLE = "e.g. examples.hello:app"


class AppLoadError(Exception):
    pass


def _module_hint(spec: str, module_name: str) -> str:
    """What the user probably meant when the module part is not a dotted module path."""
    path = module_name.removesuffix(".py") if module_name.endswith(".py") else module_name
    if "/" in path or module_name.endswith(".py"):
        dotted = path.strip("./").replace("/", ".")
        _, _, attr = spec.partition(":")
        return f"a dotted module path, not a file: try {dotted}:{attr or 'app'}"
    return f"expected module:callable, {EXAMPLE}"


def _sibling_hint(missing: str) -> str:
    """' (did you mean pkg.mod?)' from the modules next to the missing one."""
    parent, _, leaf = missing.rpartition(".")
    if parent:
        package = sys.modules.get(parent)
        paths = getattr(package, "__path__", None)
        if paths is None:
            return ""
        names = [m.name for m in pkgutil.iter_modules(paths)]
        hint = suggest(leaf, names)
        return hint.replace("mean ", f"mean {parent}.") if hint else ""
    return suggest(leaf, [m.name for m in pkgutil.iter_modules([os.getcwd()])])


def _own_callable(value: Any, module_name: str) -> bool:
    """A callable the module made: its functions and classes, and objects like a Flask app
    or Django's WSGIHandler (but not the functions and classes it imported)."""
    if isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType)):
        return getattr(value, "__module__", None) == module_name
    return callable(value) and not isinstance(value, types.ModuleType)


def _parse_attr(spec: str, attr: str) -> tuple[str, tuple[Any, ...], dict[str, Any]] | None:
    """'app' -> ('app', None); 'create_app(1, debug=True)' -> ('create_app', args, kwargs)."""
    try:
        node = ast.parse(attr, mode="eval").body
    except SyntaxError:
        raise AppLoadError(f"invalid app spec {spec!r}: {attr!r} is not a name or a call "
                           f"like create_app(); {EXAMPLE}") from None
    if isinstance(node, ast.Name):
        return None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        try:
            args = tuple(ast.literal_eval(a) for a in node.args)
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
        except ValueError:
            raise AppLoadError(f"invalid app spec {spec!r}: factory arguments must be "
                               "literals (strings, numbers, True/False/None)") from None
        return node.func.id, args, kwargs
    raise AppLoadError(f"invalid app spec {spec!r}: {attr!r} is not a name or a call like "
                       f"create_app(); {EXAMPLE}")


def load(spec: str, chdir: str | None = None) -> Any:
    """Import `module:callable` (callable defaults to `application`, as in gunicorn)."""
    if chdir:
        os.chdir(chdir)
    # The working directory is where users keep their app (gunicorn does the same).
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    module_name, _, attr = spec.partition(":")
    attr = attr.strip() or "application"
    if not module_name or not all(p.isidentifier() for p in module_name.split(".")):
        raise AppLoadError(f"invalid app spec {spec!r}: {_module_hint(spec, module_name)}")
    call = _parse_attr(spec, attr)
    name = attr if call is None else call[0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise AppLoadError(
                f"app {spec!r}: no module named {exc.name!r}{_sibling_hint(exc.name)}; "
                f"run prefork from the directory that contains it, or pass --chdir DIR "
                f"(cwd is {cwd})") from exc
        raise
    try:
        app = getattr(module, name)
    except AttributeError:
        # Callables the module defines itself (not the ones it imported) are the candidates.
        names = [n for n, v in vars(module).items() if _own_callable(v, module_name)
                 and not n.startswith("_")]
        hint = suggest(name, names) or (
            f" (it defines {', '.join(sorted(names)[:5])})" if names else "")
        raise AppLoadError(
            f"app {spec!r}: module {module_name!r} has no attribute {name!r}{hint}; "
            f"name the WSGI callable after the colon, {EXAMPLE}") from None
    if call is not None:
        if not callable(app):
            raise AppLoadError(f"app {spec!r}: {name!r} is not callable, so it cannot be a "
                               "factory")
        app = app(*call[1], **call[2])
    if not callable(app):
        raise AppLoadError(f"app {spec!r}: {attr!r} is a {type(app).__name__}, not a WSGI "
                           f"callable; name the callable after the colon, {EXAMPLE}")
    return app


# How every AppLoadError message above begins (the reason travels from the worker as text).
_OWN_DIAGNOSES = ("app ", "invalid app spec ")


def failure_reason(exc: BaseException) -> str:
    """What went wrong loading the app, in one line: our own diagnosis (AppLoadError, which
    already names the app and what to do), or the app's exception as `Type: message`."""
    if isinstance(exc, AppLoadError):
        return str(exc)
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def failure_line(spec: str, reason: str, errorlog: str) -> str:
    """The one line the CLI prints when the app could not be loaded."""
    if reason.startswith(_OWN_DIAGNOSES):
        return reason  # an AppLoadError: complete as it is
    where = "above" if errorlog == "-" else f"in {errorlog}"
    return f"app {spec!r} failed to load: {reason} (the traceback is {where})"
