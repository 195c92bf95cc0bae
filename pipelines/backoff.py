"""One exponential backoff policy type, for every wait-and-try-again in mailpulse.

Modelled on ``google.api_core.retry``: a delay starts at ``initial`` seconds, grows by
``multiplier`` after each try and never exceeds ``maximum``; ``attempts`` (tries in all,
the first one included) and ``deadline`` (seconds from the first try) bound it, either,
both or neither (then it goes on for ever, as polling does until its caller's timeout).
``jitter`` adds up to that many seconds, uniformly at random, to each delay.

A :class:`Backoff` is a frozen value: each caller names its defaults as a module
constant (``DEFAULT_LOCK_RETRY``, ``DEFAULT_POLL_POLICY``, ...) and takes an override as
an argument. It sleeps nothing itself: :meth:`Backoff.delays` is the sequence, and
:func:`retry_call` runs a callable with it through an injected ``sleep`` and ``clock``,
so tests never wait.

This module imports nothing from :mod:`pipelines` (it sits below everything).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: ``rand()`` gives a float in [0, 1); :data:`random.random` unless a test injects one.
Rand = Callable[[], float]


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``initial``, ``initial * multiplier``, ... capped at
    ``maximum`` (seconds), plus up to ``jitter`` seconds of random jitter each.

    ``attempts``: tries in all, the first included (so ``attempts - 1`` delays); None
    for no limit. ``deadline``: seconds from the first try after which no retry starts
    (a retry whose delay would end past it is not made); None for no limit. Only
    :func:`retry_call` (which has a clock) enforces ``deadline``; :meth:`delays` is
    bounded by ``attempts`` alone."""

    initial: float = 1.0
    maximum: float = 60.0
    multiplier: float = 2.0
    attempts: int | None = None
    deadline: float | None = None
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0:
            raise ValueError(
                f"Backoff delays must be >= 0 seconds (initial={self.initial}, "
                f"maximum={self.maximum})"
            )
        if self.multiplier < 1:
            raise ValueError(
                f"Backoff multiplier must be >= 1 (got {self.multiplier}); use 1 for a fixed delay"
            )
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(
                f"Backoff attempts counts the first try, so it must be >= 1 (got "
                f"{self.attempts}); use None for no limit"
            )
        if self.deadline is not None and self.deadline < 0:
            raise ValueError(f"Backoff deadline must be >= 0 seconds (got {self.deadline})")
        if self.jitter < 0:
            raise ValueError(f"Backoff jitter must be >= 0 seconds (got {self.jitter})")

    @property
    def retries(self) -> int | None:
        """How many retries ``attempts`` allows after the first try (None: no limit)."""
        return None if self.attempts is None else self.attempts - 1

    def base_delay(self, retry: int) -> float:
        """The delay before retry number ``retry`` (0 = the first retry), without jitter."""
        if retry < 0:
            raise ValueError(f"retry numbers start at 0, not {retry}")
        delay = self.initial
        for _ in range(retry):  # stepwise, as delays() does, so the two agree exactly
            if delay >= self.maximum:
                break
            delay *= self.multiplier
        return min(delay, self.maximum)

    def delay(self, retry: int, rand: Rand | None = random.random) -> float:
        """:meth:`base_delay` plus ``jitter * rand()`` (no jitter when ``rand`` is None)."""
        base = self.base_delay(retry)
        if self.jitter and rand is not None:
            return base + self.jitter * rand()
        return base

    def delays(self, rand: Rand | None = random.random) -> Iterator[float]:
        """The delays between tries, in order: ``attempts - 1`` of them, or for ever."""
        delay, n = self.initial, 0
        while self.retries is None or n < self.retries:
            base = min(delay, self.maximum)
            yield base + self.jitter * rand() if self.jitter and rand is not None else base
            delay, n = base * self.multiplier, n + 1

    def replace(self, **changes) -> "Backoff":
        """A copy with some fields changed (``DEFAULT_LOCK_RETRY.replace(attempts=2)``)."""
        return dataclasses.replace(self, **changes)


def retry_call(
    fn: Callable[[], T],
    policy: Backoff,
    *,
    predicate: Callable[[BaseException], bool],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_error: Callable[[BaseException, float | None], None] | None = None,
    rand: Rand | None = random.random,
) -> T:
    """``fn()``, retried per ``policy`` while it raises an error ``predicate`` accepts.

    An error the predicate refuses propagates at once. ``on_error(exc, delay)`` is told
    of every retryable error with the delay before the next try, or None when the
    policy is used up (its attempts, or a retry that would end past its deadline); then
    the last error propagates unchanged, so callers keep their own messages."""
    start = clock()
    delays = policy.delays(rand)
    while True:
        try:
            return fn()
        except Exception as exc:
            if not predicate(exc):
                raise
            delay = next(delays, None)
            if (
                delay is not None
                and policy.deadline is not None
                and clock() + delay > start + policy.deadline
            ):
                delay = None
            if on_error is not None:
                on_error(exc, delay)
            if delay is None:
                raise
            sleep(delay)


__all__ = ["Backoff", "retry_call"]
