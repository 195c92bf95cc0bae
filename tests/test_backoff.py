"""The one backoff policy type (pipelines/backoff.py) and the defaults built from it.

Sleep and clock are injected: nothing here waits."""

from __future__ import annotations

import itertools

import pytest
from watch_support import FakeClock as SleepClock

from pipelines.backoff import Backoff, retry_call


def FakeClock() -> SleepClock:
    """The watcher tests' clock (moves only when slept on), started at 100 s."""
    clock = SleepClock()
    clock.now = 100.0
    return clock


class Flaky:
    """Raises the given errors in turn, then returns ``value``; counts its calls."""

    def __init__(self, errors, value="ok", clock: SleepClock | None = None, cost: float = 0.0):
        self.errors, self.value, self.calls = list(errors), value, 0
        self.clock, self.cost = clock, cost

    def __call__(self):
        self.calls += 1
        if self.clock is not None:
            self.clock.now += self.cost  # each try takes time
        if self.errors:
            raise self.errors.pop(0)
        return self.value


def transient(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionError)


# -- the delays --------------------------------------------------------------------------
def test_delays_grow_by_the_multiplier_up_to_the_maximum():
    b = Backoff(initial=1.0, maximum=10.0, multiplier=3.0)
    assert list(itertools.islice(b.delays(), 6)) == [1.0, 3.0, 9.0, 10.0, 10.0, 10.0]
    # the same numbers one by one, and without a limit the sequence does not end
    assert [b.delay(n) for n in range(6)] == [1.0, 3.0, 9.0, 10.0, 10.0, 10.0]
    assert b.attempts is None and b.retries is None
    assert len(list(itertools.islice(b.delays(), 1000))) == 1000


def test_an_initial_delay_above_the_maximum_is_capped():
    assert list(itertools.islice(Backoff(initial=5, maximum=2).delays(), 3)) == [2, 2, 2]


def test_attempts_count_the_first_try():
    b = Backoff(initial=0.5, maximum=30.0, multiplier=2.0, attempts=4)
    assert b.retries == 3
    assert list(b.delays()) == [0.5, 1.0, 2.0]
    assert list(Backoff(attempts=1).delays()) == []


def test_jitter_adds_up_to_its_seconds_from_the_injected_rand():
    b = Backoff(initial=1.0, maximum=4.0, multiplier=2.0, attempts=5, jitter=0.5)
    rands = iter([0.0, 0.5, 0.999, 0.2])
    assert list(b.delays(lambda: next(rands))) == pytest.approx([1.0, 2.25, 4.4995, 4.1])
    assert list(b.delays(rand=None)) == [1.0, 2.0, 4.0, 4.0]  # no jitter asked
    assert b.base_delay(1) == 2.0 and b.delay(1, lambda: 1.0) == 2.5
    # real randomness stays within [base, base + jitter)
    for n, d in enumerate(b.delays()):
        assert b.base_delay(n) <= d < b.base_delay(n) + 0.5


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"attempts": 0}, "attempts counts the first try"),
        ({"multiplier": 0.5}, "use 1 for a fixed delay"),
        ({"initial": -1}, "must be >= 0"),
        ({"deadline": -1}, "deadline must be >= 0"),
        ({"jitter": -0.1}, "jitter must be >= 0"),
    ],
)
def test_nonsense_is_refused_saying_what_is_allowed(kw, words):
    with pytest.raises(ValueError, match=words):
        Backoff(**kw)


def test_replace_keeps_the_rest_and_the_original():
    b = Backoff(initial=0.05, maximum=1.0, multiplier=1.6, attempts=60)
    short = b.replace(attempts=2)
    assert short == Backoff(initial=0.05, maximum=1.0, multiplier=1.6, attempts=2)
    assert b.attempts == 60


# -- retry_call --------------------------------------------------------------------------
def test_retry_call_retries_transient_errors_then_returns():
    clock = FakeClock()
    fn = Flaky([ConnectionError("reset"), ConnectionError("reset")])
    seen = []
    got = retry_call(
        fn,
        Backoff(initial=1.0, maximum=30.0, multiplier=2.0, attempts=5),
        predicate=transient,
        sleep=clock.sleep,
        clock=clock,
        on_error=lambda exc, delay: seen.append((str(exc), delay)),
    )
    assert got == "ok" and fn.calls == 3
    assert clock.sleeps == [1.0, 2.0]
    assert seen == [("reset", 1.0), ("reset", 2.0)]


