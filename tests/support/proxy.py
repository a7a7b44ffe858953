"""A tiny HTTP proxy and a SOCKS5 proxy on loopback for tests: real servers in the test's
process, not mocks of a client.

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
import ipaddress
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
        """One client connection: ``_handle`` it, then close it (tracked, so that leaving the
        ``async with`` cancels what is still open)."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._tasks.discard(task)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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


@dataclass
class SocksStats:
    tunnels: Counter[str] = field(default_factory=Counter)     # CONNECT host:port -> count
    names: Counter[str] = field(default_factory=Counter)       # targets sent as a name (socks5h)
    refused: int = 0                                            # credentials refused


class LoopbackSocks(LoopbackProxy):
    """A SOCKS5 proxy (RFC 1928) on loopback that requires username/password auth (RFC 1929)
    and knows one command, CONNECT, to an IPv4 or IPv6 address or a name; it counts tunnels
    per target, the targets a client left to it to resolve, and refused credentials."""

    def __init__(self, user: str = "proxyuser", password: str = "proxy-pa55") -> None:
        super().__init__(user, password)
        self.socks = SocksStats()

    def url(self, user: str | None = None, password: str | None = None,
            scheme: str = "socks5h") -> str:
        return (f"{scheme}://{user or self.user}:{password or self.password}"
                f"@127.0.0.1:{self.port}")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await self._greet(reader, writer):
            await self._connect(reader, writer)

    async def _greet(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        version, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        if version != 5 or 2 not in methods:  # only username/password is acceptable
            writer.write(b"\x05\xff")
            await writer.drain()
            self.socks.refused += 1
            return False
        writer.write(b"\x05\x02")
        _, length = await reader.readexactly(2)
        user = (await reader.readexactly(length)).decode()
        (length,) = await reader.readexactly(1)
        password = (await reader.readexactly(length)).decode()
        ok = user == self.user and password == self.password
        writer.write(b"\x01\x00" if ok else b"\x01\x01")
        await writer.drain()
        if not ok:
            self.socks.refused += 1
        return ok

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, command, _, kind = await reader.readexactly(4)
        if kind == 1:
            host = ipaddress.IPv4Address(await reader.readexactly(4)).compressed
        elif kind == 4:
            host = ipaddress.IPv6Address(await reader.readexactly(16)).compressed
        else:
            (length,) = await reader.readexactly(1)
            host = (await reader.readexactly(length)).decode()
        port = int.from_bytes(await reader.readexactly(2), "big")
        target = f"{host}:{port}"
        if command != 1:
            writer.write(b"\x05\x07\x00\x01" + bytes(6))  # command not supported
            await writer.drain()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.write(b"\x05\x05\x00\x01" + bytes(6))  # connection refused
            await writer.drain()
            return
        self.socks.tunnels[target] += 1
        if kind == 3:
            self.socks.names[target] += 1
        writer.write(b"\x05\x00\x00\x01" + bytes(6))
        await writer.drain()
        await self._pipe_both(reader, writer, up_reader, up_writer)
