"""Exit codes and the errors that map onto them (cli.py is the only place that exits)."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1  # runtime failure: bind, pidfile, permissions
    USAGE = 2  # bad flag, config key or value
    WORKER_BOOT_ERROR = 3  # first-generation workers died before reporting ready
    APP_LOAD_ERROR = 4  # the app could not be imported


class BootError(Exception):
    """The server could not start; `code` says why (an ExitCode)."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.code = code
