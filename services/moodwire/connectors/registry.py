"""Find a connector by URL scheme, the way Faust finds its transports.

Connectors are plugins: any installed distribution can add one under the entry-point
group ``moodwire.connectors`` (``scheme = "package.module:ClassName"``). Entry points
are read on every lookup, so a plugin installed while a process runs is seen.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from urllib.parse import parse_qsl, urlsplit

from moodwire.connectors.base import Connector, ConnectorError

GROUP = "moodwire.connectors"

# Registered in code (tests, applications embedding moodwire); these win over entry points.
_registered: dict[str, type[Connector]] = {}


def register(scheme: str, cls: type[Connector]) -> None:
    """Make ``cls`` the connector for ``scheme://`` in this process."""
    if not issubclass(cls, Connector):
        raise TypeError(f"{cls!r} is not a moodwire.connectors.Connector")
    _registered[scheme.lower()] = cls


def unregister(scheme: str) -> None:
    _registered.pop(scheme.lower(), None)


def _entry_points() -> dict[str, EntryPoint]:
    # Two distributions may claim one scheme; the first one found wins, deterministically.
    found: dict[str, EntryPoint] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: (e.name, e.value)):
        found.setdefault(ep.name.lower(), ep)
    return found


def known_schemes() -> dict[str, str]:
    """Scheme -> where its connector comes from ("module:Class"), sorted by scheme."""
    out = {name: ep.value for name, ep in _entry_points().items()}
    for scheme, cls in _registered.items():
        out[scheme] = f"{cls.__module__}:{cls.__qualname__}"
    return dict(sorted(out.items()))


def _scheme_of(url: str) -> str:
    if "://" not in url:
        raise ConnectorError(
            f"{url!r} is not a connector URL (expected SCHEME://..., e.g. file://{url} or "
            f"demo://); known schemes: {_schemes_text()}"
        )
    return url.split("://", 1)[0].lower()


def _schemes_text() -> str:
    return ", ".join(f"{s}://" for s in known_schemes()) or "none installed"


def resolve(url: str) -> type[Connector]:
    """The connector class for ``url``'s scheme, or a ConnectorError listing known schemes."""
    scheme = _scheme_of(url)
    if scheme in _registered:
        cls = _registered[scheme]
    else:
        ep = _entry_points().get(scheme)
        if ep is None:
            raise ConnectorError(
                f"no connector for scheme {scheme!r}; known schemes: {_schemes_text()}"
            )
        try:
            loaded = ep.load()
        except Exception as exc:  # a broken plugin must not look like a moodwire bug
            raise ConnectorError(
                f"connector {scheme!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}"
            ) from None
        if not (isinstance(loaded, type) and issubclass(loaded, Connector)):
            raise ConnectorError(
                f"connector {scheme!r} ({ep.value}) is not a moodwire.connectors.Connector"
            )
        cls = loaded
    cls.scheme = scheme
    return cls


def open_connector(url: str, options: Mapping[str, str] | None = None) -> Connector:
    """Build the connector for ``url``; ``options`` add to (and override) its query."""
    cls = resolve(url)
    parts = urlsplit(url)
    merged = dict(parse_qsl(parts.query, keep_blank_values=True))
    merged.update(options or {})
    return cls(parts, merged)
