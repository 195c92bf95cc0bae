"""The post-send watcher: wait until a send has settled, then say what happened.

A campaign script sends to a list, then calls::

    from pipelines.watcher import wait_for_events
    counts = wait_for_events(emails, "newsletter-2026-11", sent_at)
    # {'delivered': 980, 'bounce': 12, 'dropped': 3, 'deferred': 5, 'unsettled': 5}

It replaces the script pattern described in provider-samples/README.md and fixes its
weaknesses:

- it counts **recipients, not events**: each recipient's status is the most final of all
  their events in the category since the send (:mod:`pipelines.status`: forward only, so
  a deferred-then-delivered recipient counts once, as delivered, and a late ``delivered``
  does not undo a ``bounce``);
- it waits until every recipient is **settled** (delivered, bounce or dropped), not until
  there are as many rows as addresses;
- every poll reads only partitions from the send date on (``event_date >= @since_date``),
  so its cost does not grow with the table's history;
- the default timeout scales sensibly with the list (:func:`default_timeout`);
- on timeout it returns (and posts) what is known and says it timed out; it raises only
  when asked (``raise_on_timeout=True``), and the exception carries the result;
- it works out of the box: a warehouse that does not exist yet (nothing loaded so far)
  is "nothing seen yet", not an error, until the timeout; and while no recipient has any
  event in the category, each poll asks which categories these recipients *do* have
  events in, so a misspelled category (or CMC mail loaded without its category field)
  shows within seconds in the log, the result (:attr:`WatchResult.hint`) and the CLI,
  not as "everyone never seen" at the timeout.

- it records the list in the send log (:mod:`pipelines.sends`, hashes only) under a send
  id (``send_id=``, default ``CATEGORY@TIME``), once the warehouse exists and without ever
  failing the watch for it; :func:`resume` watches a logged send again, from another
  process or later, by hash; at the timeout, recipients with no event at all are
  "sent, never reported by the provider" (:attr:`WatchResult.never_reported`).

Addresses are hashed locally (:class:`pipelines.hashing.EmailHasher`); only hashes are
sent to the warehouse, and hashes are mapped back to the caller's own addresses for the
report. Polling ("not settled yet") and retrying transient warehouse errors are
separate, each with one named, overridable :class:`~pipelines.backoff.Backoff`
(:data:`DEFAULT_POLL_POLICY`, :data:`DEFAULT_RETRY_POLICY`); clock and sleep are
injectable (tests never sleep).

This module is the public API and the polling loop; the result model is
:mod:`pipelines.watch_result`, the SQL, hints and query retries
:mod:`pipelines.watch_queries`, the send log :mod:`pipelines.watch_sendlog` and the
hashed list :mod:`pipelines.watch_recipients` (their names are importable from here).
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping

from .backoff import Backoff
from .hashing import EmailHasher, resolve_key
from .timeutil import format_duration, rfc3339, to_utc  # noqa: F401 (re-exported)
from .warehouse import Warehouse, open_warehouse
from .watch_queries import (
    ALREADY_SENT_SQL,
    HINT_MAX_CATEGORIES,
    MAX_HASHES_PER_QUERY,
    OTHER_CATEGORIES_SQL,
    STATUS_SQL,
    _other_categories,
    _run_query,
    _with_retries,
    category_hint,
    is_transient,
    missing_warehouse_hint,
)
from .watch_recipients import _addresses, _Recipients
from .watch_result import (
    COUNT_KEYS,
    RecipientOutcome,
    WatchFailed,
    WatchResult,
    WatchTimeout,
    mask_addresses,
)
from .watch_sendlog import (
    SEND_LOG_SQL,
    LoggedSend,
    _SendRecorder,
    default_send_id,
    logged_send,
)

log = logging.getLogger(__name__)

# -- the default timeout -------------------------------------------------------------------
#: 15 minutes for any send: SendGrid / SES / CMC report the first delivery attempt of most
#: mail within a minute or two, and the load into the warehouse adds its own latency.
DEFAULT_TIMEOUT_BASE = 15 * 60.0
#: plus 1 s per 10 recipients (100 s per 1,000): large sends are handed to the provider
#: over minutes, and the providers throttle per receiving domain.
DEFAULT_TIMEOUT_PER_RECIPIENT = 0.1
#: at most 3 hours: a recipient still deferred by then may stay deferred for up to 72 h
#: (the providers' retry window); waiting longer blocks the script for no news. Those
#: recipients are reported as ``deferred`` / ``unsettled``; rerun the watch later to
#: see where they ended.
DEFAULT_TIMEOUT_CAP = 3 * 60 * 60.0


def default_timeout(recipients: int) -> float:
    """Seconds to wait for ``recipients`` recipients: 15 min + 1 s per 10 recipients,
    capped at 3 h (1,000 -> 1,000 s; 10,000 -> 1,900 s; 99,000 and more -> 10,800 s).

    The old script formula ``max(n / 10 * 90, 300)`` gave 9 s per recipient (9,000 s for
    1,000 addresses, while its comment said 90 minutes) and had no upper bound."""
    return min(
        DEFAULT_TIMEOUT_BASE + DEFAULT_TIMEOUT_PER_RECIPIENT * max(recipients, 0),
        DEFAULT_TIMEOUT_CAP,
    )


# -- policies ------------------------------------------------------------------------------
#: When to look again while recipients are not settled yet. The first poll runs at once
#: (a watch started late may already be settled); the next after 5 s, each later one
#: 1.5 times later, at most 60 s apart; the last poll happens at the watch's deadline
#: (the timeout bounds polling; a policy given ``attempts`` also ends the watch, timed
#: out, after that many polls).
DEFAULT_POLL_POLICY = Backoff(initial=5.0, maximum=60.0, multiplier=1.5)
#: How one poll retries a transient warehouse error (a lock held by a loader beyond the
#: backend's own lock retries, a BigQuery 5xx, a dropped connection). Separate from
#: polling: a poll that fails is tried 5 times in all (1 s, 2 s, 4 s, 8 s apart), then
#: the watch fails with :class:`WatchFailed` (carrying what was known).
DEFAULT_RETRY_POLICY = Backoff(initial=1.0, maximum=30.0, multiplier=2.0, attempts=5)


def PollPolicy(initial_delay: float = 5.0, multiplier: float = 1.5, max_delay: float = 60.0):  # noqa: N802
    """The watch's polling as earlier versions spelled it (kept for scripts that pass
    ``poll_policy=PollPolicy(...)``): a :class:`~pipelines.backoff.Backoff`."""
    return Backoff(initial=initial_delay, multiplier=multiplier, maximum=max_delay)


def RetryPolicy(  # noqa: N802
    max_attempts: int = 5,
    initial_delay: float = 1.0,
    multiplier: float = 2.0,
    max_delay: float = 30.0,
):
    """A poll's retries as earlier versions spelled them (``retry_policy=RetryPolicy(...)``):
    a :class:`~pipelines.backoff.Backoff` with ``attempts=max_attempts``."""
    return Backoff(
        initial=initial_delay, multiplier=multiplier, maximum=max_delay, attempts=max_attempts
    )


# -- entry-point resolution -------------------------------------------------------------
def _resolve_warehouse(
    warehouse: "str | Warehouse | None", environ: Mapping[str, str]
) -> tuple[Warehouse, bool]:
    if warehouse is None:
        from .config import default_warehouse_uri

        warehouse = default_warehouse_uri(environ)
    owned = not isinstance(warehouse, Warehouse)
    return open_warehouse(warehouse), owned


def _resolve_hasher(
    hasher: EmailHasher | None, wh: Warehouse, environ: Mapping[str, str]
) -> EmailHasher:
    if hasher is not None:
        return hasher
    return EmailHasher(resolve_key(environ, embedded=wh.dialect == "duckdb"))


def _check_category(category: str) -> str:
    if not isinstance(category, str) or not category.strip():
        raise ValueError(
            "category must be a non-empty string (the category the mail was sent with)"
        )
    return category


# -- the public API ------------------------------------------------------------------------
def watch(
    email_list: Iterable[str],
    category: str,
    timestamp,
    *,
    timeout: float | None = None,
    warehouse: "str | Warehouse | None" = None,
    notify: bool = True,
    raise_on_timeout: bool = False,
    hasher: EmailHasher | None = None,
    notifier=None,
    poll_policy: Backoff = DEFAULT_POLL_POLICY,
    retry_policy: Backoff = DEFAULT_RETRY_POLICY,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    environ: Mapping[str, str] | None = None,
    send_id: str | None = None,
    record: bool = True,
) -> WatchResult:
    """Wait until every recipient of a send is settled (or the timeout), then report.

    Args:
        email_list: the addresses the mail was sent to (plain; hashed locally).
        category: the category the mail was sent with.
        timestamp: when the send started (datetime, date, ISO string or epoch seconds;
            naive means UTC). Events before it are ignored; pass a time just before the
            first message went out.
        timeout: seconds to wait; default :func:`default_timeout` of the list size.
        warehouse: URI or warehouse object; default the embedded DuckDB file
            (``pipelines.config.default_warehouse_uri()``).
        notify: post the summary (Slack when ``SLACK_BOT_TOKEN`` is set, else the console).
        raise_on_timeout: raise :class:`WatchTimeout` (after notifying) instead of
            returning a timed-out result.
        hasher: the EmailHasher; default from ``MAILPULSE_HASH_KEY``.
        notifier: an object with ``post_watch_summary(result)``; default from the
            environment (:func:`pipelines.slack.notifier_from_env`).
        poll_policy, retry_policy, clock, sleep: polling and transient-error retry.
        environ: the environment to read configuration from (default ``os.environ``).
        send_id: the send's id in the send log (default :func:`default_send_id`:
            category and time); in the result, and the id to :func:`resume` it with.
        record: record the list in the send log (hashed; once the warehouse exists).
    """
    environ = os.environ if environ is None else environ
    category = _check_category(category)
    since = to_utc(timestamp)
    if send_id is not None and (not isinstance(send_id, str) or not send_id.strip()):
        raise ValueError("send_id must be a non-empty string (the send's name in the log)")
    send_id = send_id.strip() if send_id else default_send_id(category, since)
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds, not {timeout}")
    if notify and notifier is None:
        from .slack import notifier_from_env

        notifier = notifier_from_env(environ)  # configuration errors surface now, not later
    wh, owned = _resolve_warehouse(warehouse, environ)
    try:
        hasher = _resolve_hasher(hasher, wh, environ)
        addresses = _addresses(email_list)
        recipients = _Recipients(addresses, hasher)
        recorder = (
            _SendRecorder(addresses, send_id, category, since, hasher)
            if record and recipients
            else None
        )
        limit = default_timeout(len(recipients)) if timeout is None else float(timeout)
        try:
            result = _poll_until_settled(
                wh,
                recipients,
                category,
                since,
                limit,
                poll_policy,
                retry_policy,
                clock,
                sleep,
                recorder,
            )
        finally:
            if recorder is not None:
                recorder.finish()
        result.send_id = send_id
        result.send_recorded = recorder is not None and recorder.recorded
    finally:
        if owned:
            wh.close()
    return _finish(result, notify, notifier, raise_on_timeout)


def resume(
    send_id: str,
    *,
    category: str | None = None,
    timeout: float | None = None,
    warehouse: "str | Warehouse | None" = None,
    notify: bool = True,
    raise_on_timeout: bool = False,
    notifier=None,
    poll_policy: Backoff = DEFAULT_POLL_POLICY,
    retry_policy: Backoff = DEFAULT_RETRY_POLICY,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    environ: Mapping[str, str] | None = None,
) -> WatchResult:
    """Watch a send recorded in the send log (by a watch in another process, earlier, or
    ``mailpulse sends import``): the recipients, category and send time come from the
    log, so no address is needed, and the result names recipients by hash (the
    ``email`` of each outcome is the hash). ``category`` picks one when the send has
    several. Otherwise as :func:`watch`."""
    environ = os.environ if environ is None else environ
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds, not {timeout}")
    if notify and notifier is None:
        from .slack import notifier_from_env

        notifier = notifier_from_env(environ)
    wh, owned = _resolve_warehouse(warehouse, environ)
    try:
        send = _with_retries(
            lambda: logged_send(wh, send_id.strip(), category),
            retry_policy,
            sleep,
            lambda exc: None,
            clock,
        )
        recipients = _Recipients.from_hashes(send.hashes)
        limit = default_timeout(len(recipients)) if timeout is None else float(timeout)
        result = _poll_until_settled(
            wh,
            recipients,
            send.category,
            send.since,
            limit,
            poll_policy,
            retry_policy,
            clock,
            sleep,
            None,
        )
        result.send_id, result.send_recorded, result.by_hash = send.send_id, True, True
    finally:
        if owned:
            wh.close()
    return _finish(result, notify, notifier, raise_on_timeout)


def _finish(result: WatchResult, notify: bool, notifier, raise_on_timeout: bool) -> WatchResult:
    if notify:
        result.notification = _notify(notifier, result)
    if result.timed_out and raise_on_timeout:
        raise WatchTimeout(result)
    return result


def _notify(notifier, result: WatchResult):
    """Post the summary; a failing notifier is logged and never loses the result."""
    try:
        return notifier.post_watch_summary(result)
    except Exception as exc:  # a custom notifier's bug must not lose an hour's watch
        log.error(
            "posting the watch summary failed (%s: %s); the result is returned anyway",
            type(exc).__name__,
            exc,
        )
        return None


def wait_for_events(
    email_list: Iterable[str],
    category: str,
    timestamp,
    *,
    timeout: float | None = None,
    warehouse: "str | Warehouse | None" = None,
    notify: bool = True,
    raise_on_timeout: bool = False,
    **options: Any,
) -> dict[str, int]:
    """Counts per outcome for the recipients of a send, once settled or at the timeout:
    ``{'delivered', 'bounce', 'dropped', 'deferred', 'unsettled'}`` (recipients, not
    events). Same arguments as :func:`watch`; on timeout the counts so far are returned
    (``raise_on_timeout=True``: :class:`WatchTimeout`, a TimeoutError, with ``.result``)."""
    return watch(
        email_list,
        category,
        timestamp,
        timeout=timeout,
        warehouse=warehouse,
        notify=notify,
        raise_on_timeout=raise_on_timeout,
        **options,
    ).counts


def already_sent(
    email_list: Iterable[str],
    category: str,
    since,
    *,
    warehouse: "str | Warehouse | None" = None,
    hasher: EmailHasher | None = None,
    retry_policy: Backoff = DEFAULT_RETRY_POLICY,
    sleep: Callable[[float], None] = time.sleep,
    environ: Mapping[str, str] | None = None,
) -> set[str]:
    """The addresses of ``email_list`` (as given) that already have mail of ``category``
    since ``since``: any processed, deferred, delivered, dropped, bounce or engagement
    event. Use it before a send to avoid sending twice."""
    environ = os.environ if environ is None else environ
    category = _check_category(category)
    since_ts = to_utc(since)
    wh, owned = _resolve_warehouse(warehouse, environ)
    try:
        recipients = _Recipients(email_list, _resolve_hasher(hasher, wh, environ))
        if not recipients:
            return set()
        rows = _with_retries(
            lambda: _run_query(wh, ALREADY_SENT_SQL, category, since_ts, recipients.hashes),
            retry_policy,
            sleep,
            lambda exc: None,
        )
    finally:
        if owned:
            wh.close()
    return {recipients.by_hash[r["email_hash"]] for r in rows}


def _poll_until_settled(
    wh: Warehouse,
    recipients: _Recipients,
    category: str,
    since: datetime,
    timeout: float,
    poll_policy: Backoff,
    retry_policy: Backoff,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    recorder: _SendRecorder | None = None,
) -> WatchResult:
    start = clock()
    deadline = start + timeout
    delays = poll_policy.delays()
    hashes = recipients.hashes
    polls = errors = 0
    last: WatchResult | None = None
    ready = False  # the events table exists (checked until it does)
    other: dict[str, int] = {}
    uncategorized = 0
    told: set[str] = set()  # hints already logged

    def count_error(exc: BaseException) -> None:
        nonlocal errors
        errors += 1

    def tell(text: str) -> None:
        if text not in told:
            told.add(text)
            log.warning("watch %r: %s", category, text)

    def poll() -> list[dict[str, Any]]:
        nonlocal ready, other, uncategorized
        if not hashes:
            return []
        if not ready:
            ready = wh.table_exists("events")
            if not ready:
                return []
        if recorder is not None and recorder.pending:
            recorder.attempt(wh)  # never raises; tried again next poll if the file was busy
        rows = _run_query(wh, STATUS_SQL, category, since, hashes)
        if rows:
            other, uncategorized = {}, 0
        elif not other and not uncategorized:
            other, uncategorized = _other_categories(wh, since, hashes)
        return rows

    while True:
        try:
            rows = _with_retries(poll, retry_policy, sleep, count_error, clock)
        except Exception as exc:
            if not is_transient(exc):
                raise
            raise WatchFailed(
                f"the warehouse {getattr(wh, 'uri', wh)} kept failing ({errors} transient "
                f"errors; last: {exc}); the watch stopped after {polls} successful polls. "
                "Check the warehouse (a long load holding the DuckDB file? BigQuery "
                "outage?) and rerun the watch; the result so far is in .result",
                last,
            ) from exc
        polls += 1
        now = clock()
        result = _build_result(
            recipients, rows, category, since, now - start, timeout, polls, errors
        )
        result.warehouse_ready = ready or not hashes
        if not result.warehouse_ready:
            result.hint = missing_warehouse_hint(wh)
        elif not rows:
            result.other_categories, result.uncategorized = dict(other), uncategorized
            result.hint = category_hint(category, len(recipients), other, uncategorized)
        if result.hint:
            tell(result.hint)
        log.info("watch %r poll %d: %s", category, polls, result.counts)
        if result.settled:
            return result
        if now >= deadline:
            result.timed_out = True
            return result
        last = result
        delay = next(delays, None)
        if delay is None:  # a poll policy with an attempts limit: that was the last poll
            result.timed_out = True
            return result
        sleep(max(0.0, min(delay, deadline - now)))


def _build_result(
    recipients: _Recipients,
    rows: list[dict[str, Any]],
    category: str,
    since: datetime,
    elapsed: float,
    timeout: float,
    polls: int,
    errors: int,
) -> WatchResult:
    by_hash = {r["email_hash"]: r for r in rows}
    outcomes: dict[str, RecipientOutcome] = {}
    for h, email in recipients.by_hash.items():
        r = by_hash.get(h)
        if r is None:
            outcomes[email] = RecipientOutcome(email=email, status=None)
        else:
            outcomes[email] = RecipientOutcome(
                email=email,
                status=r["status"],
                event_type=r["event_type"],
                bounce_class=r["bounce_class"],
                reason=r["reason"],
                smtp_status=r["smtp_status"],
                event_ts=r["event_ts"],
                provider=r["provider"],
            )
    settled = all(o.settled for o in outcomes.values())
    return WatchResult(
        category=category,
        since=since,
        recipients=len(recipients),
        outcomes=outcomes,
        elapsed=elapsed,
        settled=settled,
        timed_out=False,
        timeout=timeout,
        polls=polls,
        transient_errors=errors,
        duplicates_in_list=recipients.duplicates,
    )


#: The public API, and what moved out of this module (pipelines/watch_*.py) stays importable
#: from here.
__all__ = [
    "wait_for_events",
    "watch",
    "resume",
    "already_sent",
    "default_send_id",
    "logged_send",
    "LoggedSend",
    "WatchResult",
    "RecipientOutcome",
    "WatchTimeout",
    "WatchFailed",
    "DEFAULT_POLL_POLICY",
    "category_hint",
    "DEFAULT_RETRY_POLICY",
    "PollPolicy",
    "RetryPolicy",
    "default_timeout",
    "is_transient",
    "COUNT_KEYS",
    # re-exported from pipelines/watch_result.py, watch_queries.py, watch_sendlog.py
    "mask_addresses",
    "missing_warehouse_hint",
    "ALREADY_SENT_SQL",
    "HINT_MAX_CATEGORIES",
    "MAX_HASHES_PER_QUERY",
    "OTHER_CATEGORIES_SQL",
    "SEND_LOG_SQL",
    "STATUS_SQL",
]
