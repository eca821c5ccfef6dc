"""Prometheus metrics (prometheus-client).

Counted where things happen, in the process they happen in: callbacks by trigger and outcome,
group commits (their time and size), events appended, requests by route, follower errors.
With `serve --workers N`, `serve` gives every process one fresh PROMETHEUS_MULTIPROC_DIR
(`multiproc.fresh_dir`) before any of them imports prometheus_client: each process writes its
values to its own files there, and a scrape, whichever process answers it, sums them all.

Read from the store at scrape time (`StoreCollector`), so they are right whatever the number
of processes: the projections' lag in events and in seconds (the age of the oldest event not
applied yet), whether a projection is stuck, the log's head, and the quarantine's size. Every
query there is an indexed lookup; the quarantine is counted incrementally (see
`QuarantineCount`)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

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

from projections.read_model import progress
from service import multiproc

if TYPE_CHECKING:
    from projections.log_reader import EventLog
    from service.runtime import Runtime
    from store.backend import Cursor

log = logging.getLogger("callback_ledger.metrics")
commit_log = logging.getLogger("callback_ledger.commit")


# `_created` samples (a start time per series) double the output and no rule here needs them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus-client leaves it untyped

# The webhook's answers, as outcomes (README, "Operating it").
OUTCOMES = (
    "accepted",
    "duplicate",
    "unsigned_rejected",
    "invalid",
    "quarantined",
    "too_large",
    "timeout",
    "unavailable",
    "incomplete",
)

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
    """One group commit done (a hook in both writers): its time, size, events appended. Never
    raises: it runs where an exception would stop the writer and leave callbacks waiting."""
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
    events = 0
    failed = 0
    for result in results:
        if isinstance(result, BaseException):
            failed += 1
        else:
            events += result.events
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


# ---- multiprocess ---------------------------------------------------------------------------


class _Default:
    """The default registry's metrics (ours and the process's), collected at each scrape."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()

    def describe(self) -> list[Metric]:
        return []


def registry(runtime: Runtime, refresh_s: float = 30.0) -> CollectorRegistry:
    """What /metrics shows: this process's metrics (or every process's, in multiprocess mode)
    and the store's."""
    found = CollectorRegistry()
    if os.environ.get(multiproc.ENV):
        MultiProcessCollector(found)  # type: ignore[no-untyped-call]
    else:
        found.register(_Default())
    found.register(StoreCollector(runtime, refresh_s))
    return found


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


# ---- read from the store ---------------------------------------------------------------------


class QuarantineCount:
    """The number of quarantined bodies, counted over the log by notification id: the first
    count reads the events once, in ranges of `chunk` ids and at most `budget_s` per scrape
    (the metric is left out until it has reached the head); then each refresh, at most every
    `refresh_s`, counts only the events appended since. The log only grows and a quarantined
    body is never removed, so the running count stays exact."""

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
    """When an event was recorded: its `timestamp`, set as it is decided, just before the
    commit."""
    from projections.log_reader import decode_state

    stamp = decode_state(state).get("timestamp")
    if isinstance(stamp, dict) and isinstance(stamp.get("_data_"), str):
        return datetime.fromisoformat(stamp["_data_"])
    return None


class StoreCollector:
    def __init__(self, runtime: Runtime, refresh_s: float) -> None:
        self.runtime = runtime
        self.quarantine = QuarantineCount(refresh_s)
        self._quarantine_topic: str | None = None

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "callback_ledger_store_up", "1 when the store answered this scrape's queries"
        )
        try:
            found = self._read()
        except Exception as exc:
            log.warning("metrics: the store could not be read: %s", type(exc).__name__)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *found]

    def _read(self) -> list[Metric]:
        from eventsourcing.utils import get_topic

        from domain.callbacks import QuarantinedCallback

        if self._quarantine_topic is None:
            self._quarantine_topic = get_topic(QuarantinedCallback.Quarantined)  # type: ignore[attr-defined]
        projector = self.runtime.projector()
        lag_events = GaugeMetricFamily(
            "callback_ledger_projection_lag_events",
            "Events in the log after the projection's position",
            labels=["projection"],
        )
        lag_seconds = GaugeMetricFamily(
            "callback_ledger_projection_lag_seconds",
            "Age of the oldest event the projection has not applied (0 when none)",
            labels=["projection"],
        )
        stuck = GaugeMetricFamily(
            "callback_ledger_projection_stuck",
            "1 when the projection cannot apply an event",
            labels=["projection"],
        )
        head_metric = GaugeMetricFamily(
            "callback_ledger_log_head", "The highest notification id in the event log"
        )
        quarantine = GaugeMetricFamily(
            "callback_ledger_quarantine_size", "Refused bodies kept in the quarantine"
        )
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
            count = self.quarantine.value(cur, log_, head, self._quarantine_topic)
        head_metric.add_metric([], head)
        found_metrics: list[Metric] = [lag_events, lag_seconds, stuck, head_metric]
        if count is not None:
            quarantine.add_metric([], count)
            found_metrics.append(quarantine)
        return found_metrics
