"""The ``[cluster]`` section and ``topics.slots``: opt-in, one source of defaults, timings that
keep the lease shorter than an eviction (no I/O)."""

from __future__ import annotations

import pytest

from ccstream.config import ClusterSettings, ConfigError, parse
from ccstream.topics import contract_topics


def test_cluster_mode_is_off_by_default_and_adds_no_topic() -> None:
    """Without the section nothing changes: disabled, and no slot topic is created."""
    config = parse({}, environ={})
    assert config.cluster.enabled is False
    assert config.topics.slots == "ccstream.connect.slots"
    assert config.topics.slots not in {spec.name for spec in contract_topics(config)}


def test_the_designs_defaults() -> None:
    """group_id, 32 slots at creation, session 6 s / heartbeat 1 s, lease session - 2 x hb."""
    cluster = ClusterSettings()
    assert (cluster.group_id, cluster.slots, cluster.instance_id) == (
        "ccstream-connect", 32, None)
    assert (cluster.session_timeout_s, cluster.heartbeat_interval_s,
            cluster.rebalance_timeout_s) == (6.0, 1.0, 10.0)
    assert cluster.lease() == 4.0
    assert (cluster.transaction_timeout_s, cluster.takeover_read_timeout_s,
            cluster.revoke_commit_timeout_s) == (10.0, 30.0, 2.0)


def test_enabling_creates_the_slot_topic_sized_by_cluster_slots() -> None:
    """In cluster mode ensure_topics also creates the slot topic with cluster.slots partitions,
    and the environment overrides the file as for any section."""
    config = parse({"cluster": {"slots": 8}}, environ={"CCSTREAM_CLUSTER__ENABLED": "true"})
    [slots] = [s for s in contract_topics(config) if s.name == config.topics.slots]
    assert slots.partitions == 8


@pytest.mark.parametrize(("cluster", "key"), [
    ({"session_timeout_s": 2.0, "heartbeat_interval_s": 1.5}, "heartbeat_interval_s"),
    ({"session_timeout_s": 6.0, "heartbeat_interval_s": 1.0, "lease_s": 5.0}, "lease_s"),
    ({"session_timeout_s": 6.0, "heartbeat_interval_s": 1.0, "lease_s": 0.5}, "lease_s"),
    ({"slots": 0}, "cluster.slots"),
    ({"group_id": "has space"}, "cluster.group_id"),
    ({"leases": 3}, "cluster.leases"),
])
def test_bad_cluster_settings_are_refused_with_the_key(cluster: dict[str, object],
                                                       key: str) -> None:
    """A lease that could outlive an eviction, a heartbeat too slow for the session, and the
    usual wrong values are rejected at start, naming the key."""
    with pytest.raises(ConfigError) as caught:
        parse({"cluster": cluster}, environ={})
    assert key in str(caught.value)
