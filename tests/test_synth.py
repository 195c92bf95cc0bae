"""``mailpulse synth``: deterministic provider-native archives and their ground truth.

Every check reads the generated files back through the real normalizers
(``pipelines.records.decompress`` + ``pipelines.normalizers.normalize_bytes``) and compares
with the truth the generator computed from its own lifecycle model.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import TEST_HASH_KEY  # tests/ is on sys.path (no package)

from pipelines.hashing import EmailHasher
from pipelines.normalizers import NormalizeSettings, normalize_bytes
from pipelines.records import decompress, iter_records
from pipelines.status import STATUS_OF_EVENT, STATUS_RANK
from pipelines.synth import METRICS, SynthConfig, generate

DAY = date(2026, 11, 23)
HASHER = EmailHasher(TEST_HASH_KEY)
LAYOUT = re.compile(
    r"^(sendgrid|ses|cmc)/(\d{4})/(\d{2})/(\d{2})/(\d{2})/"
    r"synth-(\d{8})-(\d{10})-(\d{4})\.json\.gz$"
)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _read(root: Path):
    """(events, dead letters, per-file events) of a whole archive, through the normalizers."""
    events, dead, per_file = [], [], {}
    for path in _files(root):
        ctx = NormalizeSettings(hasher=HASHER, source_uri=str(path), cmc_category_field="apiData")
        res = normalize_bytes(decompress(path.read_bytes()), ctx)
        for ev in res.events:
            ev["_file"] = path.relative_to(root).as_posix()
        events.extend(res.events)
        dead.extend(res.dead_letters)
        per_file[path.relative_to(root).as_posix()] = res.events
    return events, dead, per_file


def _unique(events):
    seen = {}
    for ev in events:
        seen.setdefault(ev["event_id"], ev)
    return list(seen.values())


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """One realistic archive: retries and late events switched up so small N shows them."""
    root = tmp_path_factory.mktemp("synth") / "archive"
    summary = generate(root, DAY, messages=1200, seed=11, retry_rate=0.08, late_rate=0.05)
    events, dead, per_file = _read(root)
    return root, summary, events, dead, per_file


# ---------------------------------------------------------------------------- determinism


def test_same_arguments_give_byte_identical_files(tmp_path):
    a = generate(tmp_path / "a", DAY, messages=300, seed=5, corrupt_rate=0.05)
    b = generate(tmp_path / "b", DAY, messages=300, seed=5, corrupt_rate=0.05)
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert [p.relative_to(tmp_path / "a") for p in fa] == [
        p.relative_to(tmp_path / "b") for p in fb
    ]
    assert len(fa) == a.files > 10
    for x, y in zip(fa, fb):
        assert x.read_bytes() == y.read_bytes(), x
    assert a.truth.as_dict() == b.truth.as_dict()
    da, db = a.as_dict(), b.as_dict()
    for d in (da, db):
        d.pop("out"), d.pop("elapsed_s"), d.pop("events_per_s")
    assert da == db

    c = generate(tmp_path / "c", DAY, messages=300, seed=6, corrupt_rate=0.05)
    assert {p.read_bytes() for p in fa} != {p.read_bytes() for p in _files(tmp_path / "c")}
    assert c.truth.as_dict()["recipients"] != a.truth.as_dict()["recipients"]


def test_spilling_to_disk_does_not_change_a_byte(tmp_path):
    """Buffered future hours spill to temporary files past a budget; output is the same."""
    kept = generate(tmp_path / "kept", DAY, messages=250, seed=2)
    spilled = generate(
        config=SynthConfig(out=tmp_path / "spilled", date=DAY, messages=250, seed=2, spill_bytes=1)
    )
    fk, fs = _files(tmp_path / "kept"), _files(tmp_path / "spilled")
    assert [p.name for p in fk] == [p.name for p in fs]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(fk, fs))
    assert kept.events_written == spilled.events_written


# ---------------------------------------------------------------------------- layout


def test_layout_is_provider_date_hour_and_gzip_without_timestamps(archive):
    root, summary, *_ = archive
    files = _files(root)
    providers = set()
    for path in files:
        rel = path.relative_to(root).as_posix()
        m = LAYOUT.match(rel)
        assert m, rel
        provider, y, mo, d, h, gen_day, file_hour, _part = m.groups()
        providers.add(provider)
        assert gen_day == "20261123"
        assert file_hour == f"{y}{mo}{d}{h}"  # the name repeats the hour directory
        data = path.read_bytes()
        assert data[:2] == b"\x1f\x8b" and data[4:8] == b"\0\0\0\0"  # gzip, mtime 0
        assert gzip.decompress(data).endswith(b"\n")
    assert providers == {"sendgrid", "ses", "cmc"}
    assert len(files) == summary.files == sum(summary.files_by_provider.values())
    assert sum(p.stat().st_size for p in files) == summary.bytes_written
    # every hour of the day has SendGrid files (mail is sent around the clock)
    hours = {p.parent.name for p in (root / "sendgrid/2026/11/23").glob("*/*.json.gz")}
    assert hours == {f"{h:02d}" for h in range(24)}


def test_events_per_file_bounds_each_file(tmp_path):
    s = generate(tmp_path / "a", DAY, messages=400, seed=1, events_per_file=25, retry_rate=0)
    _, _, per_file = _read(tmp_path / "a")
    assert max(len(evs) for evs in per_file.values()) <= 25
    assert any(name.endswith("-0001.json.gz") for name in per_file)
    assert sum(len(evs) for evs in per_file.values()) == s.events_written


def test_provider_subset_writes_only_those_providers(tmp_path):
    s = generate(tmp_path / "a", DAY, messages=100, seed=1, providers="ses,cmc")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["cmc", "ses"]
    assert set(s.events_by_provider) == {"ses", "cmc"}
    assert s.truth.messages == 100


# ---------------------------------------------------------------------------- readable


def test_every_record_normalizes_with_no_dead_letters(archive):
    root, summary, events, dead, per_file = archive
    assert dead == []
    assert len(events) == summary.events_written
    for rel, evs in per_file.items():
        assert evs, f"{rel} holds no event"
        assert {e["provider"] for e in evs} == {rel.split("/")[0]}
    assert {e["event_type"] for e in events} >= {
        "processed",
        "deferred",
        "delivered",
        "bounce",
        "dropped",
        "open",
        "click",
    }
    assert "unknown" not in {e["event_type"] for e in events}
    assert {e["bounce_class"] for e in events if e["event_type"] == "bounce"} >= {
        "hard",
        "soft",
        "block",
    }
    by_provider = Counter(e["provider"] for e in _unique(events))
    assert dict(by_provider) == summary.events_by_provider


def test_corrupt_records_are_exactly_the_dead_letters(tmp_path):
    s = generate(tmp_path / "a", DAY, messages=600, seed=9, corrupt_rate=0.05)
    events, dead, _ = _read(tmp_path / "a")
    assert s.corrupt_records > 10
    assert len(dead) == s.corrupt_records
    assert len(events) == s.events_written  # corrupt records are extra, nothing is lost
    assert any(d.reason.startswith("not JSON") for d in dead)
    assert any("missing recipient address" in d.reason for d in dead)
    assert any(
        d.reason.startswith("Delivery record has no delivery.recipients") for d in dead
    )  # SES
    # each provider's corrupt records are in that provider's files
    per_provider = Counter(d.source_uri.split("/a/")[1].split("/")[0] for d in dead)
    assert dict(per_provider) == {p: n for p, n in s.corrupt_by_provider.items() if n}
    # none is a file's first line (so a file is always read line by line)
    assert all(d.line > 1 for d in dead)


# ---------------------------------------------------------------------------- truth


def _status(evs):
    """Forward-only status (pipelines.status) of one recipient's events."""
    best = max(evs, key=lambda e: (STATUS_RANK.get(e["event_type"], 0), e["event_ts"]))
    return STATUS_OF_EVENT[best["event_type"]]


