"""Child processes that do not outlive the process that started them.

`make run` and the test suite start servers and workers in their own sessions
(so that a terminal's Ctrl-C reaches the parent alone, which then stops them in
order). A parent killed outright (SIGKILL, the OOM killer) runs no clean-up, and
without this its children would go on serving, writing to the same database and
holding the ports the next run needs.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable

# linux/prctl.h
PR_SET_PDEATHSIG = 1


def parent_death_signal() -> Callable[[], None] | None:
    """Return a `preexec_fn` that has Linux send the child SIGTERM when this
    process dies, however it dies; None where that is not available (macOS:
    children there are stopped by the parent's clean-up only).

    The C function is looked up here, in the parent, so that the child only
    calls it between fork and exec. If the parent died before the request took
    effect, the child exits at once.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    term = int(signal.SIGTERM)

    def die_with_parent() -> None:
        prctl(PR_SET_PDEATHSIG, term)
        if os.getppid() != parent:
            os._exit(1)

    return die_with_parent


# Set by SIGUSR1 ("consume what is left, then stop": make run's shutdown) when it
# arrives while a consumer command is still starting; the stream reads it once
# its own handlers are in place (detection.stream).
DRAIN_REQUESTED = threading.Event()


def drain_signal_remember() -> None:
    """Remember a SIGUSR1 from now on, instead of dying of it (its default).

    manage.py calls this first thing for the consumer commands: Django and the
    model take seconds to load, and make run may ask for a drain meanwhile.
    """
    signal.signal(signal.SIGUSR1, lambda *_: DRAIN_REQUESTED.set())
