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
from .base import NormalizeSettings, RecordError
from .columns import (
    LETTER_ESCAPE,
    event_ids,
    finish,
    has_letter_escape,
    per_distinct,
    recipient_columns,
    redact_column,
    single_lists,
    text_column,
)

PROVIDER = cmc.PROVIDER
KIND = "deliveries"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)
_TIME = pa.struct([("us", pa.int64()), ("iso", pa.string())])


#: The documented ``created`` shape (``YYYY-MM-DD HH:MM:SS``, or with ``/``), nothing to trim.
_LOCAL_SHAPE = r"^[0-9]{4}(-[0-9]{2}-[0-9]{2}|/[0-9]{2}/[0-9]{2}) [0-9]{2}:[0-9]{2}:[0-9]{2}$"


#: A message id in its documented shape, ``<...>`` around printable ASCII that holds no
#: angle bracket, backslash or space: cmc.normalize_message_id takes the brackets off.
_PLAIN_ID = r"^<[\x21-\x3b\x3d\x3f-\x5b\x5d-\x7e]+>$"


def message_ids(mids: pa.Array) -> pa.Array:
    """``cmc.normalize_message_id`` of each value: by a slice for ids in the plain shape,
    once per distinct value through the provider's function for the rest."""
    plain = pc.fill_null(pc.match_substring_regex(mids, _PLAIN_ID), False)
    sliced = pc.utf8_slice_codeunits(mids, 1, -1)
    if pc.all(pc.or_(plain, pc.is_null(mids))).as_py():
        return sliced
    return pc.if_else(plain, sliced, per_distinct(mids, cmc.normalize_message_id, pa.string()))


def _hour_start(hour: str, ctx) -> tuple[int, str] | None:
    """(UTC microseconds, UTC ``YYYY-MM-DDTHH`` text) of local ``hour:00:00`` when the
    whole local hour maps to UTC at one whole-hour offset, by ``cmc.parse_created`` itself
    at both ends (it holds no zone transition and lies in range); else None."""
    try:
        first = cmc.parse_created(hour + ":00:00", ctx)
        last = cmc.parse_created(hour + ":59:59", ctx)
    except RecordError:
        return None
    if (last - first).total_seconds() != 3599 or first.minute or first.second:
        return None
    return (first - _EPOCH) // _US, first.strftime("%Y-%m-%dT%H")


def created_times(created: pa.Array, one_time, ctx) -> pa.Array:
    """``per_distinct(created, one_time)`` ({us, iso} of each local ``created`` time, null
    when unreadable): for the documented shape, the provider's parser runs once per local
    hour and minutes and seconds are added by kernels; every other value through
    ``one_time`` (the provider's parser), once per distinct value."""
    n = len(created)
    shape = pc.fill_null(pc.match_substring_regex(created, _LOCAL_SHAPE), False)
    if n == 0 or not pc.any(shape).as_py():
        return per_distinct(created, one_time, _TIME)
    shaped = pc.if_else(shape, created, None)
    hours = pc.dictionary_encode(pc.utf8_slice_codeunits(shaped, 0, 13))
    starts = [None if h is None else _hour_start(h, ctx) for h in hours.dictionary.to_pylist()]
    base = pc.take(
        pa.array([None if s is None else s[0] for s in starts], pa.int64()), hours.indices
    )
    head = pc.take(
        pa.array([None if s is None else s[1] for s in starts], pa.string()), hours.indices
    )
    mm = pc.utf8_slice_codeunits(shaped, 14, 16).cast(pa.int64())
    ss = pc.utf8_slice_codeunits(shaped, 17, 19).cast(pa.int64())
    fast = pc.and_(pc.is_valid(base), pc.and_(pc.less(mm, 60), pc.less(ss, 60)))
    fast = pc.fill_null(fast, False)
    us = pc.add(base, pc.multiply(pc.add(pc.multiply(mm, 60), ss), 1_000_000))
    iso = pc.binary_join_element_wise(
        head, ":", pc.utf8_slice_codeunits(shaped, 14, 19), "+00:00", ""
    )
    slow = pc.invert(fast)
    if pc.any(slow).as_py():
        rest_us, rest_iso = per_distinct(pc.filter(created, slow), one_time, _TIME).flatten()
        us = pc.replace_with_mask(pc.if_else(fast, us, None), slow, rest_us)
        iso = pc.replace_with_mask(pc.if_else(fast, iso, None), slow, rest_iso)
    return pa.StructArray.from_arrays([us, iso], fields=list(_TIME), mask=pc.is_null(us))


def select(records, taken) -> tuple[list[int], list[dict]]:
    """Positions of the CMC ``deliveries`` bodies (as the dispatcher detects them)."""
    pos: list[int] = []
    docs: list[dict] = []
    for i, r in enumerate(records):
        d = r.doc
        if (
            taken[i]
            or r.error is not None
            or type(d) is not dict
            or d.get("event_type") != KIND
            or ses.looks_like(d)
            or not cmc.looks_like(d)
        ):
            continue
        pos.append(i)
        docs.append(d)
    return pos, docs


def normalize_docs(docs: list[dict], ctx: NormalizeSettings) -> tuple[pa.Table, np.ndarray]:
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
            if (
                (m is not None and type(m) is not str)
                or (s is not None and type(s) is not str)
                or type(t) is not str
            ):
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
    created_a = pa.array([v if type(v) is str else None for v in created], pa.string())
    return _events(
        np.asarray(ev_doc, dtype=np.int64),
        bad,
        created_a,
        pa.array(to, pa.string()),
        pa.array(mids, pa.string()),
        text_column(status),
        text_column(reason),
        text_column(cats) if cat_field else None,
        ctx,
    )