def test_truth_matches_what_the_normalizers_read(archive):
    root, summary, events, _, _ = archive
    truth = summary.truth
    uniq = _unique(events)
    assert len(uniq) == summary.events == sum(summary.events_by_provider.values())

    by_pair = defaultdict(list)
    for ev in uniq:
        by_pair[(ev["message_id"], ev["email_hash"])].append(ev)
    rows = list(truth.recipients())
    assert len(rows) == truth.recipient_count == summary.recipients == len(by_pair)
    delivered = {
        k for k, evs in by_pair.items() if any(e["event_type"] == "delivered" for e in evs)
    }
    assert delivered == {(r.message_id, HASHER(r.email)) for r in rows if r.status == "delivered"}
    for r in rows:
        evs = by_pair[(r.message_id, HASHER(r.email))]
        assert _status(evs) == r.status, r
        assert {e["provider"] for e in evs} == {r.provider}
        if r.status == "bounce":
            classes = {e["bounce_class"] for e in evs if e["event_type"] == "bounce"}
            # CMC's failed delivery may not tell the class; the bounces event does
            assert r.bounce_class in classes and classes <= {r.bounce_class, "undetermined"}
        settled = min(
            (
                e["event_ts"]
                for e in evs
                if STATUS_OF_EVENT.get(e["event_type"]) in ("delivered", "bounce", "dropped")
            ),
            default=None,
        )
        assert settled == r.settled_at
        cats = {tuple(e["categories"]) for e in evs}
        assert cats == {r.categories}


