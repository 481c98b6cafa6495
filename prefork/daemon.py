"""-D/--daemon: detach from the terminal, and say so only once the server is ready.

Rules:
- Runs in the process the user started, before any master exists (called by cli.py only).
  It forks twice with setsid() in between (no controlling terminal, and not a session
  leader, so it can never get one back); the grandchild goes on to become the master, with
  stdin, stdout and stderr on /dev/null and the working directory kept (the app spec and
  relative paths are resolved against it, as in gunicorn).
- The starting process waits and exits only when the master says READY=1 (exit 0), reports
  a start-up failure (its one-line error, then the same exit code as in the foreground), or
  vanishes (exit 1). It listens on a private datagram socket with an abstract address, in
  the sd_notify format: the master already sends READY=1 there (systemd.Notifier), and
  `report_failure()` sends the failure. So `prefork -D` in a script fails as loudly as the
  foreground server on every start-up error, and the pidfile is the master's as usual.
- Under systemd (NOTIFY_SOCKET set) there is nothing to detach from: refused (cli.py).
"""

from __future__ import annotations

import os
import secrets
import selectors
import socket
import sys

from .systemd import Notifier

_starter: Notifier | None = None  # in the daemon: the socket of the process that started it


def daemonize() -> int | None:
    """Fork into the background. Returns None in the daemon; in the starting process,
    returns the exit code it must exit with (after printing any error)."""
    global _starter
    address = f"\0prefork-daemon-{os.getpid()}-{secrets.token_hex(8)}"
    listen = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listen.bind(address)
    alive_r, alive_w = os.pipe()  # EOF on alive_r: every holder of alive_w is gone
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child:
        os.close(alive_w)
        os.waitpid(child, 0)  # the intermediate process exits at once
        try:
            return _wait_for_daemon(listen, alive_r)
        finally:
            listen.close()
            os.close(alive_r)
    # The intermediate process: a new session, then fork again and leave.
    listen.close()
    os.close(alive_r)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    os.environ["NOTIFY_SOCKET"] = "@" + address[1:]  # the master's Notifier takes it
    _starter = Notifier("@" + address[1:])
    # alive_w stays open (close-on-exec) for the life of this process and its workers.
    return None


def report_failure(message: str, code: int) -> None:
    """In the daemon: tell the starting process why start-up failed (no-op otherwise)."""
    if _starter is not None:
        _starter.notify(f"EXIT_STATUS={code}", f"STATUS={message}")


def _wait_for_daemon(listen: socket.socket, alive_r: int) -> int:
    sel = selectors.DefaultSelector()
    sel.register(listen, selectors.EVENT_READ, "notify")
    sel.register(alive_r, selectors.EVENT_READ, "alive")
    try:
        while True:
            for key, _ in sel.select():
                if key.data == "alive":
                    if os.read(alive_r, 1):
                        continue
                    print("prefork: error: the daemon exited before it was ready "
                          "(see --error-logfile)", file=sys.stderr)
                    return 1
                fields = dict(line.partition("=")[::2] for line in
                              listen.recv(4096).decode(errors="replace").split("\n"))
                if fields.get("READY") == "1":
                    return 0
                if "EXIT_STATUS" in fields:
                    print(f"prefork: error: {fields.get('STATUS', 'start-up failed')}",
                          file=sys.stderr)
                    code = fields["EXIT_STATUS"]
                    return int(code) if code.isdigit() else 1
    finally:
        sel.close()
