"""Prometheus metrics: counted where things happen, in the process they happen in (with
`serve --workers N`, each process writes its own files in the run's PROMETHEUS_MULTIPROC_DIR
and a scrape sums them all), and read from the store at scrape time (`StoreCollector`), so
those are right whatever the number of processes."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from eventsourcing.utils import get_topic
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from domain.callbacks import QuarantinedCallback
from projections.log_reader import decode_state
from projections.read_model import progress
from projections.rules import stored_time

if TYPE_CHECKING:
    from projections.log_reader import EventLog
    from service.runtime import Runtime
    from store.backend import Cursor

log = logging.getLogger("callback_ledger.metrics")
commit_log = logging.getLogger("callback_ledger.commit")
QUARANTINED = get_topic(QuarantinedCallback.Quarantined)  # type: ignore[attr-defined]


# `_created` samples (a start time per series) double the output and nothing needs them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus-client leaves it untyped

CALLBACKS = Counter(
    "callback_ledger_callbacks",
    "Callbacks received, by trigger and outcome",
    ["trigger", "outcome"],
)
COMMIT_SECONDS = Histogram(
    "callback_ledger_commit_seconds",
    "Time of one group commit (deciding, writing and committing one batch)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BATCH_SIZE = Histogram(
    "callback_ledger_batch_size",
    "Callbacks per group commit",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
EVENTS = Counter("callback_ledger_events", "Events appended to the log by the server")
COMMIT_ERRORS = Counter(
    "callback_ledger_commit_errors", "Group commits that failed as a whole (nothing committed)"
)
FOLLOWER_ERRORS = Counter(
    "callback_ledger_follower_errors",
    "Catch-ups of the in-process projection follower that failed (each is retried)",
)
REQUEST_SECONDS = Histogram(
    "callback_ledger_request_seconds",
    "Time from a request's arrival to its answer's end, by route (the path template)",
    ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RESPONSES = Counter(
    "callback_ledger_responses",
    "Answers by route (the path template) and status code",
    ["route", "status"],
)


_hook_failed = False


def group_commit(seconds: float, results: Sequence[Any]) -> None:
    """One group commit done (the writers' hook). Never raises: an exception there would stop
    the writer and leave callbacks waiting."""
    global _hook_failed
    try:
        _group_commit(seconds, results)
    except Exception:
        if not _hook_failed:  # said once, not per batch
            _hook_failed = True
            commit_log.exception("counting a group commit failed; the metrics are incomplete")


def _group_commit(seconds: float, results: Sequence[Any]) -> None:
    COMMIT_SECONDS.observe(seconds)
    BATCH_SIZE.observe(len(results))
    failed = sum(isinstance(result, BaseException) for result in results)
    events = sum(r.events for r in results if not isinstance(r, BaseException))
    if events:
        EVENTS.inc(events)
    if failed == len(results):
        COMMIT_ERRORS.inc()
    if commit_log.isEnabledFor(logging.DEBUG):
        commit_log.debug(
            "group commit",
            extra={
                "fields": {
                    "callbacks": len(results),
                    "events": events,
                    "failed": failed,
                    "duration_ms": round(seconds * 1000, 3),
                }
            },
        )


def follower_error() -> None:
    FOLLOWER_ERRORS.inc()


def registry(runtime: Runtime, refresh_s: float = 30.0) -> CollectorRegistry:
    """What /metrics shows: this process's metrics (or every process's, in multiprocess mode)
    and the store's."""
    found = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(found)  # type: ignore[no-untyped-call]
    else:
        found.register(REGISTRY)  # ours and the process's
    found.register(StoreCollector(runtime, refresh_s))
    return found


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


class QuarantineCount:
    """The number of quarantined bodies, counted over the log in ranges of `chunk` ids, at
    most `budget_s` per scrape (left out until it has reached the head), then at most every
    `refresh_s` over the events appended since: the log only grows, so the count stays
    exact."""

    def __init__(self, refresh_s: float, budget_s: float = 2.0, chunk: int = 200_000) -> None:
        self.refresh_s = refresh_s
        self.budget_s = budget_s
        self.chunk = chunk
        self.upto = 0
        self.count = 0
        self.complete = False
        self.checked = float("-inf")
        self._lock = threading.Lock()

    def value(self, cur: Cursor, log: EventLog, head: int, topic: str) -> int | None:
        with self._lock:
            now = time.monotonic()
            if self.complete and now - self.checked < self.refresh_s:
                return self.count
            deadline = now + self.budget_s
            while self.upto < head:
                end = min(head, self.upto + self.chunk)
                self.count += progress.count_topic(cur, log, self.upto, end, topic)
                self.upto = end
                if time.monotonic() >= deadline:
                    break
            if self.upto >= head:
                self.complete = True
                self.checked = now
            return self.count if self.complete else None


def _event_time(state: bytes) -> datetime | None:
    """When an event was recorded: its `timestamp`, set just before the commit."""
    stamp = stored_time(decode_state(state).get("timestamp"))
    return None if stamp is None else datetime.fromisoformat(stamp)


class StoreCollector:
    def __init__(self, runtime: Runtime, refresh_s: float) -> None:
        self.runtime = runtime
        self.quarantine = QuarantineCount(refresh_s)

    def collect(self) -> Iterable[Metric]:
        up = _gauge("store_up", "1 when the store answered this scrape's queries")
        try:
            found = self._read()
        except Exception as exc:
            log.warning("metrics: the store could not be read: %s", type(exc).__name__)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *found]

    def _read(self) -> list[Metric]:
        projector = self.runtime.projector()
        labels = ["projection"]
        lag_events = _gauge(
            "projection_lag_events",
            "Events in the log after the projection's position",
            labels,
        )
        lag_seconds = _gauge(
            "projection_lag_seconds",
            "Age of the oldest event the projection has not applied (0 when none)",
            labels,
        )
        stuck = _gauge("projection_stuck", "1 when the projection cannot apply an event", labels)
        head_metric = _gauge("log_head", "The highest notification id in the event log")
        quarantine = _gauge("quarantine_size", "Refused bodies kept in the quarantine")
        now = datetime.now(UTC)
        with projector.db.read() as cur:
            log_ = projector.log
            head = log_.head(cur)
            faults = progress.stuck(cur)
            oldest: dict[int, float] = {}
            for name, position in progress.positions(cur):
                if name not in projector.projections:
                    continue
                if position < head and position not in oldest:
                    state = progress.first_state_after(cur, log_, position)
                    when = _event_time(state) if state is not None else None
                    oldest[position] = (
                        max((now - when).total_seconds(), 0.0) if when is not None else 0.0
                    )
                lag_events.add_metric([name], max(head - position, 0))
                lag_seconds.add_metric([name], oldest.get(position, 0.0))
                stuck.add_metric([name], 1 if name in faults else 0)
            count = self.quarantine.value(cur, log_, head, QUARANTINED)
        head_metric.add_metric([], head)
        found_metrics: list[Metric] = [lag_events, lag_seconds, stuck, head_metric]
        if count is not None:
            quarantine.add_metric([], count)
            found_metrics.append(quarantine)
        return found_metrics


def _gauge(name: str, documentation: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"callback_ledger_{name}", documentation, labels=labels)
