"""A local Hacker News Firebase API for hn:// tests and demos: ``/maxitem`` and items.

Serves ``GET /v0/maxitem.json`` (the highest id it holds, or one set by hand) and
``GET /v0/item/<id>.json`` (the item's JSON, ``null`` for an id it does not hold, as
Firebase does) on 127.0.0.1. Items can be added while it runs (:meth:`HackerNewsServer.add`),
answered ``null`` for their first K requests (:meth:`HackerNewsServer.null_for`, an item not
yet propagated), replaced by raw bytes (:meth:`HackerNewsServer.set_raw`, malformed JSON),
and the next requests can fail with a 5xx (:meth:`HackerNewsServer.fail_next`). Every request
is kept in :attr:`HackerNewsServer.requests`.

Try the connector against a JSON list (or JSON Lines) of items::

    python -m moodwire.connectors.kit.hn_server --capture items.json --port 8742
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from moodwire.connectors.kit.serving import ThreadedServer


@dataclass
class SeenRequest:
    path: str
    at: float = field(default_factory=time.monotonic)
    status: int = 200


class HackerNewsServer(ThreadedServer):
    thread_name = "hn-server"
    url_path = "/v0"

    def __init__(self, items: Iterable[Mapping[str, Any]] = (), *, port: int = 0) -> None:
        super().__init__(port)
        self.requests: list[SeenRequest] = []
        self.maxitem: int | None = None
        self._items: dict[int, bytes] = {}
        self._nulls: dict[int, int] = {}
        self._faults: list[int] = []
        self._lock = threading.Lock()
        for item in items:
            self.add(item)

    # --- content and faults ------------------------------------------------------------

    def add(self, item: Mapping[str, Any]) -> None:
        """Publish an item (``{"id": N, "type": ..., ...}``)."""
        with self._lock:
            self._items[int(item["id"])] = orjson.dumps(dict(item))

    def set_raw(self, item_id: int, body: bytes) -> None:
        """Answer ``body`` as the item's JSON, whatever it is."""
        with self._lock:
            self._items[item_id] = body

    def null_for(self, item_id: int, times: int) -> None:
        """The item answers ``null`` for its next ``times`` requests."""
        with self._lock:
            self._nulls[item_id] = times

    def fail_next(self, status: int = 503, count: int = 1) -> None:
        with self._lock:
            self._faults.extend([status] * count)

    def item_requests(self, item_id: int | None = None) -> list[SeenRequest]:
        wanted = "/v0/item/" if item_id is None else f"/v0/item/{item_id}.json"
        return [r for r in list(self.requests) if r.path.startswith(wanted)]

    def requested_ids(self) -> list[int]:
        return [int(r.path.rsplit("/", 1)[1].split(".")[0]) for r in self.item_requests()]

    # --- HTTP --------------------------------------------------------------------------

    def _fault(self, seen: SeenRequest) -> web.Response | None:
        with self._lock:
            status = self._faults.pop(0) if self._faults else None
        if status is None:
            return None
        seen.status = status
        return web.json_response({"error": "fault"}, status=status)

    async def _maxitem(self, request: web.Request) -> web.Response:
        seen = SeenRequest(request.path)
        self.requests.append(seen)
        fault = self._fault(seen)
        if fault is not None:
            return fault
        with self._lock:
            top = self.maxitem if self.maxitem is not None else max(self._items, default=0)
        return web.Response(body=orjson.dumps(top), content_type="application/json")

    async def _item(self, request: web.Request) -> web.Response:
        seen = SeenRequest(request.path)
        self.requests.append(seen)
        fault = self._fault(seen)
        if fault is not None:
            return fault
        try:
            item_id = int(request.match_info["id"])
        except ValueError:
            return web.json_response({"error": "bad id"}, status=400)
        with self._lock:
            body = self._items.get(item_id, b"null")
            if self._nulls.get(item_id, 0) > 0:
                self._nulls[item_id] -= 1
                body = b"null"
        return web.Response(body=body, content_type="application/json")

    # --- lifecycle ---------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v0/maxitem.json", self._maxitem)
        app.router.add_get("/v0/item/{id}.json", self._item)
        return app


def load_items(path: Path) -> list[dict[str, Any]]:
    """Items from a JSON list or JSON Lines file."""
    data = path.read_bytes()
    try:
        loaded = orjson.loads(data)
    except orjson.JSONDecodeError:
        return [orjson.loads(line) for line in data.splitlines() if line.strip()]
    return list(loaded) if isinstance(loaded, list) else [loaded]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--capture", type=Path, required=True, help="JSON list / JSONL of items")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    items = load_items(args.capture)
    server = HackerNewsServer(items, port=args.port)
    url = server.start()
    first = min((int(i["id"]) for i in items), default=1)
    print(f"serving {len(items)} items on {url}", flush=True)
    print(f"moodwire ingest 'hn://?api={url}&start={first}&interval=1'", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
