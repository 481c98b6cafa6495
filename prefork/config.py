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


def _positive_number(value: Any) -> float:
    number = _number(value)
    if number <= 0:
        raise ValueError(f"must be > 0, got {value}")
    return number


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


def _user_or_group(value: Any) -> str | None:
    """A name or a numeric id (gunicorn config files often say `user = 1000`)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    return _optional_string(value)


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


# gunicorn's worker classes that prefork runs, by every name gunicorn accepts for them.
WORKER_CLASSES = {
    "sync": "sync", "gunicorn.workers.sync.SyncWorker": "sync", "egg:gunicorn#sync": "sync",
    "gthread": "gthread", "gunicorn.workers.gthread.ThreadWorker": "gthread",
    "egg:gunicorn#gthread": "gthread",
}


def _worker_class(value: Any) -> str:
    """sync or gthread. Either way --threads sets the threads per worker, as in gunicorn
    (where sync with --threads > 1 becomes gthread); async classes are refused by name."""
    name = _string(value)
    if name in WORKER_CLASSES:
        return WORKER_CLASSES[name]
    raise ValueError(
        f"worker class {name!r} is not supported: prefork runs sync and gthread workers "
        "(use --workers for processes and --threads for threads per worker)")


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
    _s("worker_class", ["-k", "--worker-class"], "Worker processes", "sync", _worker_class,
       "gunicorn's worker class: sync or gthread (also by their gunicorn class paths). "
       "Both run --threads threads per worker, as gunicorn does; other classes are "
       "refused.", metavar="sync|gthread"),
    _s("threads", ["--threads"], "Worker processes", 1, _positive_int(1),
       "Request threads per worker. Above 1, idle keep-alive connections wait in the "
       "worker's selector and cost no thread; a request stuck past --timeout still gets "
       "its worker replaced.", metavar="INT"),
    _s("worker_connections", ["--worker-connections"], "Worker processes", 1000,
       _positive_int(1),
       "Connections one worker holds at most (idle keep-alive ones included, as in "
       "gunicorn's gthread): a worker at the cap stops accepting, so its siblings take "
       "the new connections, and accepts again below it.", metavar="INT"),
    _s("timeout", ["-t", "--timeout"], "Worker processes", 30.0, _number,
       "A worker silent for this many seconds gets its stacks dumped and is killed "
       "and replaced. 0 disables.", metavar="SECONDS"),
    _s("graceful_timeout", ["--graceful-timeout"], "Worker processes", 30.0, _number,
       "On graceful stop or reload, workers get this long to finish in-flight requests "
       "before SIGKILL.", metavar="SECONDS"),
    _s("drain_delay", ["--drain-delay"], "Worker processes", 0.0, _number,
       "Lame duck: after TERM keep serving (and accepting) this many seconds before the "
       "graceful stop begins, for load balancers that need time to notice.",
       metavar="SECONDS"),
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
    _s("reload", ["--reload"], "Debugging", False, _boolean,
       "Development only: a worker restarts when a Python file it has loaded changes "
       "(checked once a second); an app that fails to import is served as a 500 page "
       "with the traceback until its file changes. Not with --preload.", switch=True),
    _s("daemon", ["-D", "--daemon"], "Server mechanics", False, _boolean,
       "Detach from the terminal (double fork, setsid, stdio to /dev/null) once the "
       "workers are ready; errors before that are printed and set the exit code. "
       "Not for systemd, Docker or Procfiles, which want the server in the foreground.",
       switch=True),
    _s("chdir", ["--chdir"], "Server mechanics", None, _optional_string,
       "Change to this directory before importing the app.", metavar="DIR"),
    _s("raw_env", ["-e", "--env"], "Server mechanics", [], _raw_env,
       "Set an environment variable KEY=VALUE in the workers. Repeatable.",
       metavar="KEY=VALUE", append=True),
    _s("pidfile", ["-p", "--pid"], "Server mechanics", None, _optional_string,
       "Write the master pid to FILE (atomically; refused if it names a live process).",
       metavar="FILE"),
    _s("user", ["-u", "--user"], "Server mechanics", None, _user_or_group,
       "Workers switch to this user (name or uid).", metavar="USER"),
    _s("group", ["-g", "--group"], "Server mechanics", None, _user_or_group,
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
    _s("access_log_format", ["--access-log-format", "--access-logformat"], "Logging",
       '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"', _string,
       "Access log line format (gunicorn atoms).", metavar="FORMAT"),
    _s("forwarded_allow_ips", ["--forwarded-allow-ips"], "Server mechanics",
       ["127.0.0.1", "::1"], _comma_list,
       "Peers trusted to set X-Forwarded-For / X-Forwarded-Proto (comma list, '*' for all).",
       metavar="IPS"),
    _s("control_socket", ["--control-socket"], "Observability", None, _optional_string,
       "Unix socket (mode 0600) for `prefork status`, `reload`, `scale N` and `stop`. Default: "
       "<pidfile>.ctl with --pid, else prefork-<master pid>.ctl in $XDG_RUNTIME_DIR or the "
       "temp directory. 'off' disables it.", metavar="PATH"),
    _s("metrics_bind", ["--metrics-bind"], "Observability", None, _optional_string,
       "Serve Prometheus metrics at http://ADDRESS/metrics from the master (HOST:PORT or "
       "unix:/path). Off by default.", metavar="ADDRESS"),
    _s("max_worker_memory", ["--max-worker-memory"], "Observability", 0.0, _number,
       "Replace a worker whose PSS stays above this many MiB for 3 samples in a row; its "
       "replacement is ready before it drains. 0 disables.", metavar="MB"),
    _s("memory_check_interval", ["--memory-check-interval"], "Observability", 5.0,
       _positive_number, "Seconds between the master's PSS samples for "
       "--max-worker-memory.", metavar="SECONDS"),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}

# gunicorn server hooks. They receive gunicorn's own Arbiter and Worker objects, which prefork
# does not have, so a config file that defines one is refused by name rather than half-run.
GUNICORN_HOOKS = frozenset({
    "on_starting", "on_reload", "when_ready", "pre_fork", "post_fork", "post_worker_init",
    "worker_int", "worker_abort", "pre_exec", "pre_request", "post_request", "child_exit",
    "worker_exit", "nworkers_changed", "on_exit", "ssl_context",
})
HOOK_ADVICE = ("for per-worker set-up, call os.register_at_fork(after_in_child=...) in your "
               "app module, or do it at import time (each worker imports the app unless "
               "--preload)")

# gunicorn settings that have no meaning here, with the reason; refused by name (a silently
# ignored setting is a surprise in production).
GUNICORN_ONLY = {
    "worker_tmp_dir": "heartbeats travel over a pipe, not a temp file: remove it",
    "certfile": "prefork does not terminate TLS: put nginx in front (README: Behind nginx)",
    "keyfile": "prefork does not terminate TLS: put nginx in front (README: Behind nginx)",
    "logconfig": "use errorlog, accesslog and loglevel",
    "logconfig_dict": "use errorlog, accesslog and loglevel",
    "statsd_host": "prefork has no statsd client",
    "reload_extra_files": "--reload watches the Python files the app has loaded",
    "reload_engine": "--reload polls the files the app has loaded",
    "secure_scheme_headers": "X-Forwarded-Proto is read from --forwarded-allow-ips peers",
    "pythonpath": "set PYTHONPATH in the environment, or use chdir",
    "capture_output": "the app's stdout and stderr already go where prefork's do",
    "sendfile": "wsgi.file_wrapper always uses sendfile(2) for regular files",
    "reuse_port": "workers share the master's listening sockets; nothing to reuse",
    "proxy_protocol": "prefork does not read the PROXY protocol: use X-Forwarded-For",
    "logger_class": "use errorlog, accesslog and loglevel",
    "syslog": "log to stderr (the journal under systemd) or to a file",
}


def suggest(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest candidate, or ''."""
    import difflib  # only on an error: not worth its import at every start

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


