"""Limits on HTTP connections that uvicorn does not enforce itself, for both of its parsers:
a cap on the bytes of a request head (431; httptools has none), a deadline for it (408, then
closed: a client dribbling header bytes, or saying nothing, must not hold a connection for
ever), and a hard cap on open connections (closed at once; uvicorn's `limit_concurrency`
answers 503 before that)."""

from __future__ import annotations

import asyncio
import resource
from typing import Any

import h11
import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.settings import Settings

# File descriptors kept for the process itself: the database, its WAL, logs, the listener.
FD_RESERVE = 64


def canned(status: str, code: str, detail: str) -> bytes:
    """A whole response, written straight to the socket: no request reached the app."""
    body = orjson.dumps({"error": code, "detail": detail})
    return (
        b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status.encode(), len(body), body)
    )


class HeadGuard:
    """Mixed into a uvicorn HTTP/1.1 protocol. `settings` is read once per process (worker
    processes import this module afresh and read the same environment)."""

    settings: Settings | None = None
    transport: asyncio.Transport
    connections: set[Any]
    loop: asyncio.AbstractEventLoop
    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0

    @classmethod
    def limits(cls) -> Settings:
        if HeadGuard.settings is None:
            HeadGuard.settings = Settings.from_env()
        return HeadGuard.settings

    def _head_pending(self) -> bool:
        raise NotImplementedError

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        if len(self.connections) > 2 * self.limits().max_connections:
            # Past the 503s of limit_concurrency: keep file descriptors for the database.
            transport.abort()
            return
        self._arm()  # one that connects and says nothing is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        limit = self.limits().max_header_bytes
        while data:
            piece = data
            if self._head_pending():
                if self._head_timer is None:
                    self._arm()
                # The parser gets no more of a head than the limit: a head within it ends in
                # those bytes, one still unfinished after them is too large, however many
                # reads it came in (counting reads alone would let a whole head in one read by).
                piece = data[: limit - self._head_bytes]
                self._head_bytes += len(piece)
            data = data[len(piece) :]
            super().data_received(piece)  # type: ignore[misc]
            if self.transport.is_closing():
                return
            if not self._head_pending():
                self._disarm()
            elif self._head_bytes >= limit:
                self._refuse(
                    "431 Request Header Fields Too Large",
                    "head_too_large",
                    f"the request head is over {limit} bytes",
                )
                return

    def _arm(self) -> None:
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(self.limits().header_timeout_s, self._expired)

    def _disarm(self) -> None:
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _expired(self) -> None:
        self._head_timer = None
        if self._head_bytes:
            self._refuse(
                "408 Request Timeout",
                "head_timeout",
                f"the request head took more than {self.limits().header_timeout_s} s to arrive",
            )
        elif not self.transport.is_closing():
            self.transport.close()

    def _refuse(self, status: str, code: str, detail: str) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(canned(status, code, detail))
            self.transport.close()


# uvicorn's protocols narrow connection_made to a Transport as HeadGuard does; asyncio's
# BaseProtocol says BaseTransport, so mypy sees the two bases disagree.
class GuardedH11(HeadGuard, H11Protocol):  # type: ignore[misc]
    conn: h11.Connection

    def _head_pending(self) -> bool:
        return self.conn.their_state is h11.IDLE


PROTOCOL: type[asyncio.Protocol] = GuardedH11
try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is optional: uvicorn then uses h11
    pass
else:

    class GuardedHttpTools(HeadGuard, HttpToolsProtocol):  # type: ignore[misc]
        _pending = True

        def _head_pending(self) -> bool:
            return self._pending

        def on_headers_complete(self) -> None:
            # This head is whole: the next one on this keep-alive connection starts from zero
            # bytes and a deadline of its own (it arms with its first byte).
            self._pending = False
            self._disarm()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._pending = True
            super().on_message_complete()

    # The parser uvicorn's "auto" picks (the faster one), guarded.
    PROTOCOL = GuardedHttpTools


def raise_fd_limit() -> int:
    """Raises this process's file-descriptor soft limit to its hard limit where allowed (idle
    connections must not lock the database out); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else target
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target
