"""The control socket: `prefork status|reload|scale N|stop` talk to the master through it.

Rules:
- A unix stream socket, mode 0600 (only its owner, and root, may connect), served by the
  master from its selector loop (endpoint.py): a client can never block the master.
- Protocol: the client sends one line of JSON, `{"verb": "status"}` (or "reload", "stop",
  "quick-stop", or "scale" with "workers": N), the master answers one line of JSON with
  "ok" true or false, then closes. A control verb runs the very action its signal runs
  (master.py `_dispatch`), so `prefork reload` and `kill -HUP` cannot drift apart.
- Where the socket lives (`default_path`), in order: --control-socket PATH; `<pidfile>.ctl`
  when --pid is set, so `prefork status --pid FILE` finds it from the pidfile's name alone;
  else `prefork-<master pid>.ctl` in $XDG_RUNTIME_DIR (per-user, mode 0700 under systemd's
  logind) or, without it, the temp directory; `prefork status` with neither flag looks
  there and uses the one live master it finds. `--control-socket off` disables it.
- Both ends are here: the master's `ControlService` and the CLI's `call()`.
"""

from __future__ import annotations

import glob
import os
import selectors
import socket
import stat
from collections.abc import Callable
from typing import Any

from .endpoint import Endpoint
from .pidfile import alive
from .signals import Action
from .sockets import BindError

MAX_REQUEST = 4096  # bytes: a control request is one short line of JSON
VERBS = ("status", "reload", "scale", "stop", "quick-stop")
# The verbs that are a signal's action; "scale" sets the worker count (TTIN/TTOU to N).
ACTIONS = {"reload": Action.RELOAD, "stop": Action.GRACEFUL_STOP,
           "quick-stop": Action.QUICK_STOP}
OFF = "off"


def runtime_dir() -> str:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK | os.X_OK):
        return xdg
    # tempfile.gettempdir()'s order, without importing tempfile at every start-up.
    for name in ("TMPDIR", "TEMP", "TMP"):
        candidate = os.environ.get(name)
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return "/tmp"


def default_path(setting: str | None, pidfile: str | None, pid: int) -> str | None:
    """Where the master listens (None: disabled). See the module Rules for the order."""
    if setting:
        return None if setting == OFF else setting
    if pidfile:
        return os.path.abspath(pidfile) + ".ctl"
    return os.path.join(runtime_dir(), f"prefork-{pid}.ctl")


def discover() -> list[str]:
    """Control sockets of live masters in the default directory (for `prefork status`)."""
    found = []
    for path in sorted(glob.glob(os.path.join(runtime_dir(), "prefork-*.ctl"))):
        pid = os.path.basename(path)[len("prefork-"):-len(".ctl")]
        if pid.isdigit() and alive(int(pid)):
            found.append(path)
    return found


def sweep_stale() -> None:
    """Unlink the default-named sockets of masters that died without removing theirs
    (SIGKILL, OOM): only when that pid is gone and the socket refuses a connection."""
    for path in glob.glob(os.path.join(runtime_dir(), "prefork-*.ctl")):
        pid = os.path.basename(path)[len("prefork-"):-len(".ctl")]
        if not pid.isdigit() or alive(int(pid)):
            continue
        try:
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                continue  # not a socket: not ours
        except OSError:
            continue
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.setblocking(False)
            try:
                probe.connect(path)
            except ConnectionRefusedError:
                try:
                    os.unlink(path)
                except OSError:
                    pass  # another master swept it first, or not ours to remove
            except OSError:
                pass  # alive but busy (EAGAIN), or not a socket: leave it


# -- the master side ------------------------------------------------------------------

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def open_endpoint(path: str, sel: selectors.BaseSelector, handle: Handler) -> Endpoint:
    """Bind the control socket (mode 0600) and serve it from `sel`. Raises BindError."""
    if len(os.fsencode(path)) >= 100:  # sun_path is 108 bytes, unix(7); room for ".PID"
        raise BindError(f"control socket {path}: path longer than 99 bytes")
    return Endpoint(f"unix:{path}", 0o600, sel, _answer(handle), MAX_REQUEST,
                    "control socket")


def _answer(handle: Handler) -> Callable[[bytes, bool], bytes | None]:
    def answer(data: bytes, eof: bool) -> bytes | None:
        import json  # on the first request, not at every start-up

        line, newline, _ = data.partition(b"\n")
        if not newline and not eof:
            return None
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("expected a JSON object")
        except ValueError as exc:
            reply: dict[str, Any] = {"ok": False, "error": f"bad request: {exc}"}
        else:
            reply = _invalid(request) or handle(request)
        return json.dumps(reply).encode() + b"\n"

    return answer


def _invalid(request: dict[str, Any]) -> dict[str, Any] | None:
    verb = request.get("verb")
    if verb not in VERBS:
        return {"ok": False, "error": f"unknown verb {verb!r}; expected one of "
                                      f"{', '.join(VERBS)}"}
    workers = request.get("workers")
    if verb == "scale" and (not isinstance(workers, int) or isinstance(workers, bool)
                            or workers < 1):
        return {"ok": False, "error": f"scale: expected workers >= 1, got {workers!r}"}
    return None


# -- the client side (prefork status, reload, scale, stop) ----------------------------


class ControlError(Exception):
    """The master could not be reached, or it refused the request."""


def call(path: str, request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    import json

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise ControlError(f"connect({path}): no such file (is the master running?)")
        except ConnectionRefusedError:
            raise ControlError(f"connect({path}): refused (a stale socket: the master "
                               "is gone)")
        except PermissionError:
            raise ControlError(f"connect({path}): permission denied (run as the user "
                               "that runs the master, or root)")
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        raise ControlError(f"{path}: the master did not answer within {timeout:.0f} s")
    except OSError as exc:
        raise ControlError(f"{path}: {exc.strerror or exc}")
    finally:
        sock.close()
    try:
        reply = json.loads(data)
    except ValueError:
        raise ControlError(f"{path}: unreadable answer {data[:200]!r}")
    if not isinstance(reply, dict):
        raise ControlError(f"{path}: unreadable answer {data[:200]!r}")
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "the master refused the request")))
    return reply
