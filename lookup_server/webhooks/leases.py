"""Who holds a lease on a webhook, and whether that process is gone.

An owner is ``HOST:PID:TOKEN``. HOST is the host name and, on Linux, the PID
namespace, so two containers that share a host name (and an outbox on a shared
volume) never read each other's PIDs. A lease whose owner is on this host and
whose PID no longer exists belongs to a process that died: it is taken over at
once instead of after it expires. A PID that exists proves nothing (it may have
been reused), so such a lease is left to expire.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable


def this_host() -> str:
    """This host as owners name it: host name, plus the PID namespace where there is one."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()}/{namespace.strip('pid:[]')}"


def new_owner() -> str:
    """A lease owner name for a worker of this process (make one after any fork)."""
    return f"{this_host()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def dead_owners(owners: Iterable[str]) -> set[str]:
    """The owners among ``owners`` whose process ran on this host and no longer exists."""
    host = this_host()
    dead = set()
    for owner in owners:
        parts = owner.rsplit(":", 2)
        if (
            len(parts) == 3
            and parts[0] == host
            and parts[1].isdigit()
            and not _exists(int(parts[1]))
        ):
            dead.add(owner)
    return dead


def _exists(pid: int) -> bool:
    if pid <= 0:
        return True  # not a process id: never declare it dead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True
