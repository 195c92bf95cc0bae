"""The vectorized path for SES event-publishing records, exact by construction.

Reads :mod:`.ses`'s mapping dicts (``EVENT_MAP``, ``PAYLOAD_KEY``, ``RECIPIENT_LIST``,
``BOUNCE_CLASS``, ``NO_EVENT_NOTIFICATIONS``) and calls its own helpers for the
envelopes (``_unwrap``), tags (``_tag_values``) and reasons (``_reason_status``), so the
mapping has one owner. What it does in columns: the event time (an ISO time ending in
``Z``, 3 or 6 fraction digits or none, parsed by Arrow kernels and checked to round-trip),
address hashes and domains (once per distinct address), message ids, redaction, bounce
classes, event ids and the Arrow table itself.

A record takes this path only in the common shape: an SES record (bare, or in SNS/SQS
envelopes that ``_unwrap`` opens) whose event word is a key of ``EVENT_MAP``, with a
``mail`` object and a time of the shape above; types with a per-recipient list must
carry a non-empty one (the single-recipient ``mail.destination`` fallback is the exact
path's), and every recipient must be a non-blank string (or an object with one under
``emailAddress``). Anything else goes to :mod:`.ses` unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import ses
from .base import NormalizeSettings, text
from .columns import (
    as_array,
    event_ids,
    finish,
    per_distinct,
    recipient_columns,
    redact_column,
    text_column,
    ts_ok,
)

PROVIDER = ses.PROVIDER

_ISO = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]{3}|\.[0-9]{6})?Z$"
)


def select(records, taken) -> tuple[list[int], list[dict]]:
    """Positions of the SES records (as the dispatcher detects them) and their SES
    record objects, envelopes opened; records the exact path must see are left out."""
    pos: list[int] = []
    docs: list[dict] = []
    looks_like, is_dump, unwrap = ses.looks_like, ses._is_receive_dump, ses._unwrap
    for i, r in enumerate(records):
        d = r.doc
        if taken[i] or r.error is not None or type(d) is not dict or not looks_like(d):
            continue
        if "eventType" not in d and "notificationType" not in d:
            if is_dump(d):
                continue
            try:
                d, envelope_ts = unwrap(d)
            except Exception:  # noqa: BLE001 - RecordError or a normalizer bug: the exact
                continue  # path turns it into the dead letter it always was
            if type(d) is not dict:
                continue
            if envelope_ts is not None and not _own_time(d):
                continue  # its time is the envelope's: the exact path's rule (ses._time_of)
        pos.append(i)
        docs.append(d)
    return pos, docs


def _own_time(d: dict) -> bool:
    """Whether a record carries its own time, so an SNS envelope's Timestamp is not used."""
    word = d.get("eventType") or d.get("notificationType")
    if not isinstance(word, str):  # e.g. a list: the exact path makes it a dead letter
        return False
    payload = d.get(ses.PAYLOAD_KEY.get(word, ses._lower_first(word)))
    if type(payload) is dict and payload.get("timestamp") not in (None, ""):
        return True
    mail = d.get("mail")
    return (
        word in ses.MAIL_TIME_TYPES
        and type(mail) is dict
        and mail.get("timestamp") not in (None, "")
    )


def _words() -> frozenset[str]:
    return frozenset(
        w for w in ses.EVENT_MAP if w == w.strip() and w not in ses.NO_EVENT_NOTIFICATIONS
    )


