"""The scheduled SQL, tested as data (tests/query_cases/, see its README), on every
backend the ``warehouse_factory`` fixture knows, plus idempotency and an independent
count of a synthetic set of events.

To run the same cases on another backend, add it to ``BACKENDS``: a function taking a
pytest ``tmp_path`` and returning an empty :class:`pipelines.warehouse.Warehouse`
(skip with ``pytest.skip`` when its emulator is not available).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.events import events_to_arrow, rfc3339
from pipelines.outcomes import COUNT_COLUMNS, compute_outcomes
from pipelines.warehouse import LoadBatch
from pipelines.warehouse.duckdb import DuckDBWarehouse

CASES = Path(__file__).resolve().parent / "query_cases"
TABLES = ("delivery_outcomes", "domain_outcomes", "recipient_status", "suppressions")


def make_duckdb(tmp_path: Path):
    return DuckDBWarehouse(str(tmp_path / "warehouse.duckdb"))


def make_bigquery(tmp_path: Path, request):
    """A fresh dataset on the session's BigQuery emulator (tests/conftest_bigquery.py)."""
    return request.getfixturevalue("bq_emulator").new_warehouse()


#: backend name -> factory(tmp_path, request) -> empty Warehouse
BACKENDS = {"duckdb": lambda tmp_path, request: make_duckdb(tmp_path), "bigquery": make_bigquery}


@pytest.fixture(params=sorted(BACKENDS))
def warehouse_factory(request, tmp_path):
    counter = iter(range(1_000_000))

    def make():
        return BACKENDS[request.param](tmp_path / f"wh{next(counter)}", request)

    return make


# -- loading events ---------------------------------------------------------------------
def parse_ts(v: str) -> datetime:
    return datetime.fromisoformat(v.replace("Z", "+00:00")).astimezone(timezone.utc)


def event_from_json(row: dict) -> dict:
    """A canonical event dict from a test line (see query_cases/README.md)."""
    e = {k: v for k, v in row.items() if not k.startswith("_")}
    e.setdefault(
        "event_id", hashlib.sha256(json.dumps(e, sort_keys=True).encode()).hexdigest()[:24]
    )
    e["event_ts"] = parse_ts(e["event_ts"])
    e["event_date"] = (
        date.fromisoformat(e["event_date"]) if e.get("event_date") else e["event_ts"].date()
    )
    e.setdefault("provider", "sendgrid")
    e["categories"] = e.get("categories") or []
    return e


