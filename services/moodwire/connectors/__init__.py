"""Source connectors: plugins found by URL scheme (entry-point group ``moodwire.connectors``)."""

from moodwire.connectors.base import Connector, ConnectorError, Offset, Position, RawRecord
from moodwire.connectors.registry import known_schemes, open_connector, register, resolve

__all__ = [
    "Connector",
    "ConnectorError",
    "Offset",
    "Position",
    "RawRecord",
    "known_schemes",
    "open_connector",
    "register",
    "resolve",
]