def _metrics(events):
    """Per category metrics counted independently from normalized, de-duplicated events."""
    out = defaultdict(Counter)
    pairs = defaultdict(lambda: defaultdict(set))
    for ev in events:
        key = (ev["message_id"], ev["email_hash"])
        for cat in ev["categories"]:
            t = ev["event_type"]
            pairs[cat]["requests"].add(key)
            names = {
                "processed": ["processed"],
                "delivered": ["delivered"],
                "dropped": ["dropped"],
                "deferred": ["deferred"],
                "bounce": ["bounces", f"bounces_{ev['bounce_class']}"],
                "open": ["unique_opens"],
                "click": ["unique_clicks"],
            }.get(t, [])
            if t == "bounce" and ev["bounce_class"] == "undetermined":
                names = ["bounces"]  # CMC's failed delivery: class from its bounces twin
            for n in names:
                pairs[cat][n].add(key)
            for n in {
                "deferred": "deferred_events",
                "open": "opens",
                "click": "clicks",
                "spamreport": "spam_reports",
                "unsubscribe": "unsubscribes",
            }.get(t, "").split():
                out[cat][n] += 1
    for cat, d in pairs.items():
        for n, keys in d.items():
            out[cat][n] = len(keys)
    return {cat: {m: c[m] for m in METRICS} for cat, c in out.items()}


def test_category_counts_match_an_independent_count(archive):
    _, summary, events, _, _ = archive
    truth = summary.truth
    counted = _metrics(_unique(events))
    assert counted == truth.categories
    cats = truth.categories
    # several categories of different health: reengagement bounces far more
    rate = {c: m["bounces"] / m["requests"] for c, m in cats.items()}
    assert rate["reengagement"] > 2 * max(v for c, v in rate.items() if c != "reengagement")
    assert sum(m["requests"] for m in cats.values()) > truth.recipient_count  # multi-category
    assert truth.by_provider["newsletter"]["cmc"]["requests"] > 0
    # per provider totals count each recipient once
    assert sum(t["requests"] for t in truth.totals.values()) == truth.recipient_count


def test_daily_rows_match_events_by_date(archive):
    _, summary, events, _, _ = archive
    uniq = _unique(events)
    daily = summary.truth.daily()
    assert {r["event_date"] for r in daily} >= {"2026-11-23", "2026-11-24"}
    for row in daily:
        evs = [
            e
            for e in uniq
            if e["event_date"].isoformat() == row["event_date"]
            and e["provider"] == row["provider"]
            and row["category"] in e["categories"]
        ]
        pairs = lambda t: {(e["message_id"], e["email_hash"]) for e in evs if e["event_type"] == t}
        assert row["delivered"] == len(pairs("delivered")), row
        assert row["deferred"] == len(pairs("deferred")), row
        assert row["opens"] == sum(e["event_type"] == "open" for e in evs), row
        assert row["unique_opens"] == len(pairs("open")), row
        assert row["bounces"] == len(pairs("bounce")), row
    total = Counter()
    for row in daily:
        if row["category"] == "newsletter":
            total["opens"] += row["opens"]
    assert total["opens"] == summary.truth.categories["newsletter"]["opens"]


def test_recipient_lists_per_category(archive):
    _, summary, events, _, _ = archive
    truth = summary.truth
    for cat, m in truth.categories.items():
        emails = truth.recipients_for(cat)
        assert len(emails) == len(set(emails)) == m["requests"]
        assert all(re.fullmatch(r"user\d{5,}@[a-z0-9.-]+\.[a-z]+", e) for e in emails)
        counts = truth.status_counts(cat)
        assert counts["delivered"] == m["delivered"]
        assert counts["bounce"] == m["bounces"]
        assert counts["dropped"] == m["dropped"]
        assert sum(counts[k] for k in ("delivered", "bounce", "dropped", "unsettled")) == len(
            emails
        )
    hashed = {e["email_hash"] for e in events if "promo" in e["categories"]}
    assert hashed == {HASHER(e) for e in truth.recipients_for("promo")}
    assert truth.recipients_for("promo", provider="ses")
    with pytest.raises(KeyError, match="newsletter"):
        truth.recipients_for("no-such-category")


