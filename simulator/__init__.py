"""A simulator of both contact-center platforms (``docs/protocols.md``) that can
misbehave on purpose: the demo runs on it, the connector's tests run on it.

One aiohttp server on one loopback port serves everything:

=============================  ===============================================================
``POST /oauth/token``          client credentials and refresh-token grants (single-use, rotated)
``GET /api/v2/analytics/events``  Genesys flavour (``since``, ``types``), a WebSocket
``GET /api/v2/ws/events``      NICE flavour (``cursor``, ``types``), a WebSocket
``GET /_sim/stats``            per-client counters and per-stream figures (JSON)
``GET /_sim/ledger``           every distinct event emitted, per stream (JSON);
                               ``?stream=genesys/acme`` one stream, ``?events=0`` counts only
``POST /_sim/faults``          inject faults: a JSON list of fault objects (see ``faults.py``)
=============================  ===============================================================

In-process API (what tests and the demo use)::

    from simulator import ClientSpec, Fault, SimSettings, Simulator

    settings = SimSettings(clients=(ClientSpec("acme", "s3cret"),), seed=7, rate=50.0,
                           token_lifetime_s=5.0, retention_events=10_000)
    async with Simulator(settings) as sim:        # binds 127.0.0.1, port 0 = a free port
        sim.token_url                             # http://127.0.0.1:PORT/oauth/token
        sim.stream_url("genesys")                 # ws://127.0.0.1:PORT/api/v2/analytics/events
        sim.stream_url("nice")                    # ws://127.0.0.1:PORT/api/v2/ws/events
        sim.add_client(ClientSpec("other", "pw", platforms=("nice",)))
        sim.inject(Fault(kind="close", client="acme", code=1013, retry_after=3, after_events=50))
        sim.inject(Fault(kind="handshake_error", client="acme", status=429, retry_after=2))
        sim.emit("genesys", "acme", 10)           # append 10 events now (handy with rate=0)
        await sim.wait_for(lambda s: s.stats["acme"].handshakes >= 2, timeout=5)
        sim.stats["acme"].close_codes             # Counter of close codes the client sent
        sim.ledger.keys("genesys", "acme")        # dedup keys emitted on that stream
        sim.snapshot()                            # the JSON of /_sim/stats, as a dict
        sim.injected                              # every fault injected so far, in order
        sim.stop_generating()                     # no more live events nor scheduled faults
        sim.streams["nice", "acme"].log           # the retained events (EventLog)

pytest: ``tests/conftest.py`` has a ``simulator`` fixture (client ``acme`` / ``SIM_SECRET``) and
a ``sim_token`` fixture (``await sim_token(sim, client_id, secret)`` -> an access token).

Model (decisions, documented here once):

- **Each client id is a tenant** with its own streams: one per platform it may use
  (``ClientSpec.platforms``; a connection to another platform's endpoint answers 403). A stream
  is an append-only event log with a retention buffer (``retention_events`` and
  ``retention_s``); every connection replays from its resume point, then goes live on the same log,
  so connections of one client see the same events and a reconnect loses nothing retained.
- Events are generated from simulator start at ``rate`` events/s per stream (``rate=0``: only
  ``emit``), seeded: realistic types per platform, ``correlation_ids`` live interactions that end
  and are replaced, timestamps RFC 3339 UTC with ms, strictly increasing per correlation id, and
  never repeated for one (type, correlationId): the dedup key identifies an event.
- Resumption: no resume point = live only. Genesys ``since=T`` replays every retained event with
  ``timestamp >= T`` (inclusive). NICE ``cursor=C`` replays after C and also re-sends up to
  ``nice_rewind_max`` events at or before C (seeded). A resume point older than retention replays
  from the oldest retained event, so the first replayed timestamp is later than ``since`` (or the
  cursor's successor was evicted): that is how a client sees the gap; ``stats`` counts it too. An
  unreadable ``since``/``cursor`` is treated the same way (replay from the oldest retained).
- Live duplicates: each live event is sent again later on the same connection with probability
  ``duplicate_rate`` (seeded): identical bytes, as "at least once" allows.
- Time: ``clock`` (epoch seconds, default ``time.time``) plus ``clock_skew_s`` is the server's
  clock (``iat``/``exp``, event timestamps). ``time_scale`` compresses the platform durations of
  ``SimSettings`` (token and refresh-token lifetimes, ping windows, heartbeat, retention age,
  closing-notice delay, silent hold, limit Retry-After): ``time_scale=3600`` makes a 1 h NICE
  token last 1 s, and ``expires_in`` on the wire is the compressed value. Event rates, fault
  times (``Fault.at_s``) and fault durations/delays are real seconds. A ``Retry-After`` header is
  whole seconds (rounded up, at least 1); the 1013 reason's ``retry_after`` is the number given.
- Token lifetime: ``POST /oauth/token`` gives a client the lifetime of its first platform
  (``ClientSpec.platforms[0]``) unless ``token_lifetime_s`` is set; a token works on every
  platform the client may use.
- Limits: at most ``max_connections`` open WebSockets per client id (both platforms); beyond,
  the handshake answers 429 with Retry-After (``limit_answer="429"``) or opens and closes with 1013
  ``{"retry_after": s}`` (``limit_answer="1013"``). A connection whose token expires is closed
  with 1008; a client sending no ping within its platform's window (15 s Genesys, 30 s NICE,
  scaled) is dropped without a close frame. Pings are answered within 2 s unless a fault says not.
- After an auth close (1008, or 1000 with ``{"error": ...}``), the connection's token is revoked:
  reusing it is answered 401 and counted in ``handshakes_expired_token``.
- The ledger records every distinct event sent at least once to some client: dedup key
  ``eventType|correlationId|timestamp`` -> sha256 of the frame bytes (hex, 16 chars), plus the
  per-stream emission order; hash the Kafka raw record value the same way to compare.
- ``ClientStats`` counts per client: token grants by grant, token errors by answer, handshakes,
  handshakes that opened, handshakes with an expired/revoked token, attempts made before a
  Retry-After had elapsed (token endpoint and handshakes apart), handshake rejections by status,
  pings, pongs, close frames received by code, closes sent by code, drops without a close frame,
  events and duplicates sent, malformed frames sent by variant, gaps served, faults fired by kind.

Faults (``faults.py`` is the catalogue; ``ccstream simulate --help`` prints it): scripted per
connection (``client``, ``platform``, ``connection`` = the client's Nth connection counted from 1,
``after_events``, ``count``), armed now with ``sim.inject`` or later with ``Fault.at_s``, or drawn
on a seeded schedule from a preset (``SimSettings(preset="chaos")``): the same seed gives the
same faults at the same times. Presets only use faults a correct client survives without loss.
"""

from simulator.faults import PRESETS, Fault, FaultKind, FaultScriptError, parse_fault
from simulator.ledger import ClientStats, Ledger
from simulator.server import Simulator
from simulator.settings import ClientSpec, SimSettings

__all__ = [
    "PRESETS",
    "ClientSpec",
    "ClientStats",
    "Fault",
    "FaultKind",
    "FaultScriptError",
    "Ledger",
    "SimSettings",
    "Simulator",
    "parse_fault",
]