def load_events(wh, events: list[dict], tmp_dir: Path, load_no: int = 1) -> None:
    """Store events the way the load job does: a Parquet file through commit_load."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    path = tmp_dir / f"events-{load_no}.parquet"
    pq.write_table(events_to_arrow(events), path)
    wh.commit_load(
        LoadBatch(
            load_id=f"test-load-{load_no}",
            archive="test://query_cases",
            archive_date=min(e["event_date"] for e in events) if events else date(2026, 1, 1),
            started_at=datetime(2026, 11, 25, tzinfo=timezone.utc),
            event_files=[str(path)],
            dead_letter_files=[],
        )
    )


# -- reading and comparing tables ------------------------------------------------------
def plain(v):
    if isinstance(v, datetime):
        return rfc3339(v)
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, float):
        return round(v, 6)
    if isinstance(v, tuple):
        return [plain(x) for x in v]
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


def read_table(wh, table: str, start: date, end: date) -> list[dict]:
    rows = wh.query(
        f"SELECT * FROM {table} WHERE event_date BETWEEN @s AND @e", {"s": start, "e": end}
    ).to_pylist()
    return sorted(
        ({k: plain(v) for k, v in r.items()} for r in rows),
        key=lambda r: json.dumps(r, sort_keys=True, default=str),
    )


def compare_rows(table: str, actual: list[dict], expected: list[dict]) -> None:
    """Each expected row must match a distinct actual row on the columns it names (for
    delivery_outcomes also every count column, 0 unless named), and no row may be left."""
    defaults = (
        {c: 0 for c in COUNT_COLUMNS} if table in ("delivery_outcomes", "domain_outcomes") else {}
    )
    unmatched = list(actual)
    problems = []
    for row in expected:
        want = {**defaults, **row}
        missing = [c for c in want if actual and c not in actual[0]]
        assert not missing, f"{table} has no column(s) {missing}"
        hit = next((a for a in unmatched if all(a.get(c) == v for c, v in want.items())), None)
        if hit is None:
            problems.append("no row matches " + json.dumps(want, sort_keys=True))
        else:
            unmatched.remove(hit)
    problems += ["unexpected row " + json.dumps(a, sort_keys=True) for a in unmatched]
    assert not problems, (
        f"{table}:\n"
        + "\n".join(problems)
        + "\n--- table:\n"
        + "\n".join(json.dumps(a, sort_keys=True) for a in actual)
    )


# -- the cases --------------------------------------------------------------------------
def discover():
    for table_dir in sorted(p for p in CASES.iterdir() if p.is_dir()):
        for case in sorted(p for p in table_dir.iterdir() if p.is_dir()):
            yield pytest.param(table_dir.name, case, id=f"{table_dir.name}/{case.name}")


def read_jsonl(path: Path) -> list[dict]:
    return [
        json.loads(line)
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("//")
    ]


def run_case(wh, case: Path, tmp_dir: Path) -> tuple[date, date]:
    spec = json.loads((case / "case.json").read_text())
    lines = read_jsonl(case / "events.jsonl")
    runs = spec.get("runs") or [{"batch": 1}]
    loaded: set[int] = set()
    starts, ends = [], []
    for i, run in enumerate(runs):
        batch = run.get("batch")
        if batch is not None and batch not in loaded:
            evs = [event_from_json(r) for r in lines if r.get("_batch", 1) == batch]
            load_events(wh, evs, tmp_dir, load_no=batch)
            loaded.add(batch)
        start = date.fromisoformat(run.get("start") or spec["start"])
        end = date.fromisoformat(run.get("end") or spec["end"])
        compute_outcomes(wh, start, end, **spec.get("params", {}))
        starts.append(start)
        ends.append(end)
    cmp = spec.get("compare", {})
    return (
        date.fromisoformat(cmp["start"]) if "start" in cmp else min(starts),
        date.fromisoformat(cmp["end"]) if "end" in cmp else max(ends),
    )


@pytest.mark.parametrize("table,case", list(discover()))
def test_query_case(table, case, warehouse_factory, tmp_path):
    assert table in TABLES, f"unknown table folder {table}"
    wh = warehouse_factory()
    start, end = run_case(wh, case, tmp_path)
    compare_rows(table, read_table(wh, table, start, end), read_jsonl(case / "expected.jsonl"))


def test_every_table_has_cases():
    for table in TABLES:
        assert len(list((CASES / table).iterdir())) >= 2, table


# -- a synthetic set: reruns, windows, and an independent count -------------------------
D0 = date(2026, 11, 20)


def synthetic_events(seed: int = 7, messages: int = 120) -> list[dict]:
    """Messages over 5 days from three providers with retries, deferrals, late and
    out-of-order events, CMC double failures, multi-category and uncategorised mail."""
    rng = random.Random(seed)
    cats_pool = [["newsletter"], ["promo"], ["newsletter", "promo"], [], ["receipt"]]
    out: list[dict] = []
    for m in range(messages):
        provider = rng.choice(["sendgrid", "ses", "cmc"])
        mid = f"{provider}-m{m}"
        cats = rng.choice(cats_pool)
        t0 = datetime.combine(
            D0 + timedelta(days=rng.randrange(5)), datetime.min.time(), tzinfo=timezone.utc
        ) + timedelta(minutes=rng.randrange(24 * 60))
        for r in range(rng.choice([1, 1, 2, 3])):
            h = f"h{rng.randrange(60)}"

            def ev(kind, dt, **kw):
                e = {
                    "event_id": f"{mid}-{h}-{kind}-{len(out)}",
                    "provider": provider,
                    "event_type": kind,
                    "event_ts": t0 + dt,
                    "message_id": mid,
                    "email_hash": h,
                    "recipient_domain": "example.com",
                    "categories": list(cats),
                    **kw,
                }
                e["event_date"] = e["event_ts"].date()
                out.append(e)
                return e

            ev("processed", timedelta(0))
            fate = rng.random()
            if fate < 0.08:
                ev(
                    "dropped",
                    timedelta(seconds=1),
                    reason=rng.choice(
                        [
                            "Bounced Address",
                            "Unsubscribed Address",
                            "Invalid",
                            "Spam Reporting Address",
                        ]
                    ),
                )
                continue
            t = timedelta(seconds=5)
            for _ in range(rng.choice([0, 0, 0, 1, 2])):
                t += timedelta(hours=rng.randrange(1, 30))
                ev("deferred", t)
            t += timedelta(minutes=rng.randrange(1, 90))
            if fate < 0.22:
                cls = rng.choice(["hard", "soft", "block", "undetermined"])
                ev("bounce", t, bounce_class=cls)
                if provider == "cmc":  # deliveries.failed + bounces a second later
                    ev("bounce", t + timedelta(seconds=1), bounce_class=cls)
                continue
            d = ev("delivered", t)
            if rng.random() < 0.1:  # a webhook retry: the same event again
                out.append(dict(d))
            if rng.random() < 0.05:
                ev("bounce", t + timedelta(hours=2), bounce_class="hard")
            for _ in range(rng.choice([0, 0, 1, 3])):
                t += timedelta(hours=rng.randrange(1, 40))
                ev("open", t)
                if rng.random() < 0.4:
                    ev("click", t + timedelta(seconds=30))
            if rng.random() < 0.03:
                ev("spamreport", t + timedelta(hours=1))
            if rng.random() < 0.03:
                ev("unsubscribe", t + timedelta(hours=1, minutes=1))
    return out


def independent_counts(events: list[dict], start: date, end: date) -> dict:
    """The delivery_outcomes rules, counted in plain Python."""
    seen_ids, evs = set(), []
    for e in sorted(events, key=lambda e: (e["event_ts"], e["event_id"])):
        if e["event_id"] not in seen_ids:
            seen_ids.add(e["event_id"])
            evs.append(e)
    outcome_of = {
        "processed": ["request", "processed"],
        "dropped": ["request", "dropped"],
        "deferred": ["request", "deferred"],
        "delivered": ["request", "delivered"],
        "bounce": ["request", "bounce"],
        "spamreport": ["spamreport"],
        "unsubscribe": ["unsubscribe"],
    }
    first: dict = {}
    for e in evs:  # sorted by time: the first event of each outcome wins
        for o in outcome_of.get(e["event_type"], []):
            first.setdefault((e["provider"], e["message_id"], e["email_hash"], o), e)
    sets = defaultdict(lambda: defaultdict(set))
    for (prov, mid, h, o), e in first.items():
        if not start <= e["event_date"] <= end:
            continue
        names = [
            {
                "request": "requests",
                "dropped": "drops",
                "spamreport": "spam_reports",
                "unsubscribe": "unsubscribes",
            }.get(o, o)
        ]
        if o == "bounce":  # blocks are not bounces (SendGrid); the split adds up to bounces
            cls = e.get("bounce_class") or "undetermined"
            names = ["blocks"] if cls == "block" else ["bounces", "bounces_" + cls]
        for c in e["categories"] or ["(none)"]:
            key = (e["event_date"].isoformat(), c, prov)
            for name in names:
                sets[key][name].add((mid, h))
    for e in evs:
        if e["event_type"] in ("open", "click") and start <= e["event_date"] <= end:
            for c in e["categories"] or ["(none)"]:
                key = (e["event_date"].isoformat(), c, e["provider"])
                sets[key][e["event_type"] + "s"].add(e["event_id"])
                sets[key]["unique_" + e["event_type"] + "s"].add((e["message_id"], e["email_hash"]))
    return {k: {m: len(v) for m, v in ms.items()} for k, ms in sets.items()}


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_events()


def test_outcomes_match_an_independent_count(synthetic, warehouse_factory, tmp_path):
    wh = warehouse_factory()
    load_events(wh, synthetic, tmp_path)
    start, end = D0, D0 + timedelta(days=8)
    compute_outcomes(wh, start, end)
    got = {
        (r["event_date"], r["category"], r["provider"]): r
        for r in read_table(wh, "delivery_outcomes", start, end)
    }
    want = independent_counts(synthetic, start, end)
    assert set(got) == set(want)
    for key, metrics in want.items():
        for col in COUNT_COLUMNS:
            if col in ("bounce_drops", "spam_report_drops", "unsubscribe_drops", "invalid_emails"):
                continue
            assert got[key][col] == metrics.get(col, 0), (key, col)
    # the split adds up, and the drop reasons are all of the drops here
    for r in got.values():
        assert r["bounces"] == r["bounces_hard"] + r["bounces_soft"] + r["bounces_undetermined"]
        assert r["drops"] == (
            r["bounce_drops"]
            + r["spam_report_drops"]
            + r["unsubscribe_drops"]
            + r["invalid_emails"]
        )
    assert sum(r["requests"] for r in got.values()) > 100


def test_rerun_and_other_windows_give_identical_tables(synthetic, warehouse_factory, tmp_path):
    start, end = D0, D0 + timedelta(days=8)
    whole = warehouse_factory()
    load_events(whole, synthetic, tmp_path / "a")
    compute_outcomes(whole, start, end)
    first = {t: read_table(whole, t, start, end) for t in TABLES}
    assert all(first[t] for t in TABLES), {t: len(first[t]) for t in TABLES}
    compute_outcomes(whole, start, end)
    assert {t: read_table(whole, t, start, end) for t in TABLES} == first

    # Three-day windows, newest first, then a 3-day look-back rerun: the same delivery
    # outcomes and suppressions (attribution does not depend on the window).
    daily = warehouse_factory()
    load_events(daily, synthetic, tmp_path / "b")
    for i in (6, 3, 0):
        compute_outcomes(daily, start + timedelta(days=i), start + timedelta(days=i + 2))
    compute_outcomes(daily, end - timedelta(days=3), end)
    for t in ("delivery_outcomes", "domain_outcomes", "suppressions"):
        assert read_table(daily, t, start, end) == first[t], t
    # recipient_status: the same recipients, one row each, in the same partitions
    keys = [
        (r["event_date"], r["provider"], r["message_id"], r["email_hash"])
        for r in read_table(daily, "recipient_status", start, end)
    ]
    assert len(keys) == len(set(keys))
    assert sorted(keys) == sorted(
        (r["event_date"], r["provider"], r["message_id"], r["email_hash"])
        for r in first["recipient_status"]
    )


def test_recipient_status_one_row_per_recipient_and_forward_only(
    synthetic, warehouse_factory, tmp_path
):
    from pipelines.status import STATUS_OF_EVENT, STATUS_RANK

    wh = warehouse_factory()
    load_events(wh, synthetic, tmp_path)
    start, end = D0, D0 + timedelta(days=8)
    compute_outcomes(wh, start, end, tables=("recipient_status",), days_read_after=10)
    rows = read_table(wh, "recipient_status", start, end)
    best: dict = {}
    for e in synthetic:
        k = (e["provider"], e["message_id"], e["email_hash"])
        r = STATUS_RANK.get(e["event_type"], 0)
        if k not in best or (r, e["event_ts"]) > best[k][:2]:
            best[k] = (r, e["event_ts"], STATUS_OF_EVENT.get(e["event_type"]))
    assert len(rows) == len(best)
    for row in rows:
        assert row["status"] == best[(row["provider"], row["message_id"], row["email_hash"])][2]


# -- provider payloads through to the metric columns ------------------------------------
def test_cmc_never_sent_statuses_land_in_the_drop_columns(warehouse_factory, tmp_path, ctx):
    """Real CMC bodies (provider-samples/cmc) normalized and loaded: error statuses 10, 11
    and 9 count as bounce_drops, unsubscribe_drops and invalid_emails (never as bounces),
    beside a real failed-delivery + bounce pair (one hard bounce) and a delivered mail."""
    from conftest import SAMPLES

    from pipelines.normalizers import normalize_bytes

    cmc = SAMPLES / "cmc"
    host = json.loads((cmc / "bounces_host_unknown.json").read_text())
    item = host["event"]["bounces"][0]
    # Built: the real bounce body with the documented never-sent statuses.
    host["event"]["bounces"] = [
        dict(item, status=status, reason=reason, to=f"{name}@docomo.ne.jp")
        for status, reason, name in [
            ("10", "blocked address", "blocked1"),
            ("10", "blocked address", "blocked2"),
            ("11", "unsubscribed address", "unsub"),
            ("9", "address format error", "format"),
        ]
    ]
    bodies = [json.dumps(host).encode()] + [
        (cmc / name).read_bytes()
        for name in (
            "deliveries_queued.json",
            "deliveries_succeeded.json",
            "deliveries_failed.json",
            "bounces_user_unknown.json",
        )
    ]
    events = []
    for raw in bodies:
        res = normalize_bytes(raw, ctx)
        assert not res.dead_letters
        events += res.events
    assert [e["event_type"] for e in events] == [
        "dropped",
        "dropped",
        "dropped",
        "dropped",
        "processed",
        "delivered",
        "bounce",
        "bounce",
    ]

    wh = warehouse_factory()
    load_events(wh, events, tmp_path)
    day = date(2023, 1, 25)
    compute_outcomes(wh, day, day)
    compare_rows(
        "delivery_outcomes",
        read_table(wh, "delivery_outcomes", day, day),
        [
            {
                "event_date": "2023-01-25",
                "category": "(none)",
                "provider": "cmc",
                "requests": 6,
                "processed": 1,
                "delivered": 1,
                "bounces": 1,
                "bounces_hard": 1,
                "drops": 4,
                "bounce_drops": 2,
                "unsubscribe_drops": 1,
                "invalid_emails": 1,
                "drop_rate": 0.666667,
                "bounce_rate": 0.166667,
            }
        ],
    )
    # ... and the addresses are suppressed for those reasons
    reasons = sorted(r["reason"] for r in read_table(wh, "suppressions", day, day))
    assert reasons == [
        "hard_bounce",
        "hard_bounce",
        "hard_bounce",
        "invalid_address",
        "unsubscribe",
    ]


# -- domain_outcomes: delivery_outcomes with the recipient domain ------------------------
def _domains(events: list[dict], seed: int = 3) -> list[dict]:
    """The synthetic events with a domain per recipient (one domain per email_hash)."""
    rng = random.Random(seed)
    pool = [
        "gmail.com",
        "googlemail.com",
        "docomo.ne.jp",
        "ezweb.ne.jp",
        "yahoo.co.jp",
        "outlook.com",
        "corp.example.co.jp",
    ]
    of = {}
    out = []
    for e in events:
        d = of.setdefault(e["email_hash"], rng.choice(pool))
        out.append(dict(e, recipient_domain=d))
    return out


def test_domain_outcomes_sum_to_delivery_outcomes(synthetic, warehouse_factory, tmp_path):
    """Every count column of a (day, category, provider), summed over domains, equals its
    delivery_outcomes row: one definition of each metric, with one more dimension."""
    wh = warehouse_factory()
    load_events(wh, _domains(synthetic), tmp_path)
    start, end = D0, D0 + timedelta(days=8)
    compute_outcomes(wh, start, end, tables=("delivery_outcomes", "domain_outcomes"))
    totals = {
        (r["event_date"], r["category"], r["provider"]): r
        for r in read_table(wh, "delivery_outcomes", start, end)
    }
    sums: dict = defaultdict(lambda: defaultdict(int))
    domains = defaultdict(set)
    for r in read_table(wh, "domain_outcomes", start, end):
        key = (r["event_date"], r["category"], r["provider"])
        domains[key].add(r["recipient_domain"])
        for col in COUNT_COLUMNS:
            sums[key][col] += r[col]
    assert set(sums) == set(totals)
    assert max(len(d) for d in domains.values()) > 3  # really split by domain
    for key, row in totals.items():
        assert {c: sums[key][c] for c in COUNT_COLUMNS} == {c: row[c] for c in COUNT_COLUMNS}, key


def test_domain_outcomes_sql_is_delivery_outcomes_plus_the_domain():
    """The two files differ only by the recipient_domain dimension (and the head comment),
    so a rule changed in one and not the other fails here."""
    import re

    def body(table: str) -> str:
        text = (ROOT_QUERIES / table / "query.sql").read_text()
        lines = text.splitlines()
        while lines and lines[0].startswith("--"):
            lines.pop(0)
        text = "\n".join(lines)
        text = re.sub(r"\n\s*recipient_domain,", "", text)
        text = re.sub(r", [fe]\.recipient_domain", "", text)
        return text.replace(", recipient_domain\n", "\n")

    assert body("domain_outcomes") == body("delivery_outcomes")


ROOT_QUERIES = Path(__file__).resolve().parent.parent / "queries"
