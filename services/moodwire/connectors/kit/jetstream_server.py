"""A local Bluesky Jetstream (v1 and v2) for bluesky:// tests and demos, replaying JSONL events.

Serves WebSocket ``/subscribe`` (v1: each event's JSON line as a text frame, verbatim;
``cursor`` = time_us, events with ``time_us >= cursor`` are sent) and
``/xrpc/network.bsky.jetstream.subscribeEvents`` (v2, sub-protocol ``xrpc.v1.json``: each
event wrapped as ``{"$type": "message", "payload": {..., "seq": N}}`` with N = 1..len; the
cursor is inclusive, ``seq >= cursor``) on 127.0.0.1. Without a cursor everything is
replayed; afterwards the connection stays open and idle, as the real firehose does, and
events added with :meth:`JetstreamServer.add` are sent as they come.

Faults for the next connection(s): :meth:`refuse` (HTTP 503 or 429 with ``Retry-After``),
:meth:`close_after` (abrupt TCP close after N events), :meth:`silent_after` (stay open,
send nothing more), :meth:`malformed_at` (a bad frame after N events). Every connection
attempt is kept in :attr:`JetstreamServer.connections` (path, query, headers, status).

Try the connector against a capture::

    python -m moodwire.connectors.kit.jetstream_server --capture events.jsonl --port 8743
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from moodwire.connectors.kit.serving import ThreadedServer

PATH_V1 = "/subscribe"
PATH_V2 = "/xrpc/network.bsky.jetstream.subscribeEvents"
SUBPROTOCOL_V2 = "xrpc.v1.json"


@dataclass
class SeenConnection:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)
    #: 101 for an accepted WebSocket, else the refusal's status.
    status: int = 101
    #: Events (not counting injected frames) sent on this connection.
    sent: int = 0

    @property
    def cursor(self) -> int | None:
        raw = self.query.get("cursor")
        return int(raw) if raw is not None and raw.lstrip("-").isdigit() else None


@dataclass
class _Plan:
    close_after: int | None = None
    silent_after: int | None = None
    malformed_at: int | None = None
    malformed: bytes = b'{"did": "did:plc:broken", "kind": "commit", "commit": {'


class JetstreamServer(ThreadedServer):
    thread_name = "jetstream-server"
    scheme = "ws"
    shutdown_timeout = 0.5

    def __init__(self, events: Iterable[Mapping[str, Any] | bytes] = (), *, port: int = 0) -> None:
        super().__init__(port)
        self.connections: list[SeenConnection] = []
        self._frames: list[bytes] = []
        self._times: list[int | None] = []
        self._refusals: list[tuple[int, str | None]] = []
        self._plans: list[_Plan] = []
        self._lock = threading.Lock()
        for event in events:
            self.add(event)
        self._transports: set[asyncio.Transport] = set()

    @classmethod
    def from_capture(cls, path: Path, *, port: int = 0) -> JetstreamServer:
        """Events from a JSONL file, each line kept byte for byte."""
        lines = [line for line in path.read_bytes().splitlines() if line.strip()]
        return cls(lines, port=port)

    # --- content and faults ------------------------------------------------------------

    def add(self, event: Mapping[str, Any] | bytes) -> None:
        """Publish an event (a dict, or a frame's exact bytes); live connections get it."""
        frame = event if isinstance(event, bytes) else orjson.dumps(dict(event))
        time_us: int | None = None
        try:
            parsed = orjson.loads(frame)
            value = parsed.get("time_us") if isinstance(parsed, dict) else None
            time_us = value if isinstance(value, int) else None
        except orjson.JSONDecodeError:
            pass
        with self._lock:
            self._frames.append(frame)
            self._times.append(time_us)

    @property
    def events(self) -> int:
        with self._lock:
            return len(self._frames)

    def refuse(self, status: int = 503, count: int = 1, retry_after: float | None = None) -> None:
        """Answer the next ``count`` connection attempts with HTTP ``status``."""
        header = None if retry_after is None else f"{retry_after:g}"
        with self._lock:
            self._refusals.extend([(status, header)] * count)

    def close_after(self, events: int) -> None:
        """The next connection is dropped (TCP reset, no close frame) after ``events``."""
        self._plan().close_after = events

    def silent_after(self, events: int) -> None:
        """The next connection goes silent (open, nothing sent) after ``events``."""
        self._plan().silent_after = events

    def malformed_at(self, events: int, frame: bytes | None = None) -> None:
        """The next connection gets a malformed frame after ``events`` events."""
        plan = self._plan()
        plan.malformed_at = events
        if frame is not None:
            plan.malformed = frame

    def _plan(self) -> _Plan:
        # Faults set before a connection all apply to that same next connection.
        with self._lock:
            if not self._plans:
                self._plans.append(_Plan())
            return self._plans[-1]

    def accepted(self) -> list[SeenConnection]:
        return [c for c in list(self.connections) if c.status == 101]

    # --- WebSocket ---------------------------------------------------------------------

    async def _v1(self, request: web.Request) -> web.StreamResponse:
        return await self._subscribe(request, v2=False)

    async def _v2(self, request: web.Request) -> web.StreamResponse:
        return await self._subscribe(request, v2=True)

    async def _subscribe(self, request: web.Request, *, v2: bool) -> web.StreamResponse:
        seen = SeenConnection(request.path, dict(request.query), dict(request.headers))
        self.connections.append(seen)
        with self._lock:
            refusal = self._refusals.pop(0) if self._refusals else None
        if refusal is not None:
            seen.status, retry_after = refusal
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            return web.Response(status=seen.status, text="try again later", headers=headers)
        with self._lock:
            plan = self._plans.pop(0) if self._plans else _Plan()
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL_V2,) if v2 else (), compress=False)
        await ws.prepare(request)
        transport = request.transport
        if transport is not None:
            self._transports.add(transport)
        reader = asyncio.ensure_future(self._drain(ws))
        try:
            await self._replay(ws, seen, plan, transport, reader, v2=v2)
        finally:
            reader.cancel()
            if transport is not None:
                self._transports.discard(transport)
        return ws

    async def _drain(self, ws: web.WebSocketResponse) -> None:
        async for _ in ws:  # the client sends nothing we need; this notices its close
            pass

    async def _replay(
        self,
        ws: web.WebSocketResponse,
        seen: SeenConnection,
        plan: _Plan,
        transport: asyncio.Transport | None,
        reader: asyncio.Future[None],
        *,
        v2: bool,
    ) -> None:
        cursor = seen.cursor
        index = 0
        while not ws.closed and not reader.done():
            if plan.malformed_at is not None and seen.sent >= plan.malformed_at:
                plan.malformed_at = None
                await ws.send_str(plan.malformed.decode("utf-8", "replace"))
            if plan.close_after is not None and seen.sent >= plan.close_after:
                if transport is not None:
                    transport.abort()
                return
            if plan.silent_after is not None and seen.sent >= plan.silent_after:
                await reader
                return
            with self._lock:
                ready = index < len(self._frames)
                frame = self._frames[index] if ready else b""
                time_us = self._times[index] if ready else None
            if not ready:
                await asyncio.sleep(0.02)
                continue
            index += 1
            if v2:
                if cursor is not None and index < cursor:
                    continue
                data = _wrap_v2(frame, index)
            else:
                if cursor is not None and (time_us is None or time_us < cursor):
                    continue
                data = frame
            await ws.send_str(data.decode("utf-8", "replace"))
            seen.sent += 1

    # --- lifecycle ---------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(PATH_V1, self._v1)
        app.router.add_get(PATH_V2, self._v2)
        return app

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, the host part of a ``bluesky://`` URL."""
        return self.url.split("://", 1)[-1]

    async def _before_cleanup(self) -> None:
        for transport in list(self._transports):
            transport.abort()


def _wrap_v2(frame: bytes, seq: int) -> bytes:
    """A v1 event as a v2 message; a frame that is no JSON object is sent as it is."""
    try:
        event = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return frame
    if not isinstance(event, dict):
        return frame
    kind = event.get("kind") if isinstance(event.get("kind"), str) else "event"
    payload = {"$type": f"network.bsky.jetstream.subscribeEvents#{kind}", **event, "seq": seq}
    return orjson.dumps({"$type": "message", "payload": payload})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--capture", type=Path, required=True, help="JSONL file of v1 events")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = JetstreamServer.from_capture(args.capture, port=args.port)
    server.start()
    print(f"serving {server.events} events on {server.url} (v1 and v2)", flush=True)
    print(f"moodwire ingest 'bluesky://{server.address}?tls=0'", flush=True)
    print(f"moodwire ingest 'bluesky://{server.address}?tls=0&protocol=v2'", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
