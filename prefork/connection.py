"""The I/O shell of one HTTP connection: recv -> parser -> app -> send, with deadlines.

Rules:
- Runs in a worker. While the connection waits for a request head it is non-blocking and
  parked in the worker's selector; `readable()` feeds the sans-I/O parser and calls the
  app only once a whole head is in hand. Idle and trickling clients never hold the worker.
- Deadlines: an idle keep-alive connection may wait --keep-alive seconds; once the first
  byte of a head arrives, the whole head must arrive within --header-timeout (408). While
  the app runs, every body read and every send has an idle timeout (a client that stops
  reading is dropped, NOTES §3.2).
- A protocol error gets its status, `Connection: close`, and a lingering close
  (shutdown(SHUT_WR), discard what arrives for a moment, RFC 9112 §9.6); nothing after it
  is read as another request, and the app is never called. A response that leaves part of
  the request body unread ends in a lingering close too.
- A failed send or recv on the client socket is a `ClientError` (drop the client); any
  other exception out of the app, OSError included, is the app's (500, traceback).
"""

from __future__ import annotations

import functools
import ipaddress
import os
import select
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from . import log
from .body import NO_BODY, Input
from .config import Config
from .http11 import CLOSED, NEED_DATA, Event, Limits, ProtocolError, Request, RequestParser
from .wsgi import (
    FileWrapper,
    Response,
    base_environ,
    build_environ,
    error_response,
    peer_environ,
)

logger = log.logger
ERRORS = log.ErrorsStream()  # wsgi.errors: follows the error log across USR1 reopens

LINGER = 1.0  # seconds to discard input after an error response before closing
RECV_SIZE = 65536


class ClientError(OSError):
    """A send or recv on the client socket failed: the client went away or stalled.

    Raised only at the socket calls made for a request, so an OSError the app raises for
    its own reasons (a missing file) stays an app error: a 500 and a traceback.
    """


class BodyTimeout(ClientError):
    """The client stopped sending the request body (408 if nothing was answered yet)."""


class WorkerState(Protocol):
    stopping: bool
    on_request: Callable[[str, str], None]  # method, path
    on_request_end: Callable[[int], None]  # status
    on_rejected: Callable[[int], None]  # status
    on_progress: Callable[[], None]  # a request's wait for its client's socket is over


@dataclass
class Settings:
    """What every connection of a worker needs, computed once per worker."""

    app: Any
    worker: WorkerState
    limits: Limits
    keepalive: float
    header_timeout: float
    io_timeout: float
    trusted: frozenset[str]
    trust_all: bool
    access_format: str | None
    # Threaded worker: hand a connection with a complete request head to a pool thread.
    dispatch: Callable[[HttpConnection, Callable[[], None]], None] | None = None
    environ: dict[str, Any] | None = None  # the environ keys every request shares
    persist: bool = True  # keep-alive is on (--keep-alive > 0)


def _trusted(config: Config) -> tuple[frozenset[str], bool]:
    ips = [ip for ip in config.forwarded_allow_ips if ip != "*"]
    for ip in ips:
        ipaddress.ip_address(ip)  # validated here so a typo fails at boot, not per request
    return frozenset(ips), "*" in config.forwarded_allow_ips


def make_handler(app: Any, config: Config, worker: WorkerState,
                 dispatch: Callable[[HttpConnection, Callable[[], None]], None] | None = None,
                 ) -> Callable[[socket.socket, Any, float], HttpConnection | None]:
    trusted, trust_all = _trusted(config)
    settings = Settings(
        app=app, worker=worker,
        limits=Limits(request_line=config.limit_request_line,
                      fields=config.limit_request_fields,
                      field_size=config.limit_request_field_size,
                      body=config.limit_request_body),
        keepalive=config.keepalive, header_timeout=config.header_timeout or 3600.0,
        io_timeout=config.header_timeout or 30.0, trusted=trusted, trust_all=trust_all,
        access_format=config.access_log_format if log.access_enabled() else None,
        dispatch=dispatch, environ=base_environ("http", ERRORS, dispatch is not None),
        persist=config.keepalive > 0)

    def accepted(sock: socket.socket, addr: Any, now: float) -> HttpConnection | None:
        conn = HttpConnection(sock, addr, settings, now)
        # The request usually arrives with (or right after) the handshake: try at once
        # rather than paying a trip through the selector.
        return conn if conn.readable(now) else None

    return accepted


