"""Every setting, declared once.

Rules:
- A setting is one `Setting` in `SETTINGS`; its command-line flags, config-file key,
  `PREFORK_CMD_ARGS` form, default, validator and help text all come from that entry.
  Names follow gunicorn wherever gunicorn has the setting.
- Precedence: defaults < config file (`-c`) < `PREFORK_CMD_ARGS` < command line.
- A bad value or an unknown key raises `ConfigError` naming it (and the closest valid key);
  nothing is ever silently ignored. This module never exits the process: `cli.py` does.
"""

from __future__ import annotations

import difflib
import os
import runpy
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


class ConfigError(Exception):
    """A setting, flag or config file is wrong; the message names it."""


Validator = Callable[[Any], Any]


def _positive_int(minimum: int) -> Validator:
    def check(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"expected an integer, got {value!r}")
        if isinstance(value, str):
            value = value.strip()
            if not value.isascii() or not value.lstrip("-").isdigit():
                raise ValueError(f"expected an integer, got {value!r}")
            value = int(value)
        if not isinstance(value, int):
            raise ValueError(f"expected an integer, got {type(value).__name__} {value!r}")
        if value < minimum:
            raise ValueError(f"must be >= {minimum}, got {value}")
        return value

    return check


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
    if not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"must be >= 0, got {value}")
    return float(value)


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected a boolean, got {value!r}")


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__} {value!r}")
    return value


def _optional_string(value: Any) -> str | None:
    return None if value is None else _string(value)


def _string_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"expected a string or a list of strings, got {value!r}")


def _comma_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return _string_list(value)


def _choice(*choices: str) -> Validator:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return check


def _umask(value: Any) -> int:
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            raise ValueError(f"expected an octal number like 0o22, got {value!r}") from None
    return _positive_int(0)(value)


def _log_level(value: Any) -> str:
    level = _string(value).lower()
    if level not in ("debug", "info", "warning", "error", "critical"):
        raise ValueError(f"expected debug, info, warning, error or critical, got {value!r}")
    return level


def _raw_env(value: Any) -> list[str]:
    items = _string_list(value)
    for item in items:
        if "=" not in item:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
    return items


@dataclass(frozen=True)
class Setting:
    name: str  # config-file key (gunicorn's name where it has one)
    flags: tuple[str, ...]
    section: str
    default: Any
    validate: Validator
    help: str
    metavar: str | None = None
    append: bool = False  # repeatable flag, list value
    switch: bool = False  # flag without argument, sets True


def _s(name: str, flags: Iterable[str], section: str, default: Any, validate: Validator,
       help: str, **kw: Any) -> Setting:
    return Setting(name, tuple(flags), section, default, validate, help, **kw)


