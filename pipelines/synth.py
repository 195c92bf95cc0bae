"""Synthetic provider archives with their ground truth (``mailpulse synth``).

``generate(out, date, messages=..., seed=...)`` writes a deterministic, realistic archive
in the layout the load job reads::

    OUT/<provider>/YYYY/MM/DD/HH/synth-<D>-<YYYYMMDDHH>-<part>.json.gz

for SendGrid, Amazon SES and Customers Mail Cloud, each in the provider's NATIVE format
(what :mod:`pipelines.normalizers` reads):

- SendGrid: one Event Webhook POST body per line, a JSON array mixing event kinds;
- SES: event-publishing records one per line as Firehose writes them, a share of them
  inside an SNS envelope (``Message`` is the record as a JSON string);
- CMC: webhook bodies (``deliveries`` / ``bounces`` / ``blocks``), ``created`` in Japan
  time, a failed delivery reported twice (``deliveries`` failed, ``bounces`` a second later).

Every message-recipient follows a lifecycle (processed -> deferred* -> delivered | bounce
| dropped, then opens, clicks, spam reports, unsubscribes); categories and recipient
domains differ in health. Provider retries (the same SendGrid post again, in the same or a
later hour file; Firehose writing an SES record twice), late events (events of date D in
D+1's hour directories) and optional corrupt records (one dead letter each) are added on
top. Files go to the hour directory of their *arrival*, so deferrals that settle up to
72 h later land in later days' directories.

The :class:`GroundTruth` is computed from the generator's own lifecycle model while it
generates (never by re-reading files): per (message, recipient) final status, per category
and provider counts, per event date. It is what other tests compare the pipeline against.

Same arguments -> byte-identical files: one seeded :class:`random.Random` drives the
model, per-file decisions use RNGs seeded from (seed, provider, hour), gzip is written
with ``mtime=0`` and file names are stable. Memory does not grow with the number of
events: messages are generated in send-time order, events are buffered per 5-minute
arrival slot, a slot is batched into provider records and appended to its hour file as
soon as no later message can reach it (a file is written once it holds
``events_per_file`` events or its hour is complete), and buffered slots more than an hour
ahead spill to temporary files past ``spill_bytes``. Compression runs in a second thread.
Only the ground truth keeps ~20 bytes per recipient.
"""
from __future__ import annotations

import base64
import binascii
from bisect import bisect_right
from heapq import heappop, heappush
from collections import deque
from concurrent.futures import ThreadPoolExecutor
import gzip
import math
import os
import random
import re
import struct
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import orjson

from .status import STATUS_OF_EVENT, STATUS_RANK

PROVIDERS = ("sendgrid", "ses", "cmc")

#: Share of messages per provider (renormalised over the providers chosen).
PROVIDER_SHARE = {"sendgrid": 0.5, "ses": 0.3, "cmc": 0.2}

# Canonical event types of the model (names as the normalizers produce them).
PROCESSED, DROPPED, DELIVERED, DEFERRED, BOUNCE, OPEN, CLICK, SPAMREPORT, UNSUBSCRIBE = range(9)
TYPE_NAMES = ("processed", "dropped", "delivered", "deferred", "bounce", "open", "click",
              "spamreport", "unsubscribe")
HARD, SOFT, BLOCK = 1, 2, 3
CLASS_NAMES = (None, "hard", "soft", "block")

#: Per category metrics (SendGrid category-stats names). Outcomes (requests ... deferred)
#: count distinct (message, recipient); ``*_events`` and engagement count events, and
#: ``unique_*`` distinct (message, recipient).
METRICS = ("requests", "processed", "delivered", "bounces", "bounces_hard", "bounces_soft",
           "bounces_block", "dropped", "deferred", "deferred_events", "opens", "unique_opens",
           "clicks", "unique_clicks", "spam_reports", "unsubscribes")
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

HOUR_MS = 3_600_000
#: Events are buffered and written per arrival slot (an hour file is built from its slots).
SLOT_MS = 300_000
SLOTS_PER_HOUR = HOUR_MS // SLOT_MS
DAY_MS = 24 * HOUR_MS
#: Deferred mail is retried for up to 72 hours before it bounces as expired.
DEFER_HORIZON_MS = 72 * HOUR_MS
#: SendGrid retries a failed webhook for up to 24 hours.
RETRY_HORIZON_HOURS = 24
JST_OFFSET_S = 9 * 3600


@dataclass(frozen=True)
class CategoryProfile:
    name: str
    weight: float
    bounce: float  # multiplier of the base bounce rate
    drop: float  # multiplier of the base drop rate
    open: float  # P(at least one open | delivered)
    click: float  # P(click | opened)
    spam: float  # P(spam report | delivered)
    unsub: float  # P(unsubscribe | opened)
    subject: str


#: Categories, in the order ``--categories K`` takes them. ``reengagement`` (mail to an
#: old list) is the unhealthy one: eight times the base bounce rate, few opens.
CATEGORY_PROFILES = (
    CategoryProfile("newsletter", 30, 1.0, 1.0, 0.25, 0.15, 0.002, 0.02, "今週のニュースレター"),
    CategoryProfile("reengagement", 10, 8.0, 3.0, 0.06, 0.10, 0.006, 0.05, "お久しぶりです"),
    CategoryProfile("transactional", 25, 0.3, 0.3, 0.45, 0.30, 0.0002, 0.0, "ご注文の確認"),
    CategoryProfile("promo", 15, 1.2, 1.2, 0.12, 0.08, 0.003, 0.03, "期間限定セール"),
    CategoryProfile("onboarding", 10, 0.8, 0.5, 0.35, 0.20, 0.001, 0.01, "ようこそ"),
    CategoryProfile("digest", 5, 1.0, 1.0, 0.20, 0.10, 0.002, 0.02, "今日のダイジェスト"),
    CategoryProfile("survey", 3, 1.0, 1.0, 0.15, 0.25, 0.002, 0.02, "アンケートのお願い"),
    CategoryProfile("alerts", 2, 0.5, 0.5, 0.50, 0.05, 0.001, 0.0, "セキュリティ通知"),
)


@dataclass(frozen=True)
class DomainProfile:
    name: str
    weight: float
    hard: float  # multipliers of the base hard / soft / block bounce shares
    soft: float
    block: float
    defer: float  # multiplier of the base defer rate
    long: float  # P(a deferral drags on for hours, up to 72 h)


DOMAIN_PROFILES = (
    DomainProfile("gmail.com", 30, 1.0, 0.3, 0.5, 0.5, 0.02),
    DomainProfile("yahoo.co.jp", 12, 1.2, 0.5, 1.0, 1.0, 0.05),
    DomainProfile("outlook.com", 12, 1.0, 0.5, 1.5, 1.2, 0.05),
    DomainProfile("icloud.com", 8, 0.8, 0.5, 0.8, 0.5, 0.02),
    # Carrier mail: addresses change often (unknown users), strict spam filters.
    DomainProfile("docomo.ne.jp", 8, 3.0, 0.5, 2.0, 0.8, 0.05),
    DomainProfile("ezweb.ne.jp", 6, 2.5, 0.5, 1.5, 0.8, 0.05),
    # A corporate gateway that blocks and greylists.
    DomainProfile("corp.example.co.jp", 10, 0.5, 0.5, 4.0, 3.0, 0.10),
    # A discontinued ISP: most of its addresses bounce hard.
    DomainProfile("legacy-isp.example", 4, 8.0, 1.0, 1.0, 1.0, 0.10),
    # An overloaded receiver: mailboxes full, long deferrals.
    DomainProfile("slow-mx.example", 4, 0.5, 4.0, 0.5, 8.0, 0.50),
    DomainProfile("mail.example.com", 6, 1.0, 1.0, 1.0, 1.0, 0.05),
)

#: Messages sent per UTC hour (relative): a quiet night, a morning and an evening peak.
DIURNAL = tuple(1.0 + 3.0 * math.exp(-((h - 9) / 3.0) ** 2) + 2.0 * math.exp(-((h - 20) / 2.5) ** 2)
                for h in range(24))

