"""The ONE place where moodwire changes Faust's internals (faust-streaming 0.15.3).

Measured on this machine (``/work/shared/notes/broker.md``, and ``bench/`` here), stock
Faust spends most of a worker's CPU outside the agent. These changes, all keeping Faust's
at-least-once semantics, cut it:

1. ``Consumer._drain_messages`` (the fetch loop) hands each message to the conductor with
   ``await self.wait_first(callback(message), self.suspend_flow.wait())``: four asyncio
   tasks and an ``asyncio.wait`` per message, about a third of the worker's time. The
   callback almost never blocks (it puts the event on a stream's queue), so the patched
   loop runs it directly, one step, and only when it really suspends (queue full, flow
   control) does it continue it under the very same ``wait_first`` race as stock Faust.
   The loop still yields to the event loop after every message.
2. Faust builds its aiokafka consumer with ``fetch_max_wait_ms=1500`` hard-coded, and the
   worker also reads its always-empty ``<app>-__assignor-__leader`` topic: a fetch for
   only that partition sits on the broker for 1.5 s while data waits. The patched factory
   sets ``settings.fetch_max_wait_ms`` (50 ms by default).

3. At start-up, every ``@app.agent`` registers itself for autodiscovery with venusian,
   which walks ``sys.modules`` resolving real paths (``inspect.getmodule``): 0.3 s per
   agent once torch is imported, for a scan moodwire never runs (``autodiscover=False``).
   The patched ``faust.utils.venusian.attach`` does nothing. (Reading the source the
   other patches check is done from ``linecache`` for the same reason.)

4. ``TableManager.on_start`` sleeps one second (time for tables to be declared) before
   the conductor may subscribe, so every worker joins its group a second late. moodwire
   declares no tables; with none declared, the patched start skips the sleep.

5. Faust's Monitor sensor records every message and stream event (dicts, deques, a
   timestamp each) for statistics only its web views show; moodwire reports through its
   own metrics. :func:`quiet_monitor` is a Monitor whose per-message hooks do nothing (its
   per-commit and per-send hooks stay stock), given to the app by ``create_app``.

6. The conductor's per-partition handler (``Conductor._build_handler``) decodes every
   message through the topic's schema and serializer registry, reads ``app.conf.Event``
   through Faust's settings registry, and waits on the producer buffer that only table
   changelogs fill, for each message: about a third of the fetch loop's time. For a
   partition with one subscriber whose schema is raw bytes both ways, and an app with no
   tables, the patched handler makes the same event directly (key and value as the
   broker sent them, which is what the raw schema returns) and queues it with the same
   flow control, reference count and back-pressure as stock; anything else (several
   subscribers, another schema, a null key or value, tables) goes to the stock handler.

Each patch checks that the code it replaces is the code it was written against and
refuses (logging why, leaving Faust stock) otherwise; ``tests/process/test_faust_patches.py``
proves both still apply and a worker still consumes with them.
"""

from __future__ import annotations

import asyncio
import inspect
import linecache
from collections.abc import Coroutine, Generator
from typing import Any

from moodwire.logs import get_logger

log = get_logger(__name__)

FAUST_VERSION = "0.15.3"
_STOCK_DISPATCH = "await self.wait_first(\n                                callback(message)"
_STOCK_FETCH_WAIT = "fetch_max_wait_ms=1500"

_applied: dict[str, bool] = {}
_fetch_max_wait_ms = 50


class _Continue:
    """Awaitable that continues a coroutine already advanced to its first suspension."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, to_yield = self._coro, self._first
        while True:
            try:
                sent = yield to_yield
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation included: pass it on
                try:
                    to_yield = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    to_yield = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def _continue(coro: Coroutine[Any, Any, Any], first: Any) -> Any:
    return await _Continue(coro, first)


async def _drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover - hot loop
    """Faust 0.15.3 ``Consumer._drain_messages`` with the per-message dispatch of patch 1."""
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    from faust.transport.consumer import CONSUMER_FETCHING

    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    suspend_flow = self.suspend_flow
    sleep = asyncio.sleep
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            ait = getmany(timeout=1.0)
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        coro = callback(message)
                        try:
                            first = coro.send(None)
                        except StopIteration:
                            pass  # delivered without suspending: the common case
                        else:
                            await self.wait_first(_continue(coro, first), suspend_flow.wait())
                        set_read_offset(tp, offset)
                        # Let the agent, heartbeats and commits run between messages.
                        await sleep(0)
                    else:
                        self.log.dev("DROPPED MESSAGE ROFF %r", offset)
                unset_flag(CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)


def _source(func: Any) -> str:
    """``inspect.getsource`` without its ``inspect.getmodule`` walk over ``sys.modules``
    (half a second once torch is imported)."""
    code = func.__code__
    lines = linecache.getlines(code.co_filename)
    return "".join(inspect.getblock(lines[code.co_firstlineno - 1 :]))


def _noop_attach(*args: Any, **kwargs: Any) -> None:
    """Autodiscovery registration, skipped: moodwire's app never scans (patch 3)."""


def _patch_scan() -> bool:
    from faust.utils import venusian

    current = venusian.attach
    if current is _noop_attach:
        return True
    if "_attach(fun, callback, category=category" not in _source(current):
        log.warning("faust patch skipped: faust.utils.venusian.attach is not the 0.15.3 code")
        return False
    venusian.attach = _noop_attach
    return True


