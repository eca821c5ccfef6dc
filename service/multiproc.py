"""The metrics directory of one `serve` run (prometheus_client's multiprocess mode).

Kept apart from `metrics` so that `serve` can set PROMETHEUS_MULTIPROC_DIR before anything
imports prometheus_client: the library reads it once, at import."""

from __future__ import annotations

import os
import shutil
import tempfile

ENV = "PROMETHEUS_MULTIPROC_DIR"


def fresh_dir() -> str:
    """A fresh, empty directory for this run's processes' metric files, set as
    PROMETHEUS_MULTIPROC_DIR for them (inside the one given, if any): files of an earlier run
    would be summed in otherwise. `serve` removes it when it exits."""
    parent = os.environ.get(ENV) or None
    if parent:
        os.makedirs(parent, exist_ok=True)
    path = tempfile.mkdtemp(prefix="callback-ledger-metrics-", dir=parent)
    os.environ[ENV] = path
    return path


def remove(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
