"""LEDGER_DATABASE_URL and the other settings."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from service.settings import ConfigError, Settings


@pytest.mark.parametrize("value", [" , ", ",", "   ", " ,,, "])
def test_a_secret_setting_without_a_secret_stops_serve(value: str) -> None:
    with pytest.raises(ConfigError, match="holds no secret"):
        Settings.from_env({"SINCH_WEBHOOK_SECRET": value})
    done = subprocess.run(
        [sys.executable, "-m", "callback_ledger.cli", "serve", "--port", "1"],
        env={**os.environ, "SINCH_WEBHOOK_SECRET": value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "SINCH_WEBHOOK_SECRET" in done.stderr
    assert "Traceback" not in done.stderr
