"""The replay figure: a log of a given size written through the real write path, then
`callback-ledger replay --fresh` timed, with the peak memory of its processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import orjson

from domain.callbacks import Receipt
from scripts.callback_mix import callback_mix
from scripts.db_stats import event_count
from scripts.proc_stats import tree_peaks_kb
from service.settings import Settings, open_ledger
from store.group_commit import LRU, GroupCommit, run


def generate_log(database_url: str, n_events: int) -> int:
    """Writes about n_events through the real write path (group commit of 2,000 callbacks)."""
    # The store's keys as the replay will have them (the environment, or the file beside a
    # SQLite store).
    ledger = open_ledger(Settings.from_env({**os.environ, "LEDGER_DATABASE_URL": database_url}))
    receipt_time = datetime.now(UTC)
    try:
        seed = 0
        while ledger.ping() < n_events:
            seed += 1
            bodies = callback_mix(20_000, seed)
            for begin in range(0, len(bodies), 2000):
                commands = []
                for body in bodies[begin : begin + 2000]:
                    raw = orjson.dumps(body).decode()
                    command = ledger.command_for(body, Receipt(raw, receipt_time, True))
                    if command is not None:
                        commands.append(command)
                run(GroupCommit(ledger, cache=LRU(0)), commands)
                if ledger.ping() >= n_events:
                    break
        return ledger.ping()
    finally:
        ledger.close()


def measure_replay(database_url: str, jobs: int = 1) -> tuple[float, float, float]:
    """Events/s over both projections, wall seconds, and the peak resident memory of the
    replay's processes (MB; the sum of each one's peak, read every 0.1 s). Not the kernel's
    ru_maxrss: for a forked child it counts this process's own image from before the exec."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "callback_ledger.cli",
            "replay",
            "--fresh",
            "--page-size",
            "5000",
            "--jobs",
            str(jobs),
        ],
        env={**os.environ, "LEDGER_DATABASE_URL": database_url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    peaks: dict[int, int] = {}
    while True:
        peaks.update(tree_peaks_kb(process.pid))
        finished, status = os.waitpid(process.pid, os.WNOHANG)
        if finished:
            break
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(
            f"replay failed: {process.stderr.read().decode() if process.stderr else ''}"
        )
    # Each process's own peak, added up: at most what they held at any one time.
    return event_count(database_url) / seconds, seconds, sum(peaks.values()) / 1024
