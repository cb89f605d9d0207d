"""A real Prometheus scrapes real moodwire processes; every PromQL expression of every
dashboard must give real, finite results, and the counters must agree with what happened.

Four real processes run on the session's servers: ``moodwire ingest webhook://`` (posts
arrive over HTTP, as from any pushing system), ``moodwire process``, ``moodwire alerts`` and
``moodwire web``. Some input is bad on purpose (dead letters at both stages), and a Postgres
trigger refuses one batch for a while, so the worker really retries a sink.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from moodwire.db.engine import make_engine
from moodwire.settings import Settings
from moodwire.stack.ports import free_port
from support.pipeline import (
    MOODWIRE,
    Worker,
    count_scores,
    post_dicts,
    produce,
    real_tweets,
    serving_version,
    tag_of,
    wait_until,
    worker_env,
)
from support.prometheus import (
    Prometheus,
    expand_promql,
    finite_values,
    prometheus_binary,
    start_prometheus,
)

DASHBOARDS = sorted((Path(__file__).parents[2] / "dashboards").glob("*.json"))
SCRAPE_S = 1
GOOD = 300  # posts in the first batch
RETRIED = 60  # posts of the batch a trigger refuses for a while
BAD_LINES = 7  # invalid JSON lines sent to the webhook: ingest-stage dead letters
BAD_RAW = 5  # invalid records put straight on the raw topic: process-stage dead letters


def prom_targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in dashboard["panels"]:
        if panel.get("datasource", {}).get("type") != "prometheus":
            continue
        for target in panel.get("targets", []):
            yield f"panel {panel['id']} {panel['title']!r} {target['refId']}", target


def prom_dashboards() -> list[Path]:
    return [p for p in DASHBOARDS if any(True for _ in prom_targets(json.loads(p.read_text())))]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A process's /metrics, sample name + labels -> value."""
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **want: str
) -> float:
    return sum(
        v
        for (n, labels), v in samples.items()
        if n == name and all(dict(labels).get(k) == w for k, w in want.items())
    )


class Processes:
    """The four long-running processes of this test, each with its metrics port."""

    def __init__(self, settings: Settings, root: Path) -> None:
        self.settings = settings
        self.root = root
        self.webhook_port = free_port()
        self.web_port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self.ports: dict[str, int] = {}

    def start(self, name: str, args: list[str], **env: str) -> None:
        """Start ``moodwire ARGS`` with its metrics on any free port (found in its log)."""
        self.logs[name] = self.root / f"{name}.log"
        full_env = worker_env(self.settings, MOODWIRE_METRICS_PORT="0", **env)
        with self.logs[name].open("wb") as log:
            self.procs[name] = subprocess.Popen(
                [str(MOODWIRE), *args], env=full_env, stdout=log, stderr=subprocess.STDOUT
            )

    def adopt(self, name: str, worker: Worker) -> None:
        self.logs[name] = worker.log_path

    def tail(self, name: str) -> str:
        return "\n".join(self.logs[name].read_text(errors="replace").splitlines()[-30:])

    def metrics_port(self, name: str) -> int | None:
        """The port the process logged it serves /metrics on (``metrics serving``)."""
        for line in self.logs[name].read_bytes().splitlines():
            if b"metrics serving" not in line:
                continue
            with contextlib.suppress(orjson.JSONDecodeError):
                event = orjson.loads(line)
                if event.get("event") == "metrics serving":
                    self.ports[name] = int(event["port"])
                    return self.ports[name]
        return None

    def wait_serving(self, name: str, prometheus: Prometheus) -> int:
        proc = self.procs.get(name)
        wait_until(
            lambda: (
                self.metrics_port(name) is not None
                or (proc is not None and proc.poll() is not None)
            ),
            90,
            f"{name} serving metrics",
        )
        port = self.metrics_port(name)
        assert port is not None, self.tail(name)
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).is_success
        prometheus.set_targets(f"moodwire-{name}", [f"127.0.0.1:{port}"])
        return port

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def processes(settings: Settings, tmp_path: Path) -> Iterator[Processes]:
    prometheus_binary()  # skip before starting anything when it is missing
    running = Processes(settings, tmp_path)
    yield running
    running.stop()


