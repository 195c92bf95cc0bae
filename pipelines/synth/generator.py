"""The generator: the lifecycle model driven by one seeded RNG, each provider's records
in its native format, batched per arrival slot into the hour files.
"""

from __future__ import annotations

import random
import time
from bisect import bisect_right
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from heapq import heappush
from pathlib import Path
from typing import Any, Sequence

import orjson

from .config import SynthConfig
from .formats import (
    _CMC_FULL,
    _CMC_NO_HOST,
    _CMC_NO_USER,
    _CMC_POLICY,
    _CMC_TIMEOUT,
    _GARBAGE,
    _SES_DELAY,
    _SES_EXPIRED,
    _SES_FULL,
    _SES_NO_USER,
    _SES_REJECTED,
    _SES_SUPPRESSED,
    _SG_BLOCKED,
    _SG_DEFERRED,
    _SG_DELIVERED,
    _SG_DROPPED,
    _SG_EXPIRED,
    _SG_NO_HOST,
    _SG_NO_USER,
    _UA_JSON,
    _url,
    _uuid,
)
from .ids import _Ids
from .model import (
    BLOCK,
    BOUNCE,
    CLICK,
    DAY_MS,
    DEFER_HORIZON_MS,
    DEFERRED,
    DELIVERED,
    DIURNAL,
    DOMAIN_PROFILES,
    DROPPED,
    HARD,
    HOUR_MS,
    JST_OFFSET_S,
    OPEN,
    PROCESSED,
    PROVIDER_SHARE,
    PROVIDERS,
    RETRY_HORIZON_HOURS,
    SLOT_MS,
    SLOTS_PER_HOUR,
    SOFT,
    SPAMREPORT,
    TYPE_NAMES,
    UNSUBSCRIBE,
    CategoryProfile,
    DomainProfile,
)
from .output import _CMC_KIND, _SES_KIND, _SG_KIND, _SG_POST, _Buckets, _write_gzip
from .summary import SynthSummary
from .truth import GroundTruth, recipient_address


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
        cfg = self.cfg
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

    def _plan(
        self, pi: int, cat: CategoryProfile, dom: DomainProfile, send_ms: int, multi: bool
    ) -> tuple:
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
                span = (
                    DEFER_HORIZON_MS - 1_800_000
                    if forced_long
                    else 6 * HOUR_MS + int(r() * 64 * HOUR_MS)
                )
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

    def _arrive(
        self, pi: int, ts: int, lo: int, span: int, kind: bytes, n: int, payload: bytes
    ) -> None:
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
            tail = orjson.dumps(
                {
                    "email": email,
                    "smtp-id": smtp_id,
                    "category": category,
                    "sg_message_id": f"{mid}.filterdrecv-{(ri * 7919) % 100000:05d}-{i % 16:x}-{pos}.0",
                    "mp_campaign": f"{names[0]}-{self.dstr}",
                }
            )[1:]
            outcome, cls, start, defers, final, opens, clicks, spam, unsub, variant = plan
            evs: list[tuple[int, int, int]] = []

            # (tail and evs bound per recipient: emit runs only within this iteration)
            def emit(
                ts: int,
                t: int,
                name: bytes,
                extra: bytes = b"",
                c: int = 0,
                *,
                tail: bytes = tail,
                evs: list = evs,
            ) -> None:
                self.ev_counter += 1
                arrive(
                    0,
                    ts,
                    1_000,
                    89_000,
                    _SG_KIND,
                    1,
                    b'{"timestamp":%d,"event":"%s","sg_event_id":"%s",%s%s'
                    % (epoch0 + ts // 1000, name, event_id(self.ev_counter), extra, tail),
                )
                evs.append((ts, t, c))

            if outcome == DROPPED:
                emit(final, DROPPED, b"dropped", _SG_DROPPED[int(variant * len(_SG_DROPPED))])
            else:
                emit(start, PROCESSED, b"processed", b'"send_at":0,')
                for a, ts in enumerate(defers, 1):
                    emit(
                        ts,
                        DEFERRED,
                        b"deferred",
                        _SG_DEFERRED[(ri + a) % 3] + b'"attempt":"%d",' % a,
                    )
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
                        emit(
                            ts,
                            OPEN,
                            b"open",
                            b'"useragent":%s,"ip":"203.0.113.7","sg_machine_open":false,' % ua,
                        )
                    for k, ts in enumerate(clicks):
                        emit(
                            ts,
                            CLICK,
                            b"click",
                            b'"url":"%s","url_offset":{"index":%d,'
                            b'"type":"html"},"useragent":%s,"ip":"203.0.113.7",'
                            % (_url(prof.name, ri + k).encode(), k, ua),
                        )
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
        mail = orjson.dumps(
            {
                "timestamp": iso(send_ms),
                "source": "news@mail.example.com",
                "sourceArn": "arn:aws:ses:ap-northeast-1:123456789012:identity/mail.example.com",
                "sendingAccountId": "123456789012",
                "messageId": mid,
                "destination": emails,
                "headersTruncated": False,
                "tags": {"ses:configuration-set": ["mailpulse"], "category": names},
            }
        )
        sns_rate = self._sns_rate
        arrive = self._arrive

        def put(ts: int, word: bytes, key: bytes, payload: bytes, n_events: int) -> None:
            rec = b'{"eventType":"%s","mail":%s,"%s":%s}' % (word, mail, key, payload)
            if sns_rate and r() < sns_rate:
                self.ev_counter += 1
                rec = orjson.dumps(
                    {
                        "Type": "Notification",
                        "MessageId": _uuid(self.ids.event_id(self.ev_counter)),
                        "TopicArn": "arn:aws:sns:ap-northeast-1:123456789012:ses-events",
                        "Subject": "Amazon SES Email Event Notification",
                        "Message": rec.decode(),
                        "Timestamp": iso(ts),
                        "SignatureVersion": "1",
                        "Signature": "EXAMPLEpH+" + mid[4:20],
                        "SigningCertURL": "https://sns.ap-northeast-1.amazonaws.com/"
                        "SimpleNotificationService-example.pem",
                        "UnsubscribeURL": "https://sns.ap-northeast-1.amazonaws.com/?Action=Unsubscribe",
                    }
                )
            arrive(1, ts, 60_000, 240_000, _SES_KIND, n_events, rec)

        # Send (and a whole-mail Reject / Rendering Failure): about every recipient at once.
        per: list[list[tuple[int, int, int]]] = [[(send_ms, PROCESSED, 0)] for _ in rcpts]
        put(send_ms, b"Send", b"send", b"{}", len(rcpts))
        if rcpts[0][2][0] == DROPPED:  # single-recipient mails only (see _plan)
            if rcpts[0][2][9] < 0.8:
                put(send_ms, b"Reject", b"reject", b'{"reason":"Bad content"}', 1)
            else:
                put(
                    send_ms,
                    b"Rendering Failure",
                    b"failure",
                    orjson.dumps(
                        {
                            "templateName": f"{prof.name}-v2",
                            "errorMessage": "Attribute 'firstName' is not present in the rendering data.",
                        }
                    ),
                    1,
                )
            per[0].append((send_ms, DROPPED, 0))
        for k, (ri, di, plan) in enumerate(rcpts):
            outcome, cls, start, defers, final, opens, clicks, spam, unsub, variant = plan
            evs = per[k]
            if outcome == DROPPED:
                self.truth._add_recipient(i, 1, di, cats, send_ms, evs)
                continue
            email = orjson.dumps(emails[k])
            for a, ts in enumerate(defers, 1):
                put(
                    ts,
                    b"DeliveryDelay",
                    b"deliveryDelay",
                    b'{"timestamp":"%s","delayType":"%s","expirationTime":"%s","delayedRecipients":'
                    b'[{"emailAddress":%s,"status":"4.4.1","diagnosticCode":"smtp; 421 4.4.1 '
                    b'Connection timed out"}],"reportingMTA":"a27-30.smtp-out.ap-northeast-1.'
                    b'amazonses.com"}'
                    % (
                        iso(ts).encode(),
                        _SES_DELAY[(ri + a) % 3],
                        iso(send_ms + DEFER_HORIZON_MS).encode(),
                        email,
                    ),
                    1,
                )
                evs.append((ts, DEFERRED, 0))
            if outcome == DELIVERED:
                put(
                    final,
                    b"Delivery",
                    b"delivery",
                    b'{"timestamp":"%s","processingTimeMillis":%d,"recipients":[%s],'
                    b'"smtpResponse":"250 2.0.0 OK  1700000000 gsmtp","reportingMTA":'
                    b'"a27-30.smtp-out.ap-northeast-1.amazonses.com"}'
                    % (iso(final).encode(), final - send_ms, email),
                    1,
                )
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
                put(
                    final,
                    b"Bounce",
                    b"bounce",
                    b'{"bounceType":"%s","bounceSubType":"%s","bouncedRecipients":[{"emailAddress":'
                    b'%s,"action":"failed","status":"%s","diagnosticCode":%s}],"timestamp":"%s",'
                    b'"feedbackId":"0100%012x-%s-000000","reportingMTA":"dns; a27-30.smtp-out.'
                    b'ap-northeast-1.amazonses.com"}'
                    % (
                        bounce[0],
                        bounce[1],
                        email,
                        bounce[2],
                        bounce[3],
                        iso(final).encode(),
                        final,
                        mid[17:25].encode(),
                    ),
                    1,
                )
                evs.append((final, BOUNCE, cls))
            if opens:
                ua = _UA_JSON[ri % len(_UA_JSON)]
                for ts in opens:
                    put(
                        ts,
                        b"Open",
                        b"open",
                        b'{"ipAddress":"203.0.113.7","timestamp":"%s",'
                        b'"userAgent":%s}' % (iso(ts).encode(), ua),
                        1,
                    )
                    evs.append((ts, OPEN, 0))
                for n, ts in enumerate(clicks):
                    put(
                        ts,
                        b"Click",
                        b"click",
                        b'{"ipAddress":"203.0.113.7","timestamp":"%s",'
                        b'"userAgent":%s,"link":"%s","linkTags":{"campaign":["%s"]}}'
                        % (
                            iso(ts).encode(),
                            ua,
                            _url(prof.name, ri + n).encode(),
                            prof.name.encode(),
                        ),
                        1,
                    )
                    evs.append((ts, CLICK, 0))
            if spam is not None:
                put(
                    spam,
                    b"Complaint",
                    b"complaint",
                    b'{"feedbackId":"0100%012x-%s-000000","complaintSubType":null,'
                    b'"complainedRecipients":[{"emailAddress":%s}],"timestamp":"%s",'
                    b'"userAgent":"Yahoo!-Mail-Feedback/2.0","complaintFeedbackType":"abuse",'
                    b'"arrivalDate":"%s"}'
                    % (spam, mid[17:25].encode(), email, iso(spam).encode(), iso(spam).encode()),
                    1,
                )
                evs.append((spam, SPAMREPORT, 0))
            if unsub is not None:
                topic = prof.name.encode()
                put(
                    unsub,
                    b"Subscription",
                    b"subscription",
                    b'{"contactList":"customers","timestamp":"%s","source":"UnsubscribeHeader",'
                    b'"newTopicPreferences":{"unsubscribeAll":true,"topicSubscriptionStatus":'
                    b'[{"topicName":"%s","subscriptionStatus":"OptOut"}]},"oldTopicPreferences":'
                    b'{"unsubscribeAll":false,"topicSubscriptionStatus":[{"topicName":"%s",'
                    b'"subscriptionStatus":"OptIn"}]}}' % (iso(unsub).encode(), topic, topic),
                    1,
                )
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
            common = orjson.dumps(
                {
                    "returnPath": "info@return.pro.smtps.jp",
                    "subject": prof.subject,
                    "apiData": prof.name,
                    "messageId": f"<{mid}>",
                    "from": "info@mail.example.com",
                    "to": email,
                }
            )[1:-1]
            if escaped:
                m = mid.encode()
                common = common.replace(b'"<' + m + b'>"', b'"\\u003C' + m + b'\\u003E"')

            def delivery(
                ts: int,
                status: bytes,
                reason: bytes,
                t: int,
                c: int = 0,
                *,
                common: bytes = common,
                evs: list = evs,
            ) -> None:
                arrive(
                    2,
                    ts,
                    0,
                    2_000,
                    b"d",
                    1,
                    b'{"reason":"%s","sourceIp":"",%s,"created":"%s","senderIp":"%s",'
                    b'"status":"%s"}'
                    % (
                        reason,
                        common,
                        jst(ts).encode(),
                        b"" if status == b"queued" else b"100.100.100.3",
                        status,
                    ),
                )
                evs.append((ts, t, c))

            if outcome == DROPPED:
                arrive(
                    2,
                    final,
                    0,
                    2_000,
                    b"k",
                    1,
                    b'{"reason":"blocked address",%s,"created":"%s","status":"10"}'
                    % (common, jst(final).encode()),
                )
                evs.append((final, DROPPED, 0))
            else:
                delivery(start, b"queued", b"", PROCESSED)
                for ts in defers:
                    delivery(
                        ts, b"deferred", b"421 4.7.0 Try again later, closing connection.", DEFERRED
                    )
                if outcome == DELIVERED:
                    delivery(final, b"succeeded", b"", DELIVERED)
                else:
                    if cls == HARD:
                        code, reason = (
                            _CMC_NO_HOST
                            if DOMAIN_PROFILES[di].name == "legacy-isp.example"
                            else _CMC_NO_USER
                        )
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
                    arrive(
                        2,
                        ts + 1000,
                        0,
                        2_000,
                        b"b",
                        1,
                        b'{"reason":"%s",%s,"created":"%s","status":"%s"}'
                        % (reason, common, jst(ts + 1000).encode(), code),
                    )
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
        self._writes.append(
            self._pool.submit(_write_gzip, path, b"\n".join(lines) + b"\n", self.cfg.compresslevel)
        )
        while len(self._writes) > 4:
            self._collect(self._writes.popleft())

    def _collect(self, fut) -> None:
        self.summary.bytes_written += fut.result()

    def out_dir(self, provider: str, hour_ts: datetime) -> Path:
        return (
            Path(self.cfg.out)
            / provider
            / f"{hour_ts:%Y}"
            / f"{hour_ts:%m}"
            / f"{hour_ts:%d}"
            / f"{hour_ts:%H}"
        )

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
                out.append(
                    (
                        len(batch),
                        b'{"event_type":"' + word + b'","server_composition":"pro",'
                        b'"event":{"' + word + b'":[' + b",".join(batch) + b"]}}",
                    )
                )
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
            return orjson.dumps(
                [
                    {
                        "timestamp": ts,
                        "event": "delivered",
                        "sg_event_id": self.ids.event_id(self.ev_counter).decode(),
                        "sg_message_id": "corrupt.filter0001.0",
                        "category": "newsletter",
                    }
                ]
            )
        if pi == 1:
            iso = self.iso((ts - self.epoch0) * 1000)
            return orjson.dumps(
                {
                    "eventType": "Delivery",
                    "mail": {
                        "timestamp": iso,
                        "messageId": "corrupt-no-recipient",
                        "destination": [],
                    },
                    "delivery": {"timestamp": iso, "recipients": []},
                }
            )
        return orjson.dumps(
            {
                "event_type": "deliveries",
                "server_composition": "pro",
                "event": {
                    "deliveries": [
                        {
                            "reason": "",
                            "created": self.jst((ts - self.epoch0) * 1000),
                            "messageId": "<corrupt@mail.example.com>",
                            "to": "",
                            "status": "succeeded",
                        }
                    ]
                },
            }
        )


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
