"""Source connectors: plugins found by URL scheme (entry-point group ``moodwire.connectors``)."""

from moodwire.connectors.base import Connector, ConnectorError, RawRecord
from moodwire.connectors.registry import known_schemes, open_connector, register, resolve

__all__ = [
    "Connector",
    "ConnectorError",
    "RawRecord",
    "known_schemes",
    "open_connector",
    "register",
    "resolve",
]
