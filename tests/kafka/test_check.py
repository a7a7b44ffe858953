"""``ccstream check`` against the real broker and the three simulators on loopback.

A good configuration passes every line and exits 0, and afterwards nothing was written: no
topic created, no event read or produced, no channel made. Each kind of bad configuration fails
with a line naming it and its fix, and a non-zero exit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.connector import SECRET

from ccstream import cli
from ccstream.commands.check import Line, check
from ccstream.config import parse
from ccstream.topics import ensure_topics, partition_count
from devtools.devkafka import free_port
from simulator import ClientSpec, SimSettings, Simulator
from simulator.cxone import CxoneSimulator, CxSettings, CxTenant
from simulator.genesys_cloud import GcClient, GcSettings, GenesysCloudSimulator

pytestmark = pytest.mark.kafka

TENANT = CxTenant("acme", access_key_id="AK1", access_key_secret="ak-secret", client_id="app",
                  client_secret="app-secret", agents=2, skills=1)


def _guide_sims() -> tuple[Simulator, Simulator]:
    def sim(seed: int) -> Simulator:
        return Simulator(SimSettings(clients=(ClientSpec("acme", SECRET, platforms=("genesys",)),
                                              ClientSpec("nope", SECRET, platforms=("nice",))),
                                     seed=seed, rate=0.0))
    return sim(1), sim(2)


def _config(bootstrap: str, prefix: str, streams: list[dict[str, Any]],
            **kafka: Any) -> Any:
    return parse({
        "kafka": {"bootstrap_servers": bootstrap, "partitions": 2, **kafka},
        "topics": {"raw": f"{prefix}.raw", "clean": f"{prefix}.clean",
                   "cursors": f"{prefix}.cursors", "dlq": f"{prefix}.dlq"},
        "connector": {"open_timeout_s": 3.0},
        "streams": streams}, environ={})


async def _run(config: Any) -> tuple[int, list[Line]]:
    lines: list[Line] = []
    code = await check(config, "test.toml", lines.append)
    return code, lines


def _failed(lines: list[Line]) -> list[Line]:
    return [line for line in lines if not line.ok]


async def test_a_good_configuration_passes_and_writes_nothing(bootstrap: str,
                                                              topic_prefix: str) -> None:
    """Kafka, the four missing topics (validated, not created), every credential and every
    endpoint (both regions of a failover list, Genesys Cloud's listing, CXone's polls) are OK;
    exit 0; no topic exists afterwards, no event was sent, no channel made, sockets closed 1000."""
    region_a, region_b = _guide_sims()
    gc_settings = GcSettings(clients=(GcClient("gc", "gc-secret", queues=2, users=2),), seed=7)
    async with region_a, region_b, GenesysCloudSimulator(gc_settings) as gc, \
            CxoneSimulator(CxSettings(tenants=(TENANT,), seed=7)) as cx:
        config = _config(bootstrap, topic_prefix, [
            {"name": "g", "platform": "genesys", "client_id": "acme", "client_secret": SECRET,
             "endpoints": [
                 {"url": region_a.stream_url("genesys"), "token_url": region_a.token_url},
                 {"url": region_b.stream_url("genesys"), "token_url": region_b.token_url}]},
            {"name": "gc", "platform": "genesys-cloud", "api_url": gc.base_url,
             "client_id": "gc", "client_secret": "gc-secret",
             "topics": ["v2.routing.queues.{queue}.conversations"]},
            {"name": "cx", "platform": "cxone", "discovery_url": cx.base_url,
             "access_key_id": "AK1", "access_key_secret": "ak-secret", "client_id": "app",
             "client_secret": "app-secret", "endpoints": ["agents/states", "skills/activity"]},
        ])
        code, lines = await _run(config)
        assert code == 0, [line.render() for line in lines]
        text = "\n".join(line.render() for line in lines)
        assert f"topic {topic_prefix}.cursors: missing: the broker accepts creating it" in text
        assert text.count("handshake answered 101; closed with 1000, no event read") == 2
        assert "GET /api/v2/routing/queues page 1 answered 200" in text
        assert text.count("one updatedSince poll answered 200") == 2
        assert SECRET not in text and "gc-secret" not in text
        for sim in (region_a, region_b):
            stats = sim.stats["acme"]
            assert stats.handshakes_opened == 1 and stats.close_codes[1000] == 1
            assert stats.events_sent == 0
        assert gc.stats["gc"].channels_created == 0
    for suffix in ("raw", "clean", "cursors", "dlq"):
        assert await partition_count(bootstrap, f"{topic_prefix}.{suffix}") == 0


async def test_each_kind_of_bad_configuration_is_named_with_its_fix(
        bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong secret (401 invalid_client), a forbidden stream (403), an unreachable endpoint,
    an unset secret variable and topics the broker would refuse are each one FAIL line; exit 1."""
    monkeypatch.delenv("CCSTREAM_TEST_UNSET_SECRET", raising=False)
    region_a, _ = _guide_sims()
    async with region_a:
        config = _config(bootstrap, topic_prefix, [
            {"name": "bad-secret", "platform": "genesys", "url": region_a.stream_url("genesys"),
             "token_url": region_a.token_url, "client_id": "acme", "client_secret": "wrong"},
            {"name": "forbidden", "platform": "genesys", "url": region_a.stream_url("genesys"),
             "token_url": region_a.token_url, "client_id": "nope", "client_secret": SECRET},
            {"name": "unreachable", "platform": "nice",
             "url": f"ws://127.0.0.1:{free_port()}/api/v2/ws/events",
             "token_url": region_a.token_url, "client_id": "nope", "client_secret": SECRET},
            {"name": "unset", "platform": "nice", "url": region_a.stream_url("nice"),
             "token_url": region_a.token_url, "client_id": "nope",
             "client_secret_env": "CCSTREAM_TEST_UNSET_SECRET"},
        ], replication_factor=3)
        code, lines = await _run(config)
    assert code == 1
    failed = {line.what: line for line in _failed(lines)}
    bad = failed[f"credential acme at {region_a.token_url}"]
    assert "401 invalid_client" in bad.detail and "client_id and the client secret" in bad.fix
    forbidden = failed[f"endpoint forbidden {region_a.stream_url('genesys')}"]
    assert "403" in forbidden.detail and "permission" in forbidden.fix
    unreachable = next(line for what, line in failed.items()
                       if what.startswith("endpoint unreachable"))
    assert "cannot connect" in unreachable.detail
    assert "CCSTREAM_TEST_UNSET_SECRET is not set" in failed["stream unset"].detail
    raw = failed[f"topic {topic_prefix}.raw"]
    assert "cannot be created" in raw.detail and "replication_factor" in raw.fix
    assert "wrong" not in "\n".join(line.render() for line in lines)