async def _tables_on_start(self: Any) -> None:
    """Faust 0.15.3 ``TableManager.on_start`` without its 1 s sleep when no table exists
    (patch 4); with tables it sleeps as stock Faust does."""
    if len(self):
        await self.sleep(1.0)
    if not self.should_stop:
        await self._update_channels()
        await self.recovery.start()


def _replace_method(owner: type, name: str, patched: Any, markers: tuple[str, ...]) -> bool:
    """``owner.name = patched`` if its code still holds every marker of the 0.15.3 code it
    was written against (idempotent); else leave it stock, say why, and return False."""
    current = getattr(owner, name)
    if current is patched:
        return True
    source = _source(current)
    if not all(marker in source for marker in markers):
        log.warning("faust patch skipped: %s.%s is not the 0.15.3 code", owner.__name__, name)
        return False
    setattr(owner, name, patched)
    return True


def _patch_tables_start() -> bool:
    from faust.tables.manager import TableManager

    return _replace_method(
        TableManager, "on_start", _tables_on_start, ("await self.sleep(1.0)", "recovery.start()")
    )


def _patch_dispatch() -> bool:
    from faust.transport.consumer import Consumer

    return _replace_method(Consumer, "_drain_messages", _drain_messages, (_STOCK_DISPATCH,))


def _patch_fetch_wait() -> bool:
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    current = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(current, "_moodwire_patched", False):
        return True
    if _STOCK_FETCH_WAIT not in _source(current):
        log.warning("faust patch skipped: the worker consumer factory is not the 0.15.3 code")
        return False

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = current(self, transport)
        # Read by AIOKafkaConsumer.start() when it builds its Fetcher.
        consumer._fetch_max_wait_ms = _fetch_max_wait_ms
        return consumer

    create_worker_consumer._moodwire_patched = True  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]
    return True


_STOCK_HANDLER = "ConductorHandler(self, tp, channels)"
_stock_build: Any = None


def _raw_both_ways(channel: Any) -> bool:
    from faust.serializers.schemas import Schema

    schema = getattr(channel, "schema", None)
    return (
        type(schema) is Schema
        and schema.key_type is bytes
        and schema.value_type is bytes
        and schema.key_serializer == "raw"
        and schema.value_serializer == "raw"
    )


def _build_handler(self: Any, tp: Any, channels: Any) -> Any:
    """Faust 0.15.3 ``Conductor._build_handler`` with the lean path of patch 6 in front of
    the stock handler (Faust's compiled ``ConductorHandler`` or its Python twin)."""
    stock = _stock_build(self, tp, channels)
    app = self.app
    if len(app.tables):
        return stock
    acquire_flow_control = app.flow_control.acquire
    consumer_on_buffer_full = app.consumer.on_buffer_full
    consumer_on_buffer_drop = app.consumer.on_buffer_drop
    on_topic_buffer_full = app.sensors.on_topic_buffer_full
    event_type = app.conf.Event
    checked: list[Any] = [None]  # the one channel last found raw both ways

    def on_pressure_high() -> None:
        on_topic_buffer_full(tp)
        consumer_on_buffer_full(tp)

    def on_pressure_drop() -> None:
        consumer_on_buffer_drop(tp)

    async def on_message(message: Any) -> None:  # pragma: no cover - hot path
        # ``channels`` is Faust's live set for this partition: checked at every message.
        if len(channels) != 1 or message.key is None or message.value is None:
            return await stock(message)  # type: ignore[no-any-return]
        chan = next(iter(channels))
        if chan is not checked[0]:
            if not _raw_both_ways(chan):
                return await stock(message)  # type: ignore[no-any-return]
            checked[0] = chan
        await acquire_flow_control()
        message.incref(1)
        event = event_type(app, message.key, message.value, message.headers, message)
        queue = chan.queue
        if queue.full():
            on_topic_buffer_full(tp)
            await chan.put(event)
        else:
            queue.put_nowait_enhanced(
                event, on_pressure_high=on_pressure_high, on_pressure_drop=on_pressure_drop
            )
        return None

    return on_message


def _patch_handler() -> bool:
    global _stock_build
    from faust.transport.conductor import Conductor

    current = Conductor._build_handler
    if current is not _build_handler:
        _stock_build = current  # what the lean handler falls back to
    return _replace_method(Conductor, "_build_handler", _build_handler, (_STOCK_HANDLER,))


def quiet_monitor() -> Any:
    """A faust Monitor without per-message bookkeeping (patch 5)."""
    from faust.sensors.monitor import Monitor

    class QuietMonitor(Monitor):
        def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
            return None

        def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
            return None

        def on_stream_event_out(
            self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
        ) -> None:
            return None

        def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
            return None

    return QuietMonitor()


def apply(fetch_max_wait_ms: int = 50) -> dict[str, bool]:
    """Apply the patches (idempotent); returns which ones are in force."""
    global _fetch_max_wait_ms
    _fetch_max_wait_ms = fetch_max_wait_ms
    import faust

    if faust.__version__ != FAUST_VERSION:
        log.warning(
            "faust patches written for %s, found %s; checking the code itself",
            FAUST_VERSION,
            faust.__version__,
        )
    _applied["dispatch"] = _patch_dispatch()
    _applied["fetch_wait"] = _patch_fetch_wait()
    _applied["no_scan"] = _patch_scan()
    _applied["no_table_wait"] = _patch_tables_start()
    _applied["lean_handler"] = _patch_handler()
    return dict(_applied)


def applied() -> dict[str, bool]:
    return dict(_applied)


__all__ = ["FAUST_VERSION", "applied", "apply", "quiet_monitor"]