def _events(
    ev_doc_a: np.ndarray,
    bad: np.ndarray,
    created_a: pa.Array,
    to_a: pa.Array,
    mids_a: pa.Array,
    status_t: pa.Array,
    reason_t: pa.Array,
    cats_t,
    ctx,
):
    """Events of the items (``ev_doc_a``: each item's body) whose body is not ``bad``;
    texts already through ``base.text``. (table with ``_pos``, the bodies taken)"""

    def one_time(v: str):
        try:
            ts = cmc.parse_created(v, ctx)
        except RecordError:
            return None
        return {"us": (ts - _EPOCH) // _US, "iso": ts.isoformat()}

    times = created_times(created_a, one_time, ctx)
    bad[ev_doc_a[pc.is_null(times).to_numpy(zero_copy_only=False)]] = True
    h, dom, unusable = recipient_columns(to_a, ctx)
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
    st = kept(status_t)
    mid = kept(message_ids(mids_a))
    reason_r = redact_column(kept(reason_t))
    event_type = per_distinct(
        pc.fill_null(st, ""),
        lambda s: cmc.DELIVERY_STATUS_MAP.get(s.lower(), "unknown"),
        pa.string(),
    )
    pet = pc.if_else(pc.is_valid(st), pc.binary_join_element_wise(KIND, st, "."), KIND)
    bclass = per_distinct(
        pc.fill_null(reason_r, ""), lambda r: cmc.smtp_class(r or None), pa.string()
    )
    email_hash = kept(h)
    categories = single_lists(kept(cats_t) if cats_t is not None else pa.nulls(n, pa.string()))
    cols = {
        # deterministic_event_id(PROVIDER, mid, type, hash, ts) with no ``extra``: ""
        "event_id": event_ids(
            PROVIDER, [mid, pet, email_hash, times.field("iso"), pa.nulls(n, pa.string())]
        ),
        "event_type": event_type,
        "provider_event_type": pet,
        "bounce_class": pc.if_else(
            pc.equal(event_type, "bounce"), bclass, pa.scalar(None, pa.string())
        ),
        "event_ts": times.field("us").cast(pa.timestamp("us", tz="UTC")),
        "message_id": mid,
        "email_hash": email_hash,
        "recipient_domain": kept(dom),
        "categories": categories,
        "reason": reason_r,
    }
    return finish(cols, n, ctx, PROVIDER, pa.array(ev_doc_a[keep])), ok_docs


# -- tier 1: a chunk of bodies read by Arrow's JSON reader (vectorized._arrow_tier) -------

ARROW_OPENER = b"{"
#: Keys that make the dispatcher read a body as SES (ses.looks_like), in any position:
#: such lines are the record path's. So are lines with a letter spelled as an escape
#: (a key written ``"\u0065ventType"`` is still that key).
_SES_KEYS = r'"(?:eventType|notificationType|Type|Body|Messages)"\s*:'


def arrow_sniff(chunk: bytes) -> bool:
    return b'"event_type"' in chunk


def arrow_schema(ctx: NormalizeSettings) -> pa.Schema:
    s = pa.string()
    fields = [("created", s), ("to", s), ("messageId", s), ("status", s), ("reason", s)]
    cat = ctx.cmc_category_field
    if cat and cat not in dict(fields):
        fields.append((cat, s))
    item = pa.struct(fields)
    return pa.schema([("event_type", s), ("event", pa.struct([(KIND, pa.list_(item))]))])


def arrow_allowed(lines: pa.Array, chunk: bytes = b"") -> np.ndarray:
    if (
        chunk
        and not has_letter_escape(chunk)
        and not any(
            k in chunk
            for k in (b'"eventType"', b'"notificationType"', b'"Type"', b'"Body"', b'"Messages"')
        )
    ):
        return np.ones(len(lines), dtype=bool)
    bad = pc.or_(
        pc.match_substring_regex(lines, _SES_KEYS), pc.match_substring_regex(lines, LETTER_ESCAPE)
    )
    return pc.invert(bad).to_numpy(zero_copy_only=False)


def normalize_table(t: pa.Table, ctx: NormalizeSettings, allowed: np.ndarray):
    """(events with ``_row``, the lines taken) for a chunk read with :func:`arrow_schema`."""
    from .columns import as_array, text_array

    body = as_array(t["event"])
    ok = (
        pc.fill_null(pc.equal(as_array(t["event_type"]), KIND), False).to_numpy(
            zero_copy_only=False
        )
        & pc.is_valid(body).to_numpy(zero_copy_only=False)
        & allowed
    )
    lists = pc.struct_field(body, KIND)
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    ok &= lengths > 0
    items = pc.list_flatten(lists)
    if not len(items):
        return None, np.zeros(0, dtype=np.int64)
    row = pc.list_parent_indices(lists).to_numpy()
    ok[row[~pc.is_valid(items).to_numpy(zero_copy_only=False)]] = False  # a null item

    def f(name):
        return pc.struct_field(items, name)

    cat = ctx.cmc_category_field
    table, rows = _events(
        row.astype(np.int64),
        ~ok,
        f("created"),
        f("to"),
        f("messageId"),
        text_array(f("status")),
        text_array(f("reason")),
        text_array(f(cat)) if cat else None,
        ctx,
    )
    if table is None:
        return None, rows
    table = table.rename_columns([c if c != "_pos" else "_row" for c in table.column_names])
    return table, rows
