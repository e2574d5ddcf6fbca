"""Who holds a file: this machine's name, and whether a process on it is still alive.

A temporary file or a run lock can be left behind by a process that was killed (SIGKILL, OOM killer, a node that
went down). These helpers tell such leftovers, which are safe to remove or take over, from files a live process is
still using. Liveness can only be checked for processes on this machine; callers decide what to do about others.
"""

from __future__ import annotations

import os
import re
import socket

__all__ = ["host_name", "process_alive"]


def host_name() -> str:
    """This machine's name, reduced to characters that are safe in a file name (``[A-Za-z0-9.-]``)."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "localhost"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine exists (a zombie not yet reaped by its parent counts as alive).

    Where this cannot be checked safely (Windows, where ``os.kill`` would terminate the process), the answer is
    ``True``: nothing is removed or taken over on a guess.
    """
    if pid <= 0 or os.name == "nt":
        return pid > 0
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists and may be signalled
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True
