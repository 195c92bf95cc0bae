"""``mailpulse history``: one recipient's timeline across providers."""

from __future__ import annotations

import sys

NAME = "history"
ORDER = 45
HELP = 'one recipient\'s events across providers ("I never got the mail")'
DESCRIPTION = """\
Prints every event for one address since --since (default: 30 days ago), across
providers, each message's settled status under forward-only precedence, and whether
the address is suppressed (hard bounce, complaint, unsubscribe, repeated soft bounces:
the suppressions table, whatever --since says). The address is hashed here with
MAILPULSE_HASH_KEY (the key the loads used); only the hash is sent to the warehouse."""

DEFAULT_SINCE_DAYS = 30

HISTORY_SQL = """
SELECT event_ts, event_date, provider, event_type, provider_event_type, bounce_class,
       message_id, recipient_domain, categories, reason, smtp_status, url, attempt, event_id
FROM events
WHERE event_date BETWEEN @since AND @until
  AND email_hash = @email_hash
ORDER BY event_ts, event_id
"""


def add_arguments(p):
    from ._common import parse_date

    p.add_argument(
        "--email",
        required=True,
        metavar="ADDRESS",
        help="the recipient's address (hashed locally, never sent)",
    )
    p.add_argument(
        "--since",
        type=parse_date,
        metavar="YYYY-MM-DD",
        help=f"first event date to look at (default: {DEFAULT_SINCE_DAYS} days ago)",
    )
    p.add_argument(
        "--until",
        type=parse_date,
        metavar="YYYY-MM-DD",
        help="last event date (default: today, UTC)",
    )
    p.add_argument(
        "--warehouse",
        metavar="URI",
        default=None,
        help="duckdb:///path/file.duckdb or bigquery://PROJECT/DATASET "
        "(default: the embedded warehouse under $MAILPULSE_DATA_DIR)",
    )
    p.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="output format (default: table)",
    )


def message_statuses(events: list[dict]) -> list[dict]:
    """Per (provider, message): status under forward-only precedence (pipelines.status)."""
    from ..status import SETTLED, advance

    msgs: dict[tuple, dict] = {}
    for e in events:  # ordered by time: ties on rank go to the latest
        key = (e["provider"], e["message_id"])
        m = msgs.setdefault(
            key,
            {
                "provider": e["provider"],
                "message_id": e["message_id"],
                "status": None,
                "settled": False,
                "status_event_type": None,
                "reason": None,
                "bounce_class": None,
                "_rank": 0,
                "first_event_ts": e["event_ts"],
                "events": 0,
            },
        )
        m["events"] += 1
        m["last_event_ts"] = e["event_ts"]
        step = advance(m["_rank"], e["event_type"])
        if step:
            m.update(
                _rank=step[0],
                status=step[1],
                status_event_type=e["event_type"],
                reason=e.get("reason"),
                bounce_class=e.get("bounce_class"),
            )
            m["settled"] = m["status"] in SETTLED
    out = []
    for m in msgs.values():
        m.pop("_rank")
        out.append(m)
    return out


def suppression_status(wh, address: str, hasher, until) -> dict:
    """Whether ``address`` is in the ``suppressions`` table (every day computed up to
    ``until`` or today, whichever is later), through :func:`pipelines.suppress.clean_list`:
    ``suppressed`` True / False, or None when the table does not exist (with ``note``
    saying how to create it); the main reason and every reason, first and latest
    qualifying event, and the latest day of suppressions read (``through``)."""
    from datetime import datetime, timezone

    from ..suppress import REASON_TEXT, clean_list, is_address

    if not is_address(address):
        return {"suppressed": None, "note": f"{address!r} is not an address (name@domain)"}
    if not wh.table_exists("suppressions"):
        return {
            "suppressed": None,
            "note": (
                f"no suppressions table in {wh.uri}: compute the derived tables for the loaded "
                "days first (`mailpulse outcomes`, see the README), then ask again"
            ),
        }
    result = clean_list(
        [address], warehouse=wh, hasher=hasher, until=max(until, datetime.now(timezone.utc).date())
    )
    through = result.suppressions_through
    doc = {
        "suppressed": bool(result.drop),
        "reason": None,
        "description": None,
        "reasons": [],
        "first_seen": None,
        "last_seen": None,
        "through": through.isoformat() if through else None,
    }
    if result.drop:
        d = result.drop[0]
        doc.update(
            reason=d.reason,
            description=REASON_TEXT.get(d.reason, d.reason),
            reasons=list(d.reasons),
            first_seen=_ts(d.first_seen),
            last_seen=_ts(d.last_seen),
        )
    return doc