_FILE_RE = re.compile(r"^synth-(\d{8})-(\d{10})-(\d{4})\.json\.gz$")


# ----------------------------------------------------------------------------- config


@dataclass
class SynthConfig:
    """What to generate. Rates are probabilities in [0, 1]; see :func:`generate`."""

    out: str | os.PathLike
    date: date
    messages: int = 1000
    seed: int = 0
    providers: Sequence[str] = PROVIDERS
    categories: int = 5
    #: base P(bounce) per recipient, scaled per category and recipient domain
    bounce_rate: float = 0.04
    #: base P(dropped) per recipient (suppressed or invalid address), scaled per category
    drop_rate: float = 0.01
    #: base P(deferred at least once), scaled per recipient domain
    defer_rate: float = 0.05
    #: P(an extra corrupt record after a record): truncated JSON, not JSON, no recipient
    corrupt_rate: float = 0.0
    #: P(a SendGrid post is posted again / Firehose writes an SES record twice)
    retry_rate: float = 0.02
    #: P(an event of date D arrives late, in D+1's hour directories)
    late_rate: float = 0.01
    #: P(an SES record arrives inside an SNS envelope instead of bare)
    sns_rate: float = 0.1
    #: at most this many events per archive file (an hour can have several files)
    events_per_file: int = 10_000
    compresslevel: int = 1
    #: replace an earlier synth archive of the same date in ``out``
    overwrite: bool = False
    #: buffered future events above this many bytes spill to temporary files
    spill_bytes: int = 32 << 20

    def validate(self) -> "SynthConfig":
        """Normalise and check; ValueError with a message that names the fix."""
        if isinstance(self.date, str):
            try:
                self.date = date.fromisoformat(self.date)
            except ValueError:
                raise ValueError(f"date {self.date!r} is not a date; use YYYY-MM-DD") from None
        if isinstance(self.date, datetime):
            self.date = self.date.date()
        if not isinstance(self.date, date):
            raise ValueError("date must be a datetime.date or YYYY-MM-DD")
        if not isinstance(self.messages, int) or self.messages < 1:
            raise ValueError(f"messages must be a whole number >= 1 (got {self.messages!r})")
        if self.messages > 50_000_000:
            raise ValueError("messages must be at most 50,000,000; generate several dates instead")
        if isinstance(self.providers, str):
            self.providers = [p for p in self.providers.split(",") if p.strip()]
        chosen = [p.strip().lower() for p in self.providers]
        unknown = [p for p in chosen if p not in PROVIDERS]
        if unknown or not chosen:
            raise ValueError(f"unknown provider(s) {', '.join(unknown) or '(none)'}; "
                             f"use a comma-separated subset of {','.join(PROVIDERS)}")
        self.providers = tuple(p for p in PROVIDERS if p in chosen)
        if not isinstance(self.categories, int) or not 1 <= self.categories <= 99:
            raise ValueError(f"categories must be between 1 and 99 (got {self.categories!r})")
        for name in ("bounce_rate", "drop_rate", "defer_rate", "corrupt_rate", "retry_rate",
                     "late_rate", "sns_rate"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{name} must be between 0 and 1 (got {v!r}); e.g. {flag} 0.05")
        if self.bounce_rate + self.drop_rate > 0.9:
            raise ValueError("bounce_rate + drop_rate must stay below 0.9 so some mail is "
                             "delivered; lower --bounce-rate or --drop-rate")
        if not isinstance(self.events_per_file, int) or self.events_per_file < 1:
            raise ValueError("events_per_file must be >= 1")
        if not isinstance(self.compresslevel, int) or not 0 <= self.compresslevel <= 9:
            raise ValueError("compresslevel must be between 0 and 9")
        self.out = Path(self.out)
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"{self.out} exists and is not a directory; choose another --out")
        return self

    def category_profiles(self) -> tuple[CategoryProfile, ...]:
        base = list(CATEGORY_PROFILES[: self.categories])
        for k in range(len(base), self.categories):
            base.append(CategoryProfile(f"category{k + 1:02d}", 3, 1.0, 1.0, 0.2, 0.1, 0.002,
                                        0.02, f"お知らせ {k + 1}"))
        return tuple(base)

    def params(self) -> dict[str, Any]:
        return {"date": self.date.isoformat(), "messages": self.messages, "seed": self.seed,
                "providers": list(self.providers), "categories": self.categories,
                "bounce_rate": self.bounce_rate, "drop_rate": self.drop_rate,
                "defer_rate": self.defer_rate, "corrupt_rate": self.corrupt_rate,
                "retry_rate": self.retry_rate, "late_rate": self.late_rate,
                "sns_rate": self.sns_rate, "events_per_file": self.events_per_file}


# ----------------------------------------------------------------------------- truth


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
    ``NormalizeContext(cmc_category_field="apiData")`` (``--cmc-category-field apiData``).
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
        self._day0 = datetime(config.date.year, config.date.month, config.date.day,
                              tzinfo=timezone.utc)
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

    def _add_recipient(self, msg: int, provider: int, dom: int, cats: tuple[int, ...],
                       sent_ms: int, evs: list[tuple[int, int, int]]) -> None:
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
                    acc = [a + b for a, b in zip(acc, row)]
            out[name] = dict(zip(METRICS, acc))
        return out

    @property
    def by_provider(self) -> dict[str, dict[str, dict[str, int]]]:
        out: dict[str, dict[str, dict[str, int]]] = {}
        for ci, name in enumerate(self.category_names):
            out[name] = {}
            for p in self.providers:
                row = self._total.get((ci, self._prov_index(p))) or [0] * len(METRICS)
                out[name][p] = dict(zip(METRICS, row))
        return out

    @property
    def totals(self) -> dict[str, dict[str, int]]:
        return {p: dict(zip(METRICS, self._total.get((-1, self._prov_index(p)))
                            or [0] * len(METRICS))) for p in self.providers}

    def daily(self) -> list[dict[str, Any]]:
        rows = []
        for (day, ci, pi), counts in sorted(self._daily.items()):
            if ci < 0:
                continue
            row = {"event_date": (self.date + timedelta(days=day)).isoformat(),
                   "category": self.category_names[ci], "provider": PROVIDERS[pi]}
            row.update(zip(METRICS, counts))
            rows.append(row)
        return rows

    def email(self, recipient_index: int) -> str:
        return recipient_address(recipient_index, DOMAIN_PROFILES[self._r_dom[recipient_index]].name)

    def _msg_categories(self, msg: int) -> tuple[str, ...]:
        return tuple(self.category_names[c] for c in self._msg_cats[3 * msg: 3 * msg + 3]
                     if c != _NO_CAT)

    def _ts(self, ms: int) -> datetime:
        return self._day0 + timedelta(milliseconds=ms)

    def recipients(self, category: str | None = None,
                   provider: str | None = None) -> Iterator[RecipientTruth]:
        """Every (message, recipient) in generation (send time) order, optionally filtered."""
        ci = self._category_index(category) if category is not None else None
        pi = self._prov_index(provider) if provider is not None else None
        cats = self._msg_cats
        for r in range(len(self._r_msg)):
            m = self._r_msg[r]
            if ci is not None and ci not in cats[3 * m: 3 * m + 3]:
                continue
            p = self._r_provider[r]
            if pi is not None and p != pi:
                continue
            settled = self._r_settled[r] - 1
            yield RecipientTruth(
                provider=PROVIDERS[p], message_id=self._message_id(p, m), email=self.email(r),
                categories=self._msg_categories(m), status=_STATUS_CODES[self._r_status[r]],
                bounce_class=CLASS_NAMES[self._r_class[r]], sent_at=self._ts(self._r_sent[r]),
                settled_at=self._ts(settled) if settled >= 0 else None)

    def recipients_for(self, category: str, provider: str | None = None) -> list[str]:
        """The plain addresses a category's mail went to (each once: addresses are unique
        per (message, recipient)), e.g. ``user00042@gmail.com``."""
        return [r.email for r in self.recipients(category, provider)]

    def status_counts(self, category: str | None = None,
                      provider: str | None = None) -> dict[str, int]:
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
            raise KeyError(f"unknown category {category!r}; this archive has "
                           f"{', '.join(self.category_names)}") from None

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
        return {"provider": r.provider, "message_id": r.message_id, "email": r.email,
                "categories": list(r.categories), "status": r.status,
                "bounce_class": r.bounce_class, "sent_at": _rfc3339(r.sent_at),
                "settled_at": _rfc3339(r.settled_at) if r.settled_at else None}

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


