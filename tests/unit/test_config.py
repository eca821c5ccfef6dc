"""LEDGER_DATABASE_URL and the other settings."""

from __future__ import annotations

import pytest

from service.settings import ConfigError, Settings, backend_for


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite:///callback-ledger.sqlite3"
    assert settings.webhook_secrets == ()
    assert (settings.timestamp_tolerance_s, settings.max_body_bytes) == (300, 1024 * 1024)


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///callback-ledger.sqlite3", "callback-ledger.sqlite3"),
        ("sqlite:///data/x.sqlite3", "data/x.sqlite3"),
        ("sqlite:////var/lib/ledger/x.sqlite3", "/var/lib/ledger/x.sqlite3"),
    ],
)
def test_sqlite_urls_follow_sqlalchemy(url: str, path: str) -> None:
    env = backend_for(url).eventsourcing_env
    assert env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite"
    assert env["SQLITE_DBNAME"] == path


def test_postgresql_url() -> None:
    env = backend_for("postgresql://app:p%40ss@db.example:6543/ledger", 7).eventsourcing_env
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]) == ("app", "p@ss")
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"], env["POSTGRES_DBNAME"]) == (
        "db.example",
        "6543",
        "ledger",
    )
    assert env["POSTGRES_CONNECT_TIMEOUT"] == "7"
    assert env["POSTGRES_ENABLE_DB_FUNCTIONS"] == "n"
    assert backend_for("postgresql://u@h/d").eventsourcing_env["POSTGRES_PORT"] == "5432"


@pytest.mark.parametrize(
    "url",
    [
        "mysql://x@y/z",
        "sqlite://",
        "sqlite:///",
        "postgresql://u@h/",
        "postgresql://u@h:xx/d",
        "nonsense",
    ],
)
def test_bad_urls_are_refused_with_a_clear_message(url: str) -> None:
    with pytest.raises(ConfigError, match="LEDGER_DATABASE_URL"):
        Settings.from_env({"LEDGER_DATABASE_URL": url})


def test_secrets_are_split_for_rotation() -> None:
    settings = Settings.from_env({"SINCH_WEBHOOK_SECRET": " old , new ,"})
    assert settings.webhook_secrets == ("old", "new")


@pytest.mark.parametrize("value", ["abc", "0", "-5"])
def test_bad_numbers_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="LEDGER_MAX_BODY_BYTES"):
        Settings.from_env({"LEDGER_MAX_BODY_BYTES": value})


def test_cli_reports_configuration_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from callback_ledger.cli import main

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEDGER_DATABASE_URL", "mysql://nope")
        with pytest.raises(SystemExit) as exit_info:
            main(["serve"])
    assert exit_info.value.code == 2
    assert "configuration error" in capsys.readouterr().err