@pytest.fixture
def prometheus(processes: Processes, tmp_path: Path) -> Iterator[Prometheus]:
    jobs = [f"moodwire-{name}" for name in ("process", "ingest", "alerts", "web")]
    root = tmp_path / "prometheus"
    root.mkdir()
    yield from start_prometheus(root, jobs, SCRAPE_S)


@pytest.fixture
def refuse_retry_posts(settings: Settings) -> Iterator[Callable[[bool], None]]:
    """Switch on/off a trigger that makes Postgres refuse this test's ``retry*`` posts:
    the worker's write fails on the server, as when a database is briefly unwritable."""
    engine = make_engine(settings)
    fn = f"refuse_{tag_of(settings).replace('-', '_')}"
    pattern = f"%.{tag_of(settings)}"

    def switch(on: bool) -> None:
        with engine.begin() as conn:
            if on:
                conn.execute(
                    text(
                        f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS "
                        "$$ BEGIN RAISE EXCEPTION 'metrics test: refused for now'; END $$"
                    )
                )
                conn.execute(
                    text(
                        f"CREATE TRIGGER {fn} BEFORE INSERT ON posts FOR EACH ROW WHEN "
                        f"(NEW.source_id LIKE 'retry%' AND NEW.source LIKE '{pattern}') "
                        f"EXECUTE FUNCTION {fn}()"
                    )
                )
            else:
                conn.execute(text(f"DROP TRIGGER IF EXISTS {fn} ON posts"))
                conn.execute(text(f"DROP FUNCTION IF EXISTS {fn}()"))

    yield switch
    switch(False)
    engine.dispose()


def count_posts(settings: Settings) -> int:
    """Rows of this test's posts (scored or not)."""
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            sql = "SELECT count(*) FROM posts WHERE source LIKE :s"
            return int(conn.scalar(text(sql), {"s": f"%.{tag_of(settings)}"}) or 0)
    finally:
        engine.dispose()


def post_lines(posts: list[dict[str, Any]]) -> bytes:
    return b"\n".join(orjson.dumps(p) for p in posts) + b"\n"


