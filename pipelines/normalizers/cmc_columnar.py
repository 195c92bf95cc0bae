"""The vectorized path for Customers Mail Cloud ``deliveries`` webhooks, exact by
construction.

Reads :mod:`.cmc`'s ``DELIVERY_STATUS_MAP`` and calls its own ``parse_created``,
``normalize_message_id`` and ``smtp_class`` once per *distinct* value (a batch's events
share their second, message and reason texts); hashes, event ids and the Arrow table are
built in columns. Only ``deliveries`` bodies take this path (``bounces`` and ``blocks``
are few, and their classification is the exact path's), and only when every item is an
object whose ``to`` is a non-blank string, whose ``messageId`` and ``status`` are strings
(or absent) and whose ``created`` reads with ``parse_created``. Anything else goes to
:mod:`.cmc` unchanged.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import cmc, ses
from .base import NormalizeContext, RecordError
from .vectorized import (event_ids, finish, per_distinct, recipient_columns, redact_column,
                         text_column)

PROVIDER = cmc.PROVIDER
KIND = "deliveries"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)
_TIME = pa.struct([("us", pa.int64()), ("iso", pa.string())])


def select(records, taken) -> tuple[list[int], list[dict]]:
    """Positions of the CMC ``deliveries`` bodies (as the dispatcher detects them)."""
    pos: list[int] = []
    docs: list[dict] = []
    for i, r in enumerate(records):
        d = r.doc
        if (taken[i] or r.error is not None or type(d) is not dict
                or d.get("event_type") != KIND or ses.looks_like(d) or not cmc.looks_like(d)):
            continue
        pos.append(i)
        docs.append(d)
    return pos, docs


def normalize_docs(docs: list[dict], ctx: NormalizeContext) -> tuple[pa.Table, np.ndarray]:
    """(events of the clean bodies, with ``_pos`` = index into ``docs``; their indices)."""
    cat_field = ctx.cmc_category_field
    ev_doc: list[int] = []
    created: list[Any] = []
    to: list[Any] = []
    mids: list[Any] = []
    status: list[Any] = []
    reason: list[Any] = []
    cats: list[Any] = []
    bad = np.zeros(len(docs), dtype=bool)
    for k, d in enumerate(docs):
        items = d["event"].get(KIND)
        if type(items) is not list or not items or not all(type(it) is dict for it in items):
            bad[k] = True
            continue
        for it in items:
            m, s, t = it.get("messageId"), it.get("status"), it.get("to")
            if ((m is not None and type(m) is not str) or (s is not None and type(s) is not str)
                    or type(t) is not str):
                bad[k] = True
            ev_doc.append(k)
            created.append(it.get("created"))
            to.append(t if type(t) is str else None)
            mids.append(m if type(m) is str else None)
            status.append(s if type(s) is str else None)
            reason.append(it.get("reason"))
            if cat_field:
                cats.append(it.get(cat_field))
    if not ev_doc:
        return None, np.zeros(0, dtype=np.int64)
    ev_doc_a = np.asarray(ev_doc, dtype=np.int64)

    def one_time(v: str):
        try:
            ts = cmc.parse_created(v, ctx)
        except RecordError:
            return None
        return {"us": (ts - _EPOCH) // _US, "iso": ts.isoformat()}

    created_a = pa.array([v if type(v) is str else None for v in created], pa.string())
    times = per_distinct(created_a, one_time, _TIME)
    bad[ev_doc_a[pc.is_null(times).to_numpy(zero_copy_only=False)]] = True
    h, dom, unusable = recipient_columns(pa.array(to, pa.string()), ctx)
    bad[ev_doc_a[unusable]] = True

    keep = ~bad[ev_doc_a]
    ok_docs = np.flatnonzero(~bad)
    if not keep.any():
        return None, np.zeros(0, dtype=np.int64)
    keep_a = pa.array(keep)

    def kept(a):
        return pc.filter(a, keep_a)

    n = int(keep.sum())
    times = kept(times)
    st = kept(text_column(status))
    mid = kept(per_distinct(pa.array(mids, pa.string()), cmc.normalize_message_id, pa.string()))
    reason_r = redact_column(kept(text_column(reason)))
    event_type = per_distinct(pc.fill_null(st, ""),
                              lambda s: cmc.DELIVERY_STATUS_MAP.get(s.lower(), "unknown"),
                              pa.string())
    pet = pc.if_else(pc.is_valid(st), pc.binary_join_element_wise(KIND, st, "."), KIND)
    bclass = per_distinct(pc.fill_null(reason_r, ""), lambda r: cmc.smtp_class(r or None),
                          pa.string())
    email_hash = kept(h)
    if cat_field:
        c = kept(text_column(cats)).to_pylist()
        categories = pa.array([[x] if x else [] for x in c], pa.list_(pa.string()))
    else:
        categories = pa.array([[]] * n, pa.list_(pa.string()))
    cols = {
        # deterministic_event_id(PROVIDER, mid, type, hash, ts) with no ``extra``: ""
        "event_id": event_ids(PROVIDER, [mid, pet, email_hash, times.field("iso"),
                                         pa.nulls(n, pa.string())]),
        "event_type": event_type,
        "provider_event_type": pet,
        "bounce_class": pc.if_else(pc.equal(event_type, "bounce"), bclass,
                                   pa.scalar(None, pa.string())),
        "event_ts": times.field("us").cast(pa.timestamp("us", tz="UTC")),
        "message_id": mid,
        "email_hash": email_hash,
        "recipient_domain": kept(dom),
        "categories": categories,
        "reason": reason_r,
    }
    return finish(cols, n, ctx, PROVIDER, pa.array(ev_doc_a[keep])), ok_docs
