"""Fixtures of the alert tests: the three channel receivers, running for one test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from moodwire.stack.ports import free_port
from support.alert_outbox import Receivers
from support.alert_receivers import start_http_receiver, start_smtp


@pytest.fixture
def receivers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receivers]:
    slack, hook = start_http_receiver(), start_http_receiver()
    mail = start_smtp(free_port())
    monkeypatch.setenv("TEST_SLACK_URL", slack.url)
    monkeypatch.setenv("TEST_HOOK_SECRET", "s3cret")
    yield Receivers(slack, hook, mail)
    for http in (slack, hook):
        http.released.set()
        http.server.shutdown()
        http.server.server_close()
    mail.controller.stop()
