"""The FastAPI app of ``moodwire web``: JSON endpoints and the live page.

Endpoints (all read-only): ``/healthz``; ``/api/status`` (``moodwire.status.collect`` plus
``posts_per_second``: posts counted in the aggregates per second, sampled every 2 s);
``/api/series`` (per-brand per-minute counts and mean score from the Redis aggregates,
the last N minutes of event time); ``/api/alerts``; ``/api/posts``; and ``/``, the page,
with its script and styles under ``/static``. A server that is down gives a 503 with one
line of why; the page shows it and keeps polling.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import redis
from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import SQLAlchemyError

from moodwire import metrics
from moodwire.aggregates.keys import ALL_BRANDS, NO_BRAND, Bucket
from moodwire.aggregates.redis_copy import RedisCopy
from moodwire.alerts import series as minute_series
from moodwire.alerts import store as alert_store
from moodwire.api import security
from moodwire.api.queries import recent_posts
from moodwire.api.rate import RateMeter
from moodwire.brands import BrandMatcher, BrandsFileError
from moodwire.db.engine import make_engine
from moodwire.logs import get_logger
from moodwire.redis_client import connect
from moodwire.settings import MissingServerError, Settings
from moodwire.status import collect, serving_model_version

STATIC = Path(__file__).with_name("static")
log = get_logger(__name__)
# What a client is told about a server it cannot reach: which one, never its error text
# (that names hosts, ports, users and SQL; the log has it).
UNAVAILABLE = {
    SQLAlchemyError: "PostgreSQL unavailable",
    redis.RedisError: "Redis unavailable",
    MissingServerError: "a server is not configured",
}
# Hashing the model files on every request would cost more than the request itself.
VERSION_TTL_S = 10.0
# How often the app reads the counted-posts total for its posts/s figure.
RATE_SAMPLE_S = 2.0


class _Cached:
    """A value recomputed at most every ``ttl`` seconds."""

    def __init__(self, compute: Callable[[], str | None], ttl: float) -> None:
        self._compute = compute
        self._ttl = ttl
        self._at = -ttl
        self._value: str | None = None

    def get(self) -> str | None:
        if time.monotonic() - self._at >= self._ttl:
            self._value = self._compute()
            self._at = time.monotonic()
        return self._value


def _display_names(settings: Settings) -> dict[str, str]:
    try:
        matcher = BrandMatcher.from_settings(settings)
    except BrandsFileError:
        return {}
    names = matcher.display_names
    names[NO_BRAND] = "No brand"
    names[ALL_BRANDS] = "All posts"
    return names


def _series_json(buckets: dict[int, Bucket], minutes: list[int]) -> dict[str, Any]:
    rows = [buckets.get(m) for m in minutes]
    return {
        "n": [b.n if b else 0 for b in rows],
        "neg": [b.neg if b else 0 for b in rows],
        "neu": [b.neu if b else 0 for b in rows],
        "pos": [b.pos if b else 0 for b in rows],
        "mean_score": [round(b.score_sum / b.n, 4) if b and b.n else None for b in rows],
    }


def create_app(settings: Settings, bind_host: str | None = None) -> FastAPI:
    """The app; ``bind_host`` (default: the setting) joins the Host names it answers to."""
    state: dict[str, Any] = {}
    # Handlers run on a thread pool, beside the rate sampler: one lock so that two first
    # requests do not each open (and one leak) an engine or a Redis client.
    opening = threading.Lock()
    version = _Cached(lambda: serving_model_version(settings.model_path), VERSION_TTL_S)
    rate = RateMeter()
    names = _display_names(settings)

    def display(brand: str) -> str:
        return names.get(brand, brand)

    def engine() -> Any:
        with opening:
            if "engine" not in state:
                state["engine"] = make_engine(settings, pool_size=2, max_overflow=2)
            return state["engine"]

    def client() -> redis.Redis:
        with opening:
            if "redis" not in state:
                state["redis"] = connect(settings)
            redis_client: redis.Redis = state["redis"]
            return redis_client

    def sample_rate(stop: threading.Event) -> None:
        # Sampled here rather than per request, so the first page load has a rate too.
        while not stop.is_set():
            mv = version.get()
            if mv is not None:
                with contextlib.suppress(redis.RedisError, MissingServerError):
                    everything = RedisCopy(client()).totals(mv).get(ALL_BRANDS)
                    rate.observe(everything.n if everything else 0)
            stop.wait(RATE_SAMPLE_S)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        sampler = threading.Thread(
            target=sample_rate, args=(stop,), name="moodwire-rate", daemon=True
        )
        sampler.start()
        yield
        stop.set()
        sampler.join(timeout=5)
        if "engine" in state:
            state.pop("engine").dispose()
        if "redis" in state:
            state.pop("redis").close()

    # No Swagger UI: it loads its assets from a CDN, and the page must work offline.
    app = FastAPI(
        title="moodwire",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    bind = settings.web_api_host if bind_host is None else bind_host
    security.install(app, settings, bind, STATIC)

    @app.middleware("http")
    async def _count(request: Request, call_next: Any) -> Any:
        started = time.perf_counter()
        response = await call_next(request)
        metrics.observe_request(request.scope, response.status_code, started)
        return response

    @app.exception_handler(SQLAlchemyError)
    @app.exception_handler(redis.RedisError)
    @app.exception_handler(MissingServerError)
    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        log.warning("server unavailable", extra={"path": request.url.path, "error": first})
        kind = next(text for cls, text in UNAVAILABLE.items() if isinstance(exc, cls))
        return JSONResponse({"error": kind}, status_code=503)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed", extra={"path": request.url.path})
        return JSONResponse({"error": "internal error"}, status_code=500)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/status")
    def status() -> dict[str, Any]:
        try:  # the app's own connections: no new ones on every poll of the page
            shared: dict[str, Any] = {"engine": engine(), "client": client()}
        except MissingServerError:  # collect names the missing URL among its errors
            shared = {}
        figures = collect(settings, version.get(), **shared)
        # Which server could not be read, not its error text (see UNAVAILABLE).
        figures["errors"] = [f"{e.split(':', 1)[0]}: unavailable" for e in figures["errors"]]
        figures["posts_per_second"] = rate.rate
        figures["display_names"] = {b: display(b) for b in figures["brands"]}
        figures["refresh_seconds"] = settings.web_refresh_seconds
        return figures

    @app.get("/api/series")
    def series(
        minutes: int = Query(60, ge=1, le=1440, description="Minutes of event time."),
        source: str | None = Query(None, description="Only this source (default: all)."),
    ) -> dict[str, Any]:
        mv = version.get()
        out: dict[str, Any] = {"model_version": mv, "watermark": None, "minutes": []}
        out.update(brands={}, all=None, sources=[])
        if mv is None:
            return out
        r = client()
        out["sources"] = minute_series.sources(r, mv)
        watermark = minute_series.newest_minute(r, mv)
        if watermark is None:
            return out
        end = watermark + minute_series.MINUTE
        axis = list(range(end - minutes * minute_series.MINUTE, end, minute_series.MINUTE))
        data = minute_series.read_minutes(r, mv, axis[0], end, source=source)
        everything = data.pop(ALL_BRANDS, {})
        ranked = sorted(data, key=lambda b: (-sum(x.n for x in data[b].values()), b))
        out.update(watermark=watermark, minutes=axis, all=_series_json(everything, axis))
        out["brands"] = {b: {"display": display(b), **_series_json(data[b], axis)} for b in ranked}
        return out

    @app.get("/api/alerts")
    def alerts(
        limit: int = Query(20, ge=1, le=500),
        brand: str | None = None,
        open: bool = Query(False, description="Only alerts not acknowledged yet."),
    ) -> dict[str, Any]:
        # Each alert with its state (acked_at / acked_by) and per-channel deliveries.
        with engine().connect() as conn:
            rows = alert_store.recent(
                conn, limit=limit, brand=brand, open_only=open, with_deliveries=True
            )
        for row in rows:
            row["display"] = display(row["brand"])
        return {"alerts": rows}

    @app.get("/api/posts")
    def posts(
        brand: str | None = None,
        sentiment: Literal["negative", "neutral", "positive"] | None = None,
        limit: int = Query(20, ge=1, le=500),
    ) -> dict[str, Any]:
        mv = version.get()
        if mv is None:
            return {"model_version": None, "posts": []}
        with engine().connect() as conn:
            rows = recent_posts(conn, mv, brand=brand or None, sentiment=sentiment, limit=limit)
        return {"model_version": mv, "posts": rows}

    return app
