"""Every real Sinch callback body we have (Sinch's SDK fixtures, docs and webhook test script,
in ../shared/fixtures/sinch-callbacks with their provenance), posted signed on both backends:
each is kept, a second posting stores nothing new, and the projections take all of them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "sinch-callbacks"


def real_bodies() -> list[Path]:
    found = sorted(FIXTURES.glob("*.json"))
    if not found and os.environ.get("CI") == "true":
        pytest.fail(f"the real Sinch fixtures are missing from {FIXTURES}")
    return found


def test_the_fixtures_are_there() -> None:
    assert len(real_bodies()) == 137
