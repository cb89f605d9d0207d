"""Connectors are found by URL scheme through the ``moodwire.connectors`` entry points."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from moodwire.connectors import (
    Connector,
    ConnectorError,
    RawRecord,
    known_schemes,
    open_connector,
    register,
    resolve,
)
from moodwire.connectors.demo import DemoConnector
from moodwire.connectors.file import FileConnector
from moodwire.connectors.registry import unregister
from support.connectors import raw_records


def test_bundled_schemes_resolve_through_entry_points() -> None:
    schemes = known_schemes()
    assert schemes["file"] == "moodwire.connectors.file:FileConnector"
    assert schemes["demo"] == "moodwire.connectors.demo:DemoConnector"
    assert resolve("file:///tmp/x.jsonl") is FileConnector
    assert resolve("DEMO://") is DemoConnector


def test_unknown_scheme_lists_known_ones() -> None:
    with pytest.raises(ConnectorError, match=r"no connector for scheme 'kafka'.*demo://.*file://"):
        resolve("kafka://somewhere")


def test_bare_path_suggests_file_url() -> None:
    with pytest.raises(ConnectorError, match=r"file:///data/posts.jsonl"):
        resolve("/data/posts.jsonl")


def test_unknown_option_is_an_error() -> None:
    with pytest.raises(ConnectorError, match=r"does not know option\(s\) rat .*known: .*rate"):
        open_connector("demo://?rat=5")


def _write_plugin(root: Path, module: str, body: str, scheme: str, target: str) -> None:
    (root / f"{module}.py").write_text(textwrap.dedent(body))
    dist = root / f"{module}_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[moodwire.connectors]\n{scheme} = {target}\n")


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("acme_")]:
        del sys.modules[name]


def test_third_party_plugin_is_found_by_its_entry_point(plugin_dir: Path) -> None:
    # An installed distribution (a dist-info on sys.path) declares the scheme "acme".
    _write_plugin(
        plugin_dir,
        "acme_source",
        """
        from moodwire.connectors import Connector, RawRecord

        class AcmeConnector(Connector):
            def records(self):
                for i in range(int(self.options.get("n", "2"))):
                    yield RawRecord(payload=b"{}", origin=f"acme://{self.url.netloc}/{i}")
        """,
        "acme",
        "acme_source:AcmeConnector",
    )
    assert known_schemes()["acme"] == "acme_source:AcmeConnector"
    connector = open_connector("acme://feed?n=3")
    assert connector.scheme == "acme"
    origins = [r.origin for r in raw_records(connector)]
    assert origins == ["acme://feed/0", "acme://feed/1", "acme://feed/2"]


def test_broken_plugin_gives_a_clear_error(plugin_dir: Path) -> None:
    _write_plugin(
        plugin_dir,
        "acme_broken",
        "raise ImportError('no acme sdk')\n",
        "broken",
        "acme_broken:Thing",
    )
    _write_plugin(plugin_dir, "acme_wrong", "class Thing:\n    pass\n", "wrong", "acme_wrong:Thing")
    with pytest.raises(
        ConnectorError,
        match=r"'broken' \(acme_broken:Thing\) failed to load.*"
        r"no acme sdk",
    ):
        resolve("broken://x")
    with pytest.raises(ConnectorError, match=r"is not a moodwire.connectors.Connector"):
        resolve("wrong://x")


class _Memory(Connector):
    """A Bytewax-style in-memory source for tests."""

    def records(self) -> Iterator[RawRecord]:
        for i, word in enumerate(self.url.netloc.split(".")):
            yield RawRecord(payload=word.encode(), origin=f"memory://{i}")


def test_register_in_process_wins_and_can_be_removed() -> None:
    register("memory", _Memory)
    try:
        assert [r.payload for r in raw_records(open_connector("memory://a.b"))] == [b"a", b"b"]
        assert "memory" in known_schemes()
    finally:
        unregister("memory")
    with pytest.raises(ConnectorError, match="no connector for scheme 'memory'"):
        resolve("memory://a")