def test_truth_json_file(archive, tmp_path):
    _, summary, *_ = archive
    path = summary.truth.write_json(tmp_path / "truth.json")
    doc = json.loads(path.read_text())
    assert doc["categories"] == summary.truth.categories
    assert len(doc["recipients"]) == summary.recipients
    assert doc["recipients"][0].keys() >= {
        "provider",
        "message_id",
        "email",
        "categories",
        "status",
        "bounce_class",
        "sent_at",
        "settled_at",
    }
    assert doc["params"]["seed"] == 11


# ---------------------------------------------------------------------------- realism


def test_retries_repeat_event_ids_some_in_later_hour_files(archive):
    _, summary, events, _, _ = archive
    files_of = defaultdict(set)
    for ev in events:
        files_of[ev["event_id"]].add(ev["_file"])
    assert len(events) - len(files_of) == summary.duplicate_events > 0
    assert summary.retried_posts > 0 and summary.duplicated_records > 0
    dup_sg = [
        f for eid, f in files_of.items() if len(f) > 1 and next(iter(f)).startswith("sendgrid")
    ]
    assert dup_sg, "no SendGrid post was retried into a later hour file"
    counts = Counter(ev["event_id"] for ev in events)
    assert {ev["provider"] for ev in events if counts[ev["event_id"]] > 1} == {"sendgrid", "ses"}


def test_late_events_land_in_the_next_days_directories(archive):
    _, summary, events, _, _ = archive
    late = [
        e
        for e in events
        if e["_file"].split("/")[1:4] == ["2026", "11", "24"] and e["event_date"] == DAY
    ]
    assert summary.late_events > 0 and len(late) >= summary.late_events
    # deferrals settle up to 72 h later, in those days' directories
    days = {e["event_date"] for e in events}
    assert max(days) >= DAY + timedelta(days=2)
    horizon = datetime(2026, 11, 23, tzinfo=timezone.utc) + timedelta(hours=24 + 72)
    assert max(e["event_ts"] for e in events if e["event_type"] != "open") < horizon
    long_waits = [
        e
        for e in events
        if e["event_type"] in ("delivered", "bounce") and e["event_date"] >= DAY + timedelta(days=2)
    ]
    assert long_waits
    # an event never sits in a directory earlier than its own hour
    for e in events:
        y, m, d, h = map(int, e["_file"].split("/")[1:5])
        assert datetime(y, m, d, h, tzinfo=timezone.utc) + timedelta(hours=1) > e["event_ts"]


def test_out_of_order_opens_and_mixed_batches(archive):
    root, _, events, _, _ = archive
    sg = [e for e in _unique(events) if e["provider"] == "sendgrid"]
    delivered_at = {
        (e["message_id"], e["email_hash"]): e["event_ts"]
        for e in sg
        if e["event_type"] == "delivered"
    }
    early = [
        e
        for e in sg
        if e["event_type"] == "open"
        and e["event_ts"] < delivered_at[(e["message_id"], e["email_hash"])]
    ]
    assert early, "no open reported before its delivered event"
    kinds_per_post = []
    for path in (root / "sendgrid").rglob("*.json.gz"):
        for rec in iter_records(decompress(path.read_bytes())):
            assert isinstance(rec.doc, list)
            kinds_per_post.append({ev["event"] for ev in rec.doc})
            for ev in rec.doc:
                assert ev["sg_message_id"].split(".filter")[0] in ev["smtp-id"]
                assert isinstance(ev["category"], (str, list))
    assert any(len(k) > 1 for k in kinds_per_post)  # batches mix event kinds
    assert max(len(e["categories"]) for e in sg) == 3


