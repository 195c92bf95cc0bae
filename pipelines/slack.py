"""Slack notifications: the watch summary, and plain messages for alerts (the Airflow DAG).

Configuration comes from the environment **once**, at the entry point
(:func:`notifier_from_env` / :meth:`SlackConfig.from_env`), and is passed down:

- ``SLACK_BOT_TOKEN`` — a bot token (``xoxb-...``) with ``chat:write`` and ``files:write``.
  Without it, summaries print to the console instead.
- ``MAILPULSE_SLACK_CHANNEL`` — the channel (ID such as ``C0123456789`` or ``#name``);
  the bot must be a member (``/invite @your-bot``).
- ``MAILPULSE_SLACK_API_URL`` — the Web API base URL (default ``https://slack.com/api/``);
  for tests and proxies.

Slack failures never lose a result: every call here logs the error and returns
(``None`` / a :class:`NotifyReport` with ``errors``). Rate limits (HTTP 429) are honoured
by waiting the ``Retry-After`` seconds; server errors (500, 503) and connection errors are
retried a bounded number of times with exponential backoff (slack_sdk retry handlers
taking their delays from :class:`~pipelines.backoff.Backoff` policies, with the sleep
injectable so tests never wait).

Slack never holds the result: one notification (the message and its CSV, with every
retry and wait) has a total time budget, :attr:`SlackRetryPolicy.total_budget` (30 s by
default). A ``Retry-After`` or backoff longer than what is left is not waited for, each
request's timeout is cut to what is left, and a call with nothing left is skipped; the
failure is logged and the caller gets its result (measured before: a 429 with
``Retry-After: 60`` held a watch result for 186 s).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, TextIO
from urllib.error import URLError

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.interval_calculator import RetryIntervalCalculator

from .backoff import Backoff

if TYPE_CHECKING:  # pragma: no cover
    from .watch_result import WatchResult

log = logging.getLogger(__name__)

TOKEN_ENV = "SLACK_BOT_TOKEN"
CHANNEL_ENV = "MAILPULSE_SLACK_CHANNEL"
API_URL_ENV = "MAILPULSE_SLACK_API_URL"
DEFAULT_API_URL = "https://slack.com/api/"


class SlackConfigError(ValueError):
    """Slack is half-configured; the message names the variable to set."""


@dataclass(frozen=True)
class SlackConfig:
    token: str = field(repr=False)
    channel: str
    api_url: str = DEFAULT_API_URL

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "SlackConfig | None":
        """The configuration, or None when ``SLACK_BOT_TOKEN`` is not set."""
        environ = os.environ if environ is None else environ
        token = environ.get(TOKEN_ENV, "").strip()
        if not token:
            return None
        channel = environ.get(CHANNEL_ENV, "").strip()
        if not channel:
            raise SlackConfigError(
                f"{TOKEN_ENV} is set but {CHANNEL_ENV} is not: set {CHANNEL_ENV} to the "
                "channel to post to (an ID such as C0123456789, or #name), or unset "
                f"{TOKEN_ENV} to print summaries to the console"
            )
        api_url = environ.get(API_URL_ENV, "").strip() or DEFAULT_API_URL
        if not api_url.startswith(("http://", "https://")):
            raise SlackConfigError(
                f"{API_URL_ENV}={api_url!r} is not an http(s) URL; use e.g. https://slack.com/api/"
            )
        return cls(token=token, channel=channel, api_url=_with_slash(api_url))


def _with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


# -- retries -------------------------------------------------------------------------------
#: HTTP 429: wait the ``Retry-After`` seconds Slack asks for (this policy's delay when it
#: names none), at most 3 times per call (4 attempts); a ``Retry-After`` longer than
#: ``maximum`` (120 s) is not waited for: the call gives up at once.
RATE_LIMIT_RETRY = Backoff(initial=1.0, maximum=120.0, multiplier=1.0, attempts=4)
#: HTTP 500 / 503: retried twice, 0.5 s then 1 s apart (``0.5 * 2**retry``, as slack_sdk's
#: own backoff), plus up to 1 s of jitter.
SERVER_ERROR_RETRY = Backoff(initial=0.5, maximum=30.0, multiplier=2.0, attempts=3, jitter=1.0)
#: Connection errors (reset, refused, DNS): as server errors.
CONNECTION_ERROR_RETRY = SERVER_ERROR_RETRY
#: Seconds per HTTP request (cut to what is left of the notification budget).
REQUEST_TIMEOUT = 30
#: Seconds one notification may take in all (every call, retry and wait).
TOTAL_BUDGET = 30.0


@dataclass(frozen=True)
class SlackRetryPolicy:
    """Bounded retries for Slack calls (one named, overridable value): a
    :class:`~pipelines.backoff.Backoff` per kind of failure, the per-request timeout and
    the notification's total budget. The ``deadline`` of these backoffs is not used:
    ``total_budget`` bounds the time."""

    rate_limit: Backoff = RATE_LIMIT_RETRY
    server_errors: Backoff = SERVER_ERROR_RETRY
    connection_errors: Backoff = CONNECTION_ERROR_RETRY
    #: seconds per HTTP request (cut to what is left of ``total_budget``)
    request_timeout: int = REQUEST_TIMEOUT
    #: seconds one notification may take in all (every call, retry and wait); after
    #: that the result returns and the failure is logged
    total_budget: float = TOTAL_BUDGET


DEFAULT_SLACK_RETRY_POLICY = SlackRetryPolicy()


class BackoffIntervalCalculator(RetryIntervalCalculator):
    """slack_sdk's interval calculator, taking its delays from a :class:`Backoff`
    (``current_attempt`` 0 is the first retry; jitter from ``rand``)."""

    def __init__(self, policy: Backoff, rand: Callable[[], float] = random.random):
        self.policy = policy
        self.rand = rand

    def calculate_sleep_duration(self, current_attempt: int) -> float:
        return self.policy.delay(current_attempt, self.rand)


def _max_retry_count(policy: Backoff) -> int:
    return sys.maxsize if policy.retries is None else policy.retries


class NotifyBudget:
    """What is left of one notification's time budget (``clock`` is injectable).

    Inactive (``remaining()`` is None) outside :meth:`SlackNotifier.budget`; the retry
    handlers and the notifier consult it before every wait and request."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.seconds = float(seconds)
        self.clock = clock
        self.deadline: float | None = None
        #: a retry was refused because it would not fit (reset per notification)
        self.exhausted = False
        #: the WebClient whose per-request timeout is cut to what is left
        self.client: WebClient | None = None

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self.clock())

    def fits(self, wait: float) -> bool:
        left = self.remaining()
        if left is None or wait <= left:
            return True
        self.exhausted = True
        return False

    def explain(self, message: str) -> str:
        """``message``, saying when the budget cut the retries short."""
        if self.exhausted:
            return (
                f"{message} (retries stopped by the notification budget of "
                f"{self.seconds:.0f}s, SlackRetryPolicy.total_budget)"
            )
        return message

    def fit_request_timeout(self, request_timeout: float) -> None:
        """The next request may take at most what is left (at least 0.1 s)."""
        left = self.remaining()
        if self.client is not None:
            self.client.timeout = (
                request_timeout if left is None else max(0.1, min(float(request_timeout), left))
            )


