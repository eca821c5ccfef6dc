"""The alert rules and the Grafana dashboard under ops/ name only metrics (and labels) the
service exports: a real app is scraped after traffic of every kind and compared."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.integration.test_ops_files import RULES


def test_promtool_accepts_the_rules() -> None:
    """Prometheus' own check, where promtool is installed (Debian: `prometheus`)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    done = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
