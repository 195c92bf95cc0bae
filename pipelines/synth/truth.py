"""The ground truth: what the generator's lifecycle model produced, counted while it
generates (never by re-reading files): per (message, recipient) final status, per category
and provider counts, per event date. It is what other tests compare the pipeline against.
"""

from __future__ import annotations

import os
from array import array
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple

import orjson

from ..status import STATUS_OF_EVENT, STATUS_RANK
from .model import (
    BLOCK,
    BOUNCE,
    CLASS_NAMES,
    CLICK,
    DAY_MS,
    DEFERRED,
    DELIVERED,
    DOMAIN_PROFILES,
    DROPPED,
    HARD,
    METRICS,
    OPEN,
    PROCESSED,
    PROVIDERS,
    SOFT,
    SPAMREPORT,
    TYPE_NAMES,
    UNSUBSCRIBE,
)

if TYPE_CHECKING:
    from .config import SynthConfig


_M = {name: i for i, name in enumerate(METRICS)}

#: (model type, bounce class) -> [(metric index, counts distinct (message, recipient))]
_TYPE_METRICS: dict[tuple[int, int], list[tuple[int, bool]]] = {
    (PROCESSED, 0): [(_M["processed"], True)],
    (DROPPED, 0): [(_M["dropped"], True)],
    (DELIVERED, 0): [(_M["delivered"], True)],
    (DEFERRED, 0): [(_M["deferred"], True), (_M["deferred_events"], False)],
    (BOUNCE, HARD): [(_M["bounces"], True), (_M["bounces_hard"], True)],
    (BOUNCE, SOFT): [(_M["bounces"], True), (_M["bounces_soft"], True)],
    (BOUNCE, BLOCK): [(_M["bounces"], True), (_M["bounces_block"], True)],
    (OPEN, 0): [(_M["opens"], False), (_M["unique_opens"], True)],
    (CLICK, 0): [(_M["clicks"], False), (_M["unique_clicks"], True)],
    (SPAMREPORT, 0): [(_M["spam_reports"], False)],
    (UNSUBSCRIBE, 0): [(_M["unsubscribes"], False)],
}


class RecipientTruth(NamedTuple):
    provider: str
    message_id: str  # as the normalizers report it (SendGrid: before ``.filter``)
    email: str  # the plain address (never goes to the warehouse; hash it to compare)
    categories: tuple[str, ...]
    status: str  # forward-only final status: delivered | bounce | dropped
    bounce_class: str | None  # hard | soft | block when status is bounce
    sent_at: datetime  # when the message was sent (UTC)
    settled_at: datetime | None  # first event that settled it (delivered/bounce/dropped/...)


_STATUS_CODES = ("processed", "deferred", "delivered", "bounce", "dropped")
_STATUS_CODE = {s: i for i, s in enumerate(_STATUS_CODES)}
_EVENT_STATUS_CODE = [_STATUS_CODE[STATUS_OF_EVENT[t]] for t in TYPE_NAMES]
_EVENT_RANK = [STATUS_RANK[t] for t in TYPE_NAMES]
_SETTLING = [STATUS_OF_EVENT[t] in ("delivered", "bounce", "dropped") for t in TYPE_NAMES]
_NO_CAT = 255


