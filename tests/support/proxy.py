"""A tiny HTTP proxy on loopback for tests: a real process-local server, not a mock of a client.

It speaks the two forms clients use: ``CONNECT host:port`` (a tunnel: websockets for every
socket, aiohttp for ``https://``) and absolute-form requests (``POST http://host/path``: aiohttp
for ``http://``), which it forwards once, ``Connection: close``. Every request must carry
``Proxy-Authorization: Basic`` with the configured user and password, else 407. It counts what
it did, per target, so a test can assert that each kind of call went through it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class ProxyStats:
    tunnels: Counter[str] = field(default_factory=Counter)     # CONNECT host:port -> count
    forwarded: Counter[str] = field(default_factory=Counter)   # absolute-form "METHOD path"
    refused: int = 0                                            # 407 answers


class LoopbackProxy:
    def __init__(self, user: str = "proxyuser", password: str = "proxy-pa55") -> None:
        self.user = user
        self.password = password
        self.stats = ProxyStats()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, user: str | None = None, password: str | None = None) -> str:
        return (f"http://{user or self.user}:{password or self.password}@127.0.0.1:{self.port}")

    async def __aenter__(self) -> LoopbackProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _authorized(self, headers: dict[str, str]) -> bool:
        want = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return headers.get("proxy-authorization", "") == f"Basic {want}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *rest = head.decode("latin-1").split("\r\n")
            method, target, _ = line.split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (h.partition(":") for h in rest if h)}
            if not self._authorized(headers):
                self.stats.refused += 1
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                             b"Proxy-Authenticate: Basic realm=\"test\"\r\n"
                             b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            if method == "CONNECT":
                await self._tunnel(target, reader, writer)
            else:
                await self._forward(method, target, headers, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._tasks.discard(task)

    async def _tunnel(self, target: str, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        host, _, port = target.rpartition(":")
        try:
            up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except OSError:  # what a real proxy answers when the target refuses
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        self.stats.tunnels[target] += 1
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await self._pipe_both(reader, writer, up_reader, up_writer)

    async def _forward(self, method: str, target: str, headers: dict[str, str],
                       reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parts = urlsplit(target)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.stats.forwarded[f"{method} {parts.path}"] += 1
        length = int(headers.get("content-length", "0"))
        body = await reader.readexactly(length) if length else b""
        kept = {k: v for k, v in headers.items()
                if k not in ("proxy-authorization", "proxy-connection", "connection")}
        up_reader, up_writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
        lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in kept.items()),
                 "Connection: close", "", ""]
        up_writer.write("\r\n".join(lines).encode("latin-1") + body)
        await up_writer.drain()
        await self._pipe(up_reader, writer)
        up_writer.close()

    async def _pipe_both(self, a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
                         b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter) -> None:
        there = asyncio.ensure_future(self._pipe(a_reader, b_writer))
        back = asyncio.ensure_future(self._pipe(b_reader, a_writer))
        try:
            await asyncio.wait({there, back}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (there, back):
                task.cancel()
            await asyncio.gather(there, back, return_exceptions=True)
            b_writer.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
