"""A small Slack-compatible Web API server for tests (loopback only).

Real ``slack_sdk.WebClient(base_url=server.base_url)`` talks to it as it would to
slack.com (slack-sdk tests itself the same way; no maintained package emulates the Slack
Web API). It implements what mailpulse uses:

- ``chat.postMessage`` (JSON or form body), ``auth.test``
- the three calls of ``files_upload_v2``: ``files.getUploadURLExternal``, the POST of the
  bytes to the returned ``upload_url`` (served here, method name ``upload``), and
  ``files.completeUploadExternal``
- Slack's own checks: a wrong token gives ``invalid_auth``, an unknown channel
  ``channel_not_found`` (both HTTP 200 with ``ok: false``, as Slack does)
- scriptable faults per method: ``server.fail("chat.postMessage", status=429,
  retry_after=0)``, ``fail(..., status=500, times=2)``, ``fail(..., error="invalid_auth")``

Everything received is recorded (``server.requests``, ``server.messages``,
``server.files``) for assertions. Use it as a context manager, or through the
``slack_server`` fixture (``tests/conftest_slack.py``)::

    def test_alert(slack_server):
        client = WebClient(token=slack_server.token, base_url=slack_server.base_url)
        client.chat_postMessage(channel=slack_server.channel, text="hi")
        assert slack_server.messages[0]["text"] == "hi"
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Fault:
    status: int = 200  # 429, 500, 503, ... (200 with ``error`` for API errors)
    error: str | None = None  # Slack error code for ``{"ok": false, "error": ...}``
    retry_after: float | None = None  # the Retry-After header (429)
    times: int = 1  # how many requests it applies to
    delay: float = 0.0  # seconds to wait before answering (a slow Slack)


@dataclass
class RecordedRequest:
    method: str  # Slack method ("chat.postMessage", "upload", ...)
    path: str
    headers: dict[str, str]
    params: dict[str, Any]  # query string + form or JSON body
    body: bytes
    status: int = 0  # what the server answered
    error: str | None = None  # the Slack error code it answered with, if any


@dataclass
class _State:
    requests: list[RecordedRequest] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: dict[str, list[Fault]] = field(default_factory=dict)


class SlackServer:
    """A Slack Web API look-alike on 127.0.0.1 (a free port), in a background thread."""

    def __init__(
        self, *, token: str = "xoxb-mailpulse-test", channels: dict[str, str] | None = None
    ):
        self.token = token
        #: channel ID -> name; chat.postMessage also accepts "#name" / "name"
        self.channels = dict(channels or {"C0MAILPULSE": "mailpulse-alerts"})
        self._lock = threading.Lock()
        self._state = _State()
        self._ts = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        #: set on stop, so a delayed answer does not outlive the server
        self._stopping = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> "SlackServer":
        server = self

        class Handler(_Handler):
            slack = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="slack-test-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> "SlackServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "start() the server first"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """What ``WebClient(base_url=...)`` / ``MAILPULSE_SLACK_API_URL`` take."""
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def channel(self) -> str:
        """The first configured channel ID."""
        return next(iter(self.channels))

    def env(self) -> dict[str, str]:
        """The environment a mailpulse entry point needs to post here."""
        return {
            "SLACK_BOT_TOKEN": self.token,
            "MAILPULSE_SLACK_CHANNEL": self.channel,
            "MAILPULSE_SLACK_API_URL": self.base_url,
        }

    # -- scripting and inspection ------------------------------------------------------
    def fail(
        self,
        method: str,
        *,
        status: int = 200,
        error: str | None = None,
        retry_after: float | None = None,
        times: int = 1,
        delay: float = 0.0,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with a fault (queued in order).
        ``method`` is a Slack method name, or ``"upload"`` for the upload POST.
        ``delay`` (seconds, at most 30) waits before answering; alone (status 200, no
        error) it answers normally, late."""
        if status == 200 and error is None and not delay:
            raise ValueError("a fault needs a non-200 status, a Slack error code or a delay")
        if not 0 <= delay <= 30:
            raise ValueError("delay must be between 0 and 30 seconds")
        if status == 429 and error is None:
            error = "ratelimited"
        with self._lock:
            self._state.faults.setdefault(method, []).append(
                Fault(status=status, error=error, retry_after=retry_after, times=times, delay=delay)
            )

    def reset(self) -> None:
        with self._lock:
            self._state = _State()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._state.requests)

    def calls(self, method: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method]

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Messages posted successfully: channel, ts, text, blocks, thread_ts."""
        with self._lock:
            return list(self._state.messages)

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        """Files by id: filename, length, content (bytes), title, channel, thread_ts,
        initial_comment, completed."""
        with self._lock:
            return {k: dict(v) for k, v in self._state.files.items()}

    def completed_files(self) -> list[dict[str, Any]]:
        return [f for f in self.files.values() if f["completed"]]

    # -- behaviour (called from the handler threads) -----------------------------------
    def _take_fault(self, method: str) -> Fault | None:
        with self._lock:
            queue = self._state.faults.get(method) or []
            if not queue:
                return None
            fault = queue[0]
            fault.times -= 1
            if fault.times <= 0:
                queue.pop(0)
            return fault

    def _record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self._state.requests.append(rec)

    def _channel_id(self, channel: str | None) -> str | None:
        if not channel:
            return None
        if channel in self.channels:
            return channel
        name = channel.lstrip("#")
        for cid, cname in self.channels.items():
            if cname == name:
                return cid
        return None

    def _authed(self, headers: dict[str, str], params: dict[str, Any]) -> bool:
        auth = headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else params.get("token", "")
        return token == self.token

    def handle(
        self, method: str, headers: dict[str, str], params: dict[str, Any], body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        """(status, extra headers, JSON-able body or raw text)."""
        fault = self._take_fault(method)
        if fault is not None and fault.delay:
            self._stopping.wait(fault.delay)
            if fault.status == 200 and fault.error is None:
                fault = None
        if fault is not None:
            hdrs = {}
            if fault.retry_after is not None:
                hdrs["Retry-After"] = _num(fault.retry_after)
            if fault.status >= 500:
                return fault.status, hdrs, "Internal Server Error"
            return fault.status, hdrs, {"ok": False, "error": fault.error}
        if method == "upload":
            return self._upload(params["_file_id"], body)
        if not self._authed(headers, params):
            return 200, {}, {"ok": False, "error": "invalid_auth"}
        handler = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "files.getUploadURLExternal": self._get_upload_url,
            "files.completeUploadExternal": self._complete_upload,
        }.get(method)
        if handler is None:
            return 200, {}, {"ok": False, "error": "unknown_method"}
        return handler(params)

    def _auth_test(self, params):
        return (
            200,
            {},
            {"ok": True, "team": "mailpulse", "user": "mailpulse-bot", "bot_id": "B0MAILPULSE"},
        )

    def _post_message(self, params):
        cid = self._channel_id(params.get("channel"))
        if cid is None:
            return 200, {}, {"ok": False, "error": "channel_not_found"}
        if not params.get("text") and not params.get("blocks"):
            return 200, {}, {"ok": False, "error": "no_text"}
        blocks = params.get("blocks")
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        ts = f"1700000000.{next(self._ts):06d}"
        msg = {
            "channel": cid,
            "ts": ts,
            "text": params.get("text"),
            "blocks": blocks,
            "thread_ts": params.get("thread_ts"),
        }
        with self._lock:
            self._state.messages.append(msg)
        return (
            200,
            {},
            {
                "ok": True,
                "channel": cid,
                "ts": ts,
                "message": {"type": "message", "text": msg["text"], "blocks": blocks, "ts": ts},
            },
        )

    def _get_upload_url(self, params):
        filename, length = params.get("filename"), params.get("length")
        if not filename or length in (None, ""):
            return 200, {}, {"ok": False, "error": "invalid_arguments"}
        fid = f"F{next(self._file_ids):010d}"
        with self._lock:
            self._state.files[fid] = {
                "id": fid,
                "filename": filename,
                "length": int(length),
                "content": None,
                "title": None,
                "channel": None,
                "thread_ts": None,
                "initial_comment": None,
                "completed": False,
            }
        return (
            200,
            {},
            {
                "ok": True,
                "file_id": fid,
                "upload_url": f"http://127.0.0.1:{self.port}/upload/v1/{fid}",
            },
        )

    def _upload(self, fid, body):
        with self._lock:
            f = self._state.files.get(fid)
            if f is None:
                return 404, {}, "no such upload"
            f["content"] = body
        return 200, {}, f"OK - {len(body)}"

    def _complete_upload(self, params):
        try:
            items = json.loads(params.get("files") or "[]")
        except ValueError:
            return 200, {}, {"ok": False, "error": "invalid_arguments"}
        channel = params.get("channel_id") or params.get("channels")
        cid = self._channel_id(channel) if channel else None
        if channel and cid is None:
            return 200, {}, {"ok": False, "error": "channel_not_found"}
        out = []
        with self._lock:
            for item in items:
                f = self._state.files.get(item.get("id"))
                if f is None or f["content"] is None:
                    return 200, {}, {"ok": False, "error": "file_not_found"}
                if len(f["content"]) != f["length"]:
                    return 200, {}, {"ok": False, "error": "file_upload_size_mismatch"}
                f.update(
                    completed=True,
                    title=item.get("title"),
                    channel=cid,
                    thread_ts=params.get("thread_ts") or None,
                    initial_comment=params.get("initial_comment") or None,
                )
                out.append(
                    {"id": f["id"], "name": f["filename"], "title": f["title"], "size": f["length"]}
                )
        return 200, {}, {"ok": True, "files": out}


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


class _Handler(BaseHTTPRequestHandler):
    slack: SlackServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep test output clean
        pass

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def _dispatch(self):
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        params: dict[str, Any] = dict(parse_qsl(parts.query, keep_blank_values=True))
        ctype = headers.get("content-type", "")
        if parts.path.startswith("/upload/"):
            method = "upload"
            params["_file_id"] = parts.path.rsplit("/", 1)[-1]
        elif parts.path.startswith("/api/"):
            method = parts.path[len("/api/") :]
            if "json" in ctype and body:
                params.update(json.loads(body))
            elif "x-www-form-urlencoded" in ctype and body:
                params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        else:
            method = "?"
        rec = RecordedRequest(
            method=method, path=self.path, headers=headers, params=params, body=body
        )
        if method == "?":
            status, extra, payload = 404, {}, "not found"
        else:
            status, extra, payload = self.slack.handle(method, headers, params, body)
        rec.status = status
        if isinstance(payload, dict) and not payload.get("ok", True):
            rec.error = payload.get("error")
        self.slack._record(rec)
        if isinstance(payload, (dict, list)):
            data, ctype_out = json.dumps(payload).encode(), "application/json; charset=utf-8"
        else:
            data, ctype_out = str(payload).encode(), "text/plain; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", ctype_out)
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
