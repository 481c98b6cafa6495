"""Binary upgrade (USR2): re-execute the master with the listeners inherited, then hand over.

Rules:
- The old master forks and, in the child, exec()s the command it was started with
  (`sys.orig_argv`: new code on disk), passing its listening sockets by fd number in
  `PREFORK_INHERIT` (JSON: fd, label, and the unix socket path it owns, if any) and the
  write end of a pipe in `PREFORK_UPGRADE_FD`.
- The new master adopts those fds instead of binding, boots its first generation, then
  writes "ready" into the pipe. Only then does the old master announce it to systemd
  (`MAINPID=`, which NotifyAccess=main requires to come from the old main pid) and stop
  gracefully. EOF on the pipe before "ready" means the new master failed: the old master
  keeps serving and says why.
- Pidfile: renamed to `<pidfile>.oldbin` while both run (nginx style); the new master
  writes `<pidfile>`; a failed upgrade renames it back.
- After the hand-over the old master never unlinks the unix socket files: the new master
  owns them now.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from .log import logger
from .sockets import Listener, adopt_fd

INHERIT_ENV = "PREFORK_INHERIT"
READY_FD_ENV = "PREFORK_UPGRADE_FD"


@dataclass
class Upgrade:
    """The old master's view of an upgrade in progress."""

    pid: int  # the new master
    ready_fd: int  # read end of the pipe the new master writes "ready" into
    pidfile: str | None
    said: bytes = b""


def start(listeners: list[Listener], pidfile: str | None, env: dict[str, str]) -> Upgrade:
    """Called in the old master: fork and exec the new one. Raises OSError.

    `env` adds to the environment: the master took NOTIFY_SOCKET and WATCHDOG_USEC out of
    its own at start (workers must not see them), but the new master needs them back;
    WATCHDOG_PID is set to the new master's pid."""
    inherit = [{"fd": lst.fileno(), "label": lst.label, "unix_path": lst.unix_path,
                "inherited": lst.inherited} for lst in listeners]
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    if pidfile and os.path.exists(pidfile):
        os.replace(pidfile, pidfile + ".oldbin")
    try:
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        _restore_pidfile(pidfile)
        raise
    if pid == 0:  # the child: become the new master, or die trying
        import json

        try:
            for item in inherit:
                os.set_inheritable(int(str(item["fd"])), True)
            os.set_inheritable(write_fd, True)
            child_env = dict(os.environ, **env, **{INHERIT_ENV: json.dumps(inherit),
                                                   READY_FD_ENV: str(write_fd)})
            if "WATCHDOG_USEC" in env:
                child_env["WATCHDOG_PID"] = str(os.getpid())  # exec keeps our pid
            os.execve(sys.executable, sys.orig_argv, child_env)
        finally:
            os._exit(127)  # exec failed: the old master sees EOF and keeps serving
    os.close(write_fd)
    return Upgrade(pid=pid, ready_fd=read_fd, pidfile=pidfile)


def read(upgrade: Upgrade) -> bool | None:
    """Old master, when the pipe is readable: True (ready), False (failed), None (wait)."""
    while True:
        try:
            data = os.read(upgrade.ready_fd, 64)
        except BlockingIOError:
            return None
        if not data:
            return upgrade.said.startswith(b"ready")
        upgrade.said += data
        if upgrade.said.startswith(b"ready"):
            return True


def finish(upgrade: Upgrade, succeeded: bool) -> None:
    """Old master: close the pipe; on failure, give the pidfile its name back."""
    os.close(upgrade.ready_fd)
    if not succeeded:
        _restore_pidfile(upgrade.pidfile)


def _restore_pidfile(pidfile: str | None) -> None:
    if pidfile and os.path.exists(pidfile + ".oldbin"):
        os.replace(pidfile + ".oldbin", pidfile)


def inherited() -> list[Listener]:
    """New master: adopt the listeners of the old one (and forget the variable)."""
    spec = os.environ.pop(INHERIT_ENV, None)
    if not spec:
        return []
    import json  # only in a master started by USR2

    listeners = []
    for item in json.loads(spec):
        fd = int(item["fd"])
        sock = adopt_fd(fd, str(item["label"]))
        sock.setblocking(False)
        os.set_inheritable(fd, False)
        listeners.append(Listener(sock, str(item["label"]), unix_path=item["unix_path"],
                                  inherited=bool(item["inherited"])))
    return listeners


def take_ready_fd() -> int | None:
    """New master, at start: the pipe to announce readiness on (the master must keep it
    out of its workers, like its other own descriptors)."""
    fd = os.environ.pop(READY_FD_ENV, None)
    return int(fd) if fd is not None and fd.isdigit() else None


def announce_ready(fd: int) -> None:
    """New master, once its first generation is ready: tell the old master to go."""
    try:
        os.write(fd, b"ready\n")
        os.close(fd)
    except OSError as exc:
        logger.warning("upgrade: could not tell the old master we are ready: %s", exc.strerror)
