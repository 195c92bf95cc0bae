"""Helpers for the watcher tests: an injected clock, canonical events written into a real
DuckDB warehouse through commit_load, and a recording / fault-injecting warehouse wrapper."""

from __future__ import annotations

import itertools
import os
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pyarrow.parquet as pq

from pipelines.events import events_to_arrow
from pipelines.hashing import EmailHasher, recipient_domain
from pipelines.warehouse import LoadBatch, TransientWarehouseError, Warehouse
from pipelines.warehouse.duckdb import DuckDBWarehouse

SENT_AT = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)


class FakeClock:
    """``clock()`` for the watcher and ``sleep(s)`` that advances it instead of waiting.

    ``at(t, fn)`` schedules ``fn`` (e.g. "these events arrive") to run when the clock
    passes ``t``: events reach the warehouse between polls, as with a loader."""

    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []
        self._scheduled: list[tuple[float, Callable[[], None]]] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, seconds
        self.sleeps.append(seconds)
        self.now += seconds
        due = [(t, fn) for t, fn in self._scheduled if t <= self.now]
        self._scheduled = [(t, fn) for t, fn in self._scheduled if t > self.now]
        for _, fn in sorted(due, key=lambda x: x[0]):
            fn()

    def at(self, t: float, fn: Callable[[], None]) -> None:
        self._scheduled.append((t, fn))


class EventFactory:
    """Canonical events for addresses (hashed with the test key)."""

    def __init__(
        self,
        hasher: EmailHasher,
        category: str = "newsletter-2026-11",
        sent_at: datetime = SENT_AT,
        provider: str = "sendgrid",
    ):
        self.hasher, self.category, self.sent_at, self.provider = (
            hasher,
            category,
            sent_at,
            provider,
        )

    def __call__(
        self,
        address: str,
        event_type: str,
        after: float = 60.0,
        *,
        categories: list[str] | None = None,
        message: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        ts = self.sent_at + timedelta(seconds=after)
        e = {
            "event_id": uuid.uuid4().hex,
            "provider": self.provider,
            "event_type": event_type,
            "provider_event_type": event_type,
            "event_ts": ts,
            "event_date": ts.date(),
            "message_id": message or f"msg-{address.lower()}",
            "email_hash": self.hasher.hash(address),
            "recipient_domain": recipient_domain(address),
            "categories": [self.category] if categories is None else categories,
            "source_uri": "test://events",
            "ingested_at": ts,
        }
        e.update(fields)
        return e


_batch = itertools.count(1)


def load_events(wh: DuckDBWarehouse, events: list[dict[str, Any]], tmpdir) -> None:
    """Write events as a small Parquet batch and commit it, as the load job does."""
    n = next(_batch)
    path = os.path.join(str(tmpdir), f"batch-{os.getpid()}-{n}.parquet")
    pq.write_table(events_to_arrow(events), path)
    wh.commit_load(
        LoadBatch(
            load_id=f"test-{n}",
            archive=str(tmpdir),
            archive_date=events[0]["event_date"] if events else SENT_AT.date(),
            started_at=datetime.now(timezone.utc),
            event_files=[path],
            dead_letter_files=[],
        )
    )


class RecordingWarehouse(Warehouse):
    """A real warehouse, with every query recorded, and transient faults injected on the
    queries named in ``fail_on`` (1-based query numbers): a lock or a 5xx on demand,
    which the real component cannot produce when a test wants it."""

    def __init__(
        self,
        inner: Warehouse,
        fail_on: set[int] | None = None,
        error: Callable[[int], Exception] | None = None,
    ):
        self.inner = inner
        self.dialect, self.uri = inner.dialect, inner.uri
        self.fail_on = set(fail_on or ())
        self.error = error or (lambda n: TransientWarehouseError(f"injected fault #{n}"))
        self.queries: list[tuple[str, dict[str, Any]]] = []
        self.attempts = 0

    def query(self, sql, params=None):
        self.attempts += 1
        self.queries.append((sql, dict(params or {})))
        if self.attempts in self.fail_on:
            raise self.error(self.attempts)
        return self.inner.query(sql, params)

    def ensure_schema(self):
        return self.inner.ensure_schema()

    def commit_load(self, batch):
        return self.inner.commit_load(batch)

    def loaded_files(self, first, last):
        return self.inner.loaded_files(first, last)

    def replace_partitions(self, *a, **kw):
        return self.inner.replace_partitions(*a, **kw)

    def table_exists(self, name):
        return self.inner.table_exists(name)
