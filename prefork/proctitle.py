"""Process titles, so `ps` tells the master from its workers: `prefork: worker 3 [NAME]`."""

from __future__ import annotations

import setproctitle


def set_title(role: str, name: str) -> None:
    setproctitle.setproctitle(f"prefork: {role} [{name}]")