def describe_suppression(s: dict) -> str:
    if s["suppressed"] is None:
        return f"suppression: unknown ({s['note']})"
    through = f"suppressions computed through {s['through'] or '(no day yet)'}"
    if not s["suppressed"]:
        return f"suppression: not suppressed ({through})"
    others = [r for r in s["reasons"] if r != s["reason"]]
    also = f"; also {', '.join(others)}" if others else ""
    return (
        f"suppression: SUPPRESSED, do not mail: {s['description']} since {s['first_seen']} "
        f"(latest {s['last_seen']}{also}; {through})"
    )


def _ts(v) -> str:
    from ..events import rfc3339

    return rfc3339(v) if v is not None else ""


def run(args) -> int:
    import json
    from datetime import date, datetime, timedelta, timezone

    from ..errors import UsageError
    from ..warehouse import WarehouseError, open_warehouse
    from ._common import warehouse_and_hasher

    address = (args.email or "").strip()
    if "@" not in address:
        raise UsageError(f"--email {args.email!r} is not an email address (name@domain)")
    target, hasher = warehouse_and_hasher(args)
    email_hash = hasher.hash(address)
    today = datetime.now(timezone.utc).date()
    until = args.until or today
    since = args.since or (until - timedelta(days=DEFAULT_SINCE_DAYS))
    if until < since:
        raise UsageError(f"--until {until} is before --since {since}; swap them")
    try:
        wh = open_warehouse(target)
        if not wh.table_exists("events"):
            raise UsageError(
                f"no events in {wh.uri or target}; run `mailpulse load` first, "
                "or point --warehouse at a loaded warehouse"
            )
        rows = wh.query(
            HISTORY_SQL, {"since": since, "until": until, "email_hash": email_hash}
        ).to_pylist()
        suppression = suppression_status(wh, address, hasher, until)
    except WarehouseError as exc:
        raise UsageError(str(exc)) from None
    messages = message_statuses(rows)
    out = sys.stdout
    if args.format == "json":

        def plain(v):
            if isinstance(v, datetime):
                return _ts(v)
            if isinstance(v, date):
                return v.isoformat()
            return v

        doc = {
            "email_hash": email_hash,
            "since": since.isoformat(),
            "until": until.isoformat(),
            "events": [{k: plain(v) for k, v in r.items()} for r in rows],
            "messages": [{k: plain(v) for k, v in m.items()} for m in messages],
            "suppression": suppression,
        }
        out.write(json.dumps(doc) + "\n")
        return 0
    out.write(
        f"History of {address} (hash {email_hash[:12]}...) {since} .. {until}: "
        f"{len(rows)} events, {len(messages)} messages\n"
    )
    out.write(describe_suppression(suppression) + "\n")
    if not rows:
        out.write(
            "no events for this address in range; check the address, widen --since, "
            "or check that MAILPULSE_HASH_KEY is the key the loads used\n"
        )
        return 0
    for r in rows:
        detail = " ".join(
            x
            for x in (
                r["bounce_class"] and f"class={r['bounce_class']}",
                r["smtp_status"] and f"status={r['smtp_status']}",
                r["reason"] and f"reason={r['reason']!r}",
                r["url"] and f"url={r['url']}",
            )
            if x
        )
        cats = ",".join(r["categories"] or []) or "-"
        out.write(
            f"  {_ts(r['event_ts']):<24} {r['provider']:<9} {r['event_type']:<12} "
            f"{r['message_id'] or '-':<28} [{cats}] {detail}".rstrip()
            + "\n"
        )
    out.write("messages:\n")
    for m in messages:
        state = "settled" if m["settled"] else "not settled"
        why = " ".join(
            x
            for x in (
                m["bounce_class"] and f"class={m['bounce_class']}",
                m["reason"] and f"reason={m['reason']!r}",
            )
            if x
        )
        out.write(
            f"  {m['provider']:<9} {m['message_id'] or '-':<28} {m['status'] or 'unknown':<10} "
            f"({state}, {m['events']} events) {why}".rstrip()
            + "\n"
        )
    return 0