def _retry_after(response) -> float | None:
    for k, v in (response.headers or {}).items():
        if k.lower() == "retry-after":
            v = v[0] if isinstance(v, (list, tuple)) else v
            try:
                return max(0.0, float(v))
            except (TypeError, ValueError):
                return None
    return None


class RetryAfterHandler(RateLimitErrorRetryHandler):
    """slack_sdk's 429 handler, waiting exactly ``Retry-After`` through an injectable
    sleep (``policy``'s delay when Slack names none), at most ``policy.attempts - 1``
    times, and giving up when Slack asks for more than ``policy.maximum`` seconds."""

    def __init__(
        self,
        policy: Backoff = RATE_LIMIT_RETRY,
        sleep: Callable[[float], None] = time.sleep,
        budget: NotifyBudget | None = None,
    ):
        super().__init__(
            max_retry_count=_max_retry_count(policy),
            interval_calculator=BackoffIntervalCalculator(policy),
        )
        self.policy = policy
        self.max_retry_after = policy.maximum
        self._sleep = sleep
        self._budget = budget

    def _wait(self, state, response) -> float:
        wait = _retry_after(response)
        if wait is None:
            return self.interval_calculator.calculate_sleep_duration(state.current_attempt)
        return wait

    def _can_retry(self, *, state, request, response=None, error=None) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        wait = _retry_after(response)
        if wait is not None and wait > self.max_retry_after:
            log.error(
                "Slack rate limit: asked to wait %.0fs (more than %.0fs); giving up",
                wait,
                self.max_retry_after,
            )
            return False
        if wait is None:  # the shortest wait of the next attempt (without jitter)
            wait = self.policy.base_delay(state.current_attempt)
        if self._budget is not None and not self._budget.fits(wait):
            log.error(
                "Slack rate limit: asked to wait %.0fs, more than the %.1fs left of the "
                "notification budget (%.0fs); giving up so the result is not held",
                wait,
                self._budget.remaining(),
                self._budget.seconds,
            )
            return False
        return True

    def prepare_for_next_attempt(self, *, state, request, response=None, error=None) -> None:
        if response is None:  # pragma: no cover - _can_retry needs a response
            raise error  # type: ignore[misc]
        wait = self._wait(state, response)
        log.warning("Slack rate limit on %s: waiting %.1fs (Retry-After)", request.url, wait)
        state.next_attempt_requested = True
        self._sleep(wait)
        if self._budget is not None:
            self._budget.fit_request_timeout(self.request_timeout)
        state.increment_current_attempt()

    #: set by :func:`retry_handlers` (the policy's per-request timeout)
    request_timeout: float = DEFAULT_SLACK_RETRY_POLICY.request_timeout


