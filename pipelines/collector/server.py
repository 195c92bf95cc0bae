"""Running the collector under gunicorn (production) or Werkzeug (``--dev``).

gunicorn is the process manager (forks the workers, restarts a stuck or dead one, stops
them gracefully); each worker is a :class:`~pipelines.collector.worker.CollectorWorker`
(asyncio + h11 with header/body deadlines and a connection bound, the Flask app in a
thread pool)."""

from __future__ import annotations

import logging
from typing import Any, Callable

from gunicorn.app.base import BaseApplication

from .verification import redact_target
from .worker import ServerLimits

log = logging.getLogger("mailpulse.collector")


class CollectorServer(BaseApplication):
    """gunicorn with the collector app; each worker builds its own app (and so its own
    archive writer with a unique instance id) after the fork."""

    def __init__(
        self,
        app_factory: Callable[[], Any],
        options: dict[str, Any],
        limits: ServerLimits | None = None,
        on_reject: Callable[[str], None] | None = None,
    ):
        self.app_factory = app_factory
        self.options = options
        self.limits = limits or ServerLimits()  # read by CollectorWorker
        self.on_reject = on_reject  # reason -> None: counts the worker's own rejections
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key.lower(), value)
        self.cfg.set("worker_exit", _worker_exit)

    def load(self):
        app = self.app_factory()
        _APPS.append(app)
        # Open the writer now: its recovery sweep finishes files a killed worker left.
        app.extensions["mailpulse"].writer()
        return app


_APPS: list = []


def _worker_exit(server, worker) -> None:
    """Graceful stop: close, compress and ship this worker's open files."""
    for app in _APPS:
        try:
            app.extensions["mailpulse"].shutdown()
        except Exception as exc:  # noqa: BLE001 - the next worker's recovery sweep finishes the files
            log.warning("closing archive files on worker exit failed: %s", exc)


def gunicorn_options(host: str, port: int, workers: int, timeout: int) -> dict[str, Any]:
    """The process model. Threads, keep-alive, limits and the access log are the worker's
    (:class:`ServerLimits`): gunicorn's own access log would print query strings."""
    return {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "worker_class": "pipelines.collector.worker.CollectorWorker",
        "timeout": timeout,
        "graceful_timeout": timeout,
        "accesslog": None,
        "errorlog": "-",
        "proc_name": "mailpulse-serve",
        # gunicorn >= 25.1 opens a control socket at one fixed path per user; two
        # collectors on one host would fight over it. Not needed here.
        "control_socket_disable": True,
    }


def run_dev(app, host: str, port: int) -> None:
    from werkzeug.serving import WSGIRequestHandler, run_simple

    class RedactingHandler(WSGIRequestHandler):
        """Werkzeug's request log without query values (a CMC api_key may be one)."""

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            path = getattr(self, "path", None)
            self.log(
                "info",
                '"%s %s %s" %s %s',
                getattr(self, "command", "-"),
                redact_target(path) if path else "[unreadable request line]",
                getattr(self, "request_version", "-"),
                code,
                size,
            )

        def log_error(self, format: str, *args: Any) -> None:
            # http.server's messages quote the raw request line, which may hold a key
            self.log("error", "%s", "bad request (the request line is not logged)")

    run_simple(host, port, app, threaded=True, use_reloader=False, request_handler=RedactingHandler)
