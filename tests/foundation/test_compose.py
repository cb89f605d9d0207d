"""docker-compose.yml is a valid Compose file wired to real settings, commands and Grafana."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from typing import Any

import jsonschema
import psycopg2
import pytest
import typer
import yaml
from sqlalchemy.engine import make_url

from moodwire.cli.app import app
from moodwire.db.migrate import upgrade
from moodwire.settings import REPO_ROOT, Settings

COMPOSE = REPO_ROOT / "docker-compose.yml"
SCHEMA = REPO_ROOT.parent / "shared" / "schemas" / "compose-spec.json"
PROVISIONING = REPO_ROOT / "infra" / "grafana" / "provisioning"
READER_SCRIPT = REPO_ROOT / "infra" / "postgres" / "initdb" / "10-grafana-reader.sh"
READER_SQL = READER_SCRIPT.with_name("grafana-reader.psql")
MOODWIRE_SERVICES = ("init", "ingest", "processor", "alerts", "web")
# Commands whose CLI module lands with a later issue.
PENDING_COMMANDS = {"web": "the web command arrives with the API issue"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_compose_file_matches_the_compose_spec(compose: dict[str, Any]) -> None:
    if not SCHEMA.exists():
        pytest.skip(f"compose schema not found at {SCHEMA}")
    schema = json.loads(SCHEMA.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=str)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_every_moodwire_variable_is_a_setting(compose: dict[str, Any]) -> None:
    fields = set(Settings.model_fields)
    seen = set()
    for service in compose["services"].values():
        seen |= {k for k in _environment(service) if k.startswith("MOODWIRE_")}
    dockerfile = (REPO_ROOT / "infra" / "Dockerfile").read_text()
    seen |= set(re.findall(r"\b(MOODWIRE_[A-Z0-9_]+)=", dockerfile))
    assert {"MOODWIRE_BROKER_URL", "MOODWIRE_DATABASE_URL", "MOODWIRE_REDIS_URL"} <= seen
    unknown = sorted(name for name in seen if name.removeprefix("MOODWIRE_").lower() not in fields)
    assert unknown == []


def test_moodwire_services_configure_only_through_moodwire_variables(
    compose: dict[str, Any],
) -> None:
    for name in MOODWIRE_SERVICES:
        service = compose["services"][name]
        assert service["build"]["dockerfile"] == "infra/Dockerfile"
        assert all(k.startswith("MOODWIRE_") for k in _environment(service)), name
        assert (REPO_ROOT / service["build"]["dockerfile"]).exists()


@pytest.mark.parametrize("name", MOODWIRE_SERVICES)
def test_moodwire_services_run_real_commands(compose: dict[str, Any], name: str) -> None:
    command = compose["services"][name]["command"][0]
    registered = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    if command not in registered and command in PENDING_COMMANDS:
        pytest.skip(PENDING_COMMANDS[command])
    assert command in registered


def test_kafka_is_single_node_kraft(compose: dict[str, Any]) -> None:
    env = _environment(compose["services"]["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    broker = _environment(compose["services"]["ingest"])["MOODWIRE_BROKER_URL"]
    assert f"PLAINTEXT://{broker}" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")


def test_grafana_is_provisioned_from_the_repo(compose: dict[str, Any]) -> None:
    mounts = {}
    for volume in compose["services"]["grafana"]["volumes"]:
        source, target = volume.split(":")[:2]
        mounts[target] = source
    assert (REPO_ROOT / mounts["/etc/grafana/provisioning"]).resolve() == PROVISIONING
    assert (REPO_ROOT / mounts["/var/lib/grafana/dashboards"]).resolve() == REPO_ROOT / "dashboards"

    datasources = yaml.safe_load((PROVISIONING / "datasources" / "moodwire.yaml").read_text())
    by_uid = {d["uid"]: d for d in datasources["datasources"]}
    pg = by_uid["moodwire-pg"]
    pg_env = _environment(compose["services"]["postgres"])
    # Grafana logs in as the read-only role the init script creates, not as the superuser.
    assert pg["user"] == pg_env["GRAFANA_DB_USER"] != pg_env["POSTGRES_USER"]
    assert pg["secureJsonData"]["password"] == "$GRAFANA_DB_PASSWORD"
    assert pg["jsonData"]["database"] == pg_env["POSTGRES_DB"]
    assert pg["url"].split(":")[0] in compose["services"]

    providers = yaml.safe_load((PROVISIONING / "dashboards" / "moodwire.yaml").read_text())
    paths = [p["options"]["path"] for p in providers["providers"]]
    assert paths == ["/var/lib/grafana/dashboards"]


def test_dashboards_use_provisioned_datasources() -> None:
    uids = {
        d["uid"]
        for d in yaml.safe_load((PROVISIONING / "datasources" / "moodwire.yaml").read_text())[
            "datasources"
        ]
    }
    used: set[str] = set()
    for path in (REPO_ROOT / "dashboards").glob("*.json"):
        text = path.read_text()
        used |= set(re.findall(r'"datasource"\s*:\s*\{[^}]*"uid"\s*:\s*"([^"$]+)"', text))
    assert used <= uids, f"dashboards refer to unknown data sources: {used - uids}"


# --- security: what `docker compose up` exposes, and with which credentials -------------
# There is no Docker engine here, so the file is interpolated the way Compose does it
# (`${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `$$`)
# and each property is checked on the result.

SECRETS = {
    "POSTGRES_PASSWORD": "pg-superuser-pw",
    "GRAFANA_DB_PASSWORD": "grafana-reader-pw",
    "REDIS_PASSWORD": "redis-pw",
    "GRAFANA_ADMIN_PASSWORD": "grafana-admin-pw",
    "MOODWIRE_WEB_TOKEN": "web-token-0123456789",
}
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)


class MissingVariable(LookupError):
    pass


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name, op, arg = match["name"], match["op"], match["arg"]
        unset = name not in env or (op is not None and op.startswith(":") and not env[name])
        if op and op.endswith("?") and unset:
            raise MissingVariable(f"{name}: {arg}")
        if op and op.endswith("-") and unset:
            return str(arg)
        return env.get(name, "")

    return _VARIABLE.sub(one, value)


def _resolved(compose: dict[str, Any], **env: str) -> dict[str, Any]:
    resolved: dict[str, Any] = _interpolate(compose, {**SECRETS, **env})
    return resolved


def _required_variables(compose: dict[str, Any]) -> set[str]:
    text = json.dumps(compose)
    return {m["name"] for m in _VARIABLE.finditer(text) if (m["op"] or "").endswith("?")}


def _published(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host address, host port) of each short-syntax port mapping."""
    out = []
    for entry in service.get("ports", []):
        parts = str(entry).rsplit(":", 2)
        assert len(parts) == 3, f"{entry}: a published port must name its host address"
        out.append((parts[0], parts[1]))
    return out


