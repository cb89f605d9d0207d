"""Background server processes: start detached, recognise them later by PID, stop them.

A PID alone can be reused by an unrelated process after a reboot, so every record
also keeps the process's start time; ``stop`` touches a PID only when both match.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from moodwire.stack.errors import StackError
from moodwire.stack.ports import wait_until


@dataclass(frozen=True)
class ServerProcess:
    """One started server, as recorded in the stack file."""

    name: str
    pid: int
    create_time: float
    port: int
    url: str
    log: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerProcess:
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            create_time=float(data["create_time"]),
            port=int(data["port"]),
            url=str(data["url"]),
            log=str(data["log"]),
        )


def spawn(
    argv: list[str],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    user: str | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (it outlives the CLI), output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            **as_user(user),
        )


def as_user(user: str | None) -> dict[str, Any]:
    """subprocess keyword arguments that run a child as ``user`` with only that user's group.

    Dropping root's group matters: a directory owned by group root with no group bits
    would otherwise deny the child even where "others" may enter.
    """
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def create_time(pid: int) -> float:
    return float(psutil.Process(pid).create_time())


def is_alive(pid: int, started: float) -> bool:
    """True when ``pid`` runs and is the same process that was recorded (same start time)."""
    try:
        proc = psutil.Process(pid)
        zombie = bool(proc.status() == psutil.STATUS_ZOMBIE)
        return not zombie and abs(proc.create_time() - started) < 1.0
    except psutil.Error:
        return False


def stop(pid: int, started: float, sig: int = signal.SIGTERM, timeout: float = 15.0) -> bool:
    """Signal the recorded process, wait for it, kill it if it lingers. False if it was gone."""
    if not is_alive(pid, started):
        return False
    try:
        os.kill(pid, sig)
        # Polling, not psutil's wait: a server whose parent has exited may stay a zombie
        # until init reaps it, and a zombie has already stopped.
        if not wait_until(lambda: not is_alive(pid, started), timeout):
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not is_alive(pid, started), 5.0)
    except ProcessLookupError:
        pass
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    # When this process is the parent (tests), collect the zombie so the PID really disappears.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def launch(
    name: str,
    argv: list[str],
    *,
    port: int,
    url: str,
    log: Path,
    ready: Callable[[], bool],
    timeout: float,
    fix: str,
    env: dict[str, str] | None = None,
    user: str | None = None,
    cwd: Path | None = None,
) -> ServerProcess:
    """Start a server and return once ``ready()`` holds; a one-line StackError otherwise."""
    proc = spawn(argv, log, env=env, user=user, cwd=cwd)
    started = create_time(proc.pid)

    def up_or_dead() -> bool:
        return proc.poll() is not None or ready()

    wait_until(up_or_dead, timeout)
    if proc.poll() is not None:
        raise StackError(
            f"{name} exited at start with code {proc.returncode} ({last_line(log)}); "
            f"see {log}; {fix}"
        )
    if not ready():
        stop(proc.pid, started, signal.SIGKILL, timeout=5)
        raise StackError(f"{name} did not become ready within {timeout:.0f} s; see {log}; {fix}")
    return ServerProcess(name, proc.pid, started, port, url, str(log))


def last_line(log: Path) -> str:
    """The last non-empty line of a log, for one-line error messages."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1][:200] if lines else "empty log"
