"""Per access key counters of what a client did and what the server answered (pure).

The rule counts live in ``rules.RuleBook``; these are the other facts a test or the demo reads:
discovery calls, token traffic, polls per endpoint and outcome, rows sent, 304s, 429s,
truncations, backfill pages, faults fired. Requests that name no known access key are counted
under ``UNKNOWN``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

UNKNOWN = "(unknown)"
# outcomes of a poll (ccstream_polls_total's, finer): what the server did with it
OUTCOMES = ("ok", "not_modified", "truncated", "throttled", "error", "unauthorized",
            "not_found", "bad_request", "abandoned")


@dataclass
class CxStats:
    discovery_openid: int = 0           # openid-configuration answers (no key: under UNKNOWN)
    discovery_configuration: int = 0    # cxone-configuration answers for this key's tenant
    discovery_errors: int = 0
    token_requests: int = 0
    tokens_issued: int = 0
    token_errors: Counter[int] = field(default_factory=Counter)   # by status
    api_requests: int = 0               # every request to an API base (polls and completed)
    polls: dict[str, Counter[str]] = field(default_factory=dict)  # endpoint -> outcome
    rows_sent: Counter[str] = field(default_factory=Counter)      # endpoint -> rows
    repeats_sent: int = 0               # rows sent again by repeat_rows
    not_modified: int = 0               # 304s
    throttled: int = 0                  # 429s sent (API and token endpoint)
    server_errors: int = 0              # 5xx sent (API and token endpoint)
    truncations: int = 0                # 200 + X-Data-Truncated
    stalls: int = 0                     # answers held by the stall fault
    abandoned: int = 0                  # answers whose connection closed before they were sent
    expired_token_requests: int = 0     # the rule expired_token, again, for the stats view
    revoked_token_requests: int = 0     # tokens revoked by expire_token, then used (not a rule)
    invalid_token_requests: int = 0
    wrong_base_requests: int = 0        # an old api_endpoint after area_move
    backfill_pages: int = 0             # contacts/completed answers (200 or 204)
    backfill_empty: int = 0             # 204s
    backfill_rows: int = 0
    relisted_rows: int = 0              # completed_shift
    collapsed_versions: int = 0         # collapse: versions made at once
    faults: Counter[str] = field(default_factory=Counter)          # fired, by kind

    def poll(self, endpoint: str, outcome: str) -> None:
        self.polls.setdefault(endpoint, Counter())[outcome] += 1

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Counter):
                out[f.name] = {str(k): v for k, v in value.items()}
            elif isinstance(value, dict):
                out[f.name] = {k: dict(v) for k, v in value.items()}
            else:
                out[f.name] = value
        return out
