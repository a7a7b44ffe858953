"""The judge of a CXone stream: ``cxone.md`` s.9 "The judge's view", exactly. Pure.

Input: the CXone simulator's ledger JSON (``/_sim/ledger``, or ``CxLedger.to_json()``: row
versions with ``current_from``/``current_to`` and sha256, completed contacts, answers and
outages per endpoint, all on the server clock), the raw and clean records, the reported gaps.

**Lost** (each must be none):

1. A row version the server held current for >= 2 x ``poll_interval_s`` during the client's
   run, in a window that overlaps no reported gap, with no raw record for it. The run on an
   endpoint is from its first successful answer to its last (``answers.first``/``last``:
   before the first there is no cursor, and the contract asks no gap for it). The window is
   any stretch of the version's current interval, inside the run, between reported gaps:
   the strictest reading (one such stretch of 2 x ``poll_interval_s`` suffices). Agents and
   contacts are matched by dedup key (``eventType|key|lastUpdateTime``), skills by
   ``skillId`` + JSON-equal row (sha256 of the canonical JSON).
2. On streams with ``backfill`` and ``contacts/active``: a completed contact whose completion
   lies inside a reported gap, with no raw record of its dedup key
   (``cxone.completed_contact|contactId|lastUpdateTime``), for gaps with
   ``to + settle_s + 30 s`` before the clean shutdown; a later gap must be in ``open_gaps``
   (one that is not is judged anyway: see ``Reported.judged``).
3. An outage of an endpoint (no 200/304 between two answers, down time included) longer than
   3 x ``poll_interval_s`` (its length on the server's steady clock: a clock step does not
   lengthen it) that is not inside the union of reported gaps, 1 s tolerance at both ends.

**Duplicated**: two clean records with one dedup key. The simulator's rule counts
(``early_request``, ``expired_token``, ``concurrent_poll``) are carried as ``rule_breaks``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from devtools.judges import (
    Evidence,
    Interval,
    Loss,
    Rec,
    Reported,
    Verdict,
    contained,
    duplicated,
    inside,
    json_digest,
    of_stream,
    overlaps,
    record_counts,
    split_dedup_key,
    text,
    uncovered_parts,
    when,
)

AGENTS, CONTACTS, SKILLS = "agents/states", "contacts/active", "skills/activity"
POLL_ENDPOINTS = (AGENTS, CONTACTS, SKILLS)
EVENT_TYPES = {AGENTS: "cxone.agent_state", CONTACTS: "cxone.contact",
               SKILLS: "cxone.skill_activity"}
COMPLETED_EVENT = "cxone.completed_contact"
OUTAGE_TOLERANCE_S = 1.0   # s.9 rule 3


@dataclass(frozen=True)
class CxoneSpec:
    """The judged stream as configured (s.1)."""

    stream: str
    access_key: str
    poll_interval_s: float = 5.0
    settle_s: float = 60.0
    endpoints: tuple[str, ...] = POLL_ENDPOINTS
    backfill: bool = True


@dataclass
class _Index:
    """The stream's raw records, indexed the ways the rules look them up."""

    keys: set[str]
    skills: set[tuple[str, str]]    # (skillId, sha256 of the canonical row)

    @classmethod
    def of(cls, raw: Sequence[Rec]) -> _Index:
        keys, skills = set(), set()
        for record in raw:
            key = record.dedup_key
            if key is None:
                continue
            keys.add(key)
            parts = split_dedup_key(key)
            if parts is not None and parts[0] == EVENT_TYPES[SKILLS]:
                digest = json_digest(record.value)
                if digest is not None:
                    skills.add((parts[1], digest))
        return cls(keys, skills)

    def holds(self, version: Mapping[str, Any]) -> bool:
        endpoint, key = version["endpoint"], str(version["key"])
        if endpoint == SKILLS:
            return (key, str(version["sha256"])) in self.skills
        return f"{EVENT_TYPES[endpoint]}|{key}|{version['lastUpdateTime']}" in self.keys


def _tenant(ledger: Mapping[str, Any], spec: CxoneSpec) -> Mapping[str, Any]:
    try:
        doc: Mapping[str, Any] = ledger["access_keys"][spec.access_key]
    except KeyError:
        raise ValueError(f"the ledger has no access key {spec.access_key!r}") from None
    floor = float(ledger.get("min_outage_s", 0.0))
    if floor > 3 * spec.poll_interval_s:
        raise ValueError(f"the ledger lists outages over {floor} s only; rule 3 needs those "
                         f"over {3 * spec.poll_interval_s} s (ask with ?min_outage_s=)")
    return doc


def _runs(doc: Mapping[str, Any], endpoints: Sequence[str]) -> dict[str, Interval]:
    """Each endpoint's run (first to last successful answer); an endpoint never answered is
    judged over the stream's whole run."""
    runs: dict[str, Interval] = {}
    for endpoint in endpoints:
        seen = doc.get("answers", {}).get(endpoint) or {}
        if seen.get("count") and seen.get("first") and seen.get("last"):
            runs[endpoint] = (when(seen["first"]), when(seen["last"]))
    if runs:
        whole = (min(a for a, _ in runs.values()), max(b for _, b in runs.values()))
        for endpoint in endpoints:
            runs.setdefault(endpoint, whole)
    return runs


