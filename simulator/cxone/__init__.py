"""A simulator of NICE CXone's real-time data APIs (``docs/cxone.md``) that can
misbehave on purpose and counts every client rule a client breaks.

One aiohttp server on one loopback port serves everything (``issuer`` and ``api_endpoint``
point back to it):

=====================================================  ========================================
``GET /.well-known/openid-configuration``              ``issuer``, ``token_endpoint``, ...
``POST /auth/token``                                   password grant: access key id/secret as
                                                       username/password, app client_id/secret
                                                       in the form (or Basic)
``GET /.well-known/cxone-configuration?tenantId=T``    ``api_endpoint``, ``area``, ``domain``
``GET {api}/incontactapi/services/vN.N/agents/states``  ``?updatedSince=u``, Bearer token; also
``.../contacts/active``, ``.../skills/activity``       (path matched case-insensitively)
``GET {api}/.../contacts/completed``                   ``?startDate&endDate&top&skip``
``GET /_sim/stats``                                    counters and rule counts per access key
``GET /_sim/ledger``                                   row versions, completed contacts, outages
                                                       (``?access_key=``, ``?rows=1``,
                                                       ``?min_outage_s=``)
``POST /_sim/faults``                                  a JSON list of faults (``faults.py``)
=====================================================  ========================================

In-process API (what tests and the demo use)::

    from simulator.cxone import CxFault, CxoneSimulator, CxSettings, CxTenant

    settings = CxSettings(tenants=(CxTenant("acme", access_key_id="AK1",
                                            access_key_secret="s3cret", client_id="app",
                                            client_secret="appsecret", agents=8, skills=3),),
                          seed=7, rate=5.0, time_scale=1.0, preset=None, completion_lag_s=20)
    async with CxoneSimulator(settings) as sim:    # 127.0.0.1, port 0 = a free port
        sim.base_url              # http://127.0.0.1:PORT: the client's discovery_url
        sim.token_url             # .../auth/token
        sim.api_endpoint("AK1")   # what cxone-configuration answers now (moves on area_move)
        sim.inject(CxFault(kind="stall", access_key="AK1", duration_s=12))
        sim.inject({"kind": "rest_error", "status": 429, "retry_after": 2, "at_s": 30})
        sim.step("AK1", "start", n=3)   # apply changes now (handy with rate=0)
        sim.rules("AK1")          # {"early_request": 0, "expired_token": 0, "concurrent_poll": 0}
        sim.stats["AK1"]          # CxStats: polls per endpoint and outcome, 304s, 429s, ...
        sim.ledger                # CxLedger: .versions(key), .completed(key), .outages(key, ep)
        sim.model("AK1")          # the tenant's TenantModel (current rows, history)
        sim.stop_generating()     # no more changes nor scheduled/preset faults
        sim.snapshot()            # the JSON of /_sim/stats, as a dict
        await sim.wait_for(lambda s: s.stats["AK1"].not_modified > 0, timeout=5)

Model (decisions, documented here once):

- **One tenant per access key** (``CxTenant``); ``name`` is its ``tenantId`` (JWT claim and
  cxone-configuration parameter). Its app is ``client_id``/``client_secret``; another tenant's
  app is ``invalid_client``. Ledger, stats and rules are per access key.
- **Clocks.** ``settings.clock`` (epoch s, default the system clock; tests inject one) is the
  *steady* clock: Retry-After and token expiry are judged on it. The *server clock* on the wire
  is steady + skew (``clock_skew_s``, the ``clock_skew`` fault) in integer ms and never runs
  backwards (a step back holds it until real time catches up): ``lastPollTime``, ``Date``,
  ``iat``/``exp``, every row time and the ledger's intervals are on it. Polls in flight,
  stalls, generation and fault times use the event loop's monotonic clock. ``time_scale``
  divides the platform durations (token lifetime 3600 s, retention 24 h, completion lag); a
  ``Retry-After`` header is whole real seconds (rounded up, at least 1).
- **Data.** A seeded generator makes ``rate`` changes/s per tenant (``rate=0``: only
  ``step``): agents log in and out, go available/unavailable, take contacts (InboundContact),
  wrap up (ACW); contacts start on a skill (queued if no agent of that skill is free), are
  assigned, held, end (or are abandoned); skill rows are counters derived from both. Every
  change is a row version whose ``lastUpdateTime`` is the server's now, strictly increasing
  per row (bumped by 1 ms when needed); the history keeps each version with the interval it
  was current, so a judge can find "versions current >= 2 x poll_interval".
- **Polls** (contract s.3): ``updatedSince`` inclusive, each row in its current state only;
  304 without a body when no row changed since ``u``; ``u`` older than ``retention_s`` -> 200
  full snapshot + ``X-Data-Truncated: true``; no ``u`` -> full snapshot; unreadable ``u`` ->
  400. ``lastPollTime`` is inside ``resultSet`` for all three endpoints (the *modelled* form).
  Ended contacts leave contacts/active silently.
- **Completed contacts** (s.6): completion time = the contact's final ``lastUpdateTime``; the
  listing is ``[startDate, endDate]`` inclusive in completion order; each completion is listed
  after its own seeded lag (uniform up to ``completion_lag_s``), so rows completed just before
  a query can be inserted later, shifting pages; ``completed_shift`` relists rows of the page
  just served (repeats, never removals). Empty page -> 204; ``top`` is capped at ``max_top``.
- **Errors.** Token endpoint: bad app -> 401 ``invalid_client`` (checked first), bad access
  key -> 400 ``invalid_grant``, grant type not password -> 400 ``unsupported_grant_type``. API:
  missing/unknown/expired/revoked token -> 401; an ``api_endpoint`` left by ``area_move`` ->
  401 (or 404); unknown path or version -> 404.
- **Rules** (s.9, ``rules.py``), counted per access key: ``early_request`` (API or token
  request before a 429's send time + its Retry-After, 50 ms tolerance at both ends: a request
  within 50 ms after the 429 may have crossed it; one clock per key, token 429s included),
  ``expired_token`` (a token past the earlier of ``exp`` and issue + ``expires_in``; tokens
  revoked by ``expire_token`` are counted apart, in ``revoked_token_requests``),
  ``concurrent_poll`` (a poll started while one of the same endpoint and key was in flight, the
  older one still in flight 50 ms later; in flight = request until answer sent or connection
  closed). A correct client leaves all three at 0.
- **Ledger**: see ``ledger.py`` (row versions with sha256 of ``values.canonical``, completed
  contacts, outages = intervals between successive 200/304 answers per endpoint).

Faults (``faults.py`` is the catalogue; ``ccstream simulate --platform cxone --help`` prints
it): discovery_error, area_move, token_error, expire_token, clock_skew, repeat_rows, collapse,
rest_error, stall, truncate, completed_shift; aimed per access key, ``count`` answers, armed now
or at ``at_s``, or drawn on a seeded schedule from a preset (``chaos``, ``auth``, ``network``,
``data``): the same seed gives the same faults at the same times, and presets only hold faults
a client following the contract survives without loss.

Pure modules (no clock, randomness, I/O or event loop): ``values``, ``settings``, ``model``,
``completed``, ``tokens``, ``rules``, ``stats``, ``faults``, ``board``, ``ledger``. The I/O is
``server`` and ``handlers`` (aiohttp) and ``command`` (the CLI).
"""

from simulator.cxone.faults import PRESETS, CxFault, CxFaultError, CxFaultKind, parse_fault
from simulator.cxone.ledger import CxLedger
from simulator.cxone.rules import RULES
from simulator.cxone.server import CxoneSimulator
from simulator.cxone.settings import CxSettings, CxTenant
from simulator.cxone.stats import CxStats

__all__ = [
    "PRESETS",
    "RULES",
    "CxFault",
    "CxFaultError",
    "CxFaultKind",
    "CxLedger",
    "CxSettings",
    "CxStats",
    "CxTenant",
    "CxoneSimulator",
    "parse_fault",
]