def normalize_docs(docs: list[dict], ctx: NormalizeSettings) -> tuple[pa.Table, np.ndarray]:
    """(events of the clean records, with ``_pos`` = index into ``docs``; their indices)."""
    words_ok = _words()
    payload_key, list_key_of = ses.PAYLOAD_KEY, ses.RECIPIENT_LIST
    lower_first, reason_status = ses._lower_first, ses._reason_status
    tag_key = ctx.ses_category_tag
    tag_cache: dict[Any, list[str]] = {}

    # Per record: only dict look-ups and the mapping's own small helpers.
    rec_doc: list[int] = []  # per event: index into docs
    rec_word: list[str] = []
    rec_addr: list[Any] = []
    rec_reason: list[Any] = []
    rec_status: list[Any] = []
    rec_ord: list[int] = []
    d_ts: list[Any] = []  # per record (all docs)
    d_mid: list[Any] = []
    d_cats: list[list[str]] = []
    d_bt: list[Any] = []
    d_link: list[Any] = []
    bad = np.zeros(len(docs), dtype=bool)
    for k, d in enumerate(docs):
        field = "eventType" if "eventType" in d else "notificationType"
        word = d.get(field)
        mail = d.get("mail")
        if type(word) is not str or word not in words_ok or type(mail) is not dict:
            bad[k] = True
            for col, empty in (
                (d_ts, None),
                (d_mid, None),
                (d_cats, []),
                (d_bt, None),
                (d_link, None),
            ):
                col.append(empty)
            continue
        key = payload_key[word] if word in payload_key else lower_first(word)
        payload = d.get(key)
        if type(payload) is not dict:
            payload = {}
        own = payload.get("timestamp")
        d_ts.append(own if own is not None and own != "" else mail.get("timestamp"))
        d_mid.append(mail.get("messageId"))
        tags = mail.get("tags")
        tv = tags.get(tag_key) if type(tags) is dict else None
        if tv is None:
            d_cats.append([])
        else:
            ck = tuple(tv) if type(tv) is list and all(type(x) is str for x in tv) else None
            cats = tag_cache.get(ck) if ck is not None else None
            if cats is None:
                cats = ses._tag_values(tags, tag_key)
                if ck is not None:
                    tag_cache[ck] = cats
            d_cats.append(cats)
        d_bt.append(payload.get("bounceType"))
        d_link.append(payload.get("link") if word == "Click" else None)
        lk = list_key_of.get(word)
        recipients = payload.get(lk) if lk is not None else mail.get("destination")
        if type(recipients) is not list or not recipients:
            bad[k] = True
            continue
        for j, rc in enumerate(recipients):
            if type(rc) is dict:
                addr, per = rc.get("emailAddress"), rc
            else:
                addr, per = rc, {}
            if type(addr) is not str:
                bad[k] = True
                break
            reason, status = reason_status(word, payload, per)
            for col, v in (
                (rec_doc, k),
                (rec_word, word),
                (rec_addr, addr),
                (rec_reason, reason),
                (rec_status, status),
                (rec_ord, j),
            ):
                col.append(v)

    # -- per record, in columns: time, message id -------------------------------------------
    ts_s = pa.array([v if type(v) is str else None for v in d_ts], pa.string())
    us, iso = _micros(ts_s)
    bad |= ~pc.is_valid(us).to_numpy(zero_copy_only=False)
    mid = text_column(d_mid)

    # -- per event --------------------------------------------------------------------------
    ev_doc = np.asarray(rec_doc, dtype=np.int64)
    if len(ev_doc):
        addr = pa.array(rec_addr, pa.string())
        h, dom, unusable = recipient_columns(addr, ctx)
        if unusable.any():
            bad[ev_doc[unusable]] = True
        keep = ~bad[ev_doc]
    else:
        keep = np.zeros(0, dtype=bool)
    ok_docs = np.flatnonzero(~bad)
    if not len(ok_docs) or not keep.any():
        return None, np.zeros(0, dtype=np.int64)
    keep_a = pa.array(keep)
    sel = pa.array(ev_doc[keep])
    words = pc.filter(pa.array(rec_word, pa.string()), keep_a)
    event_type = per_distinct(words, ses.EVENT_MAP.get, pa.string())
    ts = pc.take(us, sel).cast(pa.timestamp("us", tz="UTC"))
    mid_e = pc.take(mid, sel)
    email_hash = pc.filter(h, keep_a)
    is_bounce = pc.equal(event_type, "bounce")
    bt = pc.take(text_column(d_bt), sel)
    bclass = per_distinct(
        pc.fill_null(bt, ""), lambda b: ses.BOUNCE_CLASS.get(b, "undetermined"), pa.string()
    )
    url = redact_column(pc.take(text_column(d_link), sel))
    cats = pa.array([d_cats[i] for i in ev_doc[keep]], pa.list_(pa.string()))
    cols = {
        "event_id": event_ids(PROVIDER, [mid_e, words, email_hash, pc.take(iso, sel), url]),
        "event_type": event_type,
        "provider_event_type": words,
        "bounce_class": pc.if_else(is_bounce, bclass, pa.scalar(None, pa.string())),
        "event_ts": ts,
        "message_id": mid_e,
        "email_hash": email_hash,
        "recipient_domain": pc.filter(dom, keep_a),
        "categories": cats,
        "reason": redact_column(pc.filter(_texts(rec_reason), keep_a)),
        "smtp_status": pc.filter(_texts(rec_status), keep_a),
        "url": url,
    }
    table = finish(cols, int(keep.sum()), ctx, PROVIDER, sel)
    return table, ok_docs


