"""What the server held and answered, per access key: the facts the judge compares (pure).

Per access key (one tenant each):

- every row version: endpoint, key, ``lastUpdateTime``, ``current_from``/``current_to`` (server
  clock; ``current_to`` None while current), sha256 of its canonical JSON
  (``values.canonical``), and how many answers carried it (skill rows: the time is the
  server's internal change time, they carry none on the wire);
- every completed contact with its completion time, when it became visible, its sha256 and
  how many extra listings completed_shift made of it;
- per poll endpoint, the *outages*: the intervals between two successive 200/304 answers to
  that key (so a client's down time is inside one), as ``from``/``to`` on the server clock and
  ``seconds`` elapsed on the server's steady clock (a clock step does not lengthen it).
"""

from __future__ import annotations

import itertools
from typing import Any

from simulator.cxone.completed import Completion
from simulator.cxone.model import TenantModel, Version
from simulator.cxone.values import POLL_ENDPOINTS, iso_ms


class CxLedger:
    def __init__(self) -> None:
        self.models: dict[str, TenantModel] = {}
        self._answers: dict[tuple[str, str], list[tuple[int, float]]] = {}

    def add(self, access_key: str, model: TenantModel) -> None:
        self.models[access_key] = model

    def answered(self, access_key: str, endpoint: str, server_ms: int, steady_s: float) -> None:
        """A 200 or 304 was answered to ``access_key`` on ``endpoint``."""
        self._answers.setdefault((access_key, endpoint), []).append((server_ms, steady_s))

    def versions(self, access_key: str, endpoint: str | None = None) -> list[Version]:
        history = self.models[access_key].history
        return [v for v in history if endpoint is None or v.endpoint == endpoint]

    def completed(self, access_key: str) -> list[Completion]:
        return list(self.models[access_key].completed.entries)

    def answers(self, access_key: str, endpoint: str) -> list[tuple[int, float]]:
        return list(self._answers.get((access_key, endpoint), []))

    def outages(self, access_key: str, endpoint: str,
                min_s: float = 0.0) -> list[dict[str, Any]]:
        """Intervals between successive successful answers longer than ``min_s``."""
        out = []
        answers = self._answers.get((access_key, endpoint), [])
        for (from_ms, from_s), (to_ms, to_s) in itertools.pairwise(answers):
            seconds = to_s - from_s
            if max(seconds, (to_ms - from_ms) / 1000) > min_s:
                out.append({"from": iso_ms(from_ms), "to": iso_ms(to_ms),
                            "seconds": round(seconds, 3)})
        return out

    def to_json(self, access_key: str | None = None, rows: bool = False,
                min_outage_s: float = 1.0) -> dict[str, Any]:
        keys: dict[str, Any] = {}
        for key, model in self.models.items():
            if access_key is not None and key != access_key:
                continue
            answers = {}
            for endpoint in POLL_ENDPOINTS:
                seen = self._answers.get((key, endpoint), [])
                answers[endpoint] = {
                    "count": len(seen),
                    "first": iso_ms(seen[0][0]) if seen else None,
                    "last": iso_ms(seen[-1][0]) if seen else None,
                }
            keys[key] = {
                "tenant": model.name,
                "versions": [v.to_json(rows) for v in model.history],
                "completed": [c.to_json(rows) for c in model.completed.entries],
                "answers": answers,
                "outages": {e: self.outages(key, e, min_outage_s) for e in POLL_ENDPOINTS},
            }
        return {"canonical": 'json.dumps(x, sort_keys=True, separators=(",", ":"), '
                             "ensure_ascii=False).encode()",
                "min_outage_s": min_outage_s, "access_keys": keys}
