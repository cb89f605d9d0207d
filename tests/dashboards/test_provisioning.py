"""The dashboards, Grafana's provisioned data sources and the compose Prometheus fit together:
every data source a dashboard names is provisioned with that type, the compose Prometheus
config is valid (Prometheus' own ``promtool``) and scrapes every long-running moodwire
service on the metrics port, under the job names the dashboards select."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from moodwire.settings import REPO_ROOT

DASHBOARDS = sorted((REPO_ROOT / "dashboards").glob("*.json"))
DATASOURCES = REPO_ROOT / "infra" / "grafana" / "provisioning" / "datasources" / "moodwire.yaml"
PROMETHEUS_CONFIG = REPO_ROOT / "infra" / "prometheus" / "prometheus.yml"
COMPOSE = REPO_ROOT / "docker-compose.yml"
# compose service -> the job the dashboards know it by
LONG_RUNNING = {
    "processor": "moodwire-process",
    "ingest": "moodwire-ingest",
    "alerts": "moodwire-alerts",
    "web": "moodwire-web",
}


def datasource_refs(node: Any) -> Iterator[dict[str, str]]:
    if isinstance(node, dict):
        ref = node.get("datasource")
        if isinstance(ref, dict) and "uid" in ref:
            yield ref
        for value in node.values():
            yield from datasource_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasource_refs(item)


def test_every_dashboard_data_source_is_provisioned() -> None:
    provisioned = {
        d["uid"]: d["type"] for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]
    }
    used: set[tuple[str, str]] = set()
    for path in DASHBOARDS:
        used |= {(r["uid"], r["type"]) for r in datasource_refs(json.loads(path.read_text()))}
    assert ("moodwire-prometheus", "prometheus") in used
    for uid, kind in sorted(used):
        assert provisioned.get(uid) == kind, (
            f"dashboards use {uid} ({kind}); provisioned: {provisioned}"
        )


def test_compose_prometheus_config_is_valid() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed: `make prometheus` (Debian's prometheus package)")
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_prometheus_scrapes_every_long_running_process() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    mounts = services["prometheus"]["volumes"]
    assert any(m.startswith("./infra/prometheus/prometheus.yml:") for m in mounts)
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for service, job_name in LONG_RUNNING.items():
        env = {**services[service].get("environment", {})}
        port = int(env["MOODWIRE_METRICS_PORT"])
        assert env["MOODWIRE_METRICS_HOST"] == "0.0.0.0"  # reachable on the compose network
        sd = jobs[job_name]["dns_sd_configs"][0]
        assert (sd["names"], sd["port"]) == ([service], port), job_name

    # The pipeline dashboard selects exactly those jobs.
    used: set[str] = set()
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                used |= set(re.findall(r'job="(moodwire-[a-z]+)"', target.get("expr", "")))
    assert used and used <= set(LONG_RUNNING.values())


def test_grafana_mounts_the_dashboards_folder() -> None:
    grafana = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]
    assert "./dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    for path in DASHBOARDS:
        assert Path(path).stem == json.loads(path.read_text())["uid"]
