"""Sources: one driver per kind of source, behind one ``Source`` interface (``base.py``).

``build`` is the one place that maps a configured stream to its source; the runner calls it and
knows nothing else of any transport.
"""

from __future__ import annotations

from typing import assert_never

from ccstream.config import AnyStream, Config, CxoneStream, GenesysCloudStream, StreamConfig
from connectors.kafka.cursor_store import StoredCursor
from connectors.sources.base import Source, SourceDeps


def check_secrets(stream: AnyStream) -> None:
    """Read every secret of ``stream`` once, so that an unset variable fails at start-up
    (``ConfigError`` with the key's path) rather than at the first connection."""
    stream.secret()
    if hasattr(stream, "access_secret"):
        stream.access_secret()


def build(stream: AnyStream, config: Config, deps: SourceDeps,
          stored: StoredCursor | None) -> Source:
    """The source of ``stream``, started from its stored cursor."""
    if isinstance(stream, StreamConfig):
        from connectors.sources.websocket import WebSocketSource

        return WebSocketSource(stream, config.connector, deps, stored,
                               maintenance=config.maintenance_for(stream))
    if isinstance(stream, GenesysCloudStream):
        from connectors.sources.genesys_cloud import GenesysCloudSource

        return GenesysCloudSource(stream, config.connector, deps, stored,
                                  maintenance=config.maintenance_for(stream))
    if isinstance(stream, CxoneStream):
        from connectors.sources.cxone import CxoneSource

        return CxoneSource(stream, config.connector, deps, stored,
                           maintenance=config.maintenance_for(stream))
    assert_never(stream)
