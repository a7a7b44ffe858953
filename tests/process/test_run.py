"""`ccstream run` (connector + dedup worker in one process) and bad input at start-up."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from devtools import devkafka
from devtools.e2e import compare, emitted, pipeline_config, plan_streams, read_topic
from devtools.live import TopicTail, scrape, total
from simulator import ClientSpec, SimSettings, Simulator

pytestmark = pytest.mark.timeout(180)


async def test_run_streams_dedups_and_stops_cleanly_on_sigterm(
    bootstrap: str, tmp_path: Path, topic_prefix: str
) -> None:
    """One process carries events to clean exactly once and exits 0 on SIGTERM after 1000 closes."""
    plans = plan_streams(1, 1)
    clients = tuple(ClientSpec(p.client_id, p.secret, platforms=(p.platform,)) for p in plans)
    metrics_port = devkafka.free_port()
    async with Simulator(SimSettings(clients=clients, seed=3, rate=30.0)) as sim:
        config = tmp_path / "run.toml"
        config.write_text(pipeline_config(
            bootstrap, plans, urls={p: sim.stream_url(p) for p in ("genesys", "nice")},
            token_url=sim.token_url, prefix=topic_prefix,
            overrides={"connector": {"cursor_commit_interval_s": 0.3},
                       "dedup": {"session_timeout_s": 4.0},
                       "metrics": {"port": metrics_port}}))
        env = {**__import__("os").environ, **{p.secret_env: p.secret for p in plans}}
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--config", str(config)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        clean = TopicTail(bootstrap, f"{topic_prefix}.clean")
        await clean.start()
        try:
            deadline = time.monotonic() + 90
            while len(clean.view.counts) < 300:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "no events reached clean"
                await asyncio.sleep(0.3)
            # one endpoint serves both halves: connector counters and the dedup worker's gauges
            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{metrics_port}/metrics"
                while True:
                    found = await scrape(http, url)
                    if (total(found, "ccstream_events_produced_total") > 0
                            and total(found, "ccstream_dedup_forwarded_total") > 0
                            and any(k.startswith("ccstream_consumer_lag") for k in found)):
                        break
                    assert time.monotonic() < deadline, f"metrics incomplete: {sorted(found)}"
                    await asyncio.sleep(0.5)
            sim.stop_generating()
            ledger = emitted(sim.ledger)
            while not all(k in clean.view.counts for k in ledger):
                assert time.monotonic() < deadline + 30, "clean did not catch up"
                await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 15)
        finally:
            await clean.stop()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert code == 0
        for plan in plans:
            assert sim.stats[plan.client_id].close_codes[1000] >= 1
        verdict = compare(ledger, await read_topic(bootstrap, f"{topic_prefix}.clean"))
        assert verdict.ok, verdict.to_json()


STREAM = """
[[streams]]
name = "s1"
platform = "genesys"
url = "ws://127.0.0.1:{ws_port}/api/v2/analytics/events"
token_url = "{token_url}"
client_id = "acme"
client_secret = "pw"
"""


def _cli(tmp_path: Path, text: str, command: str = "connect") -> tuple[int, str, float]:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pipeline", command, "--config", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    return proc.returncode, proc.stderr.strip(), time.monotonic() - started


def test_malformed_toml_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A file that is not TOML: one line on stderr naming the file, exit 2."""
    code, err, _ = _cli(tmp_path, "[kafka\nbootstrap_servers = 1")
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "bad.toml is not valid TOML" in err


def test_unknown_key_names_the_key(tmp_path: Path) -> None:
    """An unknown key: one line with the key's path, exit 2."""
    text = "[kafka]\nbootstrap = 'x'\n" + STREAM.format(ws_port=1, token_url="http://h/t")
    code, err, _ = _cli(tmp_path, text, "run")
    assert code == 2
    assert err.splitlines() == [err] and "kafka.bootstrap" in err


def test_unreachable_broker_fails_fast_with_one_line(tmp_path: Path) -> None:
    """No broker at the configured address: one clear line naming kafka.bootstrap_servers."""
    port = devkafka.free_port()
    text = (f"[kafka]\nbootstrap_servers = '127.0.0.1:{port}'\nrequest_timeout_s = 3.0\n"
            + STREAM.format(ws_port=1, token_url="http://127.0.0.1:1/t"))
    code, err, took = _cli(tmp_path, text)
    assert code != 0
    assert len(err.splitlines()) == 1, err
    assert "kafka.bootstrap_servers" in err
    assert took < 30


async def test_bad_credentials_and_wrong_token_url_fail_with_one_line(
    bootstrap: str, tmp_path: Path, topic_prefix: str
) -> None:
    """invalid_client and a token URL that answers 404 each end with one line naming the stream."""
    async with Simulator(SimSettings(clients=(ClientSpec("acme", "right"),), rate=0)) as sim:
        base = (f"[kafka]\nbootstrap_servers = '{bootstrap}'\n"
                f"[topics]\nraw = '{topic_prefix}.raw'\nclean = '{topic_prefix}.clean'\n"
                f"cursors = '{topic_prefix}.cur'\ndlq = '{topic_prefix}.dlq'\n")
        wrong_secret = base + STREAM.format(ws_port=sim.port, token_url=sim.token_url)
        code, err, took = await asyncio.to_thread(_cli, tmp_path, wrong_secret)
        assert code == 1
        assert len(err.splitlines()) == 1 and "s1" in err and "invalid_client" in err
        assert "pw" not in err.replace("platform", "")
        assert took < 30
        wrong_url = base + STREAM.format(ws_port=sim.port, token_url=sim.token_url + "/nope")
        code, err, took = await asyncio.to_thread(_cli, tmp_path, wrong_url)
        assert code == 1, err
        assert len(err.splitlines()) == 1 and "s1" in err and "token_url" in err
        assert took < 30
