"""Running the collector under gunicorn (production) or Werkzeug (``--dev``)."""
from __future__ import annotations

import logging
from typing import Any, Callable

from gunicorn.app.base import BaseApplication

log = logging.getLogger("mailpulse.collector")


class CollectorServer(BaseApplication):
    """gunicorn with the collector app; each worker builds its own app (and so its own
    archive writer with a unique instance id) after the fork."""

    def __init__(self, app_factory: Callable[[], Any], options: dict[str, Any]):
        self.app_factory = app_factory
        self.options = options
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


def gunicorn_options(host: str, port: int, workers: int, threads: int, timeout: int,
                     access_log: bool) -> dict[str, Any]:
    return {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": timeout,
        "graceful_timeout": timeout,
        "keepalive": 75,  # SendGrid and SNS reuse connections
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "proc_name": "mailpulse-serve",
        # Behind a TLS proxy on the same host: trust its X-Forwarded-* headers only.
        "forwarded_allow_ips": "127.0.0.1,::1",
        # gunicorn >= 25.1 opens a control socket at one fixed path per user; two
        # collectors on one host would fight over it. Not needed here.
        "control_socket_disable": True,
    }


def run_dev(app, host: str, port: int) -> None:
    from werkzeug.serving import run_simple
    run_simple(host, port, app, threaded=True, use_reloader=False)