async def test_an_existing_cursor_topic_that_is_not_compacted_fails(
        bootstrap: str, topic_prefix: str) -> None:
    """A cursor topic someone made without compaction is named, with the command that fixes
    it; the topics that exist are otherwise used as they are."""
    from ccstream.topics import TopicSpec

    await ensure_topics(bootstrap, [TopicSpec(f"{topic_prefix}.cursors", 1, 1),
                                    TopicSpec(f"{topic_prefix}.raw", 3, 1)])
    code, lines = await _run(_config(bootstrap, topic_prefix, []))
    assert code == 1
    text = [line.render() for line in lines]
    assert f"OK    topic {topic_prefix}.raw: exists (used as it is)" in text
    [cursors] = [line for line in lines if line.what == f"topic {topic_prefix}.cursors"]
    assert not cursors.ok and "cleanup.policy=compact" in cursors.fix


def test_an_unreachable_kafka_and_a_bad_file_exit_non_zero(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Through the CLI: Kafka that does not answer is named (exit 1); a file that is not a valid
    configuration names the key (exit 2)."""
    good = tmp_path / "c.toml"
    good.write_text(f'[kafka]\nbootstrap_servers = "127.0.0.1:{free_port()}"\n'
                    '[connector]\nopen_timeout_s = 2.0\n')
    assert cli.main(["check", "--config", str(good)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  kafka: 127.0.0.1:" in out and "bootstrap_servers" in out
    bad = tmp_path / "bad.toml"
    bad.write_text('[[streams]]\nname = "g"\nplatform = "genesys"\nclient_id = "c"\n'
                   'client_secret = "s"\ntoken_url = "https://l.test/t"\nendpoints = []\n')
    assert cli.main(["check", "--config", str(bad)]) == 2
    assert "streams[0].endpoints: give at least one endpoint" in capsys.readouterr().out