# ----------------------------------------------------------------------------- summary


@dataclass
class SynthSummary:
    out: Path
    date: date
    seed: int
    messages: int = 0
    recipients: int = 0
    files: int = 0
    bytes_written: int = 0
    files_by_provider: dict[str, int] = field(default_factory=dict)
    #: lines written (webhook posts / records / bodies), duplicates and corrupt included
    records_by_provider: dict[str, int] = field(default_factory=dict)
    #: canonical events of the model (unique), per provider and per provider + type
    events_by_provider: dict[str, int] = field(default_factory=dict)
    events_by_type: dict[str, dict[str, int]] = field(default_factory=dict)
    #: events in the files, retried / duplicated copies included (corrupt records not)
    events_written: int = 0
    corrupt_records: int = 0
    corrupt_by_provider: dict[str, int] = field(default_factory=dict)
    retried_posts: int = 0  # SendGrid posts written again
    duplicated_records: int = 0  # SES records written twice
    duplicate_events: int = 0  # events inside retried posts / duplicated records
    late_events: int = 0  # events of date D sent to D+1's hour directories on purpose
    elapsed_s: float = 0.0
    truth: GroundTruth | None = None

    @property
    def events(self) -> int:
        return sum(self.events_by_provider.values())

    @property
    def events_per_s(self) -> float:
        return self.events_written / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "date": self.date.isoformat(), "seed": self.seed,
                "messages": self.messages, "recipients": self.recipients, "files": self.files,
                "bytes_written": self.bytes_written, "files_by_provider": self.files_by_provider,
                "records_by_provider": self.records_by_provider, "events": self.events,
                "events_by_provider": self.events_by_provider,
                "events_by_type": self.events_by_type, "events_written": self.events_written,
                "corrupt_records": self.corrupt_records,
                "corrupt_by_provider": self.corrupt_by_provider,
                "retried_posts": self.retried_posts,
                "duplicated_records": self.duplicated_records,
                "duplicate_events": self.duplicate_events, "late_events": self.late_events,
                "elapsed_s": round(self.elapsed_s, 3),
                "events_per_s": round(self.events_per_s)}


# ----------------------------------------------------------------------------- ids


_MASK = (1 << 64) - 1
_b64 = binascii.b2a_base64