def test_retry_call_stops_at_the_attempts_limit_with_the_last_error():
    clock = FakeClock()
    errors = [ConnectionError(f"try {i}") for i in range(1, 10)]
    fn = Flaky(errors)
    seen = []
    with pytest.raises(ConnectionError, match="try 3"):
        retry_call(
            fn,
            Backoff(initial=1.0, maximum=30.0, multiplier=2.0, attempts=3),
            predicate=transient,
            sleep=clock.sleep,
            clock=clock,
            on_error=lambda exc, delay: seen.append(delay),
        )
    assert fn.calls == 3 and clock.sleeps == [1.0, 2.0]
    assert seen == [1.0, 2.0, None]  # the last error is told as "giving up"


def test_retry_call_stops_on_an_error_the_predicate_refuses():
    clock = FakeClock()
    fn = Flaky([ConnectionError("reset"), ValueError("bad query"), ConnectionError("x")])
    seen = []
    with pytest.raises(ValueError, match="bad query"):
        retry_call(
            fn,
            Backoff(initial=1.0, attempts=10),
            predicate=transient,
            sleep=clock.sleep,
            clock=clock,
            on_error=lambda exc, delay: seen.append(type(exc).__name__),
        )
    assert fn.calls == 2 and clock.sleeps == [1.0]
    assert seen == ["ConnectionError"]  # a non-retryable error is not reported as retried


def test_retry_call_stops_before_a_retry_that_would_end_past_the_deadline():
    clock = FakeClock()
    # each try takes 1 s; delays 1, 2, 4, 8 ...; the deadline is 10 s after the first try
    fn = Flaky([ConnectionError(str(i)) for i in range(20)], clock=clock, cost=1.0)
    with pytest.raises(ConnectionError, match="^3$"):
        retry_call(
            fn,
            Backoff(initial=1.0, maximum=60.0, multiplier=2.0, deadline=10.0),
            predicate=transient,
            sleep=clock.sleep,
            clock=clock,
        )
    # the tries end 1, 3, 6 and 11 s after the start; after the 3rd, a 4 s delay ends at
    # exactly 10 s (allowed); after the 4th, an 8 s delay would end at 19 s: none starts
    assert clock.sleeps == [1.0, 2.0, 4.0] and fn.calls == 4
    assert clock.now - 100.0 == 11.0


def test_the_first_limit_reached_wins():
    clock = FakeClock()
    fn = Flaky([ConnectionError("x")] * 20)
    with pytest.raises(ConnectionError):
        retry_call(
            fn,
            Backoff(initial=1.0, multiplier=1.0, attempts=3, deadline=1000.0),
            predicate=transient,
            sleep=clock.sleep,
            clock=clock,
        )
    assert fn.calls == 3  # attempts before the (far) deadline
    clock, fn = FakeClock(), Flaky([ConnectionError("x")] * 20)
    with pytest.raises(ConnectionError):
        retry_call(
            fn,
            Backoff(initial=1.0, multiplier=1.0, attempts=100, deadline=2.5),
            predicate=transient,
            sleep=clock.sleep,
            clock=clock,
        )
    assert fn.calls == 3 and clock.sleeps == [1.0, 1.0]  # the deadline before attempts


