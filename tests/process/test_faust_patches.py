"""moodwire.process.faust_patches still applies to, and works on, the installed Faust."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import faust
from faust.transport.consumer import Consumer

from moodwire.process import faust_patches


def test_the_patches_apply_to_the_installed_faust() -> None:
    assert faust_patches.apply(42) == {
        "dispatch": True,
        "fetch_wait": True,
        "no_scan": True,
        "no_table_wait": True,
        "lean_handler": True,
    }
    assert Consumer._drain_messages is faust_patches._drain_messages
    # Idempotent: a second apply neither fails nor wraps twice.
    assert faust_patches.apply(42) == {
        "dispatch": True,
        "fetch_wait": True,
        "no_scan": True,
        "no_table_wait": True,
        "lean_handler": True,
    }


def test_worker_consumer_gets_the_configured_fetch_wait() -> None:
    faust_patches.apply(42)

    async def build() -> int:
        app = faust.App(
            "patch-check", broker="kafka://127.0.0.1:1", autodiscover=False, web_enabled=False
        )
        consumer = app.consumer._thread._create_worker_consumer(app.transport)  # type: ignore[attr-defined]
        wait = int(consumer._fetch_max_wait_ms)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            del consumer  # never started: nothing to close
        return wait

    assert asyncio.run(build()) == 42


def test_a_callback_that_suspends_is_continued_correctly() -> None:
    """The slow path: a dispatch that blocks (full queue) finishes under a task, like stock."""

    async def main() -> tuple[Any, list[str]]:
        gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        trace: list[str] = []

        async def callback() -> str:
            trace.append("start")
            await asyncio.sleep(0)
            trace.append("after-yield")
            value = await gate
            trace.append("done")
            return value

        coro = callback()
        first = coro.send(None)  # what the patched loop does: one synchronous step
        task = asyncio.ensure_future(faust_patches._continue(coro, first))
        await asyncio.sleep(0.01)
        assert trace == ["start", "after-yield"] and not task.done()
        gate.set_result("delivered")
        return await task, trace

    result, trace = asyncio.run(main())
    assert result == "delivered"
    assert trace == ["start", "after-yield", "done"]


def test_cancelling_a_suspended_callback_reaches_it() -> None:
    """Stock Faust cancels the dispatch when flow is suspended; so must the patched path."""

    async def main() -> list[str]:
        trace: list[str] = []

        async def callback() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                trace.append("cancelled")
                raise

        coro = callback()
        first = coro.send(None)
        task = asyncio.ensure_future(faust_patches._continue(coro, first))
        await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return trace

    assert asyncio.run(main()) == ["cancelled"]


def _handler_and_channel(value_type: Any) -> tuple[Any, Any, Any]:
    """A conductor handler (patched) for partition 0 of a topic subscribed once."""
    from faust.types import TP

    app = faust.App(
        "lean-check", broker="kafka://127.0.0.1:1", autodiscover=False, web_enabled=False
    )
    if value_type is bytes:
        topic = app.topic("t", key_type=bytes, value_type=bytes, value_serializer="raw")
    else:
        topic = app.topic("t", key_type=bytes, value_serializer="json")
    channel = topic.clone(is_iterator=True)
    app.flow_control.resume()  # as Faust does once partitions are assigned
    tp = TP("t", 0)
    handler = app.topics._build_handler(tp, {channel})  # type: ignore[attr-defined]
    return app, handler, channel


def _message(key: bytes | None, value: bytes | None) -> Any:
    from faust.types import Message

    return Message("t", 0, 7, 0.0, 0, [("h", b"v")], key, value, None)


def test_the_lean_handler_queues_what_the_stock_one_would() -> None:
    faust_patches.apply(42)

    async def main() -> tuple[Any, Any, int]:
        _app, handler, channel = _handler_and_channel(bytes)
        assert handler.__module__ == faust_patches.__name__  # the lean path, not stock's
        message = _message(b"k", b'{"id": 1}')
        await handler(message)
        return channel.queue.get_nowait(), message, message.refcount

    event, message, refcount = asyncio.run(main())
    assert (event.key, event.value, event.message) == (b"k", b'{"id": 1}', message)
    assert dict(event.headers) == {"h": b"v"}
    assert refcount == 1  # one subscriber: acked once, as stock counts it


def test_other_schemas_and_null_values_take_the_stock_path() -> None:
    faust_patches.apply(42)

    async def main() -> tuple[Any, Any]:
        _app, handler, channel = _handler_and_channel(None)
        await handler(_message(b"k", b'{"id": 1}'))  # JSON-decoded: stock Faust did it
        decoded = channel.queue.get_nowait()
        _app2, raw_handler, raw_channel = _handler_and_channel(bytes)
        await raw_handler(_message(b"k", None))
        return decoded, raw_channel.queue.get_nowait()

    decoded, tombstone = asyncio.run(main())
    assert decoded.value == {"id": 1}
    assert tombstone.value is None and tombstone.key == b"k"