def _mix(x: int) -> int:
    """splitmix64: a bijective scramble of a 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _seed_key(seed: int, day: date, salt: str) -> int:
    h = random.Random(f"mailpulse-synth/{seed}/{day.isoformat()}/{salt}")
    return h.getrandbits(64)


class _Ids:
    """Deterministic provider ids, recomputable from (provider, message index)."""

    def __init__(self, seed: int, day: date):
        self._k = [_seed_key(seed, day, p) for p in PROVIDERS]
        self._ke = _seed_key(seed, day, "events")
        self._kc = _seed_key(seed, day, "cmc-uuid")

    def message_id(self, provider: int, i: int) -> str:
        x = _mix(self._k[provider] ^ i)
        if provider == 0:  # SendGrid X-Message-Id: 22 characters of URL-safe base64
            y = _mix(x ^ 0x5DEECE66D)
            return base64.urlsafe_b64encode(struct.pack("<QQ", x, y))[:22].decode()
        if provider == 1:  # SES: 0100 + hex time + uuid-like + -000000
            y = _mix(x ^ 0xB5AD4ECEDA1CE2A9)
            return (f"0100{(x >> 16) & 0xFFFFFFFFFFFF:012x}-{y >> 32:08x}-{(y >> 16) & 0xFFFF:04x}"
                    f"-{y & 0xFFFF:04x}-{(x & 0xFFFF):04x}-{_mix(y) & 0xFFFFFFFFFFFF:012x}-000000")
        y = _mix(x ^ self._kc)  # CMC: a uuid at the sending domain
        return (f"{x >> 32:08x}-{(x >> 16) & 0xFFFF:04x}-{x & 0xFFFF:04x}-{y >> 48:04x}-"
                f"{y & 0xFFFFFFFFFFFF:012x}@mail.example.com")

    def event_id(self, n: int) -> bytes:
        """A unique 22-character id per event number (two bijections of ``n``)."""
        return _b64(struct.pack("<QQ", (n * 0x9E3779B97F4A7C15 + self._ke) & _MASK,
                                ((n ^ self._ke) * 0xBF58476D1CE4E5B9) & _MASK), newline=False)[:22]


# ----------------------------------------------------------------------------- output


class _Buckets:
    """Encoded events per (provider, arrival slot); far-future slots spill to disk once
    the buffer passes a byte budget.

    An entry is ``(arrival ms, sequence, kind, events, payload)``: sorting sorts by
    arrival, ties by generation order (sequences are unique).
    """

    OVERHEAD = 120  # bytes a buffered entry costs beyond its payload

    def __init__(self, spill_bytes: int):
        self.mem: dict[tuple[int, int], list[tuple]] = {}
        self.mem_bytes = 0
        self.spill_bytes = spill_bytes
        self.spill_at = spill_bytes
        #: slots before this one are about to be written: they stay in memory
        self.keep_below = 0
        self.spilled: dict[tuple[int, int], str] = {}
        #: (slot, provider) of every bucket held (in memory or spilled), a heap
        self.heap: list[tuple[int, int]] = []
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.seq = 0

    def put(self, provider: int, arrival_ms: int, kind: bytes, count: int, payload: bytes) -> None:
        self.seq += 1
        key = (provider, arrival_ms // SLOT_MS)
        lst = self.mem.get(key)
        if lst is None:
            lst = self.mem[key] = []
            if key not in self.spilled:
                heappush(self.heap, (key[1], provider))
        lst.append((arrival_ms, self.seq, kind, count, payload))
        self.mem_bytes += len(payload) + self.OVERHEAD
        if self.mem_bytes > self.spill_at:
            self.spill()

    def spill(self) -> None:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mailpulse-synth-")
        kept: dict[tuple[int, int], list[tuple]] = {}
        kept_bytes = 0
        for key, lst in self.mem.items():
            if not lst:
                continue
            if key[1] < self.keep_below:
                kept[key] = lst
                kept_bytes += sum(len(e[4]) + self.OVERHEAD for e in lst)
                continue
            path = self.spilled.get(key)
            if path is None:
                path = self.spilled[key] = os.path.join(self._tmp.name, f"{key[0]}-{key[1]}")
            with open(path, "ab") as f:  # payloads are compact JSON: no newlines inside
                f.write(b"".join([b"%d %d %s%d %s\n" % e for e in lst]))
        self.mem = kept
        self.mem_bytes = kept_bytes
        self.spill_at = kept_bytes + self.spill_bytes

    def pop_before(self, slot: int) -> tuple[int, int] | None:
        """The earliest (provider, slot) before ``slot``, in (slot, provider) order."""
        if self.heap and self.heap[0][0] < slot:
            sl, provider = heappop(self.heap)
            return provider, sl
        return None

    def take(self, key: tuple[int, int]) -> list[tuple]:
        entries: list[tuple] = []
        path = self.spilled.pop(key, None)
        if path is not None:
            with open(path, "rb") as f:
                for line in f.read().split(b"\n")[:-1]:
                    arr, seq, kn, payload = line.split(b" ", 3)
                    entries.append((int(arr), int(seq), kn[:1], int(kn[1:]), payload))
            os.remove(path)
        lst = self.mem.pop(key, None)
        if lst:
            self.mem_bytes -= sum(len(e[4]) + self.OVERHEAD for e in lst)
            entries.extend(lst)
        entries.sort()
        return entries

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


_SG_KIND, _SG_POST = b"e", b"R"
_SES_KIND = b"r"
_CMC_KIND = {b"d": b"deliveries", b"b": b"bounces", b"k": b"blocks"}


# ----------------------------------------------------------------------------- generator


class _Generator:
    def __init__(self, cfg: SynthConfig):
        self.cfg = cfg
        self.rng = random.Random(f"mailpulse-synth/{cfg.seed}/{cfg.date.isoformat()}")
        self.r = self.rng.random
        self.ids = _Ids(cfg.seed, cfg.date)
        self.cats = cfg.category_profiles()
        self.cat_names = [c.name for c in self.cats]
        self.cat_cum = _cumulative([c.weight for c in self.cats])
        self.dom_cum = _cumulative([d.weight for d in DOMAIN_PROFILES])
        self.prov = [PROVIDERS.index(p) for p in cfg.providers]
        self.prov_cum = _cumulative([PROVIDER_SHARE[p] for p in cfg.providers])
        self.day0 = datetime(cfg.date.year, cfg.date.month, cfg.date.day, tzinfo=timezone.utc)
        self.epoch0 = int(self.day0.timestamp())
        self.dstr = cfg.date.strftime("%Y%m%d")
        self._dates = [(cfg.date + timedelta(days=k)).isoformat() for k in range(0, 16)]
        self.buckets = _Buckets(cfg.spill_bytes)
        self.truth = GroundTruth(cfg, self.ids.message_id)
        self.summary = SynthSummary(out=Path(cfg.out), date=cfg.date, seed=cfg.seed)
        self.ev_counter = 0
        self.next_recipient = 0
        self.late = 0
        s = self.summary
        for p in cfg.providers:
            s.files_by_provider[p] = 0
            s.records_by_provider[p] = 0
            s.corrupt_by_provider[p] = 0
        self._pool: ThreadPoolExecutor | None = None
        #: provider -> the file being filled: [hour, part number, lines, events]
        self._parts: dict[int, list] = {}
        self._writes: deque = deque()
        self._late_rate = cfg.late_rate
        self._sns_rate = cfg.sns_rate

    # -- time formats -----------------------------------------------------------

    def iso(self, ms: int) -> str:
        s, frac = divmod(ms, 1000)
        d, s = divmod(s, 86400)
        h, s = divmod(s, 3600)
        m, s = divmod(s, 60)
        return f"{self._dates[d]}T{h:02d}:{m:02d}:{s:02d}.{frac:03d}Z"

    def jst(self, ms: int) -> str:
        s = ms // 1000 + JST_OFFSET_S
        d, s = divmod(s, 86400)
        h, s = divmod(s, 3600)
        m, s = divmod(s, 60)
        return f"{self._dates[d]} {h:02d}:{m:02d}:{s:02d}"

    # -- driver -----------------------------------------------------------------

    def run(self) -> SynthSummary:
        cfg, rng = self.cfg, self.rng
        start = time.perf_counter()
        total_w = sum(DIURNAL)
        counts = [int(cfg.messages * w / total_w) for w in DIURNAL]
        # hand out the remainder to the busiest hours, deterministically
        order = sorted(range(24), key=lambda h: (-DIURNAL[h], h))
        for k in range(cfg.messages - sum(counts)):
            counts[order[k % 24]] += 1
        msg = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailpulse-synth-gzip")
        try:
            cursor = 0
            for hour in range(24):
                r = self.r
                offsets = sorted([r() for _ in range(counts[hour])])
                base = hour * HOUR_MS
                for off in offsets:
                    send_ms = base + int(off * HOUR_MS)
                    if send_ms // SLOT_MS > cursor:
                        # every event is at or after its send time: earlier slots are complete
                        cursor = send_ms // SLOT_MS
                        self._flush_before(cursor)
                    self._message(msg, send_ms)
                    msg += 1
            self._flush_before(1 << 40)
            for pi in list(self._parts):
                self._close_part(pi)
            while self._writes:
                self._collect(self._writes.popleft())
        finally:
            self._pool.shutdown(wait=True)
            self.buckets.close()
        self.truth._finish()
        s = self.summary
        s.elapsed_s = time.perf_counter() - start
        s.messages = self.truth.messages
        s.recipients = self.truth.recipient_count
        s.late_events = self.late
        type_counts = self.truth.event_counts()
        for pi in self.prov:
            p = PROVIDERS[pi]
            s.events_by_type[p] = {TYPE_NAMES[t]: n for t, n in enumerate(type_counts[pi]) if n}
            s.events_by_provider[p] = sum(type_counts[pi])
        s.truth = self.truth
        return s

    # -- the lifecycle model ------------------------------------------------------

    def _message(self, i: int, send_ms: int) -> None:
        r = self.r
        u = r()
        pi = self.prov[_pick(self.prov_cum, u)]
        c0 = _pick(self.cat_cum, r())
        ncat = len(self.cats)
        if pi != 2 and ncat > 1:  # CMC's apiData holds one category; others up to 3
            u = r()
            extra = 2 if u < 0.08 else 1 if u < 0.30 else 0
            cl = [c0]
            for _ in range(min(extra, ncat - 1)):
                c = int(r() * ncat)
                while c in cl:
                    c = int(r() * ncat)
                cl.append(c)
            cats = tuple(cl)
        else:
            cats = (c0,)
        if pi == 0:
            n = 2 if r() < 0.05 else 1
        elif pi == 1:
            u = r()
            n = 3 if u < 0.05 else 2 if u < 0.17 else 1
        else:
            n = 1
        prof = self.cats[c0]
        rcpts = []
        for _ in range(n):
            ri = self.next_recipient
            self.next_recipient += 1
            di = _pick(self.dom_cum, r())
            rcpts.append((ri, di, self._plan(pi, prof, DOMAIN_PROFILES[di], send_ms, n > 1)))
        self.truth._add_message(pi, cats)
        if pi == 0:
            self._sendgrid(i, send_ms, cats, rcpts)
        elif pi == 1:
            self._ses(i, send_ms, cats, rcpts)
        else:
            self._cmc(i, send_ms, cats, rcpts)

    def _plan(self, pi: int, cat: CategoryProfile, dom: DomainProfile, send_ms: int,
              multi: bool) -> tuple:
        """(outcome, class, start, deferrals, final, opens, clicks, spam, unsub, variant).

        Times are ms after 00:00 UTC of the date, whole seconds for SendGrid and CMC."""
        cfg, r = self.cfg, self.r
        q = 1 if pi == 1 else 1000  # SES has milliseconds; SendGrid and CMC whole seconds
        if pi == 1:
            start = send_ms
        else:
            start = send_ms + 100 + int(r() * 2400)
            start -= start % q
        variant = r()
        if r() < cfg.drop_rate * cat.drop:
            if pi == 1 and multi:
                # SES rejects a whole mail; one suppressed address of several bounces
                # (Permanent / OnAccountSuppressionList) instead.
                return (BOUNCE, HARD, start, (), start + 80, (), (), None, None, -1.0)
            t = start if pi == 1 else start + int(r() * 3) * 1000
            return (DROPPED, 0, start, (), t, (), (), None, None, variant)
        b = cfg.bounce_rate * cat.bounce
        ph, ps, pb = b * 0.55 * dom.hard, b * 0.15 * dom.soft, b * 0.30 * dom.block
        tot = ph + ps + pb
        if tot > 0.9:
            f = 0.9 / tot
            ph, ps, pb, tot = ph * f, ps * f, pb * f, 0.9
        u = r()
        if u >= tot:
            outcome, cls = DELIVERED, 0
        elif u < ph:
            outcome, cls = BOUNCE, HARD
        elif u < ph + ps:
            outcome, cls = BOUNCE, SOFT
        else:
            outcome, cls = BOUNCE, BLOCK
        forced_long = False
        if cls == SOFT:
            if pi == 0:  # SendGrid: soft failures defer until they expire as a bounce
                cls, forced_long = HARD, True
            elif r() < 0.5:  # SES / CMC: half give up after retrying
                forced_long = True
        elif cls == BLOCK and pi == 1:  # SES: content rejected is a Transient bounce
            cls = SOFT
        defers: list[int] = []
        if forced_long or r() < cfg.defer_rate * dom.defer:
            if forced_long or r() < dom.long:
                # retried for hours, up to the 72-hour limit
                span = (DEFER_HORIZON_MS - 1_800_000 if forced_long
                        else 6 * HOUR_MS + int(r() * 64 * HOUR_MS))
                k = 3 + int(r() * 6)
                first = 60_000 + int(r() * 840_000)
                for j in range(k):
                    x = start + first + int((span - first) * (j / k) ** 2)
                    defers.append(x - x % q)
                t = start + span + int(r() * 1_200_000)
            else:
                k = 1 + (r() < 0.4) + (r() < 0.15)
                d = start + 30_000 + int(r() * 570_000)
                gap = 900_000
                for _ in range(k):
                    defers.append(d - d % q)
                    d += gap + int(r() * 120_000)
                    gap *= 2
                t = d
        else:
            t = start + 800 + int(r() * (19_000 if outcome == DELIVERED else 8_000))
        final = t - t % q
        last = defers[-1] if defers else start
        if final <= last:
            final = last + q
        if outcome != DELIVERED or pi == 2 or multi:
            return (outcome, cls, start, defers, final, (), (), None, None, variant)
        opens: list[int] = []
        clicks: list[int] = []
        spam = unsub = None
        if r() < cat.open:
            if r() < 0.03:  # opened "before" delivered: out of order, as SendGrid reports
                first = max(start + q, final - (1 + int(r() * 20)) * 1000)
            else:
                first = final + min(int(self.rng.lognormvariate(14.9, 1.3)), 36 * HOUR_MS)
            first -= first % q
            opens.append(first)
            t = first
            while r() < 0.45 and len(opens) < 6:
                t += int(self.rng.lognormvariate(15.5, 1.2)) + q
                opens.append(t - t % q)
            if r() < cat.click:
                t = first + 3_000 + int(r() * 600_000)
                clicks.append(t - t % q)
                if r() < 0.3:
                    t += 2_000 + int(r() * 300_000)
                    clicks.append(t - t % q)
            if r() < cat.unsub:
                t = first + 10_000 + int(r() * 300_000)
                unsub = t - t % q
        if r() < cat.spam:
            t = (opens[0] if opens else final) + 30_000 + int(r() * 4 * HOUR_MS)
            spam = t - t % q
        return (outcome, cls, start, defers, final, opens, clicks, spam, unsub, variant)

    # -- shared -------------------------------------------------------------------

    def _arrive(self, pi: int, ts: int, lo: int, span: int, kind: bytes, n: int,
                payload: bytes) -> None:
        """File a record about time ``ts`` under its arrival hour; late ones go to D+1.

        (The hot path: this is :meth:`_Buckets.put` inlined.)"""
        r = self.r
        if ts < DAY_MS and self._late_rate and r() < self._late_rate:
            self.late += n
            arr = DAY_MS + int(r() * 6 * HOUR_MS)
        else:
            arr = ts + lo + int(r() * span)
        b = self.buckets
        b.seq += 1
        key = (pi, arr // SLOT_MS)
        lst = b.mem.get(key)
        if lst is None:
            lst = b.mem[key] = []
            if key not in b.spilled:
                heappush(b.heap, (key[1], pi))
        lst.append((arr, b.seq, kind, n, payload))
        b.mem_bytes += len(payload) + 120
        if b.mem_bytes > b.spill_at:
            b.spill()

    # -- SendGrid -----------------------------------------------------------------

    def _sendgrid(self, i: int, send_ms: int, cats: tuple[int, ...], rcpts: list) -> None:
        r = self.r
        mid = self.ids.message_id(0, i)
        names = [self.cat_names[c] for c in cats]
        category: Any = names[0] if (len(names) == 1 and r() < 0.5) else names
        smtp_id = f"<{mid}@ismtpd0{(i % 97) + 1:03d}p1mdw1.sendgrid.net>"
        prof = self.cats[cats[0]]
        epoch0 = self.epoch0
        event_id = self.ids.event_id
        arrive = self._arrive
        for pos, (ri, di, plan) in enumerate(rcpts):
            email = recipient_address(ri, DOMAIN_PROFILES[di].name)
            tail = orjson.dumps({
                "email": email, "smtp-id": smtp_id, "category": category,
                "sg_message_id": f"{mid}.filterdrecv-{(ri * 7919) % 100000:05d}-{i % 16:x}-{pos}.0",
                "mp_campaign": f"{names[0]}-{self.dstr}"})[1:]
            outcome, cls, start, defers, final, opens, clicks, spam, unsub, variant = plan
            evs: list[tuple[int, int, int]] = []

            def emit(ts: int, t: int, name: bytes, extra: bytes = b"", c: int = 0) -> None:
                self.ev_counter += 1
                arrive(0, ts, 1_000, 89_000, _SG_KIND, 1,
                       b'{"timestamp":%d,"event":"%s","sg_event_id":"%s",%s%s'
                       % (epoch0 + ts // 1000, name, event_id(self.ev_counter), extra, tail))
                evs.append((ts, t, c))

            if outcome == DROPPED:
                emit(final, DROPPED, b"dropped",
                     _SG_DROPPED[int(variant * len(_SG_DROPPED))])
            else:
                emit(start, PROCESSED, b"processed", b'"send_at":0,')
                for a, ts in enumerate(defers, 1):
                    emit(ts, DEFERRED, b"deferred",
                         _SG_DEFERRED[(ri + a) % 3] + b'"attempt":"%d",' % a)
                if outcome == DELIVERED:
                    emit(final, DELIVERED, b"delivered", _SG_DELIVERED)
                elif cls == BLOCK:
                    emit(final, BOUNCE, b"bounce", _SG_BLOCKED, BLOCK)
                elif defers:
                    emit(final, BOUNCE, b"bounce", _SG_EXPIRED, HARD)
                elif DOMAIN_PROFILES[di].name == "legacy-isp.example":
                    emit(final, BOUNCE, b"bounce", _SG_NO_HOST, HARD)
                else:
                    emit(final, BOUNCE, b"bounce", _SG_NO_USER, HARD)
                if opens:
                    ua = _UA_JSON[ri % len(_UA_JSON)]
                    for ts in opens:
                        emit(ts, OPEN, b"open", b'"useragent":%s,"ip":"203.0.113.7",'
                             b'"sg_machine_open":false,' % ua)
                    for k, ts in enumerate(clicks):
                        emit(ts, CLICK, b"click", b'"url":"%s","url_offset":{"index":%d,'
                             b'"type":"html"},"useragent":%s,"ip":"203.0.113.7",'
                             % (_url(prof.name, ri + k).encode(), k, ua))
                if spam is not None:
                    emit(spam, SPAMREPORT, b"spamreport")
                if unsub is not None:
                    emit(unsub, UNSUBSCRIBE, b"unsubscribe")
            self.truth._add_recipient(i, 0, di, cats, send_ms, evs)

    # -- SES ----------------------------------------------------------------------

    def _ses(self, i: int, send_ms: int, cats: tuple[int, ...], rcpts: list) -> None:
        r = self.r
        mid = self.ids.message_id(1, i)
        emails = [recipient_address(ri, DOMAIN_PROFILES[di].name) for ri, di, _ in rcpts]
        names = [self.cat_names[c] for c in cats]
        prof = self.cats[cats[0]]
        iso = self.iso
        mail = orjson.dumps({
            "timestamp": iso(send_ms), "source": "news@mail.example.com",
            "sourceArn": "arn:aws:ses:ap-northeast-1:123456789012:identity/mail.example.com",
            "sendingAccountId": "123456789012", "messageId": mid, "destination": emails,
            "headersTruncated": False,
            "tags": {"ses:configuration-set": ["mailpulse"], "category": names},
        })
        sns_rate = self._sns_rate
        arrive = self._arrive

        def put(ts: int, word: bytes, key: bytes, payload: bytes, n_events: int) -> None:
            rec = b'{"eventType":"%s","mail":%s,"%s":%s}' % (word, mail, key, payload)
            if sns_rate and r() < sns_rate:
                self.ev_counter += 1
                rec = orjson.dumps({
                    "Type": "Notification",
                    "MessageId": _uuid(self.ids.event_id(self.ev_counter)),
                    "TopicArn": "arn:aws:sns:ap-northeast-1:123456789012:ses-events",
                    "Subject": "Amazon SES Email Event Notification",
                    "Message": rec.decode(), "Timestamp": iso(ts), "SignatureVersion": "1",
                    "Signature": "EXAMPLEpH+" + mid[4:20],
                    "SigningCertURL": "https://sns.ap-northeast-1.amazonaws.com/"
                                      "SimpleNotificationService-example.pem",
                    "UnsubscribeURL": "https://sns.ap-northeast-1.amazonaws.com/?Action=Unsubscribe"})
            arrive(1, ts, 60_000, 240_000, _SES_KIND, n_events, rec)

        # Send (and a whole-mail Reject / Rendering Failure): about every recipient at once.
        per: list[list[tuple[int, int, int]]] = [[(send_ms, PROCESSED, 0)] for _ in rcpts]
        put(send_ms, b"Send", b"send", b"{}", len(rcpts))
        if rcpts[0][2][0] == DROPPED:  # single-recipient mails only (see _plan)
            if rcpts[0][2][9] < 0.8:
                put(send_ms, b"Reject", b"reject", b'{"reason":"Bad content"}', 1)
            else:
                put(send_ms, b"Rendering Failure", b"failure", orjson.dumps({
                    "templateName": f"{prof.name}-v2",
                    "errorMessage": "Attribute 'firstName' is not present in the rendering data."}), 1)
            per[0].append((send_ms, DROPPED, 0))
        for k, (ri, di, plan) in enumerate(rcpts):
            outcome, cls, start, defers, final, opens, clicks, spam, unsub, variant = plan
            evs = per[k]
            if outcome == DROPPED:
                self.truth._add_recipient(i, 1, di, cats, send_ms, evs)
                continue
            email = orjson.dumps(emails[k])
            for a, ts in enumerate(defers, 1):
                put(ts, b"DeliveryDelay", b"deliveryDelay",
                    b'{"timestamp":"%s","delayType":"%s","expirationTime":"%s","delayedRecipients":'
                    b'[{"emailAddress":%s,"status":"4.4.1","diagnosticCode":"smtp; 421 4.4.1 '
                    b'Connection timed out"}],"reportingMTA":"a27-30.smtp-out.ap-northeast-1.'
                    b'amazonses.com"}' % (iso(ts).encode(), _SES_DELAY[(ri + a) % 3],
                                          iso(send_ms + DEFER_HORIZON_MS).encode(), email), 1)
                evs.append((ts, DEFERRED, 0))
            if outcome == DELIVERED:
                put(final, b"Delivery", b"delivery",
                    b'{"timestamp":"%s","processingTimeMillis":%d,"recipients":[%s],'
                    b'"smtpResponse":"250 2.0.0 OK  1700000000 gsmtp","reportingMTA":'
                    b'"a27-30.smtp-out.ap-northeast-1.amazonses.com"}'
                    % (iso(final).encode(), final - send_ms, email), 1)
                evs.append((final, DELIVERED, 0))
            else:
                if cls == HARD:
                    bounce = _SES_SUPPRESSED if variant < 0 else _SES_NO_USER
                elif defers:
                    bounce = _SES_EXPIRED
                elif DOMAIN_PROFILES[di].block > DOMAIN_PROFILES[di].soft:
                    bounce = _SES_REJECTED
                else:
                    bounce = _SES_FULL
                put(final, b"Bounce", b"bounce",
                    b'{"bounceType":"%s","bounceSubType":"%s","bouncedRecipients":[{"emailAddress":'
                    b'%s,"action":"failed","status":"%s","diagnosticCode":%s}],"timestamp":"%s",'
                    b'"feedbackId":"0100%012x-%s-000000","reportingMTA":"dns; a27-30.smtp-out.'
                    b'ap-northeast-1.amazonses.com"}'
                    % (bounce[0], bounce[1], email, bounce[2], bounce[3], iso(final).encode(),
                       final, mid[17:25].encode()), 1)
                evs.append((final, BOUNCE, cls))
            if opens:
                ua = _UA_JSON[ri % len(_UA_JSON)]
                for ts in opens:
                    put(ts, b"Open", b"open", b'{"ipAddress":"203.0.113.7","timestamp":"%s",'
                        b'"userAgent":%s}' % (iso(ts).encode(), ua), 1)
                    evs.append((ts, OPEN, 0))
                for n, ts in enumerate(clicks):
                    put(ts, b"Click", b"click", b'{"ipAddress":"203.0.113.7","timestamp":"%s",'
                        b'"userAgent":%s,"link":"%s","linkTags":{"campaign":["%s"]}}'
                        % (iso(ts).encode(), ua, _url(prof.name, ri + n).encode(),
                           prof.name.encode()), 1)
                    evs.append((ts, CLICK, 0))
            if spam is not None:
                put(spam, b"Complaint", b"complaint",
                    b'{"feedbackId":"0100%012x-%s-000000","complaintSubType":null,'
                    b'"complainedRecipients":[{"emailAddress":%s}],"timestamp":"%s",'
                    b'"userAgent":"Yahoo!-Mail-Feedback/2.0","complaintFeedbackType":"abuse",'
                    b'"arrivalDate":"%s"}' % (spam, mid[17:25].encode(), email,
                                              iso(spam).encode(), iso(spam).encode()), 1)
                evs.append((spam, SPAMREPORT, 0))
            if unsub is not None:
                topic = prof.name.encode()
                put(unsub, b"Subscription", b"subscription",
                    b'{"contactList":"customers","timestamp":"%s","source":"UnsubscribeHeader",'
                    b'"newTopicPreferences":{"unsubscribeAll":true,"topicSubscriptionStatus":'
                    b'[{"topicName":"%s","subscriptionStatus":"OptOut"}]},"oldTopicPreferences":'
                    b'{"unsubscribeAll":false,"topicSubscriptionStatus":[{"topicName":"%s",'
                    b'"subscriptionStatus":"OptIn"}]}}' % (iso(unsub).encode(), topic, topic), 1)
                evs.append((unsub, UNSUBSCRIBE, 0))
            self.truth._add_recipient(i, 1, di, cats, send_ms, evs)

    # -- Customers Mail Cloud -------------------------------------------------------

    def _cmc(self, i: int, send_ms: int, cats: tuple[int, ...], rcpts: list) -> None:
        mid = self.ids.message_id(2, i)
        prof = self.cats[cats[0]]
        escaped = self.r() < 0.2  # messageId sent as \u003C...\u003E
        jst = self.jst
        arrive = self._arrive
        for ri, di, plan in rcpts:
            email = recipient_address(ri, DOMAIN_PROFILES[di].name)
            outcome, cls, start, defers, final, opens, clicks, spam, unsub, variant = plan
            evs: list[tuple[int, int, int]] = []
            common = orjson.dumps({"returnPath": "info@return.pro.smtps.jp",
                                   "subject": prof.subject, "apiData": prof.name,
                                   "messageId": f"<{mid}>", "from": "info@mail.example.com",
                                   "to": email})[1:-1]
            if escaped:
                m = mid.encode()
                common = common.replace(b'"<' + m + b'>"', b'"\\u003C' + m + b'\\u003E"')

            def delivery(ts: int, status: bytes, reason: bytes, t: int, c: int = 0) -> None:
                arrive(2, ts, 0, 2_000, b"d", 1,
                       b'{"reason":"%s","sourceIp":"",%s,"created":"%s","senderIp":"%s",'
                       b'"status":"%s"}' % (reason, common, jst(ts).encode(),
                                            b"" if status == b"queued" else b"100.100.100.3",
                                            status))
                evs.append((ts, t, c))

            if outcome == DROPPED:
                arrive(2, final, 0, 2_000, b"k", 1,
                       b'{"reason":"blocked address",%s,"created":"%s","status":"10"}'
                       % (common, jst(final).encode()))
                evs.append((final, DROPPED, 0))
            else:
                delivery(start, b"queued", b"", PROCESSED)
                for ts in defers:
                    delivery(ts, b"deferred", b"421 4.7.0 Try again later, closing connection.",
                             DEFERRED)
                if outcome == DELIVERED:
                    delivery(final, b"succeeded", b"", DELIVERED)
                else:
                    if cls == HARD:
                        code, reason = (_CMC_NO_HOST if DOMAIN_PROFILES[di].name ==
                                        "legacy-isp.example" else _CMC_NO_USER)
                    elif cls == SOFT:
                        code, reason = _CMC_TIMEOUT if defers else _CMC_FULL
                    else:  # block: no SMTP code, so the failed delivery reads undetermined
                        code, reason = _CMC_POLICY
                    # Reported twice: deliveries/failed, then bounces a second later. Keep
                    # the pair within one UTC date.
                    ts = final
                    if (ts + 1000) // DAY_MS != ts // DAY_MS:
                        ts -= 1000
                    delivery(ts, b"failed", reason, BOUNCE, cls)
                    arrive(2, ts + 1000, 0, 2_000, b"b", 1,
                           b'{"reason":"%s",%s,"created":"%s","status":"%s"}'
                           % (reason, common, jst(ts + 1000).encode(), code))
                    evs.append((ts + 1000, BOUNCE, cls))
            self.truth._add_recipient(i, 2, di, cats, send_ms, evs)

    # -- writing files ------------------------------------------------------------

    def _flush_before(self, slot: int) -> None:
        b = self.buckets
        b.keep_below = slot + 2
        while True:  # a heap: retries filed meanwhile (always later) keep the order
            key = b.pop_before(slot)
            if key is None:
                return
            self._write_slot(key[0], key[1], b.take(key))

    def _write_slot(self, pi: int, slot: int, entries: list[tuple]) -> None:
        """Batch one slot's events into provider records and append them to the hour file."""
        cfg = self.cfg
        rng = random.Random(f"mailpulse-synth/{cfg.seed}/{cfg.date.isoformat()}/{pi}/{slot}")
        s = self.summary
        hour = slot // SLOTS_PER_HOUR
        if pi == 0:
            records = self._sendgrid_posts(hour, entries, rng)
        elif pi == 1:
            records = []
            for _arr, _seq, _kind, n, rec in entries:
                records.append((n, rec))
                if cfg.retry_rate and rng.random() < cfg.retry_rate:
                    records.append((n, rec))  # Firehose delivered it twice
                    s.duplicated_records += 1
                    s.duplicate_events += n
        else:
            records = self._cmc_bodies(entries)
        part = self._parts.get(pi)
        if part is not None and part[0] != hour:
            self._close_part(pi)
            part = None
        if part is None:
            part = self._parts[pi] = [hour, 0, [], 0]
        prov = PROVIDERS[pi]
        corrupt_rate = cfg.corrupt_rate
        for n, rec in records:
            if part[3] and part[3] + n > cfg.events_per_file:
                self._write_part(pi, part)
                part[1] += 1
                part[2], part[3] = [], 0
            part[2].append(rec)
            part[3] += n
            s.events_written += n
            if corrupt_rate and rng.random() < corrupt_rate:
                part[2].append(self._corrupt(pi, rec, rng))  # never a file's first line
                s.corrupt_records += 1
                s.corrupt_by_provider[prov] += 1

    def _close_part(self, pi: int) -> None:
        part = self._parts.pop(pi)
        if part[2]:
            self._write_part(pi, part)

    def _write_part(self, pi: int, part: list) -> None:
        hour, k, lines, _n = part
        s = self.summary
        prov = PROVIDERS[pi]
        hour_ts = self.day0 + timedelta(hours=hour)
        path = self.out_dir(prov, hour_ts) / f"synth-{self.dstr}-{hour_ts:%Y%m%d%H}-{k:04d}.json.gz"
        s.files += 1
        s.files_by_provider[prov] += 1
        s.records_by_provider[prov] += len(lines)
        # gzip in a second thread (zlib releases the GIL); a few files in flight at most
        self._writes.append(self._pool.submit(_write_gzip, path, b"\n".join(lines) + b"\n",
                                              self.cfg.compresslevel))
        while len(self._writes) > 4:
            self._collect(self._writes.popleft())

    def _collect(self, fut) -> None:
        self.summary.bytes_written += fut.result()

    def out_dir(self, provider: str, hour_ts: datetime) -> Path:
        return Path(self.cfg.out) / provider / f"{hour_ts:%Y}" / f"{hour_ts:%m}" / \
            f"{hour_ts:%d}" / f"{hour_ts:%H}"

    def _sendgrid_posts(self, h: int, entries: list[tuple], rng: random.Random) -> list:
        """Webhook posts from one slot's events (``h``: the slot's hour)."""
        cfg, s = self.cfg, self.summary
        out: list[tuple[int, bytes]] = []
        pending: list[tuple[int, int, bytes]] = []  # (posts to wait, n, post): same-file retries
        batch: list[bytes] = []
        size = _batch_size(rng)

        def close() -> None:
            nonlocal batch, size
            if not batch:
                return
            post = b"[" + b",".join(batch) + b"]"
            n = len(batch)
            batch, size = [], _batch_size(rng)
            emit(n, post)
            if cfg.retry_rate and rng.random() < cfg.retry_rate:
                s.retried_posts += 1
                s.duplicate_events += n
                if rng.random() < 0.5:
                    pending.append((rng.randint(1, 4), n, post))
                else:  # retried hours later: a later hour file
                    later = (h + rng.randint(1, RETRY_HORIZON_HOURS)) * HOUR_MS
                    self.buckets.put(0, later + rng.randint(0, HOUR_MS - 1), _SG_POST, n, post)

        def emit(n: int, post: bytes) -> None:
            out.append((n, post))
            if pending:
                still = []
                for wait, pn, pp in pending:
                    if wait <= 1:
                        out.append((pn, pp))
                    else:
                        still.append((wait - 1, pn, pp))
                pending[:] = still

        last_window = -1
        for arr, _seq, kind, n, payload in entries:
            if kind == _SG_POST:
                close()
                emit(n, payload)
                continue
            window = arr // 5000  # a batch holds events that arrive within ~5 s
            if batch and (len(batch) >= size or window != last_window):
                close()
            last_window = window
            batch.append(payload)
        close()
        for _, pn, pp in pending:
            out.append((pn, pp))
        return out

    def _cmc_bodies(self, entries: list[tuple]) -> list:
        out: list[tuple[int, bytes]] = []
        batch: list[bytes] = []
        cur_kind = b""
        cur_sec = -1

        def close() -> None:
            if batch:
                word = _CMC_KIND[cur_kind]
                out.append((len(batch), b'{"event_type":"' + word + b'","server_composition":"pro",'
                            b'"event":{"' + word + b'":[' + b",".join(batch) + b"]}}"))
                batch.clear()

        for arr, _seq, kind, _n, payload in entries:
            sec = arr // 1000  # CMC batches every second or 100 events
            if batch and (kind != cur_kind or sec != cur_sec or len(batch) >= 100):
                close()
            cur_kind, cur_sec = kind, sec
            batch.append(payload)
        close()
        return out

    def _corrupt(self, pi: int, rec: bytes, rng: random.Random) -> bytes:
        """One extra record that becomes exactly one dead letter."""
        u = rng.random()
        if u < 0.4 and len(rec) > 2:  # cut off mid-write
            return rec[: rng.randint(1, len(rec) - 1)]
        if u < 0.6:
            return _GARBAGE[rng.randrange(len(_GARBAGE))]
        self.ev_counter += 1
        ts = self.epoch0 + rng.randint(0, 86399)
        if pi == 0:
            return orjson.dumps([{"timestamp": ts, "event": "delivered",
                                  "sg_event_id": self.ids.event_id(self.ev_counter).decode(),
                                  "sg_message_id": "corrupt.filter0001.0", "category": "newsletter"}])
        if pi == 1:
            iso = self.iso((ts - self.epoch0) * 1000)
            return orjson.dumps({"eventType": "Delivery", "mail": {
                "timestamp": iso, "messageId": "corrupt-no-recipient", "destination": []},
                "delivery": {"timestamp": iso, "recipients": []}})
        return orjson.dumps({"event_type": "deliveries", "server_composition": "pro", "event": {
            "deliveries": [{"reason": "", "created": self.jst((ts - self.epoch0) * 1000),
                            "messageId": "<corrupt@mail.example.com>", "to": "",
                            "status": "succeeded"}]}})


