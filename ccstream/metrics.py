"""The metrics a Prometheus user expects, defined once, served over aiohttp.

Every ccstream metric lives in ``REGISTRY`` (not the process-global default registry, so that
tests and embedding applications do not collide) and is named ``ccstream_*``. ``serve()`` exposes
them at ``/metrics`` with aiohttp, which faust already brings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from ccstream.probes import Probes

REGISTRY = CollectorRegistry(auto_describe=True)

# -- connector ---------------------------------------------------------------------------------
WS_CONNECTS = Counter(
    "ccstream_ws_connects", "WebSocket handshakes that opened a stream", ["stream"],
    registry=REGISTRY,
)
WS_RECONNECTS = Counter(
    "ccstream_ws_reconnects", "Reconnects scheduled, by cause", ["stream", "cause"],
    registry=REGISTRY,
)
BACKOFF_DELAY = Histogram(
    "ccstream_backoff_delay_seconds", "Backoff delay chosen before a reconnect", ["stream"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64), registry=REGISTRY,
)
EVENTS_IN = Counter(
    "ccstream_events_in", "Events received from the platform", ["stream"], registry=REGISTRY,
)
EVENTS_PRODUCED = Counter(
    "ccstream_events_produced", "Events acknowledged by Kafka on the raw topic", ["stream"],
    registry=REGISTRY,
)
EVENTS_DLQ = Counter(
    "ccstream_events_dlq", "Bad frames sent to the dead-letter topic", ["stream", "reason"],
    registry=REGISTRY,
)
HEARTBEATS = Counter(
    "ccstream_heartbeats", "Heartbeat frames received", ["stream"], registry=REGISTRY,
)
GAPS = Counter(
    "ccstream_gaps", "Resume points older than the platform's retention", ["stream"],
    registry=REGISTRY,
)
TOKEN_REFRESHES = Counter(
    "ccstream_token_refreshes", "Token requests, by grant and outcome",
    ["credential", "grant", "outcome"], registry=REGISTRY,
)
BREAKER_STATE = Gauge(
    "ccstream_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open", ["stream"],
    registry=REGISTRY,
)
LAST_EVENT_TS = Gauge(
    "ccstream_last_event_timestamp_seconds", "When the last event was received (epoch s)",
    ["stream"], registry=REGISTRY,
)
CURSOR_COMMITS = Counter(
    "ccstream_cursor_commits", "Cursors written to the cursor topic", ["stream"],
    registry=REGISTRY,
)
BACKOFF_CURRENT = Gauge(
    "ccstream_backoff_current_seconds", "The backoff delay the stream is waiting out (0: none)",
    ["stream"], registry=REGISTRY,
)
STREAM_CONNECTED = Gauge(
    "ccstream_stream_connected", "1 while the stream's WebSocket is open", ["stream"],
    registry=REGISTRY,
)
LATE_EVENTS = Counter(
    "ccstream_late_events", "Genesys events older than the committed `since` (beyond lateness)",
    ["stream"], registry=REGISTRY,
)
STREAM_FAILED = Gauge(
    "ccstream_stream_failed", "1 when the stream stopped on a non-retriable error", ["stream"],
    registry=REGISTRY,
)
STREAM_ENDPOINT = Gauge(
    "ccstream_stream_endpoint",
    "1 for the endpoint (region) the stream's next attempt uses, 0 for its others",
    ["stream", "endpoint"], registry=REGISTRY,
)
LOOP_LAG = Gauge(
    "ccstream_event_loop_lag_seconds", "How late the event loop's watchdog tick last ran",
    registry=REGISTRY,
)
READY = Gauge(
    "ccstream_ready", "1 while /readyz answers ready (Kafka reachable, every stream accounted)",
    registry=REGISTRY,
)
LAST_EVENT_AGE = Gauge(
    "ccstream_last_event_age_seconds",
    "Seconds since the stream's last event (since the stream started, before the first one)",
    ["stream"], registry=REGISTRY,
)

# -- the real platforms' sources (docs/genesys-cloud.md, docs/cxone.md) ---------------------------
GAP_SECONDS = Counter(
    "ccstream_gap_seconds", "Seconds of reported gaps (to - from)", ["stream"], registry=REGISTRY,
)
BACKFILL_RECORDS = Counter(
    "ccstream_backfill_records", "Records written by backfill, by kind", ["stream", "kind"],
    registry=REGISTRY,
)
BACKFILL_SECONDS = Histogram(
    "ccstream_backfill_seconds", "How long one gap's backfill took", ["stream"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600), registry=REGISTRY,
)
CHANNELS_OPEN = Gauge(
    "ccstream_channels_open", "Genesys Cloud channels with an open socket", ["stream"],
    registry=REGISTRY,
)
SUBSCRIPTIONS = Gauge(
    "ccstream_subscriptions", "Genesys Cloud topics by subscription state", ["stream", "state"],
    registry=REGISTRY,
)
POLLS = Counter(
    "ccstream_polls", "CXone polls, by endpoint and outcome (ok, not_modified, error)",
    ["stream", "endpoint", "outcome"], registry=REGISTRY,
)
POLL_ROWS = Counter(
    "ccstream_poll_rows", "CXone rows received, by endpoint", ["stream", "endpoint"],
    registry=REGISTRY,
)

# -- cluster mode (docs/cluster.md) -------------------------------------------------------------
STREAM_OWNED = Gauge(
    "ccstream_stream_owned", "1 while this instance runs the stream (alert: sum by stream != 1)",
    ["stream"], registry=REGISTRY,
)
CLUSTER_SLOTS_OWNED = Gauge(
    "ccstream_cluster_slots_owned", "Slots this instance runs", registry=REGISTRY,
)
CLUSTER_STREAMS_OWNED = Gauge(
    "ccstream_cluster_streams_owned", "Streams this instance runs", registry=REGISTRY,
)
CLUSTER_MEMBER = Gauge(
    "ccstream_cluster_member", "1 while the membership lease is valid", registry=REGISTRY,
)
CLUSTER_REBALANCES = Counter(
    "ccstream_cluster_rebalances", "Group rebalances this instance took part in",
    registry=REGISTRY,
)
CLUSTER_REBALANCE_SECONDS = Histogram(
    "ccstream_cluster_rebalance_seconds", "From the revocation to the new assignment",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=REGISTRY,
)
SLOT_TAKEOVER_SECONDS = Histogram(
    "ccstream_slot_takeover_seconds",
    "Taking a slot over, by phase: fence (producer start), cursor (read to the high watermark), "
    "connect (sources started until streaming)",
    ["phase"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=REGISTRY,
)
SLOT_FENCED = Counter(
    "ccstream_slot_fenced", "Slots stopped because another instance fenced our producer",
    registry=REGISTRY,
)
CLUSTER_LEASE_EXPIRED = Counter(
    "ccstream_cluster_lease_expired", "Membership lease expiries (every slot stopped)",
    registry=REGISTRY,
)
CURSOR_TXN_SECONDS = Histogram(
    "ccstream_cursor_txn_seconds", "One slot's cursor transaction, begin to commit",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10), registry=REGISTRY,
)
CURSOR_COMMIT_FAILURES = Counter(
    "ccstream_cursor_commit_failures", "Cursor transactions that failed, by reason",
    ["reason"], registry=REGISTRY,
)
CLUSTER_CONFIG_MISMATCH = Gauge(
    "ccstream_cluster_config_mismatch",
    "Members whose configuration fingerprint differs from the majority's (leader's view)",
    registry=REGISTRY,
)

# -- dedup -------------------------------------------------------------------------------------
DEDUP_IN = Counter(
    "ccstream_dedup_events_in", "Raw events read by the dedup worker", ["partition"],
    registry=REGISTRY,
)
DEDUP_FORWARDED = Counter(
    "ccstream_dedup_forwarded", "Events written to the clean topic", ["partition"],
    registry=REGISTRY,
)
DEDUP_DUPLICATES = Counter(
    "ccstream_dedup_duplicates", "Events dropped as duplicates", ["partition"],
    registry=REGISTRY,
)
DEDUP_REDELIVERED = Counter(
    "ccstream_dedup_redelivered",
    "Raw records read again after a crash, already judged in a committed transaction (skipped)",
    ["partition"], registry=REGISTRY,
)
DEDUP_SKIPPED_READ = Counter(
    "ccstream_dedup_skipped_read_back",
    "Raw records the consumer skipped (around a rebalance) that the agent read back itself",
    ["partition"], registry=REGISTRY,
)
DEDUP_DLQ = Counter(
    "ccstream_dedup_dlq", "Raw records the dedup worker could not key", ["reason"],
    registry=REGISTRY,
)
FILTER_FILL = Gauge(
    "ccstream_dedup_filter_fill_ratio", "Fraction of set bits in the newest filter generation",
    ["partition"], registry=REGISTRY,
)
FILTER_FP_RATE = Gauge(
    "ccstream_dedup_estimated_fp_rate", "Estimated false-positive rate of the filter",
    ["partition"], registry=REGISTRY,
)
DEDUP_RECOVERY_OPS = Counter(
    "ccstream_dedup_recovery_ops", "Changelog ops replayed to rebuild a partition's filter",
    ["partition"], registry=REGISTRY,
)
DEDUP_RECOVERING = Gauge(
    "ccstream_dedup_recovering", "1 while a partition's filter is being rebuilt from its changelog",
    ["partition"], registry=REGISTRY,
)
DEDUP_ROTATIONS = Counter(
    "ccstream_dedup_rotations", "Filter generations started (stream time crossed a boundary)",
    ["partition"], registry=REGISTRY,
)
DEDUP_GENERATION = Gauge(
    "ccstream_dedup_generation", "Newest filter generation (stream time / rotation period)",
    ["partition"], registry=REGISTRY,
)
DEDUP_STRICT_FP = Counter(
    "ccstream_dedup_strict_false_positives",
    "Strict mode: Bloom hits the exact store proved new (forwarded, not dropped)",
    ["partition"], registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "ccstream_consumer_lag", "Raw-topic records not yet processed", ["partition"],
    registry=REGISTRY,
)


def render() -> bytes:
    """The registry in Prometheus text format."""
    return bytes(generate_latest(REGISTRY))


async def serve(host: str, port: int, probes: Probes | None = None) -> web.AppRunner:
    """Serve ``/metrics`` (and, given ``probes``, ``/healthz`` and ``/readyz``,
    ``ccstream.probes``) until the returned runner is cleaned up."""

    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    if probes is not None:
        probes.install(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
