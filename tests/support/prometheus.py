"""A real Prometheus (Debian's ``prometheus`` package) for the tests, and Grafana's PromQL
variable expansion.

:func:`start_prometheus` runs the binary on a free loopback port with a scrape config of
our own (1 s scrapes), a throw-away TSDB directory, and returns once ``/-/ready`` answers.
:func:`expand_promql` turns a dashboard target's ``expr`` into the PromQL Grafana sends:
template variables first (a multi-value variable becomes a regex alternation of its
escaped values, as Grafana's Prometheus data source formats them), then ``$__rate_interval``,
``$__interval`` and ``$__range``.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from moodwire.stack.ports import free_port

BINARY_NAMES = ("prometheus",)


def prometheus_binary() -> str:
    """The ``prometheus`` binary, or a skip saying how to install it (``make test`` does)."""
    for name in BINARY_NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "Prometheus is not installed: `make prometheus` (Debian's prometheus package; "
        "`make test` installs it when it can, as root or with password-less sudo)"
    )


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    root: Path

    def set_targets(self, job: str, targets: Sequence[str]) -> None:
        """Point ``job`` at ``targets`` (host:port): Prometheus watches the file."""
        path = self.root / f"targets-{job}.json"
        scratch = path.with_suffix(".tmp")
        scratch.write_text(json.dumps([{"targets": list(targets)}]))
        scratch.replace(path)  # atomic: Prometheus never reads half a file

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def api(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        body = response.json()
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus {path} {params}: {body}")
        return body["data"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Any]:
        data = self.api("query_range", query=expr, start=start, end=end, step=step)
        assert data["resultType"] == "matrix", data
        return list(data["result"])

    def label_values(self, label: str, match: str) -> list[str]:
        return list(self.api(f"label/{label}/values", **{"match[]": match}))

    def targets_up(self) -> dict[str, str]:
        """scrapeUrl -> health of every active target."""
        data = self.api("targets")
        return {t["scrapeUrl"]: t["health"] for t in data["activeTargets"]}


def scrape_config(root: Path, jobs: Sequence[str], interval_s: int) -> dict[str, Any]:
    # File-based discovery: processes bind port 0 and log the port they got, and the test
    # then writes each job's targets file (Prometheus picks the change up at once).
    return {
        "global": {"scrape_interval": f"{interval_s}s", "evaluation_interval": f"{interval_s}s"},
        "scrape_configs": [
            {"job_name": job, "file_sd_configs": [{"files": [str(root / f"targets-{job}.json")]}]}
            for job in jobs
        ],
    }


def start_prometheus(root: Path, jobs: Sequence[str], interval_s: int = 1) -> Iterator[Prometheus]:
    """Generator for a fixture: a Prometheus with one file-discovered scrape job per name
    (no targets until :meth:`Prometheus.set_targets`)."""
    binary = prometheus_binary()
    config = root / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(root, jobs, interval_s)))
    port = free_port()
    log_path = root / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={root / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", proc, log_path, root)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited at start:\n{server.tail()}")
            try:
                if httpx.get(f"{server.url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus not ready after 60 s:\n{server.tail()}")
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# --- Grafana's PromQL expansion ---------------------------------------------------------------


def regex_escape(value: str) -> str:
    """Grafana's escaping of a variable value inside a PromQL regex (prometheus datasource)."""
    return re.sub(r"([\\^$*+?.()|\[\]{}])", r"\\\\\1", value)


def grafana_duration(seconds: float) -> str:
    """Seconds as the duration string Grafana writes for ``$__interval`` (whole units)."""
    whole = max(1, math.ceil(seconds))
    if whole % 3600 == 0:
        return f"{whole // 3600}h"
    if whole % 60 == 0:
        return f"{whole // 60}m"
    return f"{whole}s"


def expand_promql(
    expr: str,
    variables: Mapping[str, str | Sequence[str]],
    *,
    interval_s: float,
    scrape_interval_s: float,
    range_s: float,
) -> str:
    """``expr`` as Grafana sends it. ``$__rate_interval`` is Grafana's
    max($__interval + scrape interval, 4 x scrape interval)."""

    def value_of(name: str) -> str:
        value = variables[name]
        if isinstance(value, str):
            return value
        escaped = [regex_escape(v) for v in value]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"

    for name in sorted(variables, key=len, reverse=True):
        for pattern in (f"${{{name}}}", f"[[{name}]]", f"${name}"):
            expr = expr.replace(pattern, value_of(name))
    rate_interval = max(interval_s + scrape_interval_s, 4 * scrape_interval_s)
    expr = expr.replace("$__rate_interval", grafana_duration(rate_interval))
    expr = expr.replace("$__interval", grafana_duration(interval_s))
    expr = expr.replace("$__range", grafana_duration(range_s))
    leftover = re.findall(r"\$\w+", expr)
    if leftover:
        raise ValueError(f"unexpanded Grafana variables in PromQL: {leftover}")
    return expr


def finite_values(result: list[Any]) -> list[float]:
    """Every finite sample of a query_range result (NaN: a quantile of nothing)."""
    out: list[float] = []
    for series in result:
        for _, value in series["values"]:
            number = float(value)
            if math.isfinite(number):
                out.append(number)
    return out
