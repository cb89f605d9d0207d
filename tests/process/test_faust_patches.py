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
    }
    assert Consumer._drain_messages is faust_patches._drain_messages
    # Idempotent: a second apply neither fails nor wraps twice.
    assert faust_patches.apply(42) == {
        "dispatch": True,
        "fetch_wait": True,
        "no_scan": True,
        "no_table_wait": True,
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