def _write_gzip(path: Path, data: bytes, level: int) -> int:
    blob = gzip.compress(data, compresslevel=level, mtime=0)
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)
    return len(blob)


def _sg_extra(**fields: Any) -> bytes:
    """Constant SendGrid fields as ``"k":v,`` bytes to splice into an event."""
    return orjson.dumps(fields)[1:-1] + b","


_SG_DROPPED = tuple(_sg_extra(reason=r, status="5.0.0") for r in (
    "Bounced Address", "Unsubscribed Address", "Spam Reporting Address", "Invalid"))
_SG_DEFERRED = tuple(_sg_extra(response=r) for r in (
    "421 4.7.0 Temporary System Problem. Try again later.",
    "451 4.7.1 Greylisted, please try again in 5 minutes",
    "452 4.2.2 Mailbox full, try again later"))
_SG_DELIVERED = _sg_extra(
    ip="149.72.1.17", tls=1,
    response="250 2.0.0 OK  1700000000 d9443c01a7336-2a1b2c3d4e5f6si.123 - gsmtp")
_SG_BLOCKED = _sg_extra(
    type="blocked", status="5.7.1", bounce_classification="Reputation",
    reason="554 5.7.1 Service unavailable; Client host [149.72.1.17] blocked using zen.spamhaus.org")
