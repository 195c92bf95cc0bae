"""The collector's gunicorn worker: asyncio + h11 in front, the Flask app in a thread pool.

Why not gthread: a gthread worker hands a connection to a thread as soon as its first
byte arrives, and the thread then blocks until the headers are complete, with no time
limit. A dozen clients trickling headers occupy every thread. Here the event loop reads
every request, head and body, with deadlines and bounds; a thread is only used once a
request is completely received, so a slow or hostile client costs a socket and a few KB,
never a thread.

Per connection:
- the first request's head must arrive within ``header_timeout`` of the accept; later
  requests on a kept-alive connection may idle ``keepalive`` seconds, then their head
  must be complete within ``header_timeout`` of its first byte (a deadline for the whole
  head, not an idle timer that every trickled byte resets). Over: 408, closed.
- the head is at most ``max_header_bytes`` (431); a declared ``Content-Length`` over
  ``max_body_bytes`` is answered 413 before any of the body is read; a chunked body is
  counted as it arrives and answered 413 the moment it passes the limit. The app is not
  called, so nothing is archived. What the client still sends after a 413 is read and
  dropped (bounded in bytes and time) so that it reads the answer, not a reset. The
  whole body must arrive within ``body_timeout`` (408).
- ``max_connections`` per worker. Past it, newcomers are admitted (up to twice the
  bound) and 50 ms later the oldest connections that are not working on a request (kept
  alive, or still sending their head) are closed until the bound holds again; at twice
  the bound, or when every connection is busy, a newcomer gets 503. Genuine senders send
  their head in milliseconds, so under a slow-header flood it is the attacker's
  connections that are shed.
- bodies held in memory by one worker are bounded by ``max_buffered_bytes`` (503 past it).

Rejections made here are counted under the same reasons as the app's (``too_large``,
``timeout``, ``bad_request``, ``overloaded``) and logged with the path, never the query.
The access log (``--access-log``) redacts every query value and never logs headers.
"""

from __future__ import annotations

import asyncio
import fcntl
import http
import io
import json
import logging
import os
import resource
import signal
import struct
import sys
import termios
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import unquote_to_bytes

import h11
from gunicorn.workers import base

from .verification import redact_target

log = logging.getLogger("mailpulse.collector")
access_log = logging.getLogger("mailpulse.collector.access")

#: Headers that describe the framing of the original request; the app gets the body as
#: received (de-chunked) with an exact Content-Length instead.
_FRAMING = {"CONTENT_LENGTH", "TRANSFER_ENCODING"}
_HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"transfer-encoding",
    b"content-length",
    b"upgrade",
    b"proxy-connection",
}
#: Behind a TLS proxy on the same host: X-Forwarded-Proto is trusted from these only.
_TRUSTED_PROXIES = {"127.0.0.1", "::1"}
_READ_SIZE = 65536