def test_every_published_port_listens_on_loopback_unless_told(compose: dict[str, Any]) -> None:
    published = {n: s for n, s in compose["services"].items() if s.get("ports")}
    assert set(published) >= {"kafka", "postgres", "redis", "web", "grafana"}
    default = _resolved(compose)["services"]
    for name in published:
        assert {ip for ip, _ in _published(default[name])} == {"127.0.0.1"}, name
    everywhere = _resolved(compose, PUBLISH_ADDRESS="0.0.0.0")["services"]
    for name in published:
        assert {ip for ip, _ in _published(everywhere[name])} == {"0.0.0.0"}, name


def test_every_secret_is_required_and_none_has_a_default(compose: dict[str, Any]) -> None:
    assert _required_variables(compose) == set(SECRETS)
    raw = COMPOSE.read_text()
    for name in SECRETS:
        assert not re.search(r"\$\{" + name + r":?-", raw), f"{name} has a default"
        missing = {k: v for k, v in SECRETS.items() if k != name}
        with pytest.raises(MissingVariable, match=name):
            _interpolate(compose, missing)
    # Nothing left of the old development defaults.
    resolved = json.dumps(_resolved(compose))
    assert ":moodwire@" not in resolved and '"admin"' not in resolved


def test_redis_asks_for_its_password_and_clients_give_it(compose: dict[str, Any]) -> None:
    services = _resolved(compose)["services"]
    redis_service = services["redis"]
    command = redis_service["command"]
    assert command[command.index("--requirepass") + 1] == SECRETS["REDIS_PASSWORD"]
    assert _environment(redis_service)["REDISCLI_AUTH"] == SECRETS["REDIS_PASSWORD"]
    assert redis_service["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for name in MOODWIRE_SERVICES:
        url = _environment(services[name])["MOODWIRE_REDIS_URL"]
        assert url == f"redis://:{SECRETS['REDIS_PASSWORD']}@redis:6379/0", name
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "moodwire.yaml").read_text())
    by_uid = {d["uid"]: d for d in datasources["datasources"]}
    assert by_uid["moodwire-redis"]["secureJsonData"]["password"] == "$REDIS_PASSWORD"
    assert _environment(services["grafana"])["REDIS_PASSWORD"] == SECRETS["REDIS_PASSWORD"]