def _imported(value: Any) -> bool:
    """Brought in by an import (`import os`, `from multiprocessing import cpu_count`,
    `from os import environ`) rather than set by the config file itself."""
    if isinstance(value, types.ModuleType):
        return True
    if callable(value):  # functions, classes, bound methods (multiprocessing.cpu_count)
        return getattr(value, "__module__", None) != "__config__"
    return type(value).__module__ not in ("builtins", "__config__")


def load_config_file(path: str) -> dict[str, Any]:
    """Run a gunicorn-style Python config file; return its settings, validated.

    Imported names and names starting with '_' are the file's own business; any other
    top-level name must be a setting, so a typo is an error rather than a silent no-op.
    gunicorn server hooks and gunicorn-only settings are refused by name, with the reason.
    `wsgi_app` (the app spec, as in gunicorn) is returned under the key "app".
    """
    if not os.path.exists(path):
        raise ConfigError(f"config file {path}: no such file")
    try:
        namespace = runpy.run_path(path, run_name="__config__")
    except Exception as exc:  # the file is user code: any error is a config error
        raise ConfigError(f"config file {path}: {type(exc).__name__}: {exc}") from None
    values: dict[str, Any] = {}
    for name, value in namespace.items():
        if name.startswith("_"):
            continue
        if name in GUNICORN_HOOKS and callable(value):
            raise ConfigError(f"config file {path}: gunicorn server hook {name!r} is not "
                              f"supported; {HOOK_ADVICE}")
        if _imported(value):
            continue
        if name == "config":
            raise ConfigError(f"config file {path}: 'config' cannot be set from a config file")
        if name == "wsgi_app":  # gunicorn's name for the app spec; the command line wins
            try:
                values["app"] = _string(value)
            except ValueError as exc:
                raise ConfigError(f"config file {path}: invalid value for wsgi_app: {exc}") \
                    from None
            continue
        if name in GUNICORN_ONLY:
            raise ConfigError(f"config file {path}: gunicorn setting {name!r} is not "
                              f"supported: {GUNICORN_ONLY[name]}")
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
