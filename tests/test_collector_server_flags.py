"""``mailpulse serve`` server-model flags: parsed once, nonsense refused with the reason."""

from __future__ import annotations

import pytest

from pipelines.cli import build_parser


def parse(*argv):
    return build_parser().parse_args(["serve", *argv])


def test_defaults():
    a = parse()
    assert (a.header_timeout, a.body_timeout, a.keepalive, a.max_connections) == (
        10.0,
        30.0,
        75.0,
        1000,
    )
    assert (a.workers, a.threads, a.timeout, a.max_body_bytes) == (2, 8, 30, 10 * 1024 * 1024)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--header-timeout", "0"], "must be more than 0"),
        (["--body-timeout", "-1"], "must be more than 0"),
        (["--keepalive", "soon"], "is not a number of seconds"),
        (["--max-connections", "0"], "must be 1 or more"),
    ],
)
def test_bad_values_exit_2_naming_the_flag(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert argv[0] in err and message in err


def test_limits_reach_the_worker():
    from pipelines.collector.server import CollectorServer, gunicorn_options
    from pipelines.collector.worker import ServerLimits

    opts = gunicorn_options("127.0.0.1", 8080, 3, 30)
    assert opts["worker_class"] == "pipelines.collector.worker.CollectorWorker"
    assert opts["accesslog"] is None  # gunicorn's own access log would print query strings
    limits = ServerLimits(header_timeout=2, max_connections=5, threads=4)
    srv = CollectorServer(lambda: None, opts, limits=limits, on_reject=lambda r: None)
    assert srv.limits is limits and srv.cfg.workers == 3
    assert srv.cfg.worker_class.__name__ == "CollectorWorker"
    assert limits.max_buffered_bytes == 2 * 4 * 10 * 1024 * 1024
