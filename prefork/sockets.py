"""Listening sockets: parse an address, bind it, or adopt an inherited fd.

Rules:
- Runs in the master, before any fork. Workers only inherit the resulting sockets.
- Every listener is non-blocking: workers wait on them in a selector, and several workers
  race for each connection (a lost race is a BlockingIOError, not a hang).
- A socket we created from `unix:/path` is ours to unlink on exit; an inherited one
  (fd://N, systemd) is never unlinked and never shutdown() (its other holders share it).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from dataclasses import dataclass


class BindError(Exception):
    """One line naming the syscall and the address, e.g. bind(127.0.0.1:8000): ..."""


@dataclass
class Listener:
    sock: socket.socket
    label: str  # as the user wrote it, or the systemd fd name
    unix_path: str | None = None  # set only when we created the socket file
    inherited: bool = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        """Close our copy; unlink a unix socket file only if we created it."""
        self.sock.close()
        if self.unix_path is not None:
            try:
                os.unlink(self.unix_path)
            except FileNotFoundError:
                pass


def _reason(exc: OSError) -> str:
    text = os.strerror(exc.errno) if exc.errno else str(exc)
    return text[:1].lower() + text[1:]


def parse_tcp(address: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); raises ValueError."""
    if address.startswith("["):
        host, sep, port = address[1:].partition("]:")
        if not sep:
            raise ValueError(f"expected [IPv6]:PORT, got {address!r}")
    else:
        host, sep, port = address.rpartition(":")
        if not sep:
            host, port = address, "8000"
    if not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid port in {address!r}")
    return host or "0.0.0.0", int(port)


def _bind_unix(path: str, backlog: int, umask: int) -> socket.socket:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise BindError(f"bind(unix:{path}): exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)  # stale: nobody accepts on it any more
        else:
            raise BindError(f"bind(unix:{path}): address already in use")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(umask)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(f"bind(unix:{path}): {_reason(exc)}") from None
    finally:
        os.umask(old)
    return sock


def _bind_tcp(address: str, backlog: int) -> socket.socket:
    try:
        host, port = parse_tcp(address)
    except ValueError as exc:
        raise BindError(f"bind({address}): {exc}") from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"bind({address}): cannot resolve {host!r}: {exc.strerror}") from None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(f"bind({address}): {_reason(exc)}") from None
    return sock


def adopt_fd(fd: int, label: str) -> socket.socket:
    """Wrap an inherited fd; it must be a listening stream socket."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise BindError(f"adopt({label}): fd {fd}: {_reason(exc)}") from None
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise BindError(f"adopt({label}): fd {fd} is not a listening stream socket")
    return sock


def bind(address: str, backlog: int, umask: int) -> Listener:
    """Create (or adopt) the listener for one --bind value."""
    if address.startswith("unix:"):
        path = address[5:]
        listener = Listener(_bind_unix(path, backlog, umask), address, unix_path=path)
    elif address.startswith("fd://"):
        number = address[5:]
        if not number.isascii() or not number.isdigit():
            raise BindError(f"bind({address}): expected fd://N")
        listener = Listener(adopt_fd(int(number), address), address, inherited=True)
    else:
        listener = Listener(_bind_tcp(address, backlog), address)
    listener.sock.setblocking(False)
    os.set_inheritable(listener.fileno(), False)  # workers are forked, never exec'd
    return listener


def address_in_use(exc: OSError) -> bool:
    return exc.errno == errno.EADDRINUSE


def local_name(sock: socket.socket) -> str:
    """What the socket is bound to, for logs: 127.0.0.1:8000, [::1]:8000 or unix:/path."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name if isinstance(name, str) else name.decode()}"
    if sock.family == socket.AF_INET6:
        return f"[{name[0]}]:{name[1]}"
    return f"{name[0]}:{name[1]}"
