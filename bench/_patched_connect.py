"""``ccstream connect`` with the hot-path fixes proposed in bench/README.md "Open findings",
applied at run time, so that ``bench_ingest.py --patched`` can measure their gain before the
owners of ``connectors/`` adopt them. Not used by ccstream itself.

Written against ``connectors.delivery.Delivery`` and ``connectors.sink.KafkaSink`` as they are
in the working tree on 2026-11-28; if their shape changed, it exits 3 with one line (the
benchmark then reports the variant as skipped). The replacements keep the behaviour (same
records, headers, metrics, progress, DLQ diversion); they only stop redoing per event what can
be done once per stream:

1. ``Delivery.event`` / ``Delivery._watch``: the stream's Prometheus children
   (``EVENTS_IN.labels(name)``, ...) are looked up once, not per event (``labels()`` takes a
   lock and hashes the label tuple on every call).
2. ``KafkaSink.send_event``: ``ccstream-stream`` / ``ccstream-platform`` header bytes encoded once
   per stream; ``ccstream-received-at`` formatted once per millisecond (it has millisecond
   precision; a burst shares one string); the exact record-size estimate (aiokafka's
   ``estimate_size_in_bytes``, pure Python) only when a cheap upper bound could exceed the limit.

    python bench/_patched_connect.py connect --config FILE
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# the upper bound of a record's size beyond key + value + headers (record and batch framing)
FRAMING_BYTES = 512


def _received_at(epoch: float, cache: list[Any]) -> bytes:
    from connectors import records

    ms = int(epoch * 1000)
    if cache[0] != ms:
        cache[0], cache[1] = ms, records.rfc3339(epoch).encode()
    return bytes(cache[1])


def install() -> None:
    from aiokafka.errors import KafkaError, RecordTooLargeError
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    from connectors import metrics, records
    from connectors.delivery import TOO_LARGE, Delivery
    from connectors.platforms import Frame
    from connectors.sink import DeliveryFuture, KafkaSink

    stamp: list[Any] = [None, b""]

    async def send_event(self: KafkaSink, stream: str, platform: str, frame: Frame,
                         received_at: float) -> DeliveryFuture:
        fixed = self.__dict__.setdefault("_fixed_headers", {})
        head = fixed.get((stream, platform))
        if head is None:
            head = fixed[(stream, platform)] = [(records.H_STREAM, stream.encode()),
                                                (records.H_PLATFORM, platform.encode())]
        headers = [*head, (records.H_DEDUP_KEY, frame.dedup_key.encode()),
                   (records.H_RECEIVED_AT, _received_at(received_at, stamp))]
        if frame.cursor is not None:
            headers.append((records.H_CURSOR, frame.cursor.encode()))
        key = frame.correlation_id.encode()
        bound = len(key) + len(frame.raw) + FRAMING_BYTES + sum(
            len(k) + len(v) + 10 for k, v in headers)
        if bound > self.raw_limit:
            size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, frame.raw, headers)
            if size > self.raw_limit:
                raise RecordTooLargeError(f"{size} bytes > {self.raw_limit} "
                                          "(the raw topic's limit)")
        future: DeliveryFuture = await self.producer.send(
            self.topics.raw, value=frame.raw, key=key, headers=headers)
        return future

    def children(self: Delivery) -> tuple[Any, Any, Any]:
        cached = self.__dict__.get("_children")
        if cached is None:
            name = self.stream.name
            cached = self.__dict__["_children"] = (
                metrics.EVENTS_IN.labels(name), metrics.LAST_EVENT_TS.labels(name),
                metrics.EVENTS_PRODUCED.labels(name))
        return cached

    async def event(self: Delivery, frame: Frame) -> None:
        events_in, last_ts, _ = children(self)
        name, wall = self.stream.name, self.wall()
        events_in.inc()
        last_ts.set(wall)
        self.last_event = wall
        late = self.progress.late
        seq = self.progress.track(frame.position, frame.epoch)
        if self.progress.late != late:
            metrics.LATE_EVENTS.labels(name).inc()
            self.log.warning("stream.late_event", dedup_key=frame.dedup_key)
        try:
            future = await self.sink.send_event(name, self.stream.platform, frame, wall)
        except TOO_LARGE as err:
            await self._divert(seq, frame, err)
            return
        except KafkaError as err:
            self._failed(seq, err)
            return
        self._watch(seq, future, frame)

    def watch(self: Delivery, seq: int, future: DeliveryFuture,
              frame: Frame | None = None) -> None:
        self._pending.add(future)
        produced = children(self)[2]

        def done(f: DeliveryFuture) -> None:
            self._pending.discard(f)
            error = None if f.cancelled() else f.exception()
            if not f.cancelled() and error is None:
                self.progress.ack(seq)
                if frame is not None:
                    produced.inc()
                return
            self._failed(seq, error)
            if isinstance(error, TOO_LARGE):
                self._spawn(self.sink.refresh_limits())

        future.add_done_callback(done)

    KafkaSink.send_event = send_event  # type: ignore[method-assign]
    Delivery.event = event  # type: ignore[method-assign]
    Delivery._watch = watch  # type: ignore[method-assign]


def main() -> int:
    try:
        install()
    except (ImportError, AttributeError) as err:
        print(f"_patched_connect: the connector code changed shape ({err}); not applied",
              file=sys.stderr)
        return 3
    from pipeline.cli import main as cli_main

    return int(cli_main(sys.argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
