"""Run the pipeline's own processes (ingest, stream-processor workers) as children of this
one, each logging to a file, and stop them in the order that loses nothing: ingest first
(SIGINT: it flushes what it read), then the others: workers (SIGTERM: they finish their
batch), the alert detector and the web page.

Used by ``moodwire demo`` and ``bench/pipeline.py``; the servers themselves are the
stack's business (``moodwire.stack``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from moodwire.settings import Settings
from moodwire.stack.processes import create_time, last_line, spawn, stop

# The CLI, run by this interpreter (works without the console script on PATH).
_CLI = [sys.executable, "-c", "from moodwire.cli.app import main; main()"]
_URL_ENV = {
    "broker_url": "MOODWIRE_BROKER_URL",
    "database_url": "MOODWIRE_DATABASE_URL",
    "redis_url": "MOODWIRE_REDIS_URL",
}


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    started: float
    log: Path

    @property
    def exited(self) -> bool:
        return self.process.poll() is not None

    def describe_exit(self) -> str:
        return (
            f"{self.name} exited with code {self.process.returncode}: "
            f"{last_line(self.log)} (log: {self.log})"
        )


def child_env(settings: Settings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: ours, plus the server URLs these settings resolved."""
    env = dict(os.environ)
    for name, var in _URL_ENV.items():
        value = getattr(settings, name)
        if value:
            env[var] = str(value)
    env.update(extra or {})
    return env


@dataclass
class LocalPipeline:
    settings: Settings
    log_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    children: list[Child] = field(default_factory=list)

    def _start(self, name: str, args: list[str], extra: Mapping[str, str] | None) -> Child:
        log = self.log_dir / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_bytes(b"")  # this run's log only
        env = child_env(self.settings, {**self.env, **(extra or {})})
        process = spawn([*_CLI, *args], log, env=env)
        child = Child(name, process, create_time(process.pid), log)
        self.children.append(child)
        return child

    def start_worker(self, name: str = "worker", **env: str) -> Child:
        """One ``moodwire process`` worker with its own web port (workers share a host)."""
        return self._start(name, ["process"], env)

    def start_ingest(self, url: str, *args: str, name: str = "ingest") -> Child:
        return self._start(name, ["ingest", url, *args], None)

    def start_alerts(self) -> Child:
        """``moodwire alerts``: negative-spike detection over the live aggregates."""
        return self._start("alerts", ["alerts"], None)

    def start_web(self, host: str, port: int) -> Child:
        """``moodwire web``: the live page."""
        return self._start("web", ["web", "--host", host, "--port", str(port)], None)

    def exited(self) -> list[Child]:
        return [c for c in self.children if c.exited]

    def stop(self, timeout: float = 20.0) -> None:
        """Ingest first (flushes), then workers; kills whatever does not stop in time."""
        ingests = [c for c in self.children if c.name.startswith("ingest")]
        others = [c for c in self.children if c not in ingests]
        for group, sig in ((ingests, signal.SIGINT), (others, signal.SIGTERM)):
            for child in group:
                stop(child.process.pid, child.started, sig, timeout=timeout)
                try:
                    child.process.wait(5)
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait(5)
        self.children.clear()