_SG_EXPIRED = _sg_extra(
    type="bounce", status="4.4.7", bounce_classification="Technical",
    reason="421 4.4.7 Deferred for too long: message expired after 72 hours")
_SG_NO_HOST = _sg_extra(type="bounce", status="5.1.2", bounce_classification="Invalid Address",
                        reason="550 5.1.2 Host or domain name not found")
_SG_NO_USER = _sg_extra(
    type="bounce", status="5.1.1", bounce_classification="Invalid Address",
    reason="550 5.1.1 The email account that you tried to reach does not exist.")
_SES_DELAY = (b"TransientCommunicationFailure", b"MailboxFull", b"RecipientServerError")
# (bounceType, bounceSubType, status, diagnosticCode as JSON)
_SES_NO_USER = (b"Permanent", b"General", b"5.1.1", b'"smtp; 550 5.1.1 user unknown"')
_SES_SUPPRESSED = (b"Permanent", b"OnAccountSuppressionList", b"5.1.1",
                   b'"Amazon SES did not send the message to this address because it is on the '
                   b'suppression list for your account."')
_SES_EXPIRED = (b"Transient", b"General", b"4.4.7", b'"smtp; 421 4.4.7 message expired"')
_SES_REJECTED = (b"Transient", b"ContentRejected", b"5.7.1",
                 b'"smtp; 554 5.7.1 Message rejected by policy"')
