"""The stack file (``$MOODWIRE_STATE_DIR/stack.json``): the URLs and PIDs of what `up` started.

``urls`` is what Settings reads to fill URLs missing from the environment; ``servers``
is what `down` stops, and nothing else. Only its owner may read it (mode 600): the
PostgreSQL URL carries the server's password.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from moodwire.stack.processes import ServerProcess

UrlField = Literal["broker_url", "database_url", "redis_url"]
# Settings field filled by each server's URL.
URL_FIELDS: dict[str, UrlField] = {
    "broker": "broker_url",
    "postgres": "database_url",
    "redis": "redis_url",
}


@dataclass
class StackState:
    servers: dict[str, ServerProcess] = field(default_factory=dict)

    def urls(self) -> dict[UrlField, str]:
        return {URL_FIELDS[name]: server.url for name, server in self.servers.items()}


def read_state(path: Path) -> StackState:
    """The recorded stack; empty when the file is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
        servers = [ServerProcess.from_json(item) for item in data.get("servers", [])]
    except (OSError, ValueError, KeyError, TypeError):
        return StackState()
    return StackState({server.name: server for server in servers})


def write_state(path: Path, state: StackState) -> None:
    """Write atomically, so a reader never sees half a file; mode 600, as the database URL
    carries the local PostgreSQL's password."""
    if not state.servers:
        path.unlink(missing_ok=True)
        return
    body = {
        "urls": state.urls(),
        "servers": [server.to_json() for server in state.servers.values()],
    }
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(body, indent=2) + "\n")
    os.replace(tmp, path)


@contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """One `stack up`/`down` at a time per state directory."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
