"""Fault injection for the exactness tests: die like ``kill -9`` at a named point.

The points are set by test-only settings (``fault_crash_after``, ``alert_fault_crash``) in
a real subprocess's environment, so the crash is a real SIGKILL: no cleanup, no offset
commit, no flush.
"""

from __future__ import annotations

import os
import signal

from moodwire.logs import get_logger

log = get_logger(__name__)


def fault_point(crash_after: str | None, where: str, what: str) -> None:
    """When ``where`` is the configured point, SIGKILL this process (``what`` is logged)."""
    if crash_after == where:
        log.warning("fault injection: killing the %s", what, extra={"after": where})
        os.kill(os.getpid(), signal.SIGKILL)
