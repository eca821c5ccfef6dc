"""Retention: message payloads stay readable LEDGER_RETENTION_MESSAGES_DAYS, consent evidence
LEDGER_RETENTION_CONSENT_DAYS; past that, their month's data keys are destroyed (statuses,
times, reason codes and counts stay, in the events' public parts). A key's month is when the
callback was received on our clock, never its event_time: a forged event_time must not make
evidence expire early or live for ever."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from store.data_keys import SQLKeyStore
from store.ledger import Ledger
from store.vault import CONSENT, MESSAGES, period_of

log = logging.getLogger("callback_ledger")

CLASS_NAMES = {MESSAGES: "messages", CONSENT: "consent"}


class RetentionSettings(Protocol):
    """What retention reads of the service's settings (service.settings.Settings: privacy/
    sits below service/, so it names them here)."""

    @property
    def retention_messages_days(self) -> int: ...
    @property
    def retention_consent_days(self) -> int: ...
    @property
    def retention_first_s(self) -> int: ...
    @property
    def retention_interval_s(self) -> int: ...


def cutoff(now: datetime, days: int) -> str:
    """The first period kept: every month before it ended more than `days` days ago."""
    return period_of(now - timedelta(days=days))


@dataclass
class ClassReport:
    days: int
    keep_from: str  # the first period kept ('YYYY-MM')
    periods: dict[str, int] = field(default_factory=dict)  # period -> keys past retention
    keys_destroyed: int = 0


@dataclass
class RetentionReport:
    dry_run: bool
    at: str
    encrypted: bool
    classes: dict[str, ClassReport] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def keys_destroyed(self) -> int:
        return sum(c.keys_destroyed for c in self.classes.values())


def apply(
    ledger: Ledger, settings: RetentionSettings, dry_run: bool = False, now: datetime | None = None
) -> RetentionReport:
    """Destroys the data keys of the months past their class's retention (`dry_run`: only
    says which); a plaintext store has none."""
    moment = now or datetime.now(UTC)
    report = RetentionReport(dry_run, moment.isoformat(), ledger.vault.encrypted)
    keys = ledger.vault.keys
    if not ledger.vault.encrypted or not isinstance(keys, SQLKeyStore):
        return report
    days = {MESSAGES: settings.retention_messages_days, CONSENT: settings.retention_consent_days}
    for klass, name in CLASS_NAMES.items():
        keep_from = cutoff(moment, days[klass])
        found = ClassReport(days[klass], keep_from)
        found.periods = {row["period"]: int(row["n"]) for row in keys.expired(klass, keep_from)}
        if found.periods and not dry_run:
            found.keys_destroyed = keys.destroy_expired(klass, keep_from)
        report.classes[name] = found
    if report.keys_destroyed:
        ledger.vault.forget(everything=True)
        log.info(
            "retention: %d data key(s) destroyed (%s)",
            report.keys_destroyed,
            ", ".join(
                f"{name} before {c.keep_from}: {c.keys_destroyed}"
                for name, c in report.classes.items()
            ),
        )
    return report


@dataclass
class RetentionHealth:
    """The daily run's last outcome, for /healthz's detail."""

    last_run: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    keys_destroyed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}


class Daily:
    """`serve`'s retention: applied a little after start, then every `interval_s` seconds,
    in a thread; a failure is logged and kept for /healthz, and the next run tries again."""

    def __init__(self, ledger: Any, settings: RetentionSettings) -> None:
        self.ledger = ledger  # () -> Ledger: the store may be down when serve starts
        self.settings = settings
        self.health = RetentionHealth()

    def run_once(self) -> None:
        ledger: Ledger = self.ledger()
        started = time.monotonic()
        report = apply(ledger, self.settings)
        self.health.last_run = report.at
        self.health.keys_destroyed += report.keys_destroyed
        log.debug("retention applied in %.1f s", time.monotonic() - started)

    async def forever(self) -> None:
        interval = self.settings.retention_interval_s
        await asyncio.sleep(min(interval, self.settings.retention_first_s))
        while True:
            try:
                await asyncio.to_thread(self.run_once)
                self.health.last_error = self.health.last_error_at = None
            except Exception as exc:  # never the server's end: said, and tried again later
                self.health.last_error = f"{type(exc).__name__}: {exc}"
                self.health.last_error_at = datetime.now(UTC).isoformat()
                log.error("retention failed (tried again in %d s): %s", interval, exc)
            await asyncio.sleep(interval)