# -- each caller's defaults, built from the one type ----------------------------------------
def test_the_callers_defaults_are_backoffs_with_their_old_timings():
    from pipelines import sqs, watcher
    from pipelines.slack import (
        CONNECTION_ERROR_RETRY,
        DEFAULT_SLACK_RETRY_POLICY,
        RATE_LIMIT_RETRY,
        SERVER_ERROR_RETRY,
    )
    from pipelines.warehouse import bigquery, duckdb

    # the watcher: poll at once, then 5 s x1.5 up to 60 s; a failing poll is tried 5 times
    assert list(itertools.islice(watcher.DEFAULT_POLL_POLICY.delays(), 9)) == [
        5.0,
        7.5,
        11.25,
        16.875,
        25.3125,
        37.96875,
        56.953125,
        60.0,
        60.0,
    ]
    assert list(watcher.DEFAULT_RETRY_POLICY.delays()) == [1.0, 2.0, 4.0, 8.0]
    # DuckDB's lock: 60 tries, 0.05 s x1.6 up to 1 s, about 54 s of waiting
    lock = list(duckdb.DEFAULT_LOCK_RETRY.delays())
    assert len(lock) == 59 and lock[:3] == pytest.approx([0.05, 0.08, 0.128])
    assert max(lock) == 1.0 and sum(lock) == pytest.approx(54.15, abs=0.01)
    # BigQuery's API retry: api_core's parameters, a 10-minute deadline
    assert bigquery.DEFAULT_API_RETRY == Backoff(
        initial=1.0, maximum=32.0, multiplier=2.0, deadline=600.0
    )
    # SQS receive errors: 1 s doubling to 30 s, without end while following
    assert list(itertools.islice(sqs.RECEIVE_BACKOFF.delays(), 7)) == [1, 2, 4, 8, 16, 30, 30]
    assert sqs.DrainPolicy().receive_backoff is sqs.RECEIVE_BACKOFF
    # Slack: 3 retries of a 429 (Retry-After up to 120 s), 2 of 5xx / connection errors at
    # 0.5 * 2**n s plus up to 1 s of jitter (slack_sdk's own formula)
    assert RATE_LIMIT_RETRY.retries == 3 and RATE_LIMIT_RETRY.maximum == 120.0
    for policy in (SERVER_ERROR_RETRY, CONNECTION_ERROR_RETRY):
        assert list(policy.delays(rand=None)) == [0.5 * 2**0, 0.5 * 2**1]
        assert policy.jitter == 1.0
    assert DEFAULT_SLACK_RETRY_POLICY.server_errors is SERVER_ERROR_RETRY


def test_bigquery_maps_the_policy_onto_api_core():
    pytest.importorskip("google.api_core")
    from google.api_core import exceptions as gexc

    from pipelines.warehouse.bigquery import DEFAULT_API_RETRY, api_retry

    r = api_retry(DEFAULT_API_RETRY)
    assert (r._initial, r._maximum, r._multiplier, r._timeout) == (1.0, 32.0, 2.0, 600.0)
    assert r._predicate(gexc.ServiceUnavailable("down"))
    assert not r._predicate(gexc.BadRequest("bad sql"))
    # api_core has no attempts limit: the predicate counts them (2 attempts = 1 retry)
    two = api_retry(DEFAULT_API_RETRY.replace(attempts=2))
    assert two._predicate(gexc.ServiceUnavailable("down"))
    assert not two._predicate(gexc.ServiceUnavailable("down"))
    # ... per Retry object: the warehouse makes a fresh one per call
    assert api_retry(DEFAULT_API_RETRY.replace(attempts=2))._predicate(
        gexc.InternalServerError("x")
    )


def test_backoff_imports_nothing_from_pipelines():
    import ast
    from pathlib import Path

    import pipelines.backoff as mod

    tree = ast.parse(Path(mod.__file__).read_text())
    imported = [
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in getattr(n, "names", [])
    ]
    relative = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    assert not relative and not any((m or "").startswith("pipelines") for m in imported)


def test_the_watchers_earlier_policy_names_still_build_its_policies():
    """Scripts written against earlier versions pass ``poll_policy=PollPolicy(...)`` and
    ``retry_policy=RetryPolicy(...)``; both now give the one Backoff type, same defaults."""
    from pipelines.watcher import DEFAULT_POLL_POLICY, DEFAULT_RETRY_POLICY, PollPolicy, RetryPolicy

    assert PollPolicy() == DEFAULT_POLL_POLICY and RetryPolicy() == DEFAULT_RETRY_POLICY
    assert list(RetryPolicy(max_attempts=3, initial_delay=0.5).delays()) == [0.5, 1.0]
    fast = PollPolicy(initial_delay=0.1, multiplier=2, max_delay=0.3)
    assert [d for d, _ in zip(fast.delays(), range(4))] == [0.1, 0.2, 0.3, 0.3]
