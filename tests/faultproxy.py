"""A small fault-injecting HTTP proxy on loopback, in front of any storage emulator.

The SDK under test talks to the proxy as if it were the service. Each request is forwarded
to the upstream emulator unless a rule matches it first; rules inject status codes
(500/503 with an error body), a connection reset before any response, a reset in the
middle of the response body, a delay, or throttling. Every response is sent with
``Connection: close``, which every SDK handles, and keeps the proxy simple.

    proxy = FaultProxy("127.0.0.1", upstream_port).start()
    proxy.add(Rule(method="PUT", action=Status(503), times=2))
    ...
    proxy.stop()
"""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass, field

MAX_HEAD = 64 * 1024


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Status:
    code: int
    body: bytes = b"<Error><Code>ServiceUnavailable</Code><Message>injected</Message></Error>"


@dataclass
class Reset:
    """Close the connection without answering."""


@dataclass
class ResetMidResponse:
    """Forward, then close after ``after`` bytes of the upstream response."""

    after: int = 2048


@dataclass
class Delay:
    seconds: float


@dataclass
class Throttle:
    bytes_per_second: int


Action = Status | Reset | ResetMidResponse | Delay | Throttle


@dataclass
class Rule:
    action: Action
    method: str | None = None
    path: str | None = None
    """A regular expression searched in the request target (path and query)."""
    times: int = 1
    """How many matching requests it applies to (-1: all)."""
    skip: int = 0
    """Matching requests to let through before applying."""
    hits: int = 0
    seen: int = 0

    def matches(self, req: Request) -> bool:
        if self.method and req.method != self.method:
            return False
        return not (self.path and not re.search(self.path, req.target))


@dataclass
class FaultProxy:
    upstream_host: str
    upstream_port: int
    host: str = "127.0.0.1"
    port: int = 0
    rules: list[Rule] = field(default_factory=list)
    log: list[tuple[str, str, str]] = field(default_factory=list)
    """(method, target, what happened) for every request."""
    headers: list[dict[str, str]] = field(default_factory=list)
    """The headers of every request, in order."""

    def __post_init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FaultProxy:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(
                asyncio.start_server(self._handle, self.host, self.port))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name="fault-proxy")
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        loop = self._loop

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread:
            self._thread.join(10)
        self._loop = None

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.log.clear()

    def faults(self) -> list[tuple[str, str, str]]:
        return [entry for entry in self.log if entry[2] != "forwarded"]

    def _pick(self, req: Request) -> Action | None:
        with self._lock:
            for rule in self.rules:
                if not rule.matches(req):
                    continue
                rule.seen += 1
                if rule.seen <= rule.skip:
                    continue
                if rule.times != -1 and rule.hits >= rule.times:
                    continue
                rule.hits += 1
                return rule.action
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            req = await _read_request(reader, writer)
            if req is None:
                return
            action = self._pick(req)
            what = type(action).__name__ if action else "forwarded"
            self.log.append((req.method, req.target, what))
            self.headers.append(dict(req.headers))
            if isinstance(action, Status):
                body = action.body
                writer.write(f"HTTP/1.1 {action.code} Injected\r\nContent-Length: {len(body)}\r\n"
                             f"Content-Type: application/xml\r\nConnection: close\r\n\r\n"
                             .encode() + body)
                await writer.drain()
                return
            if isinstance(action, Reset):
                _abort(writer)
                return
            if isinstance(action, Delay):
                await asyncio.sleep(action.seconds)
            response = await self._forward(req)
            if isinstance(action, ResetMidResponse):
                writer.write(response[:action.after])
                await writer.drain()
                _abort(writer)
                return
            if isinstance(action, Throttle):
                step = max(1, action.bytes_per_second // 20)
                for i in range(0, len(response), step):
                    writer.write(response[i:i + step])
                    await writer.drain()
                    await asyncio.sleep(0.05)
            else:
                writer.write(response)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if not writer.is_closing():
                writer.close()

    async def _forward(self, req: Request) -> bytes:
        up_reader, up_writer = await asyncio.open_connection(self.upstream_host,
                                                             self.upstream_port)
        headers = {k: v for k, v in req.headers.items()
                   if k.lower() not in ("connection", "keep-alive", "proxy-connection")}
        head = f"{req.method} {req.target} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + "Connection: close\r\n\r\n"
        up_writer.write(head.encode("latin-1") + req.body)
        await up_writer.drain()
        response = await up_reader.read()
        up_writer.close()
        return _force_close(response)


async def _read_request(reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    if len(head) > MAX_HEAD:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip()] = v.strip()
    lower = {k.lower(): v for k, v in headers.items()}
    if lower.get("expect", "").lower() == "100-continue":
        # Say go ahead at once (boto3 would otherwise wait a second per upload); the
        # upstream gets the body without the expectation.
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        del headers[next(k for k in headers if k.lower() == "expect")]
    body = b""
    if "content-length" in lower:
        body = await reader.readexactly(int(lower["content-length"]))
    elif lower.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            chunks.append(data[:-2])
        body = b"".join(chunks)
        del headers[next(k for k in headers if k.lower() == "transfer-encoding")]
        headers["Content-Length"] = str(len(body))
    return Request(method, target, headers, body)


def _force_close(response: bytes) -> bytes:
    head, sep, body = response.partition(b"\r\n\r\n")
    lines = [ln for ln in head.split(b"\r\n")
             if not ln.lower().startswith((b"connection:", b"keep-alive:"))]
    return b"\r\n".join([*lines, b"Connection: close"]) + sep + body


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        import socket
        import struct

        # SO_LINGER 0: the peer sees a reset (ECONNRESET), not a clean end of stream.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
