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
from .base import NormalizeContext, RecordError, text
from .vectorized import (as_array, event_ids, finish, iso_utc, per_distinct,
                         recipient_columns, redact_column, text_column, ts_ok)

PROVIDER = ses.PROVIDER

_ISO = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
        r"(\.[0-9]{3}|\.[0-9]{6})?Z$")


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
                d = unwrap(d)
            except Exception:  # noqa: BLE001 - RecordError or a normalizer bug: the exact
                continue  # path turns it into the dead letter it always was
            if type(d) is not dict:
                continue
        pos.append(i)
        docs.append(d)
    return pos, docs


def _words() -> frozenset[str]:
    return frozenset(w for w in ses.EVENT_MAP if w == w.strip()
                     and w not in ses.NO_EVENT_NOTIFICATIONS)


def normalize_docs(docs: list[dict], ctx: NormalizeContext) -> tuple[pa.Table, np.ndarray]:
    """(events of the clean records, with ``_pos`` = index into ``docs``; their indices)."""
    words_ok = _words()
    payload_key, list_key_of = ses.PAYLOAD_KEY, ses.RECIPIENT_LIST
    lower_first, reason_status = ses._lower_first, ses._reason_status
    tag_key = ctx.ses_category_tag
    tag_cache: dict[Any, list[str]] = {}

    # Per record: only dict look-ups and the mapping's own small helpers.
    rec_doc: list[int] = []       # per event: index into docs
    rec_word: list[str] = []
    rec_addr: list[Any] = []
    rec_reason: list[Any] = []
    rec_status: list[Any] = []
    rec_ord: list[int] = []
    d_ts: list[Any] = []          # per record (all docs)
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
            d_ts.append(None); d_mid.append(None); d_cats.append([])
            d_bt.append(None); d_link.append(None)
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
            rec_doc.append(k); rec_word.append(word); rec_addr.append(addr)
            rec_reason.append(reason); rec_status.append(status); rec_ord.append(j)

    n_docs = len(docs)
    # -- per record, in columns: time, message id -------------------------------------------
    ts_s = pa.array([v if type(v) is str else None for v in d_ts], pa.string())
    shaped = pc.fill_null(pc.match_substring_regex(ts_s, _ISO), False)
    head = pc.utf8_slice_codeunits(ts_s, 0, 19)
    base = pc.strptime(pc.if_else(shaped, head, pa.scalar(None, pa.string())),
                       format="%Y-%m-%dT%H:%M:%S", unit="us", error_is_null=True)
    base = base.cast(pa.timestamp("us", tz="UTC"))
    # Arrow's strptime rolls 2017-02-30 over to March: keep only times that round-trip
    real = pc.fill_null(pc.equal(pc.utf8_slice_codeunits(
        pc.strftime(base, format="%Y-%m-%dT%H:%M:%S"), 0, 19), head), False)
    frac = pc.utf8_rpad(pc.utf8_slice_codeunits(ts_s, 20, 26), width=6, padding="0")
    frac = pc.replace_substring(frac, "Z", "0")  # "669Z00" -> "669000"
    us = pc.add(base.cast(pa.int64()), pc.cast(pc.if_else(real, frac, "0"), pa.int64()))
    ok_ts = pc.and_(real, ts_ok(us))
    bad |= ~ok_ts.to_numpy(zero_copy_only=False)
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
    bclass = per_distinct(pc.fill_null(bt, ""), lambda b: ses.BOUNCE_CLASS.get(b, "undetermined"),
                          pa.string())
    url = redact_column(pc.take(text_column(d_link), sel))
    cats = pa.array([d_cats[i] for i in ev_doc[keep]], pa.list_(pa.string()))
    cols = {
        "event_id": event_ids(PROVIDER, [mid_e, words, email_hash, iso_utc(ts), url]),
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