def test_ses_multi_recipient_sns_and_cmc_double_reports(archive):
    root, summary, events, _, _ = archive
    destinations, sns = [], 0
    for path in (root / "ses").rglob("*.json.gz"):
        for rec in iter_records(decompress(path.read_bytes())):
            doc = rec.doc
            if doc.get("Type") == "Notification":
                sns += 1
                doc = json.loads(doc["Message"])
            destinations.append(len(doc["mail"]["destination"]))
    assert sns > 0 and max(destinations) >= 2
    assert {"Send", "Delivery", "Bounce", "Open", "DeliveryDelay"} <= {
        e["provider_event_type"] for e in events if e["provider"] == "ses"
    }
    cmc = defaultdict(list)
    for e in _unique(events):
        if e["provider"] == "cmc" and e["event_type"] == "bounce":
            cmc[(e["message_id"], e["email_hash"])].append(e)
    assert cmc
    for pair in cmc.values():
        pair.sort(key=lambda e: e["event_ts"])
        assert [e["provider_event_type"] for e in pair] == ["deliveries.failed", "bounces"]
        assert pair[1]["event_ts"] - pair[0]["event_ts"] == timedelta(seconds=1)
        assert pair[0]["event_date"] == pair[1]["event_date"]
    assert all(e["message_id"] and "<" not in e["message_id"] for e in events)


# ---------------------------------------------------------------------------- errors, CLI


@pytest.mark.parametrize(
    "options, fix",
    [
        ({"bounce_rate": 1.5}, "--bounce-rate"),
        ({"messages": 0}, "messages must be"),
        ({"providers": "sendgrid,mailgun"}, "subset of sendgrid,ses,cmc"),
        ({"categories": 0}, "categories must be"),
        ({"bounce_rate": 0.5, "drop_rate": 0.5}, "lower --bounce-rate"),
    ],
)
def test_bad_options_name_the_fix(tmp_path, options, fix):
    with pytest.raises(ValueError, match=re.escape(fix)):
        generate(tmp_path / "a", DAY, **options)
    assert not (tmp_path / "a").exists()


def test_existing_archive_is_not_mixed_in(tmp_path):
    generate(tmp_path / "a", DAY, messages=50, seed=1)
    with pytest.raises(ValueError, match="--overwrite"):
        generate(tmp_path / "a", DAY, messages=80, seed=1)
    (tmp_path / "a/ses/2026/11/23/12").mkdir(parents=True, exist_ok=True)
    other = tmp_path / "a/ses/2026/11/23/12/firehose-real.json.gz"
    other.write_bytes(b"kept")
    s = generate(tmp_path / "a", DAY, messages=80, seed=1, overwrite=True)
    names = [p for p in _files(tmp_path / "a") if p.name.startswith("synth-")]
    assert len(names) == s.files  # the 50-message files are gone
    assert other.read_bytes() == b"kept"
    generate(tmp_path / "a", DAY + timedelta(days=1), messages=50, seed=1)  # another date: fine


def test_cli_writes_archive_truth_and_json_summary(cli, tmp_path):
    out, truth = tmp_path / "archive", tmp_path / "truth.json"
    p = cli(
        "synth",
        "--out",
        out,
        "--date",
        "2026-11-23",
        "--messages",
        "200",
        "--seed",
        "3",
        "--corrupt-rate",
        "0.02",
        "--truth",
        truth,
        "--json",
    )
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["files"] == len(_files(out)) and summary["messages"] == 200
    assert summary["truth"] == str(truth)
    doc = json.loads(truth.read_text())
    assert len(doc["recipients"]) == summary["recipients"]
    events, dead, _ = _read(out)
    assert len(dead) == summary["corrupt_records"]
    assert len(events) == summary["events_written"]

    human = cli("synth", "--out", tmp_path / "b", "--date", "2026-11-23", "--messages", "50")
    assert human.returncode == 0 and "events/s" in human.stdout and "reengagement" in human.stdout


@pytest.mark.parametrize(
    "args, fix",
    [
        (["--bounce-rate", "2"], "between 0 and 1"),
        (["--providers", "sendgrid,postmark"], "subset of sendgrid,ses,cmc"),
        (["--date", "23/11/2026"], "YYYY-MM-DD"),
        (["--messages", "0"], "at least 1"),
        (["--truth", "{out}/truth.json"], "write it elsewhere"),
    ],
)
def test_cli_bad_arguments_exit_2_with_the_fix(cli, tmp_path, args, fix):
    out = tmp_path / "archive"
    base = ["synth", "--out", out, "--date", "2026-11-23", "--messages", "10"]
    p = cli(*base, *[a.format(out=out) for a in args])
    assert p.returncode == 2
    assert fix in p.stderr


def test_cli_refuses_to_mix_archives(cli, tmp_path):
    base = ["synth", "--out", tmp_path / "a", "--date", "2026-11-23", "--messages", "20"]
    assert cli(*base).returncode == 0
    again = cli(*base)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert cli(*base, "--overwrite").returncode == 0