_SES_FULL = (b"Transient", b"MailboxFull", b"4.2.2", b'"smtp; 452 4.2.2 Mailbox full"')
# CMC bounce (status code, reason): the failed delivery's reason classifies the same way
# as the code (5.x.x hard, 4.x.x soft) or has no SMTP code at all (undetermined).
_CMC_NO_HOST = (b"1", b"host unknown")
_CMC_NO_USER = (b"2", b"550 5.1.1 The email account that you tried to reach does not exist.")
_CMC_TIMEOUT = (b"3", b"retransmission timeout")
_CMC_FULL = (b"5", b"452 4.2.2 The email account that you tried to reach is over quota.")
_CMC_POLICY = (b"4", b"rejected by the receiver's policy")
_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
       "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0 Safari/537.36",
       "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)")
_UA_JSON = tuple(orjson.dumps(u) for u in _UA)
_GARBAGE = (b"<html><body><h1>502 Bad Gateway</h1></body></html>", b"ping",
            b"--boundary--", b'{"event": "delivered", "email": ')


def _batch_size(rng: random.Random) -> int:
    u = rng.random()
    return 1 if u < 0.1 else rng.randint(2, 20) if u < 0.7 else rng.randint(21, 100)


def _cumulative(weights: Sequence[float]) -> list[float]:
    total = float(sum(weights))
    acc, out = 0.0, []
    for w in weights:
        acc += w / total
        out.append(acc)
    out[-1] = 1.0
    return out