class _SleepInjected:
    """Mixin: slack_sdk's backoff, through an injectable sleep."""

    _sleep: Callable[[float], None]
    _budget: NotifyBudget | None = None
    policy: Backoff = SERVER_ERROR_RETRY
    request_timeout: float = DEFAULT_SLACK_RETRY_POLICY.request_timeout

    def _can_retry(self, *, state, request, response=None, error=None) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        # the shortest backoff of the next attempt (without jitter) must fit the budget
        shortest = self.policy.base_delay(state.current_attempt)
        if self._budget is not None and not self._budget.fits(shortest):
            log.error(
                "Slack error on %s: a retry would exceed the notification budget "
                "(%.1fs of %.0fs left); giving up so the result is not held",
                request.url,
                self._budget.remaining(),
                self._budget.seconds,
            )
            return False
        return True

    def prepare_for_next_attempt(self, *, state, request, response=None, error=None) -> None:
        state.next_attempt_requested = True
        wait = self.interval_calculator.calculate_sleep_duration(state.current_attempt)
        left = self._budget.remaining() if self._budget is not None else None
        if left is not None:
            wait = min(wait, left)
        what = f"HTTP {response.status_code}" if response is not None else repr(error)
        log.warning("Slack %s on %s: retrying in %.1fs", what, request.url, wait)
        self._sleep(wait)
        if self._budget is not None:
            self._budget.fit_request_timeout(self.request_timeout)
        state.increment_current_attempt()


class BackoffServerErrorHandler(_SleepInjected, ServerErrorRetryHandler):
    def __init__(
        self,
        policy: Backoff = SERVER_ERROR_RETRY,
        sleep: Callable[[float], None] = time.sleep,
        budget: NotifyBudget | None = None,
    ):
        super().__init__(
            max_retry_count=_max_retry_count(policy),
            interval_calculator=BackoffIntervalCalculator(policy),
        )
        self.policy = policy
        self._sleep = sleep
        self._budget = budget


class BackoffConnectionErrorHandler(_SleepInjected, ConnectionErrorRetryHandler):
    def __init__(
        self,
        policy: Backoff = CONNECTION_ERROR_RETRY,
        sleep: Callable[[float], None] = time.sleep,
        budget: NotifyBudget | None = None,
    ):
        super().__init__(
            max_retry_count=_max_retry_count(policy),
            interval_calculator=BackoffIntervalCalculator(policy),
        )
        self.policy = policy
        self._sleep = sleep
        self._budget = budget


def retry_handlers(
    policy: SlackRetryPolicy = DEFAULT_SLACK_RETRY_POLICY,
    sleep: Callable[[float], None] = time.sleep,
    budget: NotifyBudget | None = None,
) -> list:
    handlers = [
        RetryAfterHandler(policy.rate_limit, sleep, budget),
        BackoffServerErrorHandler(policy.server_errors, sleep, budget),
        BackoffConnectionErrorHandler(policy.connection_errors, sleep, budget),
    ]
    for h in handlers:
        h.request_timeout = policy.request_timeout
    return handlers


def make_client(
    config: SlackConfig,
    policy: SlackRetryPolicy = DEFAULT_SLACK_RETRY_POLICY,
    sleep: Callable[[float], None] = time.sleep,
    budget: NotifyBudget | None = None,
) -> WebClient:
    client = WebClient(
        token=config.token,
        base_url=config.api_url,
        timeout=policy.request_timeout,
        retry_handlers=retry_handlers(policy, sleep, budget),
    )
    if budget is not None:
        budget.client = client
    return client


