"""Concurrent callbacks for one aggregate: every distinct report kept exactly once, racing
duplicates stored once (optimistic-concurrency retry), on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_processes_starting_together_on_a_new_database_all_start(database_url: str) -> None:
    # serve --workers and replay --jobs start several processes at once; each creates the
    # library's tables and types if missing (without a lock, about one in five failed here).
    start = (
        "import os\n"
        "from service.settings import Settings, open_ledger\n"
        f"env = {{**os.environ, 'LEDGER_DATABASE_URL': {database_url!r}}}\n"
        "open_ledger(Settings.from_env(env)).close()\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", start], stderr=subprocess.PIPE) for _ in range(6)
    ]
    errors = [(proc, proc.communicate(timeout=60)[1]) for proc in processes]
    assert [err.decode()[-300:] for proc, err in errors if proc.returncode] == []