def test_every_promql_query_on_a_real_prometheus(
    settings: Settings,
    processes: Processes,
    prometheus: Prometheus,
    spawn_worker: Callable[..., Worker],
    refuse_retry_posts: Callable[[bool], None],
) -> None:
    started = time.time()
    worker = spawn_worker()  # metrics on port 0 (support.pipeline.worker_env)
    processes.adopt("process", worker)
    processes.start(
        "ingest",
        ["ingest", f"webhook://127.0.0.1:{processes.webhook_port}?insecure=1", "--quiet"],
    )
    processes.start("alerts", ["alerts"], MOODWIRE_ALERT_INTERVAL="1")
    processes.start("web", ["web", "--port", str(processes.web_port)])
    for name in ("process", "ingest", "alerts", "web"):
        processes.wait_serving(name, prometheus)
    wait_until(lambda: worker.assigned() is not None or not worker.alive(), 90, "worker joined")
    assert worker.alive(), worker.tail()

    tag = tag_of(settings)
    texts = real_tweets(GOOD + RETRIED)
    posts = post_dicts(texts, tag)
    first, retried = posts[:GOOD], posts[GOOD:]
    for post in retried:
        post["id"] = f"retry-{post['id']}"
    hook = f"http://127.0.0.1:{processes.webhook_port}/"
    headers = {"content-type": "application/x-ndjson"}
    bad = b"".join(b"{not json %d\n" % i for i in range(BAD_LINES))
    answer = httpx.post(hook, content=post_lines(first) + bad, headers=headers, timeout=60)
    assert answer.status_code == 400, answer.text  # the bad lines are listed, the rest sent
    produce(settings, [(None, b"\xff\xfe not a post %d" % i) for i in range(BAD_RAW)])
    version = serving_version()
    # Stored, not scored: a post the model does not read (another language) has no score.
    wait_until(lambda: count_posts(settings) >= GOOD, 120, "first batch stored")
    scored_first = count_scores(settings, version)
    assert scored_first > GOOD * 0.9

    # A batch Postgres refuses until the trigger goes: the worker retries and holds offsets.
    refuse_retry_posts(True)
    answer = httpx.post(hook, content=post_lines(retried), headers=headers, timeout=60)
    assert answer.status_code == 200, answer.text
    wait_until(
        lambda: total(scrape(processes.ports["process"]), "moodwire_sink_retries_total") >= 2,
        60,
        "the worker retrying the refused write",
    )
    assert count_posts(settings) == GOOD  # nothing of that batch got through
    refuse_retry_posts(False)
    wait_until(lambda: count_posts(settings) >= GOOD + RETRIED, 120, "the refused batch written")
    scored = count_scores(settings, version)
    for page in ("/", "/healthz", "/api/status", "/api/series?minutes=30"):
        assert httpx.get(f"http://127.0.0.1:{processes.web_port}{page}", timeout=30).is_success

    # The counters say what happened, exactly.
    worker_metrics = scrape(processes.ports["process"])
    assert total(worker_metrics, "moodwire_posts_scored_total") == scored
    assert total(worker_metrics, "moodwire_dead_letters_total", stage="process") == BAD_RAW
    assert total(worker_metrics, "moodwire_sink_wait_seconds_total") > 0
    info = [labels for (n, labels), _ in worker_metrics.items() if n == "moodwire_model_info"]
    assert dict(info[0])["model_version"] == version
    ingest_metrics = scrape(processes.ports["ingest"])
    sent = total(ingest_metrics, "moodwire_ingest_records_total", outcome="sent")
    assert sent == GOOD + RETRIED
    assert total(ingest_metrics, "moodwire_dead_letters_total", stage="ingest") == BAD_LINES
    web_metrics = scrape(processes.ports["web"])
    assert total(web_metrics, "moodwire_http_requests_total", route="/healthz", status="200") >= 1

    # Every dashboard expression, as Grafana sends it, over this test's time range.
    dashboards = prom_dashboards()
    assert dashboards, "no dashboard uses Prometheus"
    failures: dict[str, str] = {}
    deadline = time.monotonic() + 90
    while True:
        failures = {}
        end = time.time()
        range_s = end - started
        for path in dashboards:
            dashboard = json.loads(path.read_text())
            variables = grafana_variables(prometheus, dashboard)
            for where, target in prom_targets(dashboard):
                expr = expand_promql(
                    target["expr"],
                    variables,
                    interval_s=SCRAPE_S,
                    scrape_interval_s=SCRAPE_S,
                    range_s=range_s,
                )
                result = prometheus.query_range(expr, started, end, SCRAPE_S)
                if not finite_values(result):
                    failures[f"{path.name} {where}"] = expr
        if not failures or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert not failures, f"PromQL with no finite result: {failures}\n{prometheus.targets_up()}"

    # Prometheus holds the same totals as the processes.
    query = 'sum(moodwire_posts_scored_total{job="moodwire-process"})'
    in_prometheus = prometheus.api("query", query=query)
    assert float(in_prometheus["result"][0]["value"][1]) == scored
    assert set(prometheus.targets_up().values()) == {"up"}


def grafana_variables(prometheus: Prometheus, dashboard: dict[str, Any]) -> dict[str, list[str]]:
    """Each query variable's options, from its ``label_values(metric, label)`` query, as
    Grafana's Prometheus data source asks for them; "All" selects every option."""
    out: dict[str, list[str]] = {}
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        inner = query.removeprefix("label_values(").removesuffix(")")
        assert inner != query, f"unsupported variable query {query!r}"
        metric, label = (part.strip() for part in inner.rsplit(",", 1))
        options = prometheus.label_values(label, metric)
        assert options, f"variable {variable['name']}: {query} offers nothing"
        out[variable["name"]] = options
    return out