SETTINGS: tuple[Setting, ...] = (
    _s("config", ["-c", "--config"], "Config file", None, _optional_string,
       "Python config file (gunicorn style); its top-level names are setting names.",
       metavar="FILE"),
    _s("bind", ["-b", "--bind"], "Server socket", ["127.0.0.1:8000"], _string_list,
       "Address to listen on: HOST:PORT, [IPv6]:PORT, unix:/path or fd://N. Repeatable. "
       "Default 127.0.0.1:8000, or 0.0.0.0:$PORT when PORT is set.",
       metavar="ADDRESS", append=True),
    _s("backlog", ["--backlog"], "Server socket", 2048, _positive_int(1),
       "listen(2) backlog (the kernel caps it at net.core.somaxconn).", metavar="INT"),
    _s("protocol", ["--protocol"], "Server socket", "http", _choice("http", "tcp"),
       "http: the app is a WSGI callable. tcp: the app is handle(conn, addr), called "
       "once per accepted connection.", metavar="http|tcp"),
    _s("workers", ["-w", "--workers"], "Worker processes", 1, _positive_int(1),
       "Number of worker processes. Default 1, or $WEB_CONCURRENCY.", metavar="INT"),
    _s("threads", ["--threads"], "Worker processes", 1, _positive_int(1),
       "Request threads per worker. Above 1, idle keep-alive connections wait in the "
       "worker's selector and cost no thread; a request stuck past --timeout still gets "
       "its worker replaced.", metavar="INT"),
    _s("timeout", ["-t", "--timeout"], "Worker processes", 30.0, _number,
       "A worker silent for this many seconds gets its stacks dumped and is killed "
       "and replaced. 0 disables.", metavar="SECONDS"),
    _s("graceful_timeout", ["--graceful-timeout"], "Worker processes", 30.0, _number,
       "On graceful stop or reload, workers get this long to finish in-flight requests "
       "before SIGKILL.", metavar="SECONDS"),
    _s("keepalive", ["--keep-alive"], "Worker processes", 5.0, _number,
       "Seconds an idle keep-alive connection is kept open. 0 disables keep-alive.",
       metavar="SECONDS"),
    _s("header_timeout", ["--header-timeout"], "Worker processes", 10.0, _number,
       "Absolute deadline for a request line and headers to arrive (then 408).",
       metavar="SECONDS"),
    _s("max_requests", ["--max-requests"], "Worker processes", 0, _positive_int(0),
       "A worker exits gracefully after this many requests (plus jitter) and is "
       "replaced. 0 disables.", metavar="INT"),
    _s("max_requests_jitter", ["--max-requests-jitter"], "Worker processes", 0,
       _positive_int(0), "Add a random 0..N to --max-requests per worker.", metavar="INT"),
    _s("limit_request_line", ["--limit-request-line"], "Security", 8190, _positive_int(1),
       "Maximum size of the request line in bytes (414 beyond).", metavar="INT"),
    _s("limit_request_fields", ["--limit-request-fields"], "Security", 100, _positive_int(1),
       "Maximum number of header fields (431 beyond).", metavar="INT"),
    _s("limit_request_field_size", ["--limit-request-field_size"], "Security", 8190,
       _positive_int(1), "Maximum size of one header line in bytes (431 beyond).",
       metavar="INT"),
    _s("limit_request_body", ["--limit-request-body"], "Security", 0, _positive_int(0),
       "Maximum request body in bytes (413 beyond). 0 means unlimited.", metavar="INT"),
    _s("preload_app", ["--preload"], "Server mechanics", False, _boolean,
       "Import the app in the master before forking (pages stay shared).", switch=True),
    _s("chdir", ["--chdir"], "Server mechanics", None, _optional_string,
       "Change to this directory before importing the app.", metavar="DIR"),
    _s("raw_env", ["-e", "--env"], "Server mechanics", [], _raw_env,
       "Set an environment variable KEY=VALUE in the workers. Repeatable.",
       metavar="KEY=VALUE", append=True),
    _s("pidfile", ["-p", "--pid"], "Server mechanics", None, _optional_string,
       "Write the master pid to FILE (atomically; refused if it names a live process).",
       metavar="FILE"),
    _s("user", ["-u", "--user"], "Server mechanics", None, _optional_string,
       "Workers switch to this user (name or uid).", metavar="USER"),
    _s("group", ["-g", "--group"], "Server mechanics", None, _optional_string,
       "Workers switch to this group (name or gid).", metavar="GROUP"),
    _s("umask", ["-m", "--umask"], "Server mechanics", 0o22, _umask,
       "umask of the server (applies to unix sockets it creates).", metavar="INT"),
    _s("proc_name", ["-n", "--name"], "Process naming", None, _optional_string,
       "Name shown in process titles (default: the app spec).", metavar="STRING"),
    _s("errorlog", ["--error-logfile", "--log-file"], "Logging", "-", _string,
       "Error log file, '-' for stderr.", metavar="FILE"),
    _s("loglevel", ["--log-level"], "Logging", "info", _log_level,
       "debug, info, warning, error or critical.", metavar="LEVEL"),
    _s("accesslog", ["--access-logfile"], "Logging", None, _optional_string,
       "Access log file, '-' for stdout. Off by default.", metavar="FILE"),
    _s("access_log_format", ["--access-log-format"], "Logging",
       '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"', _string,
       "Access log line format (gunicorn atoms).", metavar="FORMAT"),
    _s("forwarded_allow_ips", ["--forwarded-allow-ips"], "Server mechanics",
       ["127.0.0.1", "::1"], _comma_list,
       "Peers trusted to set X-Forwarded-For / X-Forwarded-Proto (comma list, '*' for all).",
       metavar="IPS"),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def suggest(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest candidate, or ''."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


@dataclass
class Config:
    """The effective settings, plus the app spec. Immutable once built (by convention)."""

    app: str | None = None
    values: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values")
        if values is not None and name in BY_NAME:
            return values.get(name, BY_NAME[name].default)
        raise AttributeError(name)

    @property
    def title_name(self) -> str:
        return self.values.get("proc_name") or self.app or "prefork"


def validate(name: str, value: Any, origin: str) -> Any:
    """Check one setting value; raise ConfigError naming it and where it came from."""
    setting = BY_NAME.get(name)
    if setting is None:
        raise ConfigError(f"{origin}: unknown setting {name!r}{suggest(name, BY_NAME)}")
    try:
        return setting.validate(value)
    except ValueError as exc:
        raise ConfigError(f"{origin}: invalid value for {name}: {exc}") from None


def load_config_file(path: str) -> dict[str, Any]:
    """Run a gunicorn-style Python config file; return its settings, validated.

    Module objects and names starting with '_' are the file's own business; any other
    top-level name must be a setting, so a typo is an error rather than a silent no-op.
    """
    if not os.path.exists(path):
        raise ConfigError(f"config file {path}: no such file")
    try:
        namespace = runpy.run_path(path, run_name="__config__")
    except Exception as exc:  # the file is user code: any error is a config error
        raise ConfigError(f"config file {path}: {type(exc).__name__}: {exc}") from None
    values: dict[str, Any] = {}
    for name, value in namespace.items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if name == "config":
            raise ConfigError(f"config file {path}: 'config' cannot be set from a config file")
        values[name] = validate(name, value, f"config file {path}")
    return values


def defaults_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """gunicorn-compatible environment defaults: PORT and WEB_CONCURRENCY."""
    values: dict[str, Any] = {}
    if environ.get("PORT"):
        values["bind"] = validate("bind", f"0.0.0.0:{environ['PORT']}", "PORT")
    if environ.get("WEB_CONCURRENCY"):
        values["workers"] = validate("workers", environ["WEB_CONCURRENCY"], "WEB_CONCURRENCY")
    return values
