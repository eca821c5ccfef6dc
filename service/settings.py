"""Configuration from the environment, and the process's garbage-collector setting."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from domain import followup
from domain.keywords import DEFAULT_LANGUAGES, LANGUAGES, Keywords, Reading
from store import data_keys
from store.backend import Backend
from store.backend import ConfigError as ConfigError
from store.ledger import Ledger
from store.postgres import PostgresBackend
from store.sqlite import SQLiteBackend
from store.vault import Secrets, SecretsError, write_key_file

log = logging.getLogger("callback_ledger")

DEFAULT_DATABASE_URL = "sqlite:///callback-ledger.sqlite3"


def backend_for(url: str, timeout_s: int = 5) -> Backend:
    """The backend a database URL names; ConfigError for a URL neither understands."""
    kind: Callable[[str, int], Backend] = (
        SQLiteBackend if url.startswith("sqlite:") else PostgresBackend
    )
    return kind(url, timeout_s)


ENV = "env"


def whole(key: str, default: int) -> Any:
    """A whole-number setting, read from the environment variable `key` (unset: `default`)."""
    return field(default=default, metadata={ENV: key})


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    webhook_secrets: tuple[str, ...] = ()
    timestamp_tolerance_s: int = whole("LEDGER_SIGNATURE_TOLERANCE_S", 300)
    max_body_bytes: int = whole("LEDGER_MAX_BODY_BYTES", 1024 * 1024)
    body_timeout_s: int = whole("LEDGER_BODY_TIMEOUT_S", 10)
    # Bounds how long a request waits for the database before answering 503.
    db_timeout_s: int = whole("LEDGER_DB_TIMEOUT_S", 5)
    retry_after_s: int = whole("LEDGER_RETRY_AFTER_S", 5)
    # The languages' keyword sets plus the listed opt-out and help words; listed opt-in
    # words replace the languages' own (None: theirs).
    keyword_languages: tuple[str, ...] = DEFAULT_LANGUAGES
    opt_out_keywords: tuple[str, ...] = ()
    opt_in_keywords: tuple[str, ...] | None = None
    help_keywords: tuple[str, ...] = ()
    next_actions: tuple[tuple[str, str], ...] = ()
    read_channels: frozenset[str] = followup.READ_CHANNELS
    # "inline": `serve` follows the log into the read tables; "off": `project` does.
    projections: str = "inline"
    health_max_lag_s: int = whole("LEDGER_HEALTH_MAX_LAG_S", 60)
    # HTTP limits (api/connections.py).
    max_connections: int = whole("LEDGER_MAX_CONNECTIONS", 1000)
    keepalive_s: int = whole("LEDGER_KEEPALIVE_S", 5)
    header_timeout_s: int = whole("LEDGER_HEADER_TIMEOUT_S", 10)
    max_header_bytes: int = whole("LEDGER_MAX_HEADER_BYTES", 32 * 1024)
    max_headers: int = whole("LEDGER_MAX_HEADERS", 100)
    # "host:port": when set, every route but the webhook and the bare /healthz is served there.
    private_listen: str = ""
    metrics_refresh_s: int = whole("LEDGER_METRICS_REFRESH_S", 30)
    # Personal data's keys: given, else read from `key_file` or (`key_file_beside`) the file
    # beside a SQLite store; `secrets` makes that file.
    keys: Secrets | None = field(default=None, repr=False)
    key_file: str = ""
    key_file_beside: bool = False
    retention_messages_days: int = whole("LEDGER_RETENTION_MESSAGES_DAYS", 400)
    retention_consent_days: int = whole("LEDGER_RETENTION_CONSENT_DAYS", 5 * 365 + 1)
    # Not at once: a restart loop must not rewrite the key table each time.
    retention_first_s: int = whole("LEDGER_RETENTION_FIRST_S", 600)
    retention_interval_s: int = whole("LEDGER_RETENTION_INTERVAL_S", 24 * 3600)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        given = env.get("SINCH_WEBHOOK_SECRET", "")
        secrets = listed(env, "SINCH_WEBHOOK_SECRET")
        if given and not secrets:
            # " , " must not quietly mean "accept unsigned callbacks".
            raise ConfigError(
                f"SINCH_WEBHOOK_SECRET is set to {given!r}, which holds no secret; set it to "
                "the secret configured in Sinch (several, comma-separated, while rotating), "
                "or unset it to accept unsigned callbacks"
            )
        settings = cls(
            **{
                f.name: _int(env, f.metadata[ENV], f.default)
                for f in fields(cls)
                if ENV in f.metadata
            },
            database_url=env.get("LEDGER_DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL,
            webhook_secrets=secrets,
            keyword_languages=_languages(env),
            opt_out_keywords=listed(env, "LEDGER_OPT_OUT_KEYWORDS"),
            opt_in_keywords=_opt_in(env),
            help_keywords=listed(env, "LEDGER_HELP_KEYWORDS"),
            next_actions=_next_actions(env),
            read_channels=_read_channels(env),
            projections=env.get("LEDGER_PROJECTIONS", "inline").strip() or "inline",
            private_listen=env.get("LEDGER_PRIVATE_LISTEN", "").strip(),
            keys=_secrets(env),
            key_file=env.get("LEDGER_KEY_FILE", "").strip(),
            key_file_beside=not any(
                env.get(k, "").strip()
                for k in ("LEDGER_MASTER_KEY", "LEDGER_INDEX_KEY", "LEDGER_KEY_FILE")
            ),
        )
        if settings.projections not in ("inline", "off"):
            raise ConfigError(
                f"LEDGER_PROJECTIONS must be 'inline' or 'off', got {settings.projections!r}"
            )
        settings.store_backend()  # fails early on a bad URL
        settings.private_address  # noqa: B018 (fails early on a bad address)
        return settings

    @property
    def private_address(self) -> tuple[str, int] | None:
        """(host, port) of the private listener, or None."""
        if not self.private_listen:
            return None
        host, _, port = self.private_listen.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"LEDGER_PRIVATE_LISTEN / --private-listen must be host:port (e.g. "
                f"10.0.0.5:8001), got {self.private_listen!r}"
            )
        return host, int(port)

    def store_backend(self) -> Backend:
        return backend_for(self.database_url, self.db_timeout_s)

    def secrets(self) -> Secrets | None:
        """The keys of personal data: given, else read from the key file. A store with no event
        yet gets that file made (owner-only) by whichever command opens it first, so it is
        encrypted from its first byte; a store written without keys stays so."""
        if self.keys is not None:
            return self.keys
        key_file = self.key_file_path()
        if key_file is None:
            return None
        if not key_file.exists():
            if not data_keys.holds_data(self.store_backend()):
                try:
                    write_key_file(key_file)
                except FileExistsError:  # another process made it first
                    pass
                else:
                    log.warning(
                        "made %s, the keys of this store's personal data: keep it apart from "
                        "the database and backed up (without it the data cannot be read)",
                        key_file,
                    )
            elif not self.key_file:
                return None
        return Secrets.from_env({"LEDGER_KEY_FILE": str(key_file)})

    def key_file_path(self) -> Path | None:
        if self.key_file:
            return Path(self.key_file)
        path = self.store_backend().store_file() if self.key_file_beside else None
        return None if path is None else Path(path + ".keys")

    def keywords(self) -> Keywords:
        return Keywords.build(
            self.keyword_languages, self.opt_out_keywords, self.opt_in_keywords, self.help_keywords
        )

    def classify(self) -> Callable[[str | None], Reading]:
        """What an inbound text says, recorded with its event (in its public part when
        encrypted), so an erased "STOP" still opts out on a replay."""
        return self.keywords().read

    @property
    def backend(self) -> str:
        return self.store_backend().name


def open_ledger(settings: Settings, cls: type[Ledger] = Ledger) -> Ledger:
    """The Ledger the settings name, on a backend of its own: for scripts and tests."""
    return cls.for_backend(settings.store_backend(), settings.secrets(), settings.classify())


def _secrets(env: Mapping[str, str]) -> Secrets | None:
    """The keys given: the two variables, or a key file that exists (one that does not is
    `Settings.secrets`' to make or to report)."""
    key_file = env.get("LEDGER_KEY_FILE", "").strip()
    given = any(env.get(k, "").strip() for k in ("LEDGER_MASTER_KEY", "LEDGER_INDEX_KEY"))
    if key_file and not given and not os.path.exists(key_file):
        return None
    try:
        return Secrets.from_env(env)
    except SecretsError as exc:
        raise ConfigError(str(exc)) from None


def listed(env: Mapping[str, str], key: str) -> tuple[str, ...]:
    """A comma-separated variable's items."""
    return tuple(w.strip() for w in env.get(key, "").split(",") if w.strip())


def _next_actions(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    try:
        return tuple(sorted(followup.parse_overrides(env.get("LEDGER_NEXT_ACTIONS", "")).items()))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _read_channels(env: Mapping[str, str]) -> frozenset[str]:
    value = env.get("LEDGER_READ_CHANNELS", "")
    return followup.parse_channels(value) if value.strip() else followup.READ_CHANNELS


def _opt_in(env: Mapping[str, str]) -> tuple[str, ...] | None:
    """LEDGER_OPT_IN_KEYWORDS replaces the languages' opt-in words: adding to them would bring
    back YES for an operator who listed START,UNSTOP to drop it, and a replay would then opt
    people in. Unset: the languages' words; "none": no opt-in keyword."""
    value = env.get("LEDGER_OPT_IN_KEYWORDS", "")
    if not value.strip():
        return None
    if value.strip().lower() == "none":
        return ()
    words = listed(env, "LEDGER_OPT_IN_KEYWORDS")
    if not words:
        raise ConfigError(
            f"LEDGER_OPT_IN_KEYWORDS is set to {value!r}, which holds no word; list the opt-in "
            "keywords (they replace the languages' own), set it to none for no opt-in "
            "keyword, or unset it for the languages' opt-in keywords"
        )
    return words


def _languages(env: Mapping[str, str]) -> tuple[str, ...]:
    """LEDGER_KEYWORD_LANGUAGES: unset means all; "none" means only the listed words."""
    value = env.get("LEDGER_KEYWORD_LANGUAGES", "").strip().lower()
    if not value:
        return DEFAULT_LANGUAGES
    if value == "none":
        return ()
    languages = tuple(dict.fromkeys(w.strip() for w in value.split(",") if w.strip()))
    unknown = [w for w in languages if w not in LANGUAGES]
    if unknown:
        raise ConfigError(
            f"LEDGER_KEYWORD_LANGUAGES: unknown {', '.join(unknown)}; known: "
            f"{', '.join(LANGUAGES)} (or none)"
        )
    return languages


def _int(env: Mapping[str, str], key: str, default: Any) -> int:
    value = env.get(key, "").strip()
    if not value:
        return int(default)
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{key} must be a whole number, got {value!r}") from None
    if number <= 0:
        raise ConfigError(f"{key} must be positive, got {number}")
    return number


def collect_less_often() -> None:
    """For the long-running commands: ingest and replay allocate many short-lived dicts that
    the cyclic collector would scan again and again at its default threshold."""
    gc.set_threshold(50_000, 20, 100)