class HttpConnection:
    __slots__ = ("sock", "fd", "settings", "parser", "deadline", "heading", "lingering",
                 "closed", "busy", "served", "peer", "trusted", "environ")

    def __init__(self, sock: socket.socket, addr: Any, settings: Settings, now: float) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.settings = settings
        self.parser = RequestParser(settings.limits)
        # Until the first request: --header-timeout from the connection; then --keep-alive
        # between requests, and --header-timeout again from a head's first bytes.
        self.deadline = now + settings.header_timeout
        self.heading = False  # deadline is the head's (set when its first bytes came)
        self.lingering = False
        self.closed = False
        self.busy = False  # owned by a request thread (set and cleared by the worker)
        self.served = False  # a request has started on this connection
        if isinstance(addr, tuple):
            self.peer = (str(addr[0]), str(addr[1]))
            self.trusted = settings.trust_all or addr[0] in settings.trusted
        else:  # unix socket: the peer is a local process allowed to open the socket file
            self.peer = ("", "")
            self.trusted = True
        assert settings.environ is not None
        self.environ = peer_environ(settings.environ, self.peer)  # what each request copies

    # -- the Conn protocol (worker.py) ----------------------------------------------------

    def idle(self) -> bool:
        # A fresh connection is not idle: its client connected to send a request, and a
        # graceful stop that dropped it would lose that request (its header deadline
        # still bounds how long it can keep a stopping worker).
        return self.served and not self.lingering and not self.parser.in_request

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()

    def expire(self) -> None:
        if not self.lingering and self.parser.in_request:
            self.settings.worker.on_rejected(408)
            try:
                self.sock.send(error_response(408, "request head not received in time"))
            except OSError:
                pass
        self.close()

    def readable(self, now: float) -> bool:
        try:
            data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return True
        except OSError:
            self.close()
            return False
        if self.lingering:
            if not data:
                self.close()
            return not self.closed
        try:
            event = self.parser.receive(data)
        except ProtocolError as exc:
            return self._reject(exc, now)
        return self._process(now, event, self.settings.dispatch is None)

    def _serve_in_thread(self, req: Request) -> None:
        """Pool thread: serve `req` and any pipelined requests behind it, then return."""
        if self._serve(req):
            now = time.monotonic()
            try:
                event = self.parser.next_event()
            except ProtocolError as exc:
                self._reject(exc, now)
                return
            self._process(now, event)

    # -- requests -------------------------------------------------------------------------

    def _process(self, now: float, event: Event, inline: bool = True) -> bool:
        """Serve `event` and what else is buffered. In a threaded worker's main thread
        (inline=False) a complete request is handed to a pool thread instead."""
        parser = self.parser
        settings = self.settings
        while True:
            if event.__class__ is Request:
                self.heading = False
                if not inline:
                    assert settings.dispatch is not None
                    settings.dispatch(self, functools.partial(self._serve_in_thread, event))
                    return True
                if not self._serve(event):
                    return not self.closed
                now = time.monotonic()
                if not parser.in_request:  # the usual case: nothing pipelined
                    if settings.worker.stopping or not settings.persist:
                        self.close()
                        return False
                    self.deadline = now + settings.keepalive
                    return True
            elif event is NEED_DATA:
                if not parser.in_request:
                    return self._keep_alive(now)
                if not self.heading:  # the first bytes of a head: its deadline starts now
                    self.heading = True
                    self.deadline = now + settings.header_timeout
                return True
            elif event is CLOSED:
                self.close()
                return False
            else:
                return self._fail(400, "unexpected body", now)  # cannot happen: see _serve
            try:
                event = parser.next_event()
            except ProtocolError as exc:
                return self._reject(exc, now)

    def _reject(self, exc: ProtocolError, now: float) -> bool:
        self.settings.worker.on_rejected(exc.status)
        return self._fail(exc.status, exc.reason, now)

    def _keep_alive(self, now: float) -> bool:
        """Between requests: wait up to --keep-alive for the next one, or close now (as
        _process does inline after a request)."""
        settings = self.settings
        if settings.worker.stopping or not settings.persist:
            self.close()
            return False
        self.deadline = now + settings.keepalive
        return True

    def _fail(self, status: int, reason: str, now: float) -> bool:
        """Answer a protocol error, then close lingering; the app never sees the request."""
        logger.debug("protocol error peer=%s status=%d reason=%s", self.peer[0], status, reason)
        try:
            self.send(error_response(status, reason))
        except ClientError:
            self.close()
            return False
        return self._linger(now)

    def _linger(self, now: float) -> bool:
        """Half-close, then discard input for a moment before closing (RFC 9112 §9.6).

        A close() with unread input sends a RST, which can destroy the response still in
        flight to a client that is busy sending a body. False: closed at once instead.
        """
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return False
        self.lingering = True
        self.deadline = now + LINGER
        return True

    def _close_after(self, body: Input | Any) -> None:
        """The response is out and the connection ends: linger if a body may still come."""
        if body.done:
            self.close()
        else:
            self._linger(time.monotonic())

    def _serve(self, req: Request) -> bool:
        """Run the app for one request. True: the connection may carry another request."""
        settings = self.settings
        worker = settings.worker
        worker.on_request(req.method, req.path)
        self.served = True
        if req.chunked or req.content_length:
            body: Input | Any = Input(self, req)
        else:
            self.parser.skip_end()  # its EndOfMessage: there is nothing to stream
            body = NO_BODY
        resp = Response(req, self, req.keep_alive and settings.persist and not worker.stopping,
                        body, worker)
        environ = build_environ(req, body, self.environ, self.sock, self.trusted)
        started = time.time() if settings.access_format is not None else 0.0
        try:
            result = settings.app(environ, resp.start_response)
            if result.__class__ is list and resp.head is not None and not resp.head_sent:
                resp.send_list(result)  # the usual answer (a list has no close())
            else:
                self._send_result(result, resp)
        except ClientError as exc:
            logger.debug("client peer=%s dropped: %s", self.peer[0], exc)
            if isinstance(exc, BodyTimeout) and not resp.head_sent:
                resp.code = 408  # NOTES §3.2 item 2
                try:
                    self.send(error_response(408, "request body not received in time"))
                except ClientError:
                    pass
            self.close()
            return False
        except ProtocolError as exc:  # a bad body surfaced while the app read it
            if not resp.head_sent:
                self._fail(exc.status, exc.reason, time.monotonic())
            else:
                self.close()
            return False
        except Exception:
            logger.error("error handling %s %s:\n%s", req.method, req.target,
                         traceback.format_exc().rstrip())
            if not resp.head_sent:
                resp.code = 500
                try:
                    self.send(error_response(500, "the application failed"))
                except ClientError:
                    self.close()
                    return False
            self._close_after(body)
            return False
        finally:
            worker.on_request_end(resp.code)
            if settings.access_format is not None:
                log.access(settings.access_format, environ, req, resp.code, resp.body_bytes,
                           time.time() - started)
        if resp.keep_alive and (body.done or body.drain()):
            return True
        self._close_after(body)
        return False

    # -- socket I/O: the socket stays non-blocking; we wait only when the kernel says so --

    def _wait(self, events: int) -> None:
        """Wait until the socket is ready, at most --header-timeout since the last progress.

        A socket with a Python timeout would poll() before every send and recv; and
        sendall()'s timeout bounds the whole call, which drops a slow but steady reader
        of a large body. Waiting only when a call would block gives one syscall on the
        fast path and an idle timeout between progress (the nginx send_timeout model).
        """
        poller = select.poll()
        poller.register(self.sock, events)
        if not poller.poll(self.settings.io_timeout * 1000):
            if events == select.POLLIN:
                raise BodyTimeout("timed out reading the request body")
            raise ClientError("timed out sending the response")
        self.settings.worker.on_progress()  # a slow client is not a hung worker

    def send(self, data: bytes) -> None:
        """Send all of `data`; a failure here is the client's (ClientError), not the app's."""
        sock = self.sock
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise ClientError(f"send: {exc}") from exc
        if sent == len(data):
            return
        view = memoryview(data)
        while sent < len(data):
            self._wait(select.POLLOUT)
            try:
                sent += sock.send(view[sent:])
            except BlockingIOError:
                continue
            except OSError as exc:
                raise ClientError(f"send: {exc}") from exc

    def recv_body(self) -> bytes:
        """Read body bytes, waiting (with the idle timeout) while none are there."""
        while True:
            try:
                return self.sock.recv(RECV_SIZE)
            except BlockingIOError:
                self._wait(select.POLLIN)
            except OSError as exc:
                raise ClientError(f"recv: {exc}") from exc

    def _sendfile(self, fd: int, offset: int, count: int) -> int:
        """sendfile(2) until `count` bytes went out or the file ended; returns bytes sent."""
        out = self.sock.fileno()
        sent = 0
        while sent < count:
            try:
                n = os.sendfile(out, fd, offset + sent, count - sent)
            except BlockingIOError:
                self._wait(select.POLLOUT)
                continue
            except OSError as exc:
                raise ClientError(f"sendfile: {exc}") from exc
            if n == 0:
                break  # the file is shorter than it was
            sent += n
        return sent

    def _send_result(self, result: Any, resp: Response) -> None:
        """Send what the app returned, then close() it (PEP 3333), whatever happens."""
        try:
            # A list or tuple is sent whole with its length, unless write() sent a head.
            if (isinstance(result, (list, tuple)) and resp.head is not None
                    and not resp.head_sent):
                resp.send_list(result)
            elif (isinstance(result, FileWrapper) and not resp.head_sent
                  and result.fileno() is not None):
                self._send_file(result, resp)  # (after write(), the head is out: iterate)
            else:
                for chunk in result:
                    if chunk or resp.head_sent:
                        resp.write(chunk)
                resp.finish()
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    def _send_file(self, wrapper: FileWrapper, resp: Response) -> None:
        """wsgi.file_wrapper over a regular file: the kernel copies it (sendfile(2))."""
        fd = wrapper.fileno()
        assert fd is not None
        offset = os.lseek(fd, 0, os.SEEK_CUR)
        size = max(os.fstat(fd).st_size - offset, 0)
        if resp.length is not None:
            if resp.length > size and not resp.no_body:
                # The file holds less than the app's Content-Length: only a close can end
                # the body, or the next response would be read as the missing bytes.
                resp.keep_alive = False
            size = min(size, resp.length)
        self.send(resp._head(size))
        if not resp.no_body and size:
            resp.body_bytes = self._sendfile(fd, offset, size)
            if resp.body_bytes < size:
                resp.keep_alive = False  # the file shrank while we sent it: same reason