class GroundTruth:
    """What the generator's lifecycle model produced, counted while generating.

    - :attr:`categories` ``{category: {metric: n}}`` over all providers and dates;
    - :attr:`by_provider` ``{category: {provider: {metric: n}}}``;
    - :attr:`totals` ``{provider: {metric: n}}`` counting each (message, recipient) once
      (per-category sums exceed these: a message can carry up to 3 categories);
    - :meth:`daily` rows ``{event_date, category, provider, <metrics>}`` (distinct counts are
      distinct within that event date; ``requests`` count on the send date);
    - :meth:`recipients` per (message, recipient) final status; :meth:`recipients_for` the
      plain addresses of a category (a "list" a watcher test can send to).

    CMC carries a category only in a field the normalizer must be told about: the
    generator puts the (first) category in ``apiData``; read with
    ``NormalizeSettings(cmc_category_field="apiData")`` (``--cmc-category-field apiData``).
    A CMC failed delivery is reported twice; its ``deliveries`` event's reason is written
    so that its own class is the same as the ``bounces`` event's or ``undetermined``.
    """

    def __init__(self, config: SynthConfig, message_ids):
        self.date = config.date
        self.seed = config.seed
        self.params = config.params()
        self.category_names = tuple(c.name for c in config.category_profiles())
        self.providers = tuple(config.providers)
        self._message_id = message_ids  # (provider index, message index) -> id
        self._day0 = datetime(
            config.date.year, config.date.month, config.date.day, tzinfo=timezone.utc
        )
        # (provider, categories, event codes) -> [recipients, status code, bounce class]
        self._sig: dict[tuple, list[int]] = {}
        # (day, category index or -1, provider index) -> metric counts (see _finish)
        self._daily: dict[tuple[int, int, int], list[int]] = {}
        self._total: dict[tuple[int, int], list[int]] = {}
        # per message
        self._msg_provider = bytearray()
        self._msg_cats = bytearray()  # 3 per message, _NO_CAT where unused
        # per recipient
        self._r_msg = array("I")
        self._r_dom = bytearray()
        self._r_status = bytearray()
        self._r_class = bytearray()
        self._r_sent = array("I")  # ms after 00:00 UTC of the date
        self._r_settled = array("I")  # 1 + ms after 00:00 UTC of the date; 0 = never
        self._r_provider = bytearray()

    # -- recording (generator side) ------------------------------------------------

    def _add_message(self, provider: int, cats: tuple[int, ...]) -> None:
        self._msg_provider.append(provider)
        self._msg_cats.extend(cats + (_NO_CAT,) * (3 - len(cats)))

    def _add_recipient(
        self,
        msg: int,
        provider: int,
        dom: int,
        cats: tuple[int, ...],
        sent_ms: int,
        evs: list[tuple[int, int, int]],
    ) -> None:
        """``evs``: the recipient's model events (ms after 00:00 of the date, type, class).

        Recipients with the same (provider, categories, event kinds per day) count the
        same, so only that signature is counted here and expanded into metrics once."""
        codes = tuple([(ms // DAY_MS) << 8 | t << 2 | c for ms, t, c in evs])
        key = (provider, cats, codes)
        sig = self._sig.get(key)
        if sig is None:
            sig = self._sig[key] = [0, *_status_of(codes)]
        sig[0] += 1
        settled = min([ms for ms, t, c in evs if _SETTLING[t]], default=-1)
        self._r_msg.append(msg)
        self._r_dom.append(dom)
        self._r_status.append(sig[1])
        self._r_class.append(sig[2])
        self._r_sent.append(sent_ms)
        self._r_settled.append(settled + 1)
        self._r_provider.append(provider)

    def event_counts(self) -> list[list[int]]:
        """Model events per provider index and type (what the files hold, once each)."""
        out = [[0] * len(TYPE_NAMES) for _ in PROVIDERS]
        for (provider, _cats, codes), (count, _s, _c) in self._sig.items():
            row = out[provider]
            for code in codes:
                row[(code >> 2) & 0x3F] += count
        return out

    def _finish(self) -> None:
        """Expand the signatures into per (day, category, provider) metric counts."""
        daily: dict[tuple[int, int, int], list[int]] = {}
        total: dict[tuple[int, int], list[int]] = {}
        for (provider, cats, codes), (count, _s, _c) in self._sig.items():
            d_contrib: list[tuple[int, int]] = [(0, 0)]  # requests, on the send date
            t_contrib: list[int] = [0]
            d_seen: set[tuple[int, int]] = set()
            t_seen: set[int] = set()
            for code in codes:
                day, t, c = code >> 8, (code >> 2) & 0x3F, code & 3
                for m, distinct in _TYPE_METRICS[(t, c)]:
                    if distinct:
                        if (day, m) not in d_seen:
                            d_seen.add((day, m))
                            d_contrib.append((day, m))
                        if m not in t_seen:
                            t_seen.add(m)
                            t_contrib.append(m)
                    else:
                        d_contrib.append((day, m))
                        t_contrib.append(m)
            for cat in cats + (-1,):
                for day, m in d_contrib:
                    row = daily.get((day, cat, provider))
                    if row is None:
                        row = daily[(day, cat, provider)] = [0] * len(METRICS)
                    row[m] += count
                row = total.get((cat, provider))
                if row is None:
                    row = total[(cat, provider)] = [0] * len(METRICS)
                for m in t_contrib:
                    row[m] += count
        self._daily, self._total = daily, total

    # -- reading (test side) --------------------------------------------------------

    def _prov_index(self, provider: str) -> int:
        return PROVIDERS.index(provider)

    @property
    def messages(self) -> int:
        return len(self._msg_provider)

    @property
    def recipient_count(self) -> int:
        return len(self._r_msg)

    @property
    def categories(self) -> dict[str, dict[str, int]]:
        out = {}
        for ci, name in enumerate(self.category_names):
            acc = [0] * len(METRICS)
            for pi in range(len(PROVIDERS)):
                row = self._total.get((ci, pi))
                if row:
                    acc = [a + b for a, b in zip(acc, row, strict=True)]
            out[name] = dict(zip(METRICS, acc, strict=True))
        return out

    @property
    def by_provider(self) -> dict[str, dict[str, dict[str, int]]]:
        out: dict[str, dict[str, dict[str, int]]] = {}
        for ci, name in enumerate(self.category_names):
            out[name] = {}
            for p in self.providers:
                row = self._total.get((ci, self._prov_index(p))) or [0] * len(METRICS)
                out[name][p] = dict(zip(METRICS, row, strict=True))
        return out

    @property
    def totals(self) -> dict[str, dict[str, int]]:
        return {
            p: dict(
                zip(
                    METRICS,
                    self._total.get((-1, self._prov_index(p))) or [0] * len(METRICS),
                    strict=True,
                )
            )
            for p in self.providers
        }

    def daily(self) -> list[dict[str, Any]]:
        rows = []
        for (day, ci, pi), counts in sorted(self._daily.items()):
            if ci < 0:
                continue
            row = {
                "event_date": (self.date + timedelta(days=day)).isoformat(),
                "category": self.category_names[ci],
                "provider": PROVIDERS[pi],
            }
            row.update(zip(METRICS, counts, strict=True))
            rows.append(row)
        return rows

    def email(self, recipient_index: int) -> str:
        return recipient_address(
            recipient_index, DOMAIN_PROFILES[self._r_dom[recipient_index]].name
        )

    def _msg_categories(self, msg: int) -> tuple[str, ...]:
        return tuple(
            self.category_names[c] for c in self._msg_cats[3 * msg : 3 * msg + 3] if c != _NO_CAT
        )

    def _ts(self, ms: int) -> datetime:
        return self._day0 + timedelta(milliseconds=ms)

    def recipients(
        self, category: str | None = None, provider: str | None = None
    ) -> Iterator[RecipientTruth]:
        """Every (message, recipient) in generation (send time) order, optionally filtered."""
        ci = self._category_index(category) if category is not None else None
        pi = self._prov_index(provider) if provider is not None else None
        cats = self._msg_cats
        for r in range(len(self._r_msg)):
            m = self._r_msg[r]
            if ci is not None and ci not in cats[3 * m : 3 * m + 3]:
                continue
            p = self._r_provider[r]
            if pi is not None and p != pi:
                continue
            settled = self._r_settled[r] - 1
            yield RecipientTruth(
                provider=PROVIDERS[p],
                message_id=self._message_id(p, m),
                email=self.email(r),
                categories=self._msg_categories(m),
                status=_STATUS_CODES[self._r_status[r]],
                bounce_class=CLASS_NAMES[self._r_class[r]],
                sent_at=self._ts(self._r_sent[r]),
                settled_at=self._ts(settled) if settled >= 0 else None,
            )

    def recipients_for(self, category: str, provider: str | None = None) -> list[str]:
        """The plain addresses a category's mail went to (each once: addresses are unique
        per (message, recipient)), e.g. ``user00042@gmail.com``."""
        return [r.email for r in self.recipients(category, provider)]

    def status_counts(
        self, category: str | None = None, provider: str | None = None
    ) -> dict[str, int]:
        """Final statuses as a watcher counts them (``bounce`` includes every class)."""
        out = {"delivered": 0, "bounce": 0, "dropped": 0, "deferred": 0, "unsettled": 0}
        for r in self.recipients(category, provider):
            if r.status in out:
                out[r.status] += 1
            if r.status not in ("delivered", "bounce", "dropped"):
                out["unsettled"] += 1
        return out

    def _category_index(self, category: str) -> int:
        try:
            return self.category_names.index(category)
        except ValueError:
            raise KeyError(
                f"unknown category {category!r}; this archive has {', '.join(self.category_names)}"
            ) from None

    def as_dict(self, include_recipients: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "generator": "mailpulse synth",
            "params": self.params,
            "messages": self.messages,
            "recipients_count": self.recipient_count,
            "metrics": list(METRICS),
            "notes": [
                "outcome metrics count distinct (message, recipient); opens, clicks, "
                "spam_reports, unsubscribes and deferred_events count events",
                "daily rows: distinct within the event date; requests on the send date",
                "CMC categories are in apiData: read with cmc_category_field='apiData'",
                "emails are plain addresses: hash them with the pipeline's key to compare",
            ],
            "totals": self.totals,
            "categories": self.categories,
            "by_provider": self.by_provider,
            "daily": self.daily(),
        }
        if include_recipients:
            d["recipients"] = [self._recipient_json(r) for r in self.recipients()]
        return d

    @staticmethod
    def _recipient_json(r: RecipientTruth) -> dict[str, Any]:
        return {
            "provider": r.provider,
            "message_id": r.message_id,
            "email": r.email,
            "categories": list(r.categories),
            "status": r.status,
            "bounce_class": r.bounce_class,
            "sent_at": _rfc3339(r.sent_at),
            "settled_at": _rfc3339(r.settled_at) if r.settled_at else None,
        }

    def write_json(self, path: str | os.PathLike, include_recipients: bool = True) -> Path:
        """Write the truth as one JSON object (recipients streamed, so memory stays flat)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        head = self.as_dict(include_recipients=False)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            body = orjson.dumps(head, option=orjson.OPT_INDENT_2)
            if not include_recipients:
                f.write(body + b"\n")
            else:
                f.write(body[:-2] + b',\n  "recipients": [\n')
                first = True
                chunk: list[bytes] = []
                for r in self.recipients():
                    chunk.append(orjson.dumps(self._recipient_json(r)))
                    if len(chunk) >= 10_000:
                        f.write((b"" if first else b",\n") + b",\n".join(chunk))
                        first, chunk = False, []
                if chunk:
                    f.write((b"" if first else b",\n") + b",\n".join(chunk))
                f.write(b"\n  ]\n}\n")
        os.replace(tmp, path)
        return path


def _status_of(codes: tuple[int, ...]) -> tuple[int, int]:
    """(status code, bounce class) under forward-only precedence (:mod:`pipelines.status`).

    Events of equal rank lead to the same status (delivered), except bounces, whose
    class the model keeps the same for one recipient; so the order does not matter."""
    best_rank, status, bclass = 0, 0, 0
    for code in codes:
        t, c = (code >> 2) & 0x3F, code & 3
        rank = _EVENT_RANK[t]
        if rank > best_rank:
            best_rank, status, bclass = rank, _EVENT_STATUS_CODE[t], c if t == BOUNCE else 0
    return status, bclass


def _rfc3339(ts: datetime) -> str:
    s = ts.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{s}.{ts.microsecond // 1000:03d}Z" if ts.microsecond else s + "Z"


def recipient_address(index: int, domain: str) -> str:
    """The deterministic plain address of recipient ``index``: ``user00042@gmail.com``."""
    return f"user{index:05d}@{domain}"