# -- what went wrong, in words that say what to do -----------------------------------------
_ADVICE = {
    "invalid_auth": f"the token was rejected: check {TOKEN_ENV} (a bot token, xoxb-...)",
    "not_authed": f"no token was sent: set {TOKEN_ENV}",
    "account_inactive": f"the token's app or user was deactivated: issue a new {TOKEN_ENV}",
    "token_revoked": f"the token was revoked: issue a new {TOKEN_ENV}",
    "channel_not_found": f"no such channel: check {CHANNEL_ENV} (use the channel ID, "
    "e.g. C0123456789) and invite the bot to it",
    "not_in_channel": f"the bot is not a member of {CHANNEL_ENV}: run /invite @your-bot there",
    "is_archived": f"the channel is archived: set {CHANNEL_ENV} to an active channel",
    "missing_scope": "the token lacks a scope: add chat:write and files:write to the app",
    "ratelimited": "Slack kept rate-limiting after the allowed retries; try again later",
}


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, SlackApiError):
        resp = exc.response
        code = resp.get("error") if isinstance(resp.data, dict) else None
        status = resp.status_code
        if code is None:
            return f"HTTP {status} from Slack (after retries)"
        advice = _ADVICE.get(code)
        return f"{code}" + (f": {advice}" if advice else f" (HTTP {status})")
    return f"{type(exc).__name__}: {exc}"


#: What a Slack call may raise: API errors, client-side errors, the upload POST's
#: HTTPError / URLError, timeouts and connection errors.
SLACK_ERRORS = (SlackClientError, URLError, OSError)


@dataclass
class NotifyReport:
    """What posting a watch summary did: ``ts`` of the message, ``file_id`` of the CSV,
    and the errors (logged, never raised)."""

    channel: str | None = None
    ts: str | None = None
    file_id: str | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


