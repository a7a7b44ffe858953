"""Cluster mode: each stream owned by exactly one live ``ccstream connect`` (docs/cluster.md).

Kafka's own group protocol and transactions, nothing else to run:

* the **slot topic** (``topics.slots``, P partitions, no records) is consumed by a consumer group
  (``cluster.group_id``) with a sticky, stream-weighted assignor (``assignor``, deciding with the
  pure ``policy.slots``); the partitions an instance is assigned are the slots it runs, and a
  stream's slot is ``murmur2(name) % P``;
* each owned slot has one **transactional producer**, ``<group_id>.slot-<n>``: starting it fences
  the slot's previous holder, and the slot's cursors are committed in its transactions
  (``slot``), so a replaced instance can never commit a stale cursor; events stay on the
  process's one idempotent producer;
* a **membership lease** (``policy.lease``) stops an instance that cannot confirm it is still a
  member, before anyone can take its slots (``guard``, ``supervisor``).

Pure decisions live in ``connectors.policy`` (``slots``, ``slot_states``, ``lease``); this package
carries them out.
"""