def _pick(cum: list[float], u: float) -> int:
    return bisect_right(cum, u)  # u < 1.0 == cum[-1], so always a valid index


def _url(category: str, n: int) -> str:
    return f"https://www.example.com/{category}/item/{n % 50}?utm_source=mail&utm_campaign={category}"


def _uuid(s: bytes) -> str:
    h = binascii.a2b_base64(s + b"==")[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


# ----------------------------------------------------------------------------- API


def existing_files(out: str | os.PathLike, day: date,
                   providers: Sequence[str] = PROVIDERS) -> list[Path]:
    """Files an earlier ``synth`` run for ``day`` wrote under ``out`` (any seed)."""
    out = Path(out)
    prefix = f"synth-{day:%Y%m%d}-"
    found: list[Path] = []
    for p in providers:
        for k in range(0, 8):
            d = day + timedelta(days=k)
            base = out / p / f"{d:%Y}" / f"{d:%m}" / f"{d:%d}"
            if not base.is_dir():
                continue
            for hour_dir in sorted(base.iterdir()):
                if hour_dir.is_dir():
                    found.extend(sorted(f for f in hour_dir.iterdir()
                                        if f.name.startswith(prefix) and _FILE_RE.match(f.name)))
    return found


class ArchiveExists(ValueError):
    """The output already holds a synth archive of that date."""


def generate(out: str | os.PathLike | None = None, date: date | str | None = None, *,
             config: SynthConfig | None = None, **options: Any) -> SynthSummary:
    """Write a synthetic archive and return its :class:`SynthSummary` (``.truth`` inside).

    ``generate("archive", "2026-11-23", messages=10_000, seed=7, corrupt_rate=0.01)``;
    options are :class:`SynthConfig` fields. Raises ValueError (with the fix) for bad
    options and :class:`ArchiveExists` when ``out`` already holds a synth archive of that
    date (pass ``overwrite=True`` to replace it; other files are never touched).
    """
    if config is None:
        if out is None or date is None:
            raise ValueError("generate() needs out and date (or config=SynthConfig(...))")
        config = SynthConfig(out=out, date=date, **options)
    cfg = config.validate()
    old = existing_files(cfg.out, cfg.date, cfg.providers)
    if old:
        if not cfg.overwrite:
            raise ArchiveExists(
                f"{cfg.out} already holds a synth archive for {cfg.date} ({len(old)} files); "
                f"use another --out directory or pass --overwrite to replace it")
        for f in old:
            f.unlink()
    return _Generator(cfg).run()