# -- the notifiers -------------------------------------------------------------------------
class SlackNotifier:
    """Posts to one channel. Every method logs Slack failures and returns; none raises."""

    def __init__(
        self,
        config: SlackConfig,
        *,
        client: WebClient | None = None,
        policy: SlackRetryPolicy = DEFAULT_SLACK_RETRY_POLICY,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self.policy = policy
        self._budget = NotifyBudget(policy.total_budget, clock)
        self.client = client or make_client(config, policy, sleep, self._budget)
        self._budget.client = self.client

    def __repr__(self) -> str:
        return f"SlackNotifier(channel={self.config.channel!r}, api_url={self.config.api_url!r})"

    @contextlib.contextmanager
    def budget(self) -> Iterator[NotifyBudget]:
        """One notification's time budget (``policy.total_budget`` seconds) around the
        calls inside; nested uses share the outermost budget."""
        b = self._budget
        if b.deadline is not None:
            yield b
            return
        b.deadline = b.clock() + b.seconds
        b.exhausted = False
        try:
            yield b
        finally:
            b.deadline = None
            b.fit_request_timeout(self.policy.request_timeout)

    def _out_of_budget(self, what: str, errors: list[str] | None) -> bool:
        """True (logged, appended to ``errors``) when nothing is left for ``what``; else
        cuts the next request's timeout to what is left."""
        left = self._budget.remaining()
        if left is not None and left <= 0:
            msg = (
                f"Slack {what} skipped: the notification budget of "
                f"{self._budget.seconds:.0f}s is used up (SlackRetryPolicy.total_budget)"
            )
            log.error(msg)
            if errors is not None:
                errors.append(msg)
            return True
        self._budget.fit_request_timeout(self.policy.request_timeout)
        return False

    def post_message(
        self,
        text: str,
        *,
        blocks: list[dict] | None = None,
        thread_ts: str | None = None,
        channel: str | None = None,
        errors: list[str] | None = None,
    ) -> dict[str, str] | None:
        """Post ``text`` (the notification / fallback text) with optional Block Kit
        ``blocks``. Returns ``{"channel": id, "ts": ts}``, or None after logging a failure
        (also appended to ``errors`` when given). Bounded by the notification budget."""
        with self.budget():
            return self._post_message(
                text, blocks=blocks, thread_ts=thread_ts, channel=channel, errors=errors
            )

    def _post_message(self, text, *, blocks, thread_ts, channel, errors):
        if self._out_of_budget("chat.postMessage", errors):
            return None
        try:
            resp = self.client.chat_postMessage(
                channel=channel or self.config.channel,
                text=text,
                blocks=blocks,
                thread_ts=thread_ts,
                unfurl_links=False,
                unfurl_media=False,
            )
        except SLACK_ERRORS as exc:
            msg = self._budget.explain(f"Slack chat.postMessage failed: {describe_error(exc)}")
            log.error(msg)
            if errors is not None:
                errors.append(msg)
            return None
        return {"channel": resp.get("channel"), "ts": resp.get("ts")}

    def upload_file(
        self,
        filename: str,
        content: str | bytes,
        *,
        title: str | None = None,
        thread_ts: str | None = None,
        channel: str | None = None,
        initial_comment: str | None = None,
        errors: list[str] | None = None,
    ) -> str | None:
        """Upload a file (files_upload_v2) into the channel, in a thread when
        ``thread_ts`` is given. Returns the file id, or None after logging a failure."""
        with self.budget():
            if self._out_of_budget(f"file upload of {filename}", errors):
                return None
            return self._upload_file(
                filename,
                content,
                title=title,
                thread_ts=thread_ts,
                channel=channel,
                initial_comment=initial_comment,
                errors=errors,
            )

    def _upload_file(
        self, filename, content, *, title, thread_ts, channel, initial_comment, errors
    ):
        try:
            resp = self.client.files_upload_v2(
                filename=filename,
                content=content,
                title=title or filename,
                channel=channel or self.config.channel,
                thread_ts=thread_ts,
                initial_comment=initial_comment,
            )
        except SLACK_ERRORS as exc:
            msg = self._budget.explain(
                f"Slack file upload of {filename} failed: {describe_error(exc)}"
            )
            log.error(msg)
            if errors is not None:
                errors.append(msg)
            return None
        f = resp.get("file") or {}
        return f.get("id")

    def post_watch_summary(self, result: "WatchResult") -> NotifyReport:
        """One Block Kit message per watch, and the failed recipients' addresses as a CSV
        in its thread, within one time budget (``policy.total_budget``)."""
        with self.budget():
            return self._post_watch_summary(result)

    def _post_watch_summary(self, result: "WatchResult") -> NotifyReport:
        report = NotifyReport()
        posted = self.post_message(
            summary_text(result), blocks=watch_blocks(result), errors=report.errors
        )
        if posted is None:
            return report
        report.channel, report.ts = posted["channel"], posted["ts"]
        failed = result.failed
        if failed:
            report.file_id = self.upload_file(
                csv_filename(result),
                failed_recipients_csv(result),
                title=f"{len(failed)} bounced or dropped recipients",
                thread_ts=report.ts,
                channel=report.channel or self.config.channel,
                errors=report.errors,
            )
        return report


class ConsoleNotifier:
    """Without a Slack token: summaries and messages go to the console (stdout)."""

    def __init__(self, stream: TextIO | None = None):
        self._stream = stream

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    def post_message(self, text: str, **_: Any) -> None:
        print(text, file=self.stream, flush=True)
        return None

    def upload_file(self, filename: str, content: str | bytes, **_: Any) -> None:
        print(f"[{filename}]", file=self.stream)
        print(
            content.decode("utf-8") if isinstance(content, bytes) else content,
            file=self.stream,
            flush=True,
        )
        return None

    def post_watch_summary(self, result: "WatchResult") -> NotifyReport:
        print(result.summary(), file=self.stream, flush=True)
        return NotifyReport()


def notifier_from_env(
    environ: Mapping[str, str] | None = None,
    *,
    policy: SlackRetryPolicy = DEFAULT_SLACK_RETRY_POLICY,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    stream: TextIO | None = None,
) -> "SlackNotifier | ConsoleNotifier":
    """A SlackNotifier when ``SLACK_BOT_TOKEN`` is set, else a ConsoleNotifier.
    Raises :class:`SlackConfigError` when the token is set without a channel."""
    config = SlackConfig.from_env(environ)
    if config is None:
        return ConsoleNotifier(stream)
    return SlackNotifier(config, policy=policy, sleep=sleep, clock=clock)


# -- the message: pipelines/report.py (re-exported for callers of this module) ---------------
from .report import CSV_COLUMNS, csv_filename, failed_recipients_csv, summary_text, watch_blocks  # noqa: E402,F401
