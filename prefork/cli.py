"""Command line: argv -> Config -> run; the only place that exits the process.

Rules:
- The parser is generated from `config.SETTINGS` (grouped by section, like gunicorn's
  settings reference); the signal table in `--help` comes from `signals.TABLE`.
- Exit codes are the ones in `ExitCode`; every error is one line on stderr that names what
  is wrong (a flag, a config key, an address), then the code.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from . import __version__
from .config import (
    BY_NAME,
    SETTINGS,
    Config,
    ConfigError,
    defaults_from_env,
    load_config_file,
    suggest,
    validate,
)
from .errors import BootError, ExitCode


class UsageError(ConfigError):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so a HUP reload can survive a bad argv."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            flag = message.split(":", 1)[1].split()[0]
            flags = [f for s in SETTINGS for f in s.flags if f.startswith("--")]
            message = f"unrecognized option {flag}{suggest(flag, flags)}"
        raise UsageError(message)


def _epilog() -> str:
    from .signals import TABLE

    rows = "\n".join(f"  {sig.name[3:]:<6} {action.help}" for sig, action in TABLE.items())
    return (f"signals (sent to the master):\n{rows}\n\n"
            "exit codes: " + ", ".join(f"{c.value} {c.name.lower()}" for c in ExitCode))


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="prefork",
        description="A pre-fork server for WSGI apps and TCP handlers.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,  # only what was given lands in the namespace
    )
    parser.add_argument("app", nargs="?", metavar="APP",
                        help="module:callable, e.g. examples.hello:app")
    parser.add_argument("--version", action="version", version=f"prefork {__version__}")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the configuration, print the effective settings, exit")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for s in SETTINGS:
        if not s.flags:
            continue
        group = groups.get(s.section) or groups.setdefault(
            s.section, parser.add_argument_group(s.section.lower()))
        shown = s.default is not None and s.default is not False and s.default != []
        default = f" [{s.default}]" if shown else ""
        help_text = (s.help + default).replace("%", "%%")  # argparse %-formats help
        if s.switch:
            group.add_argument(*s.flags, dest=s.name, action="store_true", help=help_text)
        else:
            group.add_argument(*s.flags, dest=s.name, metavar=s.metavar,
                               action="append" if s.append else "store",
                               help=help_text)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str], origin: str) -> dict[str, Any]:
    try:
        ns = parser.parse_args(list(argv))
    except UsageError as exc:
        raise UsageError(f"{origin}: {exc}") from None
    return {k: v if k in ("app", "check_config") else validate(k, v, origin)
            for k, v in vars(ns).items()}


def build_config(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """defaults < config file < PREFORK_CMD_ARGS < command line. Raises ConfigError."""
    parser = make_parser()
    given = _parse(parser, argv, "command line")
    from_env = _parse(parser, shlex.split(environ.get("PREFORK_CMD_ARGS", "")),
                      "PREFORK_CMD_ARGS")
    values: dict[str, Any] = defaults_from_env(environ)
    path = given.get("config") or from_env.get("config")
    if path:
        values.update(load_config_file(path))
    values.update(from_env)
    values.update(given)
    values.pop("check_config", None)
    app = values.pop("app", None)  # positional, else wsgi_app from the config file
    if app is None:
        raise UsageError("no app given (e.g. prefork examples.hello:app, or wsgi_app in "
                         "the config file)")
    if values.get("reload") and values.get("preload_app"):
        raise UsageError("--reload does not work with --preload: the master would keep "
                         "the old code and fork it again; drop one of them")
    assert all(k in BY_NAME for k in values)
    return Config(app=app, values=values)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    from .master import Master
    from .sockets import BindError

    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in ("status", "reload", "scale", "stop"):  # commands.COMMANDS
        from .commands import main as command

        sys.exit(command(args))
    try:
        config = build_config(args, os.environ)
    except ConfigError as exc:
        print(f"prefork: error: {exc}", file=sys.stderr)
        sys.exit(ExitCode.USAGE)
    if "--check-config" in args:
        print(f"app = {config.app}")
        for setting in SETTINGS:
            print(f"{setting.name} = {getattr(config, setting.name)}")
        sys.exit(ExitCode.OK)
    if config.daemon:
        from . import daemon

        if os.environ.get("NOTIFY_SOCKET"):
            print("prefork: error: --daemon under systemd (NOTIFY_SOCKET is set): drop -D "
                  "and let systemd keep the server in the foreground (Type=notify)",
                  file=sys.stderr)
            sys.exit(ExitCode.USAGE)
        started = daemon.daemonize()
        if started is not None:
            sys.exit(started)  # the starting process: the daemon is ready, or it failed
    try:
        code = Master(config, args).run()
    except BindError as exc:
        _fail(f"{exc}{_bind_hint(str(exc))}", ExitCode.ERROR)
    except BootError as exc:
        message = str(exc)
        if exc.code == ExitCode.APP_LOAD_ERROR:
            message += f" (exit {exc.code.value})"
        _fail(message, exc.code)
    sys.exit(code)


def _bind_hint(message: str) -> str:
    """What to do about a failed bind, appended to sockets.py's one-line reason."""
    unix = "(unix:" in message
    if message.endswith("address already in use"):
        return ("; another process is listening there: stop it, or choose another "
                + ("path" if unix else "port") + " with --bind")
    if message.endswith("permission denied"):
        if unix:
            return ("; this user cannot create the socket file there: choose a directory "
                    "it can write (systemd: RuntimeDirectory=)")
        return ("; ports below 1024 need root or CAP_NET_BIND_SERVICE: use a higher port "
                "(behind nginx), or systemd socket activation")
    if message.endswith("cannot assign requested address"):
        return "; that address is not on this machine: use 127.0.0.1 or 0.0.0.0"
    return ""


def _fail(message: str, code: int) -> NoReturn:
    from . import daemon

    print(f"prefork: error: {message}", file=sys.stderr)
    daemon.report_failure(message, code)
    sys.exit(code)