@dataclass(frozen=True)
class ServerLimits:
    """Per-worker limits of the collector's HTTP server (``mailpulse serve`` flags)."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive: float = 75.0
    max_connections: int = 1000
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 10 * 1024 * 1024
    threads: int = 8
    access_log: bool = False

    @property
    def max_buffered_bytes(self) -> int:
        """Bodies one worker holds at a time: enough for every thread to have a full-size
        body being processed and as many arriving."""
        return 2 * max(self.threads, 1) * max(self.max_body_bytes, 1024 * 1024)


class _Throttle:
    """At most one log line per kind per ``every`` seconds; the lines held back are counted
    into the next one. A flood of slow clients must not become a flood of log lines."""

    def __init__(self, every: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.every, self.clock = every, clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, kind: str, level: int, msg: str, *args: Any) -> None:
        now = self.clock()
        if now - self._last.get(kind, -1e18) < self.every:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        if held:
            msg += f" (and {held} more like it since the last such line)"
        log.log(level, msg, *args)


class _Reject(Exception):
    """Answer ``status`` with ``{"error": reason}`` and close the connection."""

    def __init__(self, status: int, reason: str, detail: str = ""):
        super().__init__(detail or reason)
        self.status, self.reason, self.detail = status, reason, detail


class CollectorWorker(base.Worker):
    """gunicorn worker; ``self.app`` (the gunicorn application) carries ``limits``
    (:class:`ServerLimits`) and ``on_reject`` (``reason -> None``, the shared counters)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.limits: ServerLimits = getattr(self.app, "limits", None) or ServerLimits()
        self.on_reject: Callable[[str], None] = getattr(self.app, "on_reject", None) or (
            lambda r: None
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.connections: set[_Connection] = set()
        #: connections not working on a request, oldest first (shed first at the bound)
        self.waiting: OrderedDict[_Connection, None] = OrderedDict()
        self.buffered = 0
        self.throttled_log = _Throttle()

    # -- process life ---------------------------------------------------------------
    def init_process(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self._raise_fd_limit()
        if self.limits.access_log and not access_log.handlers:
            h = logging.StreamHandler(sys.stderr)
            h.setFormatter(logging.Formatter("%(message)s"))
            access_log.addHandler(h)
            access_log.setLevel(logging.INFO)
            access_log.propagate = False
        super().init_process()

    def _raise_fd_limit(self) -> None:
        need = 2 * self.limits.max_connections + 256  # a burst, archive files, pipes, the pool
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < need:
            target = need if hard == resource.RLIM_INFINITY else min(need, hard)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError):
                pass
            if soft < need:
                log.warning(
                    "open file limit %s is below 2 x --max-connections %s + 256; raise "
                    "it (ulimit -n / LimitNOFILE=) or lower --max-connections",
                    soft,
                    self.limits.max_connections,
                )

    def init_signals(self) -> None:
        for s in self.SIGNALS:
            signal.signal(s, signal.SIG_DFL)
        self.loop.add_signal_handler(signal.SIGTERM, self._graceful)
        self.loop.add_signal_handler(signal.SIGQUIT, self._quick)
        self.loop.add_signal_handler(signal.SIGINT, self._quick)
        self.loop.add_signal_handler(signal.SIGUSR1, self.log.reopen_files)
        self.loop.add_signal_handler(signal.SIGWINCH, lambda: None)
        self.loop.add_signal_handler(signal.SIGABRT, self._abort)

    def _graceful(self) -> None:
        self.alive = False

    def _quick(self) -> None:
        self.alive = False
        self._quick_exit = True
        self.cfg.worker_int(self)

    def _abort(self) -> None:
        self.alive = False
        self.cfg.worker_abort(self)
        sys.exit(1)

    _quick_exit = False

    def run(self) -> None:
        self.pool = ThreadPoolExecutor(max(self.limits.threads, 1), thread_name_prefix="collector")
        try:
            self.loop.run_until_complete(self._serve())
        finally:
            self.pool.shutdown(wait=not self._quick_exit, cancel_futures=self._quick_exit)
            self.loop.close()

    async def _serve(self) -> None:
        servers = []
        for sock in self.sockets:
            sock.sock.setblocking(False)
            servers.append(
                await asyncio.start_server(
                    self._accept, sock=sock.sock, limit=_READ_SIZE, backlog=self.cfg.backlog
                )
            )
        beat = max(0.2, min(1.0, self.timeout / 4)) if self.timeout else 1.0
        while self.alive:
            self.notify()
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                break
            await asyncio.sleep(beat)
        # stop accepting, drop connections that are not working on a request, let the
        # others finish (their responses say Connection: close)
        for s in servers:
            s.close()
        for c in list(self.waiting):
            c.close()
        # finish before the master's own graceful timeout runs out and it kills us
        grace = 0 if self._quick_exit else 0.8 * self.cfg.graceful_timeout
        deadline = self.loop.time() + grace
        while self.connections and self.loop.time() < deadline and not self._quick_exit:
            self.notify()
            await asyncio.sleep(0.1)
        for c in list(self.connections):
            c.close()
        # let the connection tasks end (a post still in a pool thread completes its append:
        # run() waits for the pool before gunicorn's worker_exit closes the archive files)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)

    def _victim(self) -> _Connection | None:
        """The connection to close for room: the oldest waiting one that has no bytes in
        its socket which the loop has not read yet. One that has is making progress (or
        has not been looked at yet): typically a genuine post whose head came with its
        connection, accepted in the same burst as a flood of new connections. A connection
        that has sent nothing yet is spared for ``SHED_GRACE_SECONDS`` after its accept:
        a client that was descheduled between ``connect()`` and its first send (a busy
        machine) looks idle, but it is about to send its request. One lingering after
        its 413 is taken whatever it still sends: it has its answer already."""
        now = time.monotonic()
        for i, c in enumerate(self.waiting):
            if i >= 256:
                break
            if c.lingering:
                return c  # answered already: only its reading of the answer is at stake
            if c.unread_bytes() or c.buffered_unparsed():
                continue
            if c.heard or now - c.accepted >= SHED_GRACE_SECONDS:
                return c
        return None

    def _shed(self, victim: _Connection) -> None:
        self.waiting.pop(victim, None)
        self.connections.discard(victim)  # its task ends on its own
        victim.close()
        self.throttled_log(
            "shed",
            logging.INFO,
            "closed the oldest idle or slow connection (from %s) to make room: "
            "--max-connections %d reached",
            victim.peer[0],
            self.limits.max_connections,
        )

    def _enforce_bound(self) -> None:
        """Back to ``max_connections``: shed idle or slow connections, oldest first. Runs
        shortly after a burst took the count over, once the loop has read what the new
        connections sent (so that a genuine head is complete and its connection busy)."""
        self._enforce_pending = False
        while len(self.connections) > self.limits.max_connections:
            victim = self._victim()
            if victim is None:
                if self.waiting:
                    self._schedule_enforce()
                return
            self._shed(victim)

    _enforce_pending = False

    def _schedule_enforce(self) -> None:
        if not self._enforce_pending:
            self._enforce_pending = True
            self.loop.call_later(0.05, self._enforce_bound)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = len(self.connections)
        if n >= self.limits.max_connections:
            # over the bound: admit for a moment (up to twice the bound) and shed the
            # oldest idle or slow ones once the loop has read from the newcomers
            victim = self._victim() if n >= 2 * self.limits.max_connections else None
            if victim is not None:
                self._shed(victim)
            elif n >= 2 * self.limits.max_connections or not self.waiting:
                self.on_reject("overloaded")
                self.throttled_log(
                    "overloaded",
                    logging.WARNING,
                    "rejected a connection from %s: overloaded (%d connections "
                    "busy, --max-connections %d)",
                    _peer(writer)[0],
                    n,
                    self.limits.max_connections,
                )
                writer.write(_raw_response(503, "overloaded", retry_after=1))
                await _linger_close(reader, writer)
                return
            else:
                self._schedule_enforce()
        conn = _Connection(self, reader, writer)
        self.connections.add(conn)
        try:
            await conn.serve()
        except OSError:
            pass  # the client went away
        except Exception as exc:  # noqa: BLE001 - one connection's bug must not end the worker
            log.exception("connection handler failed: %s", type(exc).__name__)
        finally:
            self.connections.discard(conn)
            self.waiting.pop(conn, None)
            await _close(writer)


class _Connection:
    def __init__(
        self, worker: CollectorWorker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ):
        self.w = worker
        self.lim = worker.limits
        self.reader, self.writer = reader, writer
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.lim.max_header_bytes)
        self.peer = _peer(writer)
        self.sockname = writer.get_extra_info("sockname") or ("", 0)
        self.accepted = time.monotonic()

    def close(self) -> None:
        self.closed_by_us = True
        self.writer.transport.abort()

    closed_by_us = False
    lingering = False  # answered 413, dropping the rest of the body before closing
    heard = False  # any byte of a request read from this connection yet

    def buffered_unparsed(self) -> bool:
        """Bytes read from the socket that this connection's task has not taken yet
        (asyncio's StreamReader keeps them in ``_buffer``; False if that ever changes)."""
        return bool(len(getattr(self.reader, "_buffer", b"")))

    def unread_bytes(self) -> int:
        """Bytes in the kernel's receive buffer for this socket (Linux FIONREAD; 0 where
        that is not available)."""
        sock = self.writer.get_extra_info("socket")
        try:
            return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]
        except (OSError, AttributeError, ValueError):
            return 0

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        first = True
        while True:
            req, started = None, time.monotonic()
            try:
                req = await self._read_head(loop, first)
                if req is None:
                    return
                started = time.monotonic()
                body = await self._read_body(loop, req)
                if body is None:
                    return
            except _Reject as rej:
                self._log_rejection(rej, req)
                size = await self._send_error(rej.status, rej.reason)
                if self.lim.access_log and req is not None:
                    self._access(req, rej.status, size, started)
                if rej.status == 413 and req is not None:
                    await self._linger(req)
                return
            try:
                keep = await self._dispatch(loop, req, body, started)
            finally:
                self.w.buffered -= len(body)
            if not keep:
                return
            first = False

    # -- reading ----------------------------------------------------------------------
    async def _read(self, deadline: float) -> bytes:
        async with asyncio.timeout_at(deadline):
            return await self.reader.read(_READ_SIZE)

    async def _read_head(self, loop, first: bool) -> h11.Request | None:
        now = loop.time()
        head_deadline = (
            now + self.lim.header_timeout if (first or self.conn.trailing_data[0]) else None
        )
        idle_deadline = now + self.lim.keepalive
        self.w.waiting[self] = None
        eof = False
        try:
            while True:
                try:
                    event = self.conn.next_event()
                except h11.RemoteProtocolError as exc:
                    if eof or self.closed_by_us:
                        return None  # the client left mid-head, or we shed it: no answer
                    raise _Reject(
                        exc.error_status_hint,
                        "too_large" if exc.error_status_hint == 431 else "bad_request",
                        "malformed request head",
                    ) from None
                if event is h11.NEED_DATA:
                    try:
                        data = await self._read(head_deadline or idle_deadline)
                    except TimeoutError:
                        if head_deadline is None:
                            return None  # idle keep-alive connection: close quietly
                        raise _Reject(
                            408,
                            "timeout",
                            f"request head not complete within {self.lim.header_timeout:g} s",
                        ) from None
                    if head_deadline is None and data:
                        head_deadline = loop.time() + self.lim.header_timeout
                    eof = not data
                    self.heard = self.heard or not eof
                    self.conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    # h11 bounds only a head that is still incomplete; one that arrives in
                    # a single read is measured here
                    size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
                    if size > self.lim.max_header_bytes:
                        raise _Reject(
                            431,
                            "too_large",
                            f"request head of {size} bytes, limit {self.lim.max_header_bytes}",
                        )
                    return event
                return None  # ConnectionClosed
        finally:
            self.w.waiting.pop(self, None)

    async def _read_body(self, loop, req: h11.Request) -> bytes | None:
        limit = self.lim.max_body_bytes
        names = {name for name, _ in req.headers}
        if b"content-length" in names and b"transfer-encoding" in names:
            # ambiguous framing (request smuggling through a proxy): refuse, as gunicorn does
            raise _Reject(400, "bad_request", "both Content-Length and Transfer-Encoding")
        for name, value in req.headers:
            if name == b"content-length" and int(value) > limit:
                raise _Reject(413, "too_large", f"Content-Length {int(value)}, limit {limit} bytes")
        deadline = loop.time() + self.lim.body_timeout
        body = bytearray()
        try:
            while True:
                try:
                    event = self.conn.next_event()
                except h11.RemoteProtocolError:
                    if self.closed_by_us or self.reader.at_eof():
                        self._gone(body)  # the client left mid-body
                        return None
                    raise _Reject(400, "bad_request", "malformed request body framing") from None
                if event is h11.NEED_DATA:
                    if self.conn.they_are_waiting_for_100_continue:
                        self.writer.write(
                            self.conn.send(h11.InformationalResponse(status_code=100, headers=[]))
                        )
                    try:
                        data = await self._read(deadline)
                    except TimeoutError:
                        raise _Reject(
                            408,
                            "timeout",
                            f"body not complete within "
                            f"{self.lim.body_timeout:g} s "
                            f"({len(body)} bytes received)",
                        ) from None
                    self.conn.receive_data(data)
                elif isinstance(event, h11.Data):
                    n = len(event.data)
                    if len(body) + n > limit:
                        raise _Reject(413, "too_large", f"body over the limit of {limit} bytes")
                    if self.w.buffered + n > self.lim.max_buffered_bytes:
                        raise _Reject(
                            503,
                            "overloaded",
                            f"worker holds {self.w.buffered} bytes of bodies already",
                        )
                    self.w.buffered += n
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    return bytes(body)
                else:  # ConnectionClosed mid-body
                    self._gone(body)
                    return None
        except BaseException:
            self.w.buffered -= len(body)
            raise

    def _gone(self, body: bytearray) -> None:
        self.w.buffered -= len(body)
        body.clear()  # so that nothing is released twice

    # -- the app -----------------------------------------------------------------------
    async def _dispatch(self, loop, req: h11.Request, body: bytes, started: float) -> bool:
        environ = self._environ(req, body)
        try:
            status, headers, payload = await loop.run_in_executor(
                self.w.pool, _call_wsgi, self.w.wsgi, environ
            )
        except Exception as exc:  # noqa: BLE001 - answered 500; the provider retries
            log.exception("collector app failed: %s", type(exc).__name__)
            status, headers, payload = (
                500,
                [(b"content-type", b"application/json")],
                b'{"error": "internal_error"}',
            )
        keep = self.w.alive and self.conn.our_state is h11.SEND_RESPONSE
        headers = [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP]
        headers.append((b"content-length", str(len(payload)).encode()))
        if not self.w.alive:
            headers.append((b"connection", b"close"))
        self.writer.write(
            self.conn.send(
                h11.Response(status_code=status, headers=headers, reason=_phrase(status))
            )
        )
        self.writer.write(self.conn.send(h11.Data(data=payload)))
        self.writer.write(self.conn.send(h11.EndOfMessage()))
        await self._drain()
        self.w.nr += 1
        if self.lim.access_log:
            self._access(req, status, len(payload), started, environ.get("HTTP_USER_AGENT"))
        if not keep or self.conn.our_state is h11.MUST_CLOSE:
            return False
        try:
            self.conn.start_next_cycle()
        except h11.LocalProtocolError:
            return False
        return True

    def _environ(self, req: h11.Request, body: bytes) -> dict[str, Any]:
        target = req.target.decode("latin-1")
        if "://" in target.split("?", 1)[0]:  # absolute-form: keep only path and query
            rest = target.split("://", 1)[1]
            target = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        path, _, query = target.partition("?")
        host, port = self.sockname[0], self.sockname[1]
        environ: dict[str, Any] = {
            "REQUEST_METHOD": req.method.decode("ascii"),
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query,
            "RAW_URI": target,
            "SERVER_NAME": str(host),
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": "HTTP/" + req.http_version.decode("ascii"),
            "REMOTE_ADDR": self.peer[0],
            "REMOTE_PORT": str(self.peer[1]),
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
        }
        for raw_name, raw_value in req.headers:
            name = raw_name.decode("latin-1")
            if "_" in name:  # would be indistinguishable from a '-' header; gunicorn drops it too
                continue
            key = name.upper().replace("-", "_")
            if key in _FRAMING:
                continue
            value = raw_value.decode("latin-1")
            if key == "CONTENT_TYPE":
                environ[key] = value
                continue
            key = "HTTP_" + key
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        if self.peer[0] in _TRUSTED_PROXIES and environ.get("HTTP_X_FORWARDED_PROTO") in (
            "http",
            "https",
        ):
            environ["wsgi.url_scheme"] = environ["HTTP_X_FORWARDED_PROTO"]
        return environ

    async def _linger(self, req: h11.Request) -> None:
        """After a 413 the client is usually still sending (http.client, requests and
        curl send a declared body whole before they read): :func:`_drop_input` what it
        declared, up to ``LINGER_MAX_FACTOR`` times the body limit (a chunked one: up to
        the limit more). While it lingers it may be shed like an idle connection under
        ``--max-connections``, though its bytes keep arriving."""
        limit = self.lim.max_body_bytes
        declared = [int(v) for k, v in req.headers if k == b"content-length"]
        budget = min(declared[0] if declared else limit, LINGER_MAX_FACTOR * limit)
        self.lingering = True
        self.w.waiting[self] = None
        try:
            await _drop_input(
                self.reader, self.writer, budget, LINGER_SECONDS, idle=LINGER_IDLE_SECONDS
            )
        finally:
            self.w.waiting.pop(self, None)

    # -- writing -----------------------------------------------------------------------
    async def _drain(self) -> None:
        try:
            async with asyncio.timeout(self.lim.body_timeout):
                await self.writer.drain()
        except TimeoutError:
            self.close()  # a client that does not read its response

    async def _send_error(self, status: int, reason: str) -> int:
        payload = json.dumps({"error": reason}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"connection", b"close"),
        ]
        if status == 503:
            headers.append((b"retry-after", b"1"))
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            try:
                self.writer.write(
                    self.conn.send(
                        h11.Response(status_code=status, headers=headers, reason=_phrase(status))
                    )
                )
                self.writer.write(self.conn.send(h11.Data(data=payload)))
                self.writer.write(self.conn.send(h11.EndOfMessage()))
            except h11.LocalProtocolError:
                self.writer.write(_raw_response(status, reason))
            await self._drain()
        return len(payload)

    def _log_rejection(self, rej: _Reject, req: h11.Request | None) -> None:
        self.w.on_reject(rej.reason)
        what = (
            f"{req.method.decode('ascii', 'replace')} {_path(req)}"
            if req is not None
            else "a request"
        )
        self.w.throttled_log(
            rej.reason,
            logging.WARNING,
            "rejected %s from %s: %s (%s)",
            what,
            self.peer[0],
            rej.reason,
            rej.detail,
        )

    def _access(
        self,
        req: h11.Request,
        status: int,
        size: int,
        started: float,
        user_agent: str | None = None,
    ) -> None:
        if user_agent is None:
            user_agent = next(
                (v.decode("latin-1") for k, v in req.headers if k == b"user-agent"), "-"
            )
        access_log.info(
            '%s - - [%s] "%s %s HTTP/%s" %d %d "%s" %.1fms',
            self.peer[0],
            time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
            req.method.decode("ascii", "replace"),
            redact_target(req.target.decode("latin-1")),
            req.http_version.decode("ascii"),
            status,
            size,
            user_agent.replace('"', "'")[:200],
            (time.monotonic() - started) * 1000,
        )


