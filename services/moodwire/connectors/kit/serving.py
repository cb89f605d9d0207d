"""The kit servers' common part: an aiohttp app on 127.0.0.1, served from a thread."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Self

from aiohttp import web


class ThreadedServer:
    """Subclasses give :meth:`_app` (and may set ``scheme``, ``url_path``,
    ``shutdown_timeout``, ``thread_name``, and override :meth:`_before_cleanup`)."""

    thread_name = "kit-server"
    scheme = "http"
    url_path = ""
    # aiohttp waits this long for open handlers at cleanup: a stream handler never ends.
    shutdown_timeout = 60.0

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def _app(self) -> web.Application:
        raise NotImplementedError

    async def _before_cleanup(self) -> None:
        """Runs on the server's loop once it stopped, before the runner's cleanup: end
        what would hold the cleanup (open streams, sockets)."""

    def start(self) -> str:
        """Serve in a background thread; returns the base URL (``{scheme}://127.0.0.1:PORT``
        and ``url_path``)."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                runner = web.AppRunner(
                    self._app(), access_log=None, shutdown_timeout=self.shutdown_timeout
                )
                loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, "127.0.0.1", self.port)
                loop.run_until_complete(site.start())
                self._runner = runner
                self.url = f"{self.scheme}://127.0.0.1:{runner.addresses[0][1]}{self.url_path}"
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._before_cleanup())
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name=self.thread_name, daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self.url

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop = None
        self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
