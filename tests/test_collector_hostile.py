"""``mailpulse serve`` against slow and malicious clients (real servers on 127.0.0.1).

- 200 connections trickling their headers for 14 s while genuine signed posts arrive:
  every genuine post is answered 200 within a second or two;
- a head that trickles past ``--header-timeout`` gets 408, a body past
  ``--body-timeout`` gets 408, slow bodies do not hold the app's threads;
- the connection bound: past ``--max-connections`` the oldest slow connection is shed
  (genuine posts still go through), or 503 when every connection is busy;
- a chunked body over ``--max-body-bytes`` gets 413 and nothing is archived (gunicorn
  and ``--dev``); a client that sends all of a declared oversized body before reading,
  slowly, still reads its 413;
- credentials sent in the URL or in headers never reach the log (``--access-log``);
- an unauthenticated 9.9 MB CMC form is rejected in milliseconds, not seconds.

Every flood is bounded in connections and seconds and stops by itself.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import time
from urllib.parse import urlencode

import pytest
from collector_hostile_support import CMC_KEY, Serve, SlowFlood, signed_batch, signing_key
from collector_support import archived

pytestmark = pytest.mark.slow

SLOW_HEAD = (
    b"POST /webhooks/sendgrid HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/json\r\nX-Padding: "
)


@pytest.fixture(scope="module")
def key():
    return signing_key()


def cmc_doc(n_events: int = 1) -> dict:
    return {
        "event_type": "deliveries",
        "server_composition": "pro",
        "event": {
            "deliveries": [
                {
                    "status": "succeeded",
                    "to": "user@example.jp",
                    "messageId": f"<m{i}@example.com>",
                    "created": "2023-01-25 14:03:09",
                }
                for i in range(n_events)
            ]
        },
    }


def genuine_posts_during(server: Serve, priv, seconds: float, every: float = 0.5, tag: str = "g"):
    """Post one signed batch every ``every`` seconds for ``seconds``; [(status, s)]."""
    out = []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        body, headers = signed_batch(priv, f"{tag}{i}")
        try:
            status, _, took = server.post("/webhooks/sendgrid", body, headers, timeout=5)
        except OSError as exc:
            status, took = type(exc).__name__, 5.0
        out.append((status, took))
        i += 1
        time.sleep(every)
    return out


def test_200_slow_header_connections_do_not_starve_genuine_posts(tmp_path, key):
    priv, pub = key
    server = Serve(tmp_path, "--workers", "2", "--threads", "8", pub=pub, cmc=False)
    flood = SlowFlood(server.port, 200, SLOW_HEAD, interval=0.5, seconds=14)
    t = threading.Thread(target=flood.run)
    try:
        t.start()
        time.sleep(1.0)  # the flood is in place
        results = genuine_posts_during(server, priv, seconds=12)
        flood.stop()
        t.join(20)
        health = server.healthz()["counters"]
    finally:
        flood.stop()
        log = server.stop()
    lat = sorted(s for _, s in results)
    print(
        f"\nslow-header flood: {flood.stats.opened} connections opened (200 at a time, "
        f"peak {flood.stats.max_open}), {flood.stats.closed_by_server} closed by the server "
        f"({flood.stats.answered}); genuine posts: {len(results)}, "
        f"{sum(1 for s, _ in results if s == 200)} answered 200, p50 {lat[len(lat) // 2] * 1000:.0f} ms, "
        f"max {lat[-1] * 1000:.0f} ms"
    )
    assert [s for s, _ in results] == [200] * len(results), results
    assert len(results) >= 15
    assert lat[-1] < 2.0, f"a genuine post took {lat[-1]:.2f} s under the flood"
    # the slow heads were cut at the 10 s default header deadline with a 408
    assert flood.stats.answered.get("408", 0) >= 150, flood.stats.answered
    assert health["rejected_by_reason"].get("timeout", 0) >= 150
    assert health["accepted"] == len(results)
    assert len(archived(server.archive)) == len(results)
    assert "Traceback" not in log
    # 200 rejections, a few throttled log lines (at most one per second per worker)
    assert 1 <= log.count("rejected POST") + log.count("rejected a request") <= 2 * 16, log[-3000:]


def test_head_past_the_header_timeout_gets_408_even_if_bytes_keep_coming(tmp_path, key):
    priv, pub = key
    server = Serve(tmp_path, "--header-timeout", "2", pub=pub, cmc=False)
    try:
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        s.sendall(SLOW_HEAD)
        start = time.monotonic()
        answer = b""
        s.settimeout(0.2)
        while time.monotonic() - start < 8:
            try:
                s.sendall(b"a")  # one byte every 0.2 s: an idle timer would never fire
                answer += s.recv(4096)
                if answer:
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        took = time.monotonic() - start
        s.close()
        # a kept-alive connection idles, then its next head has the same deadline
        body, headers = signed_batch(priv, "ka")
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        c.request("POST", "/webhooks/sendgrid", body=body, headers=headers)
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b'{"status": "accepted"}')
        time.sleep(2.5)  # idle longer than the header timeout: allowed (keep-alive 75 s)
        c.request("GET", "/healthz")
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read())["status"] == "ok"
        c.close()
    finally:
        server.stop()
    first_line = answer.split(b"\r\n", 1)[0]
    print(f"\ntrickled head answered after {took:.2f} s: {first_line!r}")
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    assert 1.8 <= took <= 4.0


def test_slow_bodies_time_out_and_do_not_hold_the_app_threads(tmp_path, key):
    priv, pub = key
    # 1 worker x 2 threads: under gthread, 2 slow bodies would stop this server
    server = Serve(
        tmp_path, "--workers", "1", "--threads", "2", "--body-timeout", "3", pub=pub, cmc=False
    )
    body, headers = signed_batch(priv, "slowbody")
    head = (
        "POST /webhooks/sendgrid HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    flood = SlowFlood(server.port, 50, head, trickle=body, interval=0.3, seconds=8, refill=False)
    t = threading.Thread(target=flood.run)
    try:
        t.start()
        time.sleep(0.5)
        results = genuine_posts_during(server, priv, seconds=5, tag="gb")
        t.join(20)
        health = server.healthz()["counters"]
    finally:
        flood.stop()
        server.stop()
    lat = sorted(s for _, s in results)
    print(
        f"\nslow bodies: 50 connections trickling a signed body; genuine posts {len(results)}, "
        f"max {lat[-1] * 1000:.0f} ms; slow ones answered {flood.stats.answered}"
    )
    assert [s for s, _ in results] == [200] * len(results)
    assert lat[-1] < 2.0
    assert flood.stats.answered == {"408": 50}
    assert health["rejected_by_reason"]["timeout"] == 50
    assert health["accepted"] == len(results)  # no slow body was archived


def test_connection_bound_sheds_the_oldest_slow_connection(tmp_path, key):
    priv, pub = key
    server = Serve(tmp_path, "--workers", "1", "--max-connections", "20", pub=pub, cmc=False)
    flood = SlowFlood(server.port, 35, SLOW_HEAD, interval=0.3, seconds=6)
    t = threading.Thread(target=flood.run)
    try:
        t.start()
        time.sleep(1.0)
        results = genuine_posts_during(server, priv, seconds=4, every=0.2, tag="gc")
        flood.stop()
        t.join(20)
    finally:
        flood.stop()
        log = server.stop()
    print(
        f"\n35 slow heads against --max-connections 20: {flood.stats.closed_by_server} shed; "
        f"genuine {len(results)}, statuses {sorted({s for s, _ in results}, key=str)}"
    )
    assert [s for s, _ in results] == [200] * len(results)
    assert flood.stats.closed_by_server >= 15
    assert flood.stats.max_open == 35 and "Traceback" not in log
    assert "bad_request" not in log  # a shed connection is not counted as a bad request


def test_a_client_that_has_not_sent_yet_is_not_shed_for_room(tmp_path, key):
    """A client descheduled between connect() and its send (a busy machine) looks idle;
    a newer slow head must be shed for room, not it."""
    priv, pub = key
    server = Serve(tmp_path, "--workers", "1", "--max-connections", "1", pub=pub, cmc=False)
    body, headers = signed_batch(priv, "late")
    request = (
        "POST /webhooks/sendgrid HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    slow = []
    try:
        slow.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        slow[-1].sendall(SLOW_HEAD)
        time.sleep(0.2)
        late = socket.create_connection(("127.0.0.1", server.port), timeout=5)  # sends nothing yet
        time.sleep(0.2)  # the first slow head is shed for it
        slow.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        slow[-1].sendall(SLOW_HEAD)
        time.sleep(0.3)  # room is made again: the newer slow head goes, the silent one stays
        answer = b""
        try:
            late.sendall(request)
            while chunk := late.recv(65536):
                answer += chunk
        except OSError as exc:
            answer = type(exc).__name__.encode()
        late.close()
        shed = []
        for s in slow:
            s.settimeout(0.5)
            try:
                shed.append(s.recv(100) == b"")
            except OSError:
                shed.append(True)
    finally:
        for s in slow:
            s.close()
        server.stop()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert archived(server.archive) and shed == [True, True]


def test_a_flood_far_past_the_bound_gets_503_never_a_reset(tmp_path, key):
    priv, pub = key
    server = Serve(tmp_path, "--workers", "1", "--max-connections", "10", pub=pub, cmc=False)
    flood = SlowFlood(server.port, 120, SLOW_HEAD, interval=0.2, seconds=7)
    t = threading.Thread(target=flood.run)
    try:
        t.start()
        time.sleep(1.0)
        results = genuine_posts_during(server, priv, seconds=5, every=0.1, tag="gf")
        flood.stop()
        t.join(20)
    finally:
        flood.stop()
        server.stop()
    statuses = [s for s, _ in results]
    print(
        f"\n120 slow heads against --max-connections 10: genuine {len(results)}, "
        f"{statuses.count(200)} x 200, {statuses.count(503)} x 503; the flood got "
        f"{flood.stats.answered} and {flood.stats.closed_by_server} closes"
    )
    assert set(statuses) <= {200, 503}, statuses  # an answer, never a reset or a timeout
    assert statuses.count(200) >= 0.8 * len(statuses)
    assert flood.stats.answered.get("503", 0) > 100  # the flood's own newcomers are refused


def test_503_when_every_connection_is_busy(tmp_path, key):
    priv, pub = key
    server = Serve(
        tmp_path,
        "--workers",
        "1",
        "--max-connections",
        "5",
        "--body-timeout",
        "5",
        pub=pub,
        cmc=False,
    )
    head = b"POST /webhooks/sendgrid HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n"
    busy = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(5)]
    try:
        for s in busy:
            s.sendall(head + b"[")  # a body on its way: busy, not sheddable
        time.sleep(0.5)
        body, headers = signed_batch(priv, "busy")
        status, data, _ = server.post("/webhooks/sendgrid", body, headers)
        for s in busy:
            s.close()
        time.sleep(0.5)
        after, _, _ = server.post("/webhooks/sendgrid", body, headers)
    finally:
        server.stop()
    assert (status, json.loads(data)) == (503, {"error": "overloaded"})
    assert after == 200


@pytest.mark.parametrize("mode", ["gunicorn", "dev"])
def test_chunked_body_over_the_limit_gets_413_and_nothing_is_archived(tmp_path, mode):
    server = Serve(tmp_path, *(["--dev"] if mode == "dev" else []), name=mode)
    doc = cmc_doc()
    small = urlencode(
        {
            "api_key": CMC_KEY,
            "server_composition": "pro",
            "event_type": "deliveries",
            "event": json.dumps(doc["event"]),
        }
    ).encode()
    pad = b"&padding=" + b"a" * (11 * 1024 * 1024)  # 11 MiB
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    try:
        big = server.post("/webhooks/cmc", small + pad, form, chunked=True, timeout=60)
        after_big = archived(server.archive)
        exact = server.post(
            "/webhooks/cmc", (small + pad)[: 10 * 1024 * 1024], form, chunked=True, timeout=60
        )
        declared = server.post("/webhooks/cmc", small + pad, form, timeout=60)
        archived_before = archived(server.archive)
        ok = server.post("/webhooks/cmc", small, form, chunked=True)
        health = server.healthz()["counters"]
    finally:
        server.stop()
    print(
        f"\n{mode}: 11 MiB chunked -> {big[0]} in {big[2] * 1000:.0f} ms; "
        f"exactly 10 MiB chunked -> {exact[0]}; 11 MiB with Content-Length -> {declared[0]}"
    )
    assert (big[0], json.loads(big[1])) == (413, {"error": "too_large"})
    assert after_big == []  # nothing archived, not even a truncated copy
    assert declared[0] == 413
    assert exact[0] == 200  # at the limit is not over it
    assert len(archived_before) == 1 and b"padding" in archived_before[0]  # only the 10 MiB one
    assert ok[0] == 200
    lines = [json.loads(ln) for ln in archived(server.archive)]  # files of both workers
    assert len(lines) == 2 and doc in lines  # a chunked post under the limit, de-chunked intact
    assert health["rejected_by_reason"]["too_large"] == 2


def test_a_slow_sender_of_a_declared_oversized_body_reads_its_413(tmp_path):
    """http.client, requests and curl send the whole body before they read the answer.
    The 413 goes out when the head arrives; the server then keeps reading (and dropping)
    the 12 MiB the client declared, sent here over about 3 s, so that the client reads
    the 413 rather than a reset connection in the middle of its send."""
    server = Serve(tmp_path)
    size, piece = 12 * 1024 * 1024, 256 * 1024
    head = (
        b"POST /webhooks/cmc HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: " + str(size).encode() + b"\r\n\r\n"
    )
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            s.sendall(head)
            t = time.monotonic()
            for _ in range(size // piece):
                s.sendall(b"a" * piece)
                time.sleep(0.06)
            sent_for = time.monotonic() - t
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        health = server.healthz()["counters"]
    finally:
        server.stop()
    assert sent_for > 2.5  # longer than a single idle gap the server allows, in all
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), answer[:200]
    assert json.loads(rest.partition(b"\r\n\r\n")[2]) == {"error": "too_large"}
    assert health["rejected_by_reason"]["too_large"] == 1
    assert archived(server.archive) == []


def test_clients_still_sending_after_their_413_do_not_hold_the_connection_bound(tmp_path):
    """Two clients keep trickling the bodies they declared too large, after their 413,
    on a worker bound to two connections: a genuine post still gets through (they are
    shed for it), rather than a 503 for a worker whose every connection looks busy."""
    server = Serve(tmp_path, "--workers", "1", "--max-connections", "2", "--max-body-bytes", "2048")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    small = urlencode(
        {
            "api_key": CMC_KEY,
            "server_composition": "pro",
            "event_type": "deliveries",
            "event": json.dumps(cmc_doc()["event"]),
        }
    ).encode()
    head = (
        b"POST /webhooks/cmc HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 6000\r\n\r\n"
    )
    stop = threading.Event()
    senders = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(2)]

    def trickle() -> None:
        for s in senders:
            s.sendall(head + b"a" * 100)
        while not stop.wait(0.2):
            for s in senders:
                try:
                    s.sendall(b"a" * 20)
                except OSError:
                    pass  # shed

    t = threading.Thread(target=trickle, daemon=True)
    try:
        t.start()
        time.sleep(1.0)  # both answered 413 and lingering, their bytes still arriving
        status, data, _ = server.post("/webhooks/cmc", small, form)
        stop.set()
        t.join(5)
        for s in senders:
            s.close()
        time.sleep(0.2)
        health = server.healthz()["counters"]
    finally:
        stop.set()
        for s in senders:
            s.close()
        server.stop()
    assert status == 200, data
    assert health["rejected_by_reason"]["too_large"] == 2
    assert len(archived(server.archive)) == 1


@pytest.mark.parametrize("mode", ["gunicorn", "dev"])
def test_credentials_never_reach_the_log(tmp_path, key, mode):
    priv, pub = key
    wrong = "wrong-key-5b0c1f"
    basic_user, basic_pw = "hookuser", "hook-pass-71c2"
    server = Serve(
        tmp_path,
        "--access-log",
        "--sendgrid-basic-auth",
        f"{basic_user}:{basic_pw}",
        *(["--dev"] if mode == "dev" else []),
        pub=pub,
        name=mode,
    )
    body = json.dumps(cmc_doc()).encode()
    js = {"Content-Type": "application/json"}
    auth = base64.b64encode(f"{basic_user}:{basic_pw}".encode()).decode()
    try:
        statuses = [
            server.post(f"/webhooks/cmc?api_key={CMC_KEY}", body, js)[0],
            server.post(f"/webhooks/cmc?api_key={wrong}&token={wrong}", body, js)[0],
            server.post(f"/webhooks/cmc?signature={CMC_KEY}", body, js)[0],
        ]
        sg_body, sg_headers = signed_batch(priv, "log")
        statuses.append(
            server.post(
                "/webhooks/sendgrid", sg_body, dict(sg_headers, Authorization=f"Basic {auth}")
            )[0]
        )
        statuses.append(
            server.post(
                "/webhooks/sendgrid",
                sg_body,
                dict(
                    sg_headers,
                    Authorization="Basic "
                    + base64.b64encode(f"{basic_user}:{wrong}".encode()).decode(),
                ),
            )[0]
        )
        # a malformed request line that carries the key, and one over the header limit
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(f"POST /webhooks/cmc?api_key={CMC_KEY} HTTP/1.1 x\r\n\r\n".encode())
            s.recv(4096)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(
                f"POST /webhooks/cmc?api_key={CMC_KEY}&x={'y' * 70000} HTTP/1.1\r\n\r\n".encode()
            )
            try:
                s.recv(4096)
            except OSError:
                pass
        time.sleep(0.3)
    finally:
        log = server.stop()
    assert statuses == [200, 401, 401, 200, 401]
    for secret in (CMC_KEY, wrong, basic_pw, auth):
        assert secret not in log, f"{secret} is in the {mode} log"
    assert log.count("/webhooks/cmc?api_key=[redacted]") >= 1, log[-3000:]
    assert "api_key=[redacted]&token=[redacted]" in log
    assert archived(server.archive) and all(
        CMC_KEY.encode() not in ln for ln in archived(server.archive)
    )


def test_unauthenticated_large_form_is_rejected_fast(tmp_path, key):
    _, pub = key
    server = Serve(tmp_path, "--workers", "1", "--threads", "1", pub=pub)
    event = json.dumps(
        {
            "deliveries": [
                {
                    "status": "succeeded",
                    "to": f"u{i}@example.jp",
                    "messageId": f"<m{i}@example.com>",
                }
                for i in range(20000)
            ]
        }
    )
    fields = [("server_composition", "pro"), ("event_type", "deliveries"), ("event", event)]
    size = len(urlencode(fields + [("api_key", CMC_KEY), ("padding", "")]))
    fields.append(("padding", "a" * (9_900_000 - size)))  # 9.9 MB, under the 10 MiB limit
    form_wrong = urlencode(fields + [("api_key", "not-the-key")]).encode()
    form_none = urlencode(fields).encode()
    many_fields = b"&".join(b"f%d=%d" % (i, i) for i in range(1_100_000))[:9_900_000]
    ctype = {"Content-Type": "application/x-www-form-urlencoded"}
    try:
        timings = {}
        for name, body in (
            ("wrong api_key", form_wrong),
            ("no api_key", form_none),
            ("1.1M fields, no api_key", many_fields),
        ):
            status, data, took = server.post("/webhooks/cmc", body, ctype, timeout=30)
            assert (status, json.loads(data)) == (401, {"error": "unauthenticated"}), name
            timings[name] = (len(body), took)
        # the other routes: a 9.9 MB CMC JSON body with a wrong key, a 9.9 MB SendGrid
        # batch with a signature by another key
        js = json.dumps(
            {"api_key": "not-the-key", **cmc_doc(), "padding": "a" * 9_800_000}
        ).encode()
        status, _, took = server.post("/webhooks/cmc", js, {"Content-Type": "application/json"})
        assert status == 401
        timings["CMC JSON, wrong api_key"] = (len(js), took)
        other, _ = signing_key()
        sg = json.dumps(
            [{"event": "delivered", "email": "a@example.com", "pad": "a" * 9_800_000}]
        ).encode()
        _, headers = signed_batch(other, "forged")
        status, _, took = server.post("/webhooks/sendgrid", sg, headers)
        assert status == 403
        timings["SendGrid, forged signature"] = (len(sg), took)
        right = urlencode(fields + [("api_key", CMC_KEY)]).encode()
        status, _, took_ok = server.post("/webhooks/cmc", right, ctype, timeout=60)
        assert status == 200
        # the server still answers at once afterwards (its one thread is free)
        t = time.perf_counter()
        assert server.healthz()["status"] == "ok"
        after = time.perf_counter() - t
    finally:
        server.stop()
    print(
        "\nunauthenticated CMC forms: "
        + "; ".join(
            f"{n} ({b / 1e6:.1f} MB) -> rejected in {s * 1000:.0f} ms"
            for n, (b, s) in timings.items()
        )
        + f"; the same form with the right key -> 200 in {took_ok * 1000:.0f} ms"
    )
    for name, (size, took) in timings.items():
        assert size > 9_000_000
        assert took < 1.0, f"{name}: 401 after {took:.2f} s"
    assert after < 0.5


def _exchange(port: int, data: bytes, wait: float = 3.0) -> bytes:
    """Send raw bytes, read until the server closes or ``wait`` seconds pass."""
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        end = time.monotonic() + wait
        while time.monotonic() < end:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


def test_http_edges(tmp_path, key):
    priv, pub = key
    server = Serve(tmp_path, "--workers", "1", pub=pub, cmc=False)
    body, headers = signed_batch(priv, "edge")
    hdr = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
    req = (
        b"POST /webhooks/sendgrid HTTP/1.1\r\nHost: x\r\n"
        + hdr
        + b"Content-Length: %d\r\n" % len(body)
    )
    try:
        # Expect: 100-continue: told to go on, then accepted
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(req + b"Expect: 100-continue\r\n\r\n")
            interim = s.recv(4096)
            s.sendall(body)
            final = s.recv(4096)
        # two pipelined posts in one write: two answers, in order
        pipelined = _exchange(server.port, (req + b"\r\n" + body) * 2, wait=2)
        # ambiguous framing is refused
        smuggle = _exchange(server.port, req + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        # a head over 16 KiB
        huge = _exchange(
            server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
        )
        # HTTP/1.0: answered, then closed
        old = _exchange(server.port, b"GET /healthz HTTP/1.0\r\n\r\n")
        health = server.healthz()["counters"]
    finally:
        server.stop()
    assert interim.startswith(b"HTTP/1.1 100 ")
    assert final.startswith(b"HTTP/1.1 200 OK\r\n")
    assert pipelined.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert smuggle.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b'"bad_request"' in smuggle
    assert huge.startswith(b"HTTP/1.1 431 ")
    assert old.startswith(b"HTTP/1.1 200 OK\r\n") and b'"status": "ok"' in old
    assert health["accepted"] == 3
    assert len(archived(server.archive)) == 3


def test_graceful_stop_under_a_flood_keeps_every_acknowledged_post(tmp_path, key):
    priv, pub = key
    server = Serve(tmp_path, "--workers", "2", pub=pub, cmc=False)
    flood = SlowFlood(server.port, 100, SLOW_HEAD, interval=0.5, seconds=20, refill=False)
    ft = threading.Thread(target=flood.run)
    results: list = []
    stop = threading.Event()

    def post_until_stopped(n):
        i, end = 0, time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < end:
            body, headers = signed_batch(priv, f"stop{n}-{i}", n=5)
            try:
                status, _, _ = server.post("/webhooks/sendgrid", body, headers, timeout=10)
            except OSError:
                status = None  # the server went away between two posts
            results.append((body, status))
            i += 1

    posters = [threading.Thread(target=post_until_stopped, args=(n,)) for n in range(4)]
    try:
        ft.start()
        time.sleep(0.5)
        for t in posters:
            t.start()
        time.sleep(2.0)
        t0 = time.monotonic()
        server.proc.send_signal(15)
        server.proc.wait(30)
        took = time.monotonic() - t0
        stop.set()
        for t in posters:
            t.join(15)
    finally:
        stop.set()
        flood.stop()
        ft.join(25)
        server.stop()
    acked = [b for b, s in results if s == 200]
    print(
        f"\nSIGTERM with 100 slow heads open and 4 posters: stopped in {took:.2f} s; "
        f"{len(acked)} posts acknowledged, other answers {sorted({s for _, s in results} - {200}, key=str)}"
    )
    assert server.proc.returncode == 0
    assert took < 5.0  # slow heads do not hold the stop
    assert {s for _, s in results} <= {200, None}
    assert len(acked) >= 20 and None in {
        s for _, s in results
    }  # posting went on until the server was gone
    lines = archived(server.archive)
    assert set(acked) <= set(lines)
    assert not list(server.archive.rglob("*.json"))  # every file closed and compressed