def _path(req: h11.Request) -> str:
    """The request's path for a log line: never its query (it may hold a credential)."""
    return redact_target(req.target.decode("latin-1")).split("?", 1)[0]


def _call_wsgi(app, environ: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Run the WSGI app to completion (in a pool thread); the response is small JSON."""
    state: dict[str, Any] = {}
    written: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info=None):
        if exc_info and state:
            raise exc_info[1].with_traceback(exc_info[2])
        state["status"], state["headers"] = status, headers
        return written.append

    result = app(environ, start_response)
    try:
        chunks = written + [c for c in result if c]
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    status = int(state["status"].split(" ", 1)[0])
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in state["headers"]]
    return status, headers, b"".join(chunks)


def _phrase(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _raw_response(status: int, reason: str, retry_after: int | None = None) -> bytes:
    payload = json.dumps({"error": reason}).encode()
    phrase = _phrase(status).decode("ascii")
    extra = f"Retry-After: {retry_after}\r\n" if retry_after else ""
    return (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n{extra}\r\n"
    ).encode() + payload


def _peer(writer: asyncio.StreamWriter) -> tuple[str, int]:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(peer[0]), int(peer[1])
    return "-", 0


#: A connection that has sent nothing is not shed for room this long after its accept.
SHED_GRACE_SECONDS = 1.0

#: After a 413 the client may still be sending the body (``_Connection._linger``): read
#: and drop what it declared, up to this many times the body limit, until this long
#: passes without a byte or this long in all.
LINGER_MAX_FACTOR = 4
LINGER_IDLE_SECONDS = 2.0
LINGER_SECONDS = 10.0

#: A refused newcomer may still be sending its request: read and drop this much, for at
#: most this long, before closing, so that it reads the 503 instead of a connection reset.
REFUSED_LINGER_SECONDS = 1.0
REFUSED_LINGER_BYTES = 1024 * 1024


async def _drop_input(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    budget: int,
    seconds: float,
    idle: float | None = None,
) -> None:
    """nginx's lingering close, bounded: once the answer is written, half-close, then
    read and drop up to ``budget`` bytes until the client closes, ``seconds`` pass in
    all or ``idle`` seconds pass without a byte, so that a client still sending its
    request reads the answer instead of a connection reset."""
    loop = asyncio.get_running_loop()
    try:
        if writer.can_write_eof():
            writer.write_eof()
        end = loop.time() + seconds
        while budget > 0:
            async with asyncio.timeout_at(end if idle is None else min(end, loop.time() + idle)):
                data = await reader.read(_READ_SIZE)
            if not data:
                return
            budget -= len(data)
    except (OSError, TimeoutError):
        return


async def _linger_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Close after an early answer (a refused newcomer's 503), lingering first."""
    try:
        await writer.drain()
    except OSError:
        pass
    else:
        await _drop_input(reader, writer, REFUSED_LINGER_BYTES, REFUSED_LINGER_SECONDS)
    await _close(writer)


async def _close(writer: asyncio.StreamWriter) -> None:
    try:
        writer.close()
        async with asyncio.timeout(1):
            await writer.wait_closed()
    except (OSError, TimeoutError):
        writer.transport.abort()
