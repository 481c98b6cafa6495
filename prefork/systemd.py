"""systemd's two protocols, without libsystemd: socket activation and sd_notify.

Rules:
- Called in the master only. Notifications come from the master's pid, the one systemd
  accepts under NotifyAccess=main (sd_notify(3)).
- `listen_fds()` honours LISTEN_FDS only when LISTEN_PID is our pid (the variables leak
  into children otherwise), and unsets the three variables so workers and apps never see
  them (sd_listen_fds(3), unset_environment).
- `notify()` never raises: a missing or dead notify socket must not stop the server.
"""

from __future__ import annotations

import os
import socket

from .sockets import Listener, adopt_fd

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START


def listen_fds() -> list[Listener]:
    """Adopt the sockets systemd (or a test) passed as fds 3.. with LISTEN_FDS/LISTEN_PID."""
    pid = os.environ.get("LISTEN_PID", "")
    count = os.environ.get("LISTEN_FDS", "")
    names = os.environ.get("LISTEN_FDNAMES", "")
    if not (pid.isdigit() and int(pid) == os.getpid() and count.isdigit()):
        return []
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)
    labels = names.split(":") if names else []
    listeners = []
    for i in range(int(count)):
        fd = LISTEN_FDS_START + i
        label = f"systemd:{labels[i]}" if i < len(labels) and labels[i] else f"systemd:fd{fd}"
        sock = adopt_fd(fd, label)
        # systemd passes blocking, inheritable fds; workers want them non-blocking.
        sock.setblocking(False)
        os.set_inheritable(fd, False)
        listeners.append(Listener(sock, label, inherited=True))
    return listeners


class Notifier:
    """Sends sd_notify datagrams to $NOTIFY_SOCKET (path, or @abstract)."""

    def __init__(self, address: str | None) -> None:
        if address and address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address if address and not address.startswith("vsock:") else None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send KEY=VALUE lines as one datagram; False if not sent."""
        if self.address is None:
            return False
        payload = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(payload, self.address)
        except OSError:
            return False
        return True