def test_grafana_has_its_own_admin_password_and_only_the_read_only_role(
    compose: dict[str, Any],
) -> None:
    services = _resolved(compose)["services"]
    grafana = _environment(services["grafana"])
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == SECRETS["GRAFANA_ADMIN_PASSWORD"]
    # Grafana never holds the superuser's password, only the reader's.
    assert SECRETS["POSTGRES_PASSWORD"] not in json.dumps(services["grafana"])
    assert grafana["GRAFANA_DB_PASSWORD"] == SECRETS["GRAFANA_DB_PASSWORD"]
    postgres = services["postgres"]
    assert _environment(postgres)["GRAFANA_DB_PASSWORD"] == SECRETS["GRAFANA_DB_PASSWORD"]
    mounts = dict(v.split(":")[1::-1] for v in postgres["volumes"] if v.startswith("./"))
    init_dir = (REPO_ROOT / mounts["/docker-entrypoint-initdb.d"]).resolve()
    assert init_dir == READER_SCRIPT.parent
    # The image's entrypoint runs *.sh and *.sql; the SQL with psql variables is neither.
    assert sorted(p.name for p in init_dir.iterdir()) == [READER_SCRIPT.name, READER_SQL.name]


def test_the_web_page_needs_its_token_in_compose(compose: dict[str, Any]) -> None:
    web = _environment(_resolved(compose)["services"]["web"])
    assert web["MOODWIRE_WEB_API_HOST"] == "0.0.0.0"  # so the token is mandatory
    assert web["MOODWIRE_WEB_TOKEN"] == SECRETS["MOODWIRE_WEB_TOKEN"]
    assert len(web["MOODWIRE_WEB_TOKEN"]) >= 16
    assert "localhost" in web["MOODWIRE_WEB_ALLOWED_HOSTS"].split(",")


def test_the_grafana_role_reads_every_table_and_cannot_write(database_url: str) -> None:
    """The init script on the real PostgreSQL, then the real migrations, then the role."""
    if shutil.which("psql") is None:
        pytest.skip("psql not installed")
    admin_url = make_url(database_url)
    suffix = uuid.uuid4().hex[:10]
    database, role, password = f"moodwire_ro_{suffix}", f"grafana_reader_{suffix}", suffix * 2
    admin_kwargs = {
        "host": admin_url.host,
        "port": admin_url.port,
        "user": admin_url.username,
        "password": admin_url.password,
    }
    admin = psycopg2.connect(dbname="postgres", **admin_kwargs)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{database}"')
    try:
        env = {
            "PATH": "/usr/bin:/bin",
            "PGHOST": str(admin_url.host),
            "PGPORT": str(admin_url.port),
            "POSTGRES_USER": str(admin_url.username),
            "POSTGRES_DB": database,
            "GRAFANA_DB_USER": role,
            "GRAFANA_DB_PASSWORD": password,
        }
        if admin_url.password:
            env["PGPASSWORD"] = admin_url.password
        done = subprocess.run(
            ["bash", str(READER_SCRIPT)], env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        # As in compose: the role exists first, the migrations make the tables after it.
        upgrade(admin_url.set(database=database).render_as_string(hide_password=False))

        reader = psycopg2.connect(
            dbname=database, **{**admin_kwargs, "user": role, "password": password}
        )
        try:
            reader.autocommit = True
            with reader.cursor() as cur:
                cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                tables = sorted(row[0] for row in cur.fetchall())
                assert {"posts", "scores", "alerts", "dead_letters"} <= set(tables)
                for table in tables:
                    cur.execute(f'SELECT count(*) FROM "{table}"')  # every table is readable
                # Past the read-only default too: the grants themselves refuse writing.
                cur.execute("SET default_transaction_read_only = off")
                for sql in (
                    "INSERT INTO alembic_version VALUES ('x')",
                    "UPDATE alembic_version SET version_num = 'x'",
                    "DELETE FROM posts",
                    "TRUNCATE scores",
                    "CREATE TABLE mine (x int)",
                    "CREATE TEMPORARY TABLE mine (x int)",
                    "DROP TABLE posts",
                    "ALTER TABLE posts ADD COLUMN x int",
                ):
                    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                        cur.execute(sql)
                cur.execute("RESET default_transaction_read_only")
                cur.execute("SHOW default_transaction_read_only")
                assert cur.fetchone() == ("on",)
        finally:
            reader.close()
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            cur.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()