def _texts(values: list[Any]) -> pa.Array:
    """Values ``_reason_status`` already passed through ``base.text``."""
    try:
        return pa.array(values, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([text(v) for v in values], pa.string())


# -- tier 1: the chunk read by Arrow's JSON reader (see vectorized._arrow_tier) ----------

ARROW_OPENER = b"{"
#: word -> the payload field ses._reason_status reads for the record's reason
_REASON_FIELD = {
    "Bounce": "bounceSubType",
    "DeliveryDelay": "delayType",
    "Complaint": "complaintFeedbackType",
    "Delivery": "smtpResponse",
    "Reject": "reason",
    "Rendering Failure": "errorMessage",
}
#: words whose per-recipient objects carry diagnosticCode / status (ses._reason_status)
_PER_RECIPIENT = frozenset({"Bounce", "DeliveryDelay"})
#: per-recipient lists SES writes as plain addresses (the others hold objects)
_ADDRESS_LISTS = frozenset({"Delivery"})


#: How an SNS notification envelope starts its type, compact (as SNS, SQS and the archive
#: write it): lines with it are the candidates for :func:`arrow_envelopes`.
_SNS_NOTIFICATION = b'"Type":"Notification"'


def arrow_sniff(chunk: bytes) -> bool:
    return b'"eventType"' in chunk or _SNS_NOTIFICATION in chunk


def arrow_envelopes(chunk: bytes, lines) -> dict[int, tuple[bytes, dict, bool]]:
    """SNS notification envelopes whose SES record tier 1 can read in their place:
    ``{line: (the record's text, the envelope as parse_json read it, whether the record
    must carry its own time)}``.

    A line qualifies only when the exact path would open it the same way
    (:func:`.ses._unwrap`): one JSON object, parsed with the exact path's parser, that
    is not itself a record (no ``eventType`` / ``notificationType``), of ``Type``
    ``Notification``, whose ``Message`` is a string that is not the SNS set-up message
    and holds one line of JSON text (``{`` .. ``}``, no line break). Tier 1 then reads
    that text as it reads a bare record's line, with every check it makes on lines; the
    record must have its own time when the envelope has a ``Timestamp`` (the exact path
    would otherwise take the envelope's: :func:`select`'s rule). Anything else stays on
    the record path, as the envelope it is."""
    from ..records import parse_json

    found = []
    i = chunk.find(_SNS_NOTIFICATION)
    while i >= 0:
        found.append(i)
        i = chunk.find(_SNS_NOTIFICATION, i + 1)
    if not found:
        return {}
    out: dict[int, tuple[bytes, dict, bool]] = {}
    setup = ses.SNS_SETUP_MESSAGE_PREFIX
    for row in np.unique(np.searchsorted(lines.ends, np.asarray(found, dtype=np.int64))):
        row = int(row)
        doc, err = parse_json(lines.raw(row))
        if err is not None or type(doc) is not dict:
            continue
        if "eventType" in doc or "notificationType" in doc or doc.get("Type") != "Notification":
            continue
        message = doc.get("Message")
        if type(message) is not str or message.strip().startswith(setup):
            continue
        try:
            inner = message.encode("utf-8")
        except UnicodeEncodeError:
            continue
        if inner[:1] != b"{" or inner[-1:] != b"}" or b"\n" in inner or b"\r" in inner:
            continue
        out[row] = (inner, doc, doc.get("Timestamp") is not None)
    return out


def _payload_fields(word: str) -> list[str]:
    fields = ["timestamp"]
    if word in _REASON_FIELD:
        fields.append(_REASON_FIELD[word])
    if ses.EVENT_MAP.get(word) == "bounce":
        fields.append("bounceType")
    if word == "Click":
        fields.append("link")
    return fields


def _key(word: str) -> str:
    return ses.PAYLOAD_KEY[word] if word in ses.PAYLOAD_KEY else ses._lower_first(word)


def arrow_schema(ctx: NormalizeSettings) -> pa.Schema:
    s = pa.string()
    rc = pa.struct([("emailAddress", s), ("status", s), ("diagnosticCode", s)])
    payloads: dict[str, dict[str, pa.DataType]] = {}
    for w in sorted(_words()):
        p = payloads.setdefault(_key(w), {})
        for f in _payload_fields(w):
            p[f] = s
        lk = ses.RECIPIENT_LIST.get(w)
        if lk is not None:
            p[lk] = pa.list_(s) if w in _ADDRESS_LISTS else pa.list_(rc)
    mail = pa.struct(
        [
            ("timestamp", s),
            ("messageId", s),
            ("destination", pa.list_(s)),
            ("tags", pa.struct([(ctx.ses_category_tag, pa.list_(s))])),
        ]
    )
    fields = [("eventType", s), ("mail", mail)]
    fields += [
        (k, pa.struct(list(v.items())))
        for k, v in sorted(payloads.items())
        if k not in ("eventType", "mail")
    ]
    return pa.schema(fields)


def _iso_text(head: pa.Array, frac: pa.Array) -> pa.Array:
    """``datetime.isoformat()`` of the UTC time ``head`` + ``frac`` (six digits), as
    :func:`pipelines.events.deterministic_event_id` hashes it (the fraction only when not zero), from the text."""
    body = pc.if_else(
        pc.equal(frac, "000000"), head, pc.binary_join_element_wise(head, ".", frac, "")
    )
    return pc.binary_join_element_wise(body, "+00:00", "")


def _micros(ts_s: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(microseconds since the epoch, ``datetime.isoformat()`` of the time) of ISO times
    ending in ``Z`` (3 or 6 fraction digits or none), as base.parse_iso_ts reads them;
    null for any other text."""
    shaped = pc.fill_null(pc.match_substring_regex(ts_s, _ISO), False)
    head = pc.if_else(shaped, pc.utf8_slice_codeunits(ts_s, 0, 19), pa.scalar(None, pa.string()))
    base = pc.strptime(head, format="%Y-%m-%dT%H:%M:%S", unit="us", error_is_null=True)
    # Arrow's strptime rolls 2017-02-30 over to March: keep only real dates
    real = pc.fill_null(
        pc.and_(
            pc.equal(pc.day(base), pc.cast(pc.utf8_slice_codeunits(head, 8, 10), pa.int64())),
            pc.equal(pc.month(base), pc.cast(pc.utf8_slice_codeunits(head, 5, 7), pa.int64())),
        ),
        False,
    )
    frac = pc.utf8_rpad(pc.utf8_slice_codeunits(ts_s, 20, 26), width=6, padding="0")
    frac = pc.replace_substring(frac, "Z", "0")  # "669Z00" -> "669000"
    us = pc.add(base.cast(pa.int64()), pc.cast(pc.if_else(real, frac, "0"), pa.int64()))
    good = pc.and_(real, ts_ok(us))
    return (
        pc.if_else(good, us, pa.scalar(None, pa.int64())),
        pc.if_else(good, _iso_text(head, frac), pa.scalar(None, pa.string())),
    )


def normalize_table(
    t: pa.Table, ctx: NormalizeSettings, allowed: np.ndarray, own_time: np.ndarray | None = None
) -> tuple[pa.Table, np.ndarray]:
    """(events with ``_row``, the rows taken) for a chunk read with :func:`arrow_schema`.
    ``own_time``: rows (records from SNS envelopes with a ``Timestamp``) taken only when
    the record carries its own time (:func:`_own_time`)."""
    from .columns import text_array

    s = pa.string()
    n = t.num_rows
    words = _words()
    ev = as_array(t["eventType"])
    mail = as_array(t["mail"])
    ok = (
        pc.and_(
            pc.fill_null(pc.is_in(ev, value_set=pa.array(sorted(words), s)), False),
            pc.is_valid(mail),
        ).to_numpy(zero_copy_only=False)
        & allowed
    )
    null = pa.nulls(n, s)
    ts_own, line_reason, bt, link = null, null, null, null
    present = [w for w in pc.unique(pc.filter(ev, pa.array(ok))).to_pylist()]
    masks = {w: pc.fill_null(pc.equal(ev, w), False) for w in present}
    for w in present:
        pst = as_array(t[_key(w)])
        ts_own = pc.if_else(masks[w], pc.struct_field(pst, "timestamp"), ts_own)
        if w in _REASON_FIELD:
            line_reason = pc.if_else(masks[w], pc.struct_field(pst, _REASON_FIELD[w]), line_reason)
        if ses.EVENT_MAP.get(w) == "bounce":
            bt = pc.if_else(masks[w], pc.struct_field(pst, "bounceType"), bt)
        if w == "Click":
            link = pc.if_else(masks[w], pc.struct_field(pst, "link"), link)
    own_missing = pc.fill_null(pc.equal(ts_own, ""), True)
    mail_ts = pc.struct_field(mail, "timestamp")
    us, iso = _micros(pc.if_else(own_missing, mail_ts, ts_own))
    ok &= pc.is_valid(us).to_numpy(zero_copy_only=False)
    if own_time is not None and own_time.any():
        # _own_time: the payload's timestamp, or mail.timestamp for MAIL_TIME_TYPES
        mail_time = pc.and_(
            pc.fill_null(pc.is_in(ev, value_set=pa.array(sorted(ses.MAIL_TIME_TYPES), s)), False),
            pc.fill_null(pc.not_equal(mail_ts, ""), False),
        )
        has_own = pc.or_(pc.invert(own_missing), mail_time).to_numpy(zero_copy_only=False)
        ok &= ~own_time | has_own

    # recipients, one group per word: (row, position, address, status, diagnosticCode)
    groups = []
    for w in present:
        rows = np.flatnonzero(ok & masks[w].to_numpy(zero_copy_only=False))
        if not len(rows):
            continue
        lk = ses.RECIPIENT_LIST.get(w)
        col = (
            pc.struct_field(as_array(t[_key(w)]), lk)
            if lk is not None
            else pc.struct_field(mail, "destination")
        )
        lists = pc.take(col, pa.array(rows))
        lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
        ok[rows[lengths == 0]] = False
        flat = pc.list_flatten(lists)
        if not len(flat):
            continue
        parent = rows[pc.list_parent_indices(lists).to_numpy()]
        first = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        order = np.arange(len(flat)) - np.repeat(first, lengths)
        if pa.types.is_struct(flat.type):
            addr = pc.struct_field(flat, "emailAddress")
            per = w in _PER_RECIPIENT
            status = pc.struct_field(flat, "status") if per else pa.nulls(len(flat), s)
            diag = pc.struct_field(flat, "diagnosticCode") if per else pa.nulls(len(flat), s)
        else:
            addr, status, diag = flat, pa.nulls(len(flat), s), pa.nulls(len(flat), s)
        groups.append((parent, order, addr, status, diag))
    if not groups:
        return None, np.zeros(0, dtype=np.int64)
    row = np.concatenate([g[0] for g in groups])
    order = np.concatenate([g[1] for g in groups])
    sort = pa.array(np.lexsort((order, row)))
    row = row[sort.to_numpy()]
    addr, status, diag = (
        pc.take(pa.concat_arrays([g[i] for g in groups]), sort) for i in (2, 3, 4)
    )
    h, dom, unusable = recipient_columns(addr, ctx)
    ok[row[unusable]] = False
    keep = ok[row]
    if not keep.any():
        return None, np.zeros(0, dtype=np.int64)
    keep_a = pa.array(keep)
    row = row[keep]
    row_a = pa.array(row)

    def per_event(a):
        return pc.take(a, row_a)

    words_e = per_event(ev)
    event_type = per_distinct(words_e, ses.EVENT_MAP.get, s)
    ts = per_event(us).cast(pa.timestamp("us", tz="UTC"))
    mid = per_event(text_array(pc.struct_field(mail, "messageId")))
    per_rcpt = pc.is_in(words_e, value_set=pa.array(sorted(_PER_RECIPIENT), s))
    reason_line = per_event(text_array(line_reason))
    diag_t = text_array(pc.filter(diag, keep_a))
    reason = pc.if_else(per_rcpt, pc.coalesce(diag_t, reason_line), reason_line)
    smtp = pc.if_else(per_rcpt, text_array(pc.filter(status, keep_a)), pa.scalar(None, s))
    btype = per_event(text_array(bt))
    bclass = per_distinct(
        pc.fill_null(btype, ""), lambda b: ses.BOUNCE_CLASS.get(b, "undetermined"), s
    )
    url = redact_column(per_event(text_array(link)))
    email_hash = pc.filter(h, keep_a)
    cols = {
        "event_id": event_ids(PROVIDER, [mid, words_e, email_hash, per_event(iso), url]),
        "event_type": event_type,
        "provider_event_type": words_e,
        "bounce_class": pc.if_else(pc.equal(event_type, "bounce"), bclass, pa.scalar(None, s)),
        "event_ts": ts,
        "message_id": mid,
        "email_hash": email_hash,
        "recipient_domain": pc.filter(dom, keep_a),
        "categories": _categories(pc.struct_field(mail, "tags"), ctx.ses_category_tag, row_a),
        "reason": redact_column(reason),
        "smtp_status": smtp,
        "url": url,
    }
    table = finish(cols, len(row), ctx, PROVIDER, row_a)
    table = table.rename_columns([c if c != "_pos" else "_row" for c in table.column_names])
    return table, np.unique(row)


def _categories(tags: pa.Array, key: str, rows: pa.Array) -> pa.Array:
    """ses._tag_values per event: the tag's list as it is when its values are distinct
    strings that need no trimming; through ``_tag_values`` itself otherwise."""
    from .columns import unclean_lists

    tv = pc.take(pc.struct_field(tags, key), rows)
    unclean = unclean_lists(tv)
    tv = pc.if_else(pc.is_valid(tv), tv, pa.scalar([], tv.type))
    if len(unclean):
        lists = tv.to_pylist()
        for i in unclean:
            lists[int(i)] = ses._tag_values({key: lists[int(i)]}, key)
        tv = pa.array(lists, pa.list_(pa.string()))
    return tv
