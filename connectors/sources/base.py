"""What every source shares, whatever its transport: the ``Source`` interface.

A *source* turns one configured stream into records for Kafka and a cursor that says how far the
records are safely in Kafka. The runner knows sources only through this interface: it builds them
(``connectors.sources.build``), runs each in its own task, asks each for its cursor every
``cursor_commit_interval_s`` and writes it, reads their status (breaker, ``ccstream run``'s exit
rule, metrics) and stops them on SIGTERM within the grace period. It knows nothing of sockets,
channels or polls.

The contract a source keeps:

* **Started with its stored cursor.** ``build(stream, settings, deps, stored)``: ``stored`` is the
  last committed ``StoredCursor`` of this stream (``None``: no cursor, start live). The source
  decides what it means (a ``since``, an opaque cursor, a watermark with open gaps, a
  ``lastPollTime`` per endpoint) and what down time it implies (a gap to report or backfill).
* **Hands records to delivery.** Every record goes through ``Delivery`` (``connectors.kafka``),
  as a ``Frame``: key (``correlation_id``: the platform's correlation or entity id), value
  (``raw``: the bytes as received, or a re-serialised JSON object), the dedup key the source
  computed, and where it came from (``origin`` = ``live`` | ``backfill``, ``gap`` on backfill
  records). Bad input goes to ``Delivery.dead_letter`` with a reason, and the stream goes on.
  Delivery tracks every send in order in a ``Progress`` (``connectors.policy.progress``), which
  folds the acknowledged prefix of positions into a resume point.
* **Reports the resume point that acknowledgements make safe**: ``checkpoint(now)`` returns the
  JSON body of the cursor (without ``platform`` and ``updated_at``, which the runner adds) such
  that restarting from it loses nothing that was handed to delivery before; ``None`` when there is
  nothing to write yet. The runner writes a body only when it differs from the last one written,
  then calls ``committed(body, now)`` once Kafka acknowledged it.
* **Reports coverage and gaps.** What the source cannot recover (a resume point older than the
  platform keeps, an interval no socket covered, a poll outage) is a *gap*: logged
  ``stream.gap``, counted (``ccstream_gaps_total``, ``ccstream_gap_seconds_total``), kept in the
  cursor (``open_gaps``) until it is filled, never hidden.
* **Has a status** (``SourceStatus``; the allowed transitions are ``policy.lifecycle``'s table)
  and, once failed for good, ``fatal`` (the one line for stderr). It reports every change through
  ``SourceDeps.on_change``.
* **Never raises for a platform or Kafka failure**: it retries with the shared policies (backoff
  with jitter and salt, the per-host ``limiter``, the breaker), or, for a non-retriable answer,
  sets ``FAILED`` and returns from ``run()``: that stream stops, the others go on.
* **Stops within the grace period**: ``stop()`` is synchronous and idempotent; it stops reading,
  closes what is open (a socket with 1000 "Graceful shutdown", an HTTP request by cancelling it)
  and makes ``run()`` return soon. The runner then flushes the producer and commits the last
  ``checkpoint``.

Three kinds fit it:

* the **resumable WebSocket stream** of the integration guide's flavours (``websocket.py``): one
  socket at a time, the platform replays from ``since`` / ``cursor``; the cursor is the replay
  point over the acknowledged prefix;
* **channels + sockets + backfill** (Genesys Cloud Notifications): REST calls make a channel and
  its subscriptions, a socket per channel carries notifications with no replay; the source keeps
  a coverage watermark, turns every uncovered interval into a gap and fills it from the analytics
  API; the cursor is ``{"watermark", "open_gaps", "channels"}``;
* **HTTP polling with a server watermark** (NICE CXone real-time data): one poll loop per
  endpoint, each answer's rows are records, the server's ``lastPollTime`` becomes the endpoint's
  cursor once those rows are acknowledged; outages are gaps backfilled from completed contacts;
  the cursor is ``{"endpoints": {...}, "open_gaps"}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    import aiohttp

    from connectors.kafka.sink import DeliveryFuture
    from connectors.platforms import Frame
    from connectors.policy.ratelimit import TokenBucket

from connectors.policy.lifecycle import SourceStatus

__all__ = ["CursorBody", "Shared", "Sink", "Source", "SourceDeps", "SourceStatus",
           "TokenSource"]

CursorBody = dict[str, Any]
T = TypeVar("T")


class Sink(Protocol):
    """Where delivery sends records (the Kafka producer; an in-memory one in component tests)."""

    raw_limit: int

    async def send_event(self, stream: str, platform: str, frame: Frame,
                         received_at: float) -> DeliveryFuture: ...

    async def send_dlq(self, stream: str, platform: str, raw: bytes, reason: str, *,
                       received_at: float, binary: bool = False) -> DeliveryFuture: ...

    async def refresh_limits(self) -> None: ...


class TokenSource(Protocol):
    """An access token for one credential, shared by its streams (single-flight refresh)."""

    async def get(self) -> str: ...

    def invalidate(self, access: str) -> None: ...


class Shared:
    """Objects streams share by key within one process: a token manager per credential, one
    Retry-After clock per OAuth client, a discovery cache per access key."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, ...], object] = {}

    def get(self, key: tuple[str, ...], make: Callable[[], T]) -> T:
        if key not in self._items:
            self._items[key] = make()
        return self._items[key]  # type: ignore[return-value]


@dataclass
class SourceDeps:
    """What the runner gives every source; clocks and randomness are injected."""

    sink: Sink
    limiter: TokenBucket            # the per-host reconnect cap across every stream
    clock: Callable[[], float]      # monotonic: delays, keep-alive, timeouts
    wall: Callable[[], float]       # epoch seconds: received-at, gaps, cursors
    rand: Callable[[], float]       # the salted random source of this stream
    http: aiohttp.ClientSession | None = None
    shared: Shared = field(default_factory=Shared)
    on_change: Callable[[Source], None] = lambda _: None


class Source(Protocol):
    """One stream, whatever its transport (see the module docstring)."""

    @property
    def name(self) -> str: ...

    @property
    def platform(self) -> str: ...

    status: SourceStatus
    fatal: str | None

    async def run(self) -> None:
        """Stream until ``stop()`` or a non-retriable failure; never raises for either."""

    def stop(self) -> None:
        """Stop reading and close what is open; ``run()`` returns soon after."""

    def checkpoint(self, now: float) -> CursorBody | None:
        """The cursor body that acknowledgements make safe now (None: nothing to write)."""

    def committed(self, body: CursorBody, now: float) -> None:
        """Kafka acknowledged the cursor ``body`` written at wall time ``now``."""
