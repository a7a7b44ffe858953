"""TLS: ``wss://`` and ``https://`` verified against a CA bundle, refused without it, and
accepted (with a loud warning) only when verification is explicitly switched off.

The certificate is self-signed, made at test time with the ``openssl`` command line; a small
TLS-terminating proxy on loopback puts it in front of the (plain) simulator.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from support.connector import SECRET, genesys_sim, make_config, raw_has_everything, running, until

from connectors.sources.base import SourceStatus as StreamStatus
from simulator import Simulator

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(certificate, key) of a self-signed certificate for 127.0.0.1."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl command line is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=ccstream-test", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True)
    yield cert, key


@asynccontextmanager
async def tls_proxy(cert: Path, key: Path, target_port: int) -> AsyncIterator[int]:
    """A TLS front for 127.0.0.1:``target_port``; yields its own port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    tasks: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with suppress(OSError, ConnectionError, RuntimeError):
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_w.close()
            return
        for reader, writer in ((client_r, server_w), (server_r, client_w)):
            task = asyncio.get_running_loop().create_task(pipe(reader, writer))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def tls_stream(sim: Simulator, proxy: int, *, https_token: bool, **extra: Any) -> dict[str, Any]:
    """The stream always over ``wss://`` via the proxy; the token endpoint via it or plain."""
    token_url = f"https://127.0.0.1:{proxy}/oauth/token" if https_token else sim.token_url
    return {"name": "tls", "platform": "genesys", "client_id": "acme", "client_secret": SECRET,
            "url": f"wss://127.0.0.1:{proxy}/api/v2/analytics/events", "token_url": token_url,
            **extra}


def sim_port(sim: Simulator) -> int:
    return int(sim.token_url.split(":")[2].split("/")[0])


async def test_ca_bundle_verifies_the_server(
        certificate: tuple[Path, Path], bootstrap: str, topic_prefix: str) -> None:
    """With ``ca_file`` naming the CA, the token endpoint (https) and the stream (wss) are
    verified and events flow into the raw topic."""
    cert, key = certificate
    async with genesys_sim() as sim, tls_proxy(cert, key, sim_port(sim)) as proxy:
        config = make_config(bootstrap, topic_prefix, [
            tls_stream(sim, proxy, https_token=True, ca_file=str(cert))])
        async with running(config):
            await sim.wait_for(lambda s: s.stats["acme"].events_sent >= 10, timeout=30)
        await until(lambda: raw_has_everything(bootstrap, config, sim, "genesys", "acme"))


@pytest.mark.parametrize("https_token", [False, True], ids=["wss", "https-token"])
async def test_unknown_ca_is_refused_with_a_clear_error(
        https_token: bool, certificate: tuple[Path, Path], bootstrap: str,
        topic_prefix: str) -> None:
    """Without the CA bundle, a self-signed server is refused: the stream stops (it would fail
    the same way forever) with an error naming it and saying what to configure."""
    cert, key = certificate
    async with genesys_sim() as sim, tls_proxy(cert, key, sim_port(sim)) as proxy:
        config = make_config(bootstrap, topic_prefix, [
            tls_stream(sim, proxy, https_token=https_token)])
        async with running(config) as (runner, task):
            await until(lambda: runner.sources[0].status is StreamStatus.FAILED, timeout=30)
            outcome = await asyncio.wait_for(task, 20)
        assert sim.stats["acme"].handshakes == 0
    assert outcome.code == 1
    assert "stream tls" in outcome.message and "ca_file" in outcome.message
    assert "certificate" in outcome.message
    assert SECRET not in outcome.message


async def test_insecure_skip_verify_connects_and_says_so_loudly(
        certificate: tuple[Path, Path], bootstrap: str, topic_prefix: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """``insecure_skip_verify = true`` accepts the self-signed server, with a warning."""
    caplog.set_level(logging.INFO)
    cert, key = certificate
    async with genesys_sim() as sim, tls_proxy(cert, key, sim_port(sim)) as proxy:
        config = make_config(bootstrap, topic_prefix, [
            tls_stream(sim, proxy, https_token=True, insecure_skip_verify=True)])
        async with running(config):
            await sim.wait_for(lambda s: s.stats["acme"].events_sent >= 10, timeout=30)
        await until(lambda: raw_has_everything(bootstrap, config, sim, "genesys", "acme"))
    warnings = [r for r in caplog.records if r.getMessage() == "tls.verification_disabled"]
    assert warnings and all(r.levelno >= logging.WARNING for r in warnings)
