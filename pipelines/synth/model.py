"""The vocabulary of the synthetic lifecycle model: providers, event types, metrics,
the time constants, and the category and recipient-domain profiles that set each one's health.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PROVIDERS = ("sendgrid", "ses", "cmc")

#: Share of messages per provider (renormalised over the providers chosen).
PROVIDER_SHARE = {"sendgrid": 0.5, "ses": 0.3, "cmc": 0.2}

# Canonical event types of the model (names as the normalizers produce them).
PROCESSED, DROPPED, DELIVERED, DEFERRED, BOUNCE, OPEN, CLICK, SPAMREPORT, UNSUBSCRIBE = range(9)
TYPE_NAMES = (
    "processed",
    "dropped",
    "delivered",
    "deferred",
    "bounce",
    "open",
    "click",
    "spamreport",
    "unsubscribe",
)
HARD, SOFT, BLOCK = 1, 2, 3
CLASS_NAMES = (None, "hard", "soft", "block")

#: Per category metrics (SendGrid category-stats names). Outcomes (requests ... deferred)
#: count distinct (message, recipient); ``*_events`` and engagement count events, and
#: ``unique_*`` distinct (message, recipient).
METRICS = (
    "requests",
    "processed",
    "delivered",
    "bounces",
    "bounces_hard",
    "bounces_soft",
    "bounces_block",
    "dropped",
    "deferred",
    "deferred_events",
    "opens",
    "unique_opens",
    "clicks",
    "unique_clicks",
    "spam_reports",
    "unsubscribes",
)


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
DIURNAL = tuple(
    1.0 + 3.0 * math.exp(-(((h - 9) / 3.0) ** 2)) + 2.0 * math.exp(-(((h - 20) / 2.5) ** 2))
    for h in range(24)
)