def _rule1(doc: Mapping[str, Any], spec: CxoneSpec, index: _Index, union: list[Interval],
           counts: dict[str, int]) -> list[Loss]:
    lost: list[Loss] = []
    need = 2 * spec.poll_interval_s
    runs = _runs(doc, spec.endpoints)
    for version in doc.get("versions", ()):
        endpoint = version["endpoint"]
        if endpoint not in spec.endpoints or endpoint not in runs:
            continue
        run_from, run_to = runs[endpoint]
        start = when(version["current_from"])
        end = run_to if version.get("current_to") is None else when(version["current_to"])
        window = (max(start, run_from), min(end, run_to))
        if window[1] - window[0] < need:
            continue
        clear = max((b - a for a, b in uncovered_parts(window, union)), default=0.0)
        if clear < need:
            continue
        counts["versions_judged"] += 1
        if index.holds(version):
            continue
        lost.append(Loss(1, f"{endpoint} {version['key']} @ {version['lastUpdateTime']}",
                         f"current {version['current_from']} .. {version.get('current_to')} "
                         f"({end - start:.3f} s), {clear:.3f} s of it in the run and outside "
                         f"every reported gap; no raw record of it (sha256 "
                         f"{str(version['sha256'])[:16]})"))
    return lost


def _rule2(doc: Mapping[str, Any], spec: CxoneSpec, index: _Index, reported: Reported,
           *, shutdown_at: float, counts: dict[str, int]) -> list[Loss]:
    if not spec.backfill or CONTACTS not in spec.endpoints:
        return []
    judged, deferred = reported.judged(spec.settle_s, shutdown_at)
    counts["gaps_judged"], counts["gaps_deferred"] = len(judged), len(deferred)
    lost: list[Loss] = []
    for contact in doc.get("completed", ()):
        at = when(contact["completed_at"])
        if not inside(at, judged):
            continue
        counts["completions_judged"] += 1
        key = f"{COMPLETED_EVENT}|{contact['contactId']}|{contact['completed_at']}"
        if key not in index.keys:
            gap = next(g for g in judged if g[0] <= at <= g[1])
            lost.append(Loss(2, f"completed contact {contact['contactId']} @ "
                                f"{contact['completed_at']}",
                             f"completed inside the reported gap {text(gap)}; no raw record "
                             f"of {key}"))
    return lost


def _rule3(doc: Mapping[str, Any], spec: CxoneSpec, union: list[Interval],
           counts: dict[str, int]) -> list[Loss]:
    lost: list[Loss] = []
    for endpoint in spec.endpoints:
        for outage in doc.get("outages", {}).get(endpoint, ()):
            if float(outage["seconds"]) <= 3 * spec.poll_interval_s:
                continue
            counts["outages_judged"] += 1
            interval = (when(outage["from"]), when(outage["to"]))
            if contained(interval, union, OUTAGE_TOLERANCE_S):
                continue
            near = [g for g in union if overlaps(g, interval)]
            lost.append(Loss(3, f"{endpoint} outage {outage['from']} .. {outage['to']} "
                                f"({outage['seconds']} s)",
                             "not inside the reported gaps (1 s tolerance); overlapping: "
                             + (", ".join(text(g) for g in near) or "none")))
    return lost


def _answered_unrecorded(doc: Mapping[str, Any], spec: CxoneSpec, index: _Index,
                         union: list[Interval]) -> int:
    """Information, not a rule of s.9: versions the server carried in a 200 whose current
    interval touches no reported gap, with no raw record (the README's "every row version the
    server answered")."""
    count = 0
    for version in doc.get("versions", ()):
        if version["endpoint"] not in spec.endpoints or not version.get("answered"):
            continue
        start = when(version["current_from"])
        end = float("inf") if version.get("current_to") is None else when(version["current_to"])
        if any(overlaps((start, end), g) for g in union) or index.holds(version):
            continue
        count += 1
    return count


def judge_cxone(ledger: Mapping[str, Any], spec: CxoneSpec, evidence: Evidence) -> Verdict:
    """The verdict on one CXone stream (see the module docstring for each rule)."""
    doc = _tenant(ledger, spec)
    raw = of_stream(evidence.raw, spec.stream)
    clean = of_stream(evidence.clean, spec.stream)
    reported = Reported.of(evidence.gap_lines, evidence.open_gaps, spec.stream)
    union = reported.union
    index = _Index.of(raw)
    counts = {**record_counts(raw, clean, reported), "versions_judged": 0,
              "completions_judged": 0, "outages_judged": 0, "gaps_judged": 0,
              "gaps_deferred": 0}
    lost = [*_rule1(doc, spec, index, union, counts),
            *_rule2(doc, spec, index, reported, shutdown_at=evidence.shutdown_at,
                   counts=counts),
            *_rule3(doc, spec, union, counts)]
    counts["versions"] = sum(1 for v in doc.get("versions", ())
                             if v["endpoint"] in spec.endpoints)
    counts["completed"] = len(doc.get("completed", ()))
    counts["answered_unrecorded"] = _answered_unrecorded(doc, spec, index, union)
    return Verdict("cxone", spec.stream, tuple(lost), duplicated(clean), counts,
                   dict(evidence.rules))

