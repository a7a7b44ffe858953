"""A faithful simulator of the real Genesys Cloud Notifications API and its analytics backfill
(``docs/genesys-cloud.md``), able to break every rule a client must follow and to
count every rule a client breaks. Written from the contract, not from ccstream's client.

One aiohttp server on one loopback port serves everything (``api_url = login_url``):

==============================================================  ===================================
``POST /oauth/token``                                            client credentials, Basic auth,
                                                                 opaque token, no refresh token
``GET /api/v2/routing/queues``, ``GET /api/v2/users``            paged listings
``POST /api/v2/notifications/channels``                          ``{id, connectUri, expires}``
``HEAD /api/v2/notifications/channels/{id}``                     200 live / 404 gone
``GET|PUT|POST .../channels/{id}/subscriptions[?ignoreErrors]``  list / replace / add
``POST /api/v2/analytics/{conversations,users}/details/query``   backfill (s.7)
``GET /channels/{id}`` (WebSocket, no token)                     notifications, heartbeats, pongs
``GET /_sim/stats``                                              counters and rules per client
``GET /_sim/ledger`` (``?client=``, ``notifications=0``,          notifications written, uncovered
``activity=0``)                                                  intervals, activity, per client
``POST /_sim/faults``                                            a JSON list of faults
==============================================================  ===================================

In-process API::

    from simulator.genesys_cloud import GcClient, GcFault, GcSettings, GenesysCloudSimulator

    settings = GcSettings(clients=(GcClient("acme", "s3cret", queues=4, users=6),), seed=7,
                          rate=20.0, time_scale=1.0, preset=None)
    async with GenesysCloudSimulator(settings) as sim:   # port 0 = a free loopback port
        sim.base_url                    # http://127.0.0.1:PORT (login + api + streaming)
        sim.connect_uri(channel_id)     # ws://127.0.0.1:PORT/channels/{id}
        sim.inject(GcFault(kind="closing_notice", client="acme", delay_s=2.0))
        sim.inject({"kind": "rest_error", "status": 429, "path": "/api/v2/analytics/*"})
        sim.queue_ids("acme"), sim.user_ids("acme")
        sim.rules("acme")               # rule -> count (s.11); all 0 for a correct client
        sim.stats["acme"]               # GcStats counters (calls per route, 429s, sockets...)
        sim.ledger                      # GcLedger: .notifications[client], .to_json(client)
        sim.uncovered("acme")           # [(from, to)] server-view uncovered intervals (epoch s)
        sim.stores["acme"]              # ActivityStore: the truth behind the analytics API
        sim.publish(notification)       # write one Notification now (tests with rate=0)
        sim.tick(sim.now())             # run the clock's decisions now (tests with a clock)
        await sim.wait_for(lambda s: s.stats["acme"].sockets_opened >= 1, timeout=5)
        sim.stop_generating()           # no more notifications, no more scheduled faults
        sim.snapshot()                  # the /_sim/stats JSON as a dict
        sim.failure                     # the exception a background task died of, or None

Model (decisions, documented here once):

- **Each OAuth client is an org** with seeded queue and user ids (``GcClient.queues``,
  ``.users``). Its generator (``rate`` steps/s) starts, connects, ends conversations on queues
  (``v2.routing.queues.{q}.conversations``, the agent's ``v2.users.{u}.conversations``) and changes
  presence and routing status (``v2.users.{u}.presence|routingStatus``); eventBodies carry the
  s.8 key fields (``id``; ``modifiedDate``; ``routingStatus.startTime``, strictly increasing).
  The same step writes the truth into the org's ``ActivityStore`` (conversations with
  participants/sessions/segments; presence and routing-status records).
- **No replay**: a notification goes to the sockets listening at publication time (the newest
  socket of each live channel holding the topic ``Permitted``; during a replace grace also the
  superseded one); otherwise it is counted ``notifications_dropped`` and is gone.
- **Time**: ``clock`` (epoch s, default the wall clock) drives every decision: token expiry,
  channel TTL, the rate window, Retry-After promises, heartbeats, notice and grace timers,
  rules, coverage, analytics visibility. A tick every ``tick_s`` real seconds carries out what
  is due, so a test may inject a clock and jump it. ``time_scale`` divides the platform
  durations (token lifetime 24 h, channel TTL 24 h, heartbeat 30 s, notice 60 s, rate window
  60 s; ``expires_in`` on the wire is the scaled value); the replace grace (1 s), analytics lag
  (5 s), silent hold, fault times and fault durations are real seconds.
- **Tokens** are opaque; a REST call with an unknown token is 401 ``bad.credentials``; with an
  expired one too, and that breaks the rule ``expired_token``.
- **Rate limit**: ``rate_limit`` (300) admitted calls per token in a sliding window (HEAD and
  analytics count; tokens and sockets do not); beyond, 429 with the normalised body and
  ``Retry-After`` = whole seconds until a slot frees (at least 1).
- **Channels**: see ``channels.py`` (TTL, eviction socketless first then by last use, one socket
  per channel with 4000 "replaced" after ``replace_grace_s``). A handshake on an unknown or gone
  channel is answered with the 404 frame and close 1000.
- **Subscriptions**: ids are checked in this order: > ``max_topics`` ids on the channel -> 400;
  unknown or malformed ids (other topics, ids of another org, ids of 200+ characters) -> 400,
  or ``Rejected`` with ``ignoreErrors=true``; denied ones (``deny_topics``) -> 403, or
  ``Rejected`` with ``missingPermissions``. A combined ``prefix?a&b`` id counts once.
- **Coverage** (server view): see ``coverage.py``; ``uncovered`` lists the intervals where some
  once-covered ``Permitted`` topic had no receiving socket, followed by coverage (down time
  included; a silent socket does not cover).
- **Analytics**: see ``analytics.py`` (lag L, overlap matching, paging with inserted items).
- **Rules** (``access.RULES``): counted per OAuth client, 50 ms tolerance on Retry-After; the
  socket overlap is measured from the newer socket's handshake (5 s after a closing notice on
  the older one, 1 s otherwise) and only while the server itself has not closed the older one,
  so the judge sets ``replace_grace_s = 10``.

Faults (``faults.py`` is the catalogue, ``describe()`` prints it): scripted (``client``,
``count``, ``at_s``, ``socket``, ``after_notifications``), armed now with ``inject`` or later
with ``at_s``, or drawn from a preset on a seeded schedule (``GcSettings(preset="chaos")``;
presets ``chaos``, ``network``, ``channels``, ``rest``, ``analytics``, ``frames``): the same seed
gives the same faults at the same times. A socket or channel fault waits, armed, until its
target exists (the client's newest receiving socket, or the channel with it), so faults drawn
while a client is down fire when it is back.

Pure modules (no asyncio, time, random, socket, aiohttp, websockets): ``settings``, ``model``,
``access``, ``channels``, ``coverage``, ``analytics``, ``generator``, ``faults``, ``board``,
``frames``, ``stats``. I/O: ``server``, ``rest``, ``streaming``, ``firing``, ``command``.
"""

from simulator.genesys_cloud.access import RULES
from simulator.genesys_cloud.faults import PRESETS, GcFault, GcFaultError, parse_fault
from simulator.genesys_cloud.generator import Notification
from simulator.genesys_cloud.server import GenesysCloudSimulator
from simulator.genesys_cloud.settings import GcClient, GcSettings
from simulator.genesys_cloud.stats import GcLedger, GcStats

__all__ = [
    "PRESETS",
    "RULES",
    "GcClient",
    "GcFault",
    "GcFaultError",
    "GcLedger",
    "GcSettings",
    "GcStats",
    "GenesysCloudSimulator",
    "Notification",
    "parse_fault",
]
