"""What a prefork process does to itself: prctl(2) settings and dropping privileges.

Rules:
- Linux only where it says prctl; elsewhere the callers fall back (the heartbeat EOF
  still tells a worker its master died; --preload refuses to start without a subreaper).
- Called by the process it changes (a worker, a template, the master), never for another.
"""

from __future__ import annotations

import os

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, arg: int) -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(option, arg, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False  # not Linux


def set_parent_death_signal(sig: int) -> bool:
    """prctl(PR_SET_PDEATHSIG): the kernel sends us `sig` when our parent dies."""
    return _prctl(PR_SET_PDEATHSIG, sig)


def become_subreaper() -> bool:
    """prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants (the workers a template
    double-forks) become our children, to be reaped and supervised by us."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def drop_privileges(user: str | None, group: str | None) -> None:
    """setgid, initgroups (as root), then setuid: the group first, while we still may."""
    import grp
    import pwd

    if group is not None:
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        os.setgid(gid)
    if user is not None:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        if group is None:
            os.setgid(entry.pw_gid)
        if os.getuid() == 0:
            os.initgroups(entry.pw_name, os.getgid())
        os.setuid(entry.pw_uid)
