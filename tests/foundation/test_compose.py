"""docker-compose.yml is a valid Compose file wired to real settings, commands and Grafana."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import typer
import yaml

from moodwire.cli.app import app
from moodwire.settings import REPO_ROOT, Settings

COMPOSE = REPO_ROOT / "docker-compose.yml"
SCHEMA = REPO_ROOT.parent / "shared" / "schemas" / "compose-spec.json"
PROVISIONING = REPO_ROOT / "infra" / "grafana" / "provisioning"
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
    assert pg["user"] == pg_env["POSTGRES_USER"]
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
