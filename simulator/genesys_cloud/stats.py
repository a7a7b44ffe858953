"""What the simulator did and what each OAuth client did, pure: the facts tests and the judge read.

``GcStats``: counters per OAuth client (``/_sim/stats``). ``GcLedger``: per client, every
notification written on a socket (topicName, sent_at, channel, socket, sha256 of the bytes),
plus, through the coverage and the activity store it is given, the uncovered intervals and the
conversation/user activity (``/_sim/ledger``).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from simulator.genesys_cloud.analytics import ActivityStore
from simulator.genesys_cloud.coverage import Coverage


@dataclass
class GcStats:
    token_requests: int = 0
    token_grants: int = 0
    token_errors: Counter[int] = field(default_factory=Counter)       # by status
    rest_calls: Counter[str] = field(default_factory=Counter)         # "METHOD /route"
    rest_errors: Counter[int] = field(default_factory=Counter)        # by status
    rate_limited: int = 0              # 429s of the 300/min window
    too_many_requests_sent: int = 0    # every 429 (window, faults, token endpoint)
    channels_created: int = 0
    channels_evicted: int = 0
    channels_expired: int = 0
    channels_gone_fault: int = 0
    channels_replaced: int = 0         # a foreign socket took the channel
    subscription_calls: int = 0
    topics_rejected: int = 0           # Rejected entries answered
    sockets_opened: int = 0
    sockets_open: int = 0
    max_sockets_open: int = 0
    sockets_to_gone: int = 0           # handshakes on an unknown or gone channel
    closes_sent: Counter[int] = field(default_factory=Counter)        # close frames, by code
    drops: Counter[str] = field(default_factory=Counter)              # no close frame: why
    client_close_codes: Counter[int] = field(default_factory=Counter)  # close frames received
    pings: int = 0
    pongs: int = 0
    pongs_delayed: int = 0
    pongs_dropped: int = 0
    heartbeats_sent: int = 0
    closing_notices_sent: int = 0
    not_found_frames_sent: int = 0
    client_frames_other: int = 0       # text the client sent that is not a ping
    notifications_published: int = 0
    notifications_sent: int = 0        # frames written, copies included
    notifications_dropped: int = 0     # published with no receiving socket: gone (no replay)
    duplicates_sent: int = 0           # copies beyond the first of one publication
    frames_sent: Counter[str] = field(default_factory=Counter)        # ``frames`` variants
    analytics_pages: Counter[str] = field(default_factory=Counter)    # by kind
    faults: Counter[str] = field(default_factory=Counter)             # fired, by kind

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = ({str(k): v for k, v in value.items()} if isinstance(value, Counter)
                           else value)
        return out


@dataclass(frozen=True)
class SentNotification:
    topic: str
    sent_at: float
    channel: str
    socket: str
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"topicName": self.topic, "sent_at": self.sent_at, "channel": self.channel,
                "socket": self.socket, "sha256": self.sha256}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class GcLedger:
    def __init__(self, coverage: Coverage, stores: dict[str, ActivityStore]) -> None:
        self.coverage = coverage
        self.stores = stores
        self.notifications: dict[str, list[SentNotification]] = {}

    def record(self, client_id: str, topic: str, *, sent_at: float, channel: str, socket: str,
               data: bytes) -> SentNotification:
        entry = SentNotification(topic, sent_at, channel, socket, sha256(data))
        self.notifications.setdefault(client_id, []).append(entry)
        return entry

    def hashes(self, client_id: str) -> set[str]:
        return {n.sha256 for n in self.notifications.get(client_id, [])}

    def to_json(self, client_id: str | None = None, with_notifications: bool = True,
                with_activity: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for cid, store in self.stores.items():
            if client_id is not None and cid != client_id:
                continue
            sent = self.notifications.get(cid, [])
            doc: dict[str, Any] = {
                "notifications_count": len(sent),
                "uncovered": [list(i) for i in self.coverage.uncovered(cid)],
                "uncovered_open": self.coverage.open_since(cid),
            }
            if with_notifications:
                doc["notifications"] = [n.to_json() for n in sent]
            if with_activity:
                doc.update(store.to_json())
            out[cid] = doc
        return {"clients": out}
