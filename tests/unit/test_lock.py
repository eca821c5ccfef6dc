"""Installs are reproducible: every dependency is pinned with its hashes in uv.lock, and in the
requirements files exported from it that scripts/bootstrap.sh and compose.yaml install. These
fail while the pins no longer match pyproject.toml (scripts/lock makes them again). Offline:
uv checks the lock against pyproject.toml without an index or a cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]
UV = Path(sys.executable).parent / "uv"
EXPORTS = {"requirements.lock": (), "requirements-dev.lock": ("--extra", "dev")}


def uv(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(UV), *args],
        cwd=ROOT,
        env={**os.environ, "UV_CACHE_DIR": str(tmp_path / "cache"), "UV_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_uv_lock_matches_pyproject(tmp_path: Path) -> None:
    done = uv(tmp_path, "lock", "--locked")
    assert done.returncode == 0, (
        "uv.lock does not match pyproject.toml: run scripts/lock\n" + done.stderr
    )


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_each_requirements_file_is_exported_from_uv_lock(tmp_path: Path, name: str) -> None:
    done = uv(
        tmp_path,
        "export",
        "--frozen",
        "--no-emit-project",
        "--format",
        "requirements-txt",
        *EXPORTS[name],
    )
    assert done.returncode == 0, done.stderr

    def pins(text: str) -> list[str]:  # without the header, which names the output file
        return [line for line in text.splitlines() if not line.startswith("#")]

    assert pins(done.stdout) == pins((ROOT / name).read_text()), (
        f"{name} is not what uv.lock exports: run scripts/lock"
    )
    assert "--hash=sha256:" in done.stdout


def test_compose_installs_the_pinned_dependencies_then_the_project_alone() -> None:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    for name in ("ledger", "projector"):
        steps = services[name]["command"][-1].split(" && ")
        assert "--require-hashes -r /app/requirements.lock" in steps[0], name
        assert steps[1].endswith("--no-deps /app"), name
        assert steps[2].startswith("exec callback-ledger "), name
